//! `http.middleware.timeout`: a request whose handler has not answered within `timeout` gets
//! `503 {"error": "request timed out"}` and the handler's work is dropped.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use wf_engine::wf_config::duration::{DURATION_PATTERN, parse_duration};
use wf_engine::{BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType};

use crate::{HttpMiddleware, Request, RouteService, json_response, route_fn};

/// Configuration of `http.middleware.timeout`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeoutConfig {
    /// Longest time a handler may take, e.g. `5s`.
    #[serde(default = "default_timeout")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub timeout: String,
}

fn default_timeout() -> String {
    "30s".into()
}

pub struct TimeoutType;

impl Described for TimeoutType {
    const NAME: &'static str = "http.middleware.timeout";
    const CATEGORY: Category = Category::Middleware;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Answers 503 when a handler takes longer than `timeout`.";
    type Config = TimeoutConfig;
}

impl ModuleType for TimeoutType {
    fn check(config: &TimeoutConfig, _: &CheckContext<'_>) -> Vec<ConfigIssue> {
        match parse_duration(&config.timeout) {
            Ok(d) if d.is_zero() => vec![ConfigIssue::new(
                "/timeout",
                "the timeout must be longer than zero",
            )],
            Ok(_) => Vec::new(),
            Err(e) => vec![ConfigIssue::new("/timeout", e)],
        }
    }

    fn build(config: TimeoutConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Module>> {
        let middleware = Arc::new(Timeout {
            limit: parse_duration(&config.timeout).map_err(anyhow::Error::msg)?,
        });
        ctx.provide::<dyn HttpMiddleware>(middleware.clone());
        Ok(middleware)
    }
}

pub struct Timeout {
    limit: Duration,
}

impl Module for Timeout {}

impl HttpMiddleware for Timeout {
    fn layer(self: Arc<Self>, inner: RouteService) -> RouteService {
        route_fn(move |req: Request| {
            let limit = self.limit;
            let inner = inner.clone();
            async move {
                let path = req.uri().path().to_string();
                match tokio::time::timeout(limit, crate::call(inner, req)).await {
                    Ok(response) => response,
                    Err(_) => {
                        tracing::warn!(%path, ?limit, "request timed out");
                        json_response(
                            StatusCode::SERVICE_UNAVAILABLE,
                            &json!({"error": "request timed out"}),
                        )
                    }
                }
            }
        })
    }
}
