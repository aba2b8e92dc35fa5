//! Versioned migrations: numbered SQL scripts applied once, in order, each in its own
//! transaction, recorded with a checksum in `wf_migrations`.
//!
//! Every part of wf that keeps tables (the state machine engine, the resource store, the user
//! store) and every application (`migrationsDir`) owns a named *set*, so their version numbers
//! never collide. An applied script whose text later changes is refused, not re-run: editing
//! history silently would leave databases that differ by when they were created.

use std::path::Path;

use serde_json::{Value, json};
use sha2::Digest;

use crate::database::{Backend, Database};

/// One migration script of a set.
#[derive(Clone, Debug)]
pub struct Migration {
    pub version: i64,
    pub name: String,
    /// SQL for SQLite; the same text for PostgreSQL unless `postgres` is given.
    pub sql: String,
    pub postgres: Option<String>,
}

impl Migration {
    pub fn new(version: i64, name: &str, sql: &str) -> Migration {
        Migration {
            version,
            name: name.to_string(),
            sql: sql.to_string(),
            postgres: None,
        }
    }

    /// The same migration with a PostgreSQL spelling (`BIGSERIAL`, `JSONB`, ...).
    pub fn postgres(mut self, sql: &str) -> Migration {
        self.postgres = Some(sql.to_string());
        self
    }

    fn sql_for(&self, backend: Backend) -> &str {
        match (backend, &self.postgres) {
            (Backend::Postgres, Some(sql)) => sql,
            _ => &self.sql,
        }
    }

    fn checksum(&self, backend: Backend) -> String {
        let digest = sha2::Sha256::digest(self.sql_for(backend).as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

const LEDGER: &str = "CREATE TABLE IF NOT EXISTS wf_migrations (
    set_name TEXT NOT NULL,
    version BIGINT NOT NULL,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at TEXT NOT NULL,
    PRIMARY KEY (set_name, version)
)";

/// Applies the scripts of `set` not yet applied to `db`. Safe to call from several hosts at
/// once: on PostgreSQL they queue on an advisory lock; on SQLite on the write lock.
pub async fn migrate(db: &Database, set: &str, migrations: &[Migration]) -> anyhow::Result<usize> {
    let mut sorted: Vec<&Migration> = migrations.iter().collect();
    sorted.sort_by_key(|m| m.version);
    if let Some(pair) = sorted.windows(2).find(|w| w[0].version == w[1].version) {
        anyhow::bail!(
            "migration set `{set}` has two scripts numbered {} (`{}` and `{}`)",
            pair[0].version,
            pair[0].name,
            pair[1].name
        );
    }
    let backend = db.backend();
    let mut applied = 0;
    let mut tx = db.begin().await?;
    tx.lock(&format!("wf_migrations:{set}")).await?;
    tx.execute(LEDGER, &[]).await?;
    let done = tx
        .query(
            "SELECT version, name, checksum FROM wf_migrations WHERE set_name = ?",
            &[json!(set)],
        )
        .await?;
    for migration in sorted {
        let recorded = done
            .iter()
            .find(|row| row.get("version").and_then(Value::as_i64) == Some(migration.version));
        let checksum = migration.checksum(backend);
        match recorded {
            Some(row) if row.get("checksum").and_then(Value::as_str) == Some(checksum.as_str()) => {
                continue;
            }
            Some(_) => anyhow::bail!(
                "migration {} `{}` of set `{set}` was changed after it was applied to {}; \
                 add a new migration instead of editing an applied one",
                migration.version,
                migration.name,
                db.describe()
            ),
            None => {}
        }
        for statement in split_statements(migration.sql_for(backend)) {
            tx.execute(statement, &[]).await.map_err(|e| {
                anyhow::anyhow!(
                    "migration {} `{}` of set `{set}` failed: {e}",
                    migration.version,
                    migration.name
                )
            })?;
        }
        tx.execute(
            "INSERT INTO wf_migrations (set_name, version, name, checksum, applied_at) VALUES (?, ?, ?, ?, ?)",
            &[
                json!(set),
                json!(migration.version),
                json!(migration.name),
                json!(checksum),
                json!(chrono::Utc::now().to_rfc3339()),
            ],
        )
        .await?;
        applied += 1;
        tracing::info!(set, version = migration.version, name = %migration.name, database = %db.describe(), "migration applied");
    }
    tx.commit().await?;
    Ok(applied)
}

/// Reads `<version>_<name>.sql` files (e.g. `001_create_orders.sql`) from `dir`.
pub fn read_dir(dir: &Path) -> anyhow::Result<Vec<Migration>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("cannot read migrations directory {}: {e}", dir.display()))?;
    let mut migrations = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("sql") {
            continue;
        }
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let (number, name) = stem.split_once('_').unwrap_or((stem, ""));
        let version: i64 = number.parse().map_err(|_| {
            anyhow::anyhow!(
                "{}: migration files are named `<number>_<name>.sql`, e.g. `001_create_orders.sql`",
                path.display()
            )
        })?;
        let sql = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        migrations.push(Migration::new(version, name, &sql));
    }
    Ok(migrations)
}

/// Splits a script into statements at `;` outside quotes and comments (the drivers run one
/// statement per call).
pub fn split_statements(script: &str) -> Vec<&str> {
    let mut statements = Vec::new();
    let bytes = script.as_bytes();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'\'' | b'"') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += 1;
                }
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b';' => {
                statements.push(&script[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    statements.push(&script[start.min(script.len())..]);
    statements
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty() && !only_comments(s))
        .collect()
}

fn only_comments(statement: &str) -> bool {
    statement
        .lines()
        .all(|l| l.trim().is_empty() || l.trim().starts_with("--"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_split_at_semicolons_outside_quotes_and_comments() {
        let script = "CREATE TABLE a (x TEXT DEFAULT ';'); -- a; comment\nINSERT INTO a VALUES ('b;c');\n/* x; */ SELECT 1;\n-- trailing\n";
        assert_eq!(
            split_statements(script),
            vec![
                "CREATE TABLE a (x TEXT DEFAULT ';')",
                "-- a; comment\nINSERT INTO a VALUES ('b;c')",
                "/* x; */ SELECT 1"
            ]
        );
    }
}
