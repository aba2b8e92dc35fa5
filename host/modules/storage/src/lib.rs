//! Storage: SQLite and PostgreSQL databases (`database.workflow`, `database.modular`,
//! `storage.sqlite`) with versioned migrations, the write-through resource store
//! (`persistence.store`), and the steps that query them (`step.db_query`, `step.db_exec`).

use wf_engine::{BuildContext, CheckContext, ConfigIssue, Registry, RegistryError};

pub mod database;
pub mod database_module;
pub mod db_exec;
pub mod db_query;
pub mod journal_store;
pub mod migrate;
pub mod persistence;
pub mod resource_store;
pub mod sqlite_module;
pub mod statement;

pub use database::{Backend, Database, DbError, ExecResult, PoolSettings, Target, Tx};
pub use journal_store::{SqlJournal, SqlJournalBackend};
pub use migrate::{Migration, migrate};
pub use resource_store::{Resource, ResourceStore};

pub const PLUGIN: &str = "storage";

/// Module types that provide a [`Database`].
pub const DATABASE_TYPES: &[&str] = &["database.workflow", "database.modular", "storage.sqlite"];

/// The database a module keeps its data in: the one named by its `database` key, the app's
/// only database module, or none (the module then keeps its data in memory).
pub fn database_of(
    configured: Option<&str>,
    ctx: &CheckContext<'_>,
) -> Result<Option<String>, ConfigIssue> {
    if configured.is_none() && ctx.modules_of_type(DATABASE_TYPES).is_empty() {
        return Ok(None);
    }
    ctx.choose(configured, "database", "database", DATABASE_TYPES)
        .map(Some)
}

/// The database [`database_of`] chose, once modules are built; without one, a SQLite file of
/// the module's own in the app's data directory (`data/<module>.db`), so its state survives
/// a restart; `None` when the host gave the app no data directory (the module keeps its data
/// in memory).
pub fn chosen_database(
    configured: Option<&str>,
    ctx: &BuildContext<'_>,
) -> anyhow::Result<Option<Database>> {
    Ok(match configured {
        Some(name) => Some((*ctx.service::<Database>(name)?).clone()),
        None => match ctx.all::<Database>().first() {
            Some((_, db)) => Some((**db).clone()),
            None => local_database(ctx)?,
        },
    })
}

/// The module's own SQLite file in the app's data directory, when there is one.
pub fn local_database(ctx: &BuildContext<'_>) -> anyhow::Result<Option<Database>> {
    let Some(dir) = ctx.app.data_dir() else {
        return Ok(None);
    };
    let path = dir.join("data").join(format!("{}.db", ctx.name));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| {
            anyhow::anyhow!("cannot create the data directory {}: {e}", parent.display())
        })?;
    }
    Database::new(
        ctx.name,
        &Target::Sqlite {
            path: path.to_string_lossy().into_owned(),
            wal: true,
        },
        &PoolSettings {
            max_connections: 4,
            min_connections: 0,
            connect_timeout: std::time::Duration::from_secs(5),
        },
    )
    .map(Some)
}

pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    registry.set_journal_backend(std::sync::Arc::new(SqlJournalBackend));
    registry
        .register_module::<database_module::DatabaseWorkflowType>()?
        .register_module::<database_module::DatabaseModularType>()?
        .register_module::<sqlite_module::SqliteStorageType>()?
        .register_module::<persistence::PersistenceStoreType>()?
        .register_step::<db_query::DbQueryType>()?
        .register_step::<db_exec::DbExecType>()?;
    Ok(())
}
