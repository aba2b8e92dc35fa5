//! Publishes the engine's run lifecycle events (`workflow.started`, `step.completed`, ... — see
//! [`wf_engine::events`]) on a broker, so pipelines can subscribe to them with an `event`
//! trigger. Events are queued and published in order by one task, so a run never waits for
//! the broker; when the queue is full (a broker far behind), events are dropped and counted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use wf_engine::AppState;
use wf_engine::events::RunEventSink;

use crate::MessageBroker;

/// Events waiting to be published before new ones are dropped.
const QUEUE: usize = 4096;

/// The sink a broker installs on its app while it runs. Dropping it (the broker stops) closes
/// the sink: it wants no more events, and the publishing task ends when the app lets go of it.
pub struct LifecycleForwarder {
    sink: Arc<Sink>,
}

impl Drop for LifecycleForwarder {
    fn drop(&mut self) {
        self.sink.closed.store(true, Ordering::Release);
    }
}

struct Sink {
    broker: Weak<dyn MessageBroker>,
    queue: mpsc::Sender<(&'static str, Bytes)>,
    dropped: AtomicU64,
    closed: AtomicBool,
}

impl LifecycleForwarder {
    /// Installs `broker` as `app`'s lifecycle event sink (unless a sink of a higher priority
    /// is there) and starts the task that publishes the events.
    pub fn install(app: &AppState, priority: u8, broker: Weak<dyn MessageBroker>) -> Self {
        let (queue, mut events) = mpsc::channel::<(&'static str, Bytes)>(QUEUE);
        let sink = Arc::new(Sink {
            broker: broker.clone(),
            queue,
            dropped: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        });
        app.run_events().install(priority, sink.clone());
        tokio::spawn(async move {
            while let Some((topic, payload)) = events.recv().await {
                let Some(broker) = broker.upgrade() else {
                    return;
                };
                if let Err(e) = broker.publish(topic, payload).await {
                    tracing::warn!(%topic, error = %format!("{e:#}"), "a lifecycle event could not be published");
                }
            }
        });
        LifecycleForwarder { sink }
    }
}

impl RunEventSink for Sink {
    fn wants(&self, topic: &str) -> bool {
        !self.closed.load(Ordering::Acquire)
            && self
                .broker
                .upgrade()
                .is_some_and(|broker| broker.wants_run_event(topic))
    }

    fn emit(&self, topic: &'static str, mut event: Map<String, Value>) {
        event.insert("type".into(), Value::String(topic.to_string()));
        event.insert(
            "timestamp".into(),
            Value::String(wf_engine::wf_config::time::rfc3339_now()),
        );
        let payload = Bytes::from(Value::Object(event).to_string());
        if self.queue.try_send((topic, payload)).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(%topic, dropped, "lifecycle events are published slower than runs produce them; some were dropped");
            }
        }
    }
}
