//! A `webhook` connector of an `integration` workflow: its own HTTP listener that accepts
//! events as JSON `POST`s on one path, checks their signature when a `secret` is set, and
//! publishes each to a topic and/or runs a pipeline with it.
//!
//! Answers: `202 {"status": "accepted", "topic"}` once published (the pipeline's answer when
//! one runs), `400` for a body that is not a JSON object, `401` for a missing, wrong or stale
//! signature, `413` for a body over `maxBodyBytes`, `503` when the broker refuses the event.
//! The original's receiver answered `501` to every event, since nothing could register a
//! handler from YAML.

use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use axum::body::Body;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use wf_engine::{Module, StartContext, StopContext, Trigger, async_trait};
use wf_http::exchange::{PipelineRoute, pipeline_service, read_body};
use wf_http::{HttpServer, Request, Response, RouteService, Router, json_response, route_fn};
use wf_messaging::MessageBroker;

/// Largest event accepted when `maxBodyBytes` is not set.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

pub struct WebhookReceiver {
    pub connector: String,
    /// `host:port` or `:port`.
    pub address: String,
    pub path: String,
    /// Where events are published, with the broker to publish on.
    pub publish: Option<(String, Arc<dyn MessageBroker>)>,
    /// A pipeline run for each event.
    pub pipeline: Option<String>,
    pub secret: Option<String>,
    pub max_body_bytes: usize,
    server: Mutex<Option<Arc<HttpServer>>>,
}

impl WebhookReceiver {
    pub fn new(connector: &str, address: String, path: String) -> Self {
        WebhookReceiver {
            connector: connector.to_string(),
            address,
            path,
            publish: None,
            pipeline: None,
            secret: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            server: Mutex::default(),
        }
    }

    /// Where it listens, once started.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.server.lock().ok()?.as_ref()?.local_addr()
    }
}

/// What one request needs, shared by the route.
struct Receive {
    connector: String,
    publish: Option<(String, Arc<dyn MessageBroker>)>,
    pipeline: Option<RouteService>,
    secret: Option<String>,
    max_body_bytes: usize,
}

#[async_trait]
impl Trigger for WebhookReceiver {
    async fn start(&self, ctx: &StartContext) -> anyhow::Result<()> {
        if !ctx.serving {
            // `wf-host run-pipeline`: take no events from outside.
            return Ok(());
        }
        let pipeline = match &self.pipeline {
            Some(name) => {
                let pipeline = ctx.app.pipelines().get(name).with_context(|| {
                    format!(
                        "webhook connector `{}`: no pipeline named `{name}`",
                        self.connector
                    )
                })?;
                Some(pipeline_service(
                    pipeline,
                    PipelineRoute {
                        max_body_bytes: self.max_body_bytes,
                        ..PipelineRoute::default()
                    },
                ))
            }
            None => None,
        };
        let receive = Arc::new(Receive {
            connector: self.connector.clone(),
            publish: self.publish.clone(),
            pipeline,
            secret: self.secret.clone(),
            max_body_bytes: self.max_body_bytes,
        });
        let router = Arc::new(Router::new(&format!("webhook:{}", self.connector)));
        router
            .add_route(
                Method::POST,
                &self.path,
                route_fn(move |req: Request| {
                    let receive = receive.clone();
                    async move { receive.handle(req).await }
                }),
            )
            .map_err(|e| anyhow::anyhow!("webhook connector `{}`: {e}", self.connector))?;
        let server = Arc::new(
            HttpServer::standalone(
                &format!("webhook:{}", self.connector),
                &self.address,
                router,
            )
            .map_err(|e| anyhow::anyhow!("webhook connector `{}`: {e}", self.connector))?,
        );
        server
            .start(ctx)
            .await
            .with_context(|| format!("webhook connector `{}`", self.connector))?;
        tracing::info!(connector = %self.connector, address = ?server.local_addr(), path = %self.path, "webhook connector listening");
        if let Ok(mut slot) = self.server.lock() {
            *slot = Some(server);
        }
        Ok(())
    }

    async fn stop(&self, ctx: &StopContext) -> anyhow::Result<()> {
        let server = self.server.lock().ok().and_then(|mut s| s.take());
        match server {
            Some(server) => server.stop(ctx).await,
            None => Ok(()),
        }
    }
}

fn refuse(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({ "error": message }))
}

impl Receive {
    async fn handle(&self, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let body = match read_body(body, self.max_body_bytes, "the receiver's `maxBodyBytes`").await
        {
            Ok(body) => body,
            Err(response) => return response,
        };
        if let Some(secret) = &self.secret {
            let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if let Err(why) = crate::signature::verify(
                secret,
                header("x-webhook-timestamp"),
                header("x-webhook-signature"),
                &body,
                now,
            ) {
                tracing::warn!(connector = %self.connector, reason = why, "webhook event refused");
                return refuse(StatusCode::UNAUTHORIZED, why);
            }
        }
        if !matches!(serde_json::from_slice::<Value>(&body), Ok(Value::Object(_))) {
            return refuse(StatusCode::BAD_REQUEST, "the event must be a JSON object");
        }
        if let Some((topic, broker)) = &self.publish
            && let Err(e) = broker.publish(topic, body.clone()).await
        {
            tracing::error!(connector = %self.connector, %topic, error = %format!("{e:#}"), "webhook event could not be published");
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "the event could not be accepted; try again later",
            );
        }
        match &self.pipeline {
            Some(service) => {
                let req = http::Request::from_parts(parts, Body::from(body));
                wf_http::call(service.clone(), req).await
            }
            None => json_response(
                StatusCode::ACCEPTED,
                &json!({
                    "status": "accepted",
                    "topic": self.publish.as_ref().map(|(t, _)| t),
                }),
            ),
        }
    }
}
