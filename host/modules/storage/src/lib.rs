//! Storage: SQLite and PostgreSQL databases (`database.workflow`, `database.modular`,
//! `storage.sqlite`) with versioned migrations, the write-through resource store
//! (`persistence.store`), and the steps that query them (`step.db_query`, `step.db_exec`).

use wf_engine::{BuildContext, CheckContext, ConfigIssue, Registry, RegistryError};

pub mod database;
pub mod database_module;
pub mod db_exec;
pub mod db_query;
pub mod migrate;
pub mod persistence;
pub mod resource_store;
pub mod sqlite_module;
pub mod statement;

pub use database::{Backend, Database, DbError, ExecResult, PoolSettings, Target, Tx};
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

/// The database [`database_of`] chose, once modules are built.
pub fn chosen_database(
    configured: Option<&str>,
    ctx: &BuildContext<'_>,
) -> anyhow::Result<Option<Database>> {
    Ok(match configured {
        Some(name) => Some((*ctx.service::<Database>(name)?).clone()),
        None => ctx.all::<Database>().first().map(|(_, db)| (**db).clone()),
    })
}

pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    registry
        .register_module::<database_module::DatabaseWorkflowType>()?
        .register_module::<database_module::DatabaseModularType>()?
        .register_module::<sqlite_module::SqliteStorageType>()?
        .register_module::<persistence::PersistenceStoreType>()?
        .register_step::<db_query::DbQueryType>()?
        .register_step::<db_exec::DbExecType>()?;
    Ok(())
}
