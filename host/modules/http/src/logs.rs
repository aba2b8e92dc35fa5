//! The process's recent log entries, for `log.collector`: a tracing layer (installed by
//! `wf-host` next to its console output) copies events into a bounded in-memory ring while at
//! least one collector is running. Without one its filter asks for no level at all, so it adds
//! nothing to the cost of logging.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use serde::Serialize;
use serde_json::{Map, Value, json};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;

/// One captured event.
#[derive(Clone, Debug, Serialize)]
pub struct LogEntry {
    /// RFC 3339, UTC.
    pub time: String,
    /// Unix milliseconds, for retention.
    #[serde(skip)]
    pub unix_ms: u64,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub level: &'static str,
    /// The Rust module that logged it, e.g. `wf_http::server`.
    pub target: String,
    pub message: String,
    /// The event's other fields (`server`, `pipeline`, `error`, ...).
    pub fields: Map<String, Value>,
}

struct Ring {
    entries: VecDeque<LogEntry>,
    capacity: usize,
    /// The level of each running collector.
    collectors: Vec<usize>,
}

static RING: Mutex<Ring> = Mutex::new(Ring {
    entries: VecDeque::new(),
    capacity: 0,
    collectors: Vec::new(),
});

/// The most verbose level any running collector wants (as [`level_rank`]); 0 = none running.
static WANTED: AtomicUsize = AtomicUsize::new(0);

/// 5 = error … 1 = trace; higher is more severe.
pub fn level_rank(level: &Level) -> usize {
    match *level {
        Level::ERROR => 5,
        Level::WARN => 4,
        Level::INFO => 3,
        Level::DEBUG => 2,
        Level::TRACE => 1,
    }
}

/// `info` → its rank; `None` for an unknown name.
pub fn parse_level(name: &str) -> Option<usize> {
    match name.to_ascii_lowercase().as_str() {
        "error" => Some(5),
        "warn" | "warning" => Some(4),
        "info" => Some(3),
        "debug" => Some(2),
        "trace" => Some(1),
        _ => None,
    }
}

fn level_name(rank: usize) -> &'static str {
    match rank {
        5 => "error",
        4 => "warn",
        3 => "info",
        2 => "debug",
        _ => "trace",
    }
}

/// A running collector's claim on the ring: capture starts with the first and stops when the
/// last is dropped.
pub struct Capture {
    rank: usize,
}

impl Capture {
    /// Captures events of `min_rank` and above, keeping at least `capacity` entries.
    pub fn start(min_rank: usize, capacity: usize) -> Capture {
        let mut ring = RING.lock().unwrap_or_else(PoisonError::into_inner);
        ring.capacity = ring.capacity.max(capacity);
        ring.collectors.push(min_rank);
        set_wanted(&ring.collectors);
        drop(ring);
        // Every call site asks again, now that the wanted level changed.
        tracing::callsite::rebuild_interest_cache();
        Capture { rank: min_rank }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let mut ring = RING.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = ring.collectors.iter().position(|r| *r == self.rank) {
            ring.collectors.swap_remove(i);
        }
        set_wanted(&ring.collectors);
        if ring.collectors.is_empty() {
            ring.entries.clear();
            ring.capacity = 0;
        }
        drop(ring);
        tracing::callsite::rebuild_interest_cache();
    }
}

/// Entries of `min_rank` and above, newer than `since_ms`, whose target or one of whose
/// text fields contains `module`, newest last, at most `limit`.
pub fn recent(min_rank: usize, module: Option<&str>, since_ms: u64, limit: usize) -> Vec<LogEntry> {
    let ring = RING.lock().unwrap_or_else(PoisonError::into_inner);
    let mut out: Vec<LogEntry> = ring
        .entries
        .iter()
        .rev()
        .filter(|e| parse_level(e.level).unwrap_or(0) >= min_rank && e.unix_ms >= since_ms)
        .filter(|e| {
            module.is_none_or(|m| {
                e.target.contains(m)
                    || e.fields
                        .values()
                        .any(|v| v.as_str().is_some_and(|s| s.contains(m)))
            })
        })
        .take(limit)
        .cloned()
        .collect();
    out.reverse();
    out
}

/// The layer `wf-host` installs, with its own filter: while no collector runs it asks for
/// nothing (`LevelFilter::OFF`), so `debug!` and `trace!` call sites elsewhere stay disabled
/// at their cheapest, and the console's level is unaffected.
pub fn layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    LogTap.with_filter(Wanted)
}

/// The filter of [`layer`]: the level the running collectors want, or nothing.
pub struct Wanted;

fn level_filter(rank: usize) -> LevelFilter {
    match rank {
        0 => LevelFilter::OFF,
        5 => LevelFilter::ERROR,
        4 => LevelFilter::WARN,
        3 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

impl<S> Filter<S> for Wanted {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        let wanted = WANTED.load(Ordering::Relaxed);
        wanted != 0 && meta.is_event() && level_rank(meta.level()) >= wanted
    }

    // Collectors come and go: decided per event, and the caches are rebuilt when they do.
    fn callsite_enabled(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(level_filter(WANTED.load(Ordering::Relaxed)))
    }
}

/// Sets the wanted level from the running collectors.
fn set_wanted(collectors: &[usize]) {
    WANTED.store(
        collectors.iter().copied().min().unwrap_or(0),
        Ordering::Release,
    );
}

pub struct LogTap;

impl<S: Subscriber> Layer<S> for LogTap {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        // The filter (`Wanted`) admitted it.
        let rank = level_rank(event.metadata().level());
        let mut visitor = Fields::default();
        event.record(&mut visitor);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let entry = LogEntry {
            time: wf_engine::wf_config::time::rfc3339_now(),
            unix_ms: u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
            level: level_name(rank),
            target: event.metadata().target().to_string(),
            message: visitor.message,
            fields: visitor.fields,
        };
        let mut ring = RING.lock().unwrap_or_else(PoisonError::into_inner);
        if ring.capacity == 0 {
            return;
        }
        while ring.entries.len() >= ring.capacity {
            ring.entries.pop_front();
        }
        ring.entries.push_back(entry);
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    fields: Map<String, Value>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        let text = wf_engine::redact::redact(&text).into_owned();
        if field.name() == "message" {
            self.message = text;
        } else {
            self.fields.insert(field.name().to_string(), json!(text));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let value = wf_engine::redact::redact(value);
        if field.name() == "message" {
            self.message = value.into_owned();
        } else {
            self.fields.insert(field.name().to_string(), json!(value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.insert(field.name().to_string(), json!(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.insert(field.name().to_string(), json!(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.insert(field.name().to_string(), json!(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.insert(field.name().to_string(), json!(value));
    }
}
