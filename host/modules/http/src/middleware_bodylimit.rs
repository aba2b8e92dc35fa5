//! `http.middleware.bodylimit`: refuses request bodies over `maxBytes` with `413` — at once
//! when `Content-Length` says so, and while the body streams when it does not (chunked), so
//! a handler never holds more than the limit.

use std::sync::Arc;

use axum::body::Body;
use http::header;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use schemars::JsonSchema;
use serde::Deserialize;
use wf_engine::{BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType};

use crate::exchange::BodyTooLarge;
use crate::{HttpMiddleware, Request, RouteService, route_fn};

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
                let too_large = move || BodyTooLarge {
                    limit: max,
                    setting: "`maxBytes` of `http.middleware.bodylimit`".to_string(),
                };
                if declared.is_some_and(|len| len > max as u64) {
                    return too_large().response();
                }
                // Streamed bodies are cut off at the limit; the reader sees an error naming
                // this limit, which the handlers answer with 413.
                let req = req.map(|body| {
                    Body::new(Limited::new(body, max).map_err(move |e| {
                        if e.is::<LengthLimitError>() {
                            Box::new(too_large()) as Box<dyn std::error::Error + Send + Sync>
                        } else {
                            e
                        }
                    }))
                });
                crate::call(inner, req).await
            }
        })
    }
}
