//! Messaging: brokers behind one trait, handlers that receive messages, and the `messaging`
//! workflow that subscribes handlers to topics.

use std::sync::Arc;

use bytes::Bytes;
use wf_engine::{Registry, RegistryError, ServiceKind, async_trait};

pub mod broker;
pub mod handler;
pub mod workflow;

/// Receives messages from a broker.
#[async_trait]
pub trait MessageHandler: Send + Sync {
    async fn handle(&self, topic: &str, payload: Bytes) -> anyhow::Result<()>;
}

impl ServiceKind for dyn MessageHandler {
    const LABEL: &'static str = "a message handler";
}

/// What happened to one published message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Subscribers that handled it.
    pub delivered: usize,
    /// Subscribers that failed or timed out (logged with the topic).
    pub failed: usize,
}

/// A publish/subscribe broker. Pipelines, handlers and triggers use only this trait, so the
/// in-memory broker can be swapped for another one by changing a module type.
#[async_trait]
pub trait MessageBroker: Send + Sync {
    async fn publish(&self, topic: &str, payload: Bytes) -> anyhow::Result<Delivery>;

    /// Adds `handler` (named `subscriber` in logs) to `topic`.
    fn subscribe(
        &self,
        topic: &str,
        subscriber: &str,
        handler: Arc<dyn MessageHandler>,
    ) -> anyhow::Result<()>;

    /// `(topic, subscriber)` pairs, in subscription order.
    fn subscriptions(&self) -> Vec<(String, String)>;
}

impl ServiceKind for dyn MessageBroker {
    const LABEL: &'static str = "a message broker";
}

pub const PLUGIN: &str = "messaging";

/// Topic names are matched exactly; patterns are a feature of a later version.
pub(crate) fn check_topic(pointer: &str, topic: &str) -> Option<wf_engine::ConfigIssue> {
    if topic.is_empty() {
        return Some(wf_engine::ConfigIssue::new(
            pointer,
            "the topic name is empty",
        ));
    }
    (topic.contains('*') || topic.contains('>')).then(|| {
        wf_engine::ConfigIssue::not_implemented(
            pointer,
            format!("topic patterns such as `{topic}` are not implemented in this build yet"),
        )
        .help("subscribe to each topic by its exact name")
    })
}

/// The broker a module or workflow uses: the named one; else the application's only broker, or
/// the one broker the module lists in `dependsOn`.
pub(crate) fn choose_broker(
    configured: Option<&str>,
    ctx: &wf_engine::CheckContext<'_>,
) -> Result<String, wf_engine::ConfigIssue> {
    ctx.choose(configured, "broker", "message broker", BROKER_TYPES)
}

/// Module types that provide a [`MessageBroker`] (including ones later versions add).
pub(crate) const BROKER_TYPES: &[&str] = &[
    "messaging.broker",
    "messaging.broker.eventbus",
    "eventbus.modular",
    "messaging.kafka",
    "messaging.nats",
];

pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    registry
        .register_module::<broker::MemoryBrokerType>()?
        .register_module::<handler::LoggingHandlerType>()?
        .register_workflow::<workflow::MessagingWorkflow>()?;
    Ok(())
}
