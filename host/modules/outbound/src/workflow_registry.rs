//! `workflow.registry`: the catalogue of an app's integrations. Each `integration` workflow
//! that names it (`registry:`) is listed with its connectors and steps and with how its runs
//! went, and can be started over HTTP:
//!
//! | request (routed to this module) | answer |
//! |---|---|
//! | `GET …/integrations` | `{description, integrations: [...]}` |
//! | `GET …/integrations/{name}` | one integration, or `404` |
//! | `POST …/integrations/{name}/execute` | runs it with the JSON body as its data: `200 {integration, status: "completed", run_id, results}`; a failed call is `502 {status: "failed", step, error_kind}` (details in the log) |
//!
//! The original's `workflow.registry` held its admin platform's tables and could not be used
//! by `integration` workflows; the admin data model arrives with the admin platform.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use http::{Method, StatusCode};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use wf_engine::events::RunObserver;
use wf_engine::wf_config::time::rfc3339_now;
use wf_engine::{
    AppState, BuildContext, Category, CheckContext, ConfigIssue, Described, ErrorKind, Extensions,
    Module, ModuleType, StartContext, async_trait,
};
use wf_http::exchange::read_body;
use wf_http::{HttpHandler, PathParams, Request, Response, RouteService, json_response, route_fn};

pub const NAME: &str = "workflow.registry";

/// Largest `execute` body accepted.
const MAX_BODY_BYTES: usize = 1 << 20;

/// Configuration of `workflow.registry`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowRegistryConfig {
    /// What this registry is for; shown in its listing.
    #[serde(default)]
    pub description: Option<String>,
    /// The original's admin storage (a `storage.sqlite` module): not implemented in this
    /// version, which keeps the catalogue in memory (it is rebuilt from the config at start).
    #[serde(default, rename = "storageBackend")]
    pub storage_backend: Option<String>,
}

pub struct WorkflowRegistryType;

impl Described for WorkflowRegistryType {
    const NAME: &'static str = NAME;
    const CATEGORY: Category = Category::Integration;
    const PLUGIN: &'static str = "api";
    const DESCRIPTION: &'static str = "Lists the app's integrations with their connectors, steps and runs, and starts them over HTTP.";
    type Config = WorkflowRegistryConfig;
}

impl ModuleType for WorkflowRegistryType {
    fn check(config: &WorkflowRegistryConfig, _: &CheckContext<'_>) -> Vec<ConfigIssue> {
        config
            .storage_backend
            .iter()
            .map(|_| {
                ConfigIssue::not_implemented(
                    "/storageBackend",
                    "`storageBackend` (the admin platform's tables) is not implemented in this build yet",
                )
                .help("remove it: the registry is rebuilt from the config at start")
            })
            .collect()
    }

    fn build(
        config: WorkflowRegistryConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        let registry = Arc::new(WorkflowRegistry {
            name: ctx.name.to_string(),
            description: config.description,
            integrations: RwLock::default(),
            app: Mutex::default(),
        });
        ctx.app.run_events().add_observer(registry.clone());
        ctx.provide::<WorkflowRegistry>(registry.clone());
        ctx.provide::<dyn HttpHandler>(registry.clone());
        Ok(registry)
    }
}

/// What the registry shows of one integration.
#[derive(Clone, Debug, Serialize)]
pub struct IntegrationSummary {
    /// The integration's pipeline.
    pub name: String,
    pub connectors: Vec<ConnectorSummary>,
    pub steps: Vec<StepSummary>,
}

/// A connector, without its credentials.
#[derive(Clone, Debug, Serialize)]
pub struct ConnectorSummary {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The base URL of an HTTP connector, the path of a webhook connector.
    pub target: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StepSummary {
    pub name: String,
    pub connector: String,
    pub action: String,
}

/// How an integration's runs went, from every start (triggers, `execute`, sub-workflows).
#[derive(Clone, Debug, Default, Serialize)]
struct RunStats {
    runs: u64,
    failed: u64,
    last_run_at: Option<String>,
    last_succeeded: Option<bool>,
    last_duration_ms: Option<u64>,
}

pub struct WorkflowRegistry {
    name: String,
    description: Option<String>,
    integrations: RwLock<BTreeMap<String, (IntegrationSummary, RunStats)>>,
    /// The app, to start integrations; weak, since the app holds this module.
    app: Mutex<Weak<AppState>>,
}

impl wf_engine::ServiceKind for WorkflowRegistry {
    const LABEL: &'static str = "a `workflow.registry`";
}

impl WorkflowRegistry {
    /// Lists an integration (called when its workflow is wired).
    pub fn register(&self, summary: IntegrationSummary) {
        if let Ok(mut map) = self.integrations.write() {
            map.insert(summary.name.clone(), (summary, RunStats::default()));
        }
    }

    fn describe(summary: &IntegrationSummary, stats: &RunStats) -> Value {
        let mut value = serde_json::to_value(summary).unwrap_or(Value::Null);
        value["runs"] = serde_json::to_value(stats).unwrap_or(Value::Null);
        value
    }

    fn list(&self) -> Response {
        let integrations: Vec<Value> = self
            .integrations
            .read()
            .map(|map| map.values().map(|(s, r)| Self::describe(s, r)).collect())
            .unwrap_or_default();
        json_response(
            StatusCode::OK,
            &json!({"registry": self.name, "description": self.description, "integrations": integrations}),
        )
    }

    fn get(&self, name: &str) -> Response {
        let found = self
            .integrations
            .read()
            .ok()
            .and_then(|map| map.get(name).map(|(s, r)| Self::describe(s, r)));
        match found {
            Some(value) => json_response(StatusCode::OK, &value),
            None => not_found(name),
        }
    }

    async fn execute(&self, name: &str, req: Request) -> Response {
        let known = self
            .integrations
            .read()
            .is_ok_and(|map| map.contains_key(name));
        let pipeline = self
            .app
            .lock()
            .ok()
            .and_then(|app| app.upgrade())
            .and_then(|app| app.pipelines().get(name));
        let (true, Some(pipeline)) = (known, pipeline) else {
            return not_found(name);
        };
        let body = match read_body(
            req.into_body(),
            MAX_BODY_BYTES,
            "the fixed limit of `workflow.registry`",
        )
        .await
        {
            Ok(body) => body,
            Err(response) => return response,
        };
        let data = if body.iter().all(u8::is_ascii_whitespace) {
            Map::new()
        } else {
            match serde_json::from_slice(&body) {
                Ok(Value::Object(map)) => map,
                _ => {
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": "the body must be a JSON object (the integration's data)"}),
                    );
                }
            }
        };
        match pipeline.run(data, Extensions::default()).await {
            Ok(outcome) => json_response(
                StatusCode::OK,
                &json!({
                    "integration": name,
                    "status": "completed",
                    "run_id": outcome.context.meta.get("run_id"),
                    "results": summary_of(&outcome.context.steps),
                }),
            ),
            Err(e) => {
                tracing::error!(registry = %self.name, integration = %name, step = e.step.as_deref().unwrap_or("-"), error = %e.message, "integration failed");
                let status = match e.kind {
                    ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
                    ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
                    _ => StatusCode::BAD_GATEWAY,
                };
                json_response(
                    status,
                    &json!({"integration": name, "status": "failed", "step": e.step, "error_kind": e.kind}),
                )
            }
        }
    }

    async fn handle(&self, req: Request) -> Response {
        let path = req.uri().path().trim_end_matches('/').to_string();
        let param = req
            .extensions()
            .get::<PathParams>()
            .and_then(|p| p.get("name").or_else(|| p.get("id")))
            .map(str::to_string);
        let executes = path.ends_with("/execute");
        // Without a path parameter, `…/{name}/execute` still names the integration.
        let name = param.or_else(|| {
            executes
                .then(|| path.rsplit('/').nth(1).map(str::to_string))
                .flatten()
        });
        match (req.method().clone(), name) {
            (Method::POST, Some(name)) if executes => self.execute(&name, req).await,
            (Method::GET, Some(name)) => self.get(&name),
            (Method::GET, None) => self.list(),
            _ => json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": "the registry answers GET (list, one) and POST …/{name}/execute"}),
            ),
        }
    }
}

/// Each step's outcome without the upstream headers (which may carry cookies or tokens).
fn summary_of(steps: &Map<String, Value>) -> Value {
    Value::Object(
        steps
            .iter()
            .map(|(name, output)| {
                let mut output = output.clone();
                if let Some(map) = output.as_object_mut() {
                    map.remove("headers");
                }
                (name.clone(), output)
            })
            .collect(),
    )
}

fn not_found(name: &str) -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({"error": format!("no integration named `{name}`")}),
    )
}

#[async_trait]
impl Module for WorkflowRegistry {
    async fn start(&self, ctx: &StartContext) -> anyhow::Result<()> {
        if let Ok(mut app) = self.app.lock() {
            *app = Arc::downgrade(&ctx.app);
        }
        Ok(())
    }
}

impl HttpHandler for WorkflowRegistry {
    fn service(self: Arc<Self>) -> RouteService {
        route_fn(move |req: Request| {
            let registry = self.clone();
            async move { registry.handle(req).await }
        })
    }
}

impl RunObserver for WorkflowRegistry {
    fn run_finished(&self, pipeline: &str, ok: bool, elapsed: Duration) {
        // Most runs are of other pipelines: look before taking the write lock.
        if !self
            .integrations
            .read()
            .is_ok_and(|map| map.contains_key(pipeline))
        {
            return;
        }
        if let Ok(mut map) = self.integrations.write()
            && let Some((_, stats)) = map.get_mut(pipeline)
        {
            stats.runs += 1;
            stats.failed += u64::from(!ok);
            stats.last_run_at = Some(rfc3339_now());
            stats.last_succeeded = Some(ok);
            stats.last_duration_ms = Some(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
        }
    }

    fn step_finished(&self, _: &str, _: &str, _: bool, _: Duration) {}
}
