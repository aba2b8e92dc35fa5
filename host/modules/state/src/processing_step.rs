//! `processing.step`: the work of a state-machine transition. Used as a hook `handler`, it runs
//! an executor — a WebAssembly component (`componentId`) or a pipeline — with the transition's
//! data, retrying with exponential backoff, then moves the instance on: `successTransition`
//! with the executor's output, or after the last failed attempt `compensateTransition` with
//! `{"error"}`. The follow-up fires right after the triggering transition commits, under the
//! same instance lock, so the caller sees where the instance ended up.
//!
//! The original fired the follow-up from inside the hook, before the triggering transition had
//! even happened, and vetoed it as well when compensating.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use wf_engine::{
    AppState, BuildContext, Category, CheckContext, ConfigIssue, Described, Extensions, Module,
    ModuleType, PipelineContext, StartContext, Step, async_trait,
};
use wf_http::metrics::Metrics;
use wf_wasm::step_wasm::{WasmStep, choose_registry, registry_for};

use crate::engine::{FollowUp, TransitionProcessor};

/// Configuration of `processing.step`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessingStepConfig {
    /// The WebAssembly component doing the work, by the name its `describe` gives (loaded by a
    /// `dynamic.component` or uploaded to `wasm.components`). Give this or `pipeline`.
    #[serde(default, rename = "componentId")]
    pub component_id: Option<String>,
    /// A pipeline doing the work instead of a component; its final data is the output.
    #[serde(default)]
    pub pipeline: Option<String>,
    /// The `wasm.components` module holding `componentId`; optional when the app has one.
    #[serde(default)]
    pub components: Option<String>,
    /// Fired with the executor's output when it succeeds.
    #[serde(default, rename = "successTransition")]
    pub success_transition: Option<String>,
    /// Fired with `{"error": ...}` when every attempt failed. Without it, the failure vetoes
    /// the triggering transition.
    #[serde(default, rename = "compensateTransition")]
    pub compensate_transition: Option<String>,
    /// Attempts after the first.
    #[serde(default = "default_retries", rename = "maxRetries")]
    #[schemars(range(max = 20))]
    pub max_retries: u32,
    /// Wait before the first retry, doubling for each next one (at most 30 s).
    #[serde(default = "default_backoff", rename = "retryBackoffMs")]
    pub retry_backoff_ms: u64,
    /// Time limit of one attempt.
    #[serde(default = "default_timeout", rename = "timeoutSeconds")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: u64,
    /// Accepted for the original's configs (`event-driven-workflow.yaml`); no effect.
    #[serde(default, rename = "bufferSize")]
    pub buffer_size: Option<Value>,
    /// Accepted for the original's configs; no effect.
    #[serde(default, rename = "cleanupInterval")]
    pub cleanup_interval: Option<Value>,
    /// What this step does (documentation only).
    #[serde(default)]
    pub description: Option<String>,
}

fn default_retries() -> u32 {
    2
}

fn default_backoff() -> u64 {
    1000
}

fn default_timeout() -> u64 {
    30
}

/// The transition's coordinates the executor sees beside the data (not kept in the instance).
const COORDINATES: &[&str] = &[
    "workflowId",
    "workflowType",
    "transitionId",
    "fromState",
    "toState",
];

/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Whether a `dynamic.component` of the app gives `component` from a Go source file.
fn loaded_from_go(component: &str, ctx: &CheckContext<'_>) -> bool {
    ctx.config.modules.iter().any(|m| {
        let text = |key: &str| m.config.get(key).and_then(Value::as_str);
        m.type_name == "dynamic.component"
            && (text("componentId") == Some(component) || m.name == component)
            && text("source").is_some_and(|s| s.ends_with(".go"))
    })
}

pub struct ProcessingStepType;

impl Described for ProcessingStepType {
    const NAME: &'static str = "processing.step";
    const CATEGORY: Category = Category::StateMachine;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "A state-machine hook doing a transition's work with a component or pipeline (with retries), then firing the success or compensation transition.";
    type Config = ProcessingStepConfig;
}

impl ModuleType for ProcessingStepType {
    fn check(config: &ProcessingStepConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        match (&config.component_id, &config.pipeline) {
            (Some(_), Some(_)) => issues.push(ConfigIssue::new("/pipeline", "give `componentId` or `pipeline`, not both")),
            (None, None) => issues.push(
                ConfigIssue::new("", "`processing.step` needs an executor: `componentId` (a WebAssembly component) or `pipeline`")
                    .help("`componentId: order-validator` runs that component for each transition"),
            ),
            (Some(component), None) => {
                // A component ported from the original's Go source is reported (as not
                // implemented) at its `dynamic.component`; its missing registry adds nothing.
                if !loaded_from_go(component, ctx) {
                    issues.extend(choose_registry(config.components.as_deref(), ctx).err());
                }
            }
            (None, Some(pipeline)) => issues.extend(ctx.require_pipeline("/pipeline", pipeline)),
        }
        if config.max_retries > 20 {
            issues.push(ConfigIssue::new(
                "/maxRetries",
                "at most 20 retries: the transition waits for them",
            ));
        }
        if config.success_transition.is_none() && config.compensate_transition.is_none() {
            issues.push(ConfigIssue::warning("", "neither `successTransition` nor `compensateTransition`: the step runs but moves no instance"));
        }
        issues
    }

    fn references(config: &ProcessingStepConfig, ctx: &CheckContext<'_>) -> Vec<String> {
        if config.component_id.is_none() {
            return Vec::new();
        }
        choose_registry(config.components.as_deref(), ctx)
            .ok()
            .into_iter()
            .collect()
    }

    fn build(
        config: ProcessingStepConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        let executor = match (&config.component_id, &config.pipeline) {
            (Some(component), _) => {
                let registry = registry_for(config.components.as_deref(), ctx)?;
                Executor::Component(WasmStep::new(
                    &registry,
                    component,
                    ctx.name,
                    Map::new(),
                    None,
                ))
            }
            (None, Some(pipeline)) => Executor::Pipeline(pipeline.clone(), ctx.app.clone()),
            (None, None) => anyhow::bail!("no executor: set `componentId` or `pipeline`"),
        };
        let step = Arc::new(ProcessingStep {
            name: ctx.name.to_string(),
            executor,
            success: config.success_transition,
            compensate: config.compensate_transition,
            attempts: config.max_retries + 1,
            backoff: Duration::from_millis(config.retry_backoff_ms),
            timeout: Duration::from_secs(config.timeout_seconds.max(1)),
            metrics: OnceLock::new(),
        });
        ctx.provide::<dyn TransitionProcessor>(step.clone());
        Ok(step)
    }
}

enum Executor {
    Component(WasmStep),
    /// Looked up when it runs: pipelines are built after modules.
    Pipeline(String, Arc<AppState>),
}

impl Executor {
    async fn run(&self, input: Map<String, Value>) -> Result<Map<String, Value>, String> {
        match self {
            Executor::Component(step) => {
                let ctx = PipelineContext {
                    current: input.clone(),
                    trigger: input,
                    ..PipelineContext::default()
                };
                step.run(&ctx)
                    .await
                    .map(|output| output.values)
                    .map_err(|e| e.message)
            }
            Executor::Pipeline(name, app) => {
                let pipeline = app
                    .pipelines()
                    .get(name)
                    .ok_or_else(|| format!("no pipeline named `{name}`"))?;
                pipeline
                    .run(input, Extensions::default())
                    .await
                    .map(|outcome| outcome.context.current)
                    .map_err(|e| e.message)
            }
        }
    }
}

pub struct ProcessingStep {
    name: String,
    executor: Executor,
    success: Option<String>,
    compensate: Option<String>,
    attempts: u32,
    backoff: Duration,
    timeout: Duration,
    /// The app's metrics collector, if it has one (found at start).
    metrics: OnceLock<Option<Arc<Metrics>>>,
}

impl ProcessingStep {
    fn record(&self, ok: bool) {
        if let Some(Some(metrics)) = self.metrics.get() {
            metrics.module_operation(&self.name, "process", ok);
        }
    }

    /// The executor's output, or the last attempt's error.
    async fn execute(&self, input: &Map<String, Value>) -> Result<Map<String, Value>, String> {
        let mut last_error = String::new();
        for attempt in 0..self.attempts {
            if attempt > 0 {
                let wait = self.backoff.saturating_mul(1 << (attempt - 1).min(16));
                tokio::time::sleep(wait.min(MAX_BACKOFF)).await;
            }
            match tokio::time::timeout(self.timeout, self.executor.run(input.clone())).await {
                Ok(Ok(output)) => return Ok(output),
                Ok(Err(e)) => last_error = e,
                Err(_) => {
                    last_error = format!("attempt timed out after {}s", self.timeout.as_secs())
                }
            }
            tracing::warn!(step = %self.name, attempt = attempt + 1, of = self.attempts, error = %last_error, "processing attempt failed");
        }
        Err(last_error)
    }
}

#[async_trait]
impl TransitionProcessor for ProcessingStep {
    async fn process(&self, event: &Map<String, Value>) -> Result<Option<FollowUp>, String> {
        // The executor sees the instance's data with the transition's coordinates beside it,
        // as in the original.
        let mut input = match event.get("data") {
            Some(Value::Object(data)) => data.clone(),
            _ => Map::new(),
        };
        for (key, from) in COORDINATES.iter().zip([
            "instanceId",
            "workflowType",
            "transition",
            "fromState",
            "toState",
        ]) {
            input.insert((*key).into(), event.get(from).cloned().unwrap_or_default());
        }
        match self.execute(&input).await {
            Ok(mut output) => {
                self.record(true);
                for key in COORDINATES {
                    output.remove(*key);
                }
                Ok(self.success.clone().map(|transition| FollowUp {
                    transition,
                    data: output,
                }))
            }
            Err(error) => {
                self.record(false);
                match &self.compensate {
                    Some(transition) => {
                        let mut data = Map::new();
                        data.insert("error".into(), json!(error));
                        Ok(Some(FollowUp {
                            transition: transition.clone(),
                            data,
                        }))
                    }
                    None => Err(format!(
                        "{} failed after {} attempts: {error}",
                        self.name, self.attempts
                    )),
                }
            }
        }
    }
}

#[async_trait]
impl Module for ProcessingStep {
    async fn start(&self, ctx: &StartContext) -> anyhow::Result<()> {
        let metrics = ctx
            .app
            .services()
            .and_then(|s| s.all::<Metrics>().into_iter().next().map(|(_, m)| m));
        let _ = self.metrics.set(metrics);
        Ok(())
    }
}
