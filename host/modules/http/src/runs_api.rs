//! `runs.api`: the run journal over HTTP, behind the app's own middleware (its auth, its rate
//! limits) like any route. Under `path` (default `/api/runs`):
//!
//! - `GET    {path}?pipeline=&status=&since=1h&limit=&cursor=&unreplayed=true` — runs, newest
//!   first, a page at a time (`next` is the cursor of the following page). `status=failed&
//!   unreplayed=true` is the dead-letter view.
//! - `GET    {path}/{id}` — one run with every step attempt (404 when unknown).
//! - `POST   {path}/{id}/replay` `{"from": "step"}` — a new run with the same trigger data
//!   (202 with its id; 404 unknown; 409 not replayable).
//! - `POST   {path}/{id}/cancel` — stops a running run at its current step (202), or a queued
//!   one (200); 404 unknown; 409 already ended.
//! - `POST   {path}/replay` `{"pipeline": "..."}` — replays every failed run not replayed yet.

use std::sync::Arc;

use http::{Method, StatusCode};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use wf_engine::journal::{Journal, RunPage, RunQuery, RunRequestError, RunStatus};
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType, StartContext,
    async_trait,
};

use crate::endpoint::{add_guarded_endpoint, check_routing, started_router};
use crate::router::PathParams;
use crate::{Request, Response, json_response, route_fn};

/// Configuration of `runs.api`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunsApiConfig {
    /// Where the API is served.
    #[serde(default = "default_path")]
    pub path: String,
    /// Middlewares in front of every route of the API (an `http.middleware.auth`: the API
    /// replays and cancels runs), outermost first.
    #[serde(default)]
    pub middlewares: Vec<String>,
    /// The `http.router` to serve on; optional when the app has one.
    #[serde(default)]
    pub router: Option<String>,
}

fn default_path() -> String {
    "/api/runs".into()
}

/// Largest request body the API reads (its bodies are a few keys).
const MAX_BODY: usize = 16 * 1024;

pub struct RunsApiType;

impl Described for RunsApiType {
    const NAME: &'static str = "runs.api";
    const CATEGORY: Category = Category::Observability;
    const PLUGIN: &'static str = "observability";
    const DESCRIPTION: &'static str = "The run journal over HTTP: list runs, show one with its steps, replay, cancel, and replay failed runs in bulk.";
    type Config = RunsApiConfig;
}

impl ModuleType for RunsApiType {
    fn check(config: &RunsApiConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if !config.path.starts_with('/') || config.path.len() < 2 {
            issues.push(ConfigIssue::new(
                "/path",
                "the path must start with `/` and name a folder, e.g. `/api/runs`",
            ));
        }
        issues.extend(check_routing(
            config.router.as_deref(),
            &config.middlewares,
            ctx,
        ));
        issues
    }

    fn build(config: RunsApiConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Module>> {
        Ok(Arc::new(RunsApi {
            name: ctx.name.to_string(),
            path: config.path.trim_end_matches('/').to_string(),
            middlewares: config.middlewares,
            router: config.router,
        }))
    }
}

struct RunsApi {
    name: String,
    path: String,
    middlewares: Vec<String>,
    router: Option<String>,
}

#[async_trait]
impl Module for RunsApi {
    async fn start(&self, ctx: &StartContext) -> anyhow::Result<()> {
        let journal = ctx.app.journal().ok_or_else(|| {
            anyhow::anyhow!(
                "`runs.api` serves the run journal, and this app records no runs: run it with `wf-host run` (its data directory keeps the journal), or set `runs: {{journal: true}}`"
            )
        })?;
        let router = started_router(self.router.as_deref(), ctx)?;
        let path = &self.path;
        let routes: [(Method, String, Endpoint); 5] = [
            (Method::GET, path.clone(), Endpoint::List),
            (Method::GET, format!("{path}/{{id}}"), Endpoint::Show),
            (
                Method::POST,
                format!("{path}/{{id}}/replay"),
                Endpoint::Replay,
            ),
            (
                Method::POST,
                format!("{path}/{{id}}/cancel"),
                Endpoint::Cancel,
            ),
            (
                Method::POST,
                format!("{path}/replay"),
                Endpoint::ReplayFailed,
            ),
        ];
        for (method, route, endpoint) in routes {
            let journal = journal.clone();
            let service = route_fn(move |req: Request| {
                let journal = journal.clone();
                async move { handle(endpoint, &journal, req).await }
            });
            add_guarded_endpoint(
                &router,
                &ctx.app,
                &self.name,
                method,
                &route,
                service,
                &self.middlewares,
            )?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Endpoint {
    List,
    Show,
    Replay,
    Cancel,
    ReplayFailed,
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    json_response(status, &json!({"error": message.to_string()}))
}

/// The journal's own failure: generic to the caller, detailed in the log.
fn unavailable(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "run journal request failed");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the run journal is unavailable; try again later",
    )
}

fn refused(e: RunRequestError) -> Response {
    match e {
        RunRequestError::NotFound(_) => error(StatusCode::NOT_FOUND, e),
        RunRequestError::Conflict(_) => error(StatusCode::CONFLICT, e),
        RunRequestError::Journal(e) => unavailable(e),
    }
}

async fn handle(endpoint: Endpoint, journal: &Arc<Journal>, req: Request) -> Response {
    let id = req
        .extensions()
        .get::<PathParams>()
        .and_then(|p| p.get("id"))
        .unwrap_or_default()
        .to_string();
    // Runs that have answered their callers are visible here, though their records may still
    // be queued; a failed flush shows in the read that follows.
    let _ = journal.flush().await;
    match endpoint {
        Endpoint::List => {
            let query = match list_query(req.uri().query().unwrap_or("")) {
                Ok(q) => q,
                Err(message) => return error(StatusCode::BAD_REQUEST, message),
            };
            match journal.store().list(&query).await {
                Ok(page) => json_response(StatusCode::OK, &json!(page)),
                Err(e) => unavailable(e),
            }
        }
        Endpoint::Show => match journal.store().get(&id).await {
            Ok(Some(run)) => json_response(StatusCode::OK, &json!(run)),
            Ok(None) => error(StatusCode::NOT_FOUND, format!("no run `{id}`")),
            Err(e) => unavailable(e),
        },
        Endpoint::Replay => {
            let body = match body_json(req).await {
                Ok(body) => body,
                Err(response) => return response,
            };
            let from = match body.get("from") {
                None | Some(Value::Null) => None,
                Some(Value::String(step)) => Some(step.clone()),
                Some(_) => return error(StatusCode::BAD_REQUEST, "`from` is a step's name"),
            };
            match journal.replay(&id, from.as_deref()).await {
                Ok(new_id) => json_response(
                    StatusCode::ACCEPTED,
                    &json!({"run_id": new_id, "replay_of": id, "from": from, "status": "queued"}),
                ),
                Err(e) => refused(e),
            }
        }
        Endpoint::Cancel => match journal.cancel(&id).await {
            Ok(RunStatus::Cancelled) => json_response(
                StatusCode::OK,
                &json!({"run_id": id, "status": "cancelled"}),
            ),
            Ok(_) => json_response(
                StatusCode::ACCEPTED,
                &json!({"run_id": id, "status": "cancelling"}),
            ),
            Err(e) => refused(e),
        },
        Endpoint::ReplayFailed => {
            let body = match body_json(req).await {
                Ok(body) => body,
                Err(response) => return response,
            };
            let pipeline = match body.get("pipeline") {
                None | Some(Value::Null) => None,
                Some(Value::String(p)) => Some(p.clone()),
                Some(_) => {
                    return error(StatusCode::BAD_REQUEST, "`pipeline` is a pipeline's name");
                }
            };
            let query = RunQuery {
                pipeline,
                status: Some(RunStatus::Failed),
                unreplayed: true,
                limit: wf_engine::journal::MAX_PAGE,
                ..RunQuery::default()
            };
            let page = match journal.store().list(&query).await {
                Ok(page) => page,
                Err(e) => return unavailable(e),
            };
            let mut replays = Vec::new();
            let mut refusals = Vec::new();
            for run in page.runs {
                match journal.replay(&run.run_id, None).await {
                    Ok(new_id) => replays.push(json!({"run_id": new_id, "replay_of": run.run_id})),
                    Err(RunRequestError::Journal(e)) => return unavailable(e),
                    Err(e) => refusals.push(json!({"run_id": run.run_id, "error": e.to_string()})),
                }
            }
            json_response(
                StatusCode::ACCEPTED,
                &json!({"replays": replays, "refused": refusals}),
            )
        }
    }
}

/// A small JSON object body (an empty body is `{}`).
async fn body_json(req: Request) -> Result<serde_json::Map<String, Value>, Response> {
    let body =
        crate::exchange::read_body(req.into_body(), MAX_BODY, "the runs API's limit").await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(error(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object",
        )),
    }
}

fn list_query(query: &str) -> Result<RunQuery, String> {
    let mut out = RunQuery {
        limit: 50,
        ..RunQuery::default()
    };
    for (key, value) in crate::exchange::parse_query(query) {
        match key.as_str() {
            "pipeline" => out.pipeline = Some(value),
            "status" => {
                out.status = Some(RunStatus::parse(&value).ok_or_else(|| {
                    let all: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
                    format!("`status` is one of {}", all.join(", "))
                })?)
            }
            "since" => {
                let d = wf_engine::wf_config::parse_duration(&value)
                    .map_err(|e| format!("`since`: {e}"))?;
                out.since = Some(
                    wf_engine::wf_config::time::unix_millis_now()
                        - i64::try_from(d.as_millis()).unwrap_or(0),
                );
            }
            "limit" => {
                out.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or("`limit` is a positive number")?
                    .min(wf_engine::journal::MAX_PAGE)
            }
            "cursor" => {
                out.after = Some(
                    RunPage::parse_cursor(&value)
                        .ok_or("`cursor` is not a cursor this API gave")?,
                )
            }
            "unreplayed" => out.unreplayed = value == "true",
            other => return Err(format!("unknown parameter `{other}`")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_parameters_are_checked() {
        let q = list_query("pipeline=orders&status=failed&limit=10&unreplayed=true").unwrap();
        assert_eq!(q.pipeline.as_deref(), Some("orders"));
        assert_eq!(q.status, Some(RunStatus::Failed));
        assert_eq!(q.limit, 10);
        assert!(q.unreplayed);
        assert_eq!(list_query("limit=100000").unwrap().limit, 500);
        assert!(list_query("status=done").unwrap_err().contains("one of"));
        assert!(list_query("limit=0").is_err());
        assert!(list_query("cursor=x").is_err());
        assert!(list_query("since=soon").is_err());
        assert!(list_query("order=asc").unwrap_err().contains("unknown"));
    }
}
