//! `step.conditional`: jumps to the step its `routes` name for the value of `field`.
//!
//! The routes' targets that come after this step are branches: only the chosen one runs, then the
//! pipeline continues after the last branch — the original fell through into every later branch.

use std::collections::BTreeMap;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use wf_engine::{
    BuildContext, Category, Described, Next, PipelineContext, Step, StepError, StepOutput,
    StepType, async_trait,
};

/// Configuration of `step.conditional`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConditionalConfig {
    /// Dotted path of the value to route on, e.g. `steps.check.found` or `type`; hyphenated step
    /// names need no quoting.
    pub field: String,
    /// Value (as text: `true`, `42`, `order.created`) → name of the step to run.
    pub routes: BTreeMap<String, String>,
    /// Step to run when no route matches; without it, no match fails the step.
    #[serde(default)]
    pub default: Option<String>,
}

pub struct ConditionalType;

impl Described for ConditionalType {
    const NAME: &'static str = "step.conditional";
    const CATEGORY: Category = Category::Pipeline;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "Routes to a step chosen by a field's value; branches do not fall through.";
    type Config = ConditionalConfig;
}

impl StepType for ConditionalType {
    fn build(config: ConditionalConfig, _: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Step>> {
        Ok(Arc::new(Conditional { config }))
    }
}

struct Conditional {
    config: ConditionalConfig,
}

/// The original compared the field's string rendering: `true`, `42`, text as is.
fn as_text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

#[async_trait]
impl Step for Conditional {
    async fn run(&self, ctx: &PipelineContext) -> Result<StepOutput, StepError> {
        let value = as_text(crate::resolve_path(ctx, &self.config.field).as_ref());
        let (target, used_default) = match self.config.routes.get(&value) {
            Some(target) => (target.clone(), false),
            None => match &self.config.default {
                Some(target) => (target.clone(), true),
                None => {
                    return Err(StepError::invalid_input(format!(
                        "value \"{value}\" not found in routes and no default configured"
                    )));
                }
            },
        };
        let mut values = crate::output([
            ("matched_value", json!(value)),
            ("next_step", json!(target)),
        ]);
        if used_default {
            values.insert("used_default".into(), json!(true));
        }
        Ok(StepOutput {
            values,
            next: Next::Jump(target),
        })
    }

    fn branch_targets(&self) -> Vec<String> {
        self.config
            .routes
            .values()
            .chain(self.config.default.iter())
            .cloned()
            .collect()
    }
}
