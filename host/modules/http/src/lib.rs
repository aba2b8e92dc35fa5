//! The HTTP core of wf: servers, routers, handlers, health endpoints and the `http` workflow that
//! wires routes (with per-route middleware chains) onto routers.
//!
//! A route's handler and middleware are tower services, so middleware types can be tower layers.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use tower::util::BoxCloneSyncService;
use wf_engine::{Registry, RegistryError, ServiceKind};

pub mod api_command;
pub mod api_query;
pub mod config_headers;
pub mod cqrs;
pub mod durable;
pub mod endpoint;
pub mod exchange;
pub mod handler;
pub mod health;
pub mod jwt;
pub mod log_collector;
pub mod logs;
pub mod metrics;
pub mod middleware_auth;
pub mod middleware_bodylimit;
pub mod middleware_cors;
pub mod middleware_logging;
pub mod middleware_ratelimit;
pub mod middleware_requestid;
pub mod middleware_securityheaders;
pub mod middleware_timeout;
pub mod openapi_generator;
pub mod otel;
pub mod proxy;
pub mod reverse_proxy;
pub mod router;
pub mod runs_api;
pub mod schemas;
pub mod serve;
pub mod server;
pub mod simple_proxy;
pub mod static_fileserver;
pub mod trigger;
pub mod workflow;

pub use exchange::HttpExchange;
pub use router::{PathParams, RequestObserver, Router};
pub use server::HttpServer;

pub type Request = http::Request<Body>;

/// The client's socket address, in every request's extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// When the server stops waiting for a request's answer (its `writeTimeout`), in every
/// request's extensions: runs the request starts end before it, with their own error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestDeadline {
    pub at: tokio::time::Instant,
    pub write_timeout: std::time::Duration,
}

impl RequestDeadline {
    /// The deadline of a run this request starts: a little before the server's, so the run
    /// stops with its own error (a 504 naming the setting) rather than being cut off.
    pub fn run_deadline(&self) -> wf_engine::RunDeadline {
        let margin = (self.write_timeout / 10).min(std::time::Duration::from_millis(100));
        wf_engine::RunDeadline {
            at: self.at - margin,
            setting: "the server's `writeTimeout`",
        }
    }
}
pub type Response = http::Response<Body>;

/// A route's handler with its middleware applied: what a router dispatches to.
pub type RouteService = BoxCloneSyncService<Request, Response, Infallible>;

/// A module that answers HTTP requests (`http.handler`, `api.query`, a proxy, ...).
pub trait HttpHandler: Send + Sync {
    /// The service that handles requests routed to this module. Called once per route at wiring.
    fn service(self: Arc<Self>) -> RouteService;
}

impl ServiceKind for dyn HttpHandler {
    const LABEL: &'static str = "an HTTP handler";
}

/// A module that wraps route handlers (`http.middleware.*`).
pub trait HttpMiddleware: Send + Sync {
    /// Wraps `inner`. For a route with `middlewares: [a, b]`, `a` is outermost: a request passes
    /// `a`, then `b`, then the handler.
    fn layer(self: Arc<Self>, inner: RouteService) -> RouteService;
}

impl ServiceKind for dyn HttpMiddleware {
    const LABEL: &'static str = "an HTTP middleware";
}

impl ServiceKind for Router {
    const LABEL: &'static str = "an HTTP router";
}

impl ServiceKind for HttpServer {
    const LABEL: &'static str = "an HTTP server";
}

/// The plugin group of every type in this crate (`requires.plugins: [{name: http}]`).
pub const PLUGIN: &str = "http";

/// Registers the HTTP types.
/// Module types that are routers (`http.router` and its modular name).
pub const ROUTER_TYPES: &[&str] = &["http.router", "chimux.router"];

/// Module types that are servers (`http.server` and its modular name).
pub const SERVER_TYPES: &[&str] = &["http.server", "httpserver.modular"];

pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    registry
        .register_module::<server::HttpServerType>()?
        .register_module::<server::HttpServerModularType>()?
        .register_module::<router::HttpRouterType>()?
        .register_module::<router::ChimuxRouterType>()?
        .register_module::<handler::HttpHandlerType>()?
        .register_module::<health::HealthCheckerType>()?
        .register_module::<metrics::MetricsCollectorType>()?
        .register_module::<otel::OtelType>()?
        .register_module::<schemas::ModuleSchemasType>()?
        .register_module::<middleware_auth::AuthMiddlewareType>()?
        .register_module::<middleware_cors::CorsType>()?
        .register_module::<middleware_logging::LoggingType>()?
        .register_module::<middleware_ratelimit::RateLimitType>()?
        .register_module::<middleware_requestid::RequestIdType>()?
        .register_module::<middleware_securityheaders::SecurityHeadersType>()?
        .register_module::<middleware_bodylimit::BodyLimitType>()?
        .register_module::<middleware_timeout::TimeoutType>()?
        .register_module::<reverse_proxy::ReverseProxyType>()?
        .register_module::<reverse_proxy::HttpProxyType>()?
        .register_module::<simple_proxy::SimpleProxyType>()?
        .register_module::<static_fileserver::StaticFileServerType>()?
        .register_module::<log_collector::LogCollectorType>()?
        .register_module::<runs_api::RunsApiType>()?
        .register_module::<openapi_generator::OpenApiGeneratorType>()?
        .register_module::<api_query::ApiQueryType>()?
        .register_module::<api_command::ApiCommandType>()?
        .register_workflow::<workflow::HttpWorkflow>()?
        .register_trigger::<trigger::HttpTriggerType>()?
        .alias_plugin("workflow-plugin-http", PLUGIN);
    Ok(())
}

/// JSON text with a trailing newline, as Go's `json.Encoder` wrote it.
pub fn json_bytes(value: &serde_json::Value) -> Bytes {
    let mut body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    body.push(b'\n');
    Bytes::from(body)
}

/// A JSON response with an already encoded body (see [`json_bytes`]).
pub fn json_bytes_response(status: StatusCode, body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A JSON response.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response {
    json_bytes_response(status, json_bytes(value))
}

/// A plain-text response, as Go's `http.Error` wrote them.
pub fn text_response(status: StatusCode, text: &str) -> Response {
    let mut response = Response::new(Body::from(format!("{text}\n")));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Wraps an async function as a [`RouteService`].
/// Calls a route service (they never fail: errors are responses).
pub async fn call(service: RouteService, req: Request) -> Response {
    match tower::ServiceExt::oneshot(service, req).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

pub fn route_fn<F, Fut>(f: F) -> RouteService
where
    F: Fn(Request) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response> + Send + 'static,
{
    BoxCloneSyncService::new(tower::service_fn(move |req| {
        let fut = f(req);
        async move { Ok::<_, Infallible>(fut.await) }
    }))
}

/// For admin-style APIs guarded by a shared token: `None` when the request carries
/// `Authorization: Bearer <token>` (or no token is configured), else the `401` to answer.
pub fn check_bearer(req: &Request, token: Option<&str>) -> Option<Response> {
    let token = token?;
    let given = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|g| same_secret(g.as_bytes(), token.as_bytes())) {
        return None;
    }
    let mut response = json_response(
        StatusCode::UNAUTHORIZED,
        &serde_json::json!({"error": "a valid bearer token is required"}),
    );
    response.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    );
    Some(response)
}

/// Compares in time independent of where the first difference is.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
