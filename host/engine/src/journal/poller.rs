//! A serving host's background work on the journal: heartbeats; resuming the unfinished runs
//! of hosts that are gone (this one's previous life, after a crash); starting replays queued
//! by other processes; cancels asked by other processes; retention. None of it ever blocks a
//! run: it runs on its own task, and prunes in small batches.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Journal;
use super::store::Takeover;

/// How often the poller looks for queued runs and cancels.
const POLL: Duration = Duration::from_secs(1);
/// How often retention runs.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Rows deleted per statement while pruning, so writers never wait long.
const PRUNE_BATCH: usize = 500;
/// Queued runs started per poll.
const CLAIM_BATCH: usize = 64;

/// The poller of a serving host; a one-off command's only heartbeats.
pub(crate) async fn run(journal: Arc<Journal>, serving: bool) {
    // A host not heard from for `takeover_after` is gone; it says it is alive six times as often.
    let lease = journal.settings.takeover_after;
    let heartbeat = lease / 6;
    let poll = POLL.min(heartbeat);
    if !serving {
        loop {
            tokio::select! {
                () = journal.stopping.cancelled() => return,
                () = tokio::time::sleep(heartbeat) => {}
            }
            if let Err(e) = journal
                .store
                .heartbeat(&journal.owner, &journal.app_name, false)
                .await
            {
                tracing::warn!(error = %e, "run journal heartbeat failed");
            }
        }
    }
    // The first takeover is immediate: a restarted host resumes its own runs at once.
    take_over(&journal, lease).await;
    let mut last_heartbeat = Instant::now();
    let mut last_takeover = Instant::now();
    let mut last_prune: Option<Instant> = None;
    loop {
        tokio::select! {
            () = journal.stopping.cancelled() => return,
            () = journal.wake.notified() => {}
            () = tokio::time::sleep(poll) => {}
        }
        if !journal.is_recording() {
            return;
        }
        if last_heartbeat.elapsed() >= heartbeat {
            if let Err(e) = journal
                .store
                .heartbeat(&journal.owner, &journal.app_name, true)
                .await
            {
                tracing::warn!(error = %e, "run journal heartbeat failed");
            }
            last_heartbeat = Instant::now();
        }
        start_queued(&journal).await;
        forward_cancels(&journal).await;
        if last_takeover.elapsed() >= lease / 2 {
            take_over(&journal, lease).await;
            last_takeover = Instant::now();
        }
        if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            prune(&journal).await;
            last_prune = Some(Instant::now());
        }
    }
}

async fn take_over(journal: &Arc<Journal>, lease: Duration) {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let takeover = Takeover {
        owner: &journal.owner,
        stale_before: wf_config::time::unix_millis_now() - lease_ms,
        others_gone: journal.exclusive.load(std::sync::atomic::Ordering::Acquire),
    };
    match journal.store.take_over(takeover).await {
        Ok(runs) => {
            for run in runs {
                tracing::info!(run_id = %run.summary.run_id, pipeline = %run.summary.pipeline, durable = run.summary.durable, "taking over an unfinished run");
                journal.start_claimed(run, true).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not look for unfinished runs"),
    }
}

async fn start_queued(journal: &Arc<Journal>) {
    match journal
        .store
        .claim_queued(&journal.owner, CLAIM_BATCH)
        .await
    {
        Ok(runs) => {
            for run in runs {
                journal.start_claimed(run, false).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not look for queued runs"),
    }
}

async fn forward_cancels(journal: &Journal) {
    match journal.store.cancel_requests(&journal.owner).await {
        Ok(ids) => {
            for id in ids {
                journal.cancel_local(&id);
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not look for cancelled runs"),
    }
}

async fn prune(journal: &Journal) {
    let now = wf_config::time::unix_millis_now();
    // Every pipeline with runs recorded, those no longer in the app under the app's default.
    let recorded = match journal.store.pipelines().await {
        Ok(names) => names,
        Err(e) => {
            tracing::warn!(error = %e, "could not list the journal's pipelines");
            return;
        }
    };
    let policies: Vec<(String, super::Retention)> = {
        let configured = journal.retention.read().ok();
        recorded
            .into_iter()
            .map(|name| {
                let policy = configured
                    .as_ref()
                    .and_then(|c| c.get(&name).copied())
                    .unwrap_or(journal.settings.retention);
                (name, policy)
            })
            .collect()
    };
    let mut pruned = 0;
    for (pipeline, retention) in policies {
        // Batch after batch, yielding between them, until nothing is beyond the policy.
        loop {
            match journal
                .store
                .prune(&pipeline, retention, now, PRUNE_BATCH)
                .await
            {
                Ok(n) => {
                    pruned += n;
                    if (n as usize) < PRUNE_BATCH {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    tracing::warn!(pipeline, error = %e, "pruning old runs failed");
                    break;
                }
            }
        }
    }
    if let Err(e) = journal.store.prune_keys(now, PRUNE_BATCH).await {
        tracing::warn!(error = %e, "pruning expired idempotency keys failed");
    }
    if pruned > 0 {
        tracing::debug!(pruned, "pruned old runs");
    }
}
