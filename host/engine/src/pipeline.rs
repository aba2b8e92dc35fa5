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
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};
use tokio::time::Instant;
use wf_config::parse_duration;
use wf_config::schema::{OnError, PipelineEntry, RetryEntry, StepEntry};
use wf_config::time::rfc3339_now;

use crate::context::BuildContext;
use crate::events::{self, QuietRun, RunEvents};
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
) -> Result<Pipeline, Vec<ConfigIssue>> {
    let mut issues = Vec::new();
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
    })
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

/// Tells observers of a run whose future was dropped before it finished.
struct InFlight<'a> {
    events: &'a RunEvents,
    pipeline: &'a str,
    finished: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.events.observe(|o| o.run_abandoned(self.pipeline));
        }
    }
}

impl Pipeline {
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

    /// Runs the pipeline on `trigger` data. `extensions` carries what the trigger attaches for
    /// steps (the HTTP exchange, ...).
    pub async fn run(
        &self,
        trigger: Map<String, Value>,
        extensions: Extensions,
    ) -> Result<RunOutcome, PipelineError> {
        let started = Instant::now();
        let quiet = extensions.get::<QuietRun>().is_some();
        let budget = Arc::new(RunBudget::new(
            self.deadline(started, &extensions),
            self.max_fuel,
        ));
        let mut ctx = PipelineContext {
            current: trigger.clone(),
            trigger,
            steps: Map::new(),
            meta: Map::new(),
            extensions,
            budget,
        };
        ctx.meta.insert("pipeline".into(), json!(self.name));
        ctx.meta
            .insert("run_id".into(), json!(uuid::Uuid::new_v4().to_string()));
        ctx.meta.insert("started_at".into(), json!(rfc3339_now()));
        if let Some(RunMeta(extra)) = ctx.extensions.get::<RunMeta>() {
            for (key, value) in extra {
                ctx.meta.entry(key.clone()).or_insert_with(|| value.clone());
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
            let run_id = ctx.meta.get("run_id").and_then(Value::as_str);
            tracer.run_started(&self.name, run_id.unwrap_or_default(), parent, remote)
        });
        if let Some(trace) = &trace {
            ctx.meta
                .insert("trace_id".into(), json!(trace.context().trace_id_hex()));
            ctx.extensions.insert(ActiveTrace(trace.clone()));
        }
        let mut in_flight = InFlight {
            events: &self.events,
            pipeline: &self.name,
            finished: false,
        };
        let events = (!quiet).then_some(&*self.events);
        if let Some(events) = events {
            events.emit_with(events::WORKFLOW_STARTED, || self.event_base(&ctx));
        }
        let result = match &trace {
            Some(trace) => trace::scope(trace.context(), self.execute(&mut ctx, events)).await,
            None => self.execute(&mut ctx, events).await,
        };
        if let Some(trace) = &trace {
            trace.finish(result.as_ref().err().map(|e| e.message.as_str()));
        }
        let elapsed = started.elapsed();
        in_flight.finished = true;
        self.events
            .observe(|o| o.run_finished(&self.name, result.is_ok(), elapsed));
        let duration_ms = elapsed.as_secs_f64() * 1000.0;
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

    /// The steps of one run, from the first to the end or the first unhandled failure.
    async fn execute(
        &self,
        ctx: &mut PipelineContext,
        events: Option<&RunEvents>,
    ) -> Result<(), PipelineError> {
        let run_deadline = ctx.budget.deadline();
        let deadline = run_deadline.map(|d| d.at);
        let mut chosen: HashSet<usize> = HashSet::new();
        let mut skipped_branches: HashSet<usize> = HashSet::new();
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
            let result = self.run_step_observed(step, ctx, deadline, events).await;
            for &observer in &self.observers[i] {
                self.steps[observer]
                    .step
                    .observe(&step.name, result.as_ref().map(|_| ()).map_err(|e| e.kind));
            }
            match result {
                Ok(output) => {
                    let next = output.next.clone();
                    merge(ctx, &step.name, output.values);
                    // Every branch of this step is skipped unless it is the one jumped to.
                    skipped_branches.extend(self.branches[i].iter().copied());
                    match next {
                        Next::Continue => i += 1,
                        Next::Stop => break,
                        Next::Jump(target) => match self.index.get(&target) {
                            Some(&t) => {
                                chosen.insert(t);
                                i = t;
                            }
                            None => {
                                return Err(self.error(
                                    Some(&step.name),
                                    ErrorKind::InvalidConfig,
                                    format!(
                                        "step `{}` routed to unknown step `{target}`",
                                        step.name
                                    ),
                                ));
                            }
                        },
                    }
                }
                Err(error) if deadline.is_some_and(|d| Instant::now() >= d) => {
                    // Past the pipeline's deadline nothing more runs, whatever `on_error` says.
                    let message = format!("step `{}` failed: {}", step.name, error.message);
                    return Err(self
                        .error(Some(&step.name), ErrorKind::Timeout, message)
                        .with_step_detail(&step.name, &error));
                }
                Err(error) => match step.on_error.unwrap_or(self.on_error) {
                    OnError::Skip => {
                        ctx.steps.insert(
                            step.name.clone(),
                            json!({"_error": error.message, "_skipped": true}),
                        );
                        // A skipped step chose no branch: all of its branches are skipped too.
                        skipped_branches.extend(self.branches[i].iter().copied());
                        i += 1;
                    }
                    OnError::Stop => {
                        return Err(self
                            .error(
                                Some(&step.name),
                                error.kind,
                                format!("step `{}` failed: {}", step.name, error.message),
                            )
                            .with_step_detail(&step.name, &error));
                    }
                    OnError::Compensate => {
                        let compensation = self.compensate(ctx, deadline, events).await;
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

    /// Compensation steps in reverse order; every one runs, the first failure is reported.
    async fn compensate(
        &self,
        ctx: &PipelineContext,
        deadline: Option<Instant>,
        events: Option<&RunEvents>,
    ) -> Result<(), String> {
        let mut first_error = None;
        for step in self.compensation.iter().rev() {
            if let Err(e) = self.run_step_observed(step, ctx, deadline, events).await {
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
        ctx: &PipelineContext,
        deadline: Option<Instant>,
        events: Option<&RunEvents>,
    ) -> Result<StepOutput, StepError> {
        let observed = self.events.is_observed();
        let active = self
            .events
            .is_traced()
            .then(|| ctx.extensions.get::<ActiveTrace>())
            .flatten();
        if events.is_none() && !observed && active.is_none() {
            return self.run_step(step, ctx, deadline).await;
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
        let started = Instant::now();
        let result = match active {
            Some(ActiveTrace(trace)) => {
                let span = trace.context().child();
                let wall = SystemTime::now();
                let result = trace::scope(span, self.run_step(step, ctx, deadline)).await;
                let error = result.as_ref().err().map(|e| e.message.as_str());
                trace.step(
                    span,
                    &step.name,
                    &step.type_name,
                    wall,
                    started.elapsed(),
                    error,
                );
                result
            }
            None => self.run_step(step, ctx, deadline).await,
        };
        let elapsed = started.elapsed();
        if observed {
            self.events
                .observe(|o| o.step_finished(&self.name, &step.type_name, result.is_ok(), elapsed));
        }
        let Some(events) = events else {
            return result;
        };
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
        result
    }

    /// One step with its retries; each attempt under the step's timeout, all under the
    /// pipeline's deadline (a retry that would wait past it is not made).
    async fn run_step(
        &self,
        step: &PipelineStep,
        ctx: &PipelineContext,
        deadline: Option<Instant>,
    ) -> Result<StepOutput, StepError> {
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
        crate::backoff::retry(
            policy,
            |e: &StepError| on.contains(&e.kind),
            |e, attempt, wait| {
                tracing::warn!(pipeline = %self.name, step = %step.name, attempt, error = %e, ?wait, "step failed; retrying");
                deadline.is_none_or(|d| Instant::now() + wait < d)
            },
            |_| self.attempt_step(step, ctx, deadline),
        )
        .await
        .map_err(|(e, attempts)| e.after_attempts(attempts))
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

fn merge(ctx: &mut PipelineContext, step: &str, values: Map<String, Value>) {
    for (k, v) in &values {
        ctx.current.insert(k.clone(), v.clone());
    }
    ctx.steps.insert(step.to_string(), Value::Object(values));
}
