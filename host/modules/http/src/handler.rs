//! `http.handler`: answers with a configured status, headers and body — by default the
//! original's JSON `{"handler": "<name>", "message": "Default handler response", "status": "success"}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, header};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use wf_engine::{BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType};

use crate::{HttpHandler, Response, RouteService, json_bytes, route_fn};

/// Configuration of `http.handler`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpHandlerConfig {
    /// `Content-Type` of every response.
    #[serde(default = "default_content_type", rename = "contentType")]
    pub content_type: String,
    /// Status code of every response.
    #[serde(default = "default_status")]
    #[schemars(range(min = 100, max = 599))]
    pub status: u16,
    /// Response body: a mapping or list is sent as JSON, a string as it is. Without it, the body
    /// is `{"handler": "<module name>", "message": "Default handler response", "status": "success"}`.
    #[serde(default)]
    pub body: Option<Value>,
    /// Extra response headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The method of the route this handler is meant for. Documentation checked against the
    /// `http` workflows: routes themselves are declared there.
    #[serde(default)]
    pub method: Option<String>,
    /// The path of the route this handler is meant for (see `method`).
    #[serde(default)]
    pub path: Option<String>,
}

fn default_content_type() -> String {
    "application/json".to_string()
}

fn default_status() -> u16 {
    200
}

pub struct HttpHandlerType;

impl Described for HttpHandlerType {
    const NAME: &'static str = "http.handler";
    const CATEGORY: Category = Category::Http;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "Answers every request routed to it with a configured status, headers and body.";
    type Config = HttpHandlerConfig;
}

impl ModuleType for HttpHandlerType {
    fn check(config: &HttpHandlerConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = documented_route_issues(config, ctx);
        if HeaderValue::from_str(&config.content_type).is_err() {
            issues.push(ConfigIssue::new(
                "/contentType",
                "`contentType` is not a valid header value",
            ));
        }
        for (name, value) in &config.headers {
            let pointer = format!("/headers/{name}");
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                issues.push(ConfigIssue::new(
                    &pointer,
                    format!("`{name}` is not a valid header name"),
                ));
            } else if HeaderValue::from_str(value).is_err() {
                issues.push(ConfigIssue::new(
                    &pointer,
                    format!("the value of header `{name}` is not a valid header value"),
                ));
            }
        }
        issues
    }

    fn build(
        config: HttpHandlerConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        let body = match config.body {
            None => json_bytes(&json!({
                "handler": ctx.name,
                "message": "Default handler response",
                "status": "success",
            })),
            Some(Value::String(text)) => Bytes::from(text),
            Some(value) => json_bytes(&value),
        };
        let mut headers = vec![(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&config.content_type)?,
        )];
        for (name, value) in &config.headers {
            headers.push((
                HeaderName::from_bytes(name.as_bytes())?,
                HeaderValue::from_str(value)?,
            ));
        }
        let handler = Arc::new(StaticHandler {
            status: StatusCode::from_u16(config.status)?,
            headers,
            body,
        });
        ctx.provide::<dyn HttpHandler>(handler.clone());
        Ok(handler)
    }
}

/// Warns when the route a handler documents (`method`, `path`) is not how workflows route it.
fn documented_route_issues(config: &HttpHandlerConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
    let (Some(path), name) = (config.path.as_deref(), ctx.current_module()) else {
        return Vec::new();
    };
    let Some(name) = name else { return Vec::new() };
    let method = config.method.as_deref().unwrap_or("GET");
    let routed: Vec<(String, String)> = ctx
        .config
        .workflows
        .iter()
        .filter(|w| w.kind == "http" || w.kind.starts_with("http-"))
        .filter_map(|w| w.config.get("routes").and_then(Value::as_array))
        .flatten()
        .filter(|r| r.get("handler").and_then(Value::as_str) == Some(name))
        .map(|r| {
            let field = |k: &str| {
                r.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            (field("method"), field("path"))
        })
        .collect();
    if routed
        .iter()
        .any(|(m, p)| m.eq_ignore_ascii_case(method) && p == path)
    {
        return Vec::new();
    }
    let message = if routed.is_empty() {
        format!(
            "no `http` workflow routes `{method} {path}` to this handler, so nothing will reach it"
        )
    } else {
        format!(
            "this handler documents `{method} {path}` but is routed as {}",
            routed
                .iter()
                .map(|(m, p)| format!("`{m} {p}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    vec![
        ConfigIssue::warning("/path", message)
            .help("add or correct the route in the `http` workflow's `routes:`"),
    ]
}

/// The response is built once; each request clones it (a reference count, no copying).
struct StaticHandler {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

impl StaticHandler {
    fn respond(&self) -> Response {
        let mut response = Response::new(Body::from(self.body.clone()));
        *response.status_mut() = self.status;
        for (name, value) in &self.headers {
            response.headers_mut().insert(name.clone(), value.clone());
        }
        response
    }
}

impl HttpHandler for StaticHandler {
    fn service(self: Arc<Self>) -> RouteService {
        route_fn(move |_req| {
            let response = self.respond();
            async move { response }
        })
    }
}

impl Module for StaticHandler {}
