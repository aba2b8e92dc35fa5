//! `messaging.handler`: logs every message it receives (topic, size and, when it is JSON, its
//! `type`/`eventType`), counts them, and forwards each one to its target topics — the topics in
//! its `targetTopics` and in the `messaging` workflow's `producers[].forwardTo` for it (which
//! the original only printed). That is how the original's example chains
//! (`raw-input → validated-data → ...`) flow from stage to stage.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use schemars::JsonSchema;
use serde::Deserialize;
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType, async_trait,
};

use crate::{MessageBroker, MessageHandler};

/// Configuration of `messaging.handler`. It can also be subscribed to topics by the `messaging`
/// workflow.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoggingHandlerConfig {
    /// A topic this handler subscribes itself to.
    #[serde(default)]
    pub topic: Option<String>,
    /// The broker for `topic`; optional when the application has one.
    #[serde(default)]
    pub broker: Option<String>,
    /// Format of files read from `watchPath` (`csv`, `json`). Not implemented yet.
    #[serde(default, rename = "inputType")]
    pub input_type: Option<String>,
    /// A directory whose new files become messages. Not implemented yet.
    #[serde(default, rename = "watchPath")]
    pub watch_path: Option<String>,
    /// Topics every received message is published to, on the handler's broker.
    #[serde(default, rename = "targetTopics")]
    pub target_topics: Vec<String>,
    /// A description, as documentation.
    #[serde(default)]
    pub description: Option<String>,
}

pub struct LoggingHandlerType;

impl Described for LoggingHandlerType {
    const NAME: &'static str = "messaging.handler";
    const CATEGORY: Category = Category::Messaging;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Receives messages from the topics the `messaging` workflow subscribes it to, and logs them.";
    type Config = LoggingHandlerConfig;
}

impl ModuleType for LoggingHandlerType {
    fn check(config: &LoggingHandlerConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if config.watch_path.is_some() || config.input_type.is_some() {
            let pointer = if config.watch_path.is_some() {
                "/watchPath"
            } else {
                "/inputType"
            };
            issues.push(ConfigIssue::not_implemented(
                pointer,
                "file inputs (`watchPath`, `inputType`) are not implemented in this build yet",
            ));
        }
        if let Some(topic) = &config.topic {
            issues.extend(crate::check_topic("/topic", topic));
        }
        for (i, topic) in config.target_topics.iter().enumerate() {
            issues.extend(crate::check_topic(&format!("/targetTopics/{i}"), topic));
        }
        if config.topic.is_some() || !config.target_topics.is_empty() {
            issues.extend(crate::choose_broker(config.broker.as_deref(), ctx).err());
        }
        issues
    }

    fn references(config: &LoggingHandlerConfig, ctx: &CheckContext<'_>) -> Vec<String> {
        match config.topic.is_some() || !config.target_topics.is_empty() {
            true => crate::choose_broker(config.broker.as_deref(), ctx)
                .ok()
                .into_iter()
                .collect(),
            false => Vec::new(),
        }
    }

    fn build(
        config: LoggingHandlerConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        let handler = Arc::new(LoggingHandler {
            name: ctx.name.to_string(),
            received: AtomicU64::new(0),
            forward: RwLock::default(),
        });
        ctx.provide::<dyn MessageHandler>(handler.clone());
        ctx.provide::<LoggingHandler>(handler.clone());
        if config.topic.is_some() || !config.target_topics.is_empty() {
            // The broker is built first: it is one of this module's references.
            let broker = match &config.broker {
                Some(name) => ctx.service::<dyn MessageBroker>(name)?,
                None => {
                    // Validation chose: the only broker, or the one in `dependsOn`.
                    let brokers = ctx.all::<dyn MessageBroker>();
                    let preferred = brokers
                        .iter()
                        .find(|(name, _)| ctx.depends_on.iter().any(|d| d == name))
                        .or(brokers.first());
                    preferred
                        .map(|(_, broker)| broker.clone())
                        .ok_or_else(|| anyhow::anyhow!("there is no message broker"))?
                }
            };
            handler.forward_to(&broker, &config.target_topics);
            if let Some(topic) = &config.topic {
                broker.subscribe(topic, ctx.name, handler.clone())?;
            }
        }
        Ok(handler)
    }
}

pub struct LoggingHandler {
    name: String,
    received: AtomicU64,
    /// Where received messages are published next.
    forward: RwLock<Vec<(Arc<dyn MessageBroker>, String)>>,
}

impl wf_engine::ServiceKind for LoggingHandler {
    const LABEL: &'static str = "a `messaging.handler`";
}

impl LoggingHandler {
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Adds target topics (on `broker`) that every received message is forwarded to.
    pub fn forward_to(&self, broker: &Arc<dyn MessageBroker>, topics: &[String]) {
        if let Ok(mut forward) = self.forward.write() {
            for topic in topics {
                forward.push((broker.clone(), topic.clone()));
            }
        }
    }
}

#[async_trait]
impl MessageHandler for LoggingHandler {
    async fn handle(&self, topic: &str, payload: Bytes) -> anyhow::Result<()> {
        let count = self.received.fetch_add(1, Ordering::Relaxed) + 1;
        let event_type = serde_json::from_slice::<serde_json::Value>(&payload)
            .ok()
            .and_then(|v| {
                v.get("type")
                    .or_else(|| v.get("eventType"))
                    .and_then(|t| t.as_str())
                    .map(str::to_string)
            });
        tracing::info!(handler = %self.name, %topic, bytes = payload.len(), event_type = event_type.as_deref().unwrap_or("-"), count, "message received");
        let targets = self.forward.read().map(|f| f.clone()).unwrap_or_default();
        for (broker, target) in targets {
            // A handler forwarding to the topic it reads would feed itself forever.
            if target == topic {
                continue;
            }
            broker
                .publish(&target, payload.clone())
                .await
                .map_err(|e| anyhow::anyhow!("forwarding to `{target}`: {e:#}"))?;
        }
        Ok(())
    }
}

impl Module for LoggingHandler {}
