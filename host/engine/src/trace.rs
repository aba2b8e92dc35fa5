//! Tracing runs and steps with W3C trace context.
//!
//! An app with a tracer (`observability.otel`) gets a span per run and one per step. A run
//! continues the trace of its caller: the step that started it (a sub-pipeline), or the
//! request it serves (the router scopes each request under its `traceparent`, see
//! [`scope_remote`]). While a step runs,
//! [`current`] is its span, so outbound calls carry it on as their `traceparent`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// One position in a trace: `traceparent` (version 00) as a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// Whether the trace is recorded (the `sampled` flag).
    pub sampled: bool,
}

impl TraceContext {
    /// A new trace.
    pub fn root(sampled: bool) -> Self {
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&next_u64().to_be_bytes());
        trace_id[8..].copy_from_slice(&next_u64().to_be_bytes());
        TraceContext {
            trace_id,
            span_id: new_span_id(),
            sampled,
        }
    }

    /// A new span in the same trace.
    pub fn child(&self) -> Self {
        TraceContext {
            span_id: new_span_id(),
            ..*self
        }
    }

    /// Parses a `traceparent` header. `None` for anything the W3C spec says to ignore: another
    /// length or version 00 with extra fields, version `ff`, all-zero ids, non-hex digits.
    pub fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let mut parts = header.split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let extra = parts.next();
        if version.len() != 2 || version.eq_ignore_ascii_case("ff") {
            return None;
        }
        if version == "00" && extra.is_some() {
            return None;
        }
        let trace_id: [u8; 16] = decode_hex(trace)?;
        let span_id: [u8; 8] = decode_hex(span)?;
        let [flags]: [u8; 1] = decode_hex(flags)?;
        u8::from_str_radix(version, 16).ok()?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceContext {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The `traceparent` header value.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id_hex(),
            self.span_id_hex(),
            u8::from(self.sampled)
        )
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }
}

fn new_span_id() -> [u8; 8] {
    loop {
        let id = next_u64();
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

thread_local! {
    /// SplitMix64 state, seeded once per thread from the OS (through a v4 UUID): ids are
    /// random and unique without a system call per span.
    static RNG: std::cell::Cell<u64> = std::cell::Cell::new({
        let bytes = *uuid::Uuid::new_v4().as_bytes();
        u64::from_le_bytes(bytes[..8].try_into().unwrap_or([7; 8]))
    });
}

fn next_u64() -> u64 {
    RNG.with(|state| {
        let mut z = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// Lower-case hex, as trace context writes ids.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    // Lower-case only, as the spec requires.
    if text.len() != N * 2 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

tokio::task_local! {
    /// The current span, and whether it is a caller's outside the process.
    static CURRENT: (TraceContext, bool);
}

/// The span of the step running on this task (or the caller's, while a request is routed),
/// for outbound calls to carry on.
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(|c| c.0).ok()
}

/// [`current`], and whether it belongs to a caller outside the process (a run under it is the
/// server side of that call).
pub fn current_parent() -> Option<(TraceContext, bool)> {
    CURRENT.try_with(|c| *c).ok()
}

/// Runs `future` with `context` as [`current`].
pub async fn scope<F: std::future::Future>(context: TraceContext, future: F) -> F::Output {
    CURRENT.scope((context, false), future).await
}

/// Runs `future` under `parent` as [`current_parent`] returned it (a run moved to a task of
/// its own keeps its caller's trace).
pub async fn scope_parent<F: std::future::Future>(
    parent: Option<(TraceContext, bool)>,
    future: F,
) -> F::Output {
    match parent {
        Some(parent) => CURRENT.scope(parent, future).await,
        None => future.await,
    }
}

/// Runs `future` under a caller's context (an HTTP request's `traceparent`): every run it
/// starts, by whatever route or handler, continues the caller's trace.
pub async fn scope_remote<F: std::future::Future>(context: TraceContext, future: F) -> F::Output {
    CURRENT.scope((context, true), future).await
}

/// Records traces of runs (see [`crate::events::RunEvents::set_tracer`]).
pub trait RunTracer: Send + Sync {
    /// A run of `pipeline` begins, under `parent` when it continues a trace.
    fn run_started(
        &self,
        pipeline: &str,
        run_id: &str,
        parent: Option<TraceContext>,
        remote: bool,
    ) -> Arc<dyn RunTrace>;
}

/// One traced run. Dropped without [`RunTrace::finish`], the run was abandoned.
pub trait RunTrace: Send + Sync {
    /// The run's own span.
    fn context(&self) -> TraceContext;
    /// A step ran as `span` (a child of the run's span).
    fn step(
        &self,
        span: TraceContext,
        step: &str,
        step_type: &str,
        started: SystemTime,
        elapsed: Duration,
        error: Option<&str>,
    );
    fn finish(&self, error: Option<&str>);
}

/// The traced run a step belongs to, in the run's extensions.
#[derive(Clone)]
pub struct ActiveTrace(pub Arc<dyn RunTrace>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_what_the_spec_ignores() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceContext::parse(header).unwrap();
        assert!(parsed.sampled);
        assert_eq!(parsed.traceparent(), header);
        assert_eq!(parsed.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(
            !TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
                .unwrap()
                .sampled
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "{bad}");
        }
        // A later version may add fields; the first four are still read.
        assert!(
            TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x")
                .is_some()
        );
    }

    #[test]
    fn children_share_the_trace_with_new_span_ids() {
        let root = TraceContext::root(true);
        let child = root.child();
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
    }

    #[tokio::test]
    async fn current_is_set_only_inside_a_scope() {
        assert!(current().is_none());
        let context = TraceContext::root(true);
        assert_eq!(scope(context, async { current() }).await, Some(context));
    }
}
