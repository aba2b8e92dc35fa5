//! `http.middleware.bodylimit`: refuses request bodies over `maxBytes` with `413` — at once
//! when `Content-Length` says so, and while the body streams when it does not (chunked), so
//! a handler never holds more than the limit.

use std::sync::Arc;

use axum::body::Body;
use http::{StatusCode, header};
use http_body_util::Limited;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use wf_engine::{BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType};

use crate::{HttpMiddleware, Request, RouteService, json_response, route_fn};

/// Configuration of `http.middleware.bodylimit`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BodyLimitConfig {
    /// Largest request body accepted, in bytes (default 1 MiB).
    #[serde(default = "default_max_bytes", rename = "maxBytes")]
    #[schemars(range(min = 1))]
    pub max_bytes: usize,
}

fn default_max_bytes() -> usize {
    1 << 20
}

pub struct BodyLimitType;

impl Described for BodyLimitType {
    const NAME: &'static str = "http.middleware.bodylimit";
    const CATEGORY: Category = Category::Middleware;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Refuses request bodies larger than `maxBytes` with 413.";
    type Config = BodyLimitConfig;
}

impl ModuleType for BodyLimitType {
    fn check(config: &BodyLimitConfig, _: &CheckContext<'_>) -> Vec<ConfigIssue> {
        if config.max_bytes == 0 {
            return vec![ConfigIssue::new(
                "/maxBytes",
                "`maxBytes` must be at least 1",
            )];
        }
        Vec::new()
    }

    fn build(
        config: BodyLimitConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        let middleware = Arc::new(BodyLimit {
            max_bytes: config.max_bytes,
        });
        ctx.provide::<dyn HttpMiddleware>(middleware.clone());
        Ok(middleware)
    }
}

pub struct BodyLimit {
    max_bytes: usize,
}

impl Module for BodyLimit {}

impl HttpMiddleware for BodyLimit {
    fn layer(self: Arc<Self>, inner: RouteService) -> RouteService {
        route_fn(move |req: Request| {
            let max = self.max_bytes;
            let inner = inner.clone();
            async move {
                let declared = req
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                if declared.is_some_and(|len| len > max as u64) {
                    return json_response(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &json!({"error": format!("request body is larger than {max} bytes")}),
                    );
                }
                // Streamed bodies are cut off at the limit; the reader sees a length-limit
                // error, which the handlers answer with 413.
                let req = req.map(|body| Body::new(Limited::new(body, max)));
                crate::call(inner, req).await
            }
        })
    }
}
