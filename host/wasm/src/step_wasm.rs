//! `step.wasm`: runs a component's `step` export as a pipeline step. The component is looked
//! up by name at each run, so it may arrive (by upload or in the watched directory) after the
//! app started, and a hot swap takes effect on the next run.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, ErrorKind, Next, PipelineContext,
    Step, StepError, StepOutput, StepType, async_trait,
};
use wf_template::TemplateValue;

use crate::component::{CallError, CallInfo, StepOutcome};
use crate::limits::LimitKind;
use crate::registry::{ComponentRegistry, Slot};

/// Module types that hold an app's components.
pub const REGISTRY_TYPES: &[&str] = &["wasm.components"];

/// Configuration of `step.wasm`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WasmStepConfig {
    /// The component to run, by the name its `describe` gives. It may be uploaded after the
    /// app starts; until then, runs of this step fail with an `unavailable` error.
    pub component: String,
    /// The component's configuration for this step (what its `config` import returns), over
    /// the configuration granted to the component in `wasm.components`.
    #[serde(default)]
    pub config: Map<String, Value>,
    /// The input to pass, as JSON with templates; by default the run's current data.
    #[serde(default)]
    pub input: Option<Value>,
    /// For a module component: the operation to invoke (its output is merged like a step's).
    #[serde(default)]
    pub operation: Option<String>,
    /// The `wasm.components` module holding the component; optional when the app has one.
    #[serde(default)]
    pub components: Option<String>,
}

pub struct WasmStepType;

impl Described for WasmStepType {
    const NAME: &'static str = "step.wasm";
    const CATEGORY: Category = Category::Wasm;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "Runs a sandboxed WebAssembly component's step, by component name.";
    type Config = WasmStepConfig;
}

impl StepType for WasmStepType {
    fn check(config: &WasmStepConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues: Vec<ConfigIssue> = choose_registry(config.components.as_deref(), ctx)
            .err()
            .into_iter()
            .collect();
        if let Err(message) = crate::component::check_name(&config.component) {
            issues.push(ConfigIssue::new("/component", message));
        }
        issues
    }

    fn build(config: WasmStepConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Step>> {
        let registry = registry_for(config.components.as_deref(), ctx)?;
        let input = config
            .input
            .as_ref()
            .map(TemplateValue::compile)
            .transpose()
            .map_err(|e| anyhow::anyhow!("`input`: {e}"))?;
        let mut step = WasmStep::new(&registry, &config.component, ctx.name, config.config, input);
        step.operation = config.operation;
        Ok(Arc::new(step))
    }
}

/// The app's component registry: the named one, or the only one.
/// The `wasm.components` module a component user loads from: the named one, or the app's only
/// one (validation).
pub fn choose_registry(
    configured: Option<&str>,
    ctx: &CheckContext<'_>,
) -> Result<String, ConfigIssue> {
    ctx.choose(
        configured,
        "components",
        "component registry",
        REGISTRY_TYPES,
    )
    .map_err(|issue| issue.help("add a module `- name: wasm\n    type: wasm.components`"))
}

/// At build time: the registry [`choose_registry`] chose.
pub fn registry_for(
    name: Option<&str>,
    ctx: &BuildContext<'_>,
) -> anyhow::Result<Arc<ComponentRegistry>> {
    ctx.named_or_only::<ComponentRegistry>(name, "there is no `wasm.components` module")
}

/// A pipeline step backed by a component slot.
pub struct WasmStep {
    slot: Arc<Slot>,
    /// `pipeline.step`, as the pipeline built it: the guest's `invocation.step` is the part
    /// after the pipeline's name.
    qualified: String,
    /// Set for a module component: the operation each run invokes.
    operation: Option<String>,
    config: Arc<Map<String, Value>>,
    input: Option<TemplateValue>,
}

impl WasmStep {
    pub fn new(
        registry: &ComponentRegistry,
        component: &str,
        step: &str,
        config: Map<String, Value>,
        input: Option<TemplateValue>,
    ) -> WasmStep {
        let slot = registry.slot(component);
        slot.add_reference(step.to_string());
        WasmStep {
            slot,
            qualified: step.to_string(),
            operation: None,
            config: Arc::new(config),
            input,
        }
    }
}

fn meta_str(ctx: &PipelineContext, key: &str) -> String {
    ctx.meta
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// How a failed call looks to the pipeline: the kind drives retries and the HTTP status.
pub fn step_error(component: &str, error: CallError) -> StepError {
    let kind = match &error {
        CallError::Guest { kind, .. } => *kind,
        CallError::LimitExceeded {
            kind: LimitKind::Time | LimitKind::RunTime,
            ..
        } => ErrorKind::Timeout,
        // Overloaded or mid-swap: transient, worth a retry (503).
        CallError::Busy(_) => ErrorKind::Unavailable,
        CallError::LimitExceeded { .. } | CallError::Trap { .. } | CallError::Host(_) => {
            ErrorKind::Internal
        }
    };
    StepError::new(kind, format!("component `{component}`: {error}"))
}

#[async_trait]
impl Step for WasmStep {
    async fn run(&self, ctx: &PipelineContext) -> Result<StepOutput, StepError> {
        let Some(component) = self.slot.live() else {
            return Err(StepError::unavailable(format!(
                "component `{}` is not loaded; upload it (`wf-plugin push`) or put it in the watched directory",
                self.slot.name
            )));
        };
        let input = match &self.input {
            Some(template) => template.render(&ctx.scope()).map_err(StepError::from)?,
            None => Value::Object(ctx.current.clone()),
        };
        let pipeline = meta_str(ctx, "pipeline");
        let step = self
            .qualified
            .strip_prefix(pipeline.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
            .unwrap_or(&self.qualified)
            .to_string();
        let call = CallInfo {
            pipeline,
            run_id: meta_str(ctx, "run_id"),
            step,
            attempt: 1,
            trace_parent: wf_engine::trace::current().map(|c| c.traceparent()),
            config: self.config.clone(),
            budget: Some(ctx.budget.clone()),
        };
        if let Some(operation) = &self.operation {
            return component
                .invoke(&call, operation, &input)
                .await
                .map(StepOutput::values)
                .map_err(|error| step_error(&self.slot.name, error));
        }
        match component.run_step(&call, &input).await {
            Ok(StepOutcome::Next(values)) => Ok(StepOutput::values(values)),
            Ok(StepOutcome::Stop(values)) => Ok(StepOutput {
                values,
                next: Next::Stop,
            }),
            Ok(StepOutcome::Branch(target, values)) => Ok(StepOutput {
                values,
                next: Next::Jump(target),
            }),
            Err(error) => Err(step_error(&self.slot.name, error)),
        }
    }
}
