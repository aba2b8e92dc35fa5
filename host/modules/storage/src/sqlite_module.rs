//! `storage.sqlite`: an embedded SQLite database file, the original's admin database type.
//! The same pool as `database.workflow` with the original's keys.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use wf_engine::{BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType};

use crate::database_module::{DatabaseModule, pool_settings, target};

/// Configuration of `storage.sqlite`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqliteConfig {
    /// The database file, relative to this config file's directory; created when missing.
    #[serde(default = "default_path", rename = "dbPath")]
    pub db_path: String,
    /// Most connections the pool opens (writes are serialized by SQLite either way; more
    /// connections let reads run beside them).
    #[serde(default = "default_connections", rename = "maxConnections")]
    #[schemars(range(min = 1, max = 64))]
    pub max_connections: u32,
    /// Write-ahead logging, so readers do not wait for writers.
    #[serde(default = "yes", rename = "walMode")]
    pub wal_mode: bool,
    /// A directory of `<number>_<name>.sql` scripts applied in order at start, each once.
    #[serde(default, rename = "migrationsDir")]
    pub migrations_dir: Option<String>,
    /// The name the scripts are recorded under in `wf_migrations`.
    #[serde(
        default = "crate::database_module::default_migration_set",
        rename = "migrationSet"
    )]
    pub migration_set: String,
}

fn default_path() -> String {
    "data/workflow.db".to_string()
}

fn default_connections() -> u32 {
    4
}

fn yes() -> bool {
    true
}

pub struct SqliteStorageType;

impl Described for SqliteStorageType {
    const NAME: &'static str = "storage.sqlite";
    const CATEGORY: Category = Category::Storage;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "Embedded SQLite database file (WAL) with versioned migrations.";
    type Config = SqliteConfig;
}

impl ModuleType for SqliteStorageType {
    fn check(config: &SqliteConfig, _ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        target(
            Some("sqlite"),
            Some(&config.db_path),
            "",
            config.wal_mode,
            std::path::Path::new("."),
        )
        .err()
        .map(|issue| ConfigIssue {
            pointer: "/dbPath".into(),
            ..issue
        })
        .into_iter()
        .collect()
    }

    fn build(config: SqliteConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Module>> {
        let target = target(
            Some("sqlite"),
            Some(&config.db_path),
            "",
            config.wal_mode,
            ctx.base_dir,
        )
        .map_err(|issue| anyhow::anyhow!("`dbPath`: {}", issue.message))?;
        let settings = pool_settings(config.max_connections, 0, "5s")?;
        let migrations = config
            .migrations_dir
            .map(|d| (ctx.base_dir.join(d), config.migration_set));
        DatabaseModule::build(ctx, target, settings, migrations)
    }
}
