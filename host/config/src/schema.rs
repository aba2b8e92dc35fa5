//! The shape of an application file, as Rust types whose doc comments become the JSON Schema
//! (`wf-host schema`), the validator's rules and the builder UI's help text.
//!
//! These types describe the file; the engine works on the normalised [`crate::AppConfig`].

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

/// A wf application file: module instances, the workflows that wire them together, triggers that
/// start work, and pipelines of steps.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "wf application")]
pub struct AppFile {
    /// Name of the application, shown by `wf-host inspect` and the admin UI.
    #[serde(default)]
    pub name: Option<String>,
    /// Version of the application (free text, e.g. `"1.0"`).
    #[serde(default)]
    pub version: Option<String>,
    /// What the application does.
    #[serde(default)]
    pub description: Option<String>,
    /// Other application files merged into this one, relative to this file. Their modules come
    /// first; an import cycle is an error.
    #[serde(default)]
    pub imports: Vec<String>,
    /// Plugin groups and capabilities this application needs; checked when it loads.
    #[serde(default)]
    pub requires: Option<Requires>,
    /// The module instances of the application. Each has a unique `name` that other parts of the
    /// configuration use to refer to it.
    #[serde(default)]
    pub modules: Vec<ModuleEntry>,
    /// Workflows wire modules together. Either a mapping from workflow type (`http`, `http-admin`,
    /// `messaging`, ...) to that workflow's configuration, or a list of `{name, type, config}`.
    #[serde(default)]
    pub workflows: Option<Sections>,
    /// Triggers start pipelines and workflows. Either a mapping from trigger type (`http`, `event`,
    /// `schedule`, ...) to its configuration, or a list of `{name, type, config}`.
    #[serde(default)]
    pub triggers: Option<Sections>,
    /// Named pipelines: ordered steps run by triggers, routes or other pipelines.
    #[serde(default)]
    pub pipelines: BTreeMap<String, PipelineEntry>,
    /// Platform description consumed by the `platform` workflow and `platform.*` modules.
    #[serde(default)]
    pub platform: Option<Value>,
    /// Settings section read by the `reverseproxy` module type (kept for the original's configs).
    #[serde(default)]
    pub reverseproxy: Option<Value>,
    /// Settings section of the original's configs: accepted so that they load; nothing reads it.
    #[serde(default)]
    pub scheduler: Option<Value>,
    /// How runs are recorded, kept and made durable: the run journal (docs/durability.md).
    #[serde(default)]
    pub runs: Option<RunsSection>,
}

/// The run journal's settings for the whole app.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunsSection {
    /// Record every run in the run journal: its trigger, each step attempt, its end. Default:
    /// on when there is somewhere to keep it (`wf-host run`'s data directory, or `database`),
    /// off otherwise. A pipeline's own `journal` overrides it.
    #[serde(default)]
    pub journal: Option<bool>,
    /// Make every pipeline durable: a run interrupted by a crash is resumed from its last
    /// recorded step when the app starts again. Default `false`; a pipeline's or route's
    /// `durable` overrides it.
    #[serde(default)]
    pub durable: Option<bool>,
    /// The `database.*` module (SQLite or PostgreSQL) that keeps the journal. Default: `runs.db`
    /// in the data directory.
    #[serde(default)]
    pub database: Option<String>,
    /// How long finished runs are kept, for every pipeline that does not say.
    #[serde(default)]
    pub retention: Option<RetentionEntry>,
    /// Largest trigger data, step output or run output recorded, in bytes of JSON; a larger one
    /// is recorded as a marker (and a resumed run runs that step again). Default 65536.
    #[serde(default)]
    #[schemars(range(min = 1024, max = 16777216))]
    pub max_value_bytes: Option<u64>,
    /// Most durable runs going at once (they continue when their caller goes away); beyond
    /// it new ones are refused (503). Default 10000.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_in_flight: Option<u32>,
    /// With several hosts on one journal database: how long a host may go unheard (it
    /// heart-beats every sixth of this) before a serving host takes its unfinished runs over,
    /// e.g. `30s` (the default). Shorter fails over sooner; too short takes over runs of a host
    /// that is only slow.
    #[serde(default)]
    #[schemars(regex(pattern = crate::duration::DURATION_PATTERN))]
    pub takeover_after: Option<String>,
}

/// How long finished runs are kept.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetentionEntry {
    /// Keep at most this many finished runs of the pipeline, the newest. Default 1000.
    #[serde(default)]
    pub max_runs: Option<u64>,
    /// Delete finished runs older than this, e.g. `168h` (a week, the default).
    #[serde(default)]
    #[schemars(regex(pattern = crate::duration::DURATION_PATTERN))]
    pub max_age: Option<String>,
}

/// What an application needs from this build of wf.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Requires {
    /// Plugin groups that must be present, e.g. `workflow-plugin-http` or `messaging`.
    #[serde(default)]
    pub plugins: Vec<PluginRequirement>,
    /// Named capabilities that must have a provider.
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// One required plugin group.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginRequirement {
    /// Plugin group name (`wf-host types` shows each type's group).
    pub name: String,
    /// Semantic-version requirement, e.g. `>=0.1`.
    #[serde(default)]
    pub version: Option<String>,
}

/// One module instance.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModuleEntry {
    /// Unique name of this module; other modules, workflows and steps refer to it by this name.
    #[schemars(regex(pattern = r"^[a-zA-Z][a-zA-Z0-9._-]*$"))]
    pub name: String,
    /// Module type, e.g. `http.server` (`wf-host types` lists them all).
    #[serde(rename = "type")]
    pub type_name: String,
    /// Configuration of this module; its keys depend on the type (`wf-host schema <type>`).
    #[serde(default)]
    pub config: Option<BTreeMap<String, Value>>,
    /// Modules that must be started before this one (and stopped after it).
    #[serde(default, rename = "dependsOn")]
    pub depends_on: Vec<String>,
}

/// Workflows or triggers, in either of the two forms the original accepted.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Sections {
    /// Keyed by type: `http: {routes: [...]}`.
    ByType(BTreeMap<String, Value>),
    /// A list of named entries: `- {name: main, type: http, config: {...}}`.
    List(Vec<NamedSection>),
}

/// A named workflow or trigger entry (the list form).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NamedSection {
    /// Name of this entry, for messages and `wf-host inspect`.
    #[serde(default)]
    pub name: Option<String>,
    /// Workflow or trigger type, e.g. `http`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Configuration for that type.
    #[serde(default)]
    pub config: Option<Value>,
}

/// A named pipeline.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineEntry {
    /// What starts this pipeline, e.g. `{type: http, config: {path: /sync, method: POST}}`.
    #[serde(default)]
    pub trigger: Option<PipelineTrigger>,
    /// The steps, run in order.
    pub steps: Vec<StepEntry>,
    /// What a failing step does to the pipeline: `stop` (default), `skip` the step, or
    /// `compensate` (run `compensation` in reverse order, then fail).
    #[serde(default)]
    pub on_error: Option<OnError>,
    /// Steps run in reverse order when a step fails and `on_error` is `compensate`.
    #[serde(default)]
    pub compensation: Vec<StepEntry>,
    /// Maximum run time of the whole pipeline, e.g. `30s`.
    #[serde(default)]
    #[schemars(regex(pattern = crate::duration::DURATION_PATTERN))]
    pub timeout: Option<String>,
    /// Most steps one run may execute (jumps included) before it is stopped as a runaway loop.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_steps: Option<u32>,
    /// Fuel (about one per WebAssembly instruction) all WebAssembly steps of one run may use
    /// together, so a step that loops or branches to itself stops as one error. Default
    /// 10,000,000,000: ten calls at a component's default `limits.fuel`.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_fuel: Option<u64>,
    /// Resume this pipeline's runs after a crash from their last recorded step (each step
    /// waits until its outcome is recorded; steps get `meta.idempotency_key`). Default: the
    /// app's `runs.durable`.
    #[serde(default)]
    pub durable: Option<bool>,
    /// Record this pipeline's runs in the run journal. Default: the app's `runs.journal`.
    #[serde(default)]
    pub journal: Option<bool>,
    /// How long this pipeline's finished runs are kept. Default: the app's `runs.retention`.
    #[serde(default)]
    pub retention: Option<RetentionEntry>,
}

/// The inline trigger of a pipeline.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineTrigger {
    /// Trigger type, e.g. `http`, `event` or `schedule`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Trigger configuration, e.g. `{path: /sync, method: POST}` for `http`.
    #[serde(default)]
    pub config: Option<Value>,
}

/// One step of a pipeline.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepEntry {
    /// Name of the step, unique within its pipeline; later steps read its output as `steps.<name>`.
    pub name: String,
    /// Step type, e.g. `step.set`.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Configuration of the step; its keys depend on the type.
    #[serde(default)]
    pub config: Option<BTreeMap<String, Value>>,
    /// What a failure of this step does, overriding the pipeline's `on_error`.
    #[serde(default)]
    pub on_error: Option<OnError>,
    /// Maximum run time of this step, e.g. `5s`.
    #[serde(default)]
    #[schemars(regex(pattern = crate::duration::DURATION_PATTERN))]
    pub timeout: Option<String>,
    /// Run the step again when it fails with a transient error.
    #[serde(default)]
    pub retry: Option<RetryEntry>,
}

/// Retries of a failing step, with exponential backoff and jitter.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryEntry {
    /// Attempts in all, the first included.
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts: u32,
    /// Wait before the second attempt; each later wait doubles, with up to 50% random jitter.
    #[serde(default = "default_backoff")]
    #[schemars(regex(pattern = crate::duration::DURATION_PATTERN))]
    pub backoff: String,
    /// Longest wait between attempts.
    #[serde(default = "default_max_backoff")]
    #[schemars(regex(pattern = crate::duration::DURATION_PATTERN))]
    pub max_backoff: String,
    /// Which failures are retried.
    #[serde(default = "default_retry_on")]
    pub on: Vec<ErrorKind>,
}

fn default_backoff() -> String {
    "100ms".to_string()
}

fn default_max_backoff() -> String {
    "10s".to_string()
}

fn default_retry_on() -> Vec<ErrorKind> {
    vec![ErrorKind::Unavailable, ErrorKind::Timeout]
}

/// What kind of failure a step had; retry policies choose by kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The data the step was given is wrong; retrying will not help.
    InvalidInput,
    /// The step's configuration is wrong.
    InvalidConfig,
    /// The step was not allowed to do what it tried.
    Denied,
    /// A rate limit was exceeded (HTTP 429).
    RateLimited,
    /// A dependency is unavailable for now (network, an overloaded service): worth retrying.
    Unavailable,
    /// The step took longer than its timeout.
    Timeout,
    /// The run was cancelled while the step ran.
    Cancelled,
    /// Anything else.
    Internal,
}

impl ErrorKind {
    /// Whether the failure is the server's own (a 5xx), not the caller's.
    pub fn is_server_side(self) -> bool {
        matches!(
            self,
            ErrorKind::InvalidConfig
                | ErrorKind::Unavailable
                | ErrorKind::Timeout
                | ErrorKind::Internal
        )
    }
}

/// Error policy of a pipeline or step.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Fail the pipeline (the default).
    Stop,
    /// Record the error as the step's output and continue with the next step.
    Skip,
    /// Run the compensation steps in reverse order, then fail.
    Compensate,
}

/// The JSON Schema of an application file.
pub fn app_schema() -> Value {
    schemars::schema_for!(AppFile).to_value()
}
