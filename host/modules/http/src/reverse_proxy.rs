//! `reverseproxy` (and `http.proxy`, the same module under the original's other name): path
//! prefix routes to named backends, with round robin or failover among a route's backends,
//! active health checks, timeouts, header rewrites and streamed bodies. A module written
//! without `config` reads the top-level `reverseproxy:` section, as the original's gateway
//! examples do.
//!
//! ```yaml
//! reverseproxy:
//!   backend_services: {users: "http://users:8080", users-b: "http://users-b:8080"}
//!   default_backend: users
//!   timeout: 10
//!   composite_routes:
//!     "/api/users": {pattern: /api/users, backends: [users, users-b], strategy: select}
//! ```
//!
//! Routes are added to the app's router when the module starts. The original's `reverseproxy`
//! needed a router service that no longer existed, so it never started.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::anyhow;
use http::{Method, StatusCode};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use tokio::task::JoinSet;
use wf_engine::wf_config::duration::{DURATION_PATTERN, parse_duration};
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType, StartContext,
    StopContext, async_trait,
};

use crate::endpoint::{add_guarded_endpoint, check_routing, started_router};
use crate::proxy::{self, ForwardRules};
use crate::router::MatchedRoute;
use crate::{Request, Response, Router, json_response, route_fn};

/// Configuration of `reverseproxy` / `http.proxy`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReverseProxyConfig {
    /// Backends by name: base addresses (`http://users:8080`, `https://api.example.com/v2`);
    /// the request's path is appended.
    #[serde(default)]
    pub backend_services: BTreeMap<String, String>,
    /// The backend for requests no route matches (a catch-all `/` route); without it they get
    /// the router's `404`.
    #[serde(default)]
    pub default_backend: Option<String>,
    /// Seconds a backend may take to send its response headers (default 30); then `504`.
    #[serde(default)]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout: Option<u64>,
    /// When set, only these request headers reach backends (plus `Content-Type`,
    /// `Content-Encoding`, `Accept` and `Accept-Encoding`); otherwise every header but the
    /// hop-by-hop ones.
    #[serde(default)]
    pub forward_headers: Option<Vec<String>>,
    /// Keep the client's `X-Forwarded-For` (appending the peer) instead of replacing it. Only
    /// behind a proxy that sets it: otherwise clients could claim any address.
    #[serde(default)]
    pub trust_forwarded_headers: bool,
    /// Prefix routes: requests under `pattern` go to `backends`.
    #[serde(default)]
    pub composite_routes: BTreeMap<String, ProxyRoute>,
    /// The simple form: path prefix → backend name.
    #[serde(default)]
    pub routes: BTreeMap<String, String>,
    /// Active health checks: an unhealthy backend gets no requests until it recovers.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    /// Middlewares in front of this module's routes (e.g. an `http.middleware.auth`),
    /// outermost first.
    #[serde(default)]
    pub middlewares: Vec<String>,
    /// The `http.router` to add the routes to; optional when the app has one.
    #[serde(default)]
    pub router: Option<String>,
}

/// One prefix route.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxyRoute {
    /// The path prefix: `/api/users` serves `/api/users` and everything below it. Defaults to
    /// the route's key.
    #[serde(default)]
    pub pattern: Option<String>,
    /// Backend names; requests are spread over the healthy ones.
    pub backends: Vec<String>,
    /// `select` or `round-robin` (default): the next healthy backend in turn; `failover`: the
    /// first healthy one in the listed order. (The original's `merge` of several responses is
    /// not implemented.)
    #[serde(default)]
    pub strategy: Option<String>,
    /// Remove `pattern` from the path before forwarding (`/api/users/7` → `/7`).
    #[serde(default)]
    pub strip_prefix: bool,
    /// Seconds this route's backends may take to send their response headers.
    #[serde(default)]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout: Option<u64>,
    /// Headers set on forwarded requests (replacing the client's).
    #[serde(default)]
    pub set_headers: BTreeMap<String, String>,
    /// Headers removed from forwarded requests.
    #[serde(default)]
    pub remove_headers: Vec<String>,
    /// Headers set on the responses.
    #[serde(default)]
    pub response_headers: BTreeMap<String, String>,
}

/// Active health checks of every backend.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Turns the checks off without removing them.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Path requested on each backend (`GET`); `2xx` and `3xx` are healthy.
    #[serde(default = "default_health_path")]
    pub path: String,
    /// Time between checks.
    #[serde(default = "default_health_interval")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub interval: String,
    /// Time limit of one check.
    #[serde(default = "default_health_timeout")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub timeout: String,
    /// Failed checks in a row that make a backend unhealthy; one success makes it healthy.
    #[serde(default = "default_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub unhealthy_threshold: u32,
}

fn yes() -> bool {
    true
}
fn default_health_path() -> String {
    "/health".into()
}
fn default_health_interval() -> String {
    "10s".into()
}
fn default_health_timeout() -> String {
    "2s".into()
}
fn default_threshold() -> u32 {
    2
}

pub struct ReverseProxyType;

impl Described for ReverseProxyType {
    const NAME: &'static str = "reverseproxy";
    const CATEGORY: Category = Category::Http;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Routes path prefixes to backends (round robin or failover, health checks, timeouts, header rewrites, streamed bodies).";
    type Config = ReverseProxyConfig;
}

/// `http.proxy`: the same module under the original's other name.
pub struct HttpProxyType;

impl Described for HttpProxyType {
    const NAME: &'static str = "http.proxy";
    const CATEGORY: Category = Category::Http;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "The `reverseproxy` module under the original's other name.";
    type Config = ReverseProxyConfig;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Strategy {
    RoundRobin,
    Failover,
}

fn strategy(name: Option<&str>) -> Result<Strategy, ConfigIssue> {
    match name.unwrap_or("select") {
        "select" | "round-robin" | "round_robin" => Ok(Strategy::RoundRobin),
        "failover" => Ok(Strategy::Failover),
        "merge" => Err(ConfigIssue::not_implemented(
            "/strategy",
            "the `merge` strategy (one answer from several backends) is not implemented in this build yet",
        )),
        other => Err(ConfigIssue::new(
            "/strategy",
            format!("`{other}` is not a strategy (select, round-robin, failover)"),
        )),
    }
}

/// Every route, as (key for messages, prefix, route).
fn all_routes(
    config: &ReverseProxyConfig,
) -> Vec<(String, String, Option<&ProxyRoute>, Vec<String>)> {
    let mut out: Vec<_> = config
        .composite_routes
        .iter()
        .map(|(key, route)| {
            let prefix = route.pattern.clone().unwrap_or_else(|| key.clone());
            (
                format!(
                    "/composite_routes/{}",
                    wf_engine::wf_config::yaml::escape_pointer_segment(key)
                ),
                prefix,
                Some(route),
                route.backends.clone(),
            )
        })
        .collect();
    out.extend(config.routes.iter().map(|(prefix, backend)| {
        (
            format!(
                "/routes/{}",
                wf_engine::wf_config::yaml::escape_pointer_segment(prefix)
            ),
            prefix.clone(),
            None,
            vec![backend.clone()],
        )
    }));
    out
}

/// `/api/users` or `/api/users/` → `/api/users` (`/` stays `/`), when it is a plain prefix.
fn normal_prefix(prefix: &str) -> Result<String, String> {
    if !prefix.starts_with('/') || prefix.contains(['{', '}', '*', ':', '?', '#']) {
        return Err(format!(
            "`{prefix}` is not a path prefix (a literal path starting with `/`)"
        ));
    }
    let trimmed = prefix.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.into()
    })
}

fn check(config: &ReverseProxyConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    if config.backend_services.is_empty() {
        issues.push(
            ConfigIssue::new("", "a reverse proxy needs `backend_services`")
                .help("configure it under `config:` or in a top-level `reverseproxy:` section"),
        );
    }
    for (name, url) in &config.backend_services {
        if let Err(e) = proxy::check_backend(url) {
            issues.push(ConfigIssue::new(
                format!(
                    "/backend_services/{}",
                    wf_engine::wf_config::yaml::escape_pointer_segment(name)
                ),
                e,
            ));
        }
    }
    let known = |name: &str| config.backend_services.contains_key(name);
    if let Some(default) = &config.default_backend
        && !known(default)
    {
        issues.push(ConfigIssue::new(
            "/default_backend",
            format!("`{default}` is not one of `backend_services`"),
        ));
    }
    let mut prefixes = BTreeMap::new();
    for (at, prefix, route, backends) in all_routes(config) {
        match normal_prefix(&prefix) {
            Ok(p) => {
                if let Some(other) = prefixes.insert(p.clone(), at.clone()) {
                    issues.push(ConfigIssue::new(
                        at.clone(),
                        format!("prefix `{p}` is routed twice (also at `{other}`)"),
                    ));
                }
                if p == "/" && config.default_backend.is_some() {
                    issues.push(ConfigIssue::new(
                        at.clone(),
                        "prefix `/` is the `default_backend`'s; route it there instead",
                    ));
                }
            }
            Err(e) => issues.push(ConfigIssue::new(format!("{at}/pattern"), e)),
        }
        if backends.is_empty() {
            issues.push(ConfigIssue::new(
                format!("{at}/backends"),
                "the route has no backends",
            ));
        }
        for backend in backends.iter().filter(|b| !known(b)) {
            issues.push(ConfigIssue::new(
                at.clone(),
                format!("`{backend}` is not one of `backend_services`"),
            ));
        }
        if let Some(route) = route {
            if let Err(mut issue) = strategy(route.strategy.as_deref()) {
                issue.pointer = format!("{at}{}", issue.pointer);
                issues.push(issue);
            }
            if let Err(e) = proxy::header_pairs(&route.set_headers)
                .and(proxy::header_pairs(&route.response_headers))
                .and(proxy::header_names(&route.remove_headers))
            {
                issues.push(ConfigIssue::new(at.clone(), e));
            }
        }
    }
    if let Some(names) = &config.forward_headers
        && let Err(e) = proxy::header_names(names)
    {
        issues.push(ConfigIssue::new("/forward_headers", e));
    }
    if let Some(health) = &config.health_check {
        for (key, value) in [
            ("/interval", &health.interval),
            ("/timeout", &health.timeout),
        ] {
            if let Err(e) = parse_duration(value) {
                issues.push(ConfigIssue::new(format!("/health_check{key}"), e));
            }
        }
        if !health.path.starts_with('/') {
            issues.push(ConfigIssue::new(
                "/health_check/path",
                "the path must start with `/`",
            ));
        }
    }
    issues.extend(check_routing(
        config.router.as_deref(),
        &config.middlewares,
        ctx,
    ));
    issues
}

fn build(
    config: ReverseProxyConfig,
    ctx: &mut BuildContext<'_>,
) -> anyhow::Result<Arc<dyn Module>> {
    let backends: BTreeMap<String, Arc<Backend>> = config
        .backend_services
        .iter()
        .map(|(name, url)| {
            (
                name.clone(),
                Arc::new(Backend {
                    name: name.clone(),
                    url: url.trim_end_matches('/').to_string(),
                    healthy: AtomicBool::new(true),
                    failures: AtomicUsize::new(0),
                }),
            )
        })
        .collect();
    let pick = |names: &[String]| -> Vec<Arc<Backend>> {
        names
            .iter()
            .filter_map(|n| backends.get(n).cloned())
            .collect()
    };
    let timeout = Duration::from_secs(config.timeout.unwrap_or(30));
    let allow_headers = config
        .forward_headers
        .as_ref()
        .map(proxy::header_names)
        .transpose()
        .map_err(|e| anyhow!(e))?;
    let base_rules = ForwardRules {
        allow_headers,
        trust_forwarded: config.trust_forwarded_headers,
        timeout,
        ..ForwardRules::default()
    };
    let mut routes = Vec::new();
    for (_, prefix, route, names) in all_routes(&config) {
        let mut rules = base_rules.clone();
        let mut strip = false;
        let mut chosen = Strategy::RoundRobin;
        if let Some(route) = route {
            rules.set_headers = proxy::header_pairs(&route.set_headers).map_err(|e| anyhow!(e))?;
            rules.response_headers =
                proxy::header_pairs(&route.response_headers).map_err(|e| anyhow!(e))?;
            rules.remove_headers =
                proxy::header_names(&route.remove_headers).map_err(|e| anyhow!(e))?;
            if let Some(t) = route.timeout {
                rules.timeout = Duration::from_secs(t);
            }
            strip = route.strip_prefix;
            chosen = strategy(route.strategy.as_deref()).map_err(|i| anyhow!(i.message))?;
        }
        routes.push(Arc::new(ProxyTarget {
            prefix: normal_prefix(&prefix).map_err(|e| anyhow!(e))?,
            strip,
            strategy: chosen,
            backends: pick(&names),
            next: AtomicUsize::new(0),
            rules,
        }));
    }
    if let Some(default) = &config.default_backend {
        routes.push(Arc::new(ProxyTarget {
            prefix: "/".into(),
            strip: false,
            strategy: Strategy::RoundRobin,
            backends: pick(std::slice::from_ref(default)),
            next: AtomicUsize::new(0),
            rules: base_rules,
        }));
    }
    let health = match &config.health_check {
        Some(h) if h.enabled => Some(HealthCheck {
            path: h.path.clone(),
            interval: parse_duration(&h.interval).map_err(|e| anyhow!(e))?,
            timeout: parse_duration(&h.timeout).map_err(|e| anyhow!(e))?,
            threshold: h.unhealthy_threshold as usize,
        }),
        _ => None,
    };
    let proxy = ReverseProxy {
        name: ctx.name.to_string(),
        router: config.router,
        middlewares: config.middlewares,
        routes,
        client: proxy::client()?,
        backends: backends.into_values().collect(),
        health,
        checks: Mutex::default(),
    };
    Ok(Arc::new(proxy))
}

impl ModuleType for ReverseProxyType {
    fn check(config: &ReverseProxyConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        check(config, ctx)
    }

    fn build(
        config: ReverseProxyConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        build(config, ctx)
    }
}

impl ModuleType for HttpProxyType {
    fn check(config: &ReverseProxyConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        check(config, ctx)
    }

    fn build(
        config: ReverseProxyConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        build(config, ctx)
    }
}

struct Backend {
    name: String,
    url: String,
    healthy: AtomicBool,
    /// Failed checks in a row.
    failures: AtomicUsize,
}

struct ProxyTarget {
    /// Normalized: no trailing `/` (except `/` itself).
    prefix: String,
    strip: bool,
    strategy: Strategy,
    backends: Vec<Arc<Backend>>,
    next: AtomicUsize,
    rules: ForwardRules,
}

impl ProxyTarget {
    fn choose(&self) -> Option<&Arc<Backend>> {
        let healthy = |b: &&Arc<Backend>| b.healthy.load(Ordering::Relaxed);
        match self.strategy {
            Strategy::Failover => self.backends.iter().find(healthy),
            Strategy::RoundRobin => {
                let n = self.backends.len();
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|i| &self.backends[(start + i) % n])
                    .find(healthy)
            }
        }
    }

    /// The path the backend sees: with `strip_prefix`, what lies below the matched route
    /// (whose pattern carries the router's prefix too).
    fn backend_path<'a>(&self, req: &'a Request) -> &'a str {
        let path = req.uri().path();
        match req.extensions().get::<MatchedRoute>() {
            Some(route) if self.strip && self.prefix != "/" => route.rest_of(path),
            _ => path,
        }
    }
}

struct HealthCheck {
    path: String,
    interval: Duration,
    timeout: Duration,
    threshold: usize,
}

pub struct ReverseProxy {
    name: String,
    router: Option<String>,
    middlewares: Vec<String>,
    routes: Vec<Arc<ProxyTarget>>,
    client: reqwest::Client,
    backends: Vec<Arc<Backend>>,
    health: Option<HealthCheck>,
    checks: Mutex<Option<JoinSet<()>>>,
}

const METHODS: &[Method] = &[
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

impl ReverseProxy {
    /// Routes `target`'s prefix on `router`: the prefix itself and `prefix/` with everything
    /// below it (Go mux semantics); `/` alone is the whole tree.
    fn attach(
        &self,
        router: &Router,
        app: &wf_engine::AppState,
        target: &Arc<ProxyTarget>,
    ) -> anyhow::Result<()> {
        let patterns = if target.prefix == "/" {
            vec!["/".to_string()]
        } else {
            vec![target.prefix.clone(), format!("{}/", target.prefix)]
        };
        for pattern in patterns {
            for method in METHODS {
                let target = target.clone();
                let client = self.client.clone();
                let label = self.name.clone();
                let service = route_fn(move |req: Request| {
                    let (target, client, label) = (target.clone(), client.clone(), label.clone());
                    async move { serve(&target, &client, &label, req).await }
                });
                add_guarded_endpoint(
                    router,
                    app,
                    &self.name,
                    method.clone(),
                    &pattern,
                    service,
                    &self.middlewares,
                )?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Module for ReverseProxy {
    /// Adds the routes (at start, so servers may depend on the proxy without a cycle through
    /// the router), then starts the health checks.
    async fn start(&self, ctx: &StartContext) -> anyhow::Result<()> {
        let router = started_router(self.router.as_deref(), ctx)?;
        for target in &self.routes {
            self.attach(&router, &ctx.app, target)?;
        }
        if let Some(health) = &self.health
            && ctx.serving
        {
            let mut set = JoinSet::new();
            for backend in &self.backends {
                set.spawn(watch(
                    self.name.clone(),
                    self.client.clone(),
                    backend.clone(),
                    health.path.clone(),
                    health.interval,
                    health.timeout,
                    health.threshold,
                ));
            }
            if let Ok(mut checks) = self.checks.lock() {
                *checks = Some(set);
            }
        }
        Ok(())
    }

    async fn stop(&self, _: &StopContext) -> anyhow::Result<()> {
        if let Some(mut set) = self.checks.lock().ok().and_then(|mut c| c.take()) {
            set.abort_all();
            while set.join_next().await.is_some() {}
        }
        Ok(())
    }
}

async fn serve(
    target: &ProxyTarget,
    client: &reqwest::Client,
    label: &str,
    req: Request,
) -> Response {
    if let Some(refused) = proxy::refuse_path(req.uri().path()) {
        return refused;
    }
    let Some(backend) = target.choose() else {
        tracing::warn!(proxy = %label, prefix = %target.prefix, "no healthy backend");
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": "no healthy backend"}),
        );
    };
    let url = proxy::target_url(&backend.url, target.backend_path(&req), req.uri().query());
    match proxy::forward(client, &target.rules, label, url, req).await {
        Ok(response) | Err(response) => response,
    }
}

/// Checks one backend every `interval` until aborted.
async fn watch(
    proxy: String,
    client: reqwest::Client,
    backend: Arc<Backend>,
    path: String,
    interval: Duration,
    timeout: Duration,
    threshold: usize,
) {
    let url = proxy::target_url(&backend.url, &path, None);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let ok = matches!(
            tokio::time::timeout(timeout, client.get(&url).send()).await,
            Ok(Ok(r)) if r.status().is_success() || r.status().is_redirection()
        );
        if ok {
            backend.failures.store(0, Ordering::Relaxed);
            if !backend.healthy.swap(true, Ordering::Relaxed) {
                tracing::info!(%proxy, backend = %backend.name, "backend is healthy again");
            }
        } else {
            let failures = backend.failures.fetch_add(1, Ordering::Relaxed) + 1;
            if failures >= threshold && backend.healthy.swap(false, Ordering::Relaxed) {
                tracing::warn!(%proxy, backend = %backend.name, failures, "backend is unhealthy");
            }
        }
    }
}
