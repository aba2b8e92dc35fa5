//! `messaging.broker`: an in-process broker. A publish reaches every subscriber of the topic, in
//! subscription order, before `publish` returns; a failing subscriber is logged and counted and
//! does not stop delivery to the others.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use schemars::JsonSchema;
use serde::Deserialize;
use wf_engine::wf_config::duration::{DURATION_PATTERN, parse_duration};
use wf_engine::{BuildContext, Category, Described, Module, ModuleType, async_trait};

use crate::{Delivery, MessageBroker, MessageHandler};

/// Configuration of `messaging.broker`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryBrokerConfig {
    /// Longest time one subscriber may take with one message; past it the delivery counts as
    /// failed and the next subscriber gets the message.
    #[serde(default = "default_delivery_timeout", rename = "deliveryTimeout")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub delivery_timeout: String,
    /// Topics this broker carries, as documentation; any topic can be used.
    #[serde(default)]
    pub topics: Vec<String>,
}

fn default_delivery_timeout() -> String {
    "30s".to_string()
}

pub struct MemoryBrokerType;

impl Described for MemoryBrokerType {
    const NAME: &'static str = "messaging.broker";
    const CATEGORY: Category = Category::Messaging;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "In-memory publish/subscribe broker delivering each message to every subscriber of its topic.";
    type Config = MemoryBrokerConfig;
}

impl ModuleType for MemoryBrokerType {
    fn build(
        config: MemoryBrokerConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        let broker = Arc::new(MemoryBroker {
            name: ctx.name.to_string(),
            delivery_timeout: parse_duration(&config.delivery_timeout)
                .map_err(anyhow::Error::msg)?,
            topics: RwLock::default(),
            order: RwLock::default(),
        });
        ctx.provide::<dyn MessageBroker>(broker.clone());
        Ok(broker)
    }
}

type Subscriber = (String, Arc<dyn MessageHandler>);

pub struct MemoryBroker {
    name: String,
    delivery_timeout: Duration,
    topics: RwLock<HashMap<String, Arc<[Subscriber]>>>,
    order: RwLock<Vec<(String, String)>>,
}

#[async_trait]
impl MessageBroker for MemoryBroker {
    async fn publish(&self, topic: &str, payload: Bytes) -> anyhow::Result<Delivery> {
        // Clone the subscriber list so no lock is held while handlers run (they may publish).
        let subscribers = self.topics.read().ok().and_then(|t| t.get(topic).cloned());
        let Some(subscribers) = subscribers else {
            tracing::warn!(broker = %self.name, %topic, "message published to a topic without subscribers");
            return Ok(Delivery::default());
        };
        let mut delivery = Delivery::default();
        for (name, handler) in subscribers.iter() {
            match tokio::time::timeout(
                self.delivery_timeout,
                handler.handle(topic, payload.clone()),
            )
            .await
            {
                Ok(Ok(())) => delivery.delivered += 1,
                Ok(Err(e)) => {
                    delivery.failed += 1;
                    tracing::error!(broker = %self.name, %topic, subscriber = %name, error = %format!("{e:#}"), "subscriber failed");
                }
                Err(_) => {
                    delivery.failed += 1;
                    tracing::error!(broker = %self.name, %topic, subscriber = %name, timeout = ?self.delivery_timeout, "subscriber timed out");
                }
            }
        }
        Ok(delivery)
    }

    fn subscribe(
        &self,
        topic: &str,
        subscriber: &str,
        handler: Arc<dyn MessageHandler>,
    ) -> anyhow::Result<()> {
        let mut topics = self
            .topics
            .write()
            .map_err(|_| anyhow::anyhow!("broker lock poisoned"))?;
        let mut list: Vec<Subscriber> = topics.get(topic).map(|s| s.to_vec()).unwrap_or_default();
        list.push((subscriber.to_string(), handler));
        topics.insert(topic.to_string(), list.into());
        if let Ok(mut order) = self.order.write() {
            order.push((topic.to_string(), subscriber.to_string()));
        }
        Ok(())
    }

    fn subscriptions(&self) -> Vec<(String, String)> {
        self.order.read().map(|o| o.clone()).unwrap_or_default()
    }
}

impl Module for MemoryBroker {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Recorder(Mutex<Vec<String>>, bool);

    #[async_trait]
    impl MessageHandler for Recorder {
        async fn handle(&self, topic: &str, payload: Bytes) -> anyhow::Result<()> {
            self.0
                .lock()
                .unwrap()
                .push(format!("{topic}:{}", String::from_utf8_lossy(&payload)));
            if self.1 {
                anyhow::bail!("handler refused")
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test]
    async fn delivers_in_order_and_counts_failures() {
        let broker = MemoryBroker {
            name: "b".into(),
            delivery_timeout: Duration::from_secs(1),
            topics: RwLock::default(),
            order: RwLock::default(),
        };
        let ok = Arc::new(Recorder(Mutex::default(), false));
        let failing = Arc::new(Recorder(Mutex::default(), true));
        broker
            .subscribe("orders", "failing", failing.clone())
            .unwrap();
        broker.subscribe("orders", "ok", ok.clone()).unwrap();

        let delivery = broker
            .publish("orders", Bytes::from_static(b"{\"id\":1}"))
            .await
            .unwrap();
        assert_eq!(
            delivery,
            Delivery {
                delivered: 1,
                failed: 1
            }
        );
        assert_eq!(*ok.0.lock().unwrap(), ["orders:{\"id\":1}"]);
        assert_eq!(*failing.0.lock().unwrap(), ["orders:{\"id\":1}"]);

        let none = broker
            .publish("nobody-listens", Bytes::new())
            .await
            .unwrap();
        assert_eq!(none, Delivery::default());
        assert_eq!(
            broker.subscriptions(),
            [
                ("orders".to_string(), "failing".to_string()),
                ("orders".to_string(), "ok".to_string())
            ]
        );
    }
}
