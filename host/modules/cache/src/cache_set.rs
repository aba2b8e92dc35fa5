//! `step.cache_set`: stores a value in a cache.

use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use wf_engine::wf_config::duration::{DURATION_PATTERN, parse_duration};
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, PipelineContext, Step, StepError,
    StepOutput, StepType, async_trait,
};
use wf_template::{Template, TemplateValue};

use crate::Cache;
use crate::cache_get::render_key;

/// Configuration of `step.cache_set`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheSetConfig {
    /// The `cache.modular` module; optional when the application has one.
    #[serde(default)]
    pub cache: Option<String>,
    /// The key; may be a template.
    pub key: String,
    /// The value, as JSON whose strings may be templates (`"{{ .steps.fetch.body }}"` keeps
    /// its type); the run's current data when omitted.
    #[serde(default)]
    pub value: Option<Value>,
    /// How long it lives, e.g. `10m`; the cache's `defaultTTL` when omitted.
    #[serde(default)]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub ttl: Option<String>,
}

pub struct CacheSetType;

impl Described for CacheSetType {
    const NAME: &'static str = "step.cache_set";
    const CATEGORY: Category = Category::Pipeline;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Stores a value in a cache, with an optional TTL.";
    type Config = CacheSetConfig;
}

impl StepType for CacheSetType {
    fn check(config: &CacheSetConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues: Vec<ConfigIssue> = crate::choose_cache(config.cache.as_deref(), ctx)
            .err()
            .into_iter()
            .collect();
        if let Some(Err(e)) = config.ttl.as_deref().map(parse_duration) {
            issues.push(ConfigIssue::new("/ttl", e));
        }
        issues
    }

    fn build(config: CacheSetConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Step>> {
        Ok(Arc::new(CacheSet {
            cache: ctx.named_or_only::<dyn Cache>(config.cache.as_deref(), "there is no cache")?,
            key: wf_steps::compile_str("key", &config.key)?,
            value: config
                .value
                .as_ref()
                .map(|v| wf_steps::compile("value", v))
                .transpose()?,
            ttl: config
                .ttl
                .as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(anyhow::Error::msg)?,
        }))
    }
}

struct CacheSet {
    cache: Arc<dyn Cache>,
    key: Template,
    value: Option<TemplateValue>,
    ttl: Option<Duration>,
}

#[async_trait]
impl Step for CacheSet {
    async fn run(&self, ctx: &PipelineContext) -> Result<StepOutput, StepError> {
        let key = render_key(&self.key, ctx)?;
        let value = match &self.value {
            Some(template) => wf_steps::render(template, ctx)?,
            None => Value::Object(ctx.current.clone()),
        };
        self.cache
            .set(&key, &value, self.ttl)
            .await
            .map_err(|e| StepError::unavailable(format!("cache write of `{key}` failed: {e:#}")))?;
        Ok(StepOutput::values(wf_steps::output([
            ("cached", json!(true)),
            ("key", json!(key)),
        ])))
    }
}
