//! `messaging.kafka`: a broker on Kafka (librdkafka through `rdkafka`). Topics are Kafka topics.
//!
//! Each subscription is a consumer in its own consumer group, `<groupId>.<subscriber>`, so every
//! subscriber sees every message (publish/subscribe, as with the other brokers) while several
//! instances of one app share the work of a subscriber. A message's offset is committed after
//! its handler succeeded, or after its last attempt was dead-lettered; a restarted app resumes
//! from the committed offsets, losing nothing published while it was down. Failed deliveries
//! are retried in this process (`maxDeliveries`, with backoff), which keeps a partition's order.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use schemars::JsonSchema;
use serde::Deserialize;
use tokio::task::JoinHandle;
use wf_engine::wf_config::duration::{DURATION_PATTERN, parse_duration};
use wf_engine::{
    BuildContext, Category, Described, Module, ModuleType, StartContext, StopContext, async_trait,
};

use crate::consumers::{Consumers, Subscription};
use crate::delivery::{DeliveryConfig, DeliveryPolicy, Settled, deliver_with_retries};
use crate::{Delivery, MessageBroker, MessageHandler};

/// Configuration of `messaging.kafka`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port`.
    #[schemars(length(min = 1))]
    pub brokers: Vec<String>,
    /// Prefix of the consumer groups: each subscription consumes as `<groupId>.<subscriber>`.
    #[serde(default = "default_group", rename = "groupId")]
    pub group_id: String,
    /// Where a consumer group without committed offsets starts: `earliest` (default: nothing
    /// published before the app first started is missed) or `latest`.
    #[serde(default, rename = "startFrom")]
    pub start_from: StartFrom,
    /// Create missing topics (subscribed ones at start, others on first publish).
    #[serde(default = "default_true", rename = "createTopics")]
    pub create_topics: bool,
    /// Partitions of topics this module creates.
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1))]
    pub partitions: i32,
    /// How long start-up may wait for the cluster before the app fails to start.
    #[serde(default = "default_connect_timeout", rename = "connectTimeout")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub connect_timeout: String,
    /// Publish the run lifecycle events (`workflow.completed`, ...) on this broker.
    #[serde(default, rename = "lifecycleEvents")]
    pub lifecycle_events: bool,
    #[serde(flatten)]
    pub delivery: DeliveryConfig,
}

#[derive(Debug, Default, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    #[default]
    Earliest,
    Latest,
}

fn default_group() -> String {
    "wf".to_string()
}

fn default_true() -> bool {
    true
}

fn default_partitions() -> i32 {
    1
}

fn default_connect_timeout() -> String {
    "10s".to_string()
}

pub struct KafkaBrokerType;

impl Described for KafkaBrokerType {
    const NAME: &'static str = "messaging.kafka";
    const CATEGORY: Category = Category::Messaging;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Broker on Kafka: a consumer group per subscriber, offsets committed after handling, redelivery and dead letters.";
    type Config = KafkaConfig;
}

impl ModuleType for KafkaBrokerType {
    fn build(config: KafkaConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Module>> {
        let policy = DeliveryPolicy::from_config(&config.delivery)?;
        let connect_timeout = parse_duration(&config.connect_timeout)
            .map_err(|e| anyhow::anyhow!("`connectTimeout`: {e}"))?;
        let broker = Arc::new_cyclic(|this| KafkaBroker {
            name: ctx.name.to_string(),
            brokers: config.brokers.join(","),
            group_id: config.group_id,
            start_from: config.start_from,
            create_topics: config.create_topics,
            partitions: config.partitions.max(1),
            connect_timeout,
            lifecycle_events: config.lifecycle_events,
            policy,
            producer: OnceLock::new(),
            consumers: Arc::default(),
            this: this.clone(),
        });
        ctx.provide::<dyn MessageBroker>(broker.clone());
        Ok(broker)
    }
}

pub struct KafkaBroker {
    name: String,
    brokers: String,
    group_id: String,
    start_from: StartFrom,
    create_topics: bool,
    partitions: i32,
    connect_timeout: Duration,
    lifecycle_events: bool,
    policy: DeliveryPolicy,
    producer: OnceLock<FutureProducer>,
    consumers: Arc<Consumers>,
    this: Weak<KafkaBroker>,
}

impl KafkaBroker {
    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", format!("wf-{}", self.name));
        config
    }

    fn producer(&self) -> anyhow::Result<&FutureProducer> {
        self.producer.get().ok_or_else(|| {
            anyhow::anyhow!(
                "broker `{}` is not connected (the app has not started)",
                self.name
            )
        })
    }

    /// Creates `topics` when missing (existing ones are fine).
    async fn ensure_topics(&self, topics: &[String]) -> anyhow::Result<()> {
        if !self.create_topics || topics.is_empty() {
            return Ok(());
        }
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .map_err(|e| anyhow::anyhow!("Kafka admin client: {e}"))?;
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| NewTopic::new(t, self.partitions, TopicReplication::Fixed(1)))
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(self.connect_timeout));
        let results = admin
            .create_topics(&new, &options)
            .await
            .map_err(|e| anyhow::anyhow!("creating topics {topics:?}: {e}"))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => anyhow::bail!("creating topic `{topic}`: {code}"),
            }
        }
        Ok(())
    }

    async fn consume(&self, subscription: Arc<Subscription>) -> anyhow::Result<JoinHandle<()>> {
        let group = format!("{}.{}", self.group_id, subscription.subscriber);
        let consumer: StreamConsumer = self
            .client_config()
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set(
                "auto.offset.reset",
                match self.start_from {
                    StartFrom::Earliest => "earliest",
                    StartFrom::Latest => "latest",
                },
            )
            .create()
            .map_err(|e| anyhow::anyhow!("Kafka consumer `{group}`: {e}"))?;
        consumer
            .subscribe(&[subscription.topic.as_str()])
            .map_err(|e| {
                anyhow::anyhow!("subscribing `{group}` to `{}`: {e}", subscription.topic)
            })?;
        let broker = self.this.clone();
        let mut stop = self.consumers.stop_signal();
        Ok(tokio::spawn(async move {
            loop {
                let received = tokio::select! {
                    biased;
                    _ = stop.wait_for(|stopped| *stopped) => break,
                    received = consumer.recv() => received,
                };
                let Some(broker) = broker.upgrade() else {
                    break;
                };
                let message = match received {
                    Ok(message) => message,
                    Err(e) => {
                        tracing::warn!(broker = %broker.name, topic = %subscription.topic, error = %e, "Kafka consumer error; continuing");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let payload = Bytes::copy_from_slice(message.payload().unwrap_or_default());
                // Unique in the cluster and the same when the message comes again.
                let id = format!(
                    "{}/{}/{}",
                    message.topic(),
                    message.partition(),
                    message.offset()
                );
                // Until it is handled or safely dead-lettered, the offset is not committed (a
                // later commit would commit past it): deliver again after a pause, or stop
                // without committing so the next start gets it again.
                loop {
                    let settled = deliver_with_retries(
                        &broker.policy,
                        &*broker,
                        &broker.name,
                        &subscription.topic,
                        &subscription.subscriber,
                        &*subscription.handler,
                        payload.clone(),
                        Some(&id),
                    )
                    .await;
                    if settled != Settled::Unsettled {
                        break;
                    }
                    let pause = broker.policy.retry_backoff.max(Duration::from_secs(1));
                    tokio::select! {
                        _ = stop.wait_for(|stopped| *stopped) => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
                // Handled or dead-lettered: either way this offset is done.
                if let Err(e) = consumer.commit_message(&message, CommitMode::Async) {
                    tracing::warn!(broker = %broker.name, topic = %subscription.topic, error = %e, "committing an offset failed; the message may be delivered again");
                }
            }
            // Offsets committed asynchronously must reach the cluster before the group is left.
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                    tracing::debug!(error = %e, "final commit");
                }
                drop(consumer);
            })
            .await;
        }))
    }
}

#[async_trait]
impl MessageBroker for KafkaBroker {
    async fn publish(&self, topic: &str, payload: Bytes) -> anyhow::Result<Delivery> {
        let producer = self.producer()?;
        let send = || {
            producer.send(
                FutureRecord::<(), [u8]>::to(topic).payload(&payload[..]),
                Timeout::After(self.policy.timeout),
            )
        };
        let sent = match send().await {
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::UnknownTopicOrPartition), _))
                if self.create_topics =>
            {
                self.ensure_topics(&[topic.to_string()]).await?;
                send().await
            }
            other => other,
        };
        sent.map_err(|(e, _)| anyhow::anyhow!("publishing to `{topic}`: {e}"))?;
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
            |broker: Arc<Self>, subscription| async move {
                broker
                    .ensure_topics(std::slice::from_ref(&subscription.topic))
                    .await?;
                broker.consume(subscription).await
            },
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
impl Module for KafkaBroker {
    async fn start(&self, ctx: &StartContext) -> anyhow::Result<()> {
        let producer: FutureProducer = self
            .client_config()
            .set(
                "message.timeout.ms",
                self.policy.timeout.as_millis().to_string(),
            )
            .create()
            .map_err(|e| anyhow::anyhow!("Kafka producer: {e}"))?;
        // librdkafka connects lazily: ask for metadata so an unreachable cluster fails start-up.
        let probe = producer.clone();
        let timeout = self.connect_timeout;
        tokio::task::spawn_blocking(move || probe.client().fetch_metadata(None, timeout))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot reach Kafka at `{}` within {:?}: {e} (is the cluster running? `brokers` sets the addresses, `connectTimeout` the wait)",
                    self.brokers,
                    timeout
                )
            })?;
        let _ = self.producer.set(producer);
        let subscriptions = self.consumers.all();
        let mut topics: Vec<String> = subscriptions.iter().map(|s| s.topic.clone()).collect();
        topics.sort();
        topics.dedup();
        self.ensure_topics(&topics).await?;
        self.consumers
            .start_all(ctx.serving, |subscription| self.consume(subscription))
            .await?;
        if self.lifecycle_events {
            let this: Weak<dyn MessageBroker> = self.this.clone();
            self.consumers.forward_lifecycle(&ctx.app, this);
        }
        tracing::info!(broker = %self.name, brokers = %self.brokers, "connected to Kafka");
        Ok(())
    }

    /// Consumers finish the message in hand, commit and leave their groups; the producer
    /// flushes what it still holds.
    async fn stop(&self, ctx: &StopContext) -> anyhow::Result<()> {
        self.consumers.stop(ctx.deadline).await;
        if let Some(producer) = self.producer.get() {
            let producer = producer.clone();
            let left = ctx
                .deadline
                .saturating_duration_since(tokio::time::Instant::now());
            let _ = tokio::task::spawn_blocking(move || producer.flush(Timeout::After(left))).await;
        }
        Ok(())
    }
}
