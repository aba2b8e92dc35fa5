//! `api.handler`: a REST resource (list, get, create, replace, delete and
//! `POST /{id}/transition`) with the original's response shapes, kept in the app's database
//! and, with `workflowType`, tied to a state machine: each resource gets an instance whose
//! state is the resource's state.
//!
//! Routes come from the `http` workflow: `GET/POST /api/orders` and
//! `GET/PUT/DELETE /api/orders/{id}`, `POST /api/orders/{id}/transition`.

use std::sync::Arc;

use axum::body::Body;
use http::{Method, StatusCode};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType, StartContext,
    async_trait,
};
use wf_http::{HttpHandler, PathParams, Request, Response, RouteService, json_response, route_fn};
use wf_storage::{DATABASE_TYPES, Database, DbError, Resource, ResourceStore};

use crate::engine::{SmError, StateMachineEngine};

/// Configuration of `api.handler`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// The resources' type name (`orders`); resources of different handlers with the same name
    /// are the same resources.
    #[serde(default = "default_resource_name", rename = "resourceName")]
    pub resource_name: String,
    /// A state machine definition: every created resource gets an instance of it, and the
    /// instance's state is the resource's state.
    #[serde(default, rename = "workflowType")]
    pub workflow_type: Option<String>,
    /// The `statemachine.engine` holding `workflowType`; optional when the app has one.
    #[serde(default, rename = "workflowEngine")]
    pub workflow_engine: Option<String>,
    /// A transition fired right after a resource is created (it must leave the initial state).
    #[serde(default, rename = "initialTransition")]
    pub initial_transition: Option<String>,
    /// Instance ids are this prefix plus the resource id.
    #[serde(default, rename = "instanceIDPrefix")]
    pub instance_id_prefix: String,
    /// List only resources in this state, or these states (a `?state=` query narrows
    /// further).
    #[serde(default, rename = "stateFilter")]
    pub state_filter: OneOrMany,
    /// The body field a created resource's id is read from (a UUID when it is absent).
    #[serde(default = "default_id_field", rename = "instanceIDField")]
    pub instance_id_field: String,
    /// A JSON file of resources to create at start when missing: an array of
    /// `{id, data, state}` (or plain objects with an `id`), relative to this config file.
    #[serde(default, rename = "seedFile")]
    pub seed_file: Option<String>,
    /// Largest accepted request body; larger ones get 413.
    #[serde(default = "default_max_body", rename = "maxBodyBytes")]
    pub max_body_bytes: usize,
    /// The original's chat-platform field mapping; not supported.
    #[serde(default, rename = "fieldMapping")]
    pub field_mapping: Option<Value>,
    /// The original's chat-platform sub-action map; not supported.
    #[serde(default, rename = "transitionMap")]
    pub transition_map: Option<Value>,
    /// The original's chat-platform summary fields; not supported.
    #[serde(default, rename = "summaryFields")]
    pub summary_fields: Option<Value>,
    /// The original's chat-platform queue view; not supported.
    #[serde(default, rename = "sourceResourceName")]
    pub source_resource_name: Option<String>,
}

/// One value or a list of them.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn values(&self) -> &[String] {
        match self {
            OneOrMany::None => &[],
            OneOrMany::One(one) => std::slice::from_ref(one),
            OneOrMany::Many(many) => many,
        }
    }
}

fn default_id_field() -> String {
    "id".to_string()
}

fn default_resource_name() -> String {
    "resources".to_string()
}

fn default_max_body() -> usize {
    1024 * 1024
}

pub struct ResourceType;

impl Described for ResourceType {
    const NAME: &'static str = "api.handler";
    const CATEGORY: Category = Category::Api;
    const PLUGIN: &'static str = "api";
    const DESCRIPTION: &'static str = "REST resource (list, get, create, replace, delete, transition) kept in the app's database, optionally driven by a state machine.";
    type Config = ResourceConfig;
}

fn engine_of(
    config: &ResourceConfig,
    ctx: &CheckContext<'_>,
) -> Result<Option<String>, ConfigIssue> {
    match &config.workflow_type {
        None => Ok(None),
        Some(_) => ctx
            .choose(
                config.workflow_engine.as_deref(),
                "workflowEngine",
                "state machine engine",
                &["statemachine.engine"],
            )
            .map(Some),
    }
}

/// Where resources are kept: the `persistence.store`, else the app's only database.
fn store_module(ctx: &CheckContext<'_>) -> Option<String> {
    let stores = ctx.modules_of_type(&["persistence.store"]);
    if let [only] = stores.as_slice() {
        return Some(only.to_string());
    }
    match ctx.modules_of_type(DATABASE_TYPES).as_slice() {
        [only] => Some(only.to_string()),
        _ => None,
    }
}

impl ModuleType for ResourceType {
    fn check(config: &ResourceConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues: Vec<ConfigIssue> = engine_of(config, ctx).err().into_iter().collect();
        for (key, set) in [
            ("fieldMapping", config.field_mapping.is_some()),
            ("transitionMap", config.transition_map.is_some()),
            ("summaryFields", config.summary_fields.is_some()),
            ("sourceResourceName", config.source_resource_name.is_some()),
        ] {
            if set {
                issues.push(ConfigIssue::not_implemented(
                    format!("/{key}"),
                    format!("`{key}` (the original's chat-platform behaviour) is not implemented in this build yet"),
                ));
            }
        }
        if config.initial_transition.is_some() && config.workflow_type.is_none() {
            issues.push(ConfigIssue::new(
                "/initialTransition",
                "`initialTransition` needs a `workflowType`",
            ));
        }
        issues
    }

    /// The store comes first; the engine is looked up at start (the original's configs have
    /// engines depend on their resource handlers).
    fn references(_config: &ResourceConfig, ctx: &CheckContext<'_>) -> Vec<String> {
        store_module(ctx).into_iter().collect()
    }

    fn build(
        config: ResourceConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        let store = match ctx.all::<ResourceStore>().into_iter().next() {
            Some((_, store)) => store,
            None => {
                let database = match wf_storage::chosen_database(None, ctx)? {
                    Some(db) => db,
                    None => Database::in_memory(ctx.name)?,
                };
                Arc::new(ResourceStore::new(database))
            }
        };
        let handler = Arc::new(ResourceHandler {
            name: ctx.name.to_string(),
            store,
            engine: std::sync::OnceLock::new(),
            seed_file: config.seed_file.as_ref().map(|f| ctx.base_dir.join(f)),
            config,
        });
        ctx.provide::<dyn HttpHandler>(handler.clone());
        Ok(handler)
    }
}

pub struct ResourceHandler {
    name: String,
    config: ResourceConfig,
    store: Arc<ResourceStore>,
    /// Found at start (see `references`); unset without `workflowType`.
    engine: std::sync::OnceLock<Arc<StateMachineEngine>>,
    seed_file: Option<std::path::PathBuf>,
}

#[async_trait]
impl Module for ResourceHandler {
    async fn start(&self, ctx: &StartContext) -> anyhow::Result<()> {
        if self.config.workflow_type.is_some() {
            let services = ctx
                .app
                .services()
                .ok_or_else(|| anyhow::anyhow!("the app's services are not available"))?;
            let engine = match &self.config.workflow_engine {
                Some(name) => services.get::<StateMachineEngine>(name)?,
                None => services
                    .all::<StateMachineEngine>()
                    .into_iter()
                    .next()
                    .map(|(_, e)| e)
                    .ok_or_else(|| anyhow::anyhow!("there is no state machine engine"))?,
            };
            let _ = self.engine.set(engine);
        }
        self.store.ready().await?;
        if let Some(path) = &self.seed_file {
            self.seed(path).await?;
        }
        Ok(())
    }
}

impl HttpHandler for ResourceHandler {
    fn service(self: Arc<Self>) -> RouteService {
        route_fn(move |req: Request| {
            let handler = self.clone();
            async move { handler.handle(req).await }
        })
    }
}

fn resource_json(r: &Resource) -> Value {
    json!({"id": r.id, "data": r.data, "state": r.state, "lastUpdate": r.updated_at})
}

fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({"error": message}))
}

impl ResourceHandler {
    fn resource(&self) -> &str {
        &self.config.resource_name
    }

    fn instance_id(&self, id: &str) -> String {
        format!("{}{id}", self.config.instance_id_prefix)
    }

    /// The server's own failure: logged in full, answered generically.
    fn internal(&self, e: impl std::fmt::Display) -> Response {
        tracing::error!(handler = %self.name, resource = %self.resource(), error = %e, "resource request failed");
        error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }

    async fn handle(&self, req: Request) -> Response {
        let path = req.uri().path().trim_end_matches('/').to_string();
        let id = req
            .extensions()
            .get::<PathParams>()
            .and_then(|p| p.get("id"))
            .map(str::to_string);
        let query_state = req
            .uri()
            .query()
            .and_then(|q| {
                wf_http::exchange::parse_query(q)
                    .into_iter()
                    .find(|(k, _)| k == "state")
            })
            .map(|(_, v)| v);
        let method = req.method().clone();
        let is_transition = path.ends_with("/transition") && id.is_some();
        let body = match read_body(req, self.config.max_body_bytes).await {
            Ok(body) => body,
            Err(response) => return response,
        };
        match (method, id) {
            (Method::POST | Method::PUT, Some(id)) if is_transition => {
                self.transition(&id, body).await
            }
            (Method::GET, None) => self.list(query_state.as_deref()).await,
            (Method::GET, Some(id)) => self.get(&id).await,
            (Method::POST, None) => self.create(body).await,
            (Method::PUT, Some(id)) => self.replace(&id, body).await,
            (Method::DELETE, Some(id)) => self.delete(&id).await,
            _ => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed or invalid path",
            ),
        }
    }

    /// The resource with its state from the state machine when it has one.
    async fn with_state(&self, mut resource: Resource) -> Result<Resource, SmError> {
        if let Some(engine) = self.engine.get()
            && let Some(instance) = engine.get(&self.instance_id(&resource.id)).await?
        {
            resource.state = instance.current_state;
            resource.updated_at = resource.updated_at.max(instance.last_updated);
        }
        Ok(resource)
    }

    async fn list(&self, state: Option<&str>) -> Response {
        let resources = match self.store.list(self.resource()).await {
            Ok(r) => r,
            Err(e) => return self.internal(e),
        };
        let mut out = Vec::with_capacity(resources.len());
        for resource in resources {
            let resource = match self.with_state(resource).await {
                Ok(r) => r,
                Err(e) => return self.internal(e),
            };
            let wanted = self.config.state_filter.values();
            let filtered = !wanted.is_empty() && !wanted.contains(&resource.state);
            if filtered || state.is_some_and(|s| s != resource.state) {
                continue;
            }
            out.push(resource_json(&resource));
        }
        json_response(StatusCode::OK, &Value::Array(out))
    }

    async fn get(&self, id: &str) -> Response {
        match self.store.get(self.resource(), id).await {
            Ok(Some(resource)) => match self.with_state(resource).await {
                Ok(resource) => json_response(StatusCode::OK, &resource_json(&resource)),
                Err(e) => self.internal(e),
            },
            Ok(None) => error(StatusCode::NOT_FOUND, "Resource not found"),
            Err(e) => self.internal(e),
        }
    }

    async fn create(&self, body: Option<Value>) -> Response {
        let Some(Value::Object(mut data)) = body else {
            return error(StatusCode::BAD_REQUEST, "Invalid request body");
        };
        let id = match data.get(&self.config.instance_id_field) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => uuid::Uuid::new_v4().to_string(),
        };
        data.insert("id".into(), json!(id));
        let state = data
            .get("state")
            .and_then(Value::as_str)
            .unwrap_or("new")
            .to_string();
        let mut resource = match self.store.create(self.resource(), &id, &data, &state).await {
            Ok(Some(resource)) => resource,
            Ok(None) => {
                return error(
                    StatusCode::CONFLICT,
                    &format!("a resource with id '{id}' already exists"),
                );
            }
            Err(DbError::Constraint(e)) => return error(StatusCode::CONFLICT, &e),
            Err(e) => return self.internal(e),
        };
        if let (Some(engine), Some(workflow_type)) = (self.engine.get(), &self.config.workflow_type)
        {
            let instance_id = self.instance_id(&id);
            let created = engine
                .create(workflow_type, Some(&instance_id), data.clone())
                .await;
            let instance = match created {
                Ok(instance) => match &self.config.initial_transition {
                    Some(t) => engine.trigger(&instance_id, t, Map::new()).await,
                    None => Ok(instance),
                },
                Err(e) => Err(e),
            };
            match instance {
                Ok(instance) => {
                    resource.state = instance.current_state;
                    let _ = self
                        .store
                        .set_state(self.resource(), &id, &resource.state)
                        .await;
                }
                Err(e) if e.status < 500 => {
                    // Nothing half-made stays behind: the resource goes with its instance.
                    let _ = self.store.delete(self.resource(), &id).await;
                    return error(
                        StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
                        &e.message,
                    );
                }
                Err(e) => {
                    let _ = self.store.delete(self.resource(), &id).await;
                    return self.internal(e);
                }
            }
        }
        json_response(StatusCode::CREATED, &resource_json(&resource))
    }

    async fn replace(&self, id: &str, body: Option<Value>) -> Response {
        let Some(Value::Object(data)) = body else {
            return error(StatusCode::BAD_REQUEST, "Invalid request body");
        };
        match self.store.update(self.resource(), id, &data, None).await {
            Ok(Some(resource)) => json_response(
                StatusCode::OK,
                &json!({"id": resource.id, "data": resource.data}),
            ),
            Ok(None) => error(StatusCode::NOT_FOUND, "Resource not found"),
            Err(e) => self.internal(e),
        }
    }

    async fn delete(&self, id: &str) -> Response {
        match self.store.delete(self.resource(), id).await {
            Ok(true) => {
                let mut response = Response::new(Body::empty());
                *response.status_mut() = StatusCode::NO_CONTENT;
                response
            }
            Ok(false) => error(StatusCode::NOT_FOUND, "Resource not found"),
            Err(e) => self.internal(e),
        }
    }

    async fn transition(&self, id: &str, body: Option<Value>) -> Response {
        let Some(Value::Object(body)) = body else {
            return error(StatusCode::BAD_REQUEST, "Invalid request body");
        };
        let Some(transition) = body
            .get("transition")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return error(StatusCode::BAD_REQUEST, "the body needs a `transition`");
        };
        let data = match body.get("data") {
            Some(Value::Object(d)) => d.clone(),
            _ => Map::new(),
        };
        let resource = match self.store.get(self.resource(), id).await {
            Ok(Some(r)) => r,
            Ok(None) => return error(StatusCode::NOT_FOUND, "Resource not found"),
            Err(e) => return self.internal(e),
        };
        let Some(engine) = self.engine.get() else {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "resource '{}' has no state machine (set `workflowType`)",
                    self.resource()
                ),
            );
        };
        let instance_id = self.instance_id(id);
        match engine.trigger(&instance_id, &transition, data).await {
            Ok(instance) => {
                let _ = self
                    .store
                    .set_state(self.resource(), id, &instance.current_state)
                    .await;
                let resource = Resource {
                    state: instance.current_state.clone(),
                    updated_at: instance.last_updated.clone(),
                    ..resource
                };
                json_response(
                    StatusCode::OK,
                    &json!({
                        "success": true,
                        "id": id,
                        "instanceId": instance_id,
                        "transition": transition,
                        "state": instance.current_state,
                        "lastUpdate": instance.last_updated,
                        "resource": resource_json(&resource),
                    }),
                )
            }
            Err(e) if e.status >= 500 => self.internal(e),
            Err(e) => json_response(
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
                &json!({"success": false, "error": e.message, "id": id, "instanceId": instance_id, "transition": transition}),
            ),
        }
    }

    async fn seed(&self, path: &std::path::Path) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("seedFile {}: {e}", path.display()))?;
        let items: Vec<Value> = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("seedFile {}: not a JSON array: {e}", path.display()))?;
        for (i, item) in items.into_iter().enumerate() {
            let Value::Object(mut item) = item else {
                anyhow::bail!("seedFile {}: item {i} is not an object", path.display());
            };
            let id = match item.get("id") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => anyhow::bail!("seedFile {}: item {i} has no `id`", path.display()),
            };
            let state = item
                .get("state")
                .and_then(Value::as_str)
                .unwrap_or("new")
                .to_string();
            let data = match item.remove("data") {
                Some(Value::Object(data)) => data,
                _ => item,
            };
            self.store
                .create(self.resource(), &id, &data, &state)
                .await?;
        }
        Ok(())
    }
}

/// The body as JSON (`None` when empty), or the response refusing it.
async fn read_body(req: Request, limit: usize) -> Result<Option<Value>, Response> {
    let bytes =
        wf_http::exchange::read_body(req.into_body(), limit, "the resource's `maxBodyBytes`")
            .await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|_| error(StatusCode::BAD_REQUEST, "Invalid request body"))
}
