//! `step.storage_list`: lists objects under a prefix.

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

/// Configuration of `step.storage_list`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StorageListConfig {
    /// The object store module; optional when the application has one.
    #[serde(default)]
    pub store: Option<String>,
    /// Only keys starting with this, e.g. `reports/2026/`; may be a template. Everything when
    /// omitted.
    #[serde(default)]
    pub prefix: String,
    /// Most objects listed, in key order.
    #[serde(default = "default_limit")]
    #[schemars(range(min = 1, max = 10000))]
    pub limit: usize,
}

fn default_limit() -> usize {
    1000
}

pub struct StorageListType;

impl Described for StorageListType {
    const NAME: &'static str = "step.storage_list";
    const CATEGORY: Category = Category::Pipeline;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "Lists objects under a prefix: outputs `objects` (`key`, `size`) and `count`.";
    type Config = StorageListConfig;
}

impl StepType for StorageListType {
    fn check(config: &StorageListConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues: Vec<ConfigIssue> = crate::choose_store(config.store.as_deref(), ctx)
            .err()
            .into_iter()
            .collect();
        if !(1..=10_000).contains(&config.limit) {
            issues.push(ConfigIssue::new("/limit", "`limit` is between 1 and 10000"));
        }
        issues
    }

    fn build(
        config: StorageListConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Step>> {
        Ok(Arc::new(StorageList {
            store: ctx.named_or_only::<dyn ObjectStore>(
                config.store.as_deref(),
                "there is no object store",
            )?,
            prefix: wf_steps::compile_str("prefix", &config.prefix)?,
            limit: config.limit,
        }))
    }
}

struct StorageList {
    store: Arc<dyn ObjectStore>,
    prefix: Template,
    limit: usize,
}

#[async_trait]
impl Step for StorageList {
    async fn run(&self, ctx: &PipelineContext) -> Result<StepOutput, StepError> {
        let prefix = self
            .prefix
            .render_string(&ctx.scope())
            .map_err(StepError::from)?;
        crate::key::check_prefix(&prefix).map_err(StepError::invalid_input)?;
        let objects = self
            .store
            .list(&prefix, self.limit)
            .await
            .map_err(|e| StepError::unavailable(format!("listing `{prefix}` failed: {e:#}")))?;
        let listed: Vec<_> = objects
            .iter()
            .map(|o| json!({"key": o.key, "size": o.size}))
            .collect();
        Ok(StepOutput::values(wf_steps::output([
            ("count", json!(listed.len())),
            ("objects", json!(listed)),
        ])))
    }
}
