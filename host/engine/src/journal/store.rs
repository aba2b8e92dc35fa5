//! Where the journal keeps its records. The engine defines what a store does; `wf-storage`
//! implements it on SQLite and PostgreSQL and registers itself as the [`JournalBackend`].

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::record::{
    CancelOutcome, JournalWrite, KeyClaim, Retention, RunDetail, RunPage, RunQuery,
};
use crate::services::Services;

/// A failed journal call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    /// The store cannot be reached or written (a full disk, a database away): runs that need
    /// the journal are refused with a 503 until it is back.
    #[error("the run journal is unavailable: {0}")]
    Unavailable(String),
    /// The store's data cannot be used (not a journal, written by a newer wf, corrupt).
    #[error("{0}")]
    Unusable(String),
    #[error("{0}")]
    Other(String),
}

/// Which runs a host takes over when it starts or finds a peer gone.
#[derive(Clone, Copy, Debug)]
pub struct Takeover<'a> {
    /// The host taking them.
    pub owner: &'a str,
    /// Runs of hosts not heard from since (ms since the epoch) are taken.
    pub stale_before: i64,
    /// Every other serving host is known to be gone (this host holds the data directory's
    /// lock): their runs are taken at once; one-off commands' runs only when stale.
    pub others_gone: bool,
}

/// The journal's storage. Every method may be called concurrently.
#[async_trait]
pub trait JournalStore: Send + Sync {
    /// `runs journal (sqlite:.wf/runs.db)`: for errors and logs.
    fn describe(&self) -> &str;

    /// Creates or upgrades the tables; refuses a journal it cannot use (see
    /// [`JournalError::Unusable`]).
    async fn open(&self) -> Result<(), JournalError>;

    /// Writes `batch` in one transaction, in order. Values are already serialised
    /// ([`super::record::StoredValue`]) where the record holds them.
    async fn write(
        &self,
        batch: &[JournalWrite],
        max_value_bytes: usize,
    ) -> Result<(), JournalError>;

    async fn list(&self, query: &RunQuery) -> Result<RunPage, JournalError>;

    async fn get(&self, run_id: &str) -> Result<Option<RunDetail>, JournalError>;

    /// Marks `owner` alive now; `serving`: a serving host (whose runs a host holding the data
    /// directory's lock may take at once), not a one-off command.
    async fn heartbeat(&self, owner: &str, app: &str, serving: bool) -> Result<(), JournalError>;

    /// Forgets `owner` (a host stopping), so other hosts may take its unfinished runs at once
    /// instead of after `runs.takeover_after`.
    async fn retire(&self, owner: &str) -> Result<(), JournalError>;

    /// Claims the unfinished runs of gone hosts (see [`Takeover`]) for `takeover.owner`, and
    /// returns them with their steps. Runs not durable come back too, to be marked
    /// interrupted.
    async fn take_over(&self, takeover: Takeover<'_>) -> Result<Vec<RunDetail>, JournalError>;

    /// Claims up to `limit` queued runs for `owner`, marking them running.
    async fn claim_queued(&self, owner: &str, limit: usize)
    -> Result<Vec<RunDetail>, JournalError>;

    async fn request_cancel(&self, run_id: &str) -> Result<CancelOutcome, JournalError>;

    /// Runs of `owner` asked to be cancelled (by another process).
    async fn cancel_requests(&self, owner: &str) -> Result<Vec<String>, JournalError>;

    /// Records that `replay` replays `original`.
    async fn mark_replayed(&self, original: &str, replay: &str) -> Result<(), JournalError>;

    /// Deletes at most `batch` finished runs of `pipeline` beyond `retention`, oldest first;
    /// how many went.
    async fn prune(
        &self,
        pipeline: &str,
        retention: Retention,
        now: i64,
        batch: usize,
    ) -> Result<u64, JournalError>;

    /// The pipelines that have runs recorded.
    async fn pipelines(&self) -> Result<Vec<String>, JournalError>;

    /// Takes `key` in `scope` for `run_id` until `expires_at` (ms), unless a live claim or an
    /// answer holds it. `fingerprint` tells a repeated request from a different one.
    async fn claim_key(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        run_id: &str,
        expires_at: i64,
    ) -> Result<KeyClaim, JournalError>;

    /// Stores the answer given under `key`.
    async fn complete_key(
        &self,
        scope: &str,
        key: &str,
        answer: &Value,
    ) -> Result<(), JournalError>;

    /// Forgets `key` (its run failed on the server's side: a retry may run again).
    async fn release_key(&self, scope: &str, key: &str) -> Result<(), JournalError>;

    /// Deletes up to `batch` expired keys; how many went.
    async fn prune_keys(&self, now: i64, batch: usize) -> Result<u64, JournalError>;

    /// Closes connections.
    async fn close(&self);
}

/// Where a journal lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalTarget {
    /// `runs.db` in this data directory.
    DataDir(PathBuf),
    /// The named `database.*` module.
    Database(String),
    /// A private in-memory database (no data directory: a library embedding wf, tests).
    Memory,
}

/// Makes stores; registered by the crate that implements them.
pub trait JournalBackend: Send + Sync {
    /// The store of app `app` at `target`, made without I/O (`wf-host validate` builds apps
    /// too).
    fn store(
        &self,
        target: &JournalTarget,
        services: &Services,
        app: &str,
    ) -> anyhow::Result<Arc<dyn JournalStore>>;
}
