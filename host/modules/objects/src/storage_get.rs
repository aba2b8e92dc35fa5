//! `step.storage_get`: reads an object.

use std::sync::Arc;

use base64::Engine as _;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, PipelineContext, Step, StepError,
    StepOutput, StepType, async_trait,
};
use wf_template::Template;

use crate::ObjectStore;
use crate::storage_put::render_key;

/// Configuration of `step.storage_get`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StorageGetConfig {
    /// The object store module; optional when the application has one.
    #[serde(default)]
    pub store: Option<String>,
    /// The object's key; may be a template.
    pub key: String,
    /// How `content` comes out: `text` (default; the object must be UTF-8), `json` (parsed) or
    /// `base64` (any bytes).
    #[serde(default)]
    pub decode: Decode,
    /// Largest object read; a larger one fails the step as invalid input, unread.
    #[serde(default = "default_max_bytes")]
    #[schemars(range(min = 1))]
    pub max_bytes: u64,
}

fn default_max_bytes() -> u64 {
    10 * 1024 * 1024
}

/// How an object's bytes become the step's `content`.
#[derive(Debug, Default, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Decode {
    /// UTF-8 text.
    #[default]
    Text,
    /// Parsed JSON.
    Json,
    /// Base64 of the bytes.
    Base64,
}

pub struct StorageGetType;

impl Described for StorageGetType {
    const NAME: &'static str = "step.storage_get";
    const CATEGORY: Category = Category::Pipeline;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "Reads an object: outputs `found`, `size` and `content` (text, JSON or base64).";
    type Config = StorageGetConfig;
}

impl StepType for StorageGetType {
    fn check(config: &StorageGetConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        crate::choose_store(config.store.as_deref(), ctx)
            .err()
            .into_iter()
            .collect()
    }

    fn build(
        config: StorageGetConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Step>> {
        Ok(Arc::new(StorageGet {
            store: ctx.named_or_only::<dyn ObjectStore>(
                config.store.as_deref(),
                "there is no object store",
            )?,
            key: wf_steps::compile_str("key", &config.key)?,
            decode: config.decode,
            max_bytes: config.max_bytes,
        }))
    }
}

struct StorageGet {
    store: Arc<dyn ObjectStore>,
    key: Template,
    decode: Decode,
    max_bytes: u64,
}

#[async_trait]
impl Step for StorageGet {
    async fn run(&self, ctx: &PipelineContext) -> Result<StepOutput, StepError> {
        let key = render_key(&self.key, ctx)?;
        let Some(body) = self
            .store
            .get(&key, self.max_bytes)
            .await
            .map_err(|e| crate::step_error("reading", &key, e))?
        else {
            return Ok(StepOutput::values(wf_steps::output([
                ("found", json!(false)),
                ("size", json!(0)),
                ("content", Value::Null),
            ])));
        };
        let content = match self.decode {
            Decode::Text => Value::String(String::from_utf8(body.to_vec()).map_err(|_| {
                StepError::invalid_input(format!(
                    "`{key}` is not UTF-8 text; read it with `decode: base64`"
                ))
            })?),
            Decode::Json => serde_json::from_slice(&body)
                .map_err(|e| StepError::invalid_input(format!("`{key}` is not JSON: {e}")))?,
            Decode::Base64 => {
                Value::String(base64::engine::general_purpose::STANDARD.encode(&body))
            }
        };
        Ok(StepOutput::values(wf_steps::output([
            ("found", json!(true)),
            ("size", json!(body.len())),
            ("content", content),
        ])))
    }
}
