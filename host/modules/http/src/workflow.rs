//! The `http` workflow (also `http-<anything>`): routes with handlers and per-route middleware
//! chains, on a named or the only server and router.
//!
//! Resolution is deterministic, unlike the original's "first one found in a map": a workflow
//! without `server:`/`router:` uses the application's only server/router, and several of them
//! make naming one a validation error.

use std::str::FromStr;
use std::sync::Arc;

use http::Method;
use schemars::JsonSchema;
use serde::Deserialize;
use wf_engine::wf_config::AppConfig;
use wf_engine::wf_config::schema::{PipelineEntry, StepEntry};

use crate::exchange::{PipelineRoute, pipeline_service};
use wf_engine::{
    Category, CheckContext, ConfigIssue, Described, RouteInfo, WireContext, WorkflowType,
};

use crate::{HttpHandler, HttpMiddleware, HttpServer, RouteService, Router};

/// Configuration of an `http` workflow.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpWorkflowConfig {
    /// The `http.server` serving these routes; optional when the application has one.
    #[serde(default)]
    pub server: Option<String>,
    /// The `http.router` holding these routes; optional when the application has one.
    #[serde(default)]
    pub router: Option<String>,
    /// The routes.
    pub routes: Vec<RouteConfig>,
}

/// One route.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// HTTP method, e.g. `GET`. `GET` routes also answer `HEAD`.
    #[schemars(regex(pattern = r"^[A-Z]+$"))]
    pub method: String,
    /// Path pattern: `/users/{id}` captures one segment, `/files/{path...}` the rest of the path,
    /// and a trailing `/` matches everything below it.
    pub path: String,
    /// The module answering this route (an `http.handler`, ...). Optional when the route has
    /// `steps` or a `pipeline`.
    #[serde(default)]
    pub handler: Option<String>,
    /// Middleware modules, outermost first: a request passes through them in this order.
    #[serde(default)]
    pub middlewares: Vec<String>,
    /// Roles of which the caller needs at least one (403 otherwise); the route needs an
    /// `http.middleware.auth` among its `middlewares` to know the caller.
    #[serde(default)]
    pub roles: Vec<String>,
    /// A pipeline run for each request to this route (`steps`, `on_error`, `timeout`, ...).
    #[serde(default)]
    pub pipeline: Option<PipelineEntry>,
    /// Short form of `pipeline: {steps: [...]}`.
    #[serde(default)]
    pub steps: Option<Vec<StepEntry>>,
    /// Largest accepted request body for a route with steps; larger ones get `413`.
    #[serde(default = "default_max_body", rename = "maxBodyBytes")]
    pub max_body_bytes: usize,
    /// Run requests durably: a run interrupted by a crash is resumed from its last recorded
    /// step, and it finishes even if the caller goes away. Needs the run journal.
    #[serde(default)]
    pub durable: bool,
    /// Answer a repeated key with the first answer instead of running again, e.g.
    /// `{header: Idempotency-Key, ttl: 24h}`. Needs the run journal.
    #[serde(default)]
    pub idempotency: Option<crate::durable::IdempotencyConfig>,
}

fn default_max_body() -> usize {
    crate::exchange::DEFAULT_MAX_BODY_BYTES
}

impl RouteConfig {
    /// The route's pipeline, in either form.
    fn pipeline_entry(&self) -> Option<(PipelineEntry, &'static str)> {
        if let Some(p) = &self.pipeline {
            return Some((p.clone(), "/pipeline"));
        }
        self.steps.as_ref().map(|steps| {
            let entry = PipelineEntry {
                steps: steps.clone(),
                ..PipelineEntry::default()
            };
            (entry, "")
        })
    }
}

pub struct HttpWorkflow;

impl Described for HttpWorkflow {
    const NAME: &'static str = "http";
    const CATEGORY: Category = Category::Http;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Routes requests to handler modules through per-route middleware chains (`http`, or `http-<name>` for more).";
    type Config = HttpWorkflowConfig;
}

/// The server and router of a workflow: the named ones; else the only router, and the only
/// server or the one server that router lists in `dependsOn`.
fn resolve(config: &HttpWorkflowConfig, app: &AppConfig) -> Result<(String, String), ConfigIssue> {
    let router = pick(
        config.router.as_deref(),
        "router",
        crate::ROUTER_TYPES,
        app,
        None,
    )?;
    let router_deps = app
        .module(&router)
        .map(|m| m.depends_on.as_slice())
        .unwrap_or_default();
    let server = pick(
        config.server.as_deref(),
        "server",
        crate::SERVER_TYPES,
        app,
        Some(router_deps),
    )?;
    Ok((server, router))
}

fn pick(
    configured: Option<&str>,
    key: &str,
    types: &[&str],
    app: &AppConfig,
    preferred: Option<&[String]>,
) -> Result<String, ConfigIssue> {
    let type_name = types.first().copied().unwrap_or_default();
    let pointer = format!("/{key}");
    if let Some(name) = configured {
        return match app.module(name).map(|m| m.type_name.as_str()) {
            Some(t) if types.contains(&t) => Ok(name.to_string()),
            Some(t) => Err(ConfigIssue::new(
                &pointer,
                format!("`{name}` is a `{t}` module, not `{type_name}`"),
            )),
            None => {
                let names = app
                    .modules
                    .iter()
                    .filter(|m| types.contains(&m.type_name.as_str()))
                    .map(|m| m.name.as_str());
                let issue = ConfigIssue::new(
                    &pointer,
                    format!("{key} `{name}` is not a module of this application"),
                );
                Err(match wf_engine::wf_config::did_you_mean(name, names) {
                    Some(s) => issue.help(format!("did you mean `{s}`?")),
                    None => issue.help(format!("declare a `{type_name}` module named `{name}`")),
                })
            }
        };
    }
    let candidates: Vec<&str> = app
        .modules
        .iter()
        .filter(|m| types.contains(&m.type_name.as_str()))
        .map(|m| m.name.as_str())
        .collect();
    if let [only] = candidates.as_slice() {
        return Ok(only.to_string());
    }
    let preferred: Vec<&str> = candidates
        .iter()
        .copied()
        .filter(|c| preferred.is_some_and(|p| p.iter().any(|d| d == c)))
        .collect();
    match (candidates.as_slice(), preferred.as_slice()) {
        (_, [chosen]) => Ok(chosen.to_string()),
        ([], _) => Err(ConfigIssue::new("", format!("there is no `{type_name}` module for these routes"))
            .help(format!("add a `{type_name}` module"))),
        (several, _) => Err(ConfigIssue::new("", format!(
            "the application has several `{type_name}` modules ({}); say which one serves these routes",
            several.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
        ))
        .help(format!("add `{key}: <name>` to this workflow"))),
    }
}

impl WorkflowType for HttpWorkflow {
    fn handles(kind: &str) -> bool {
        kind == "http" || kind.starts_with("http-")
    }

    fn check(config: &HttpWorkflowConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        issues.extend(resolve(config, ctx.config).err());
        for (i, route) in config.routes.iter().enumerate() {
            let at = |field: &str| format!("/routes/{i}/{field}");
            if Method::from_str(&route.method).is_err() {
                issues.push(ConfigIssue::new(
                    at("method"),
                    format!("`{}` is not an HTTP method", route.method),
                ));
            }
            let has_pipeline = route.pipeline.is_some() || route.steps.is_some();
            match &route.handler {
                Some(handler) => {
                    issues.extend(ctx.require_module(&at("handler"), handler, "handler"));
                    // The original ran route steps through `api.query` / `api.command` handlers
                    // (reported as not implemented when this build lacks them); any other
                    // handler and steps together is a mistake.
                    let cqrs =
                        matches!(ctx.module_type(handler), Some("api.query" | "api.command"));
                    if has_pipeline && !cqrs {
                        issues.push(
                            ConfigIssue::new(
                                at("handler"),
                                "a route has either a `handler` or steps, not both",
                            )
                            .help("remove `handler:` to serve the route with its steps"),
                        );
                    }
                }
                None if has_pipeline => {}
                None => issues.push(
                    ConfigIssue::new(
                        format!("/routes/{i}"),
                        "the route has neither a `handler` nor steps",
                    )
                    .help("add `handler: <module>` or `steps: [...]`"),
                ),
            }
            if route.pipeline.as_ref().is_some_and(|p| p.trigger.is_some()) {
                issues.push(
                    ConfigIssue::new(
                        at("pipeline/trigger"),
                        "a route's pipeline is started by its route; it takes no `trigger`",
                    )
                    .help("remove `trigger:`, or move the pipeline under `pipelines:`"),
                );
            }
            if route.pipeline.is_some() && route.steps.is_some() {
                issues.push(ConfigIssue::new(
                    at("steps"),
                    "give the route `steps` or a `pipeline`, not both",
                ));
            }
            issues.extend(check_guard(
                ctx,
                &route.middlewares,
                &route.roles,
                &format!("/routes/{i}"),
            ));
        }
        issues
    }

    fn configure(config: HttpWorkflowConfig, ctx: &mut WireContext<'_>) -> anyhow::Result<()> {
        let (server_name, router_name) =
            resolve(&config, ctx.config).map_err(|e| anyhow::anyhow!(e.message))?;
        let server = ctx.service::<HttpServer>(&server_name)?;
        let router = ctx.service::<Router>(&router_name)?;
        if let Err(e) = server.attach(router.clone()) {
            ctx.issue(ConfigIssue::new(
                if config.server.is_some() {
                    "/server"
                } else {
                    ""
                },
                e,
            ));
        }
        let mut preflights = Vec::new();
        for (i, route) in config.routes.into_iter().enumerate() {
            // What the route's pipeline says of requests and answers, for the OpenAPI document.
            let mut documented = (None, None);
            let endpoint = if let Some((entry, pointer)) = route.pipeline_entry() {
                let name = format!("{} {} {}", ctx.kind, route.method, route.path);
                let pointer = format!("/routes/{i}{pointer}");
                let Some(pipeline) = ctx.build_pipeline(&name, &entry, &pointer) else {
                    continue;
                };
                documented = (pipeline.documented_input(), pipeline.documented_status());
                let source = format!("{} {}", route.method, route.path);
                let (durable, idempotency) = crate::durable::route_settings(
                    ctx,
                    &pipeline,
                    route.durable,
                    route.idempotency.as_ref(),
                    &source,
                    &format!("/routes/{i}"),
                );
                let options = PipelineRoute {
                    max_body_bytes: route.max_body_bytes,
                    source,
                    durable,
                    idempotency,
                    ..PipelineRoute::default()
                };
                // An `api.query` / `api.command` handler shapes the run's data its own way.
                let cqrs = route
                    .handler
                    .as_deref()
                    .and_then(|h| ctx.service::<dyn crate::cqrs::RoutePipelineHandler>(h).ok());
                match cqrs {
                    Some(handler) => (
                        handler.route_service(pipeline, options),
                        route.handler.clone().unwrap_or_default(),
                    ),
                    None => (pipeline_service(pipeline, options), "steps".to_string()),
                }
            } else {
                let Some(name) = route.handler.clone() else {
                    continue;
                };
                if route.durable || route.idempotency.is_some() {
                    ctx.issue(ConfigIssue::new(
                        format!("/routes/{i}"),
                        "`durable` and `idempotency` apply to routes with `steps` or a `pipeline`",
                    ));
                }
                match ctx.service::<dyn HttpHandler>(&name) {
                    Ok(handler) => (handler.service(), name),
                    Err(e) => {
                        ctx.issue(ConfigIssue::new(
                            format!("/routes/{i}/handler"),
                            e.to_string(),
                        ));
                        continue;
                    }
                }
            };
            let (endpoint, handler_label) = endpoint;
            let service = guard(
                ctx,
                endpoint,
                &route.middlewares,
                route.roles,
                &format!("/routes/{i}"),
            );
            let Ok(method) = Method::from_str(&route.method) else {
                continue;
            };
            preflights.push((route.path.clone(), route.middlewares.clone()));
            match router.add_route(method, &route.path, service) {
                Ok(path) => ctx.app.add_route(RouteInfo {
                    server: Some(server_name.clone()),
                    router: router_name.clone(),
                    method: route.method,
                    path,
                    handler: handler_label,
                    middlewares: route.middlewares,
                    request_schema: documented.0,
                    success_status: documented.1,
                }),
                Err(e) => ctx.issue(ConfigIssue::new(format!("/routes/{i}/path"), e.to_string())),
            }
        }
        // After the declared routes, so that a declared `OPTIONS` route wins.
        for (path, middlewares) in preflights {
            add_preflight(ctx, &router, &path, &middlewares);
        }
        Ok(())
    }
}

/// Checks a route's `middlewares` and `roles`: each middleware exists, and roles come with an
/// authentication middleware that can tell who the caller is.
pub(crate) fn check_guard(
    ctx: &CheckContext<'_>,
    middlewares: &[String],
    roles: &[String],
    route_pointer: &str,
) -> Vec<ConfigIssue> {
    let mut issues: Vec<ConfigIssue> = middlewares
        .iter()
        .enumerate()
        .filter_map(|(j, m)| {
            ctx.require_module(&format!("{route_pointer}/middlewares/{j}"), m, "middleware")
        })
        .collect();
    let authenticated = middlewares
        .iter()
        .any(|m| ctx.module_type(m) == Some(crate::middleware_auth::AuthMiddlewareType::NAME));
    if !roles.is_empty() && !authenticated {
        issues.push(
            ConfigIssue::new(
                format!("{route_pointer}/roles"),
                "`roles` needs an authentication middleware on the route to know the caller",
            )
            .help("add an `http.middleware.auth` module to the route's `middlewares`"),
        );
    }
    issues
}

/// Puts a route's endpoint behind its role requirement and its middlewares; the first listed
/// middleware sees the request first.
pub(crate) fn guard(
    ctx: &mut WireContext<'_>,
    endpoint: RouteService,
    middlewares: &[String],
    roles: Vec<String>,
    route_pointer: &str,
) -> RouteService {
    let mut layers: Vec<Arc<dyn HttpMiddleware>> = Vec::new();
    for (j, name) in middlewares.iter().enumerate() {
        match ctx.service::<dyn HttpMiddleware>(name) {
            Ok(m) => layers.push(m),
            Err(e) => ctx.issue(ConfigIssue::new(
                format!("{route_pointer}/middlewares/{j}"),
                e.to_string(),
            )),
        }
    }
    let endpoint = crate::middleware_auth::require_roles(roles, endpoint);
    layers
        .into_iter()
        .rev()
        .fold(endpoint, |inner, middleware| middleware.layer(inner))
}

/// For a route with a CORS middleware, an `OPTIONS` route on its path answering preflights
/// (the original left them to the router's 405). Only the CORS middleware sees it: browsers
/// send preflights without credentials, so an authentication middleware would refuse them.
/// Routes sharing a path share it; a declared `OPTIONS` route wins.
pub(crate) fn add_preflight(
    ctx: &WireContext<'_>,
    router: &Router,
    path: &str,
    middlewares: &[String],
) {
    let cors = middlewares
        .iter()
        .find(|m| ctx.module_type(m) == Some(crate::middleware_cors::CorsType::NAME))
        .and_then(|m| ctx.service::<dyn HttpMiddleware>(m).ok());
    if let Some(cors) = cors {
        let service = cors.layer(crate::middleware_cors::options_endpoint());
        // Already there (another method on this path, or a declared OPTIONS route): fine.
        let _ = router.add_route(Method::OPTIONS, path, service);
    }
}
