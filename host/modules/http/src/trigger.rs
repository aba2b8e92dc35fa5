//! The `http` trigger: routes that start pipelines. It serves both top-level
//! `triggers: {http: {routes: [...]}}` and a pipeline's inline `trigger: {type: http, config:
//! {path, method}}` — which the original accepted but never served.

use std::sync::Arc;

use http::Method;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use wf_engine::{
    Category, CheckContext, ConfigIssue, Described, Dispatch, RouteInfo, StartContext, Trigger,
    TriggerType, WireContext, async_trait,
};

use crate::Router;
use crate::endpoint::choose_router;
use crate::exchange::{DEFAULT_MAX_BODY_BYTES, PipelineRoute, action_service, pipeline_service};

/// Configuration of the `http` trigger.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpTriggerConfig {
    /// The `http.router` to add the routes to; optional when the application has one.
    #[serde(default)]
    pub router: Option<String>,
    /// Routes, each starting a pipeline.
    pub routes: Vec<HttpTriggerRoute>,
}

/// One route that starts a pipeline.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpTriggerRoute {
    /// Path pattern, as for `http` workflow routes.
    pub path: String,
    /// HTTP method.
    #[serde(default = "default_method")]
    #[schemars(regex(pattern = r"^[A-Z]+$"))]
    pub method: String,
    /// What the entry starts: `pipeline` (or the original's `workflow`, `action`) and `params`.
    #[serde(flatten)]
    pub target: wf_engine::TriggerTarget,
    /// Largest accepted request body; larger ones get `413`.
    #[serde(default = "default_max_body", rename = "maxBodyBytes")]
    #[schemars(range(min = 0))]
    pub max_body_bytes: usize,
    /// Middleware modules, outermost first (as for `http` workflow routes).
    #[serde(default)]
    pub middlewares: Vec<String>,
    /// Roles of which the caller needs at least one; needs an `http.middleware.auth` among
    /// `middlewares`.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Run requests durably: a run interrupted by a crash is resumed from its last recorded
    /// step, and it finishes even if the caller goes away. Needs the run journal.
    #[serde(default)]
    pub durable: bool,
    /// Answer a repeated key with the first answer instead of running again, e.g.
    /// `{header: Idempotency-Key, ttl: 24h}`. Needs the run journal.
    #[serde(default)]
    pub idempotency: Option<crate::durable::IdempotencyConfig>,
}

fn default_method() -> String {
    "POST".to_string()
}

fn default_max_body() -> usize {
    DEFAULT_MAX_BODY_BYTES
}

pub struct HttpTriggerType;

impl Described for HttpTriggerType {
    const NAME: &'static str = "http";
    const CATEGORY: Category = Category::Http;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Starts a pipeline for each request to a route; the JSON body, path and query parameters become its data.";
    type Config = HttpTriggerConfig;
}

impl TriggerType for HttpTriggerType {
    fn check(config: &HttpTriggerConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues: Vec<ConfigIssue> = choose_router(config.router.as_deref(), ctx)
            .err()
            .into_iter()
            .collect();
        for (i, route) in config.routes.iter().enumerate() {
            let pointer = format!("/routes/{i}");
            issues.extend(route.target.check(ctx, &pointer));
            issues.extend(crate::workflow::check_guard(
                ctx,
                &route.middlewares,
                &route.roles,
                &pointer,
            ));
        }
        issues
    }

    fn configure(
        config: HttpTriggerConfig,
        ctx: &mut WireContext<'_>,
    ) -> anyhow::Result<Arc<dyn Trigger>> {
        // The same choice validation made (the named router, or the only one).
        let router_name = ctx
            .check()
            .choose(
                config.router.as_deref(),
                "router",
                "router",
                crate::ROUTER_TYPES,
            )
            .map_err(|issue| anyhow::anyhow!(issue.message))?;
        let router = ctx.service::<Router>(&router_name)?;
        for (i, route) in config.routes.into_iter().enumerate() {
            let Some(dispatch) = route.target.resolve(ctx.app) else {
                ctx.issue(ConfigIssue::new(
                    format!("/routes/{i}"),
                    "the route names no pipeline or workflow",
                ));
                continue;
            };
            let parsed = route
                .method
                .parse::<Method>()
                .ok()
                .filter(|_| route.method.bytes().all(|b| b.is_ascii_uppercase()));
            let Some(method) = parsed else {
                ctx.issue(ConfigIssue::new(
                    format!("/routes/{i}/method"),
                    format!(
                        "`{}` is not an HTTP method (write it in capitals, e.g. `POST`)",
                        route.method
                    ),
                ));
                continue;
            };
            let handler = dispatch.label();
            let (request_schema, success_status) = match &dispatch {
                Dispatch::Pipeline(pipeline) => {
                    (pipeline.documented_input(), pipeline.documented_status())
                }
                _ => (None, None),
            };
            let source = format!("{} {}", route.method, route.path);
            let (durable, idempotency) = match &dispatch {
                Dispatch::Pipeline(pipeline) => crate::durable::route_settings(
                    ctx,
                    pipeline,
                    route.durable,
                    route.idempotency.as_ref(),
                    &source,
                    &format!("/routes/{i}"),
                ),
                _ => {
                    if route.durable || route.idempotency.is_some() {
                        ctx.issue(ConfigIssue::new(
                            format!("/routes/{i}"),
                            "`durable` and `idempotency` apply to routes that run pipelines, not state machine actions",
                        ));
                    }
                    (false, None)
                }
            };
            let options = PipelineRoute {
                max_body_bytes: route.max_body_bytes,
                params: route.target.params,
                shape: Default::default(),
                source,
                durable,
                idempotency,
            };
            let service = match dispatch {
                Dispatch::Pipeline(pipeline) => pipeline_service(pipeline, options),
                action => action_service(action, options),
            };
            let service = crate::workflow::guard(
                ctx,
                service,
                &route.middlewares,
                route.roles,
                &format!("/routes/{i}"),
            );
            let added = router.add_route(method, &route.path, service);
            // After the route itself, so that a declared `OPTIONS` route wins.
            crate::workflow::add_preflight(ctx, &router, &route.path, &route.middlewares);
            match added {
                Ok(path) => ctx.app.add_route(RouteInfo {
                    server: None,
                    router: router.name().to_string(),
                    method: route.method,
                    path,
                    handler,
                    middlewares: route.middlewares,
                    request_schema,
                    success_status,
                }),
                Err(e) => ctx.issue(ConfigIssue::new(format!("/routes/{i}/path"), e.to_string())),
            }
        }
        Ok(Arc::new(HttpTrigger))
    }

    /// `trigger: {type: http, config: {path, method}}` → one route starting this pipeline.
    fn inline(pipeline: &str, config: Value) -> Value {
        let mut route = match config {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let router = route.remove("router");
        route.insert("pipeline".into(), Value::String(pipeline.to_string()));
        let mut out = Map::new();
        if let Some(router) = router {
            out.insert("router".into(), router);
        }
        out.insert("routes".into(), Value::Array(vec![Value::Object(route)]));
        Value::Object(out)
    }
}

/// The routes live on the router; the trigger itself has nothing to start or stop.
struct HttpTrigger;

#[async_trait]
impl Trigger for HttpTrigger {
    async fn start(&self, _: &StartContext) -> anyhow::Result<()> {
        Ok(())
    }
}
