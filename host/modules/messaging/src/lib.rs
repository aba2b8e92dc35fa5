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

pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    registry
        .register_module::<broker::MemoryBrokerType>()?
        .register_module::<handler::LoggingHandlerType>()?
        .register_workflow::<workflow::MessagingWorkflow>()?;
    Ok(())
}
