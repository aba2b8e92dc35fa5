//! Shared by modules that serve fixed endpoints on a router (`health.checker`, `api.schemas`).

use std::sync::Arc;

use wf_engine::{BuildContext, CheckContext, ConfigIssue};

use crate::Router;

/// The router an endpoint module attaches to: the configured one, else the application's only
/// `http.router`.
pub fn choose_router(
    configured: Option<&str>,
    ctx: &CheckContext<'_>,
) -> Result<String, ConfigIssue> {
    ctx.choose(configured, "router", "router", crate::ROUTER_TYPES)
}

/// At build time: the router [`choose_router`] chose. It is built already, because endpoint
/// modules declare it as a reference; validation made sure an unnamed one is the only one.
pub fn endpoint_router(
    configured: Option<&str>,
    ctx: &BuildContext<'_>,
) -> anyhow::Result<Arc<Router>> {
    ctx.named_or_only::<Router>(
        configured,
        "there is no `http.router` to serve these endpoints on",
    )
}

/// At start: the router [`choose_router`] chose, for modules that add their routes when they
/// start instead of declaring the router as a reference, so that servers may list them in
/// `dependsOn` (as the original's examples do) without a cycle through the router. Routes
/// added then are in place before any server starts (servers start last).
pub fn started_router(
    configured: Option<&str>,
    ctx: &wf_engine::StartContext,
) -> anyhow::Result<Arc<Router>> {
    let services = ctx
        .app
        .services()
        .ok_or_else(|| anyhow::anyhow!("the app's services are not available"))?;
    match configured {
        Some(name) => Ok(services.get::<Router>(name)?),
        None => services
            .all::<Router>()
            .into_iter()
            .map(|(_, router)| router)
            .next()
            .ok_or_else(|| anyhow::anyhow!("there is no `http.router` to serve on")),
    }
}

/// Adds a GET endpoint of module `handler` to `router` and records it for `wf-host inspect`
/// (at build, or at start for modules that must not depend on the router).
pub fn add_endpoint(
    router: &Router,
    app: &wf_engine::AppState,
    handler: &str,
    path: &str,
    service: crate::RouteService,
) -> anyhow::Result<()> {
    add_guarded_endpoint(router, app, handler, http::Method::GET, path, service, &[])
}

/// Where an endpoint module that adds its routes at start serves: the router it chose exists
/// (see [`choose_router`]) and each of its `middlewares` names a module.
pub fn check_routing(
    router: Option<&str>,
    middlewares: &[String],
    ctx: &CheckContext<'_>,
) -> Vec<ConfigIssue> {
    let mut issues: Vec<ConfigIssue> = choose_router(router, ctx).err().into_iter().collect();
    issues.extend(crate::workflow::check_guard(ctx, middlewares, &[], ""));
    issues
}

/// [`add_endpoint`] for any method, behind `middlewares` (the first listed sees the request first), for
/// endpoint modules that take a `middlewares` key; at start, when every middleware is built.
pub fn add_guarded_endpoint(
    router: &Router,
    app: &wf_engine::AppState,
    handler: &str,
    method: http::Method,
    path: &str,
    service: crate::RouteService,
    middlewares: &[String],
) -> anyhow::Result<()> {
    let service = if middlewares.is_empty() {
        service
    } else {
        let services = app
            .services()
            .ok_or_else(|| anyhow::anyhow!("the app's services are not available"))?;
        let layers = middlewares
            .iter()
            .map(|m| services.get::<dyn crate::HttpMiddleware>(m))
            .collect::<Result<Vec<_>, _>>()?;
        layers
            .into_iter()
            .rev()
            .fold(service, |inner, middleware| middleware.layer(inner))
    };
    let path = router.add_route(method.clone(), path, service)?;
    app.add_route(wf_engine::RouteInfo {
        server: None,
        router: router.name().to_string(),
        method: method.to_string(),
        path,
        handler: handler.to_string(),
        middlewares: middlewares.to_vec(),
        ..Default::default()
    });
    Ok(())
}

/// At start: a `GET path` endpoint of module `handler` on the router [`started_router`] finds,
/// behind `middlewares`.
pub fn add_started_endpoint(
    ctx: &wf_engine::StartContext,
    router: Option<&str>,
    handler: &str,
    path: &str,
    service: crate::RouteService,
    middlewares: &[String],
) -> anyhow::Result<()> {
    let router = started_router(router, ctx)?;
    add_guarded_endpoint(
        &router,
        &ctx.app,
        handler,
        http::Method::GET,
        path,
        service,
        middlewares,
    )
}
