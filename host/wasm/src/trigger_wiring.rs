//! Trigger components at work: each source a trigger component declares is watched by the host
//! (an HTTP route on the app's router, a topic on its broker, a cron schedule), and each event
//! goes to the component's `on-event`, whose answer names the pipeline runs to start.
//!
//! Sources are wired when a trigger component is first installed in the running app (from
//! `dynamic.component`, the watched directory or an upload); the live version is looked up per
//! event, so a hot swap takes effect on the next event (the registry refuses a version whose
//! sources differ). Routes stay until the app stops: a deleted trigger's route answers 503.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Map, Value, json};
use wf_engine::{AppState, ErrorKind, Extensions};
use wf_http::{Request, Response, Router, json_response, route_fn};
use wf_messaging::{MessageBroker, MessageHandler};

use crate::capabilities::Capabilities;
use crate::component::{CallError, TriggerSource, TriggerStart};
use crate::registry::Slot;

/// Largest request body a trigger route reads.
const MAX_BODY_BYTES: usize = 1 << 20;

/// Where the sources go.
pub struct Watchers {
    pub router: Option<Arc<Router>>,
    pub broker: Option<Arc<dyn MessageBroker>>,
}

/// Routes and topics are capabilities like any other: every source must be granted.
pub fn check_sources(
    component: &str,
    sources: &[TriggerSource],
    capabilities: &Capabilities,
) -> anyhow::Result<()> {
    for source in sources {
        let check = match source {
            TriggerSource::HttpRoute { method, path } => capabilities.route_allowed(method, path),
            TriggerSource::Topic { topic } => capabilities.subscribe_allowed(topic),
            TriggerSource::Cron { .. } => Ok(()),
        };
        check.map_err(|e| anyhow::anyhow!("trigger component `{component}`: {e}"))?;
    }
    Ok(())
}

/// Watches every source of the live trigger component in `slot`. Cron sources tick on a
/// scheduler of their own (UTC, overlapping ticks skipped), returned so the app can stop it.
pub fn wire(
    slot: &Arc<Slot>,
    sources: &[TriggerSource],
    capabilities: &Capabilities,
    watchers: &Watchers,
    app: &Arc<AppState>,
) -> anyhow::Result<Option<Arc<wf_scheduler::CronScheduler>>> {
    check_sources(&slot.name, sources, capabilities)?;
    // Parse every schedule first, so a bad one wires nothing.
    let mut schedules = Vec::new();
    for (index, source) in sources.iter().enumerate() {
        if let TriggerSource::Cron { expression } = source {
            let schedule = wf_scheduler::Schedule::parse(expression, "UTC")
                .map_err(|e| anyhow::anyhow!("trigger component `{}`: {e}", slot.name))?;
            schedules.push((index as u32, schedule));
        }
    }
    for (index, source) in sources.iter().enumerate() {
        let index = index as u32;
        match source {
            TriggerSource::HttpRoute { method, path } => {
                let router = watchers.router.as_ref().ok_or_else(|| {
                    anyhow::anyhow!("trigger component `{}` declares the route {method} {path}, but the app has no `http.router`", slot.name)
                })?;
                let method = http::Method::from_bytes(method.as_bytes()).map_err(|_| {
                    anyhow::anyhow!(
                        "trigger component `{}`: bad HTTP method `{method}`",
                        slot.name
                    )
                })?;
                let (route_slot, route_app) = (slot.clone(), app.clone());
                let served = router.add_route(
                    method.clone(),
                    path,
                    route_fn(move |req| {
                        let (slot, app) = (route_slot.clone(), route_app.clone());
                        async move { http_event(&slot, index, &app, req).await }
                    }),
                )?;
                app.add_route(wf_engine::RouteInfo {
                    server: None,
                    router: router.name().to_string(),
                    method: method.to_string(),
                    path: served,
                    handler: format!("trigger component `{}`", slot.name),
                    middlewares: Vec::new(),
                    ..Default::default()
                });
            }
            TriggerSource::Topic { topic } => {
                let broker = watchers.broker.as_ref().ok_or_else(|| {
                    anyhow::anyhow!("trigger component `{}` subscribes to `{topic}`, but the app has no message broker", slot.name)
                })?;
                broker.subscribe(
                    topic,
                    &format!("component:{}", slot.name),
                    Arc::new(TopicEvents {
                        slot: slot.clone(),
                        index,
                        app: app.clone(),
                    }),
                )?;
            }
            TriggerSource::Cron { .. } => {}
        }
    }
    if schedules.is_empty() {
        return Ok(None);
    }
    let scheduler = wf_scheduler::CronScheduler::new(&format!("component:{}", slot.name));
    for (index, schedule) in schedules {
        let action = Arc::new(ComponentTick {
            slot: slot.clone(),
            index,
            app: app.clone(),
        });
        let name = format!("{}#{index}", slot.name);
        scheduler.add(wf_scheduler::Job::new(
            name,
            schedule,
            wf_scheduler::Overlap::Skip,
            action,
        ));
    }
    scheduler.start();
    Ok(Some(scheduler))
}

/// One cron source of a trigger component: each tick is an event for the component.
struct ComponentTick {
    slot: Arc<Slot>,
    index: u32,
    app: Arc<AppState>,
}

#[wf_engine::async_trait]
impl wf_scheduler::JobAction for ComponentTick {
    async fn fire(&self, tick: wf_scheduler::Tick) -> anyhow::Result<()> {
        let payload = json!({"scheduled_at": tick.scheduled_at});
        let runs = event(&self.slot, self.index, &self.app, payload)
            .await
            .map_err(|e| anyhow::anyhow!("scheduled event failed: {e}"))?;
        for (pipeline, result) in runs {
            if let Err(error) = result {
                tracing::error!(component = %self.slot.name, %pipeline, "scheduled run failed: {error}");
            }
        }
        Ok(())
    }
}

/// What one requested run did.
fn run_report(pipeline: &str, result: Result<Map<String, Value>, String>) -> Value {
    match result {
        Ok(output) => json!({"pipeline": pipeline, "status": "completed", "output": output}),
        Err(error) => json!({"pipeline": pipeline, "status": "failed", "error": error}),
    }
}

/// Starts the runs a trigger asked for, one after another; unknown pipelines fail their run.
async fn start_runs(
    app: &AppState,
    component: &str,
    capabilities: &Capabilities,
    starts: Vec<TriggerStart>,
) -> Vec<(String, Result<Map<String, Value>, String>)> {
    let pipelines = app.pipelines();
    let mut results = Vec::new();
    for start in starts {
        if let Err(denied) = capabilities.pipeline_allowed(&start.pipeline) {
            let error = format!("component `{component}`: {denied}");
            tracing::error!(component, pipeline = %start.pipeline, "triggered run refused: {error}");
            results.push((start.pipeline, Err(error)));
            continue;
        }
        let result = match pipelines.get(&start.pipeline) {
            None => Err(format!(
                "component `{component}` asked for pipeline `{}`, which does not exist",
                start.pipeline
            )),
            Some(pipeline) => pipeline
                .run(start.data, Extensions::default())
                .await
                .map(|outcome| outcome.context.current)
                .map_err(|e| e.to_string()),
        };
        if let Err(error) = &result {
            tracing::error!(component, pipeline = %start.pipeline, "triggered run failed: {error}");
        }
        results.push((start.pipeline, result));
    }
    results
}

async fn event(
    slot: &Slot,
    index: u32,
    app: &AppState,
    payload: Value,
) -> Result<Vec<(String, Result<Map<String, Value>, String>)>, CallError> {
    let component = slot.live().ok_or_else(|| {
        CallError::Host(format!("trigger component `{}` is not loaded", slot.name))
    })?;
    let starts = component.on_event(index, &payload).await?;
    Ok(start_runs(app, &slot.name, &component.capabilities, starts).await)
}

async fn http_event(slot: &Slot, index: u32, app: &AppState, req: Request) -> Response {
    if slot.live().is_none() {
        // Deleted since its route was added (routes cannot be removed while the app runs).
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": "a service this request needs is unavailable; try again later"}),
        );
    }
    let (parts, body) = req.into_parts();
    let body: Bytes = match wf_http::exchange::read_body(
        body,
        MAX_BODY_BYTES,
        "the fixed limit of component trigger routes",
    )
    .await
    {
        Ok(body) => body,
        Err(response) => return response,
    };
    // Credentials stay with the host: a trigger sees the request, not the caller's secrets.
    let headers: Map<String, Value> = parts
        .headers
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "authorization" | "cookie" | "proxy-authorization"
            )
        })
        .filter_map(|(k, v)| Some((k.to_string(), Value::String(v.to_str().ok()?.to_string()))))
        .collect();
    let body = serde_json::from_slice::<Value>(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let payload = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query().unwrap_or(""),
        "headers": headers,
        "body": body,
    });
    match event(slot, index, app, payload).await {
        Ok(runs) => {
            let reports: Vec<Value> = runs.into_iter().map(|(p, r)| run_report(&p, r)).collect();
            json_response(StatusCode::OK, &json!({ "runs": reports }))
        }
        Err(CallError::Guest {
            kind: ErrorKind::InvalidInput,
            message,
        }) => json_response(StatusCode::BAD_REQUEST, &json!({ "error": message })),
        Err(CallError::Guest {
            kind: ErrorKind::Denied,
            message,
        }) => json_response(StatusCode::FORBIDDEN, &json!({ "error": message })),
        Err(error) => {
            tracing::error!(component = %slot.name, "trigger event failed: {error}");
            json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": "internal error"}),
            )
        }
    }
}

/// Messages on a trigger component's topic.
struct TopicEvents {
    slot: Arc<Slot>,
    index: u32,
    app: Arc<AppState>,
}

#[wf_engine::async_trait]
impl MessageHandler for TopicEvents {
    async fn handle(&self, topic: &str, payload: Bytes) -> anyhow::Result<()> {
        let message = serde_json::from_slice::<Value>(&payload)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&payload).into_owned()));
        let runs = event(
            &self.slot,
            self.index,
            &self.app,
            json!({"topic": topic, "message": message}),
        )
        .await
        .map_err(|e| anyhow::anyhow!("trigger component `{}`: {e}", self.slot.name))?;
        let failed: Vec<String> = runs
            .into_iter()
            .filter_map(|(p, r)| r.err().map(|e| format!("{p}: {e}")))
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(anyhow::anyhow!(
                "triggered runs failed: {}",
                failed.join("; ")
            ))
        }
    }
}
