//! `log.collector`: the process's recent structured log entries over HTTP, at
//! `GET /logs?level=&module=&limit=` → `{"count", "entries", "config"}` (the original's shape).
//! Entries are kept in memory (see [`crate::logs`]); the original collected only from modules
//! implementing its `LogEmitter`, which none did, so it always answered an empty list.

use std::sync::{Arc, Mutex};

use http::StatusCode;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType, StartContext,
    StopContext, async_trait,
};

use crate::endpoint::{add_started_endpoint, check_routing};
use crate::logs::{self, Capture};
use crate::{Request, json_response, route_fn};

/// Configuration of `log.collector`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogCollectorConfig {
    /// The least severe entries kept: `error`, `warn`, `info` (default), `debug` or `trace`.
    #[serde(default, rename = "logLevel")]
    pub log_level: Option<String>,
    /// `logLevel` under the name the original's examples use.
    #[serde(default)]
    pub level: Option<String>,
    /// The answer's format; only `json` (the default).
    #[serde(default, rename = "outputFormat")]
    pub output_format: Option<String>,
    /// `outputFormat` under the name the original's examples use.
    #[serde(default)]
    pub format: Option<String>,
    /// Entries older than this many days are not answered.
    #[serde(default = "default_retention", rename = "retentionDays")]
    #[schemars(range(min = 1))]
    pub retention_days: u64,
    /// Most entries kept in memory; the oldest go first.
    #[serde(default = "default_max_entries", rename = "maxEntries")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max_entries: usize,
    /// Where the entries are served.
    #[serde(default = "default_path")]
    pub path: String,
    /// Middlewares in front of this module's routes (e.g. an `http.middleware.auth`),
    /// outermost first.
    #[serde(default)]
    pub middlewares: Vec<String>,
    /// The `http.router` to serve on; optional when the app has one.
    #[serde(default)]
    pub router: Option<String>,
}

impl LogCollectorConfig {
    fn level(&self) -> &str {
        self.log_level
            .as_deref()
            .or(self.level.as_deref())
            .unwrap_or("info")
    }

    fn format(&self) -> &str {
        self.output_format
            .as_deref()
            .or(self.format.as_deref())
            .unwrap_or("json")
    }
}
fn default_retention() -> u64 {
    7
}
fn default_max_entries() -> usize {
    1000
}
fn default_path() -> String {
    "/logs".into()
}

/// Entries one request gets at most.
const MAX_LIMIT: usize = 1000;

pub struct LogCollectorType;

impl Described for LogCollectorType {
    const NAME: &'static str = "log.collector";
    const CATEGORY: Category = Category::Observability;
    const PLUGIN: &'static str = "observability";
    const DESCRIPTION: &'static str =
        "Keeps the recent structured log entries in memory and serves them at `GET /logs`.";
    type Config = LogCollectorConfig;
}

impl ModuleType for LogCollectorType {
    fn check(config: &LogCollectorConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        let at = |written: bool, key: &str, alias: &str| {
            format!("/{}", if written { key } else { alias })
        };
        if logs::parse_level(config.level()).is_none() {
            issues.push(ConfigIssue::new(
                at(config.log_level.is_some(), "logLevel", "level"),
                format!(
                    "`{}` is not a level (error, warn, info, debug, trace)",
                    config.level()
                ),
            ));
        }
        if config.format() != "json" {
            issues.push(ConfigIssue::new(
                at(config.output_format.is_some(), "outputFormat", "format"),
                "the only format is `json`",
            ));
        }
        if !config.path.starts_with('/') {
            issues.push(ConfigIssue::new("/path", "the path must start with `/`"));
        }
        issues.extend(check_routing(
            config.router.as_deref(),
            &config.middlewares,
            ctx,
        ));
        issues
    }

    // No `references`: the endpoint is added at start (see `started_router`); the original's
    // examples list the collector in their servers' `dependsOn`.

    fn build(
        config: LogCollectorConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        let rank = logs::parse_level(config.level()).unwrap_or(3);
        let retention_ms = config.retention_days.saturating_mul(86_400_000);
        let described = json!({
            "logLevel": config.level(),
            "outputFormat": config.format(),
            "retentionDays": config.retention_days,
            "maxEntries": config.max_entries,
        });
        let service = route_fn(move |req: Request| {
            let described = described.clone();
            async move {
                let query = crate::exchange::parse_query(req.uri().query().unwrap_or(""));
                let param = |name: &str| {
                    query
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.as_str())
                };
                let level = match param("level").map(logs::parse_level) {
                    Some(Some(level)) => level.max(rank),
                    Some(None) => {
                        return json_response(
                            StatusCode::BAD_REQUEST,
                            &json!({"error": "`level` is one of error, warn, info, debug, trace"}),
                        );
                    }
                    None => rank,
                };
                let limit = match param("limit").map(str::parse::<usize>) {
                    Some(Ok(n)) if n > 0 => n.min(MAX_LIMIT),
                    Some(_) => {
                        return json_response(
                            StatusCode::BAD_REQUEST,
                            &json!({"error": "`limit` is a positive number"}),
                        );
                    }
                    None => MAX_LIMIT,
                };
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                let entries = logs::recent(
                    level,
                    param("module"),
                    now_ms.saturating_sub(retention_ms),
                    limit,
                );
                json_response(
                    StatusCode::OK,
                    &json!({"count": entries.len(), "entries": entries, "config": described}),
                )
            }
        });
        Ok(Arc::new(LogCollector {
            name: ctx.name.to_string(),
            router: config.router,
            middlewares: config.middlewares,
            path: config.path,
            service,
            rank,
            max_entries: config.max_entries,
            capture: Mutex::default(),
        }))
    }
}

pub struct LogCollector {
    name: String,
    router: Option<String>,
    middlewares: Vec<String>,
    path: String,
    service: crate::RouteService,
    rank: usize,
    max_entries: usize,
    capture: Mutex<Option<Capture>>,
}

#[async_trait]
impl Module for LogCollector {
    async fn start(&self, ctx: &StartContext) -> anyhow::Result<()> {
        add_started_endpoint(
            ctx,
            self.router.as_deref(),
            &self.name,
            &self.path,
            self.service.clone(),
            &self.middlewares,
        )?;
        if let Ok(mut capture) = self.capture.lock() {
            *capture = Some(Capture::start(self.rank, self.max_entries));
        }
        Ok(())
    }

    async fn stop(&self, _: &StopContext) -> anyhow::Result<()> {
        if let Ok(mut capture) = self.capture.lock() {
            capture.take();
        }
        Ok(())
    }
}
