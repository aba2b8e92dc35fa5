//! `step.delegate`: hands the HTTP request to a module that serves HTTP (an `http.handler`, a
//! proxy, ...) and ends the run with its response. Without a request, it sends a synthetic one
//! built from the trigger's `method`, `path` and `body`, and outputs the response.

use std::sync::Arc;

use axum::body::Body;
use http_body_util::BodyExt;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Next, PipelineContext, Step,
    StepError, StepOutput, StepType, async_trait,
};
use wf_http::{HttpExchange, HttpHandler, RouteService};

/// Configuration of `step.delegate`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DelegateConfig {
    /// The module that answers the request.
    pub service: String,
}

pub struct DelegateType;

impl Described for DelegateType {
    const NAME: &'static str = "step.delegate";
    const CATEGORY: Category = Category::Pipeline;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "Hands the request to a module that serves HTTP and answers with its response.";
    type Config = DelegateConfig;
}

impl StepType for DelegateType {
    fn check(config: &DelegateConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        if ctx.config.module(&config.service).is_none()
            && wf_engine::catalogue::BUILTIN_SERVICES.contains(&config.service.as_str())
        {
            return vec![ConfigIssue::not_implemented(
                "/service",
                format!(
                    "the admin service `{}` is not in this build yet",
                    config.service
                ),
            )];
        }
        ctx.require_module("/service", &config.service, "service")
            .into_iter()
            .collect()
    }

    fn build(config: DelegateConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Step>> {
        let handler = ctx.service::<dyn HttpHandler>(&config.service)?;
        Ok(Arc::new(Delegate {
            name: config.service,
            service: handler.service(),
        }))
    }
}

struct Delegate {
    name: String,
    service: RouteService,
}

fn request_from(exchange: &HttpExchange) -> Result<http::Request<Body>, StepError> {
    // The request as it arrived: path and query exactly as the client encoded them.
    let uri = exchange.uri.clone();
    let mut request = http::Request::builder()
        .method(exchange.method.as_str())
        .uri(uri)
        .body(Body::from(exchange.body.clone()))
        .map_err(|e| StepError::internal(e.to_string()))?;
    *request.headers_mut() = exchange.headers.clone();
    request
        .extensions_mut()
        .insert(exchange.path_params.clone());
    Ok(request)
}

fn synthetic_request(ctx: &PipelineContext) -> Result<http::Request<Body>, StepError> {
    let text = |key: &str, default: &str| {
        ctx.trigger
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_string()
    };
    let body = ctx
        .trigger
        .get("body")
        .map(|b| b.to_string())
        .unwrap_or_default();
    http::Request::builder()
        .method(text("method", "GET").as_str())
        .uri(text("path", "/"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .map_err(|e| {
            StepError::invalid_input(format!("cannot build a request from the trigger data: {e}"))
        })
}

#[async_trait]
impl Step for Delegate {
    async fn run(&self, ctx: &PipelineContext) -> Result<StepOutput, StepError> {
        let exchange = ctx.extensions.get::<Arc<HttpExchange>>();
        let request = match exchange {
            Some(exchange) => request_from(exchange)?,
            None => synthetic_request(ctx)?,
        };
        let response = wf_http::call(self.service.clone(), request).await;
        let mut values = crate::output([("delegated_to", json!(self.name))]);
        match exchange {
            Some(exchange) => exchange.respond(response),
            None => {
                let status = response.status().as_u16();
                let bytes = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| {
                        StepError::internal(format!("reading the response of `{}`: {e}", self.name))
                    })?
                    .to_bytes();
                let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                    Value::String(String::from_utf8_lossy(&bytes).into_owned())
                });
                values.insert("status_code".into(), json!(status));
                values.insert("body".into(), body);
            }
        }
        Ok(StepOutput {
            values,
            next: Next::Stop,
        })
    }
}
