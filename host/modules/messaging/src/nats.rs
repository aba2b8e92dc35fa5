//! `messaging.nats`: a broker on a NATS server (async-nats). Topics are NATS subjects.
//!
//! Without `jetstream` it is core NATS: at-most-once, every subscriber gets every message
//! published while it is connected, and failed deliveries are retried in this process. With
//! `jetstream`, messages are stored in a stream and each subscription is a durable pull
//! consumer named after its subscriber: a message is acknowledged when its handler succeeds,
//! redelivered by the server after a failure (`maxDeliveries`, with backoff), and a restarted
//! app resumes where its consumer left off, losing nothing published meanwhile.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use bytes::Bytes;
use futures::StreamExt;
use schemars::JsonSchema;
use serde::Deserialize;
use tokio::task::JoinHandle;
use wf_engine::wf_config::duration::{DURATION_PATTERN, parse_duration};
use wf_engine::{
    BuildContext, Category, Described, Module, ModuleType, StartContext, StopContext, async_trait,
};

use crate::consumers::{Consumers, Subscription};
use crate::delivery::{DeliveryConfig, DeliveryPolicy, Outcome, dead_letter, deliver_with_retries};
use crate::{Delivery, MessageBroker, MessageHandler};

/// Configuration of `messaging.nats`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URL(s), comma-separated (the original ignored this key and always used the
    /// default).
    #[serde(default = "default_url")]
    pub url: String,
    /// The connection's name, shown by the server's monitoring.
    #[serde(default)]
    pub name: Option<String>,
    /// How long start-up may wait for the server before the app fails to start.
    #[serde(default = "default_connect_timeout", rename = "connectTimeout")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub connect_timeout: String,
    /// Durable delivery through a JetStream stream; without it, core NATS (at-most-once).
    #[serde(default)]
    pub jetstream: Option<JetStreamConfig>,
    /// Publish the run lifecycle events (`workflow.completed`, ...) on this broker.
    #[serde(default, rename = "lifecycleEvents")]
    pub lifecycle_events: bool,
    #[serde(flatten)]
    pub delivery: DeliveryConfig,
}

/// The stream that stores the app's messages.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JetStreamConfig {
    /// Stream name (created when missing; letters, digits, `-` and `_`).
    pub stream: String,
    /// Subjects the stream stores, e.g. `orders.>`; every topic published or subscribed must
    /// match one of them.
    #[schemars(length(min = 1))]
    pub subjects: Vec<String>,
    /// `file` (default) or `memory`.
    #[serde(default)]
    pub storage: StreamStorage,
    /// How long the server waits for an acknowledgement before redelivering; longer than
    /// `deliveryTimeout`.
    #[serde(default = "default_ack_wait", rename = "ackWait")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub ack_wait: String,
}

#[derive(Debug, Default, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StreamStorage {
    #[default]
    File,
    Memory,
}

fn default_url() -> String {
    "nats://127.0.0.1:4222".to_string()
}

fn default_connect_timeout() -> String {
    "5s".to_string()
}

fn default_ack_wait() -> String {
    "60s".to_string()
}

pub struct NatsBrokerType;

impl Described for NatsBrokerType {
    const NAME: &'static str = "messaging.nats";
    const CATEGORY: Category = Category::Messaging;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Broker on a NATS server: core publish/subscribe, or JetStream durable consumers with acknowledgement and redelivery.";
    type Config = NatsConfig;
}

impl ModuleType for NatsBrokerType {
    fn build(config: NatsConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Module>> {
        let policy = DeliveryPolicy::from_config(&config.delivery)?;
        let jetstream = match &config.jetstream {
            Some(js) => {
                if js.stream.is_empty()
                    || !js
                        .stream
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    anyhow::bail!(
                        "`jetstream.stream` `{}` must be letters, digits, `-` and `_`",
                        js.stream
                    );
                }
                Some(StreamSettings {
                    name: js.stream.clone(),
                    subjects: js.subjects.clone(),
                    storage: match js.storage {
                        StreamStorage::File => jetstream::stream::StorageType::File,
                        StreamStorage::Memory => jetstream::stream::StorageType::Memory,
                    },
                    ack_wait: parse_duration(&js.ack_wait)
                        .map_err(|e| anyhow::anyhow!("`jetstream.ackWait`: {e}"))?,
                })
            }
            None => None,
        };
        let broker = Arc::new_cyclic(|this| NatsBroker {
            name: ctx.name.to_string(),
            url: config.url,
            client_name: config.name,
            connect_timeout: parse_duration(&config.connect_timeout)
                .unwrap_or(Duration::from_secs(5)),
            jetstream,
            lifecycle_events: config.lifecycle_events,
            policy,
            connection: OnceLock::new(),
            consumers: Arc::default(),
            this: this.clone(),
        });
        ctx.provide::<dyn MessageBroker>(broker.clone());
        Ok(broker)
    }
}

struct StreamSettings {
    name: String,
    subjects: Vec<String>,
    storage: jetstream::stream::StorageType,
    ack_wait: Duration,
}

struct Connection {
    client: async_nats::Client,
    jetstream: Option<(jetstream::Context, jetstream::stream::Stream)>,
}

pub struct NatsBroker {
    name: String,
    url: String,
    client_name: Option<String>,
    connect_timeout: Duration,
    jetstream: Option<StreamSettings>,
    lifecycle_events: bool,
    policy: DeliveryPolicy,
    connection: OnceLock<Connection>,
    consumers: Arc<Consumers>,
    this: Weak<NatsBroker>,
}

impl NatsBroker {
    fn connection(&self) -> anyhow::Result<&Connection> {
        self.connection.get().ok_or_else(|| {
            anyhow::anyhow!(
                "broker `{}` is not connected (the app has not started)",
                self.name
            )
        })
    }

    async fn connect(&self) -> anyhow::Result<Connection> {
        let options = async_nats::ConnectOptions::new()
            .connection_timeout(self.connect_timeout)
            .name(
                self.client_name
                    .clone()
                    .unwrap_or_else(|| format!("wf:{}", self.name)),
            );
        // One attempt, bounded: an unreachable server is a start-up error, never a hang.
        let client = tokio::time::timeout(self.connect_timeout, options.connect(self.url.as_str()))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {:?}", self.connect_timeout))
            .and_then(|r| r.map_err(anyhow::Error::from))
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot reach NATS at `{}`: {e:#} (is the server running? `url` sets the address, `connectTimeout` the wait)",
                    self.url
                )
            })?;
        let jetstream = match &self.jetstream {
            None => None,
            Some(settings) => {
                let context = jetstream::new(client.clone());
                let stream = context
                    .get_or_create_stream(jetstream::stream::Config {
                        name: settings.name.clone(),
                        subjects: settings.subjects.clone(),
                        storage: settings.storage,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "JetStream stream `{}` on `{}`: {e} (is JetStream enabled on the server, and do the subjects overlap another stream's?)",
                            settings.name,
                            self.url
                        )
                    })?;
                Some((context, stream))
            }
        };
        Ok(Connection { client, jetstream })
    }

    /// Starts consuming one subscription.
    async fn consume(&self, subscription: Arc<Subscription>) -> anyhow::Result<JoinHandle<()>> {
        let connection = self.connection()?;
        let broker = self.this.clone();
        let mut stop = self.consumers.stop_signal();
        match &connection.jetstream {
            None => {
                let mut messages = connection
                    .client
                    .subscribe(subscription.topic.clone())
                    .await
                    .map_err(|e| anyhow::anyhow!("subscribing to `{}`: {e}", subscription.topic))?;
                Ok(tokio::spawn(async move {
                    loop {
                        let message = tokio::select! {
                            biased;
                            _ = stop.wait_for(|stopped| *stopped) => return,
                            message = messages.next() => message,
                        };
                        let (Some(message), Some(broker)) = (message, broker.upgrade()) else {
                            return;
                        };
                        // Core NATS has no id of its own; a publisher's `Nats-Msg-Id` is one.
                        let id = message
                            .headers
                            .as_ref()
                            .and_then(|h| h.get("Nats-Msg-Id"))
                            .map(|v| v.to_string());
                        deliver_with_retries(
                            &broker.policy,
                            &*broker,
                            &broker.name,
                            &subscription.topic,
                            &subscription.subscriber,
                            &*subscription.handler,
                            message.payload,
                            id.as_deref(),
                        )
                        .await;
                    }
                }))
            }
            Some((_, stream)) => {
                let settings = self
                    .jetstream
                    .as_ref()
                    .ok_or_else(|| anyhow::anyhow!("no JetStream settings"))?;
                let durable = durable_name(&subscription.subscriber, &subscription.topic);
                // Create or update: a changed `ackWait` reaches a consumer that already exists.
                let consumer = stream
                    .create_consumer(pull::Config {
                        durable_name: Some(durable.clone()),
                        filter_subject: subscription.topic.clone(),
                        ack_policy: jetstream::consumer::AckPolicy::Explicit,
                        ack_wait: settings.ack_wait,
                        // Unlimited on the server: attempts are counted here, so a message
                        // whose dead letter could not be published comes back.
                        max_deliver: -1,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("consumer `{durable}` for `{}`: {e}", subscription.topic)
                    })?;
                let mut messages = consumer
                    .messages()
                    .await
                    .map_err(|e| anyhow::anyhow!("consuming `{}`: {e}", subscription.topic))?;
                Ok(tokio::spawn(async move {
                    loop {
                        let message = tokio::select! {
                            biased;
                            _ = stop.wait_for(|stopped| *stopped) => return,
                            message = messages.next() => message,
                        };
                        let Some(broker) = broker.upgrade() else {
                            return;
                        };
                        match message {
                            None => return,
                            Some(Err(e)) => {
                                tracing::warn!(broker = %broker.name, topic = %subscription.topic, error = %e, "JetStream consumer error; continuing");
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                            Some(Ok(message)) => broker.handle_stored(&subscription, message).await,
                        }
                    }
                }))
            }
        }
    }

    /// One JetStream delivery: acknowledge, ask for redelivery, or dead-letter and terminate.
    async fn handle_stored(&self, subscription: &Subscription, message: jetstream::Message) {
        let attempt = message
            .info()
            .map(|info| u32::try_from(info.delivered).unwrap_or(1))
            .unwrap_or(1);
        // Past the last attempt only the dead letter is left to publish (it failed before).
        let outcome = if attempt > self.policy.max_deliveries {
            Outcome::DeadLetter(format!(
                "delivery failed {} times (the dead letter is being published again)",
                self.policy.max_deliveries
            ))
        } else {
            // The publisher's `Nats-Msg-Id`, else the stream's sequence: the same on redelivery.
            let id = message
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.to_string())
                .or_else(|| {
                    message
                        .info()
                        .ok()
                        .map(|info| format!("{}/{}", info.stream, info.stream_sequence))
                });
            self.policy
                .attempt(
                    &*subscription.handler,
                    &subscription.topic,
                    message.payload.clone(),
                    id.as_deref(),
                    attempt,
                )
                .await
        };
        let ack = match outcome {
            Outcome::Handled => AckKind::Ack,
            Outcome::Retry { after, error } => {
                tracing::warn!(broker = %self.name, topic = %subscription.topic, subscriber = %subscription.subscriber, attempt, %error, ?after, "delivery failed; the server redelivers it");
                AckKind::Nak(Some(after))
            }
            Outcome::DeadLetter(error) => {
                let parked = dead_letter(
                    &self.policy,
                    self,
                    &self.name,
                    &subscription.topic,
                    &subscription.subscriber,
                    &error,
                    attempt,
                    &message.payload,
                )
                .await;
                if parked {
                    AckKind::Term
                } else {
                    // Not lost: the server delivers it again, and dead-lettering is retried.
                    AckKind::Nak(Some(self.policy.retry_backoff.max(Duration::from_secs(1))))
                }
            }
        };
        if let Err(e) = message.ack_with(ack).await {
            tracing::warn!(broker = %self.name, topic = %subscription.topic, error = %e, "acknowledging a message failed; the server will redeliver it");
        }
    }
}

/// A durable consumer name from the subscriber and topic: letters, digits, `-` and `_` only.
fn durable_name(subscriber: &str, topic: &str) -> String {
    format!("{subscriber}--{topic}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[async_trait]
impl MessageBroker for NatsBroker {
    async fn publish(&self, topic: &str, payload: Bytes) -> anyhow::Result<Delivery> {
        let connection = self.connection()?;
        let subject = topic.to_string();
        match &connection.jetstream {
            Some((context, _)) => {
                // The second await is the server's acknowledgement that the stream stored it.
                context
                    .publish(subject, payload)
                    .await
                    .map_err(|e| anyhow::anyhow!("publishing to `{topic}`: {e}"))?
                    .await
                    .map_err(|e| anyhow::anyhow!("publishing to `{topic}`: {e} (is the topic one of the stream's subjects?)"))?;
            }
            None => {
                connection
                    .client
                    .publish(subject, payload)
                    .await
                    .map_err(|e| anyhow::anyhow!("publishing to `{topic}`: {e}"))?;
            }
        }
        Ok(Delivery::accepted())
    }

    fn subscribe(
        &self,
        topic: &str,
        subscriber: &str,
        handler: Arc<dyn MessageHandler>,
    ) -> anyhow::Result<()> {
        self.consumers.subscribe(
            self.this.clone(),
            &self.name,
            topic,
            subscriber,
            handler,
            |broker: Arc<Self>, subscription| async move { broker.consume(subscription).await },
        );
        Ok(())
    }

    fn subscriptions(&self) -> Vec<(String, String)> {
        self.consumers.pairs()
    }

    fn wants_run_event(&self, _topic: &str) -> bool {
        self.lifecycle_events
    }
}

#[async_trait]
impl Module for NatsBroker {
    async fn start(&self, ctx: &StartContext) -> anyhow::Result<()> {
        let connection = self.connect().await?;
        let _ = self.connection.set(connection);
        self.consumers
            .start_all(ctx.serving, |subscription| self.consume(subscription))
            .await?;
        // Core subscriptions are live on the server once the connection is flushed.
        if let Err(e) = self.connection()?.client.flush().await {
            self.consumers.stop(tokio::time::Instant::now()).await;
            anyhow::bail!("NATS at `{}`: {e}", self.url);
        }
        if self.lifecycle_events {
            let this: Weak<dyn MessageBroker> = self.this.clone();
            self.consumers.forward_lifecycle(&ctx.app, this);
        }
        tracing::info!(broker = %self.name, url = %self.url, jetstream = self.jetstream.is_some(), "connected to NATS");
        Ok(())
    }

    /// Consumers finish the message in hand (until the deadline), then the connection drains.
    async fn stop(&self, ctx: &StopContext) -> anyhow::Result<()> {
        self.consumers.stop(ctx.deadline).await;
        if let Some(connection) = self.connection.get() {
            let _ = tokio::time::timeout_at(ctx.deadline, connection.client.drain()).await;
        }
        Ok(())
    }
}
