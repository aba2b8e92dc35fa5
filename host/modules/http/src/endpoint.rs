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
    if let Some(name) = configured {
        if let Some(issue) = ctx.require_module("/router", name, "router") {
            return Err(issue);
        }
        if ctx.module_type(name) != Some("http.router") {
            return Err(ConfigIssue::new(
                "/router",
                format!("`{name}` is not an `http.router` module"),
            ));
        }
        return Ok(name.to_string());
    }
    match ctx.modules_of_type(&["http.router"]).as_slice() {
        [only] => Ok(only.to_string()),
        [] => Err(
            ConfigIssue::new("", "there is no `http.router` to serve these endpoints on")
                .help("add an `http.router` module (and an `http.server` for it)"),
        ),
        several => Err(ConfigIssue::new(
            "",
            format!(
                "the application has several routers ({}); choose one",
                several
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .help("add `router: <name>` to this module's config")),
    }
}

/// At build time: the router [`choose_router`] chose. It is built already, because endpoint
/// modules declare it as a reference; validation made sure an unnamed one is the only one.
pub fn endpoint_router(
    configured: Option<&str>,
    ctx: &BuildContext<'_>,
) -> anyhow::Result<Arc<Router>> {
    match configured {
        Some(name) => Ok(ctx.service::<Router>(name)?),
        None => ctx
            .all::<Router>()
            .into_iter()
            .map(|(_, r)| r)
            .next()
            .ok_or_else(|| {
                anyhow::anyhow!("there is no `http.router` to serve these endpoints on")
            }),
    }
}

/// Adds a GET endpoint to `router` and records it for `wf-host inspect`.
pub fn add_endpoint(
    router: &Router,
    ctx: &BuildContext<'_>,
    path: &str,
    service: crate::RouteService,
) -> anyhow::Result<()> {
    let path = router.add_route(http::Method::GET, path, service)?;
    ctx.app.add_route(wf_engine::RouteInfo {
        server: None,
        router: router.name().to_string(),
        method: "GET".to_string(),
        path,
        handler: ctx.name.to_string(),
        middlewares: Vec::new(),
    });
    Ok(())
}
