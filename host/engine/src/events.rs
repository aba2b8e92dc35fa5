//! Run lifecycle events: `workflow.started|completed|failed` and `step.started|completed|failed`,
//! each with the run id and timings. The engine only produces them; a message broker that
//! acts as the app's event bus installs itself as the [`RunEventSink`] when it starts and
//! publishes them as messages on those topics, so pipelines can subscribe to them.
//!
//! Nearly free when no sink is installed or the sink wants none of the topics (an uncontended
//! read lock per event, no event built), so pipelines of apps without listeners keep their speed.

use std::sync::{Arc, RwLock};

use serde_json::{Map, Value};

/// The six lifecycle topics, in the order a successful one-step run produces them.
pub const WORKFLOW_STARTED: &str = "workflow.started";
pub const STEP_STARTED: &str = "step.started";
pub const STEP_COMPLETED: &str = "step.completed";
pub const STEP_FAILED: &str = "step.failed";
pub const WORKFLOW_COMPLETED: &str = "workflow.completed";
pub const WORKFLOW_FAILED: &str = "workflow.failed";

pub const LIFECYCLE_TOPICS: [&str; 6] = [
    WORKFLOW_STARTED,
    WORKFLOW_COMPLETED,
    WORKFLOW_FAILED,
    STEP_STARTED,
    STEP_COMPLETED,
    STEP_FAILED,
];

/// Where lifecycle events go. `emit` must not block the run: implementations queue the event
/// (and drop it with a warning when their queue is full) rather than wait.
pub trait RunEventSink: Send + Sync {
    /// Whether anything listens to `topic`; events nobody wants are never built.
    fn wants(&self, topic: &str) -> bool;
    fn emit(&self, topic: &'static str, event: Map<String, Value>);
}

/// Marks a run that must not produce lifecycle events: runs started *by* a lifecycle event,
/// which would otherwise feed themselves forever. Triggers put it in the run's extensions.
#[derive(Clone, Copy, Debug)]
pub struct QuietRun;

/// The app's current sink, chosen by priority: an event-bus module outranks a plain broker.
#[derive(Default)]
pub struct RunEvents {
    sink: RwLock<Option<(u8, Arc<dyn RunEventSink>)>>,
}

impl std::fmt::Debug for RunEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let installed = self.sink.read().map(|s| s.is_some()).unwrap_or(false);
        f.debug_struct("RunEvents")
            .field("installed", &installed)
            .finish()
    }
}

impl RunEvents {
    /// Installs `sink` unless one of a higher priority is already there.
    pub fn install(&self, priority: u8, sink: Arc<dyn RunEventSink>) {
        if let Ok(mut slot) = self.sink.write()
            && slot.as_ref().is_none_or(|(p, _)| *p <= priority)
        {
            *slot = Some((priority, sink));
        }
    }

    /// Removes every sink (at app stop: sinks hold brokers, which hold the handlers that hold
    /// pipelines, which hold this — clearing it breaks the cycle).
    pub fn clear(&self) {
        if let Ok(mut slot) = self.sink.write() {
            *slot = None;
        }
    }

    /// The sink, when one is installed and wants `topic`.
    pub fn sink_for(&self, topic: &str) -> Option<Arc<dyn RunEventSink>> {
        let slot = self.sink.read().ok()?;
        let (_, sink) = slot.as_ref()?;
        sink.wants(topic).then(|| sink.clone())
    }

    /// Emits the event `build` makes, when anything wants `topic`.
    pub fn emit_with(&self, topic: &'static str, build: impl FnOnce() -> Map<String, Value>) {
        if let Some(sink) = self.sink_for(topic) {
            sink.emit(topic, build());
        }
    }
}
