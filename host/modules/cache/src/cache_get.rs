//! `step.cache_get`: reads a key from a cache.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, PipelineContext, Step, StepError,
    StepOutput, StepType, async_trait,
};
use wf_template::Template;

use crate::Cache;

/// Configuration of `step.cache_get`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheGetConfig {
    /// The `cache.modular` module; optional when the application has one.
    #[serde(default)]
    pub cache: Option<String>,
    /// The key; may be a template, e.g. `user:{{ .user_id }}`.
    pub key: String,
    /// The output field the value goes to (default `value`); `found` says whether it was there.
    #[serde(default = "default_output")]
    pub output: String,
}

fn default_output() -> String {
    "value".into()
}

pub struct CacheGetType;

impl Described for CacheGetType {
    const NAME: &'static str = "step.cache_get";
    const CATEGORY: Category = Category::Pipeline;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "Reads a key from a cache: outputs `found` and the value (null when missing).";
    type Config = CacheGetConfig;
}

impl StepType for CacheGetType {
    fn check(config: &CacheGetConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues: Vec<ConfigIssue> = crate::choose_cache(config.cache.as_deref(), ctx)
            .err()
            .into_iter()
            .collect();
        if config.output.is_empty() || config.output == "found" {
            issues.push(ConfigIssue::new(
                "/output",
                "the output field needs a name other than `found`",
            ));
        }
        issues
    }

    fn build(config: CacheGetConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Step>> {
        Ok(Arc::new(CacheGet {
            cache: ctx.named_or_only::<dyn Cache>(config.cache.as_deref(), "there is no cache")?,
            key: wf_steps::compile_str("key", &config.key)?,
            output: config.output,
        }))
    }
}

struct CacheGet {
    cache: Arc<dyn Cache>,
    key: Template,
    output: String,
}

#[async_trait]
impl Step for CacheGet {
    async fn run(&self, ctx: &PipelineContext) -> Result<StepOutput, StepError> {
        let key = render_key(&self.key, ctx)?;
        let value =
            self.cache.get(&key).await.map_err(|e| {
                StepError::unavailable(format!("cache read of `{key}` failed: {e:#}"))
            })?;
        let mut out = serde_json::Map::new();
        out.insert("found".into(), json!(value.is_some()));
        out.insert(self.output.clone(), value.unwrap_or(Value::Null));
        Ok(StepOutput::values(out))
    }
}

/// A key template rendered for this run; an empty key is the caller's mistake.
pub(crate) fn render_key(template: &Template, ctx: &PipelineContext) -> Result<String, StepError> {
    let key = wf_steps::render_str(template, ctx)?;
    if key.is_empty() {
        return Err(StepError::invalid_input("the cache key is empty"));
    }
    Ok(key)
}
