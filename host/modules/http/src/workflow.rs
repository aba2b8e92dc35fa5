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
use serde_json::Value;
use wf_engine::{
    Category, CheckContext, ConfigIssue, Described, RouteInfo, WireContext, WorkflowType,
};

use crate::{HttpHandler, HttpMiddleware, HttpServer, Router};

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
    /// The module answering this route (an `http.handler`, an `api.query`, ...).
    pub handler: String,
    /// Middleware modules, outermost first: a request passes through them in this order.
    #[serde(default)]
    pub middlewares: Vec<String>,
    /// Steps run for this route by an `api.query` or `api.command` handler.
    #[serde(default)]
    pub pipeline: Option<Value>,
    /// Short form of `pipeline: {steps: [...]}`.
    #[serde(default)]
    pub steps: Option<Value>,
}

pub struct HttpWorkflow;

impl Described for HttpWorkflow {
    const NAME: &'static str = "http";
    const CATEGORY: Category = Category::Http;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Routes requests to handler modules through per-route middleware chains (`http`, or `http-<name>` for more).";
    type Config = HttpWorkflowConfig;
}

/// The configured module, else the application's only module of `type_name`.
fn choose(
    configured: Option<&str>,
    key: &str,
    type_name: &str,
    ctx: &CheckContext<'_>,
) -> Result<String, ConfigIssue> {
    let pointer = format!("/{key}");
    if let Some(name) = configured {
        if let Some(issue) = ctx.require_module(&pointer, name, key) {
            return Err(issue);
        }
        return match ctx.module_type(name) {
            Some(t) if t == type_name => Ok(name.to_string()),
            Some(t) => Err(ConfigIssue::new(
                &pointer,
                format!("`{name}` is a `{t}` module, not `{type_name}`"),
            )),
            None => Err(ConfigIssue::new(
                &pointer,
                format!("`{name}` is not a module"),
            )),
        };
    }
    match ctx.modules_of_type(&[type_name]).as_slice() {
        [only] => Ok(only.to_string()),
        [] => Err(ConfigIssue::new("", format!("there is no `{type_name}` module for these routes"))
            .help(format!("add a `{type_name}` module"))),
        several => Err(ConfigIssue::new("", format!(
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
        issues.extend(choose(config.server.as_deref(), "server", "http.server", ctx).err());
        issues.extend(choose(config.router.as_deref(), "router", "http.router", ctx).err());
        for (i, route) in config.routes.iter().enumerate() {
            let at = |field: &str| format!("/routes/{i}/{field}");
            if Method::from_str(&route.method).is_err() {
                issues.push(ConfigIssue::new(
                    at("method"),
                    format!("`{}` is not an HTTP method", route.method),
                ));
            }
            issues.extend(ctx.require_module(&at("handler"), &route.handler, "handler"));
            for (j, middleware) in route.middlewares.iter().enumerate() {
                issues.extend(ctx.require_module(
                    &format!("/routes/{i}/middlewares/{j}"),
                    middleware,
                    "middleware",
                ));
            }
            for field in ["pipeline", "steps"] {
                let present = if field == "pipeline" {
                    route.pipeline.is_some()
                } else {
                    route.steps.is_some()
                };
                if present {
                    issues.push(
                        ConfigIssue::new(at(field), "route pipelines are not implemented in this build yet")
                            .help("remove the route's steps for now, or answer the route with an `http.handler`"),
                    );
                }
            }
        }
        issues
    }

    fn configure(config: HttpWorkflowConfig, ctx: &mut WireContext<'_>) -> anyhow::Result<()> {
        let server_name = only_or_named::<HttpServer>(config.server.as_deref(), ctx)?;
        let router_name = only_or_named::<Router>(config.router.as_deref(), ctx)?;
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
        for (i, route) in config.routes.into_iter().enumerate() {
            let handler = match ctx.service::<dyn HttpHandler>(&route.handler) {
                Ok(handler) => handler,
                Err(e) => {
                    ctx.issue(ConfigIssue::new(
                        format!("/routes/{i}/handler"),
                        e.to_string(),
                    ));
                    continue;
                }
            };
            let mut middlewares: Vec<Arc<dyn HttpMiddleware>> = Vec::new();
            for (j, name) in route.middlewares.iter().enumerate() {
                match ctx.service::<dyn HttpMiddleware>(name) {
                    Ok(m) => middlewares.push(m),
                    Err(e) => ctx.issue(ConfigIssue::new(
                        format!("/routes/{i}/middlewares/{j}"),
                        e.to_string(),
                    )),
                }
            }
            // The first listed middleware must see the request first, so it is applied last.
            let service = middlewares
                .into_iter()
                .rev()
                .fold(handler.service(), |inner, middleware| {
                    middleware.layer(inner)
                });
            let Ok(method) = Method::from_str(&route.method) else {
                continue;
            };
            match router.add_route(method, &route.path, service) {
                Ok(()) => ctx.app.add_route(RouteInfo {
                    server: server_name.clone(),
                    router: router_name.clone(),
                    method: route.method,
                    path: route.path,
                    handler: route.handler,
                    middlewares: route.middlewares,
                }),
                Err(e) => ctx.issue(ConfigIssue::new(format!("/routes/{i}/path"), e.to_string())),
            }
        }
        Ok(())
    }
}

/// At wiring time, validation has already made sure the choice exists and is unambiguous.
fn only_or_named<T: wf_engine::ServiceKind + ?Sized>(
    configured: Option<&str>,
    ctx: &WireContext<'_>,
) -> anyhow::Result<String> {
    if let Some(name) = configured {
        return Ok(name.to_string());
    }
    let all = ctx.all::<T>();
    match all.as_slice() {
        [(only, _)] => Ok(only.to_string()),
        _ => anyhow::bail!("expected exactly one {}, found {}", T::LABEL, all.len()),
    }
}
