//! `messaging.handler`: logs every message it receives (topic, size and, when it is JSON, its
//! `type`/`eventType`) and counts them — the original's behaviour.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use schemars::JsonSchema;
use serde::Deserialize;
use wf_engine::{BuildContext, Category, Described, Module, ModuleType, async_trait};

use crate::MessageHandler;

/// `messaging.handler` has no settings yet: subscribe it to topics with the `messaging` workflow.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoggingHandlerConfig {}

pub struct LoggingHandlerType;

impl Described for LoggingHandlerType {
    const NAME: &'static str = "messaging.handler";
    const CATEGORY: Category = Category::Messaging;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Receives messages from the topics the `messaging` workflow subscribes it to, and logs them.";
    type Config = LoggingHandlerConfig;
}

impl ModuleType for LoggingHandlerType {
    fn build(
        _: LoggingHandlerConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        let handler = Arc::new(LoggingHandler {
            name: ctx.name.to_string(),
            received: AtomicU64::new(0),
        });
        ctx.provide::<dyn MessageHandler>(handler.clone());
        Ok(handler)
    }
}

pub struct LoggingHandler {
    name: String,
    received: AtomicU64,
}

impl LoggingHandler {
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
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
        Ok(())
    }
}

impl Module for LoggingHandler {}
