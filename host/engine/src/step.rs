//! The contract of a pipeline step, and the data a run carries from step to step.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};

/// Values a trigger attaches to a run for the steps that understand them (the HTTP request and
/// its response slot, for example), keyed by type.
#[derive(Clone, Default)]
pub struct Extensions {
    map: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Extensions({} values)", self.map.len())
    }
}

impl Extensions {
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) {
        self.map.insert(TypeId::of::<T>(), Arc::new(value));
    }

    pub fn remove<T: Any + Send + Sync>(&mut self) {
        self.map.remove(&TypeId::of::<T>());
    }

    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.map
            .get(&TypeId::of::<T>())
            .and_then(|v| v.downcast_ref::<T>())
    }
}

/// When a trigger needs its run done (an HTTP request's `writeTimeout`): the run's deadline
/// is this or the pipeline's `timeout`, whichever comes first.
#[derive(Clone, Copy, Debug)]
pub struct RunDeadline {
    pub at: tokio::time::Instant,
    /// The setting that holds it, for the error, e.g. ``the server's `writeTimeout` ``.
    pub setting: &'static str,
}

/// What one run may spend across all of its steps: its deadline, and the fuel its
/// WebAssembly steps use together (`max_fuel`). Shared by the steps of the run.
#[derive(Debug)]
pub struct RunBudget {
    deadline: Option<RunDeadline>,
    fuel_left: std::sync::atomic::AtomicU64,
    max_fuel: u64,
}

impl Default for RunBudget {
    fn default() -> Self {
        RunBudget::new(None, u64::MAX)
    }
}

impl RunBudget {
    pub fn new(deadline: Option<RunDeadline>, max_fuel: u64) -> RunBudget {
        RunBudget {
            deadline,
            fuel_left: std::sync::atomic::AtomicU64::new(max_fuel),
            max_fuel,
        }
    }

    pub fn deadline(&self) -> Option<RunDeadline> {
        self.deadline
    }

    pub fn fuel_left(&self) -> u64 {
        self.fuel_left.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn max_fuel(&self) -> u64 {
        self.max_fuel
    }

    /// Takes `fuel` off what is left (never below zero).
    pub fn spend_fuel(&self, fuel: u64) {
        let _ = self.fuel_left.fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |left| Some(left.saturating_sub(fuel)),
        );
    }
}

/// Entries a trigger adds to a run's `meta`, e.g. `auth`: the verified claims of the caller.
#[derive(Clone, Debug, Default)]
pub struct RunMeta(pub Map<String, Value>);

/// The data a pipeline run carries from step to step (the original's `PipelineContext`).
/// Templates see `current`'s keys at the top level, with `steps`, `trigger` and `meta` beside
/// them (winning over same-named `current` keys), as in the original.
#[derive(Clone, Debug, Default)]
pub struct PipelineContext {
    /// The data the run was started with.
    pub trigger: Map<String, Value>,
    /// Each finished step's output, by step name.
    pub steps: Map<String, Value>,
    /// Run metadata: `pipeline`, `run_id`, `started_at`.
    pub meta: Map<String, Value>,
    /// The working map: starts as the trigger data; each step's output is merged over it.
    pub current: Map<String, Value>,
    /// What the trigger attached for steps (see [`Extensions`]).
    pub extensions: Extensions,
    /// What the run may still spend, shared by its steps.
    pub budget: Arc<RunBudget>,
}

impl PipelineContext {
    /// What templates see of the run, viewed in place (no copy).
    pub fn scope(&self) -> wf_template::Scope<'_> {
        wf_template::Scope {
            current: &self.current,
            steps: &self.steps,
            trigger: &self.trigger,
            meta: &self.meta,
        }
    }
}

/// Where the run goes after a step.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Next {
    /// The following step.
    #[default]
    Continue,
    /// The named step.
    Jump(String),
    /// End the run successfully.
    Stop,
}

#[derive(Clone, Debug, Default)]
pub struct StepOutput {
    pub values: Map<String, Value>,
    pub next: Next,
}

impl StepOutput {
    pub fn values(values: Map<String, Value>) -> Self {
        StepOutput {
            values,
            next: Next::Continue,
        }
    }
}

pub use wf_config::schema::ErrorKind;

/// A failed step: its kind and a message that names what went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepError {
    pub kind: ErrorKind,
    /// What went wrong, fit for the app's callers (HTTP answers quote it for 4xx).
    pub message: String,
    /// More than a caller may be told — the template or statement behind the error — for
    /// logs and the CLI.
    pub detail: Option<String>,
}

impl StepError {
    /// The message never holds a resolved secret (see [`crate::redact`]): step errors reach
    /// logs, answers and traces, and often quote a URL or a value.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        StepError {
            kind,
            message: crate::redact::redact(&message.into()).into_owned(),
            detail: None,
        }
    }

    /// The same error with what only the app's author should read.
    pub fn with_detail(self, detail: impl Into<String>) -> Self {
        StepError {
            detail: Some(crate::redact::redact(&detail.into()).into_owned()),
            ..self
        }
    }

    /// The error of the last of `attempts` attempts: the count is added when there were several.
    pub fn after_attempts(self, attempts: u32) -> Self {
        if attempts > 1 {
            StepError {
                message: format!("{} (after {attempts} attempts)", self.message),
                ..self
            }
        } else {
            self
        }
    }

    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StepError {}

/// A template that could not render from the run's data: the caller's input lacked something.
/// The caller is told what; the template's text stays in the detail.
impl From<wf_template::TemplateError> for StepError {
    fn from(e: wf_template::TemplateError) -> Self {
        let caller = e.for_caller().to_string();
        StepError::invalid_input(caller).with_detail(e.message)
    }
}

impl From<anyhow::Error> for StepError {
    fn from(e: anyhow::Error) -> Self {
        StepError::internal(format!("{e:#}"))
    }
}

#[async_trait]
pub trait Step: Send + Sync + 'static {
    async fn run(&self, ctx: &PipelineContext) -> Result<StepOutput, StepError>;

    /// Steps this one may jump to (a `step.conditional`'s routes). Targets after this step are
    /// branches: sequential flow does not enter a branch that was not chosen.
    fn branch_targets(&self) -> Vec<String> {
        Vec::new()
    }

    /// Steps whose outcomes this one wants to hear of (a circuit breaker's guarded steps).
    fn observes(&self) -> Vec<String> {
        Vec::new()
    }

    /// Called after each run of a step named by [`Step::observes`], with its outcome.
    fn observe(&self, _step: &str, _outcome: Result<(), ErrorKind>) {}

    /// The JSON Schema this step holds the run's data to, for API documents (a
    /// `step.validate` of the whole data).
    fn documented_input(&self) -> Option<serde_json::Value> {
        None
    }

    /// The HTTP status this step answers with, when fixed (a `step.json_response`).
    fn documented_status(&self) -> Option<u16> {
        None
    }
}
