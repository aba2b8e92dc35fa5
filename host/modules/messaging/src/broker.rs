//! `messaging.broker`: the in-process broker, also registered as `messaging.broker.eventbus`
//! and `eventbus.modular` (the original's event-bus names, which there were inert).
//!
//! Each subscription has a bounded queue and one worker, so a subscriber sees a topic's
//! messages in publish order and one slow subscriber never delays another. `publish` waits
//! for room in every subscriber's queue (back-pressure) for at most `deliveryTimeout`, and
//! either queues the message for all of them or, when a queue stays full, for none.
//! `delivery: sync` instead runs every subscriber before `publish` returns (the original's
//! behaviour), which suits tests and request/response-style flows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use bytes::Bytes;
use schemars::JsonSchema;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use wf_engine::{
    BuildContext, Category, Described, Module, ModuleType, StartContext, StopContext, async_trait,
};

use crate::delivery::{DeliveryConfig, DeliveryPolicy};
use crate::lifecycle::LifecycleForwarder;
use crate::{Delivery, MessageBroker, MessageHandler};
use wf_engine::events::LIFECYCLE_TOPICS;

/// How `publish` hands messages to subscribers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryMode {
    /// Queue the message per subscriber and return; each subscriber's worker handles its
    /// queue in order.
    #[default]
    Async,
    /// Run every subscriber, in subscription order, before `publish` returns.
    Sync,
}

/// Configuration of `messaging.broker` (and `messaging.broker.eventbus`, `eventbus.modular`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryBrokerConfig {
    /// `async` (default): per-subscriber queues and workers; `sync`: subscribers run inside
    /// `publish`.
    #[serde(default)]
    pub delivery: DeliveryMode,
    /// Messages each subscriber's queue holds before `publish` waits for room.
    #[serde(default = "default_max_queue_size", rename = "maxQueueSize")]
    #[schemars(range(min = 1))]
    pub max_queue_size: usize,
    /// Publish the run lifecycle events (`workflow.started`, `step.completed`, ...) on this
    /// broker when something subscribes to them. An event bus module outranks a plain broker
    /// when an app has both.
    #[serde(default = "default_true", rename = "lifecycleEvents")]
    pub lifecycle_events: bool,
    /// Topics this broker carries, as documentation; any topic can be used.
    #[serde(default)]
    pub topics: Vec<String>,
    /// A description, as documentation.
    #[serde(default)]
    pub description: Option<String>,
    #[serde(flatten)]
    pub delivery_settings: DeliveryConfig,
}

fn default_max_queue_size() -> usize {
    10_000
}

fn default_true() -> bool {
    true
}

macro_rules! memory_broker_type {
    ($type:ident, $name:literal, $priority:literal, $description:literal) => {
        pub struct $type;

        impl Described for $type {
            const NAME: &'static str = $name;
            const CATEGORY: Category = Category::Messaging;
            const PLUGIN: &'static str = crate::PLUGIN;
            const DESCRIPTION: &'static str = $description;
            type Config = MemoryBrokerConfig;
        }

        impl ModuleType for $type {
            fn build(
                config: MemoryBrokerConfig,
                ctx: &mut BuildContext<'_>,
            ) -> anyhow::Result<Arc<dyn Module>> {
                let broker = MemoryBroker::new(ctx.name, &config, $priority)?;
                ctx.provide::<dyn MessageBroker>(broker.clone());
                Ok(broker)
            }
        }
    };
}

memory_broker_type!(
    MemoryBrokerType,
    "messaging.broker",
    1,
    "In-memory publish/subscribe broker: per-subscriber ordered queues with back-pressure, or synchronous delivery."
);
memory_broker_type!(
    EventBusBridgeType,
    "messaging.broker.eventbus",
    2,
    "The app's in-memory event bus (the original's EventBus bridge): a `messaging.broker` that carries the run lifecycle events first."
);
memory_broker_type!(
    ModularEventBusType,
    "eventbus.modular",
    2,
    "The app's in-memory event bus under the original's modular name; the same as `messaging.broker.eventbus`."
);

/// One subscription: who handles it, and its queue in async mode.
struct Subscriber {
    target: Arc<Target>,
    queue: Option<mpsc::Sender<Bytes>>,
}

/// The handler side of a subscription. Its worker holds only this, not the queue's sender, so
/// the worker ends once the broker drops the senders and the queue is empty.
struct Target {
    name: String,
    handler: Arc<dyn MessageHandler>,
}

/// A subscription's queue receiver, waiting for the broker to start its worker.
struct PendingWorker {
    topic: String,
    target: Arc<Target>,
    queue: mpsc::Receiver<Bytes>,
}

pub struct MemoryBroker {
    name: String,
    mode: DeliveryMode,
    max_queue_size: usize,
    policy: DeliveryPolicy,
    lifecycle_events: bool,
    /// 2 for the event-bus names, 1 for `messaging.broker` (see [`wf_engine::events`]).
    lifecycle_priority: u8,
    topics: RwLock<HashMap<String, Arc<[Arc<Subscriber>]>>>,
    order: RwLock<Vec<(String, String)>>,
    /// Workers not started yet (subscriptions made before `start`).
    pending: Mutex<Vec<PendingWorker>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    running: std::sync::atomic::AtomicBool,
    /// Set at stop: publishing then fails instead of reaching no one silently.
    stopped: std::sync::atomic::AtomicBool,
    lifecycle: Mutex<Option<LifecycleForwarder>>,
    /// Bit `i` set: [`LIFECYCLE_TOPICS`]`[i]` has a subscriber. Read for every step's events,
    /// so it is an atomic rather than a look-up in `topics`.
    lifecycle_subscribed: AtomicU8,
    this: Weak<MemoryBroker>,
}

/// The bit of a lifecycle topic in `lifecycle_subscribed`.
fn lifecycle_bit(topic: &str) -> Option<u8> {
    LIFECYCLE_TOPICS
        .iter()
        .position(|t| *t == topic)
        .map(|i| 1 << i)
}

impl MemoryBroker {
    pub fn new(
        name: &str,
        config: &MemoryBrokerConfig,
        lifecycle_priority: u8,
    ) -> anyhow::Result<Arc<Self>> {
        let policy = DeliveryPolicy::from_config(&config.delivery_settings)?;
        Ok(Arc::new_cyclic(|this| MemoryBroker {
            name: name.to_string(),
            mode: config.delivery,
            max_queue_size: config.max_queue_size.max(1),
            policy,
            lifecycle_events: config.lifecycle_events,
            lifecycle_priority,
            topics: RwLock::default(),
            order: RwLock::default(),
            pending: Mutex::default(),
            workers: Mutex::default(),
            running: Default::default(),
            stopped: Default::default(),
            lifecycle: Mutex::default(),
            lifecycle_subscribed: AtomicU8::new(0),
            this: this.clone(),
        }))
    }

    fn subscribers(&self, topic: &str) -> Option<Arc<[Arc<Subscriber>]>> {
        self.topics.read().ok().and_then(|t| t.get(topic).cloned())
    }

    /// Handles one message for one subscriber: every attempt, then the dead-letter topic.
    async fn deliver(&self, topic: &str, target: &Target, payload: Bytes) -> bool {
        // In memory there is nothing to leave unacknowledged: a failed dead letter is logged.
        crate::delivery::deliver_with_retries(
            &self.policy,
            self,
            &self.name,
            topic,
            &target.name,
            &*target.handler,
            payload,
            None,
        )
        .await
            == crate::delivery::Settled::Handled
    }

    fn spawn_worker(&self, pending: PendingWorker) -> anyhow::Result<JoinHandle<()>> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| anyhow::anyhow!("broker `{}` needs a running runtime", self.name))?;
        let broker = self.this.clone();
        let PendingWorker {
            topic,
            target,
            mut queue,
        } = pending;
        Ok(runtime.spawn(async move {
            while let Some(payload) = queue.recv().await {
                // The worker must not keep the broker alive: it ends when the broker is gone.
                let Some(broker) = broker.upgrade() else {
                    return;
                };
                broker.deliver(&topic, &target, payload).await;
            }
        }))
    }
}

#[async_trait]
impl MessageBroker for MemoryBroker {
    async fn publish(&self, topic: &str, payload: Bytes) -> anyhow::Result<Delivery> {
        if self.stopped.load(Ordering::Acquire) {
            anyhow::bail!(
                "broker `{}` has stopped; `{topic}` was not published",
                self.name
            );
        }
        // Clone the subscriber list so no lock is held while handlers run (they may publish).
        let Some(subscribers) = self.subscribers(topic) else {
            tracing::debug!(broker = %self.name, %topic, "message published to a topic without subscribers");
            return Ok(Delivery::default());
        };
        let mut delivery = Delivery::default();
        match self.mode {
            DeliveryMode::Sync => {
                for subscriber in subscribers.iter() {
                    if self
                        .deliver(topic, &subscriber.target, payload.clone())
                        .await
                    {
                        delivery.delivered += 1;
                    } else {
                        delivery.failed += 1;
                    }
                }
            }
            DeliveryMode::Async => {
                // Room in every queue first, so the message is queued for all or for none.
                let wait_for_room = async {
                    let mut permits = Vec::with_capacity(subscribers.len());
                    for subscriber in subscribers.iter() {
                        let Some(queue) = &subscriber.queue else {
                            continue;
                        };
                        match queue.reserve().await {
                            Ok(permit) => permits.push(permit),
                            Err(_) => anyhow::bail!("broker `{}` has stopped", self.name),
                        }
                    }
                    Ok(permits)
                };
                let permits = match tokio::time::timeout(self.policy.timeout, wait_for_room).await {
                    Ok(permits) => permits?,
                    Err(_) => anyhow::bail!(
                        "a subscriber of `{topic}` on broker `{}` has {} messages waiting and took longer than {:?} to make room; the message was not published (raise `maxQueueSize` or `deliveryTimeout`, or speed up the subscriber)",
                        self.name,
                        self.max_queue_size,
                        self.policy.timeout
                    ),
                };
                delivery.queued = permits.len();
                for permit in permits {
                    permit.send(payload.clone());
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
        let (queue, receiver) = match self.mode {
            DeliveryMode::Async => {
                let (tx, rx) = mpsc::channel(self.max_queue_size);
                (Some(tx), Some(rx))
            }
            DeliveryMode::Sync => (None, None),
        };
        let target = Arc::new(Target {
            name: subscriber.to_string(),
            handler,
        });
        let entry = Arc::new(Subscriber {
            target: target.clone(),
            queue,
        });
        if let Some(receiver) = receiver {
            let pending = PendingWorker {
                topic: topic.to_string(),
                target,
                queue: receiver,
            };
            // Subscriptions made while running (trigger components) start their worker now.
            if self.running.load(Ordering::Acquire) {
                let worker = self.spawn_worker(pending)?;
                self.workers
                    .lock()
                    .map_err(|_| anyhow::anyhow!("broker lock poisoned"))?
                    .push(worker);
            } else {
                self.pending
                    .lock()
                    .map_err(|_| anyhow::anyhow!("broker lock poisoned"))?
                    .push(pending);
            }
        }
        let mut topics = self
            .topics
            .write()
            .map_err(|_| anyhow::anyhow!("broker lock poisoned"))?;
        let mut list: Vec<Arc<Subscriber>> =
            topics.get(topic).map(|s| s.to_vec()).unwrap_or_default();
        list.push(entry);
        topics.insert(topic.to_string(), list.into());
        if let Ok(mut order) = self.order.write() {
            order.push((topic.to_string(), subscriber.to_string()));
        }
        if let Some(bit) = lifecycle_bit(topic) {
            self.lifecycle_subscribed.fetch_or(bit, Ordering::Release);
        }
        Ok(())
    }

    fn subscriptions(&self) -> Vec<(String, String)> {
        self.order.read().map(|o| o.clone()).unwrap_or_default()
    }

    fn wants_run_event(&self, topic: &str) -> bool {
        self.lifecycle_events
            && lifecycle_bit(topic)
                .is_some_and(|bit| self.lifecycle_subscribed.load(Ordering::Acquire) & bit != 0)
    }
}

#[async_trait]
impl Module for MemoryBroker {
    async fn start(&self, ctx: &StartContext) -> anyhow::Result<()> {
        let pending = std::mem::take(
            &mut *self
                .pending
                .lock()
                .map_err(|_| anyhow::anyhow!("broker lock poisoned"))?,
        );
        let mut workers = Vec::with_capacity(pending.len());
        for p in pending {
            workers.push(self.spawn_worker(p)?);
        }
        self.workers
            .lock()
            .map_err(|_| anyhow::anyhow!("broker lock poisoned"))?
            .extend(workers);
        self.running.store(true, Ordering::Release);
        if self.lifecycle_events {
            let this: Weak<dyn MessageBroker> = self.this.clone();
            let forwarder = LifecycleForwarder::install(&ctx.app, self.lifecycle_priority, this);
            if let Ok(mut slot) = self.lifecycle.lock() {
                *slot = Some(forwarder);
            }
        }
        Ok(())
    }

    /// Stops taking messages and lets every worker finish its queue until the deadline.
    async fn stop(&self, ctx: &StopContext) -> anyhow::Result<()> {
        self.running.store(false, Ordering::Release);
        self.stopped.store(true, Ordering::Release);
        if let Ok(mut slot) = self.lifecycle.lock() {
            slot.take();
        }
        // Dropping the senders ends each worker once its queue is empty.
        if let Ok(mut topics) = self.topics.write() {
            topics.clear();
        }
        let workers = std::mem::take(
            &mut *self
                .workers
                .lock()
                .map_err(|_| anyhow::anyhow!("broker lock poisoned"))?,
        );
        let mut unfinished = 0;
        for mut worker in workers {
            if tokio::time::timeout_at(ctx.deadline, &mut worker)
                .await
                .is_err()
            {
                worker.abort();
                unfinished += 1;
            }
        }
        if unfinished > 0 {
            anyhow::bail!(
                "{unfinished} subscribers still had queued messages at the deadline; they were dropped"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use crate::PoisonMessage;

    /// Records what it receives; fails the first `fail_first` deliveries (or every one that
    /// is not JSON, as a poison message).
    struct Recorder {
        seen: Mutex<Vec<String>>,
        fail_first: Mutex<usize>,
    }

    impl Recorder {
        fn new(fail_first: usize) -> Arc<Self> {
            Arc::new(Recorder {
                seen: Mutex::default(),
                fail_first: Mutex::new(fail_first),
            })
        }

        fn seen(&self) -> Vec<String> {
            self.seen.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl MessageHandler for Recorder {
        async fn handle(&self, topic: &str, payload: Bytes) -> anyhow::Result<()> {
            let text = String::from_utf8_lossy(&payload).into_owned();
            self.seen.lock().unwrap().push(format!("{topic}:{text}"));
            if serde_json::from_slice::<serde_json::Value>(&payload).is_err() {
                return Err(PoisonMessage("not JSON".into()).into());
            }
            let mut fail = self.fail_first.lock().unwrap();
            if *fail > 0 {
                *fail -= 1;
                anyhow::bail!("handler refused")
            }
            Ok(())
        }
    }

    fn broker(yaml: serde_json::Value) -> Arc<MemoryBroker> {
        let config: MemoryBrokerConfig = serde_json::from_value(yaml).unwrap();
        MemoryBroker::new("b", &config, 1).unwrap()
    }

    async fn started(broker: &Arc<MemoryBroker>) {
        let app = Arc::new(wf_engine::AppState::new(None, Arc::from(Vec::new())));
        broker
            .start(&StartContext { app, serving: true })
            .await
            .unwrap();
    }

    /// Polls until `f` holds; bounded, so a broken broker fails the test instead of hanging.
    async fn eventually(what: &str, f: impl Fn() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn sync_delivery_runs_every_subscriber_in_order_and_counts_failures() {
        let broker = broker(serde_json::json!({"delivery": "sync"}));
        let ok = Recorder::new(0);
        let failing = Recorder::new(usize::MAX);
        broker
            .subscribe("orders", "failing", failing.clone())
            .unwrap();
        broker.subscribe("orders", "ok", ok.clone()).unwrap();

        let delivery = broker
            .publish("orders", Bytes::from_static(b"{\"id\":1}"))
            .await
            .unwrap();
        assert_eq!(
            (delivery.delivered, delivery.failed, delivery.queued),
            (1, 1, 0)
        );
        assert_eq!(ok.seen(), ["orders:{\"id\":1}"]);
        assert_eq!(failing.seen(), ["orders:{\"id\":1}"]);

        let none = broker
            .publish("nobody-listens", Bytes::new())
            .await
            .unwrap();
        assert_eq!(none, Delivery::default());
        assert_eq!(
            broker.subscriptions(),
            [("orders", "failing"), ("orders", "ok")].map(|(t, s)| (t.to_string(), s.to_string()))
        );
    }

    #[tokio::test]
    async fn async_delivery_keeps_each_subscribers_order_and_redelivers_failures() {
        let broker = broker(serde_json::json!({"maxDeliveries": 3, "retryBackoff": "1ms"}));
        let flaky = Recorder::new(2);
        broker.subscribe("orders", "flaky", flaky.clone()).unwrap();
        // Published before start: queued, handled once the broker starts.
        for i in 0..5 {
            let delivery = broker
                .publish("orders", Bytes::from(format!("{i}")))
                .await
                .unwrap();
            assert_eq!(delivery.queued, 1);
        }
        started(&broker).await;
        eventually("five messages and two redeliveries", || {
            flaky.seen().len() == 7
        })
        .await;
        // The first message failed twice and was redelivered before the second one ran.
        assert_eq!(
            flaky.seen(),
            ["0", "0", "0", "1", "2", "3", "4"].map(|m| format!("orders:{m}"))
        );
        broker
            .stop(&StopContext {
                deadline: tokio::time::Instant::now() + std::time::Duration::from_secs(5),
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn failed_and_poison_messages_go_to_the_dead_letter_topic() {
        let broker = broker(serde_json::json!({
            "maxDeliveries": 2, "retryBackoff": "1ms", "deadLetterTopic": "dead"
        }));
        let failing = Recorder::new(usize::MAX);
        let dead = Recorder::new(0);
        broker
            .subscribe("orders", "failing", failing.clone())
            .unwrap();
        broker
            .subscribe("dead", "dead-letters", dead.clone())
            .unwrap();
        started(&broker).await;
        broker
            .publish("orders", Bytes::from_static(b"{\"id\":7}"))
            .await
            .unwrap();
        broker
            .publish("orders", Bytes::from_static(b"not json"))
            .await
            .unwrap();
        eventually("two dead letters", || dead.seen().len() == 2).await;
        // The JSON message was tried twice; the poison one once.
        assert_eq!(failing.seen().len(), 3);
        let letters: Vec<serde_json::Value> = dead
            .seen()
            .iter()
            .map(|s| serde_json::from_str(s.strip_prefix("dead:").unwrap()).unwrap())
            .collect();
        assert_eq!(letters[0]["payload"], "{\"id\":7}");
        assert_eq!(letters[0]["attempts"], 2);
        assert_eq!(letters[0]["error"], "handler refused");
        assert_eq!(letters[1]["payload"], "not json");
        assert_eq!(letters[1]["attempts"], 1);
        assert_eq!(letters[1]["subscriber"], "failing");
    }

    #[tokio::test]
    async fn a_full_queue_makes_publish_wait_then_fail_without_partial_delivery() {
        let broker = broker(serde_json::json!({"maxQueueSize": 1, "deliveryTimeout": "50ms"}));
        let a = Recorder::new(0);
        let b = Recorder::new(0);
        broker.subscribe("t", "a", a.clone()).unwrap();
        broker.subscribe("t", "b", b.clone()).unwrap();
        // Not started: nothing drains the queues.
        broker.publish("t", Bytes::from_static(b"1")).await.unwrap();
        let error = broker
            .publish("t", Bytes::from_static(b"2"))
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("maxQueueSize"), "{error}");
        started(&broker).await;
        eventually("the first message", || {
            a.seen().len() == 1 && b.seen().len() == 1
        })
        .await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        // The refused message reached neither subscriber.
        assert_eq!(a.seen(), ["t:1"]);
        assert_eq!(b.seen(), ["t:1"]);
    }
}
