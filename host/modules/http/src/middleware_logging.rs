//! `http.middleware.logging`: one structured log line per request — method, route pattern,
//! path, status, latency and the request id (from `http.middleware.requestid`, listed before
//! it) — at the configured level; 5xx answers are always logged as errors.

use std::sync::Arc;
use std::time::Instant;

use schemars::JsonSchema;
use serde::Deserialize;
use wf_engine::{BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType};

use crate::middleware_requestid::RequestId;
use crate::router::MatchedRoute;
use crate::{HttpMiddleware, Request, RouteService, route_fn};

/// Configuration of `http.middleware.logging`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// Level of the request lines: `debug`, `info` or `warn`.
    #[serde(default = "default_level", rename = "logLevel")]
    pub log_level: String,
}

fn default_level() -> String {
    "info".to_string()
}

pub struct LoggingType;

impl Described for LoggingType {
    const NAME: &'static str = "http.middleware.logging";
    const CATEGORY: Category = Category::Middleware;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "Logs each request: method, route, status, latency and request id.";
    type Config = LoggingConfig;
}

#[derive(Clone, Copy)]
enum Level {
    Debug,
    Info,
    Warn,
}

fn level(text: &str) -> Option<Level> {
    match text.to_ascii_lowercase().as_str() {
        "debug" => Some(Level::Debug),
        "info" => Some(Level::Info),
        "warn" | "warning" => Some(Level::Warn),
        _ => None,
    }
}

impl ModuleType for LoggingType {
    fn check(config: &LoggingConfig, _ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        level(&config.log_level)
            .is_none()
            .then(|| {
                ConfigIssue::new(
                    "/logLevel",
                    format!(
                        "unknown level `{}`; use debug, info or warn",
                        config.log_level
                    ),
                )
            })
            .into_iter()
            .collect()
    }

    fn build(config: LoggingConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Module>> {
        let middleware = Arc::new(RequestLog {
            level: level(&config.log_level).unwrap_or(Level::Info),
        });
        ctx.provide::<dyn HttpMiddleware>(middleware.clone());
        Ok(middleware)
    }
}

pub struct RequestLog {
    level: Level,
}

impl Module for RequestLog {}

impl HttpMiddleware for RequestLog {
    fn layer(self: Arc<Self>, inner: RouteService) -> RouteService {
        route_fn(move |req: Request| {
            let level = self.level;
            let inner = inner.clone();
            async move {
                let started = Instant::now();
                let method = req.method().clone();
                let path = req.uri().path().to_string();
                let route = req.extensions().get::<MatchedRoute>().map(|m| m.0.clone());
                let request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone());
                let response = crate::call(inner, req).await;
                let status = response.status().as_u16();
                let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
                let route = route.as_deref().unwrap_or_default();
                let request_id = request_id.as_deref().unwrap_or_default();
                macro_rules! line {
                    ($level:ident) => {
                        tracing::$level!(target: "wf::http", %method, route, path, status, latency_ms, request_id, "request")
                    };
                }
                match (status >= 500, level) {
                    (true, _) => line!(error),
                    (false, Level::Debug) => line!(debug),
                    (false, Level::Info) => line!(info),
                    (false, Level::Warn) => line!(warn),
                }
                response
            }
        })
    }
}
