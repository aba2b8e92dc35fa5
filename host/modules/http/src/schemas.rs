//! `api.schemas`: `GET /api/v1/module-schemas` returns every registered type with its config
//! schema — what the visual builder reads to draw its palette and property forms.

use std::sync::Arc;

use http::StatusCode;
use schemars::JsonSchema;
use serde::Deserialize;
use wf_engine::{BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType};

use crate::endpoint::{add_endpoint, choose_router, endpoint_router};
use crate::{json_bytes, json_bytes_response, route_fn};

/// Configuration of `api.schemas`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModuleSchemasConfig {
    /// Path to serve the schemas on.
    #[serde(default = "default_path")]
    pub path: String,
    /// The `http.router` to serve on; optional when the application has one router.
    #[serde(default)]
    pub router: Option<String>,
}

fn default_path() -> String {
    "/api/v1/module-schemas".to_string()
}

pub struct ModuleSchemasType;

impl Described for ModuleSchemasType {
    const NAME: &'static str = "api.schemas";
    const CATEGORY: Category = Category::Api;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Serves every registered type and its config JSON Schema at `GET /api/v1/module-schemas`, for the visual builder.";
    type Config = ModuleSchemasConfig;
}

impl ModuleType for ModuleSchemasType {
    fn check(config: &ModuleSchemasConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues: Vec<ConfigIssue> = choose_router(config.router.as_deref(), ctx)
            .err()
            .into_iter()
            .collect();
        if !config.path.starts_with('/') {
            issues.push(ConfigIssue::new(
                "/path",
                format!("`{}` must start with `/`", config.path),
            ));
        }
        issues
    }

    fn references(config: &ModuleSchemasConfig, ctx: &CheckContext<'_>) -> Vec<String> {
        choose_router(config.router.as_deref(), ctx)
            .ok()
            .into_iter()
            .collect()
    }

    fn build(
        config: ModuleSchemasConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        // The registry cannot change while the app runs: encode once.
        let body = json_bytes(&serde_json::json!({ "types": ctx.app.types() }));
        let router = endpoint_router(config.router.as_deref(), ctx)?;
        add_endpoint(
            &router,
            ctx.app,
            ctx.name,
            &config.path,
            route_fn(move |_| {
                let response = json_bytes_response(StatusCode::OK, body.clone());
                async move { response }
            }),
        )?;
        Ok(Arc::new(ModuleSchemas))
    }
}

struct ModuleSchemas;
impl Module for ModuleSchemas {}
