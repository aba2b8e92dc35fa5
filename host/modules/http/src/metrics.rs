//! `metrics.collector`: Prometheus metrics of the app — HTTP requests per route, pipeline runs
//! and steps, and the operations modules report — served in the text format at `metricsPath`.
//! The original defined the HTTP metrics but never recorded them.
//!
//! Names are `<namespace>_<subsystem>_<metric>` as in the original (`workflow_http_requests_total`
//! with the default namespace). Labels hold route patterns and pipeline names, never raw paths
//! or ids, so the number of series stays bounded.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, StatusCode, header};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use schemars::JsonSchema;
use serde::Deserialize;
use wf_engine::events::RunObserver;
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType, ServiceKind,
    StartContext, async_trait,
};

use crate::endpoint::{add_started_endpoint, check_routing};
use crate::router::RequestObserver;
use crate::{Response, Router, route_fn};

/// Configuration of `metrics.collector`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// First part of every metric name.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Optional second part of every metric name.
    #[serde(default)]
    pub subsystem: String,
    /// Path the metrics are served at (`GET`).
    #[serde(default = "default_path", rename = "metricsPath")]
    pub metrics_path: String,
    /// Metric groups to record: `workflow` (pipeline runs), `http` (requests), `module`
    /// (module operations), `step` (pipeline steps), `active_workflows` (runs in flight),
    /// `journal` (run journal writes: batch latency, records, queue depth).
    #[serde(default = "default_groups", rename = "enabledMetrics")]
    pub enabled_metrics: Vec<String>,
    /// Middlewares in front of this module's routes (e.g. an `http.middleware.auth`),
    /// outermost first.
    #[serde(default)]
    pub middlewares: Vec<String>,
    /// The `http.router` to serve `metricsPath` on; optional when the application has one.
    #[serde(default)]
    pub router: Option<String>,
    /// What this collector is for (documentation only).
    #[serde(default)]
    pub description: Option<String>,
    /// Accepted for the original's configs; metrics are recorded as things happen, not polled.
    #[serde(default, rename = "collectInterval")]
    pub collect_interval: Option<serde_json::Value>,
}

fn default_namespace() -> String {
    "workflow".to_string()
}

fn default_path() -> String {
    "/metrics".to_string()
}

const GROUPS: &[&str] = &[
    "workflow",
    "http",
    "module",
    "step",
    "active_workflows",
    "journal",
];

fn default_groups() -> Vec<String> {
    GROUPS.iter().map(|g| g.to_string()).collect()
}

pub struct MetricsCollectorType;

impl Described for MetricsCollectorType {
    const NAME: &'static str = "metrics.collector";
    const CATEGORY: Category = Category::Observability;
    const PLUGIN: &'static str = "observability";
    const DESCRIPTION: &'static str = "Prometheus metrics of HTTP requests, pipeline runs, steps and module operations, served at `/metrics`.";
    type Config = MetricsConfig;
}

fn valid_name_part(part: &str) -> bool {
    let mut chars = part.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl ModuleType for MetricsCollectorType {
    fn check(config: &MetricsConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = check_routing(config.router.as_deref(), &config.middlewares, ctx);
        if !valid_name_part(&config.namespace) {
            issues.push(ConfigIssue::new(
                "/namespace",
                "a namespace is letters, digits and `_`, not starting with a digit",
            ));
        }
        if !config.subsystem.is_empty() && !valid_name_part(&config.subsystem) {
            issues.push(ConfigIssue::new(
                "/subsystem",
                "a subsystem is letters, digits and `_`, not starting with a digit",
            ));
        }
        if !config.metrics_path.starts_with('/') {
            issues.push(ConfigIssue::new(
                "/metricsPath",
                format!("`{}` must start with `/`", config.metrics_path),
            ));
        }
        for (i, group) in config.enabled_metrics.iter().enumerate() {
            if !GROUPS.contains(&group.as_str()) {
                issues.push(ConfigIssue::new(
                    format!("/enabledMetrics/{i}"),
                    format!(
                        "unknown metric group `{group}`; the groups are {}",
                        GROUPS.join(", ")
                    ),
                ));
            }
        }
        issues
    }

    // No `references`: the endpoint is added at start, so servers may depend on the
    // collector (as the original's examples declare) without a cycle through the router.

    fn build(config: MetricsConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Module>> {
        let metrics = Arc::new(Metrics::new(&config)?);
        if metrics.runs.is_some() || metrics.steps.is_some() || metrics.active.is_some() {
            ctx.app.run_events().add_observer(metrics.clone());
        }
        ctx.provide::<Metrics>(metrics.clone());
        Ok(Arc::new(MetricsModule {
            name: ctx.name.to_string(),
            metrics,
            router: config.router,
            middlewares: config.middlewares,
            path: config.metrics_path,
        }))
    }
}

/// A counter and a duration histogram over the same labels.
struct Timed {
    total: IntCounterVec,
    seconds: HistogramVec,
}

impl Timed {
    fn new(
        registry: &Registry,
        config: &MetricsConfig,
        (name, help): (&str, &str),
        counter_labels: &[&str],
        (seconds_name, seconds_help): (&str, &str),
        seconds_labels: &[&str],
    ) -> anyhow::Result<Timed> {
        let total = IntCounterVec::new(
            Opts::new(name, help)
                .namespace(&config.namespace)
                .subsystem(&config.subsystem),
            counter_labels,
        )?;
        let seconds = HistogramVec::new(
            HistogramOpts::new(seconds_name, seconds_help)
                .namespace(&config.namespace)
                .subsystem(&config.subsystem),
            seconds_labels,
        )?;
        registry.register(Box::new(total.clone()))?;
        registry.register(Box::new(seconds.clone()))?;
        Ok(Timed { total, seconds })
    }
}

/// The collector's metrics; other modules record module operations through it.
pub struct Metrics {
    registry: Registry,
    namespace: String,
    subsystem: String,
    http: Option<Timed>,
    runs: Option<Timed>,
    steps: Option<Timed>,
    active: Option<IntGaugeVec>,
    operations: Option<IntCounterVec>,
    journal: Option<JournalMetrics>,
}

/// The run journal's writes: records by outcome with each batch's commit time, and what waits.
struct JournalMetrics {
    batches: Timed,
    records: IntCounterVec,
    queued: prometheus::IntGauge,
}

impl ServiceKind for Metrics {
    const LABEL: &'static str = "a metrics collector";
}

fn status_label(ok: bool) -> &'static str {
    if ok { "completed" } else { "failed" }
}

impl Metrics {
    fn new(config: &MetricsConfig) -> anyhow::Result<Metrics> {
        let registry = Registry::new();
        let on = |group: &str| config.enabled_metrics.iter().any(|g| g == group);
        let http = on("http")
            .then(|| {
                Timed::new(
                    &registry,
                    config,
                    (
                        "http_requests_total",
                        "HTTP requests answered, by route pattern and status.",
                    ),
                    &["method", "path", "status_code"],
                    (
                        "http_request_duration_seconds",
                        "Time to answer HTTP requests, by route pattern.",
                    ),
                    &["method", "path"],
                )
            })
            .transpose()?;
        let runs = on("workflow")
            .then(|| {
                Timed::new(
                    &registry,
                    config,
                    (
                        "workflow_executions_total",
                        "Pipeline runs finished, by pipeline and outcome.",
                    ),
                    &["workflow_type", "action", "status"],
                    ("workflow_duration_seconds", "Duration of pipeline runs."),
                    &["workflow_type", "action"],
                )
            })
            .transpose()?;
        let steps = on("step")
            .then(|| {
                Timed::new(
                    &registry,
                    config,
                    (
                        "step_executions_total",
                        "Pipeline steps finished, by pipeline, step type and outcome.",
                    ),
                    &["pipeline", "step_type", "status"],
                    ("step_duration_seconds", "Duration of pipeline steps."),
                    &["pipeline", "step_type"],
                )
            })
            .transpose()?;
        let active = on("active_workflows")
            .then(|| -> anyhow::Result<IntGaugeVec> {
                let gauge = IntGaugeVec::new(
                    Opts::new("active_workflows", "Pipeline runs in flight.")
                        .namespace(&config.namespace)
                        .subsystem(&config.subsystem),
                    &["workflow_type"],
                )?;
                registry.register(Box::new(gauge.clone()))?;
                Ok(gauge)
            })
            .transpose()?;
        let operations = on("module")
            .then(|| -> anyhow::Result<IntCounterVec> {
                let counter = IntCounterVec::new(
                    Opts::new(
                        "module_operations_total",
                        "Operations modules reported, by outcome.",
                    )
                    .namespace(&config.namespace)
                    .subsystem(&config.subsystem),
                    &["module", "operation", "status"],
                )?;
                registry.register(Box::new(counter.clone()))?;
                Ok(counter)
            })
            .transpose()?;
        let journal = on("journal")
            .then(|| -> anyhow::Result<JournalMetrics> {
                let batches = Timed::new(
                    &registry,
                    config,
                    (
                        "journal_batches_total",
                        "Run journal batches written (one transaction each), by outcome.",
                    ),
                    &["status"],
                    (
                        "journal_write_seconds",
                        "Time to commit one run journal batch.",
                    ),
                    &["status"],
                )?;
                let records = IntCounterVec::new(
                    Opts::new(
                        "journal_records_total",
                        "Run journal records (run starts, step attempts, run ends) written, by outcome.",
                    )
                    .namespace(&config.namespace)
                    .subsystem(&config.subsystem),
                    &["status"],
                )?;
                let queued = prometheus::IntGauge::with_opts(
                    Opts::new(
                        "journal_queue_depth",
                        "Run journal records waiting to be written.",
                    )
                    .namespace(&config.namespace)
                    .subsystem(&config.subsystem),
                )?;
                registry.register(Box::new(records.clone()))?;
                registry.register(Box::new(queued.clone()))?;
                Ok(JournalMetrics {
                    batches,
                    records,
                    queued,
                })
            })
            .transpose()?;
        Ok(Metrics {
            registry,
            namespace: config.namespace.clone(),
            subsystem: config.subsystem.clone(),
            http,
            runs,
            steps,
            active,
            operations,
            journal,
        })
    }

    /// Counts one operation of a module (`processing.step`, ...).
    pub fn module_operation(&self, module: &str, operation: &str, ok: bool) {
        if let Some(operations) = &self.operations {
            operations
                .with_label_values(&[module, operation, if ok { "success" } else { "error" }])
                .inc();
        }
    }

    /// A counter of another module's, named and registered like the collector's own.
    pub fn counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> anyhow::Result<IntCounterVec> {
        let counter = IntCounterVec::new(self.opts(name, help), labels)?;
        self.registry.register(Box::new(counter.clone()))?;
        Ok(counter)
    }

    /// A gauge of another module's, named and registered like the collector's own.
    pub fn gauge_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> anyhow::Result<IntGaugeVec> {
        let gauge = IntGaugeVec::new(self.opts(name, help), labels)?;
        self.registry.register(Box::new(gauge.clone()))?;
        Ok(gauge)
    }

    fn opts(&self, name: &str, help: &str) -> Opts {
        Opts::new(name, help)
            .namespace(&self.namespace)
            .subsystem(&self.subsystem)
    }

    fn render(&self) -> Response {
        let mut body = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut body) {
            tracing::error!(error = %e, "could not encode the metrics");
            return crate::text_response(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
        let mut response = Response::new(axum::body::Body::from(body));
        if let Ok(value) = HeaderValue::from_str(encoder.format_type()) {
            response.headers_mut().insert(header::CONTENT_TYPE, value);
        }
        response
    }
}

/// The method label: a standard method, or `OTHER` — clients may send any token as a method,
/// and each would otherwise start new series.
fn method_label(method: &Method) -> &'static str {
    const STANDARD: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    STANDARD
        .iter()
        .find(|m| *m == method)
        .map_or("OTHER", |m| m.as_str())
}

impl RequestObserver for Metrics {
    fn request_finished(
        &self,
        method: &Method,
        route: &str,
        status: StatusCode,
        elapsed: Duration,
    ) {
        let method = method_label(method);
        if let Some(http) = &self.http {
            http.total
                .with_label_values(&[method, route, status.as_str()])
                .inc();
            http.seconds
                .with_label_values(&[method, route])
                .observe(elapsed.as_secs_f64());
        }
    }
}

impl RunObserver for Metrics {
    fn run_started(&self, pipeline: &str) {
        if let Some(active) = &self.active {
            active.with_label_values(&[pipeline]).inc();
        }
    }

    fn run_abandoned(&self, pipeline: &str) {
        if let Some(active) = &self.active {
            active.with_label_values(&[pipeline]).dec();
        }
    }

    fn run_finished(&self, pipeline: &str, ok: bool, elapsed: Duration) {
        self.run_abandoned(pipeline);
        if let Some(runs) = &self.runs {
            runs.total
                .with_label_values(&[pipeline, "run", status_label(ok)])
                .inc();
            runs.seconds
                .with_label_values(&[pipeline, "run"])
                .observe(elapsed.as_secs_f64());
        }
    }

    fn journal_batch(&self, records: usize, queued: usize, elapsed: Duration, ok: bool) {
        if let Some(journal) = &self.journal {
            let status = if ok { "ok" } else { "failed" };
            journal.batches.total.with_label_values(&[status]).inc();
            journal
                .batches
                .seconds
                .with_label_values(&[status])
                .observe(elapsed.as_secs_f64());
            journal
                .records
                .with_label_values(&[status])
                .inc_by(records as u64);
            journal
                .queued
                .set(i64::try_from(queued).unwrap_or(i64::MAX));
        }
    }

    fn step_finished(&self, pipeline: &str, step_type: &str, ok: bool, elapsed: Duration) {
        if let Some(steps) = &self.steps {
            steps
                .total
                .with_label_values(&[pipeline, step_type, status_label(ok)])
                .inc();
            steps
                .seconds
                .with_label_values(&[pipeline, step_type])
                .observe(elapsed.as_secs_f64());
        }
    }
}

struct MetricsModule {
    name: String,
    metrics: Arc<Metrics>,
    router: Option<String>,
    middlewares: Vec<String>,
    path: String,
}

#[async_trait]
impl Module for MetricsModule {
    /// Serves the metrics on the chosen router, and has every router report its requests.
    async fn start(&self, ctx: &StartContext) -> anyhow::Result<()> {
        let served = self.metrics.clone();
        let service = route_fn(move |_| {
            let body = served.render();
            async move { body }
        });
        add_started_endpoint(
            ctx,
            self.router.as_deref(),
            &self.name,
            &self.path,
            service,
            &self.middlewares,
        )?;
        if self.metrics.http.is_some()
            && let Some(services) = ctx.app.services()
        {
            for (_, router) in services.all::<Router>() {
                router.add_observer(self.metrics.clone());
            }
        }
        Ok(())
    }
}
