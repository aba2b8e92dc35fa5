//! `step.cache_delete`: removes a key from a cache.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, PipelineContext, Step, StepError,
    StepOutput, StepType, async_trait,
};
use wf_template::Template;

use crate::Cache;
use crate::cache_get::render_key;

/// Configuration of `step.cache_delete`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheDeleteConfig {
    /// The `cache.modular` module; optional when the application has one.
    #[serde(default)]
    pub cache: Option<String>,
    /// The key; may be a template.
    pub key: String,
}

pub struct CacheDeleteType;

impl Described for CacheDeleteType {
    const NAME: &'static str = "step.cache_delete";
    const CATEGORY: Category = Category::Pipeline;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "Removes a key from a cache; outputs `deleted` (whether it was there).";
    type Config = CacheDeleteConfig;
}

impl StepType for CacheDeleteType {
    fn check(config: &CacheDeleteConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        crate::choose_cache(config.cache.as_deref(), ctx)
            .err()
            .into_iter()
            .collect()
    }

    fn build(
        config: CacheDeleteConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Step>> {
        Ok(Arc::new(CacheDelete {
            cache: ctx.named_or_only::<dyn Cache>(config.cache.as_deref(), "there is no cache")?,
            key: wf_steps::compile_str("key", &config.key)?,
        }))
    }
}

struct CacheDelete {
    cache: Arc<dyn Cache>,
    key: Template,
}

#[async_trait]
impl Step for CacheDelete {
    async fn run(&self, ctx: &PipelineContext) -> Result<StepOutput, StepError> {
        let key = render_key(&self.key, ctx)?;
        let deleted = self.cache.delete(&key).await.map_err(|e| {
            StepError::unavailable(format!("cache delete of `{key}` failed: {e:#}"))
        })?;
        Ok(StepOutput::values(wf_steps::output([(
            "deleted",
            json!(deleted),
        )])))
    }
}
