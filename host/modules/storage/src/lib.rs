//! Storage: SQLite and PostgreSQL databases (`database.workflow`, `database.modular`,
//! `storage.sqlite`) with versioned migrations, the write-through resource store
//! (`persistence.store`), and the steps that query them (`step.db_query`, `step.db_exec`).

use wf_engine::{Registry, RegistryError};

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
