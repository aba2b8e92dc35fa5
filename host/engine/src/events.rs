//! Run lifecycle events: `workflow.started|completed|failed` and `step.started|completed|failed`,
//! each with the run id and timings. The engine only produces them; a message broker that
//! acts as the app's event bus installs itself as the [`RunEventSink`] when it starts and
//! publishes them as messages on those topics, so pipelines can subscribe to them.
//!
//! Nearly free when no sink is installed (an atomic load per event) or no sink wants the topic
//! (a read lock, no event built), so pipelines of apps without listeners keep their speed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

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

/// Told of every finished run and step with its timing, quiet runs included — for metrics.
/// Called on the run's task: implementations must be quick and never block.
pub trait RunObserver: Send + Sync {
    fn run_started(&self, _pipeline: &str) {}
    /// A started run that will not finish: its future was dropped (a timeout, a client gone).
    fn run_abandoned(&self, _pipeline: &str) {}
    fn run_finished(&self, pipeline: &str, ok: bool, elapsed: Duration);
    fn step_finished(&self, pipeline: &str, step_type: &str, ok: bool, elapsed: Duration);
    /// The run journal wrote a batch of `records` in `elapsed` (`ok`: committed); `queued`
    /// records wait behind it.
    fn journal_batch(&self, _records: usize, _queued: usize, _elapsed: Duration, _ok: bool) {}
}

/// Marks a run that must not produce lifecycle events: runs started *by* a lifecycle event,
/// which would otherwise feed themselves forever. Triggers put it in the run's extensions.
#[derive(Clone, Copy, Debug)]
pub struct QuietRun;

/// The app's sinks, highest priority first (an event bus outranks a plain broker; among
/// equals, the first installed). Each event goes to the first sink that wants its topic, so a
/// second broker nobody listens on never hides the one with listeners.
#[derive(Default)]
pub struct RunEvents {
    sinks: RwLock<Vec<(u8, Arc<dyn RunEventSink>)>>,
    /// Whether any sink is installed: runs of apps without one pay a single atomic load per
    /// event instead of a lock.
    any: AtomicBool,
    observers: RwLock<Vec<Arc<dyn RunObserver>>>,
    /// Whether any observer is installed (the same fast path as `any`).
    observed: AtomicBool,
    tracer: RwLock<Option<Arc<dyn crate::trace::RunTracer>>>,
    traced: AtomicBool,
}

impl std::fmt::Debug for RunEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let installed = self.sinks.read().map(|s| s.len()).unwrap_or(0);
        f.debug_struct("RunEvents")
            .field("sinks", &installed)
            .finish()
    }
}

impl RunEvents {
    pub fn install(&self, priority: u8, sink: Arc<dyn RunEventSink>) {
        if let Ok(mut sinks) = self.sinks.write() {
            let at = sinks.partition_point(|(p, _)| *p >= priority);
            sinks.insert(at, (priority, sink));
            self.any.store(true, Ordering::Release);
        }
    }

    /// Removes every sink and observer (at app stop: sinks hold brokers, which hold the
    /// handlers that hold pipelines, which hold this — clearing it breaks the cycle).
    pub fn clear(&self) {
        if let Ok(mut sinks) = self.sinks.write() {
            sinks.clear();
            self.any.store(false, Ordering::Release);
        }
        if let Ok(mut observers) = self.observers.write() {
            observers.clear();
            self.observed.store(false, Ordering::Release);
        }
        if let Ok(mut tracer) = self.tracer.write() {
            *tracer = None;
            self.traced.store(false, Ordering::Release);
        }
    }

    /// Traces every run from now on (one tracer per app: the last set wins).
    pub fn set_tracer(&self, tracer: Arc<dyn crate::trace::RunTracer>) {
        if let Ok(mut slot) = self.tracer.write() {
            *slot = Some(tracer);
            self.traced.store(true, Ordering::Release);
        }
    }

    /// Whether a tracer is installed (one atomic load: untraced apps pay nothing more).
    pub fn is_traced(&self) -> bool {
        self.traced.load(Ordering::Acquire)
    }

    pub fn tracer(&self) -> Option<Arc<dyn crate::trace::RunTracer>> {
        if !self.is_traced() {
            return None;
        }
        self.tracer.read().ok()?.clone()
    }

    pub fn add_observer(&self, observer: Arc<dyn RunObserver>) {
        if let Ok(mut observers) = self.observers.write() {
            observers.push(observer);
            self.observed.store(true, Ordering::Release);
        }
    }

    pub fn is_observed(&self) -> bool {
        self.observed.load(Ordering::Acquire)
    }

    /// Calls `tell` with each observer.
    pub fn observe(&self, tell: impl Fn(&dyn RunObserver)) {
        if !self.is_observed() {
            return;
        }
        if let Ok(observers) = self.observers.read() {
            for observer in observers.iter() {
                tell(observer.as_ref());
            }
        }
    }

    /// The first sink that wants `topic`.
    pub fn sink_for(&self, topic: &str) -> Option<Arc<dyn RunEventSink>> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let sinks = self.sinks.read().ok()?;
        sinks
            .iter()
            .find(|(_, sink)| sink.wants(topic))
            .map(|(_, sink)| sink.clone())
    }

    /// Emits the event `build` makes, when anything wants `topic`.
    pub fn emit_with(&self, topic: &'static str, build: impl FnOnce() -> Map<String, Value>) {
        if let Some(sink) = self.sink_for(topic) {
            sink.emit(topic, build());
        }
    }
}
