//! `step.publish`: publishes a (templated) payload to a topic on a broker module.

use std::sync::Arc;

use bytes::Bytes;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, PipelineContext, Step, StepError,
    StepOutput, StepType, async_trait,
};
use wf_messaging::MessageBroker;
use wf_template::{Template, TemplateValue};

/// Configuration of `step.publish`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishConfig {
    /// Topic to publish to; may be a template.
    pub topic: String,
    /// The message, as JSON; strings may be templates. Without it, the run's current data.
    #[serde(default)]
    pub payload: Option<Value>,
    /// The broker module; optional when the application has one.
    #[serde(default)]
    pub broker: Option<String>,
}

pub struct PublishType;

impl Described for PublishType {
    const NAME: &'static str = "step.publish";
    const CATEGORY: Category = Category::Pipeline;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Publishes a JSON payload to a topic on a message broker.";
    type Config = PublishConfig;
}

impl StepType for PublishType {
    fn check(config: &PublishConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        ctx.choose(
            config.broker.as_deref(),
            "broker",
            "message broker",
            wf_messaging::BROKER_TYPES,
        )
        .err()
        .into_iter()
        .collect()
    }

    fn build(config: PublishConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Step>> {
        let broker = ctx.named_or_only::<dyn MessageBroker>(
            config.broker.as_deref(),
            "there is no message broker",
        )?;
        Ok(Arc::new(Publish {
            topic: crate::compile_str("topic", &config.topic)?,
            payload: config
                .payload
                .as_ref()
                .map(|p| crate::compile("payload", p))
                .transpose()?,
            broker,
        }))
    }
}

struct Publish {
    topic: Template,
    payload: Option<TemplateValue>,
    broker: Arc<dyn MessageBroker>,
}

#[async_trait]
impl Step for Publish {
    async fn run(&self, ctx: &PipelineContext) -> Result<StepOutput, StepError> {
        let topic = self
            .topic
            .render_string(&ctx.scope())
            .map_err(StepError::from)?;
        let payload = match &self.payload {
            Some(template) => crate::render(template, ctx)?,
            None => Value::Object(ctx.current.clone()),
        };
        let bytes = serde_json::to_vec(&payload).map_err(|e| StepError::internal(e.to_string()))?;
        let delivery = self
            .broker
            .publish(&topic, Bytes::from(bytes))
            .await
            .map_err(|e| {
                StepError::unavailable(format!("publishing to `{topic}` failed: {e:#}"))
            })?;
        Ok(StepOutput::values(crate::output([
            ("published", json!(true)),
            ("topic", json!(topic)),
            ("delivered", json!(delivery.delivered)),
            ("queued", json!(delivery.queued)),
        ])))
    }
}
