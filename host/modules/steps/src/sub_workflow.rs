//! `step.sub_workflow`: runs another pipeline of the application with mapped input, and maps its
//! result back (the original's child ran no steps at all).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use wf_engine::wf_config::duration::{DURATION_PATTERN, parse_duration};
use wf_engine::{
    AppState, BuildContext, Category, CheckContext, ConfigIssue, Described, ErrorKind, Extensions,
    PipelineContext, Step, StepError, StepOutput, StepType, async_trait,
};
use wf_template::TemplateValue;

/// Configuration of `step.sub_workflow`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubWorkflowConfig {
    /// The pipeline to run (`name`, or the original's `pipeline:name`).
    pub workflow: String,
    /// The child's trigger data: key → template over this run's data. Without it, the child gets
    /// this run's current data.
    #[serde(default)]
    pub input_mapping: BTreeMap<String, Value>,
    /// Keys of this step's output → dotted paths in the child's result. Without it, the output
    /// is `{result: <child's current data>}`.
    #[serde(default)]
    pub output_mapping: BTreeMap<String, String>,
    /// Longest time the child may run.
    #[serde(default = "default_timeout")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub timeout: String,
}

fn default_timeout() -> String {
    "30s".to_string()
}

/// How deep sub-workflows may nest.
const MAX_DEPTH: u32 = 16;

/// The nesting depth of a run started by `step.sub_workflow`, in its extensions.
struct Depth(u32);

fn pipeline_name(workflow: &str) -> &str {
    workflow.strip_prefix("pipeline:").unwrap_or(workflow)
}

pub struct SubWorkflowType;

impl Described for SubWorkflowType {
    const NAME: &'static str = "step.sub_workflow";
    const CATEGORY: Category = Category::Pipeline;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "Runs another pipeline with mapped input and maps its result back.";
    type Config = SubWorkflowConfig;
}

impl StepType for SubWorkflowType {
    fn check(config: &SubWorkflowConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        ctx.require_pipeline("/workflow", pipeline_name(&config.workflow))
            .into_iter()
            .collect()
    }

    fn build(
        config: SubWorkflowConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Step>> {
        let input = if config.input_mapping.is_empty() {
            None
        } else {
            Some(crate::compile(
                "input_mapping",
                &Value::Object(config.input_mapping.into_iter().collect()),
            )?)
        };
        Ok(Arc::new(SubWorkflow {
            pipeline: pipeline_name(&config.workflow).to_string(),
            input,
            output: config.output_mapping,
            timeout: parse_duration(&config.timeout).map_err(anyhow::Error::msg)?,
            app: ctx.app.clone(),
        }))
    }
}

struct SubWorkflow {
    pipeline: String,
    input: Option<TemplateValue>,
    output: BTreeMap<String, String>,
    timeout: Duration,
    /// Pipelines are looked up when the step runs: the child may be built after this one.
    app: Arc<AppState>,
}

#[async_trait]
impl Step for SubWorkflow {
    async fn run(&self, ctx: &PipelineContext) -> Result<StepOutput, StepError> {
        let child = self.app.pipelines().get(&self.pipeline).ok_or_else(|| {
            StepError::new(
                ErrorKind::InvalidConfig,
                format!("no pipeline named `{}`", self.pipeline),
            )
        })?;
        let input = match &self.input {
            Some(template) => match crate::render(template, ctx)? {
                Value::Object(map) => map,
                _ => Map::new(),
            },
            None => ctx.current.clone(),
        };
        // Each level carries its depth, so a pipeline that calls itself ends with an error
        // instead of exhausting the stack.
        let depth = ctx.extensions.get::<Depth>().map_or(0, |d| d.0) + 1;
        if depth > MAX_DEPTH {
            return Err(StepError::new(
                ErrorKind::InvalidConfig,
                format!(
                    "sub-workflows are nested more than {MAX_DEPTH} deep (`{}` calls itself, directly or not)",
                    self.pipeline
                ),
            ));
        }
        let mut extensions = Extensions::default();
        extensions.insert(Depth(depth));
        extensions.insert(wf_engine::NestedRun);
        let run = tokio::time::timeout(self.timeout, Box::pin(child.run(input, extensions)));
        let outcome = match run.await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => {
                return Err(StepError::new(
                    e.kind,
                    format!("sub-workflow `{}`: {}", self.pipeline, e.message),
                ));
            }
            Err(_) => {
                return Err(StepError::new(
                    ErrorKind::Timeout,
                    format!(
                        "sub-workflow `{}` timed out after {:?}",
                        self.pipeline, self.timeout
                    ),
                ));
            }
        };
        let result = outcome.context.current;
        let values = if self.output.is_empty() {
            crate::output([("result", Value::Object(result))])
        } else {
            self.output
                .iter()
                .map(|(key, path)| {
                    (
                        key.clone(),
                        wf_template::Scope::of(&result)
                            .lookup(path)
                            .unwrap_or(Value::Null),
                    )
                })
                .collect()
        };
        Ok(StepOutput::values(values))
    }
}
