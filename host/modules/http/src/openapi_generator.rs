//! `openapi.generator`: an OpenAPI 3.1 description of the app's routes, served at
//! `GET /api/openapi.json` (and the same document at `/api/openapi.yaml`: JSON is YAML).
//!
//! Built from every route the app registered (workflows, triggers, endpoint modules, proxies),
//! when asked, so routes added at start are included. Path parameters become `in: path`
//! parameters; routes behind `http.middleware.auth` declare bearer security, `401` and `403`. The original emitted OpenAPI 3.0.3 from `workflows.*.routes` only.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use http::{HeaderValue, StatusCode, header};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use wf_engine::{
    AppState, BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType,
    RouteInfo, StartContext, async_trait,
};

use crate::endpoint::{add_started_endpoint, check_routing};
use crate::{Response, json_response, route_fn};

/// Configuration of `openapi.generator`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenApiConfig {
    /// The API's title; the app's `name`, else `wf application`.
    #[serde(default)]
    pub title: Option<String>,
    /// The API's version.
    #[serde(default = "default_version")]
    pub version: String,
    /// What the API is for.
    #[serde(default)]
    pub description: Option<String>,
    /// Where the API is served, e.g. `https://api.example.com`: URLs, or `{url, description}`.
    #[serde(default)]
    pub servers: Vec<Value>,
    /// Where the document is served; the same document is also served with `.yaml` for
    /// `.json`.
    #[serde(default = "default_path")]
    pub path: String,
    /// Middlewares in front of this module's routes (e.g. an `http.middleware.auth`),
    /// outermost first.
    #[serde(default)]
    pub middlewares: Vec<String>,
    /// The `http.router` to serve on; optional when the app has one.
    #[serde(default)]
    pub router: Option<String>,
}

fn default_version() -> String {
    "1.0.0".into()
}
fn default_path() -> String {
    "/api/openapi.json".into()
}

pub struct OpenApiGeneratorType;

impl Described for OpenApiGeneratorType {
    const NAME: &'static str = "openapi.generator";
    const CATEGORY: Category = Category::Observability;
    const PLUGIN: &'static str = "observability";
    const DESCRIPTION: &'static str =
        "Serves an OpenAPI 3.1 description of the app's routes at `/api/openapi.json`.";
    type Config = OpenApiConfig;
}

impl ModuleType for OpenApiGeneratorType {
    fn check(config: &OpenApiConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if !config.path.starts_with('/') {
            issues.push(ConfigIssue::new("/path", "the path must start with `/`"));
        }
        for (i, server) in config.servers.iter().enumerate() {
            let url = server
                .as_str()
                .or_else(|| server.get("url").and_then(Value::as_str));
            if url.is_none() {
                issues.push(ConfigIssue::new(
                    format!("/servers/{i}"),
                    "a server is a URL or `{url, description}`",
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

    fn build(config: OpenApiConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Module>> {
        let servers: Vec<Value> = config
            .servers
            .iter()
            .map(|s| match s.as_str() {
                Some(url) => json!({ "url": url }),
                None => s.clone(),
            })
            .collect();
        let mut info = Map::new();
        info.insert(
            "title".into(),
            json!(
                config
                    .title
                    .clone()
                    .or_else(|| ctx.app.name().map(str::to_string))
                    .unwrap_or_else(|| "wf application".into())
            ),
        );
        info.insert("version".into(), json!(config.version));
        if let Some(description) = &config.description {
            info.insert("description".into(), json!(description));
        }
        Ok(Arc::new(OpenApiGenerator {
            name: ctx.name.to_string(),
            router: config.router,
            middlewares: config.middlewares,
            path: config.path,
            info: Value::Object(info),
            servers,
        }))
    }
}

pub struct OpenApiGenerator {
    name: String,
    router: Option<String>,
    middlewares: Vec<String>,
    path: String,
    info: Value,
    servers: Vec<Value>,
}

#[async_trait]
impl Module for OpenApiGenerator {
    async fn start(&self, ctx: &StartContext) -> anyhow::Result<()> {
        let app = Arc::downgrade(&ctx.app);
        let yaml_path = self
            .path
            .strip_suffix(".json")
            .map(|base| format!("{base}.yaml"));
        let (info, servers, own) = (self.info.clone(), self.servers.clone(), self.name.clone());
        let render = Arc::new(move || -> Option<String> {
            let app = app.upgrade()?;
            let document = document(&app, &info, &servers, &own);
            serde_json::to_string_pretty(&document).ok()
        });
        for (path, media) in [
            (Some(self.path.clone()), "application/json"),
            (yaml_path, "application/yaml"),
        ] {
            let Some(path) = path else { continue };
            let render = render.clone();
            let service = route_fn(move |_| {
                let render = render.clone();
                async move { serve(render(), media) }
            });
            add_started_endpoint(
                ctx,
                self.router.as_deref(),
                &self.name,
                &path,
                service,
                &self.middlewares,
            )?;
        }
        Ok(())
    }
}

fn serve(text: Option<String>, media: &'static str) -> Response {
    match text {
        Some(text) => {
            let mut response = http::Response::new(axum::body::Body::from(text));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
            response
        }
        None => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": "the application is stopping"}),
        ),
    }
}

/// `/users/:id`, `/files/{path...}`, `/x/{$}` → `/users/{id}`, `/files/{path}`, `/x/`, with
/// the parameter names.
fn openapi_path(pattern: &str) -> (String, Vec<String>) {
    let mut params = Vec::new();
    let segments: Vec<String> = pattern
        .split('/')
        .filter_map(|segment| {
            if segment == "{$}" {
                return None;
            }
            let name = segment
                .strip_prefix(':')
                .or_else(|| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .map(|n| n.trim_end_matches("..."));
            Some(match name {
                Some(name) if !name.is_empty() => {
                    params.push(name.to_string());
                    format!("{{{name}}}")
                }
                _ => segment.to_string(),
            })
        })
        .collect();
    let mut path = segments.join("/");
    if pattern.ends_with("{$}") && !path.ends_with('/') {
        path.push('/');
    }
    if path.is_empty() {
        path.push('/');
    }
    (path, params)
}

/// `get /api/users/{id}` → `getApiUsersId`.
fn operation_id(method: &str, path: &str) -> String {
    let mut out = method.to_ascii_lowercase();
    for word in path
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            out.push(first.to_ascii_uppercase());
            out.extend(chars);
        }
    }
    out
}

/// The document of every route but those of module `own` (the document's own).
fn document(app: &AppState, info: &Value, servers: &[Value], own: &str) -> Value {
    let services = app.services();
    let is_auth = |middleware: &str| {
        services
            .as_ref()
            .and_then(|s| s.module_type(middleware))
            .is_some_and(|t| t == "http.middleware.auth")
    };
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    let mut secured = false;
    let mut routes: Vec<RouteInfo> = app.routes();
    routes.sort_by(|a, b| (&a.path, &a.method).cmp(&(&b.path, &b.method)));
    for route in routes {
        let method = route.method.to_ascii_lowercase();
        if route.handler == own
            || !matches!(
                method.as_str(),
                "get" | "post" | "put" | "patch" | "delete" | "options"
            )
        {
            continue;
        }
        let (path, params) = openapi_path(&route.path);
        let mut id = operation_id(&method, &path);
        while !ids.insert(id.clone()) {
            id.push('_');
        }
        let mut responses = Map::new();
        let success = route.success_status.unwrap_or(200).to_string();
        responses.insert(success, json!({"description": "The handler's answer."}));
        if route.request_schema.is_some() {
            responses.insert(
                "400".into(),
                error_response("The request does not match its schema."),
            );
        }
        let authenticated = route.middlewares.iter().any(|m| is_auth(m));
        if authenticated {
            responses.insert(
                "401".into(),
                error_response("Missing or invalid credentials."),
            );
            responses.insert(
                "403".into(),
                error_response("The caller lacks a required role."),
            );
        }
        responses.insert("default".into(), error_response("An error."));
        let mut operation = Map::new();
        operation.insert("operationId".into(), json!(id));
        operation.insert(
            "summary".into(),
            json!(format!("{} {}", route.method, route.path)),
        );
        operation.insert("tags".into(), json!([route.handler]));
        if !params.is_empty() {
            operation.insert(
                "parameters".into(),
                Value::Array(
                    params
                        .iter()
                        .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
                        .collect(),
                ),
            );
        }
        if matches!(method.as_str(), "post" | "put" | "patch") {
            // The schema the route's pipeline checks, when it has one: the body must match.
            let (required, schema) = match &route.request_schema {
                Some(schema) => (true, schema.clone()),
                None => (false, json!({"type": "object"})),
            };
            operation.insert(
                "requestBody".into(),
                json!({"required": required, "content": {"application/json": {"schema": schema}}}),
            );
        }
        if authenticated {
            secured = true;
            operation.insert("security".into(), json!([{"bearerAuth": []}]));
        }
        operation.insert("responses".into(), Value::Object(responses));
        paths
            .entry(path)
            .or_default()
            .insert(method, Value::Object(operation));
    }
    let mut document = json!({
        "openapi": "3.1.0",
        "info": info,
        "paths": paths,
    });
    if !servers.is_empty() {
        document["servers"] = json!(servers);
    }
    if secured {
        document["components"] = json!({"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}});
    }
    document
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {
            "type": "object",
            "properties": {"error": {"type": "string"}},
        }}},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_become_openapi_paths() {
        assert_eq!(
            openapi_path("/users/:id"),
            ("/users/{id}".into(), vec!["id".into()])
        );
        assert_eq!(
            openapi_path("/files/{path...}"),
            ("/files/{path}".into(), vec!["path".into()])
        );
        assert_eq!(openapi_path("/x/{$}").0, "/x/");
        assert_eq!(openapi_path("/").0, "/");
        assert_eq!(operation_id("get", "/api/users/{id}"), "getApiUsersId");
    }
}
