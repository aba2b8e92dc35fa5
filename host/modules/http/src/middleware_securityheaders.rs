//! `http.middleware.securityheaders`: safe browser-security headers on every response (the
//! original's set and defaults). A header the handler set itself is left alone; an empty value
//! in the config leaves that header out.

use std::sync::Arc;

use http::{HeaderName, HeaderValue, header};
use schemars::JsonSchema;
use serde::Deserialize;
use wf_engine::{BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType};

use crate::{HttpMiddleware, Request, RouteService, route_fn};

/// Configuration of `http.middleware.securityheaders`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecurityHeadersConfig {
    /// `Content-Security-Policy`.
    #[serde(default = "default_csp", rename = "contentSecurityPolicy")]
    pub content_security_policy: String,
    /// `X-Frame-Options`.
    #[serde(default = "default_frame", rename = "frameOptions")]
    pub frame_options: String,
    /// `X-Content-Type-Options`.
    #[serde(default = "default_nosniff", rename = "contentTypeOptions")]
    pub content_type_options: String,
    /// `Strict-Transport-Security` max-age in seconds (with `includeSubDomains`); 0 leaves it out.
    #[serde(default = "default_hsts", rename = "hstsMaxAge")]
    pub hsts_max_age: u64,
    /// `Referrer-Policy`.
    #[serde(default = "default_referrer", rename = "referrerPolicy")]
    pub referrer_policy: String,
    /// `Permissions-Policy`.
    #[serde(default = "default_permissions", rename = "permissionsPolicy")]
    pub permissions_policy: String,
}

fn default_csp() -> String {
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'".to_string()
}
fn default_frame() -> String {
    "DENY".to_string()
}
fn default_nosniff() -> String {
    "nosniff".to_string()
}
fn default_hsts() -> u64 {
    31_536_000
}
fn default_referrer() -> String {
    "strict-origin-when-cross-origin".to_string()
}
fn default_permissions() -> String {
    "camera=(), microphone=(), geolocation=()".to_string()
}

pub struct SecurityHeadersType;

impl Described for SecurityHeadersType {
    const NAME: &'static str = "http.middleware.securityheaders";
    const CATEGORY: Category = Category::Middleware;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Adds Content-Security-Policy, X-Frame-Options, X-Content-Type-Options, Strict-Transport-Security, Referrer-Policy and Permissions-Policy.";
    type Config = SecurityHeadersConfig;
}

fn headers_of(config: &SecurityHeadersConfig) -> Vec<(HeaderName, String, &'static str)> {
    let hsts = if config.hsts_max_age > 0 {
        format!("max-age={}; includeSubDomains", config.hsts_max_age)
    } else {
        String::new()
    };
    vec![
        (
            header::CONTENT_SECURITY_POLICY,
            config.content_security_policy.clone(),
            "/contentSecurityPolicy",
        ),
        (
            header::X_FRAME_OPTIONS,
            config.frame_options.clone(),
            "/frameOptions",
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            config.content_type_options.clone(),
            "/contentTypeOptions",
        ),
        (header::STRICT_TRANSPORT_SECURITY, hsts, "/hstsMaxAge"),
        (
            header::REFERRER_POLICY,
            config.referrer_policy.clone(),
            "/referrerPolicy",
        ),
        (
            HeaderName::from_static("permissions-policy"),
            config.permissions_policy.clone(),
            "/permissionsPolicy",
        ),
    ]
}

impl ModuleType for SecurityHeadersType {
    fn check(config: &SecurityHeadersConfig, _ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        headers_of(config)
            .into_iter()
            .filter(|(_, value, _)| HeaderValue::from_str(value).is_err())
            .map(|(_, _, pointer)| {
                ConfigIssue::new(
                    pointer,
                    "not a valid header value (no line breaks or control characters)",
                )
            })
            .collect()
    }

    fn build(
        config: SecurityHeadersConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        let mut headers = Vec::new();
        for (name, value, _) in headers_of(&config) {
            if !value.is_empty() {
                headers.push((name, HeaderValue::from_str(&value)?));
            }
        }
        let middleware = Arc::new(SecurityHeaders { headers });
        ctx.provide::<dyn HttpMiddleware>(middleware.clone());
        Ok(middleware)
    }
}

pub struct SecurityHeaders {
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Module for SecurityHeaders {}

impl HttpMiddleware for SecurityHeaders {
    fn layer(self: Arc<Self>, inner: RouteService) -> RouteService {
        route_fn(move |req: Request| {
            let this = self.clone();
            let inner = inner.clone();
            async move {
                let mut response = crate::call(inner, req).await;
                let headers = response.headers_mut();
                for (name, value) in &this.headers {
                    if !headers.contains_key(name) {
                        headers.insert(name.clone(), value.clone());
                    }
                }
                response
            }
        })
    }
}
