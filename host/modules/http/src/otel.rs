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
use serde_json::{Value, json};
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
        if let Some(endpoint) = &config.endpoint
            && !reqwest::Url::parse(endpoint).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        {
            issues.push(ConfigIssue::new(
                "/endpoint",
                format!("`{endpoint}` is not an http(s) address"),
            ));
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
                resource: json!({"attributes": [attribute("service.name", &service)]}),
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

/// A finished span, ready for OTLP.
struct SpanRecord {
    context: TraceContext,
    parent: Option<[u8; 8]>,
    name: String,
    /// OTLP span kinds: 1 internal, 2 server.
    kind: u8,
    start: SystemTime,
    end: SystemTime,
    attributes: Vec<Value>,
    error: Option<String>,
}

/// Where finished spans wait for the exporter.
struct SpanQueue {
    sender: mpsc::Sender<SpanRecord>,
    dropped: AtomicU64,
}

impl SpanQueue {
    fn push(&self, span: SpanRecord) {
        if !span.context.sampled {
            return;
        }
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
            pipeline: pipeline.to_string(),
            run_id: run_id.to_string(),
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
    pipeline: String,
    run_id: String,
    start: SystemTime,
    finished: AtomicBool,
}

impl OtelRun {
    fn end(&self, error: Option<String>) {
        if self.finished.swap(true, Ordering::AcqRel) {
            return;
        }
        self.queue.push(SpanRecord {
            context: self.context,
            parent: self.parent,
            name: self.pipeline.clone(),
            kind: if self.remote { 2 } else { 1 },
            start: self.start,
            end: SystemTime::now(),
            attributes: vec![
                attribute("wf.pipeline", &self.pipeline),
                attribute("wf.run_id", &self.run_id),
            ],
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
        self.queue.push(SpanRecord {
            context: span,
            parent: Some(self.context.span_id),
            name: step.to_string(),
            kind: 1,
            start: started,
            end: started + elapsed,
            attributes: vec![
                attribute("wf.pipeline", &self.pipeline),
                attribute("wf.step", step),
                attribute("wf.step_type", step_type),
            ],
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

fn attribute(key: &str, value: &str) -> Value {
    json!({"key": key, "value": {"stringValue": value}})
}

fn unix_nanos(time: SystemTime) -> String {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
        .to_string()
}

/// One span in OTLP's JSON encoding (ids in hex, times as decimal strings).
fn encode(span: &SpanRecord) -> Value {
    let mut out = json!({
        "traceId": span.context.trace_id_hex(),
        "spanId": span.context.span_id_hex(),
        "name": span.name,
        "kind": span.kind,
        "startTimeUnixNano": unix_nanos(span.start),
        "endTimeUnixNano": unix_nanos(span.end),
        "attributes": span.attributes,
        "status": match &span.error {
            Some(message) => json!({"code": 2, "message": message}),
            None => json!({"code": 1}),
        },
    });
    if let Some(parent) = span.parent {
        out["parentSpanId"] = json!(wf_engine::trace::hex(&parent));
    }
    out
}

struct Exporter {
    url: reqwest::Url,
    headers: reqwest::header::HeaderMap,
    resource: Value,
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
        let spans: Vec<Value> = batch.drain(..).map(|s| encode(&s)).collect();
        let count = spans.len();
        let body = json!({"resourceSpans": [{
            "resource": self.resource,
            "scopeSpans": [{"scope": {"name": "wf", "version": env!("CARGO_PKG_VERSION")}, "spans": spans}],
        }]});
        let sent = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header("content-type", "application/json")
            .timeout(self.timeout)
            .body(body.to_string())
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
}
