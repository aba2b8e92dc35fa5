//! The journal's one writer: it takes whatever records are queued — up to a batch — and commits
//! them in one transaction, so concurrent runs share commits instead of each paying for its own.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Journal, Queued};

/// The most records one transaction holds.
const MAX_BATCH: usize = 1024;

/// Failed writes are logged at most this often (a full disk fails every batch).
const LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) async fn run(journal: Arc<Journal>, mut receiver: mpsc::Receiver<Queued>) {
    let mut writes = Vec::with_capacity(MAX_BATCH);
    let mut waiting = Vec::new();
    let mut last_logged: Option<Instant> = None;
    let mut lost_since_log = 0usize;
    loop {
        let first = tokio::select! {
            queued = receiver.recv() => queued,
            // Stopping: write what is queued, then end.
            () = journal.stopping.cancelled() => {
                receiver.close();
                receiver.recv().await
            }
        };
        let Some(first) = first else {
            return;
        };
        let mut next = Some(first);
        while let Some(queued) = next.take() {
            writes.extend(queued.write);
            if let Some(done) = queued.done {
                waiting.push(done);
            }
            if writes.len() < MAX_BATCH {
                next = receiver.try_recv().ok();
            }
        }
        if writes.is_empty() {
            // Only barriers: everything before them is written.
            for done in waiting.drain(..) {
                let _ = done.send(Ok(()));
            }
            continue;
        }
        let started = Instant::now();
        let result = journal
            .store
            .write(&writes, journal.settings.max_value_bytes)
            .await;
        journal.observe_batch(writes.len(), started.elapsed(), result.is_ok());
        if let Err(e) = &result {
            lost_since_log += writes.len().saturating_sub(waiting.len());
            if last_logged.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
                tracing::error!(store = %journal.store.describe(), error = %e, records = writes.len(), unrecorded_history = lost_since_log, "run journal write failed; runs that need the journal fail until it is back");
                last_logged = Some(Instant::now());
                lost_since_log = 0;
            }
        }
        for done in waiting.drain(..) {
            let _ = done.send(result.clone());
        }
        writes.clear();
    }
}
