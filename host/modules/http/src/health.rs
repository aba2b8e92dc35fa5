//! `health.checker`: `/healthz`, `/readyz` and `/livez` with the original's bodies. Ready only once
//! every module and trigger has started, and not ready again as soon as shutdown begins.

use std::sync::Arc;

use http::StatusCode;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use wf_engine::{BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType};

use crate::endpoint::{add_endpoint, choose_router, endpoint_router};
use crate::{json_response, route_fn};

/// Configuration of `health.checker`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckerConfig {
    /// Path of the health report: `{"checks": {...}, "status": "healthy"}`.
    #[serde(default = "default_health_path", rename = "healthPath")]
    pub health_path: String,
    /// Path of the readiness probe: `200 {"status": "ready"}` once the app has started, else `503`.
    #[serde(default = "default_ready_path", rename = "readyPath")]
    pub ready_path: String,
    /// Path of the liveness probe: always `200 {"status": "alive"}` while the process serves.
    #[serde(default = "default_live_path", rename = "livePath")]
    pub live_path: String,
    /// The `http.router` to serve the endpoints on; optional when the application has one router.
    #[serde(default)]
    pub router: Option<String>,
}

fn default_health_path() -> String {
    "/healthz".to_string()
}
fn default_ready_path() -> String {
    "/readyz".to_string()
}
fn default_live_path() -> String {
    "/livez".to_string()
}

pub struct HealthCheckerType;

impl Described for HealthCheckerType {
    const NAME: &'static str = "health.checker";
    const CATEGORY: Category = Category::Observability;
    const PLUGIN: &'static str = "observability";
    const DESCRIPTION: &'static str =
        "Serves `/healthz`, `/readyz` and `/livez`; ready once every module has started.";
    type Config = HealthCheckerConfig;
}

impl ModuleType for HealthCheckerType {
    fn check(config: &HealthCheckerConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues: Vec<ConfigIssue> = choose_router(config.router.as_deref(), ctx)
            .err()
            .into_iter()
            .collect();
        for (pointer, path) in [
            ("/healthPath", &config.health_path),
            ("/readyPath", &config.ready_path),
            ("/livePath", &config.live_path),
        ] {
            if !path.starts_with('/') {
                issues.push(ConfigIssue::new(
                    pointer,
                    format!("`{path}` must start with `/`"),
                ));
            }
        }
        issues
    }

    fn references(config: &HealthCheckerConfig, ctx: &CheckContext<'_>) -> Vec<String> {
        choose_router(config.router.as_deref(), ctx)
            .ok()
            .into_iter()
            .collect()
    }

    fn build(
        config: HealthCheckerConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        let router = endpoint_router(config.router.as_deref(), ctx)?;
        let app = ctx.app.clone();
        add_endpoint(
            &router,
            ctx.app,
            ctx.name,
            &config.health_path,
            route_fn(|_| async {
                // No module reports checks yet; each will add its own entry under "checks".
                json_response(StatusCode::OK, &json!({"checks": {}, "status": "healthy"}))
            }),
        )?;
        add_endpoint(
            &router,
            ctx.app,
            ctx.name,
            &config.ready_path,
            route_fn(move |_| {
                let ready = app.is_ready();
                async move { readiness(ready) }
            }),
        )?;
        add_endpoint(
            &router,
            ctx.app,
            ctx.name,
            &config.live_path,
            route_fn(|_| async { json_response(StatusCode::OK, &json!({"status": "alive"})) }),
        )?;
        Ok(Arc::new(HealthChecker))
    }
}

fn readiness(ready: bool) -> crate::Response {
    if ready {
        json_response(StatusCode::OK, &json!({"status": "ready"}))
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "not_ready"}),
        )
    }
}

struct HealthChecker;
impl Module for HealthChecker {}
