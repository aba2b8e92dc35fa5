//! `step.storage_put`: writes an object.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, PipelineContext, Step, StepError,
    StepOutput, StepType, async_trait,
};
use wf_template::{Template, TemplateValue};

use crate::ObjectStore;

/// Configuration of `step.storage_put`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoragePutConfig {
    /// The object store module; optional when the application has one.
    #[serde(default)]
    pub store: Option<String>,
    /// The object's key, a relative path such as `reports/{{ .id }}.json`; may be a template.
    pub key: String,
    /// What to store: a string (templates allowed) is stored as its text, anything else as
    /// JSON. The run's current data, as JSON, when omitted.
    #[serde(default)]
    pub content: Option<Value>,
    /// `text` (default) or `base64`: a string `content` in base64 is stored decoded (binary).
    #[serde(default)]
    pub encoding: Encoding,
}

/// How a string content is turned into bytes.
#[derive(Debug, Default, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The text itself (UTF-8).
    #[default]
    Text,
    /// Base64, decoded before storing.
    Base64,
}

pub struct StoragePutType;

impl Described for StoragePutType {
    const NAME: &'static str = "step.storage_put";
    const CATEGORY: Category = Category::Pipeline;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "Writes an object (text, JSON or base64 bytes) to an object store.";
    type Config = StoragePutConfig;
}

impl StepType for StoragePutType {
    fn check(config: &StoragePutConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        crate::choose_store(config.store.as_deref(), ctx)
            .err()
            .into_iter()
            .collect()
    }

    fn build(
        config: StoragePutConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Step>> {
        Ok(Arc::new(StoragePut {
            store: ctx.named_or_only::<dyn ObjectStore>(
                config.store.as_deref(),
                "there is no object store",
            )?,
            key: wf_steps::compile_str("key", &config.key)?,
            content: config
                .content
                .as_ref()
                .map(|c| wf_steps::compile("content", c))
                .transpose()?,
            encoding: config.encoding,
        }))
    }
}

struct StoragePut {
    store: Arc<dyn ObjectStore>,
    key: Template,
    content: Option<TemplateValue>,
    encoding: Encoding,
}

#[async_trait]
impl Step for StoragePut {
    async fn run(&self, ctx: &PipelineContext) -> Result<StepOutput, StepError> {
        let key = render_key(&self.key, ctx)?;
        let content = match &self.content {
            Some(template) => wf_steps::render(template, ctx)?,
            None => Value::Object(ctx.current.clone()),
        };
        let body = match (content, self.encoding) {
            (Value::String(text), Encoding::Text) => Bytes::from(text),
            (Value::String(text), Encoding::Base64) => Bytes::from(
                base64::engine::general_purpose::STANDARD
                    .decode(text.trim())
                    .map_err(|e| {
                        StepError::invalid_input(format!("`content` is not base64: {e}"))
                    })?,
            ),
            (other, _) => Bytes::from(other.to_string()),
        };
        let size = body.len();
        self.store
            .put(&key, body)
            .await
            .map_err(|e| crate::step_error("storing", &key, e))?;
        Ok(StepOutput::values(wf_steps::output([
            ("stored", json!(true)),
            ("key", json!(key)),
            ("size", json!(size)),
        ])))
    }
}

/// A key template rendered and checked; a bad key is the caller's mistake.
pub(crate) fn render_key(template: &Template, ctx: &PipelineContext) -> Result<String, StepError> {
    let key = wf_steps::render_str(template, ctx)?;
    crate::key::check(&key).map_err(StepError::invalid_input)?;
    Ok(key)
}
