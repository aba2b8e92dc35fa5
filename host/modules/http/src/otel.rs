//! `observability.otel`: a trace per pipeline run, with a span per step, exported over
//! OTLP/HTTP (JSON encoding) to a collector (the OpenTelemetry Collector, Jaeger, Tempo, …).
//!
//! Runs continue the W3C trace context of their caller (an HTTP request's `traceparent`, or the
//! step that started a sub-pipeline), and `step.http_call` sends each step's span on as its
//! `traceparent` (see [`wf_engine::trace`]).
//!
//! The exporter is ours, not the OpenTelemetry SDK: each app gets its own tracer (the SDK's is
//! process-global), spans are built from what the engine already measures, and OTLP's JSON
//! encoding is small and stable. Spans queue in a bounded channel (dropped, and counted, when
//! the collector cannot keep up: tracing never slows or fails a run) and go out in batches.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use schemars::JsonSchema;
use serde::Deserialize;
use tokio::sync::mpsc;
use wf_engine::trace::{RunTrace, RunTracer, TraceContext};
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType, StartContext,
    StopContext, async_trait,
};

/// Configuration of `observability.otel`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtelConfig {
    /// The collector's OTLP/HTTP base address; spans go to `{endpoint}/v1/traces`.
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` from the environment, else `http://localhost:4318`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `service.name` of the spans; `OTEL_SERVICE_NAME`, else the app's `name`, else `wf`.
    #[serde(default, rename = "serviceName")]
    pub service_name: Option<String>,
    /// Headers sent with every export, e.g. an API key for a hosted collector (use
    /// `${ENV_VAR}` or `${secret:…}`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The share of new traces recorded, from 0 to 1. A run that continues a caller's trace
    /// follows the caller's `sampled` flag instead.
    #[serde(default = "default_ratio", rename = "sampleRatio")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub sample_ratio: f64,
    /// Spans per export request.
    #[serde(default = "default_batch", rename = "batchSize")]
    #[schemars(range(min = 1, max = 10000))]
    pub batch_size: usize,
    /// Spans waiting for export at most; more are dropped (and counted in the log).
    #[serde(default = "default_queue", rename = "queueSize")]
    #[schemars(range(min = 1, max = 1000000))]
    pub queue_size: usize,
    /// How long a span may wait for a full batch, e.g. `5s`.
    #[serde(default = "default_interval", rename = "exportInterval")]
    pub export_interval: String,
    /// Time limit of one export request, e.g. `10s`.
    #[serde(default = "default_timeout")]
    pub timeout: String,
}

fn default_ratio() -> f64 {
    1.0
}
fn default_batch() -> usize {
    512
}
fn default_queue() -> usize {
    8192
}
fn default_interval() -> String {
    "5s".into()
}
fn default_timeout() -> String {
    "10s".into()
}

pub struct OtelType;

impl Described for OtelType {
    const NAME: &'static str = "observability.otel";
    const CATEGORY: Category = Category::Observability;
    const PLUGIN: &'static str = "observability";
    const DESCRIPTION: &'static str = "OpenTelemetry traces over OTLP/HTTP: a span per pipeline run and per step, continuing W3C trace context in and out.";
    type Config = OtelConfig;
}

fn duration(text: &str) -> Result<Duration, String> {
    wf_engine::wf_config::parse_duration(text).map_err(|e| e.to_string())
}

impl ModuleType for OtelType {
    fn check(config: &OtelConfig, _: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if let Some(endpoint) = &config.endpoint {
            issues.extend(ConfigIssue::unless_http_address("/endpoint", endpoint));
        }
        for (pointer, text) in [
            ("/exportInterval", &config.export_interval),
            ("/timeout", &config.timeout),
        ] {
            match duration(text) {
                Ok(d) if d.is_zero() => {
                    issues.push(ConfigIssue::new(pointer, "must be longer than zero"))
                }
                Ok(_) => {}
                Err(e) => issues.push(ConfigIssue::new(pointer, e)),
            }
        }
        issues.extend(crate::config_headers::check(&config.headers));
        issues
    }

    fn build(config: OtelConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Module>> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let endpoint = config
            .endpoint
            .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .unwrap_or_else(|| "http://localhost:4318".into());
        let url = reqwest::Url::parse(&format!("{}/v1/traces", endpoint.trim_end_matches('/')))?;
        let service = config
            .service_name
            .or_else(|| env("OTEL_SERVICE_NAME"))
            .or_else(|| ctx.app.name().map(str::to_string))
            .unwrap_or_else(|| "wf".into());
        let headers = crate::config_headers::to_map(&config.headers)?;
        let (sender, receiver) = mpsc::channel(config.queue_size);
        let tracer = Arc::new(OtelTracer {
            sample_ratio: config.sample_ratio,
            queue: Arc::new(SpanQueue {
                sender,
                dropped: AtomicU64::new(0),
            }),
        });
        ctx.app.run_events().set_tracer(tracer.clone());
        Ok(Arc::new(OtelModule {
            tracer,
            exporter: Mutex::new(Some(Exporter {
                url,
                headers,
                prefix: {
                    // Everything before the spans, the same in every request.
                    let mut prefix =
                        String::from("{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
                    push_attribute(&mut prefix, "service.name", &service);
                    prefix
                        .push_str("]},\"scopeSpans\":[{\"scope\":{\"name\":\"wf\",\"version\":\"");
                    prefix.push_str(env!("CARGO_PKG_VERSION"));
                    prefix.push_str("\"},\"spans\":[");
                    prefix
                },
                batch_size: config.batch_size,
                interval: duration(&config.export_interval).map_err(anyhow::Error::msg)?,
                client: crate::proxy::client()?,
                timeout: duration(&config.timeout).map_err(anyhow::Error::msg)?,
                receiver,
            })),
            task: Mutex::new(None),
        }))
    }
}

/// A finished span, ready for OTLP. Attributes are fields, encoded only when exported.
struct SpanRecord {
    context: TraceContext,
    parent: Option<[u8; 8]>,
    pipeline: Arc<str>,
    what: SpanOf,
    start: SystemTime,
    end: SystemTime,
    error: Option<String>,
}

enum SpanOf {
    /// A run; `remote` when it continues a caller outside the process (a `SERVER` span).
    Run {
        run_id: Arc<str>,
        remote: bool,
    },
    Step {
        step: String,
        step_type: String,
    },
}

/// Where finished spans wait for the exporter.
struct SpanQueue {
    sender: mpsc::Sender<SpanRecord>,
    dropped: AtomicU64,
}

impl SpanQueue {
    fn push(&self, span: SpanRecord) {
        if self.sender.try_send(span).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct OtelTracer {
    sample_ratio: f64,
    queue: Arc<SpanQueue>,
}

impl RunTracer for OtelTracer {
    fn run_started(
        &self,
        pipeline: &str,
        run_id: &str,
        parent: Option<TraceContext>,
        remote: bool,
    ) -> Arc<dyn RunTrace> {
        let context = match parent {
            Some(parent) => parent.child(),
            None => {
                let root = TraceContext::root(true);
                TraceContext {
                    sampled: sampled(&root.trace_id, self.sample_ratio),
                    ..root
                }
            }
        };
        Arc::new(OtelRun {
            queue: self.queue.clone(),
            context,
            parent: parent.map(|p| p.span_id),
            remote,
            pipeline: pipeline.into(),
            run_id: run_id.into(),
            start: SystemTime::now(),
            finished: AtomicBool::new(false),
        })
    }
}

/// Whether a new trace is recorded: decided by the trace id's last 7 bytes (56 random bits, as
/// W3C's random trace-id flag promises; a UUID's earlier bytes hold its version and variant), so
/// services deciding on the same id with the same ratio decide alike.
fn sampled(trace_id: &[u8; 16], ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let mut low = [0u8; 8];
    low[1..].copy_from_slice(&trace_id[9..]);
    // Compared as integers: 56 bits do not all fit a float's mantissa.
    let threshold = (ratio.max(0.0) * (1u64 << 56) as f64) as u64;
    u64::from_be_bytes(low) < threshold
}

struct OtelRun {
    queue: Arc<SpanQueue>,
    context: TraceContext,
    parent: Option<[u8; 8]>,
    /// Continues a caller outside the process: the run is the server side of its call.
    remote: bool,
    pipeline: Arc<str>,
    run_id: Arc<str>,
    start: SystemTime,
    finished: AtomicBool,
}

impl OtelRun {
    fn end(&self, error: Option<String>) {
        if self.finished.swap(true, Ordering::AcqRel) || !self.context.sampled {
            return;
        }
        self.queue.push(SpanRecord {
            context: self.context,
            parent: self.parent,
            pipeline: self.pipeline.clone(),
            what: SpanOf::Run {
                run_id: self.run_id.clone(),
                remote: self.remote,
            },
            start: self.start,
            end: SystemTime::now(),
            error,
        });
    }
}

impl RunTrace for OtelRun {
    fn context(&self) -> TraceContext {
        self.context
    }

    fn step(
        &self,
        span: TraceContext,
        step: &str,
        step_type: &str,
        started: SystemTime,
        elapsed: Duration,
        error: Option<&str>,
    ) {
        if !span.sampled {
            return;
        }
        self.queue.push(SpanRecord {
            context: span,
            parent: Some(self.context.span_id),
            pipeline: self.pipeline.clone(),
            what: SpanOf::Step {
                step: step.to_string(),
                step_type: step_type.to_string(),
            },
            start: started,
            end: started + elapsed,
            error: error.map(str::to_string),
        });
    }

    fn finish(&self, error: Option<&str>) {
        self.end(error.map(str::to_string));
    }
}

impl Drop for OtelRun {
    fn drop(&mut self) {
        // Its future was dropped: a timeout upstream, a client that went away.
        self.end(Some("abandoned before it finished".into()));
    }
}

fn unix_nanos(time: SystemTime) -> u128 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// A JSON string literal (quotes and escapes).
fn push_json_str(out: &mut String, text: &str) {
    out.push_str(&serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into()));
}

fn push_attribute(out: &mut String, key: &str, value: &str) {
    out.push_str("{\"key\":\"");
    out.push_str(key);
    out.push_str("\",\"value\":{\"stringValue\":");
    push_json_str(out, value);
    out.push_str("}}");
}

/// Appends one span in OTLP's JSON encoding (ids in hex, times as decimal strings), written
/// straight into the request body: at thousands of spans a second, building a JSON tree per
/// span would cost more than the runs it describes.
fn encode(span: &SpanRecord, out: &mut String) {
    use std::fmt::Write as _;
    let (name, kind) = match &span.what {
        SpanOf::Run { remote, .. } => (&*span.pipeline, if *remote { 2 } else { 1 }),
        SpanOf::Step { step, .. } => (step.as_str(), 1),
    };
    let _ = write!(
        out,
        "{{\"traceId\":\"{}\",\"spanId\":\"{}\",",
        span.context.trace_id_hex(),
        span.context.span_id_hex()
    );
    if let Some(parent) = span.parent {
        let _ = write!(
            out,
            "\"parentSpanId\":\"{}\",",
            wf_engine::trace::hex(&parent)
        );
    }
    out.push_str("\"name\":");
    push_json_str(out, name);
    let _ = write!(
        out,
        ",\"kind\":{kind},\"startTimeUnixNano\":\"{}\",\"endTimeUnixNano\":\"{}\",\"attributes\":[",
        unix_nanos(span.start),
        unix_nanos(span.end)
    );
    push_attribute(out, "wf.pipeline", &span.pipeline);
    match &span.what {
        SpanOf::Run { run_id, .. } => {
            out.push(',');
            push_attribute(out, "wf.run_id", run_id);
        }
        SpanOf::Step { step, step_type } => {
            out.push(',');
            push_attribute(out, "wf.step", step);
            out.push(',');
            push_attribute(out, "wf.step_type", step_type);
        }
    }
    out.push_str("],\"status\":");
    match &span.error {
        Some(message) => {
            out.push_str("{\"code\":2,\"message\":");
            push_json_str(out, message);
            out.push('}');
        }
        None => out.push_str("{\"code\":1}"),
    }
    out.push('}');
}

struct Exporter {
    url: reqwest::Url,
    headers: reqwest::header::HeaderMap,
    /// The request body up to the spans (resource and scope).
    prefix: String,
    batch_size: usize,
    interval: Duration,
    timeout: Duration,
    client: reqwest::Client,
    receiver: mpsc::Receiver<SpanRecord>,
}

/// The running exporter and how to tell it to finish.
struct ExportTask {
    shutdown: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<()>,
}

impl Exporter {
    /// Sends batches until `shutdown`, then what is still queued.
    async fn run(
        mut self,
        queue: Arc<SpanQueue>,
        mut shutdown: tokio::sync::oneshot::Receiver<()>,
    ) {
        let mut batch = Vec::with_capacity(self.batch_size);
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                span = self.receiver.recv() => match span {
                    Some(span) => {
                        batch.push(span);
                        if batch.len() >= self.batch_size {
                            self.send(&mut batch, &queue).await;
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => self.send(&mut batch, &queue).await,
                _ = &mut shutdown => break,
            }
        }
        while let Ok(span) = self.receiver.try_recv() {
            batch.push(span);
            if batch.len() >= self.batch_size {
                self.send(&mut batch, &queue).await;
            }
        }
        self.send(&mut batch, &queue).await;
    }

    async fn send(&self, batch: &mut Vec<SpanRecord>, queue: &SpanQueue) {
        let dropped = queue.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(dropped, "trace spans dropped: the export queue was full");
        }
        if batch.is_empty() {
            return;
        }
        let count = batch.len();
        let mut body = String::with_capacity(self.prefix.len() + count * 400);
        body.push_str(&self.prefix);
        for (i, span) in batch.drain(..).enumerate() {
            if i > 0 {
                body.push(',');
            }
            encode(&span, &mut body);
        }
        body.push_str("]}]}]}");
        let sent = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header("content-type", "application/json")
            .timeout(self.timeout)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => {
                tracing::warn!(spans = count, status = %response.status(), "the trace collector refused spans")
            }
            Err(e) => tracing::warn!(spans = count, error = %e, "cannot reach the trace collector"),
        }
    }
}

struct OtelModule {
    tracer: Arc<OtelTracer>,
    exporter: Mutex<Option<Exporter>>,
    task: Mutex<Option<ExportTask>>,
}

#[async_trait]
impl Module for OtelModule {
    async fn start(&self, _: &StartContext) -> anyhow::Result<()> {
        let exporter = self.exporter.lock().ok().and_then(|mut e| e.take());
        if let Some(exporter) = exporter {
            let (shutdown, stopped) = tokio::sync::oneshot::channel();
            let handle = tokio::spawn(exporter.run(self.tracer.queue.clone(), stopped));
            if let Ok(mut slot) = self.task.lock() {
                *slot = Some(ExportTask { shutdown, handle });
            }
        }
        Ok(())
    }

    /// Exports what is queued (within the stop deadline), so the last runs are not lost.
    async fn stop(&self, ctx: &StopContext) -> anyhow::Result<()> {
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(ExportTask { shutdown, handle }) = task {
            let _ = shutdown.send(());
            if tokio::time::timeout_at(ctx.deadline, handle).await.is_err() {
                tracing::warn!("trace export did not finish before the stop deadline");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn sampling_follows_the_ratio_over_random_ids() {
        let mut low = [0u8; 16];
        low[8] = 0x80; // a UUID's variant bits: not part of the decision
        assert!(sampled(&low, 0.25));
        let mut high = [0xff; 16];
        high[8] = 0x80;
        assert!(!sampled(&high, 0.99));
        assert!(sampled(&high, 1.0));
        assert!(!sampled(&low, 0.0));
        // Over many new traces the share recorded is the ratio (±11 standard deviations).
        let n = 10_000;
        let recorded = (0..n)
            .filter(|_| sampled(&TraceContext::root(true).trace_id, 0.25))
            .count();
        assert!((2000..=3000).contains(&recorded), "{recorded} of {n}");
    }

    #[test]
    fn spans_encode_as_otlp_json() {
        let context =
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let mut out = String::new();
        encode(
            &SpanRecord {
                context,
                parent: Some([1, 2, 3, 4, 5, 6, 7, 8]),
                pipeline: "orders".into(),
                what: SpanOf::Step {
                    step: "say \"hi\"".into(),
                    step_type: "step.set".into(),
                },
                start: UNIX_EPOCH + Duration::from_nanos(5),
                end: UNIX_EPOCH + Duration::from_nanos(9),
                error: Some("bad\nthing".into()),
            },
            &mut out,
        );
        let span: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            span,
            json!({
                "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
                "spanId": "00f067aa0ba902b7",
                "parentSpanId": "0102030405060708",
                "name": "say \"hi\"",
                "kind": 1,
                "startTimeUnixNano": "5",
                "endTimeUnixNano": "9",
                "attributes": [
                    {"key": "wf.pipeline", "value": {"stringValue": "orders"}},
                    {"key": "wf.step", "value": {"stringValue": "say \"hi\""}},
                    {"key": "wf.step_type", "value": {"stringValue": "step.set"}},
                ],
                "status": {"code": 2, "message": "bad\nthing"},
            })
        );
    }
}
