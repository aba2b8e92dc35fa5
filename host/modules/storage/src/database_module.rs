//! `database.workflow` (and its alias `database.modular`): a SQLite or PostgreSQL connection
//! pool that pipelines (`step.db_query`, `step.db_exec`), the state machine engine, the resource
//! store and the user store share. It connects and applies its migrations when the app starts,
//! so a wrong DSN or a failing migration stops the start with the reason.
//!
//! The original opened the pool only when a `persistence.store` asked it to, so the database
//! steps against a bare `database.workflow` failed with `database connection is nil`, and its
//! PostgreSQL driver was never linked in.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use wf_engine::wf_config::duration::{DURATION_PATTERN, parse_duration};
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType, StartContext,
    StopContext, async_trait,
};

use crate::database::{Database, PoolSettings, Target};
use crate::migrate::{self, Migration};

/// Configuration of `database.workflow` / `database.modular`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite` (also `sqlite3`) or `postgres` (also `postgresql`, `pgx`). Optional: a
    /// `postgres://` DSN means PostgreSQL, anything else SQLite.
    #[serde(default)]
    pub driver: Option<String>,
    /// SQLite: a file path (relative to this config file's directory; created when missing) or
    /// `:memory:`. PostgreSQL: `postgres://user:password@host:5432/db`; put the password in the
    /// environment (`${DATABASE_URL}`). Default: `.wf/data/<module name>.db`.
    #[serde(default)]
    pub dsn: Option<String>,
    /// Most connections the pool opens.
    #[serde(default = "default_max_open", rename = "maxOpenConns")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_open_conns: u32,
    /// Connections kept open while idle.
    #[serde(default, rename = "maxIdleConns")]
    #[schemars(range(min = 0, max = 1000))]
    pub max_idle_conns: u32,
    /// How long start-up and each query may wait for a connection.
    #[serde(default = "default_connect_timeout", rename = "connectTimeout")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub connect_timeout: String,
    /// A directory of `<number>_<name>.sql` scripts applied in order at start, each once
    /// (relative to this config file's directory).
    #[serde(default, rename = "migrationsDir")]
    pub migrations_dir: Option<String>,
    /// The name `migrationsDir`'s scripts are recorded under in `wf_migrations`; apps that
    /// share one database need different names.
    #[serde(default = "default_migration_set", rename = "migrationSet")]
    pub migration_set: String,
    /// SQLite: write-ahead logging, so readers do not wait for writers.
    #[serde(default = "yes", rename = "walMode")]
    pub wal_mode: bool,
}

pub(crate) fn default_migration_set() -> String {
    "app".to_string()
}

fn default_max_open() -> u32 {
    10
}

fn default_connect_timeout() -> String {
    "5s".to_string()
}

fn yes() -> bool {
    true
}

/// Driver names the original's configs use.
const SQLITE_DRIVERS: &[&str] = &["sqlite", "sqlite3"];
const POSTGRES_DRIVERS: &[&str] = &["postgres", "postgresql", "pgx"];

fn is_postgres_url(dsn: &str) -> bool {
    dsn.starts_with("postgres://") || dsn.starts_with("postgresql://")
}

/// Where a database module's data lives, given its config (`default_file` when it names no
/// SQLite file); the issue when `driver` and `dsn` do not make a supported database.
pub(crate) fn target(
    driver: Option<&str>,
    dsn: Option<&str>,
    default_file: &str,
    wal: bool,
    base_dir: &Path,
) -> Result<Target, ConfigIssue> {
    let postgres = match driver.map(str::to_ascii_lowercase).as_deref() {
        Some(d) if POSTGRES_DRIVERS.contains(&d) => true,
        Some(d) if SQLITE_DRIVERS.contains(&d) => false,
        Some(d) => {
            return Err(ConfigIssue::new(
                "/driver",
                format!("`{d}` is not a supported database driver"),
            )
            .help("use `sqlite` or `postgres`"));
        }
        None => dsn.is_some_and(is_postgres_url),
    };
    if postgres {
        return match dsn {
            Some(url) if is_postgres_url(url) => Ok(Target::Postgres {
                url: url.to_string(),
            }),
            _ => Err(ConfigIssue::new("/dsn", "PostgreSQL needs a `postgres://` DSN")
                .help("e.g. `dsn: ${DATABASE_URL}` with DATABASE_URL=postgres://user:password@host:5432/db")),
        };
    }
    let path = match dsn {
        Some(":memory:") => {
            return Ok(Target::Sqlite {
                path: ":memory:".into(),
                wal: false,
            });
        }
        Some(dsn) if is_postgres_url(dsn) => {
            return Err(
                ConfigIssue::new("/dsn", "a `postgres://` DSN with the `sqlite` driver")
                    .help("set `driver: postgres` or drop `driver`"),
            );
        }
        Some(dsn) => dsn
            .strip_prefix("sqlite://")
            .or_else(|| dsn.strip_prefix("sqlite:"))
            .or_else(|| dsn.strip_prefix("file:"))
            .unwrap_or(dsn)
            // Go DSNs carry options after `?` (`_journal_mode=WAL`): the module's own keys say that.
            .split('?')
            .next()
            .unwrap_or_default()
            .to_string(),
        None => default_file.to_string(),
    };
    if path.is_empty() {
        return Err(ConfigIssue::new("/dsn", "the SQLite file path is empty"));
    }
    let resolved: PathBuf = base_dir.join(&path);
    Ok(Target::Sqlite {
        path: resolved.to_string_lossy().into_owned(),
        wal,
    })
}

/// A database module of either type.
pub struct DatabaseModule {
    pub database: Database,
    target: Target,
    /// The scripts to apply at start and the set they are recorded under.
    migrations: Option<(PathBuf, String)>,
}

impl DatabaseModule {
    pub(crate) fn build(
        ctx: &mut BuildContext<'_>,
        target: Target,
        settings: PoolSettings,
        migrations: Option<(PathBuf, String)>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        let database = Database::new(ctx.name, &target, &settings)?;
        ctx.provide::<Database>(Arc::new(database.clone()));
        Ok(Arc::new(DatabaseModule {
            database,
            target,
            migrations,
        }))
    }
}

#[async_trait]
impl Module for DatabaseModule {
    async fn start(&self, _ctx: &StartContext) -> anyhow::Result<()> {
        if let Target::Sqlite { path, .. } = &self.target
            && let Some(parent) = Path::new(path)
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                anyhow::anyhow!(
                    "cannot create {} for {}: {e}",
                    parent.display(),
                    self.database.describe()
                )
            })?;
        }
        self.database.check().await?;
        if let Some((dir, set)) = &self.migrations {
            let scripts: Vec<Migration> = migrate::read_dir(dir)?;
            migrate::migrate(&self.database, set, &scripts).await?;
        }
        tracing::info!(database = %self.database.describe(), "database ready");
        Ok(())
    }

    async fn stop(&self, _ctx: &StopContext) -> anyhow::Result<()> {
        self.database.close().await;
        Ok(())
    }
}

pub(crate) fn pool_settings(
    max_open: u32,
    max_idle: u32,
    connect_timeout: &str,
) -> anyhow::Result<PoolSettings> {
    Ok(PoolSettings {
        max_connections: max_open.max(1),
        min_connections: max_idle,
        connect_timeout: parse_duration(connect_timeout)
            .map_err(|e| anyhow::anyhow!("`connectTimeout`: {e}"))?,
    })
}

fn check_config(config: &DatabaseConfig) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    // The default file's real name depends on the module; any name checks the same.
    if let Err(issue) = target(
        config.driver.as_deref(),
        config.dsn.as_deref(),
        "default.db",
        config.wal_mode,
        Path::new("."),
    ) {
        issues.push(issue);
    }
    if config.max_idle_conns > config.max_open_conns {
        issues.push(ConfigIssue::new(
            "/maxIdleConns",
            format!(
                "`maxIdleConns` ({}) is more than `maxOpenConns` ({})",
                config.max_idle_conns, config.max_open_conns
            ),
        ));
    }
    issues
}

fn build_config(
    config: DatabaseConfig,
    ctx: &mut BuildContext<'_>,
) -> anyhow::Result<Arc<dyn Module>> {
    let default_file = format!(".wf/data/{}.db", ctx.name);
    let target = target(
        config.driver.as_deref(),
        config.dsn.as_deref(),
        &default_file,
        config.wal_mode,
        ctx.base_dir,
    )
    .map_err(|issue| anyhow::anyhow!("{}", issue.message))?;
    let settings = pool_settings(
        config.max_open_conns,
        config.max_idle_conns,
        &config.connect_timeout,
    )?;
    let migrations = config
        .migrations_dir
        .map(|d| (ctx.base_dir.join(d), config.migration_set));
    DatabaseModule::build(ctx, target, settings, migrations)
}

pub struct DatabaseWorkflowType;

impl Described for DatabaseWorkflowType {
    const NAME: &'static str = "database.workflow";
    const CATEGORY: Category = Category::Storage;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "SQLite or PostgreSQL connection pool with versioned migrations, shared by the database steps, state machines and resources.";
    type Config = DatabaseConfig;
}

impl ModuleType for DatabaseWorkflowType {
    fn check(config: &DatabaseConfig, _ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        check_config(config)
    }

    fn build(
        config: DatabaseConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        build_config(config, ctx)
    }
}

/// `database.modular`: the original's other name for the same pool.
pub struct DatabaseModularType;

impl Described for DatabaseModularType {
    const NAME: &'static str = "database.modular";
    const CATEGORY: Category = Category::Storage;
    const PLUGIN: &'static str = "modular-compat";
    const DESCRIPTION: &'static str =
        "The original's name for `database.workflow`: a SQLite or PostgreSQL connection pool.";
    type Config = DatabaseConfig;
}

impl ModuleType for DatabaseModularType {
    fn check(config: &DatabaseConfig, _ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        check_config(config)
    }

    fn build(
        config: DatabaseConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        build_config(config, ctx)
    }
}
