//! `step.set`: adds values (templates rendered) to the run's data.

use std::collections::BTreeMap;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, PipelineContext, Step, StepError,
    StepOutput, StepType, async_trait,
};
use wf_template::TemplateValue;

/// Configuration of `step.set`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetConfig {
    /// Values to set; strings may be templates (`{{ uuidv4 }}`, `{{ .steps.parse.body.id }}`).
    /// A value that is one `{{ expression }}` keeps its JSON type.
    pub values: BTreeMap<String, Value>,
}

pub struct SetType;

impl Described for SetType {
    const NAME: &'static str = "step.set";
    const CATEGORY: Category = Category::Pipeline;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Sets values (templates allowed) in the run's data.";
    type Config = SetConfig;
}

impl StepType for SetType {
    fn check(config: &SetConfig, _: &CheckContext<'_>) -> Vec<ConfigIssue> {
        if config.values.is_empty() {
            return vec![
                ConfigIssue::new("/values", "`values` is empty")
                    .help("add at least one `key: value`"),
            ];
        }
        Vec::new()
    }

    fn build(config: SetConfig, _: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Step>> {
        let values = Value::Object(config.values.into_iter().collect());
        Ok(Arc::new(Set {
            values: crate::compile("values", &values)?,
        }))
    }
}

struct Set {
    values: TemplateValue,
}

#[async_trait]
impl Step for Set {
    async fn run(&self, ctx: &PipelineContext) -> Result<StepOutput, StepError> {
        match crate::render(&self.values, ctx)? {
            Value::Object(values) => Ok(StepOutput::values(values)),
            _ => Err(StepError::internal("`values` did not render to a map")),
        }
    }
}
