//! Messaging: brokers behind one trait, handlers that receive messages, the `messaging`
//! workflow that subscribes handlers to topics, the `event`/`eventbus` triggers that start
//! pipelines from messages, and the app's lifecycle events.
//!
//! Every broker (in-memory, NATS, Kafka) follows the same contract, so pipelines, handlers and
//! triggers never care which one is configured:
//! - `subscribe` may be called before or after the broker starts; consuming begins at start.
//! - A handler's `Ok` acknowledges the message. An `Err` asks for redelivery, up to the
//!   broker's `maxDeliveries`; after the last attempt the message goes to the broker's
//!   dead-letter topic. A [`PoisonMessage`] error skips the retries: the message can never be
//!   processed, so it is dead-lettered at once.

use std::sync::Arc;

use bytes::Bytes;
use wf_engine::{Registry, RegistryError, ServiceKind, async_trait};

pub mod broker;
pub mod consumers;
pub mod delivery;
pub mod event_logger;
pub mod event_trigger;
pub mod file_input;
pub mod handler;
pub mod kafka;
pub mod lifecycle;
pub mod nats;
pub mod workflow;

pub use delivery::{DeliveryPolicy, PoisonMessage};

/// Receives messages from a broker.
#[async_trait]
pub trait MessageHandler: Send + Sync {
    /// `Ok` acknowledges the message; `Err` asks for redelivery (see the crate docs).
    async fn handle(&self, topic: &str, payload: Bytes) -> anyhow::Result<()>;

    /// [`Self::handle`] with the broker's id for the message when it has one (a JetStream
    /// message's `Nats-Msg-Id` or stream sequence, a Kafka offset): the same in every
    /// redelivery, so handlers that start runs can tell a redelivered message from a new one.
    async fn handle_delivery(
        &self,
        topic: &str,
        payload: Bytes,
        _id: Option<&str>,
    ) -> anyhow::Result<()> {
        self.handle(topic, payload).await
    }
}

impl ServiceKind for dyn MessageHandler {
    const LABEL: &'static str = "a message handler";
}

/// What happened to one published message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Subscribers that handled it before `publish` returned (synchronous delivery).
    pub delivered: usize,
    /// Subscribers that failed or timed out before `publish` returned (logged with the topic).
    pub failed: usize,
    /// Subscriber queues (in-memory, asynchronous delivery) or external brokers that accepted
    /// it for later delivery.
    pub queued: usize,
}

impl Delivery {
    /// Taken by an external broker for later delivery.
    pub fn accepted() -> Self {
        Delivery {
            queued: 1,
            ..Delivery::default()
        }
    }
}

/// A publish/subscribe broker. Pipelines, handlers and triggers use only this trait, so the
/// in-memory broker can be swapped for NATS or Kafka by changing a module type.
#[async_trait]
pub trait MessageBroker: Send + Sync {
    async fn publish(&self, topic: &str, payload: Bytes) -> anyhow::Result<Delivery>;

    /// Adds `handler` (named `subscriber`, which also names its durable consumer or consumer
    /// group on brokers that have them) to `topic`.
    fn subscribe(
        &self,
        topic: &str,
        subscriber: &str,
        handler: Arc<dyn MessageHandler>,
    ) -> anyhow::Result<()>;

    /// `(topic, subscriber)` pairs, in subscription order.
    fn subscriptions(&self) -> Vec<(String, String)>;

    /// Whether the broker carries the run lifecycle event `topic` (see [`lifecycle`]).
    fn wants_run_event(&self, _topic: &str) -> bool {
        false
    }
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
pub fn choose_broker(
    configured: Option<&str>,
    ctx: &wf_engine::CheckContext<'_>,
) -> Result<String, wf_engine::ConfigIssue> {
    ctx.choose(configured, "broker", "message broker", BROKER_TYPES)
}

/// Module types that provide a [`MessageBroker`].
pub const BROKER_TYPES: &[&str] = &[
    "messaging.broker",
    "messaging.broker.eventbus",
    "eventbus.modular",
    "messaging.kafka",
    "messaging.nats",
];

pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    registry
        .register_module::<broker::MemoryBrokerType>()?
        .register_module::<broker::EventBusBridgeType>()?
        .register_module::<broker::ModularEventBusType>()?
        .register_module::<nats::NatsBrokerType>()?
        .register_module::<kafka::KafkaBrokerType>()?
        .register_module::<handler::LoggingHandlerType>()?
        .register_module::<event_logger::EventLoggerType>()?
        .register_workflow::<workflow::MessagingWorkflow>()?
        .register_trigger::<event_trigger::EventTriggerType>()?
        .register_trigger::<event_trigger::EventBusTriggerType>()?;
    Ok(())
}
