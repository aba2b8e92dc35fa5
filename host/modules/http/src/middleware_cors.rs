//! `http.middleware.cors`: Cross-Origin Resource Sharing. Answers preflights (`OPTIONS` with
//! `Access-Control-Request-Method`) itself — routes with this middleware get an `OPTIONS`
//! route for it — and adds `Access-Control-Allow-Origin` to responses for allowed origins.
//!
//! Unlike the original, `*` is sent as `*` (it echoed any `Origin`, which with credentials
//! lets every site read the responses), a refused origin gets no CORS headers, and responses
//! that depend on the origin say so with `Vary: Origin`.

use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use wf_engine::{BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType};

use crate::{HttpMiddleware, Request, Response, RouteService, json_response, route_fn};

/// Configuration of `http.middleware.cors`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed to read responses, e.g. `https://shop.example.com`; `*` allows any.
    #[serde(default = "any_origin", rename = "allowedOrigins")]
    pub allowed_origins: Vec<String>,
    /// Methods a preflight may ask for.
    #[serde(default = "default_methods", rename = "allowedMethods")]
    pub allowed_methods: Vec<String>,
    /// Request headers a preflight may ask for.
    #[serde(default = "default_headers", rename = "allowedHeaders")]
    pub allowed_headers: Vec<String>,
    /// Response headers the browser may show to scripts.
    #[serde(default, rename = "exposedHeaders")]
    pub exposed_headers: Vec<String>,
    /// Allow cookies and `Authorization` on cross-origin requests (needs explicit origins).
    #[serde(default, rename = "allowCredentials")]
    pub allow_credentials: bool,
    /// How long (seconds) a browser may cache a preflight answer; 0 sends no `Max-Age`.
    #[serde(default, rename = "maxAge")]
    pub max_age: u64,
}

fn any_origin() -> Vec<String> {
    vec!["*".to_string()]
}

fn default_methods() -> Vec<String> {
    ["GET", "POST", "PUT", "DELETE", "OPTIONS"]
        .map(String::from)
        .to_vec()
}

fn default_headers() -> Vec<String> {
    vec!["Content-Type".to_string(), "Authorization".to_string()]
}

pub struct CorsType;

impl Described for CorsType {
    const NAME: &'static str = "http.middleware.cors";
    const CATEGORY: Category = Category::Middleware;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Cross-origin resource sharing: answers preflights and lets allowed origins read responses.";
    type Config = CorsConfig;
}

impl ModuleType for CorsType {
    fn check(config: &CorsConfig, _ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        let any = config.allowed_origins.iter().any(|o| o == "*");
        if any && config.allow_credentials {
            issues.push(
                ConfigIssue::new("/allowCredentials", "`allowCredentials` with origin `*` would let every site read signed-in users' responses")
                    .help("list the origins in `allowedOrigins`"),
            );
        }
        for (i, origin) in config.allowed_origins.iter().enumerate() {
            if origin != "*" && (!origin.contains("://") || origin.ends_with('/')) {
                issues.push(
                    ConfigIssue::new(format!("/allowedOrigins/{i}"), format!("`{origin}` is not an origin"))
                        .help("an origin is scheme, host and optional port, without a path: `https://shop.example.com`"),
                );
            }
        }
        for (i, method) in config.allowed_methods.iter().enumerate() {
            if Method::from_bytes(method.as_bytes()).is_err() {
                issues.push(ConfigIssue::new(
                    format!("/allowedMethods/{i}"),
                    format!("`{method}` is not an HTTP method"),
                ));
            }
        }
        for (key, names) in [
            ("allowedHeaders", &config.allowed_headers),
            ("exposedHeaders", &config.exposed_headers),
        ] {
            for (i, name) in names.iter().enumerate() {
                if HeaderName::from_bytes(name.as_bytes()).is_err() {
                    issues.push(ConfigIssue::new(
                        format!("/{key}/{i}"),
                        format!("`{name}` is not a header name"),
                    ));
                }
            }
        }
        issues
    }

    fn build(config: CorsConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Module>> {
        let list = |items: &[String]| HeaderValue::from_str(&items.join(", "));
        let cors = Arc::new(Cors {
            any_origin: config.allowed_origins.iter().any(|o| o == "*"),
            origins: config.allowed_origins,
            methods: list(&config.allowed_methods)?,
            headers: list(&config.allowed_headers)?,
            exposed: (!config.exposed_headers.is_empty())
                .then(|| list(&config.exposed_headers))
                .transpose()?,
            credentials: config.allow_credentials,
            max_age: (config.max_age > 0).then(|| HeaderValue::from(config.max_age)),
        });
        ctx.provide::<dyn HttpMiddleware>(cors.clone());
        Ok(cors)
    }
}

pub struct Cors {
    any_origin: bool,
    origins: Vec<String>,
    methods: HeaderValue,
    headers: HeaderValue,
    exposed: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
}

impl Module for Cors {}

impl Cors {
    /// The `Access-Control-Allow-Origin` value for this request's origin, if it is allowed.
    fn allow_origin(&self, req: &Request) -> Option<HeaderValue> {
        let origin = req.headers().get(header::ORIGIN)?;
        if self.any_origin && !self.credentials {
            return Some(HeaderValue::from_static("*"));
        }
        let text = origin.to_str().ok()?;
        self.origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(text))
            .then(|| origin.clone())
    }

    /// Adds `Vary: Origin` when the answer depends on the origin (any list but `*`), whether
    /// or not this origin was allowed, so caches never serve one origin's answer to another.
    fn vary(&self, response: &mut Response) {
        if !self.any_origin || self.credentials {
            response
                .headers_mut()
                .append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }

    fn decorate(&self, response: &mut Response, allow: HeaderValue) {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    fn preflight(&self, req: &Request) -> Response {
        let Some(allow) = self.allow_origin(req) else {
            let mut response = json_response(
                StatusCode::FORBIDDEN,
                &json!({"error": "origin not allowed"}),
            );
            self.vary(&mut response);
            return response;
        };
        let mut response = Response::new(axum::body::Body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        self.decorate(&mut response, allow);
        self.vary(&mut response);
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, self.headers.clone());
        if let Some(max_age) = &self.max_age {
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, max_age.clone());
        }
        response
    }
}

fn is_preflight(req: &Request) -> bool {
    req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

impl HttpMiddleware for Cors {
    fn layer(self: Arc<Self>, inner: RouteService) -> RouteService {
        route_fn(move |req: Request| {
            let this = self.clone();
            let inner = inner.clone();
            async move {
                if is_preflight(&req) {
                    return this.preflight(&req);
                }
                let allow = this.allow_origin(&req);
                let mut response = crate::call(inner, req).await;
                this.vary(&mut response);
                if let Some(allow) = allow {
                    this.decorate(&mut response, allow);
                    if let Some(exposed) = &this.exposed {
                        response
                            .headers_mut()
                            .insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, exposed.clone());
                    }
                }
                response
            }
        })
    }
}

/// The answer of an `OPTIONS` route added for a route with CORS: reached only by a plain
/// `OPTIONS` request (the middleware answers preflights before it).
pub fn options_endpoint() -> RouteService {
    route_fn(|_| async {
        let mut response = Response::new(axum::body::Body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        response
    })
}
