//! `http.router`: method + path routing with `{param}` and `{rest...}` wildcards, 404, 405 with
//! `Allow`, and HEAD answered by GET routes — the semantics of the Go 1.22 mux the original used.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::{HeaderValue, Method, StatusCode, header};
use schemars::JsonSchema;
use serde::Deserialize;
use wf_engine::{BuildContext, Category, Described, Module, ModuleType};

use crate::{Request, Response, RouteService, text_response};

/// Configuration of `http.router`. Routes come from `http` workflows and from endpoint modules
/// such as `health.checker`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpRouterConfig {
    /// A path prefix for every route of this router, e.g. `/api`: a route `/users` is served at
    /// `/api/users`.
    #[serde(default)]
    pub prefix: Option<String>,
}

pub struct HttpRouterType;

impl Described for HttpRouterType {
    const NAME: &'static str = "http.router";
    const CATEGORY: Category = Category::Http;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Routes requests by method and path (`/users/{id}`, `/files/{path...}`) to handlers; 404 and 405 with `Allow` otherwise.";
    type Config = HttpRouterConfig;
}

impl ModuleType for HttpRouterType {
    fn check(
        config: &HttpRouterConfig,
        _: &wf_engine::CheckContext<'_>,
    ) -> Vec<wf_engine::ConfigIssue> {
        match &config.prefix {
            Some(p) if !p.starts_with('/') || p.contains('{') => {
                vec![wf_engine::ConfigIssue::new(
                    "/prefix",
                    format!("`{p}` must start with `/` and contain no `{{parameters}}`"),
                )]
            }
            _ => Vec::new(),
        }
    }

    fn build(
        config: HttpRouterConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        let mut router = Router::new(ctx.name);
        router.prefix = config
            .prefix
            .map(|p| p.trim_end_matches('/').to_string())
            .unwrap_or_default();
        let router = Arc::new(router);
        ctx.provide::<Router>(router.clone());
        Ok(router)
    }
}

/// `chimux.router`: `http.router` under the name the original's documentation gives it (its
/// code never registered it).
pub struct ChimuxRouterType;

impl Described for ChimuxRouterType {
    const NAME: &'static str = "chimux.router";
    const CATEGORY: Category = Category::Http;
    const PLUGIN: &'static str = "modular-compat";
    const DESCRIPTION: &'static str = "The `http.router` module under the original's modular name.";
    type Config = HttpRouterConfig;
}

impl ModuleType for ChimuxRouterType {
    fn check(
        config: &HttpRouterConfig,
        ctx: &wf_engine::CheckContext<'_>,
    ) -> Vec<wf_engine::ConfigIssue> {
        HttpRouterType::check(config, ctx)
    }

    fn build(
        config: HttpRouterConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        HttpRouterType::build(config, ctx)
    }
}

/// The catch-all a pattern ending in `/` gets, so it matches the whole subtree like Go's mux.
const SUBTREE: &str = "__subtree";

/// Path parameters of the matched route, in the request's extensions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathParams(pub Vec<(String, String)>);

impl PathParams {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The route pattern that matched, in the request's extensions (e.g. `/users/{id}`), as
/// served: with the router's prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatchedRoute(pub Arc<str>);

impl MatchedRoute {
    /// What of `path` lies below a prefix route (`/assets` or the subtree `/assets/`): the rest
    /// after the route's literal path, router prefix included. `/assets/app.js` → `/app.js`.
    pub fn rest_of<'a>(&self, path: &'a str) -> &'a str {
        let literal = self.0.trim_end_matches('/');
        path.strip_prefix(literal).unwrap_or(path)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConflict(pub String);

impl std::fmt::Display for RouteConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RouteConflict {}

struct Route {
    method: Method,
    /// As written (`/files/{path...}`).
    pattern: Arc<str>,
    service: RouteService,
}

/// Compiled routes: one matcher over paths, then a method table per path.
#[derive(Default)]
struct Table {
    matcher: matchit::Router<usize>,
    /// Per matched path: method → index into `routes`, and the pattern (for conflict messages).
    paths: Vec<(String, BTreeMap<String, usize>)>,
    routes: Vec<Route>,
}

pub struct Router {
    name: String,
    /// Prepended to every route's path (no trailing `/`).
    prefix: String,
    /// Every route added so far, in order; the table is rebuilt from it on each addition so the
    /// serving path only ever reads an immutable table.
    routes: Mutex<Vec<(Method, String, RouteService)>>,
    table: ArcSwap<Table>,
    /// Told of each answered request (metrics); empty unless a collector is installed.
    observers: ArcSwap<Vec<Arc<dyn RequestObserver>>>,
}

/// Told of every request a router answers, for metrics. Called on the request's task, so it
/// must be quick and never block.
pub trait RequestObserver: Send + Sync {
    /// `route` is the matched pattern (`/users/{id}`), or `""` when no route matched — never
    /// the raw path, whose values would make one series per URL.
    fn request_finished(&self, method: &Method, route: &str, status: StatusCode, elapsed: Duration);
}

impl Router {
    pub fn new(name: &str) -> Self {
        Router {
            name: name.to_string(),
            prefix: String::new(),
            routes: Mutex::default(),
            table: ArcSwap::from_pointee(Table::default()),
            observers: ArcSwap::from_pointee(Vec::new()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds a route and returns the path it is served at (with the router's `prefix`). Fails,
    /// leaving the router unchanged, when the pattern is malformed or already routed.
    pub fn add_route(
        &self,
        method: Method,
        pattern: &str,
        service: RouteService,
    ) -> Result<String, RouteConflict> {
        let mut routes = self
            .routes
            .lock()
            .map_err(|_| RouteConflict("router lock poisoned".into()))?;
        let pattern = self.served_pattern(pattern);
        routes.push((method, pattern.clone(), service));
        match compile(&routes) {
            Ok(table) => {
                self.table.store(Arc::new(table));
                Ok(pattern)
            }
            Err(e) => {
                routes.pop();
                Err(e)
            }
        }
    }

    /// Where `pattern` is served: with the router's `prefix` in front, unless it is spelled
    /// with it already.
    fn served_pattern(&self, pattern: &str) -> String {
        if self.prefix.is_empty() || !pattern.starts_with('/') || has_prefix(pattern, &self.prefix)
        {
            pattern.to_string()
        } else {
            format!("{}{pattern}", self.prefix)
        }
    }

    /// `(method, pattern)` of every route, in the order added.
    pub fn routes(&self) -> Vec<(Method, String)> {
        self.routes
            .lock()
            .map(|r| r.iter().map(|(m, p, _)| (m.clone(), p.clone())).collect())
            .unwrap_or_default()
    }

    pub fn add_observer(&self, observer: Arc<dyn RequestObserver>) {
        self.observers.rcu(|current| {
            let mut next = Vec::clone(current);
            next.push(observer.clone());
            next
        });
    }

    /// Routes one request. A caller's W3C `traceparent` is the trace context of everything the
    /// request starts, whatever handles it (a pipeline, a state machine's hooks).
    pub async fn dispatch(&self, req: Request) -> Response {
        let parent = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(wf_engine::trace::TraceContext::parse);
        match parent {
            Some(parent) => wf_engine::trace::scope_remote(parent, self.observed(req)).await,
            None => self.observed(req).await,
        }
    }

    async fn observed(&self, req: Request) -> Response {
        let observers = self.observers.load();
        if observers.is_empty() {
            return self.route(req).await.0;
        }
        let started = Instant::now();
        let method = req.method().clone();
        let (response, pattern) = self.route(req).await;
        let elapsed = started.elapsed();
        let route = pattern.as_deref().unwrap_or_default();
        for observer in observers.iter() {
            observer.request_finished(&method, route, response.status(), elapsed);
        }
        response
    }

    /// Routes one request; the matched pattern comes back with the response.
    async fn route(&self, mut req: Request) -> (Response, Option<Arc<str>>) {
        let table = self.table.load_full();
        let (index, params) = match table.matcher.at(req.uri().path()) {
            Ok(matched) => {
                let params = PathParams(
                    matched
                        .params
                        .iter()
                        .filter(|(k, _)| *k != SUBTREE) // our own catch-all, not a user parameter
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                );
                (*matched.value, params)
            }
            Err(_) => {
                return (
                    text_response(StatusCode::NOT_FOUND, "404 page not found"),
                    None,
                );
            }
        };
        let (_, methods) = &table.paths[index];
        let route = methods.get(req.method().as_str()).or_else(|| {
            (req.method() == Method::HEAD)
                .then(|| methods.get("GET"))
                .flatten()
        });
        let Some(&route) = route else {
            return (method_not_allowed(methods), None);
        };
        let route = &table.routes[route];
        req.extensions_mut().insert(params);
        req.extensions_mut()
            .insert(MatchedRoute(route.pattern.clone()));
        (
            crate::call(route.service.clone(), req).await,
            Some(route.pattern.clone()),
        )
    }
}

/// Whether `pattern` already starts with the whole `prefix`: the original ignored `prefix`, so
/// its configs spell routes in full (`prefix: /api` with `/api/products`), and those are not
/// prefixed twice.
fn has_prefix(pattern: &str, prefix: &str) -> bool {
    pattern
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn method_not_allowed(methods: &BTreeMap<String, usize>) -> Response {
    let mut allowed: Vec<&str> = methods.keys().map(String::as_str).collect();
    if methods.contains_key("GET") && !methods.contains_key("HEAD") {
        allowed.push("HEAD");
    }
    allowed.sort_unstable();
    let mut response = text_response(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    if let Ok(value) = HeaderValue::from_str(&allowed.join(", ")) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

/// Go mux syntax → matchit syntax: `{rest...}` → `{*rest}`; a trailing `/` matches the subtree.
fn matcher_patterns(pattern: &str) -> Result<Vec<String>, RouteConflict> {
    if !pattern.starts_with('/') {
        return Err(RouteConflict(format!(
            "path `{pattern}` must start with `/`"
        )));
    }
    // `/orders/:id` (the style of the original's trigger examples) means `/orders/{id}`.
    let braced = colon_params(pattern);
    let pattern = braced.as_str();
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| RouteConflict(format!("path `{pattern}` has a `{{` without `}}`")))?;
        let name = &rest[open + 1..open + close];
        let segment_ends =
            rest[open + close + 1..].is_empty() || rest[open + close + 1..].starts_with('/');
        if let Some(base) = name.strip_suffix("...") {
            if !rest[open + close + 1..].is_empty() {
                return Err(RouteConflict(format!(
                    "in `{pattern}`, `{{{name}}}` must be the last segment"
                )));
            }
            check_param(pattern, base)?;
            out.push_str(&format!("{{*{base}}}"));
        } else if name == "$" {
            // `{$}` anchors the end: the pattern without it matches exactly.
            if !rest[open + close + 1..].is_empty() {
                return Err(RouteConflict(format!(
                    "in `{pattern}`, `{{$}}` must come last"
                )));
            }
            return Ok(vec![out]);
        } else {
            check_param(pattern, name)?;
            if !segment_ends || !out.ends_with('/') {
                return Err(RouteConflict(format!(
                    "in `{pattern}`, `{{{name}}}` must fill a whole path segment"
                )));
            }
            out.push_str(&format!("{{{name}}}"));
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    if out.ends_with('/') {
        // Go: a pattern ending in `/` matches every path below it.
        Ok(vec![out.clone(), format!("{out}{{*{SUBTREE}}}")])
    } else {
        Ok(vec![out])
    }
}

/// `:name` path segments as `{name}`.
fn colon_params(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|segment| match segment.strip_prefix(':') {
            Some(name)
                if !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                format!("{{{name}}}")
            }
            _ => segment.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// matchit syntax back to what the user wrote: `{*rest}` → `{rest...}`.
fn go_pattern(matcher_pattern: &str) -> String {
    let trimmed = matcher_pattern
        .strip_suffix(&format!("{{*{SUBTREE}}}"))
        .unwrap_or(matcher_pattern);
    match trimmed.find("{*") {
        Some(i) => format!(
            "{}{{{}...}}",
            &trimmed[..i],
            trimmed[i + 2..].trim_end_matches('}')
        ),
        None => trimmed.to_string(),
    }
}

fn check_param(pattern: &str, name: &str) -> Result<(), RouteConflict> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(RouteConflict(format!(
            "in `{pattern}`, `{{{name}}}` is not a valid parameter name (letters, digits and `_`)"
        )));
    }
    Ok(())
}

fn compile(routes: &[(Method, String, RouteService)]) -> Result<Table, RouteConflict> {
    let mut table = Table::default();
    let mut by_matcher: BTreeMap<String, usize> = BTreeMap::new();
    for (method, pattern, service) in routes {
        let route_index = table.routes.len();
        table.routes.push(Route {
            method: method.clone(),
            pattern: Arc::from(pattern.as_str()),
            service: service.clone(),
        });
        for matcher_pattern in matcher_patterns(pattern)? {
            let path_index = match by_matcher.get(&matcher_pattern) {
                Some(&i) => i,
                None => {
                    let i = table.paths.len();
                    table.matcher.insert(matcher_pattern.clone(), i).map_err(|e| match e {
                        matchit::InsertError::Conflict { with } => RouteConflict(format!(
                            "`{method} {pattern}` conflicts with route `{}`; routes matching the same paths must use the same parameter names",
                            go_pattern(&with)
                        )),
                        other => RouteConflict(format!("`{method} {pattern}`: {other}")),
                    })?;
                    by_matcher.insert(matcher_pattern.clone(), i);
                    table.paths.push((pattern.clone(), BTreeMap::new()));
                    i
                }
            };
            let (first_pattern, methods) = &mut table.paths[path_index];
            if let Some(&existing) = methods.get(method.as_str()) {
                let other = &table.routes[existing];
                let same = other.pattern.as_ref() == pattern.as_str();
                return Err(RouteConflict(if same {
                    format!("`{method} {pattern}` is routed twice")
                } else {
                    format!(
                        "`{method} {pattern}` is already routed as `{} {}`",
                        other.method, other.pattern
                    )
                }));
            }
            // `:id` and `{id}` are the same pattern.
            if colon_params(first_pattern) != colon_params(pattern)
                && !matcher_pattern.ends_with(&format!("{{*{SUBTREE}}}"))
            {
                // Same shape, different parameter names: the names would be ambiguous.
                return Err(RouteConflict(format!(
                    "`{method} {pattern}` and `{first_pattern}` match the same paths; use the same parameter names"
                )));
            }
            methods.insert(method.as_str().to_string(), route_index);
        }
    }
    Ok(table)
}

/// Routers do nothing when started or stopped: servers read their table.
impl Module for Router {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route_fn;
    use axum::body::Body;
    use http_body_util::BodyExt;

    fn echo(label: &'static str) -> RouteService {
        route_fn(move |req: Request| async move {
            let params = req
                .extensions()
                .get::<PathParams>()
                .cloned()
                .unwrap_or_default();
            let text = format!("{label} {:?}", params.0);
            http::Response::new(Body::from(text))
        })
    }

    async fn call(
        router: &Router,
        method: &str,
        path: &str,
    ) -> (StatusCode, String, Option<String>) {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let res = router.dispatch(req).await;
        let status = res.status();
        let allow = res
            .headers()
            .get(header::ALLOW)
            .map(|v| v.to_str().unwrap().to_string());
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned(), allow)
    }

    #[tokio::test]
    async fn params_wildcards_404_405_and_head() {
        let r = Router::new("r");
        r.add_route(Method::GET, "/users/{id}", echo("get-user"))
            .unwrap();
        r.add_route(Method::POST, "/users/{id}", echo("post-user"))
            .unwrap();
        r.add_route(Method::GET, "/files/{path...}", echo("file"))
            .unwrap();
        r.add_route(Method::GET, "/users", echo("list")).unwrap();

        assert_eq!(
            call(&r, "GET", "/users/42").await.1,
            r#"get-user [("id", "42")]"#
        );
        assert_eq!(
            call(&r, "POST", "/users/7").await.1,
            r#"post-user [("id", "7")]"#
        );
        assert_eq!(
            call(&r, "GET", "/files/a/b/c.txt").await.1,
            r#"file [("path", "a/b/c.txt")]"#
        );
        assert_eq!(call(&r, "HEAD", "/users").await.0, StatusCode::OK);

        let (status, body, _) = call(&r, "GET", "/nope").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::NOT_FOUND, "404 page not found\n")
        );

        let (status, body, allow) = call(&r, "DELETE", "/users/1").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(body, "Method Not Allowed\n");
        assert_eq!(allow.as_deref(), Some("GET, HEAD, POST"));
    }

    #[tokio::test]
    async fn trailing_slash_matches_the_subtree() {
        let r = Router::new("r");
        r.add_route(Method::GET, "/static/", echo("static"))
            .unwrap();
        assert_eq!(call(&r, "GET", "/static/").await.0, StatusCode::OK);
        assert_eq!(
            call(&r, "GET", "/static/css/site.css").await.0,
            StatusCode::OK
        );
        assert_eq!(call(&r, "GET", "/static").await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn prefix_applies_to_every_route() {
        let mut r = Router::new("r");
        r.prefix = "/api".into();
        r.add_route(Method::GET, "/users/{id}", echo("user"))
            .unwrap();
        assert_eq!(call(&r, "GET", "/api/users/1").await.0, StatusCode::OK);
        assert_eq!(call(&r, "GET", "/users/1").await.0, StatusCode::NOT_FOUND);
        // Spelled in full, as the original's configs do: not prefixed twice.
        r.add_route(Method::GET, "/api/products", echo("p"))
            .unwrap();
        r.add_route(Method::GET, "/apis", echo("q")).unwrap();
        assert_eq!(call(&r, "GET", "/api/products").await.0, StatusCode::OK);
        assert_eq!(call(&r, "GET", "/api/apis").await.0, StatusCode::OK);
    }

    #[test]
    fn conflicts_and_bad_patterns_are_refused_and_change_nothing() {
        let r = Router::new("r");
        r.add_route(Method::GET, "/users/{id}", echo("a")).unwrap();
        let dup = r
            .add_route(Method::GET, "/users/{id}", echo("b"))
            .unwrap_err();
        assert_eq!(dup.0, "`GET /users/{id}` is routed twice");
        let names = r
            .add_route(Method::POST, "/users/{uid}", echo("c"))
            .unwrap_err();
        assert_eq!(
            names.0,
            "`POST /users/{uid}` conflicts with route `/users/{id}`; routes matching the same paths must use the same parameter names"
        );
        // The original's `:id` spelling is the same pattern as `{id}`.
        r.add_route(Method::DELETE, "/users/:id", echo("g"))
            .unwrap();
        assert!(
            r.add_route(Method::GET, "users", echo("d"))
                .unwrap_err()
                .0
                .contains("must start with `/`")
        );
        assert!(
            r.add_route(Method::GET, "/a/{x...}/b", echo("e"))
                .unwrap_err()
                .0
                .contains("last segment")
        );
        assert!(
            r.add_route(Method::GET, "/a/b{x}", echo("f"))
                .unwrap_err()
                .0
                .contains("whole path segment")
        );
        assert_eq!(r.routes().len(), 2, "only the two good routes");
    }
}
