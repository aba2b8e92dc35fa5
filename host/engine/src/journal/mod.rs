//! The run journal: what every run did — its trigger, each step attempt, its end — kept in a
//! store (SQLite in the data directory by default, the app's PostgreSQL when it points at one).
//! It is what makes runs durable (resumed after a crash from their last recorded step),
//! idempotent routes, replay, cancel, and the history the builder and the admin platform read.
//!
//! Records go through one writer task that commits them in batches (group commit): a run that
//! must wait for its record (a durable one) shares one transaction with every run recording at
//! that moment. Runs that only keep history never wait. A pipeline whose journal is off pays
//! one `Option` check per run.

pub(crate) mod build;
mod control;
mod poller;
pub mod record;
pub(crate) mod recorder;
mod settings;
pub mod store;
mod writer;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use serde_json::{Map, Value};
use tokio::sync::{Notify, Semaphore, mpsc};

pub use control::RunControl;
pub use record::*;
pub use settings::{JournalSettings, RunsSettings, pipeline_retention};
pub use store::{JournalBackend, JournalError, JournalStore, JournalTarget, Takeover};

use crate::events::RunEvents;
use crate::pipeline::Pipeline;
use crate::state::AppState;
use crate::step::{Extensions, RunMeta};

/// What a trigger kind does for the journal: rebuilds, from what it recorded, what its steps
/// read besides the trigger data (the HTTP request of an HTTP run) for resumed and replayed
/// runs; and says what a run answered, for idempotent triggers.
#[async_trait::async_trait]
pub trait TriggerRestorer: Send + Sync {
    fn restore(&self, trigger: &RunTrigger, extensions: &mut Extensions);

    /// The answer to keep for a run that ended with `outcome` (its final data, or its error):
    /// repeats of its idempotency key get it. `None` keeps nothing (a server-side failure: a
    /// repeat runs again).
    async fn answer(
        &self,
        extensions: &Extensions,
        outcome: Result<&Map<String, Value>, &crate::pipeline::PipelineError>,
    ) -> Option<Value>;
}

/// What a run continues from: the outcomes of steps it does not run again, in order. Put in a
/// run's extensions by the journal when it resumes or replays a run.
#[derive(Clone, Debug, Default)]
pub struct Restore {
    /// The run's id when it resumes (a replay gets a new one).
    pub run_id: Option<String>,
    /// When the resumed run started (ms since the epoch).
    pub started_at: Option<i64>,
    pub outcomes: VecDeque<RestoredStep>,
    /// Record each restored step in the new run as `reused` (a replay); a resumed run has
    /// them recorded already.
    pub record_reused: bool,
    /// The sequence number the run's next record takes.
    pub next_seq: u32,
    pub replay_of: Option<String>,
    pub replay_from: Option<String>,
}

/// One step's recorded outcome, taken instead of running it.
#[derive(Clone, Debug)]
pub struct RestoredStep {
    pub step: String,
    pub step_type: String,
    /// `None` for a step skipped by `on_error: skip` (with its error message).
    pub output: Result<Map<String, Value>, String>,
    pub next: Option<String>,
}

/// The id a run takes, when its trigger needs to know it before it starts (an idempotency key
/// claimed for it).
#[derive(Clone, Debug)]
pub struct RunId(pub String);

impl RunId {
    /// A fresh id: a UUIDv7, so ids sort by time and the journal's indexes grow at one end
    /// (random ids would scatter every insert across the tables' pages).
    pub fn fresh() -> RunId {
        RunId(uuid::Uuid::now_v7().to_string())
    }
}

/// What tells one request or message from another under the same idempotency key: the
/// SHA-256 of `parts` (hex).
pub fn fingerprint(parts: &[&[u8]]) -> String {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    for part in parts {
        hash.update(part);
        hash.update([0]);
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Options a trigger sets for one run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Durable whatever the pipeline says (a route's `durable: true`).
    pub durable: bool,
    /// The idempotency key the run answers (a route's `idempotency`).
    pub idempotency: Option<IdempotencyRef>,
}

/// The queue between runs and the writer.
pub(crate) struct Queued {
    /// `None` is a barrier: its `done` is answered once everything queued before it is written.
    pub write: Option<JournalWrite>,
    pub done: Option<tokio::sync::oneshot::Sender<Result<(), JournalError>>>,
}

/// Why a replay or a cancel was refused.
#[derive(Debug, thiserror::Error)]
pub enum RunRequestError {
    #[error("no run `{0}`")]
    NotFound(String),
    /// The run is in a state that does not allow it (finished, not replayable).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// The journal of one app.
pub struct Journal {
    store: Arc<dyn JournalStore>,
    settings: JournalSettings,
    /// This host's id: runs it executes are recorded as its own.
    owner: String,
    app_name: String,
    queue: mpsc::Sender<Queued>,
    receiver: Mutex<Option<mpsc::Receiver<Queued>>>,
    /// Whether the writer runs: until then (and after stop), runs are not recorded.
    recording: AtomicBool,
    controls: Mutex<HashMap<String, Arc<RunControl>>>,
    restorers: RwLock<HashMap<String, Arc<dyn TriggerRestorer>>>,
    /// Every journaled pipeline, by name, for resumes and replays (inline route pipelines are
    /// not among the app's named pipelines).
    pipelines: RwLock<HashMap<String, Weak<Pipeline>>>,
    retention: RwLock<HashMap<String, Retention>>,
    /// Durable runs in flight, detached from their callers.
    detached: Arc<Semaphore>,
    events: Arc<RunEvents>,
    app: RwLock<Weak<AppState>>,
    /// Wakes the poller (a replay was queued).
    wake: Notify,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// This host holds the data directory's lock: every other recorded owner is gone.
    exclusive: AtomicBool,
    /// Ends of dropped runs lost to a full queue since the last warning, and when that was.
    lost_ends: std::sync::atomic::AtomicU64,
    lost_logged_at: std::sync::atomic::AtomicI64,
    stopping: tokio_util::sync::CancellationToken,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("store", &self.store.describe())
            .finish_non_exhaustive()
    }
}

impl Journal {
    pub fn new(
        store: Arc<dyn JournalStore>,
        settings: JournalSettings,
        app_name: &str,
        events: Arc<RunEvents>,
    ) -> Journal {
        let (queue, receiver) = mpsc::channel(settings.queue_capacity);
        Journal {
            store,
            detached: Arc::new(Semaphore::new(settings.max_in_flight)),
            settings,
            owner: uuid::Uuid::new_v4().to_string(),
            app_name: app_name.to_string(),
            queue,
            receiver: Mutex::new(Some(receiver)),
            recording: AtomicBool::new(false),
            controls: Mutex::default(),
            restorers: RwLock::default(),
            pipelines: RwLock::default(),
            retention: RwLock::default(),
            events,
            app: RwLock::new(Weak::new()),
            wake: Notify::new(),
            tasks: Mutex::default(),
            exclusive: AtomicBool::new(false),
            lost_ends: std::sync::atomic::AtomicU64::new(0),
            lost_logged_at: std::sync::atomic::AtomicI64::new(0),
            stopping: tokio_util::sync::CancellationToken::new(),
        }
    }

    pub fn settings(&self) -> &JournalSettings {
        &self.settings
    }

    pub fn store(&self) -> &Arc<dyn JournalStore> {
        &self.store
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Whether runs are being recorded (the journal started and has not stopped).
    pub fn is_recording(&self) -> bool {
        self.recording.load(Ordering::Acquire)
    }

    /// How `trigger_kind`'s runs get back what their steps read (see [`TriggerRestorer`]).
    pub fn add_restorer(&self, trigger_kind: &str, restorer: Arc<dyn TriggerRestorer>) {
        if let Ok(mut restorers) = self.restorers.write() {
            restorers.insert(trigger_kind.to_string(), restorer);
        }
    }

    pub(crate) fn add_pipeline(&self, pipeline: &Arc<Pipeline>, retention: Retention) {
        if let Ok(mut pipelines) = self.pipelines.write() {
            pipelines.insert(pipeline.name.clone(), Arc::downgrade(pipeline));
        }
        if let Ok(mut all) = self.retention.write() {
            all.insert(pipeline.name.clone(), retention);
        }
    }

    fn pipeline(&self, name: &str) -> Option<Arc<Pipeline>> {
        self.pipelines.read().ok()?.get(name)?.upgrade()
    }

    /// Opens the store and starts the writer; with `serving`, also the background work of a
    /// serving host: heartbeats, resuming the unfinished runs of gone hosts, queued replays,
    /// cancels from other processes and retention. `exclusive`: this host holds the data
    /// directory's lock. A store it cannot use fails the start with what to do.
    pub async fn start(
        self: &Arc<Self>,
        app: &Arc<AppState>,
        serving: bool,
    ) -> Result<(), JournalError> {
        self.store.open().await?;
        if let Ok(mut slot) = self.app.write() {
            *slot = Arc::downgrade(app);
        }
        // Only a journal in the locked data directory is this host's alone; a database may be
        // shared with other hosts whose runs are still going.
        let alone =
            app.data_dir_exclusive() && matches!(self.settings.target, JournalTarget::DataDir(_));
        self.exclusive.store(alone, Ordering::Release);
        let Some(receiver) = self.receiver.lock().ok().and_then(|mut r| r.take()) else {
            return Err(JournalError::Other("the journal was started twice".into()));
        };
        let writer = tokio::spawn(writer::run(self.clone(), receiver));
        self.recording.store(true, Ordering::Release);
        self.keep_task(writer);
        // Alive, so no serving host takes this one's runs; only a serving host takes others'.
        self.store
            .heartbeat(&self.owner, &self.app_name, serving)
            .await?;
        self.keep_task(tokio::spawn(poller::run(self.clone(), serving)));
        Ok(())
    }

    fn keep_task(&self, task: tokio::task::JoinHandle<()>) {
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
    }

    /// Stops recording: what was queued is written, then the writer and the poller end.
    /// Durable runs still going stay `running` in the store, and the next start resumes them.
    pub async fn stop(&self, deadline: tokio::time::Instant) {
        // False when `start` never got as far as recording (its store did not open).
        let started = self.recording.swap(false, Ordering::AcqRel);
        self.stopping.cancel();
        let tasks: Vec<_> = self
            .tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for task in tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                abort.abort();
            }
        }
        // Its unfinished durable runs are for the next host to resume, at once.
        if started && let Err(e) = self.store.retire(&self.owner).await {
            tracing::warn!(error = %e, "run journal: this host's leave was not recorded; its unfinished runs wait `runs.takeover_after`");
        }
        self.store.close().await;
    }

    /// Queues `write`; with `wait`, until it is committed.
    pub(crate) async fn record(&self, write: JournalWrite, wait: bool) -> Result<(), JournalError> {
        if !wait {
            // Never blocks the run: a full queue means the store is far behind; the record
            // waits for room like any other rather than being dropped.
            if let Err(mpsc::error::TrySendError::Full(queued)) = self.queue.try_send(Queued {
                write: Some(write),
                done: None,
            }) {
                let _ = self.queue.send(queued).await;
            }
            return Ok(());
        }
        self.send_and_wait(Some(write)).await
    }

    /// Queues `write` (`None`: a barrier) and waits until the writer has committed it.
    async fn send_and_wait(&self, write: Option<JournalWrite>) -> Result<(), JournalError> {
        let stopped = || JournalError::Unavailable("the journal has stopped".into());
        let (done, committed) = tokio::sync::oneshot::channel();
        self.queue
            .send(Queued {
                write,
                done: Some(done),
            })
            .await
            .map_err(|_| stopped())?;
        committed.await.map_err(|_| stopped())?
    }

    /// Records what happened outside a pipeline (a state machine's failed follow-up) as a run:
    /// queued like a plain run's records, never waited for.
    pub async fn record_outside(&self, writes: Vec<JournalWrite>) {
        if !self.is_recording() {
            return;
        }
        for write in writes {
            let _ = self.record(write, false).await;
        }
    }

    /// Waits until every record queued before now is written, so a reader sees the runs that
    /// have already answered their callers. Bounded by the writer's pace; an error when the
    /// journal has stopped or the write failed.
    pub async fn flush(&self) -> Result<(), JournalError> {
        self.send_and_wait(None).await
    }

    /// Queues `write` from a place that cannot wait (a dropped run): lost if the queue is full.
    pub(crate) fn record_now(&self, write: JournalWrite) {
        let queued = Queued {
            write: Some(write),
            done: None,
        };
        if self.queue.try_send(queued).is_err() {
            // Under overload this happens to many runs at once: one line per 10 s, counted.
            let lost = self.lost_ends.fetch_add(1, Ordering::Relaxed) + 1;
            let now = wf_config::time::unix_millis_now();
            let last = self.lost_logged_at.load(Ordering::Relaxed);
            if now - last >= 10_000
                && self
                    .lost_logged_at
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                self.lost_ends.store(0, Ordering::Relaxed);
                tracing::warn!(
                    runs = lost,
                    "the run journal's queue is full; the end of runs whose caller went away was not recorded"
                );
            }
        }
    }

    /// How many records wait to be written.
    pub fn queue_depth(&self) -> usize {
        self.settings.queue_capacity - self.queue.capacity()
    }

    /// Registers a run so it can be cancelled.
    pub(crate) fn control(&self, run_id: &str) -> Arc<RunControl> {
        let control = Arc::new(RunControl::default());
        if let Ok(mut controls) = self.controls.lock() {
            controls.insert(run_id.to_string(), control.clone());
        }
        control
    }

    pub(crate) fn release(&self, run_id: &str) {
        if let Ok(mut controls) = self.controls.lock() {
            controls.remove(run_id);
        }
    }

    /// Room for one more durable run detached from its caller, or `None` when
    /// `runs.max_in_flight` are going.
    pub(crate) fn detach_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.detached.clone().try_acquire_owned().ok()
    }

    /// Asks run `run_id` to stop: a running one stops at its current step (its compensation
    /// runs, it ends `cancelled`), a queued one never starts. A finished run is a conflict.
    pub async fn cancel(&self, run_id: &str) -> Result<RunStatus, RunRequestError> {
        match self.store.request_cancel(run_id).await? {
            CancelOutcome::NotFound => Err(RunRequestError::NotFound(run_id.to_string())),
            CancelOutcome::Finished(status) => Err(RunRequestError::Conflict(format!(
                "run `{run_id}` has already ended ({status})"
            ))),
            CancelOutcome::CancelledQueued => Ok(RunStatus::Cancelled),
            CancelOutcome::Requested => {
                self.cancel_local(run_id);
                Ok(RunStatus::Running)
            }
        }
    }

    /// Cancels `run_id` if this host runs it.
    pub(crate) fn cancel_local(&self, run_id: &str) -> bool {
        let control = self
            .controls
            .lock()
            .ok()
            .and_then(|c| c.get(run_id).cloned());
        match control {
            Some(control) => {
                control.cancel();
                true
            }
            None => false,
        }
    }

    /// Queues a new run of `run_id`'s pipeline with the same trigger data, linked to it;
    /// with `from`, the steps before `from` are not run but take the outputs `run_id` recorded.
    /// A serving app starts it within a moment; the new run's id.
    pub async fn replay(
        &self,
        run_id: &str,
        from: Option<&str>,
    ) -> Result<String, RunRequestError> {
        let original = self
            .store
            .get(run_id)
            .await?
            .ok_or_else(|| RunRequestError::NotFound(run_id.to_string()))?;
        replay_plan(&original, from)?;
        let new_id = RunId::fresh().0;
        let start = RunStart {
            run_id: new_id.clone(),
            pipeline: original.summary.pipeline.clone(),
            trigger: original.summary.trigger.clone(),
            input: original.input.as_object().cloned().unwrap_or_default(),
            meta: original.meta.as_object().cloned().unwrap_or_default(),
            durable: original.summary.durable,
            started_at: wf_config::time::unix_millis_now(),
            replay_of: Some(run_id.to_string()),
            replay_from: from.map(str::to_string),
            idempotency: None,
            owner: None,
            status: RunStatus::Queued,
        };
        self.store
            .write(
                &[JournalWrite::Start(Box::new(start))],
                self.settings.max_value_bytes,
            )
            .await?;
        self.store.mark_replayed(run_id, &new_id).await?;
        self.wake.notify_one();
        Ok(new_id)
    }

    /// Starts a run the store handed this host: a queued replay, or an unfinished run of a
    /// gone host (resumed when durable, marked interrupted when not).
    pub(crate) async fn start_claimed(self: &Arc<Self>, run: RunDetail, resumed: bool) {
        let run_id = run.summary.run_id.clone();
        if resumed && !run.summary.durable {
            let end = RunEnd {
                run_id,
                status: RunStatus::Interrupted,
                output: None,
                error: Some(RecordedError {
                    kind: crate::step::ErrorKind::Internal,
                    message: "the host stopped during the run, which was not durable".into(),
                    step: None,
                }),
                finished_at: wf_config::time::unix_millis_now(),
                duration_ms: 0.0,
            };
            let _ = self.record(JournalWrite::End(Box::new(end)), false).await;
            return;
        }
        if let Err(message) = self.launch(&run, resumed) {
            tracing::error!(run_id = %run_id, pipeline = %run.summary.pipeline, error = %message, "recorded run cannot continue");
            let end = RunEnd {
                run_id,
                status: RunStatus::Failed,
                output: None,
                error: Some(RecordedError {
                    kind: crate::step::ErrorKind::InvalidConfig,
                    message,
                    step: None,
                }),
                finished_at: wf_config::time::unix_millis_now(),
                duration_ms: 0.0,
            };
            let _ = self.record(JournalWrite::End(Box::new(end)), false).await;
        }
    }

    /// Spawns `run` (resumed, or a claimed replay).
    fn launch(self: &Arc<Self>, run: &RunDetail, resumed: bool) -> Result<(), String> {
        let name = &run.summary.pipeline;
        let pipeline = self
            .pipeline(name)
            .ok_or_else(|| format!("pipeline `{name}` is not in this app any more"))?;
        if !run.input_restorable {
            return Err("the run's trigger data was cut or had a secret masked when it was recorded, so it cannot run again".into());
        }
        let mut restore = if resumed {
            resume_plan(run)
        } else {
            let original = run.summary.replay_of.clone();
            Restore {
                replay_of: original,
                replay_from: run.summary.replay_from.clone(),
                ..Restore::default()
            }
        };
        restore.run_id = Some(run.summary.run_id.clone());
        restore.started_at = Some(run.summary.started_at_ms);
        let mut extensions = Extensions::default();
        if let Some(meta) = run.meta.as_object().filter(|m| !m.is_empty()) {
            extensions.insert(RunMeta(meta.clone()));
        }
        let restorer = self
            .restorers
            .read()
            .ok()
            .and_then(|r| r.get(&run.summary.trigger.kind).cloned());
        if let Some(restorer) = restorer {
            restorer.restore(&run.summary.trigger, &mut extensions);
        }
        extensions.insert(run.summary.trigger.clone());
        extensions.insert(RunOptions {
            durable: run.summary.durable,
            idempotency: run.idempotency.clone(),
        });
        let input = run.input.as_object().cloned().unwrap_or_default();
        let journal = self.clone();
        let reused = !resumed && run.summary.replay_from.is_some();
        tokio::spawn(async move {
            if reused {
                // A replay from a step: the outputs of the steps before it, from the original.
                match journal.reused_outcomes(&restore).await {
                    Ok(outcomes) => {
                        restore.outcomes = outcomes;
                        restore.record_reused = true;
                    }
                    Err(message) => {
                        journal.fail_unstarted(&restore, message).await;
                        return;
                    }
                }
            }
            extensions.insert(restore);
            // Already on a task of its own.
            extensions.insert(crate::pipeline::Detached);
            let _ = pipeline.run(input, extensions).await;
        });
        Ok(())
    }

    async fn reused_outcomes(&self, restore: &Restore) -> Result<VecDeque<RestoredStep>, String> {
        let (Some(original), Some(from)) = (&restore.replay_of, &restore.replay_from) else {
            return Ok(VecDeque::new());
        };
        let run = self
            .store
            .get(original)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("the replayed run `{original}` is no longer recorded"))?;
        replay_plan(&run, Some(from)).map_err(|e| e.to_string())
    }

    async fn fail_unstarted(&self, restore: &Restore, message: String) {
        let Some(run_id) = restore.run_id.clone() else {
            return;
        };
        let end = RunEnd {
            run_id,
            status: RunStatus::Failed,
            output: None,
            error: Some(RecordedError {
                kind: crate::step::ErrorKind::Internal,
                message,
                step: None,
            }),
            finished_at: wf_config::time::unix_millis_now(),
            duration_ms: 0.0,
        };
        let _ = self.record(JournalWrite::End(Box::new(end)), false).await;
    }

    /// Keeps what a run under an idempotency key answered (or frees the key when there is
    /// nothing to keep), so that repeats get the answer.
    pub(crate) async fn settle_key(
        &self,
        key: &IdempotencyRef,
        trigger_kind: &str,
        extensions: &Extensions,
        outcome: Result<&Map<String, Value>, &crate::pipeline::PipelineError>,
    ) {
        let restorer = self
            .restorers
            .read()
            .ok()
            .and_then(|r| r.get(trigger_kind).cloned());
        let answer = match restorer {
            Some(restorer) => restorer.answer(extensions, outcome).await,
            None => outcome.ok().map(|data| Value::Object(data.clone())),
        };
        let kept = match answer {
            Some(answer) => self.store.complete_key(&key.scope, &key.key, &answer).await,
            None => self.store.release_key(&key.scope, &key.key).await,
        };
        if let Err(e) = kept {
            tracing::warn!(error = %e, "an idempotent answer was not kept; a repeat will run again");
        }
    }

    /// Tells observers (the metrics collector) how a batch went.
    pub(crate) fn observe_batch(&self, records: usize, elapsed: std::time::Duration, ok: bool) {
        let depth = self.queue_depth();
        self.events
            .observe(|o| o.journal_batch(records, depth, elapsed, ok));
    }
}

/// The outcomes a run resumes from: its steps' final recorded outcomes in order, up to the
/// first that cannot be restored (cut or masked when recorded) — that step runs again.
fn resume_plan(run: &RunDetail) -> Restore {
    let mut outcomes = VecDeque::new();
    for record in run.steps.iter().filter(|s| !s.compensation) {
        match restored(record) {
            Some(Ok(step)) => outcomes.push_back(step),
            Some(Err(())) => break,
            None => {}
        }
    }
    Restore {
        outcomes,
        record_reused: false,
        next_seq: run.steps.iter().map(|s| s.seq).max().unwrap_or(0) + 1,
        replay_of: run.summary.replay_of.clone(),
        replay_from: run.summary.replay_from.clone(),
        ..Restore::default()
    }
}

/// A final outcome as a restored step: `None` for records that are not one (a retried
/// attempt, a failure — the step runs again), `Err` when its output cannot be restored.
fn restored(record: &StepRecord) -> Option<Result<RestoredStep, ()>> {
    let output = match record.status {
        StepStatus::Succeeded | StepStatus::Reused => {
            if !record.restorable {
                return Some(Err(()));
            }
            Ok(record
                .output
                .as_ref()
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default())
        }
        StepStatus::Skipped => Err(record
            .error
            .as_ref()
            .map(|e| e.message.clone())
            .unwrap_or_default()),
        _ => return None,
    };
    Some(Ok(RestoredStep {
        step: record.step.clone(),
        step_type: record.step_type.clone(),
        output,
        next: record.next.clone(),
    }))
}

/// The outcomes a replay of `run` from step `from` reuses (checked: `from` ran in `run`, and
/// every output before it is whole). Without `from`, nothing is reused; the run's input must
/// be whole either way.
fn replay_plan(
    run: &RunDetail,
    from: Option<&str>,
) -> Result<VecDeque<RestoredStep>, RunRequestError> {
    let id = &run.summary.run_id;
    if run.summary.trigger.kind == "statemachine" {
        return Err(RunRequestError::Conflict(format!(
            "run `{id}` records a state machine's follow-up transition ({}); fire that transition on the instance again instead",
            run.summary.trigger.source
        )));
    }
    if run.summary.status == RunStatus::Queued {
        return Err(RunRequestError::Conflict(format!(
            "run `{id}` has not started yet"
        )));
    }
    if !run.input_restorable {
        return Err(RunRequestError::Conflict(format!(
            "run `{id}`'s trigger data was cut or had a secret masked when it was recorded, so it cannot be replayed"
        )));
    }
    let Some(from) = from else {
        return Ok(VecDeque::new());
    };
    let mut outcomes = VecDeque::new();
    for record in run.steps.iter().filter(|s| !s.compensation) {
        if record.step == from {
            return Ok(outcomes);
        }
        match restored(record) {
            Some(Ok(step)) => outcomes.push_back(step),
            Some(Err(())) => {
                return Err(RunRequestError::Conflict(format!(
                    "step `{}` of run `{id}` recorded an output that was cut or had a secret masked; replay from it or an earlier step",
                    record.step
                )));
            }
            None => {}
        }
    }
    Err(RunRequestError::Conflict(format!(
        "step `{from}` did not run in run `{id}`"
    )))
}
