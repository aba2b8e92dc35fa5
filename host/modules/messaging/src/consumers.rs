//! What the brokers on external servers (NATS, Kafka) share: their subscriptions, the consumer
//! tasks started for them, the stop signal those tasks watch, and the lifecycle-event forwarder.

use std::sync::{Arc, Mutex, Weak};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use wf_engine::AppState;

use crate::lifecycle::LifecycleForwarder;
use crate::{MessageBroker, MessageHandler};

/// One subscription of an external broker.
pub struct Subscription {
    pub topic: String,
    pub subscriber: String,
    pub handler: Arc<dyn MessageHandler>,
}

#[derive(Default)]
pub struct Consumers {
    subscriptions: Mutex<Vec<Arc<Subscription>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    stop: Mutex<Option<watch::Sender<bool>>>,
    lifecycle: Mutex<Option<LifecycleForwarder>>,
    /// Set when the broker started to consume (not offline); later subscriptions then start
    /// consuming at once.
    consuming: std::sync::atomic::AtomicBool,
}

impl Consumers {
    pub fn all(&self) -> Vec<Arc<Subscription>> {
        self.subscriptions
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// `(topic, subscriber)` pairs, in subscription order.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.all()
            .iter()
            .map(|s| (s.topic.clone(), s.subscriber.clone()))
            .collect()
    }

    pub fn set_consuming(&self, consuming: bool) {
        self.consuming
            .store(consuming, std::sync::atomic::Ordering::Release);
    }

    pub fn consuming(&self) -> bool {
        self.consuming.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A receiver that turns true when the broker stops; consumer tasks end on it.
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        let mut slot = self.stop.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert_with(|| watch::channel(false).0)
            .subscribe()
    }

    pub fn track(&self, task: JoinHandle<()>) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(task);
        }
    }

    /// Records a subscription. The broker consumes it from its start ([`Self::start_all`]);
    /// one made while the broker already consumes (a trigger component installed at run time)
    /// starts with `consume` in the background, and a failure is logged.
    #[allow(clippy::too_many_arguments)]
    pub fn subscribe<B, F, Fut>(
        self: &Arc<Self>,
        broker: Weak<B>,
        broker_name: &str,
        topic: &str,
        subscriber: &str,
        handler: Arc<dyn MessageHandler>,
        consume: F,
    ) where
        B: Send + Sync + 'static,
        F: FnOnce(Arc<B>, Arc<Subscription>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = anyhow::Result<JoinHandle<()>>> + Send,
    {
        let subscription = Arc::new(Subscription {
            topic: topic.to_string(),
            subscriber: subscriber.to_string(),
            handler,
        });
        if let Ok(mut all) = self.subscriptions.lock() {
            all.push(subscription.clone());
        }
        if !self.consuming() {
            return;
        }
        let consumers = Arc::downgrade(self);
        let name = broker_name.to_string();
        tokio::spawn(async move {
            let (Some(broker), Some(consumers)) = (broker.upgrade(), consumers.upgrade()) else {
                return;
            };
            let topic = subscription.topic.clone();
            match consume(broker, subscription).await {
                Ok(task) => consumers.track(task),
                Err(e) => {
                    tracing::error!(broker = %name, %topic, error = %format!("{e:#}"), "subscribing failed")
                }
            }
        });
    }

    /// At the broker's start: starts a consumer per subscription with `consume` — none when
    /// `serving` is false (offline: the app's consumers keep their work) — and stops those
    /// already started when one fails (the engine does not stop a module whose start failed).
    pub async fn start_all<F, Fut>(&self, serving: bool, mut consume: F) -> anyhow::Result<()>
    where
        F: FnMut(Arc<Subscription>) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<JoinHandle<()>>>,
    {
        let subscriptions = if serving { self.all() } else { Vec::new() };
        for subscription in subscriptions {
            match consume(subscription).await {
                Ok(task) => self.track(task),
                Err(e) => {
                    self.stop(tokio::time::Instant::now()).await;
                    return Err(e);
                }
            }
        }
        self.set_consuming(serving);
        Ok(())
    }

    /// Publishes the app's lifecycle events on `broker` while it runs.
    pub fn forward_lifecycle(&self, app: &AppState, broker: Weak<dyn MessageBroker>) {
        let forwarder = LifecycleForwarder::install(app, 0, broker);
        if let Ok(mut slot) = self.lifecycle.lock() {
            *slot = Some(forwarder);
        }
    }

    /// Signals every consumer to finish the message in hand, and waits for them until
    /// `deadline` (aborting the rest).
    pub async fn stop(&self, deadline: tokio::time::Instant) {
        if let Ok(slot) = self.stop.lock()
            && let Some(stop) = slot.as_ref()
        {
            let _ = stop.send(true);
        }
        self.set_consuming(false);
        if let Ok(mut slot) = self.lifecycle.lock() {
            slot.take();
        }
        // Subscriptions hold handlers, which hold pipelines, which hold this broker: let go.
        if let Ok(mut subscriptions) = self.subscriptions.lock() {
            subscriptions.clear();
        }
        let tasks = self
            .tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for mut task in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}
