//! `step.storage_delete`: removes an object.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, PipelineContext, Step, StepError,
    StepOutput, StepType, async_trait,
};
use wf_template::Template;

use crate::ObjectStore;
use crate::storage_put::render_key;

/// Configuration of `step.storage_delete`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StorageDeleteConfig {
    /// The object store module; optional when the application has one.
    #[serde(default)]
    pub store: Option<String>,
    /// The object's key; may be a template.
    pub key: String,
}

pub struct StorageDeleteType;

impl Described for StorageDeleteType {
    const NAME: &'static str = "step.storage_delete";
    const CATEGORY: Category = Category::Pipeline;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "Removes an object; outputs `deleted` (whether it was there).";
    type Config = StorageDeleteConfig;
}

impl StepType for StorageDeleteType {
    fn check(config: &StorageDeleteConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        crate::choose_store(config.store.as_deref(), ctx)
            .err()
            .into_iter()
            .collect()
    }

    fn build(
        config: StorageDeleteConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Step>> {
        Ok(Arc::new(StorageDelete {
            store: ctx.named_or_only::<dyn ObjectStore>(
                config.store.as_deref(),
                "there is no object store",
            )?,
            key: wf_steps::compile_str("key", &config.key)?,
        }))
    }
}

struct StorageDelete {
    store: Arc<dyn ObjectStore>,
    key: Template,
}

#[async_trait]
impl Step for StorageDelete {
    async fn run(&self, ctx: &PipelineContext) -> Result<StepOutput, StepError> {
        let key = render_key(&self.key, ctx)?;
        let deleted = self
            .store
            .delete(&key)
            .await
            .map_err(|e| crate::step_error("deleting", &key, e))?;
        Ok(StepOutput::values(wf_steps::output([(
            "deleted",
            json!(deleted),
        )])))
    }
}
