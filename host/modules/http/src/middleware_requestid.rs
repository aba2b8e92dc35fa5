//! `http.middleware.requestid`: every request gets an id — the caller's `X-Request-ID` when it
//! is a sane one, else a new UUID — echoed in the response, in the request's extensions for
//! later middlewares (logging), and in pipelines as `meta.request_id`.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use schemars::JsonSchema;
use serde::Deserialize;
use wf_engine::{BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType};

use crate::{HttpMiddleware, Request, RouteService, route_fn};

/// The request's id, in its extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

/// Configuration of `http.middleware.requestid`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestIdConfig {
    /// The header carrying the id, in and out.
    #[serde(default = "default_header", rename = "headerName")]
    pub header_name: String,
}

fn default_header() -> String {
    "X-Request-ID".to_string()
}

/// Longest id taken from a caller; longer (or odd) ones are replaced, so logs stay readable.
const MAX_ID_LEN: usize = 128;

pub struct RequestIdType;

impl Described for RequestIdType {
    const NAME: &'static str = "http.middleware.requestid";
    const CATEGORY: Category = Category::Middleware;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "Gives every request an id (the caller's `X-Request-ID` or a new UUID) and echoes it.";
    type Config = RequestIdConfig;
}

impl ModuleType for RequestIdType {
    fn check(config: &RequestIdConfig, _ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        HeaderName::from_bytes(config.header_name.as_bytes())
            .err()
            .map(|_| {
                ConfigIssue::new(
                    "/headerName",
                    format!("`{}` is not a header name", config.header_name),
                )
            })
            .into_iter()
            .collect()
    }

    fn build(
        config: RequestIdConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        let middleware = Arc::new(RequestIdMiddleware {
            header: HeaderName::from_bytes(config.header_name.as_bytes())?,
        });
        ctx.provide::<dyn HttpMiddleware>(middleware.clone());
        Ok(middleware)
    }
}

pub struct RequestIdMiddleware {
    header: HeaderName,
}

impl Module for RequestIdMiddleware {}

fn acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b))
}

impl HttpMiddleware for RequestIdMiddleware {
    fn layer(self: Arc<Self>, inner: RouteService) -> RouteService {
        route_fn(move |mut req: Request| {
            let header = self.header.clone();
            let inner = inner.clone();
            async move {
                let id = req
                    .headers()
                    .get(&header)
                    .and_then(|v| v.to_str().ok())
                    .filter(|id| acceptable(id))
                    .map(str::to_string)
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                let value = HeaderValue::from_str(&id).ok();
                if let Some(value) = &value {
                    req.headers_mut().insert(header.clone(), value.clone());
                }
                req.extensions_mut().insert(RequestId(id));
                let mut response = crate::call(inner, req).await;
                if let Some(value) = value {
                    response.headers_mut().insert(header, value);
                }
                response
            }
        })
    }
}
