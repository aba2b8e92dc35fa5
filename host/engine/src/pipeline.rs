//! Pipelines: ordered steps with jumps, error policies, timeouts, retries and compensation.
//!
//! Rules (documented in docs/pipelines.md):
//! - Steps run in order. A step's output is stored under `steps.<name>` and merged (shallowly)
//!   over `current`.
//! - A step may jump (`step.conditional`). Steps that a conditional names *after* itself are its
//!   branches: sequential flow skips a branch that was not chosen, so branches never fall through
//!   into each other (the original's defect). Steps named *before* it are loop heads.
//! - A run executes at most `max_steps` steps (default 1000), so no input can loop forever.
//! - `on_error`: `stop` fails the run, `skip` records `{_error, _skipped}` and goes on,
//!   `compensate` runs `compensation` in reverse order and then fails the run.
//! - A step's `timeout` and the pipeline's `timeout` cancel the running step.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};
use tokio::time::Instant;
use wf_config::parse_duration;
use wf_config::schema::{OnError, PipelineEntry, RetryEntry, StepEntry};
use wf_config::time::rfc3339_now;

use crate::context::BuildContext;
use crate::events::{self, QuietRun, RunEvents};
use crate::journal::recorder::{Recorder, StepName, parse_next};
use crate::journal::{
    Journal, RecordedError, Restore, RunId, RunOptions, RunStart, RunStatus, RunTrigger, StepStatus,
};
use crate::registry::{ConfigIssue, Registry};
use crate::services::Services;
use crate::state::AppState;
use crate::step::{
    ErrorKind, Extensions, Next, PipelineContext, RunBudget, RunDeadline, RunMeta, Step, StepError,
    StepOutput,
};
use crate::trace::{self, ActiveTrace};

/// Steps one run may execute when the pipeline does not say otherwise.
pub const DEFAULT_MAX_STEPS: u32 = 1000;

/// Fuel one run's WebAssembly steps may use together when the pipeline does not say
/// otherwise: ten calls at a component's default fuel.
pub const DEFAULT_MAX_FUEL: u64 = 10_000_000_000;

pub struct Retry {
    pub max_attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub on: Vec<ErrorKind>,
}

pub struct PipelineStep {
    pub name: String,
    pub type_name: String,
    pub step: Arc<dyn Step>,
    pub on_error: Option<OnError>,
    pub timeout: Option<Duration>,
    pub retry: Option<Retry>,
}

pub struct Pipeline {
    pub name: String,
    pub steps: Vec<PipelineStep>,
    pub compensation: Vec<PipelineStep>,
    pub on_error: OnError,
    pub timeout: Option<Duration>,
    pub max_steps: u32,
    pub max_fuel: u64,
    /// For each step index, the indices of the steps that are branches of it.
    branches: Vec<Vec<usize>>,
    /// For each step index, the steps told of its outcome.
    observers: Vec<Vec<usize>>,
    index: HashMap<String, usize>,
    /// Where lifecycle events go (see [`crate::events`]).
    events: Arc<RunEvents>,
    /// The journal recording this pipeline's runs, when they are recorded.
    journal: Option<Arc<Journal>>,
    /// Runs are resumed after a crash (see docs/durability.md).
    durable: bool,
    /// This pipeline, for running a durable run on a task of its own.
    self_ref: Weak<Pipeline>,
    /// How long its finished runs are kept, when journaled.
    retention: Option<crate::journal::Retention>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let steps: Vec<&str> = self.steps.iter().map(|s| s.name.as_str()).collect();
        f.debug_struct("Pipeline")
            .field("name", &self.name)
            .field("steps", &steps)
            .finish_non_exhaustive()
    }
}

/// Why a run failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PipelineError {
    pub pipeline: String,
    /// The step that failed, when one did.
    pub step: Option<String>,
    pub kind: ErrorKind,
    /// What went wrong, fit for the app's callers.
    pub message: String,
    /// The failed step's detail (see [`StepError::detail`]), for logs and the CLI.
    pub detail: Option<String>,
}

impl PipelineError {
    /// The message with the detail, for the app's author.
    pub fn full(&self) -> String {
        match &self.detail {
            Some(detail) => format!("{} ({detail})", self.message),
            None => self.message.clone(),
        }
    }

    fn with_step_detail(self, step: &str, error: &StepError) -> Self {
        PipelineError {
            detail: error
                .detail
                .as_ref()
                .map(|d| format!("step `{step}` failed: {d}")),
            ..self
        }
    }
}

/// A finished run: its context (with `current` as the result).
#[derive(Debug)]
pub struct RunOutcome {
    pub context: PipelineContext,
}

/// Pipelines by name, shared by everything that starts runs.
#[derive(Clone, Debug, Default)]
pub struct Pipelines {
    by_name: HashMap<String, Arc<Pipeline>>,
}

impl Pipelines {
    pub fn get(&self, name: &str) -> Option<Arc<Pipeline>> {
        self.by_name.get(name).cloned()
    }

    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    pub(crate) fn insert(&mut self, pipeline: Arc<Pipeline>) {
        self.by_name.insert(pipeline.name.clone(), pipeline);
    }
}

/// Builds one pipeline from its declaration. Problems are reported as issues with JSON pointers
/// relative to the declaration (`/steps/2/config/...`).
pub fn build_pipeline(
    name: &str,
    entry: &PipelineEntry,
    registry: &Registry,
    services: &mut Services,
    app: &Arc<AppState>,
    base_dir: &std::path::Path,
) -> Result<Arc<Pipeline>, Vec<ConfigIssue>> {
    let mut issues = Vec::new();
    let journal = app.journal();
    let settings = journal.as_ref().map(|j| j.settings());
    let durable = entry.durable.unwrap_or(settings.is_some_and(|s| s.durable));
    let journaled = durable || entry.journal.unwrap_or(settings.is_some_and(|s| s.journal));
    if entry.durable == Some(true) && entry.journal == Some(false) {
        issues.push(
            ConfigIssue::new(
                "/journal",
                "a durable pipeline's runs are journaled: it cannot say `journal: false`",
            )
            .help("remove `journal: false`, or `durable: true`"),
        );
    }
    let retention = match settings {
        Some(settings) => crate::journal::pipeline_retention(entry, settings.retention)
            .map_err(|issue| issues.push(issue))
            .ok(),
        None => None,
    };
    let steps = build_steps(
        name,
        "/steps",
        &entry.steps,
        registry,
        services,
        app,
        base_dir,
        &mut issues,
    );
    let compensation = build_steps(
        name,
        "/compensation",
        &entry.compensation,
        registry,
        services,
        app,
        base_dir,
        &mut issues,
    );
    let timeout = match entry.timeout.as_deref().map(parse_duration).transpose() {
        Ok(t) => t,
        Err(e) => {
            issues.push(ConfigIssue::new("/timeout", e));
            None
        }
    };
    let index: HashMap<String, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.clone(), i))
        .collect();
    // Steps that watch others' outcomes (`step.circuit_breaker`), by watched step.
    let mut observers = vec![Vec::new(); steps.len()];
    for (i, step) in steps.iter().enumerate() {
        for watched in step.step.observes() {
            match index.get(&watched) {
                Some(&w) => observers[w].push(i),
                None => issues.push(ConfigIssue::new(
                    format!("/steps/{i}/config"),
                    format!(
                        "step `{}` watches `{watched}`, which is not a step of pipeline `{name}`",
                        step.name
                    ),
                )),
            }
        }
    }
    let mut branches = vec![Vec::new(); steps.len()];
    for (i, step) in steps.iter().enumerate() {
        for target in step.step.branch_targets() {
            match index.get(&target) {
                Some(&t) if t > i => branches[i].push(t),
                Some(_) => {} // a jump backwards: a loop head, not a branch
                None => issues.push(
                    ConfigIssue::new(
                        format!("/steps/{i}/config"),
                        format!("step `{}` routes to `{target}`, which is not a step of pipeline `{name}`", step.name),
                    )
                    .help(format!("steps of `{name}`: {}", steps.iter().map(|s| format!("`{}`", s.name)).collect::<Vec<_>>().join(", "))),
                ),
            }
        }
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    let journal = journal.filter(|_| journaled);
    Ok(Pipeline {
        name: name.to_string(),
        steps,
        compensation,
        on_error: entry.on_error.unwrap_or(OnError::Stop),
        timeout,
        max_steps: entry.max_steps.unwrap_or(DEFAULT_MAX_STEPS),
        max_fuel: entry.max_fuel.unwrap_or(DEFAULT_MAX_FUEL),
        branches,
        observers,
        index,
        events: app.run_events().clone(),
        journal,
        durable,
        self_ref: Weak::new(),
        retention,
    }
    .into_shared())
}

#[allow(clippy::too_many_arguments)]
fn build_steps(
    pipeline: &str,
    list: &str,
    entries: &[StepEntry],
    registry: &Registry,
    services: &mut Services,
    app: &Arc<AppState>,
    base_dir: &std::path::Path,
    issues: &mut Vec<ConfigIssue>,
) -> Vec<PipelineStep> {
    let mut built = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let at = |suffix: &str| format!("{list}/{i}{suffix}");
        let Some(registered) = registry.step(&entry.type_name) else {
            issues.push(ConfigIssue::new(
                at("/type"),
                format!("unknown step type `{}`", entry.type_name),
            ));
            continue;
        };
        let config = entry
            .config
            .as_ref()
            .map(|c| Value::Object(c.clone().into_iter().collect()))
            .unwrap_or_else(|| Value::Object(Map::new()));
        let qualified = format!("{pipeline}.{}", entry.name);
        let mut ctx = BuildContext {
            name: &qualified,
            type_name: &entry.type_name,
            base_dir,
            depends_on: &[],
            app,
            services,
        };
        let step = match (registered.factory)(&config, &mut ctx) {
            Ok(step) => step,
            Err(e) => {
                issues.push(ConfigIssue::new(
                    at("/config"),
                    format!("step `{}` (`{}`): {e:#}", entry.name, entry.type_name),
                ));
                continue;
            }
        };
        let timeout = match entry.timeout.as_deref().map(parse_duration).transpose() {
            Ok(t) => t,
            Err(e) => {
                issues.push(ConfigIssue::new(at("/timeout"), e));
                None
            }
        };
        let retry = entry.retry.as_ref().and_then(|r| match retry_policy(r) {
            Ok(policy) => Some(policy),
            Err(e) => {
                issues.push(ConfigIssue::new(at("/retry"), e));
                None
            }
        });
        built.push(PipelineStep {
            name: entry.name.clone(),
            type_name: entry.type_name.clone(),
            step,
            on_error: entry.on_error,
            timeout,
            retry,
        });
    }
    built
}

fn retry_policy(entry: &RetryEntry) -> Result<Retry, String> {
    Ok(Retry {
        max_attempts: entry.max_attempts.max(1),
        backoff: parse_duration(&entry.backoff).map_err(|e| format!("`backoff`: {e}"))?,
        max_backoff: parse_duration(&entry.max_backoff)
            .map_err(|e| format!("`max_backoff`: {e}"))?,
        on: entry.on.clone(),
    })
}

/// Tells observers (and the journal) of a run whose future was dropped before it finished.
struct InFlight<'a> {
    events: &'a RunEvents,
    pipeline: &'a str,
    recorder: Option<&'a Recorder>,
    finished: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.events.observe(|o| o.run_abandoned(self.pipeline));
            if let Some(recorder) = self.recorder {
                recorder.dropped();
            }
        }
    }
}

/// Marks a durable run already moved to a task of its own.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Detached;

/// Marks a run started by a step of another run (`step.sub_workflow`): it is never durable on
/// its own, since resuming its parent runs that step — and so this run — again.
#[derive(Clone, Copy, Debug)]
pub struct NestedRun;

/// One step's run: its result and, for the journal, its attempts and timing.
struct StepRun {
    result: Result<StepOutput, StepError>,
    attempts: u32,
    /// Wall-clock start (ms since the epoch), when recorded.
    started_at: i64,
    elapsed: Duration,
}

/// A step run's attempts and timing, for its record.
struct Timing {
    attempts: u32,
    started_at: i64,
    elapsed: Duration,
}

/// Where a run goes after a step.
enum Advance {
    To(usize),
    End,
}

impl Pipeline {
    /// The pipeline, shared (after a workflow wrapped its steps): known to its journal, and
    /// able to run durable runs on tasks of their own.
    pub fn into_shared(self) -> Arc<Pipeline> {
        let pipeline = Arc::new_cyclic(|self_ref| Pipeline {
            self_ref: self_ref.clone(),
            ..self
        });
        if let (Some(journal), Some(retention)) = (&pipeline.journal, pipeline.retention) {
            journal.add_pipeline(&pipeline, retention);
        }
        pipeline
    }

    /// What the run's data must look like, for API documents: said by the first step, past
    /// steps that leave the data as it came (parsing the request, logging). A check further on
    /// describes data the pipeline has already changed.
    pub fn documented_input(&self) -> Option<Value> {
        for step in &self.steps {
            if let Some(schema) = step.step.documented_input() {
                return Some(schema);
            }
            if !matches!(step.type_name.as_str(), "step.request_parse" | "step.log") {
                return None;
            }
        }
        None
    }

    /// The status a successful run answers with, when a step fixes it: the last that does.
    pub fn documented_status(&self) -> Option<u16> {
        self.steps
            .iter()
            .rev()
            .find_map(|s| s.step.documented_status())
    }

    /// The journal recording this pipeline's runs, when it records them now.
    pub fn journal(&self) -> Option<&Arc<Journal>> {
        self.journal.as_ref().filter(|j| j.is_recording())
    }

    /// Whether this pipeline's runs are recorded in the run journal (once the app starts).
    pub fn is_journaled(&self) -> bool {
        self.journal.is_some()
    }

    /// Runs the pipeline on `trigger` data. `extensions` carries what the trigger attaches for
    /// steps (the HTTP exchange, ...). A durable run goes on a task of its own, so that it
    /// finishes even when its caller stops waiting.
    pub async fn run(
        &self,
        trigger: Map<String, Value>,
        extensions: Extensions,
    ) -> Result<RunOutcome, PipelineError> {
        let Some(journal) = self.journal() else {
            return self.run_with(trigger, extensions, None).await;
        };
        let durable = (self.durable || extensions.get::<RunOptions>().is_some_and(|o| o.durable))
            && extensions.get::<NestedRun>().is_none();
        if durable
            && extensions.get::<Detached>().is_none()
            && let Some(me) = self.self_ref.upgrade()
        {
            return self.run_detached(me, journal, trigger, extensions).await;
        }
        self.run_with(trigger, extensions, Some((journal.clone(), durable)))
            .await
    }

    /// A durable run on a task of its own; its caller waits for it until the trigger's
    /// deadline, after which the run goes on without it.
    async fn run_detached(
        &self,
        me: Arc<Pipeline>,
        journal: &Arc<Journal>,
        trigger: Map<String, Value>,
        mut extensions: Extensions,
    ) -> Result<RunOutcome, PipelineError> {
        let Some(permit) = journal.detach_permit() else {
            return Err(self.error(
                None,
                ErrorKind::Unavailable,
                format!(
                    "{} durable runs are going, the most `runs.max_in_flight` allows; try again later",
                    journal.settings().max_in_flight
                ),
            ));
        };
        let run_id = extensions
            .get::<RunId>()
            .map_or_else(|| RunId::fresh().0, |id| id.0.clone());
        let wait_until = extensions.get::<RunDeadline>().copied();
        extensions.remove::<RunDeadline>();
        extensions.insert(Detached);
        extensions.insert(RunId(run_id.clone()));
        let parent = trace::current_parent();
        let journal = journal.clone();
        let task = tokio::spawn(async move {
            let _permit = permit;
            let run = me.run_with(trigger, extensions, Some((journal, true)));
            trace::scope_parent(parent, run).await
        });
        let joined = match wait_until {
            Some(deadline) => match tokio::time::timeout_at(deadline.at, task).await {
                Ok(joined) => joined,
                Err(_) => {
                    return Err(self.error(
                        None,
                        ErrorKind::Timeout,
                        format!(
                            "pipeline `{}` ran past {}; durable run `{run_id}` goes on",
                            self.name, deadline.setting
                        ),
                    ));
                }
            },
            None => task.await,
        };
        joined.unwrap_or_else(|e| {
            Err(self.error(
                None,
                ErrorKind::Internal,
                format!("run `{run_id}` stopped unexpectedly: {e}"),
            ))
        })
    }

    async fn run_with(
        &self,
        trigger: Map<String, Value>,
        extensions: Extensions,
        journal: Option<(Arc<Journal>, bool)>,
    ) -> Result<RunOutcome, PipelineError> {
        let started = Instant::now();
        let quiet = extensions.get::<QuietRun>().is_some();
        let budget = Arc::new(RunBudget::new(
            self.deadline(started, &extensions),
            self.max_fuel,
        ));
        let restore = extensions.get::<Restore>().cloned();
        let run_id = restore
            .as_ref()
            .and_then(|r| r.run_id.clone())
            .or_else(|| extensions.get::<RunId>().map(|p| p.0.clone()))
            .unwrap_or_else(|| RunId::fresh().0);
        let mut ctx = PipelineContext {
            current: trigger.clone(),
            trigger,
            steps: Map::new(),
            meta: Map::new(),
            extensions,
            budget,
        };
        ctx.meta.insert("pipeline".into(), json!(self.name));
        ctx.meta.insert("run_id".into(), json!(run_id));
        let started_at = match restore.as_ref().and_then(|r| r.started_at) {
            Some(ms) => wf_config::time::rfc3339_millis(ms),
            None => rfc3339_now(),
        };
        ctx.meta.insert("started_at".into(), json!(started_at));
        if let Some(RunMeta(extra)) = ctx.extensions.get::<RunMeta>() {
            for (key, value) in extra {
                ctx.meta.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
        let recorder = journal.map(|(journal, durable)| {
            let next_seq = restore.as_ref().map_or(1, |r| r.next_seq);
            Recorder::new(journal, run_id.clone(), durable, next_seq)
        });
        if let Some(recorder) = &recorder
            && restore.as_ref().is_none_or(|r| r.run_id.is_none())
        {
            // A new run (a resumed or claimed one is recorded already).
            let start = self.start_record(&ctx, recorder, restore.as_ref());
            let wait = recorder.durable || start.idempotency.is_some();
            if let Err(e) = recorder.started(start, wait).await {
                return Err(self.error(None, ErrorKind::Unavailable, e.to_string()));
            }
        }
        self.events.observe(|o| o.run_started(&self.name));
        let trace = self.events.tracer().map(|tracer| {
            // A sub-pipeline continues its step's span; a run started while a request is
            // routed, the caller's.
            let (parent, remote) = match trace::current_parent() {
                Some((parent, remote)) => (Some(parent), remote),
                None => (None, false),
            };
            tracer.run_started(&self.name, &run_id, parent, remote)
        });
        if let Some(trace) = &trace {
            ctx.meta
                .insert("trace_id".into(), json!(trace.context().trace_id_hex()));
            ctx.extensions.insert(ActiveTrace(trace.clone()));
        }
        let mut in_flight = InFlight {
            events: &self.events,
            pipeline: &self.name,
            recorder: recorder.as_ref(),
            finished: false,
        };
        let events = (!quiet).then_some(&*self.events);
        if let Some(events) = events {
            events.emit_with(events::WORKFLOW_STARTED, || self.event_base(&ctx));
        }
        let run = Run {
            id: &run_id,
            events,
            recorder: recorder.as_ref(),
        };
        // Boxed: a sub-pipeline runs inside its parent's step, and unboxed the frames of
        // nested runs would add up on the stack.
        let execute = Box::pin(self.execute(&mut ctx, &run, restore));
        let result = match &trace {
            Some(trace) => trace::scope(trace.context(), execute).await,
            None => execute.await,
        };
        if let Some(trace) = &trace {
            trace.finish(result.as_ref().err().map(|e| e.message.as_str()));
        }
        let elapsed = started.elapsed();
        in_flight.finished = true;
        self.events
            .observe(|o| o.run_finished(&self.name, result.is_ok(), elapsed));
        let duration_ms = elapsed.as_secs_f64() * 1000.0;
        if let Some(recorder) = &recorder {
            let (status, output, error) = match &result {
                Ok(()) => (RunStatus::Succeeded, Some(&ctx.current), None),
                Err(e) => (
                    if e.kind == ErrorKind::Cancelled {
                        RunStatus::Cancelled
                    } else {
                        RunStatus::Failed
                    },
                    None,
                    Some(RecordedError {
                        kind: e.kind,
                        message: e.message.clone(),
                        step: e.step.clone(),
                    }),
                ),
            };
            if let Err(e) = recorder.ended(status, output, error, duration_ms).await {
                if recorder.journal.is_recording() {
                    tracing::warn!(pipeline = %self.name, run_id = %run_id, error = %e, "the run's end was not recorded");
                } else {
                    // The host is stopping: expected for every run still going (a durable one
                    // stays `running` and the next start resumes it), so not one line each.
                    tracing::debug!(pipeline = %self.name, run_id = %run_id, error = %e, "the run's end was not recorded: the journal has stopped");
                }
            }
            // An idempotent trigger's answer is kept before its caller gets it.
            if let Some(key) = ctx
                .extensions
                .get::<RunOptions>()
                .and_then(|o| o.idempotency.as_ref())
            {
                let kind = ctx
                    .extensions
                    .get::<RunTrigger>()
                    .map_or("direct", |t| t.kind.as_str());
                let outcome = match &result {
                    Ok(()) => Ok(&ctx.current),
                    Err(e) => Err(e),
                };
                recorder
                    .journal
                    .settle_key(key, kind, &ctx.extensions, outcome)
                    .await;
            }
        }
        match result {
            Ok(()) => {
                ctx.meta.insert("completed_at".into(), json!(rfc3339_now()));
                if let Some(events) = events {
                    events.emit_with(events::WORKFLOW_COMPLETED, || {
                        let mut event = self.event_base(&ctx);
                        event.insert("duration_ms".into(), json!(duration_ms));
                        event.insert("result".into(), Value::Object(ctx.current.clone()));
                        event
                    });
                }
                Ok(RunOutcome { context: ctx })
            }
            Err(error) => {
                if let Some(events) = events {
                    events.emit_with(events::WORKFLOW_FAILED, || {
                        let mut event = self.event_base(&ctx);
                        event.insert("duration_ms".into(), json!(duration_ms));
                        event.insert("error".into(), json!(error.message));
                        event.insert("step".into(), json!(error.step));
                        event
                    });
                }
                Err(error)
            }
        }
    }

    /// The journal's record of a new run.
    fn start_record(
        &self,
        ctx: &PipelineContext,
        recorder: &Recorder,
        restore: Option<&Restore>,
    ) -> RunStart {
        let options = ctx.extensions.get::<RunOptions>();
        RunStart {
            run_id: recorder.run_id.clone(),
            pipeline: self.name.clone(),
            trigger: ctx
                .extensions
                .get::<RunTrigger>()
                .cloned()
                .unwrap_or_else(|| RunTrigger {
                    kind: "direct".into(),
                    source: String::new(),
                    request: None,
                }),
            input: ctx.trigger.clone(),
            meta: ctx
                .extensions
                .get::<RunMeta>()
                .map(|m| m.0.clone())
                .unwrap_or_default(),
            durable: recorder.durable,
            started_at: wf_config::time::unix_millis_now(),
            replay_of: restore.and_then(|r| r.replay_of.clone()),
            replay_from: restore.and_then(|r| r.replay_from.clone()),
            idempotency: options.and_then(|o| o.idempotency.clone()),
            owner: Some(recorder.journal.owner().to_string()),
            status: RunStatus::Running,
        }
    }

    /// The fields every lifecycle event of a run carries.
    fn event_base(&self, ctx: &PipelineContext) -> Map<String, Value> {
        let mut event = Map::new();
        event.insert("pipeline".into(), json!(self.name));
        for key in ["run_id", "started_at"] {
            if let Some(v) = ctx.meta.get(key) {
                event.insert(key.into(), v.clone());
            }
        }
        event
    }

    /// The steps of one run, from the first to the end or the first unhandled failure. Steps
    /// with an outcome in `restore` take it instead of running (a resumed run, a replay from
    /// a step), as long as the run follows the recorded path.
    async fn execute(
        &self,
        ctx: &mut PipelineContext,
        run: &Run<'_>,
        restore: Option<Restore>,
    ) -> Result<(), PipelineError> {
        let run_deadline = ctx.budget.deadline();
        let deadline = run_deadline.map(|d| d.at);
        let mut restoring = restore
            .filter(|r| !r.outcomes.is_empty())
            .map(|r| (r.outcomes, r.record_reused));
        let mut chosen: HashSet<usize> = HashSet::new();
        let mut skipped_branches: HashSet<usize> = HashSet::new();
        // Per-step keys only for recorded runs: a run the journal does not keep cannot be
        // resumed, and unrecorded pipelines pay nothing per step for them.
        let mut executions = run.recorder.map(|_| vec![0u32; self.steps.len()]);
        let mut executed: u32 = 0;
        let mut i = 0;
        while i < self.steps.len() {
            if skipped_branches.remove(&i) && !chosen.contains(&i) {
                i += 1; // a branch of an earlier conditional that chose another route
                continue;
            }
            if let Some(d) = run_deadline
                && Instant::now() >= d.at
            {
                return Err(self.error(
                    None,
                    ErrorKind::Timeout,
                    format!(
                        "pipeline `{}` ran past its deadline ({})",
                        self.name, d.setting
                    ),
                ));
            }
            chosen.remove(&i);
            executed += 1;
            if executed > self.max_steps {
                return Err(self.error(
                    None,
                    ErrorKind::Internal,
                    format!(
                        "pipeline `{}` stopped after {} steps: a jump loops (raise `max_steps` if the loop is intended)",
                        self.name, self.max_steps
                    ),
                ));
            }
            let step = &self.steps[i];
            // The same key in every attempt and after a resume; a step a loop runs again gets
            // a key per pass.
            if let Some(executions) = &mut executions {
                executions[i] += 1;
                let key = match executions[i] {
                    1 => format!("{}:{}", run.id, step.name),
                    n => format!("{}:{}#{n}", run.id, step.name),
                };
                ctx.meta
                    .insert("idempotency_key".into(), Value::String(key));
            }

            if let Some((outcomes, record_reused)) = &mut restoring {
                if outcomes.front().is_some_and(|o| o.step == step.name) {
                    let Some(outcome) = outcomes.pop_front() else {
                        continue;
                    };
                    if *record_reused && let Some(recorder) = run.recorder {
                        recorder
                            .reused(&outcome)
                            .await
                            .map_err(|e| self.journal_failed(e))?;
                    }
                    skipped_branches.extend(self.branches[i].iter().copied());
                    match outcome.output {
                        Ok(values) => {
                            merge(ctx, &step.name, values);
                            match self.advance(
                                i,
                                parse_next(outcome.next.as_deref()),
                                &step.name,
                                &mut chosen,
                            )? {
                                Advance::To(next) => i = next,
                                Advance::End => break,
                            }
                        }
                        Err(message) => {
                            ctx.steps.insert(
                                step.name.clone(),
                                json!({"_error": message, "_skipped": true}),
                            );
                            i += 1;
                        }
                    }
                    continue;
                }
                // The run left the recorded path: from here on, steps run.
                restoring = None;
            }

            let cancelled = run.recorder.map(|r| &r.control);
            if cancelled.is_some_and(|c| c.is_cancelled()) {
                return Err(self.cancel(ctx, run, deadline, Some(&step.name)).await);
            }
            let step_run = match cancelled {
                Some(control) => tokio::select! {
                    biased;
                    () = control.cancelled() => None,
                    step_run = self.run_step_observed(step, false, ctx, deadline, run) => Some(step_run),
                },
                None => Some(
                    self.run_step_observed(step, false, ctx, deadline, run)
                        .await,
                ),
            };
            let Some(step_run) = step_run else {
                if let Some(recorder) = run.recorder {
                    let error = StepError::new(ErrorKind::Cancelled, "the run was cancelled");
                    let _ = recorder
                        .step(
                            &step_name(step, false),
                            1,
                            wf_config::time::unix_millis_now(),
                            0.0,
                            StepStatus::Cancelled,
                            None,
                            Some(&error),
                            None,
                        )
                        .await;
                }
                return Err(self.cancel(ctx, run, deadline, Some(&step.name)).await);
            };
            let StepRun {
                result,
                attempts,
                started_at,
                elapsed,
            } = step_run;
            let timing = Timing {
                attempts,
                started_at,
                elapsed,
            };
            for &observer in &self.observers[i] {
                self.steps[observer]
                    .step
                    .observe(&step.name, result.as_ref().map(|_| ()).map_err(|e| e.kind));
            }
            let record = |status, output, error, next| {
                self.record_step(run, step, &timing, status, output, error, next)
            };
            match result {
                Ok(output) => {
                    record(
                        StepStatus::Succeeded,
                        Some(&output.values),
                        None,
                        Some(&output.next),
                    )
                    .await?;
                    let next = output.next;
                    merge(ctx, &step.name, output.values);
                    // Every branch of this step is skipped unless it is the one jumped to.
                    skipped_branches.extend(self.branches[i].iter().copied());
                    match self.advance(i, next, &step.name, &mut chosen)? {
                        Advance::To(next) => i = next,
                        Advance::End => break,
                    }
                }
                Err(error) if deadline.is_some_and(|d| Instant::now() >= d) => {
                    record(StepStatus::Failed, None, Some(&error), None).await?;
                    // Past the pipeline's deadline nothing more runs, whatever `on_error` says.
                    let message = format!("step `{}` failed: {}", step.name, error.message);
                    return Err(self
                        .error(Some(&step.name), ErrorKind::Timeout, message)
                        .with_step_detail(&step.name, &error));
                }
                Err(error) => match step.on_error.unwrap_or(self.on_error) {
                    OnError::Skip => {
                        record(StepStatus::Skipped, None, Some(&error), None).await?;
                        ctx.steps.insert(
                            step.name.clone(),
                            json!({"_error": error.message, "_skipped": true}),
                        );
                        // A skipped step chose no branch: all of its branches are skipped too.
                        skipped_branches.extend(self.branches[i].iter().copied());
                        i += 1;
                    }
                    OnError::Stop => {
                        record(StepStatus::Failed, None, Some(&error), None).await?;
                        return Err(self
                            .error(
                                Some(&step.name),
                                error.kind,
                                format!("step `{}` failed: {}", step.name, error.message),
                            )
                            .with_step_detail(&step.name, &error));
                    }
                    OnError::Compensate => {
                        record(StepStatus::Failed, None, Some(&error), None).await?;
                        let compensation = self.compensate(ctx, deadline, run).await;
                        let message = match compensation {
                            Ok(()) => format!(
                                "step `{}` failed: {} (compensation executed)",
                                step.name, error.message
                            ),
                            Err(second) => format!(
                                "step `{}` failed: {} (compensation also failed: {second})",
                                step.name, error.message
                            ),
                        };
                        return Err(self
                            .error(Some(&step.name), error.kind, message)
                            .with_step_detail(&step.name, &error));
                    }
                },
            }
        }
        Ok(())
    }

    /// Records a step's outcome (a durable run waits for it); a failure to record stops the
    /// run.
    #[allow(clippy::too_many_arguments)]
    async fn record_step(
        &self,
        run: &Run<'_>,
        step: &PipelineStep,
        timing: &Timing,
        status: StepStatus,
        output: Option<&Map<String, Value>>,
        error: Option<&StepError>,
        next: Option<&Next>,
    ) -> Result<(), PipelineError> {
        let Some(recorder) = run.recorder else {
            return Ok(());
        };
        recorder
            .step(
                &step_name(step, false),
                timing.attempts,
                timing.started_at,
                timing.elapsed.as_secs_f64() * 1000.0,
                status,
                output,
                error,
                next,
            )
            .await
            .map_err(|e| self.journal_failed(e))
    }

    /// Where the run goes after step `i` chose `next`.
    fn advance(
        &self,
        i: usize,
        next: Next,
        step: &str,
        chosen: &mut HashSet<usize>,
    ) -> Result<Advance, PipelineError> {
        match next {
            Next::Continue => Ok(Advance::To(i + 1)),
            Next::Stop => Ok(Advance::End),
            Next::Jump(target) => match self.index.get(&target) {
                Some(&t) => {
                    chosen.insert(t);
                    Ok(Advance::To(t))
                }
                None => Err(self.error(
                    Some(step),
                    ErrorKind::InvalidConfig,
                    format!("step `{step}` routed to unknown step `{target}`"),
                )),
            },
        }
    }

    /// A cancelled run: its compensation runs (when the pipeline has one), and it ends
    /// `cancelled`.
    async fn cancel(
        &self,
        ctx: &PipelineContext,
        run: &Run<'_>,
        deadline: Option<Instant>,
        at: Option<&str>,
    ) -> PipelineError {
        let compensated = if self.compensation.is_empty() {
            String::new()
        } else {
            match self.compensate(ctx, deadline, run).await {
                Ok(()) => " (compensation executed)".to_string(),
                Err(e) => format!(" (compensation failed: {e})"),
            }
        };
        let at = at.map(|s| format!(" at step `{s}`")).unwrap_or_default();
        self.error(
            None,
            ErrorKind::Cancelled,
            format!("run `{}` was cancelled{at}{compensated}", run.id),
        )
    }

    /// The journal could not record what a durable run needs recorded: the run stops (a 503).
    fn journal_failed(&self, error: super::journal::JournalError) -> PipelineError {
        self.error(None, ErrorKind::Unavailable, error.to_string())
    }

    /// Compensation steps in reverse order; every one runs, the first failure is reported.
    async fn compensate(
        &self,
        ctx: &PipelineContext,
        deadline: Option<Instant>,
        run: &Run<'_>,
    ) -> Result<(), String> {
        let mut first_error = None;
        for step in self.compensation.iter().rev() {
            let step_run = self.run_step_observed(step, true, ctx, deadline, run).await;
            if let Some(recorder) = run.recorder {
                let (status, output, error) = match &step_run.result {
                    Ok(o) => (StepStatus::Succeeded, Some(&o.values), None),
                    Err(e) => (StepStatus::Failed, None, Some(e)),
                };
                if let Err(e) = recorder
                    .step(
                        &step_name(step, true),
                        step_run.attempts,
                        step_run.started_at,
                        step_run.elapsed.as_secs_f64() * 1000.0,
                        status,
                        output,
                        error,
                        None,
                    )
                    .await
                {
                    tracing::warn!(pipeline = %self.name, step = %step.name, error = %e, "compensation step not recorded");
                }
            }
            if let Err(e) = step_run.result {
                tracing::error!(pipeline = %self.name, step = %step.name, error = %e, "compensation step failed");
                first_error.get_or_insert_with(|| format!("step `{}`: {}", step.name, e.message));
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// [`Self::run_step`] between its `step.started` and `step.completed|failed` events.
    async fn run_step_observed(
        &self,
        step: &PipelineStep,
        compensation: bool,
        ctx: &PipelineContext,
        deadline: Option<Instant>,
        run: &Run<'_>,
    ) -> StepRun {
        let events = run.events;
        let observed = self.events.is_observed();
        let active = self
            .events
            .is_traced()
            .then(|| ctx.extensions.get::<ActiveTrace>())
            .flatten();
        let recorder = run.recorder;
        let started_at = recorder.map_or(0, |_| wf_config::time::unix_millis_now());
        let started = Instant::now();
        if events.is_none() && !observed && active.is_none() {
            let (result, attempts) = self
                .run_step(step, compensation, ctx, deadline, recorder)
                .await;
            return StepRun {
                result,
                attempts,
                started_at,
                elapsed: started.elapsed(),
            };
        }
        let step_event = || {
            let mut event = self.event_base(ctx);
            event.insert("step".into(), json!(step.name));
            event.insert("step_type".into(), json!(step.type_name));
            event
        };
        if let Some(events) = events {
            events.emit_with(events::STEP_STARTED, step_event);
        }
        let (result, attempts) = match active {
            Some(ActiveTrace(trace)) => {
                let span = trace.context().child();
                let wall = SystemTime::now();
                let (result, attempts) = trace::scope(
                    span,
                    self.run_step(step, compensation, ctx, deadline, recorder),
                )
                .await;
                let error = result.as_ref().err().map(|e| e.message.as_str());
                trace.step(
                    span,
                    &step.name,
                    &step.type_name,
                    wall,
                    started.elapsed(),
                    error,
                );
                (result, attempts)
            }
            None => {
                self.run_step(step, compensation, ctx, deadline, recorder)
                    .await
            }
        };
        let elapsed = started.elapsed();
        if observed {
            self.events
                .observe(|o| o.step_finished(&self.name, &step.type_name, result.is_ok(), elapsed));
        }
        if let Some(events) = events {
            let duration_ms = elapsed.as_secs_f64() * 1000.0;
            match &result {
                Ok(output) => events.emit_with(events::STEP_COMPLETED, || {
                    let mut event = step_event();
                    event.insert("duration_ms".into(), json!(duration_ms));
                    event.insert("output".into(), Value::Object(output.values.clone()));
                    event
                }),
                Err(error) => events.emit_with(events::STEP_FAILED, || {
                    let mut event = step_event();
                    event.insert("duration_ms".into(), json!(duration_ms));
                    event.insert("error".into(), json!(error.message));
                    event.insert("error_kind".into(), json!(error.kind));
                    event
                }),
            }
        }
        StepRun {
            result,
            attempts,
            started_at,
            elapsed,
        }
    }

    /// One step with its retries; each attempt under the step's timeout, all under the
    /// pipeline's deadline (a retry that would wait past it is not made). With the number of
    /// attempts made; each retried one is recorded.
    async fn run_step(
        &self,
        step: &PipelineStep,
        compensation: bool,
        ctx: &PipelineContext,
        deadline: Option<Instant>,
        recorder: Option<&Recorder>,
    ) -> (Result<StepOutput, StepError>, u32) {
        let (policy, on) = match &step.retry {
            Some(r) => (
                crate::backoff::RetryPolicy {
                    attempts: r.max_attempts,
                    base: r.backoff,
                    max: r.max_backoff,
                },
                r.on.as_slice(),
            ),
            None => (crate::backoff::RetryPolicy::ONCE, &[][..]),
        };
        let attempt_started = std::sync::atomic::AtomicI64::new(0);
        let mut attempts = 1;
        let result = crate::backoff::retry(
            policy,
            |e: &StepError| on.contains(&e.kind),
            |e, attempt, wait| {
                tracing::warn!(pipeline = %self.name, step = %step.name, attempt, error = %e, ?wait, "step failed; retrying");
                let retrying = deadline.is_none_or(|d| Instant::now() + wait < d);
                if retrying && let Some(recorder) = recorder {
                    let started = attempt_started.load(std::sync::atomic::Ordering::Relaxed);
                    let now = wf_config::time::unix_millis_now();
                    recorder.retrying(
                        &step_name(step, compensation),
                        attempt,
                        started,
                        (now - started) as f64,
                        e,
                    );
                }
                retrying
            },
            |attempt| {
                attempts = attempt;
                if recorder.is_some() {
                    attempt_started.store(
                        wf_config::time::unix_millis_now(),
                        std::sync::atomic::Ordering::Relaxed,
                    );
                }
                self.attempt_step(step, ctx, deadline)
            },
        )
        .await
        .map_err(|(e, attempts)| e.after_attempts(attempts));
        (result, attempts)
    }

    /// One attempt of a step under its timeout and the pipeline's deadline.
    async fn attempt_step(
        &self,
        step: &PipelineStep,
        ctx: &PipelineContext,
        deadline: Option<Instant>,
    ) -> Result<StepOutput, StepError> {
        let step_deadline = step.timeout.map(|t| Instant::now() + t);
        let limit = match (step_deadline, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let Some(limit) = limit else {
            return step.step.run(ctx).await;
        };
        match tokio::time::timeout_at(limit, step.step.run(ctx)).await {
            Ok(result) => result,
            Err(_) if Some(limit) == deadline => Err(StepError::new(
                ErrorKind::Timeout,
                format!(
                    "pipeline `{}` ran past its deadline ({})",
                    self.name,
                    ctx.budget
                        .deadline()
                        .map_or("the pipeline's `timeout`", |d| d.setting)
                ),
            )),
            Err(_) => Err(StepError::new(
                ErrorKind::Timeout,
                format!("timed out after {:?}", step.timeout.unwrap_or_default()),
            )),
        }
    }

    /// The run's deadline: the pipeline's `timeout` or the trigger's, whichever is sooner.
    fn deadline(&self, started: Instant, extensions: &Extensions) -> Option<RunDeadline> {
        let own = self.timeout.map(|t| RunDeadline {
            at: started + t,
            setting: "the pipeline's `timeout`",
        });
        match (own, extensions.get::<RunDeadline>().copied()) {
            (Some(a), Some(b)) => Some(if a.at <= b.at { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    fn error(&self, step: Option<&str>, kind: ErrorKind, message: String) -> PipelineError {
        PipelineError {
            pipeline: self.name.clone(),
            step: step.map(str::to_string),
            kind,
            message: crate::redact::redact(&message).into_owned(),
            detail: None,
        }
    }
}

/// What the steps of one run share besides its context.
struct Run<'a> {
    id: &'a str,
    /// Where lifecycle events go, unless the run is quiet.
    events: Option<&'a RunEvents>,
    recorder: Option<&'a Recorder>,
}

fn step_name(step: &PipelineStep, compensation: bool) -> StepName<'_> {
    StepName {
        name: &step.name,
        type_name: &step.type_name,
        compensation,
    }
}

fn merge(ctx: &mut PipelineContext, step: &str, values: Map<String, Value>) {
    for (k, v) in &values {
        ctx.current.insert(k.clone(), v.clone());
    }
    ctx.steps.insert(step.to_string(), Value::Object(values));
}
