//! `notification.slack`: posts each message it receives to a Slack incoming webhook as
//! `{text, channel, username, icon_emoji}` (the original's factory ignored every key, so it
//! never knew where to post). A message with a string `text` field is posted as that text;
//! any other message as its topic and JSON. A failed post is the handler's error, so the
//! broker's redelivery and dead letters apply.

use std::sync::Arc;

use bytes::Bytes;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use wf_engine::wf_config::duration::{DURATION_PATTERN, parse_duration};
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType, async_trait,
};
use wf_messaging::MessageHandler;

/// Configuration of `notification.slack`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The incoming-webhook URL Slack gave you (or any endpoint that speaks its format).
    #[serde(rename = "webhookURL")]
    pub webhook_url: String,
    /// Channel override, e.g. `#alerts`.
    #[serde(default)]
    pub channel: Option<String>,
    /// Display name override.
    #[serde(default)]
    pub username: Option<String>,
    /// Icon override, e.g. `:robot_face:`.
    #[serde(default, rename = "iconEmoji")]
    pub icon_emoji: Option<String>,
    /// Time limit of one post.
    #[serde(default = "default_timeout")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub timeout: String,
    /// A description, as documentation.
    #[serde(default)]
    pub description: Option<String>,
}

fn default_timeout() -> String {
    "10s".to_string()
}

pub struct SlackNotifierType;

impl Described for SlackNotifierType {
    const NAME: &'static str = "notification.slack";
    const CATEGORY: Category = Category::Integration;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Posts each message it receives to a Slack incoming webhook.";
    type Config = SlackConfig;
}

impl ModuleType for SlackNotifierType {
    fn check(config: &SlackConfig, _ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if reqwest::Url::parse(&config.webhook_url).is_err() {
            issues.push(ConfigIssue::new(
                "/webhookURL",
                format!("`{}` is not an absolute URL", config.webhook_url),
            ));
        }
        if let Err(e) = parse_duration(&config.timeout) {
            issues.push(ConfigIssue::new("/timeout", e));
        }
        issues
    }

    fn build(config: SlackConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Module>> {
        let timeout = parse_duration(&config.timeout).map_err(anyhow::Error::msg)?;
        let notifier = Arc::new(SlackNotifier {
            name: ctx.name.to_string(),
            client: wf_steps::http_call::client(timeout)?,
            config,
        });
        ctx.provide::<dyn MessageHandler>(notifier.clone());
        Ok(notifier)
    }
}

pub struct SlackNotifier {
    name: String,
    client: reqwest::Client,
    config: SlackConfig,
}

impl SlackNotifier {
    fn message(&self, topic: &str, payload: &[u8]) -> Value {
        let parsed: Option<Value> = serde_json::from_slice(payload).ok();
        let text = match parsed
            .as_ref()
            .and_then(|v| v.get("text"))
            .and_then(Value::as_str)
        {
            Some(text) => text.to_string(),
            None => format!("[{topic}] {}", String::from_utf8_lossy(payload)),
        };
        let mut message = json!({ "text": text });
        for (key, value) in [
            ("channel", &self.config.channel),
            ("username", &self.config.username),
            ("icon_emoji", &self.config.icon_emoji),
        ] {
            if let Some(value) = value {
                message[key] = json!(value);
            }
        }
        message
    }
}

#[async_trait]
impl MessageHandler for SlackNotifier {
    async fn handle(&self, topic: &str, payload: Bytes) -> anyhow::Result<()> {
        let response = self
            .client
            .post(&self.config.webhook_url)
            .json(&self.message(topic, &payload))
            .send()
            .await
            // Without the URL: the webhook URL is the credential.
            .map_err(|e| {
                anyhow::anyhow!(
                    "posting to Slack ({}): {}",
                    self.name,
                    crate::webhook_sender::error_chain(&e.without_url())
                )
            })?;
        let status = response.status();
        if !status.is_success() {
            let excerpt = wf_steps::http_call::body_excerpt(response).await;
            anyhow::bail!("Slack answered {status}: {excerpt}");
        }
        Ok(())
    }
}

impl Module for SlackNotifier {}
