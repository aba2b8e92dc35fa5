//! The key-value store behind the `state` import: buckets of JSON values with revisions for
//! compare-and-swap, shared by every component of an app. In the app's database when it has
//! one (table `wf_component_state`, so buckets survive restarts), else in memory.
//!
//! The host holds these bytes on the components' behalf, outside their memory limits, so each
//! bucket's keys and bytes are counted and every write is held to the writer's quotas
//! (`limits.state_value_kib`, `state_keys`, `state_bucket_mib`). With a database, the counts
//! are this host's view: read from the table on first use, then kept up to date by its own
//! writes (another host's writes show when a refusal makes it count again).

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{Value, json};
use tokio::sync::OnceCell;
use wf_storage::{Backend, Database, Migration};

use crate::limits::{LimitKind, Quotas};

/// Why a state call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// A quota of the writing component.
    #[error("{}", .0.refusal(.1))]
    Quota(LimitKind, String),
    /// The database could not be used.
    #[error("the state store is unavailable: {0}")]
    Unavailable(String),
}

/// Keys and bytes (keys and values together) of one bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BucketUsage {
    pub keys: usize,
    pub bytes: usize,
}

#[derive(Debug)]
enum Backing {
    Memory(Mutex<MemoryEntries>),
    Database {
        database: Database,
        schema: OnceCell<()>,
    },
}

#[derive(Debug, Default)]
struct MemoryEntries {
    entries: HashMap<(String, String), (String, u64)>,
    revision: u64,
}

#[derive(Debug)]
pub struct StateStore {
    backing: Backing,
    /// Per bucket; for a database, only buckets used since start.
    usage: Mutex<HashMap<String, BucketUsage>>,
}

impl Default for StateStore {
    fn default() -> Self {
        StateStore::in_memory()
    }
}

/// A write the quotas were checked for: how it changes its bucket.
struct Change {
    new_key: bool,
    bytes_delta: isize,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn unavailable(e: impl std::fmt::Display) -> StateError {
    StateError::Unavailable(e.to_string())
}

impl StateStore {
    pub fn in_memory() -> StateStore {
        StateStore {
            backing: Backing::Memory(Mutex::default()),
            usage: Mutex::default(),
        }
    }

    /// Buckets in `database` (its table is created on first use).
    pub fn in_database(database: Database) -> StateStore {
        StateStore {
            backing: Backing::Database {
                database,
                schema: OnceCell::new(),
            },
            usage: Mutex::default(),
        }
    }

    pub fn is_persistent(&self) -> bool {
        matches!(self.backing, Backing::Database { .. })
    }

    /// Every bucket used since start, with its keys and bytes (for metrics).
    pub fn usage(&self) -> Vec<(String, BucketUsage)> {
        let mut all: Vec<_> = lock(&self.usage)
            .iter()
            .map(|(b, u)| (b.clone(), *u))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// What this host counted of `bucket`.
    pub fn bucket_usage(&self, bucket: &str) -> BucketUsage {
        lock(&self.usage).get(bucket).copied().unwrap_or_default()
    }

    pub async fn get(&self, bucket: &str, key: &str) -> Result<Option<(String, u64)>, StateError> {
        match &self.backing {
            Backing::Memory(entries) => Ok(lock(entries)
                .entries
                .get(&(bucket.to_string(), key.to_string()))
                .cloned()),
            Backing::Database { database, .. } => {
                self.ready().await?;
                let rows = database
                    .query(
                        "SELECT value, revision FROM wf_component_state WHERE bucket = ? AND key = ?",
                        &[json!(bucket), json!(key)],
                    )
                    .await
                    .map_err(unavailable)?;
                Ok(rows.into_iter().next().map(|row| {
                    (
                        text(row.get("value")),
                        row.get("revision").and_then(Value::as_u64).unwrap_or(0),
                    )
                }))
            }
        }
    }

    /// Writes unconditionally; the new revision.
    pub async fn set(
        &self,
        bucket: &str,
        key: &str,
        value: String,
        quotas: &Quotas,
    ) -> Result<u64, StateError> {
        self.write(bucket, key, None, value, quotas)
            .await
            .map(|r| r.unwrap_or(0))
    }

    /// Writes when the key's revision is `expected` (`None`: absent); the new revision, or
    /// `None` when the condition failed and nothing was written.
    pub async fn compare_and_swap(
        &self,
        bucket: &str,
        key: &str,
        expected: Option<u64>,
        value: String,
        quotas: &Quotas,
    ) -> Result<Option<u64>, StateError> {
        self.write(bucket, key, Some(expected), value, quotas).await
    }

    pub async fn delete(&self, bucket: &str, key: &str) -> Result<bool, StateError> {
        match &self.backing {
            Backing::Memory(entries) => {
                let mut entries = lock(entries);
                let removed = entries
                    .entries
                    .remove(&(bucket.to_string(), key.to_string()));
                if let Some((value, _)) = &removed {
                    self.apply(bucket, -1, -((key.len() + value.len()) as isize));
                }
                Ok(removed.is_some())
            }
            Backing::Database { database, .. } => {
                let old = self.get(bucket, key).await?;
                let result = database
                    .execute(
                        "DELETE FROM wf_component_state WHERE bucket = ? AND key = ?",
                        &[json!(bucket), json!(key)],
                    )
                    .await
                    .map_err(unavailable)?;
                if let (Some((value, _)), 1..) = (&old, result.affected_rows) {
                    self.known_usage(bucket).await?;
                    self.apply(bucket, -1, -((key.len() + value.len()) as isize));
                }
                Ok(result.affected_rows > 0)
            }
        }
    }

    /// A write, conditional when `condition` is given (the revision it expects).
    async fn write(
        &self,
        bucket: &str,
        key: &str,
        condition: Option<Option<u64>>,
        value: String,
        quotas: &Quotas,
    ) -> Result<Option<u64>, StateError> {
        if value.len() > quotas.state_value_bytes {
            return Err(StateError::Quota(
                LimitKind::StateValue,
                format!(
                    "a value of {} KiB is over the {} KiB limit",
                    value.len() >> 10,
                    quotas.state_value_bytes >> 10
                ),
            ));
        }
        match &self.backing {
            Backing::Memory(entries) => {
                // One lock over the check and the write: the counts are exact.
                let mut entries = lock(entries);
                let id = (bucket.to_string(), key.to_string());
                let old = entries.entries.get(&id);
                if let Some(expected) = condition
                    && old.map(|(_, r)| *r) != expected
                {
                    return Ok(None);
                }
                let change = self.admit(bucket, key, old.map(|(v, _)| v.len()), &value, quotas)?;
                entries.revision += 1;
                let revision = entries.revision;
                entries.entries.insert(id, (value, revision));
                self.apply(bucket, change.new_key as isize, change.bytes_delta);
                Ok(Some(revision))
            }
            Backing::Database { database, .. } => {
                let old = self.get(bucket, key).await?;
                if let Some(expected) = condition
                    && old.as_ref().map(|(_, r)| *r) != expected
                {
                    return Ok(None);
                }
                self.known_usage(bucket).await?;
                let old_len = old.as_ref().map(|(v, _)| v.len());
                let change = match self.admit(bucket, key, old_len, &value, quotas) {
                    Ok(change) => change,
                    // Other hosts may have deleted since this one counted: count again once.
                    Err(refused) => {
                        self.count(bucket).await?;
                        self.admit(bucket, key, old_len, &value, quotas)
                            .map_err(|_| refused)?
                    }
                };
                let now_us = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as u64);
                // Increasing per key, and never reused after a delete (no ABA for CAS).
                let revision = old.as_ref().map_or(0, |(_, r)| r + 1).max(now_us);
                let params = [json!(bucket), json!(key), json!(value), json!(revision)];
                let written = match condition {
                    None => database.execute(
                        "INSERT INTO wf_component_state (bucket, key, value, revision) VALUES (?, ?, ?, ?) \
                         ON CONFLICT (bucket, key) DO UPDATE SET value = excluded.value, revision = excluded.revision",
                        &params,
                    ).await,
                    Some(None) => database.execute(
                        "INSERT INTO wf_component_state (bucket, key, value, revision) VALUES (?, ?, ?, ?) \
                         ON CONFLICT (bucket, key) DO NOTHING",
                        &params,
                    ).await,
                    Some(Some(expected)) => database.execute(
                        "UPDATE wf_component_state SET value = ?, revision = ? WHERE bucket = ? AND key = ? AND revision = ?",
                        &[json!(value), json!(revision), json!(bucket), json!(key), json!(expected)],
                    ).await,
                }
                .map_err(unavailable)?;
                if written.affected_rows == 0 {
                    return Ok(None);
                }
                self.apply(bucket, change.new_key as isize, change.bytes_delta);
                Ok(Some(revision))
            }
        }
    }

    /// Checks a write of `value` under `key` (now `old_len` bytes, or absent) against the
    /// bucket's counts.
    fn admit(
        &self,
        bucket: &str,
        key: &str,
        old_len: Option<usize>,
        value: &str,
        quotas: &Quotas,
    ) -> Result<Change, StateError> {
        let usage = lock(&self.usage).get(bucket).copied().unwrap_or_default();
        let new_key = old_len.is_none();
        if new_key && usage.keys >= quotas.state_keys {
            return Err(StateError::Quota(
                LimitKind::StateKeys,
                format!(
                    "bucket `{bucket}` holds {} keys, its limit",
                    quotas.state_keys
                ),
            ));
        }
        let old_size = old_len.map_or(0, |len| key.len() + len);
        let new_size = key.len() + value.len();
        let after = (usage.bytes + new_size).saturating_sub(old_size);
        if after > quotas.state_bucket_bytes {
            return Err(StateError::Quota(
                LimitKind::StateBucket,
                format!(
                    "bucket `{bucket}` would hold {} KiB, over its {} MiB limit",
                    after >> 10,
                    quotas.state_bucket_bytes >> 20
                ),
            ));
        }
        Ok(Change {
            new_key,
            bytes_delta: new_size as isize - old_size as isize,
        })
    }

    fn apply(&self, bucket: &str, keys: isize, bytes: isize) {
        let mut usage = lock(&self.usage);
        let entry = usage.entry(bucket.to_string()).or_default();
        entry.keys = entry.keys.saturating_add_signed(keys);
        entry.bytes = entry.bytes.saturating_add_signed(bytes);
    }

    /// Makes sure this host has counted `bucket` (database only).
    async fn known_usage(&self, bucket: &str) -> Result<(), StateError> {
        if lock(&self.usage).contains_key(bucket) {
            return Ok(());
        }
        self.count(bucket).await
    }

    /// Counts `bucket`'s keys and bytes in the database.
    async fn count(&self, bucket: &str) -> Result<(), StateError> {
        let Backing::Database { database, .. } = &self.backing else {
            return Ok(());
        };
        self.ready().await?;
        let bytes = match database.backend() {
            Backend::Postgres => "octet_length(key) + octet_length(value)",
            Backend::Sqlite => "length(CAST(key AS BLOB)) + length(CAST(value AS BLOB))",
        };
        let rows = database
            .query(
                &format!("SELECT count(*) AS keys, coalesce(sum({bytes}), 0) AS bytes FROM wf_component_state WHERE bucket = ?"),
                &[json!(bucket)],
            )
            .await
            .map_err(unavailable)?;
        let number = |row: &serde_json::Map<String, Value>, name: &str| {
            row.get(name)
                .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
                .unwrap_or(0) as usize
        };
        let usage = rows
            .first()
            .map_or_else(BucketUsage::default, |row| BucketUsage {
                keys: number(row, "keys"),
                bytes: number(row, "bytes"),
            });
        lock(&self.usage).insert(bucket.to_string(), usage);
        Ok(())
    }

    async fn ready(&self) -> Result<(), StateError> {
        let Backing::Database { database, schema } = &self.backing else {
            return Ok(());
        };
        schema
            .get_or_try_init(|| async {
                wf_storage::migrate(database, "wasm-state", &migrations())
                    .await
                    .map(|_| ())
            })
            .await
            .map(|_| ())
            .map_err(|e| unavailable(format!("{e:#}")))
    }
}

fn migrations() -> Vec<Migration> {
    vec![Migration::new(
        1,
        "component state",
        "CREATE TABLE IF NOT EXISTS wf_component_state (
            bucket TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            revision BIGINT NOT NULL,
            PRIMARY KEY (bucket, key)
        )",
    )]
}

/// A text column (SQLite hands JSON-looking text back as JSON).
fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn quotas() -> Quotas {
        Quotas {
            state_value_bytes: 100,
            state_keys: 3,
            state_bucket_bytes: 200,
            ..Quotas::default()
        }
    }

    async fn exercise(store: &StateStore) {
        let q = quotas();
        let first = store
            .compare_and_swap("b", "k", None, "1".into(), &q)
            .await
            .unwrap();
        assert!(first.is_some());
        assert_eq!(
            store
                .compare_and_swap("b", "k", None, "2".into(), &q)
                .await
                .unwrap(),
            None
        );
        let second = store
            .compare_and_swap("b", "k", first, "2".into(), &q)
            .await
            .unwrap();
        assert!(second > first);
        assert_eq!(
            store.get("b", "k").await.unwrap().map(|(v, _)| v),
            Some("2".to_string())
        );
        assert!(store.delete("b", "k").await.unwrap());
        assert!(!store.delete("b", "k").await.unwrap());

        // Quotas: a value too large, too many keys, too many bytes; each names its limit.
        let big = format!("\"{}\"", "x".repeat(120));
        let refused = store.set("b", "big", big, &q).await.unwrap_err();
        assert!(
            matches!(refused, StateError::Quota(LimitKind::StateValue, _)),
            "{refused}"
        );
        assert!(
            refused.to_string().contains("limits.state_value_kib"),
            "{refused}"
        );
        for key in ["a", "b", "c"] {
            store.set("b", key, "1".into(), &q).await.unwrap();
        }
        let refused = store.set("b", "d", "1".into(), &q).await.unwrap_err();
        assert!(
            matches!(refused, StateError::Quota(LimitKind::StateKeys, _)),
            "{refused}"
        );
        // Rewriting an existing key is fine at the key limit; growing the bucket is not.
        store.set("b", "a", "2".into(), &q).await.unwrap();
        let value = format!("\"{}\"", "y".repeat(90));
        store.set("b", "a", value.clone(), &q).await.unwrap();
        store.set("b", "b", value.clone(), &q).await.unwrap();
        let refused = store.set("b", "c", value.clone(), &q).await.unwrap_err();
        assert!(
            matches!(refused, StateError::Quota(LimitKind::StateBucket, _)),
            "{refused}"
        );
        // Deleting makes room again.
        assert!(store.delete("b", "b").await.unwrap());
        store.set("b", "c", value, &q).await.unwrap();
        assert_eq!(store.usage()[0].1.keys, 2);
    }

    #[tokio::test]
    async fn memory_buckets_keep_revisions_and_quotas() {
        exercise(&StateStore::in_memory()).await;
    }

    #[tokio::test]
    async fn database_buckets_keep_revisions_and_quotas_and_survive() {
        let dir = std::env::temp_dir().join(format!("wf-state-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let target = wf_storage::Target::Sqlite {
            path: dir.join("state.db").to_string_lossy().into_owned(),
            wal: true,
        };
        let settings = wf_storage::PoolSettings {
            max_connections: 2,
            min_connections: 0,
            connect_timeout: std::time::Duration::from_secs(5),
        };
        let database = Database::new("state", &target, &settings).unwrap();
        exercise(&StateStore::in_database(database.clone())).await;
        // A new store on the same database (a restart) sees the buckets and counts them.
        let again = StateStore::in_database(database);
        assert_eq!(
            again.get("b", "a").await.unwrap().map(|(v, _)| v.len()),
            Some(92)
        );
        let q = quotas();
        let refused = again.set("b", "e", "1".into(), &q).await;
        assert!(
            refused.is_ok(),
            "2 keys of 3 after the restart: {refused:?}"
        );
        assert!(matches!(
            again.set("b", "f", "1".into(), &q).await.unwrap_err(),
            StateError::Quota(LimitKind::StateKeys, _)
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
