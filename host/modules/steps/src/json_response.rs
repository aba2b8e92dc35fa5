//! `step.json_response`: answers the HTTP request with JSON and ends the run. Without a request,
//! its `{status, body}` become the run's output.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use http::{HeaderName, HeaderValue, StatusCode};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Next, PipelineContext, Step,
    StepError, StepOutput, StepType, async_trait,
};
use wf_http::HttpExchange;
use wf_template::TemplateValue;

/// Configuration of `step.json_response`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonResponseConfig {
    /// Status code.
    #[serde(default = "default_status")]
    #[schemars(range(min = 100, max = 599))]
    pub status: u16,
    /// Dotted path of a status code in the data, used instead of `status` when present.
    #[serde(default)]
    pub status_from: Option<String>,
    /// Response headers; values may be templates.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The body; strings in it may be templates.
    #[serde(default)]
    pub body: Option<Value>,
    /// Dotted path of the body in the data, e.g. `steps.query.rows`; used instead of `body`.
    #[serde(default)]
    pub body_from: Option<String>,
}

fn default_status() -> u16 {
    200
}

pub struct JsonResponseType;

impl Described for JsonResponseType {
    const NAME: &'static str = "step.json_response";
    const CATEGORY: Category = Category::Pipeline;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "Answers the HTTP request with a JSON body, status and headers, and ends the run.";
    type Config = JsonResponseConfig;
}

impl StepType for JsonResponseType {
    fn check(config: &JsonResponseConfig, _: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if config.body.is_some() && config.body_from.is_some() {
            issues.push(ConfigIssue::new(
                "/body_from",
                "give `body` or `body_from`, not both",
            ));
        }
        for name in config.headers.keys() {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                issues.push(ConfigIssue::new(
                    format!("/headers/{name}"),
                    format!("`{name}` is not a valid header name"),
                ));
            }
        }
        issues
    }

    fn build(
        config: JsonResponseConfig,
        _: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Step>> {
        let mut headers = Vec::new();
        for (name, value) in &config.headers {
            headers.push((
                HeaderName::from_bytes(name.as_bytes())?,
                crate::compile_str(&format!("headers.{name}"), value)?,
            ));
        }
        Ok(Arc::new(JsonResponse {
            status: config.status,
            status_from: config.status_from,
            headers,
            body: config
                .body
                .as_ref()
                .map(|b| crate::compile("body", b))
                .transpose()?,
            body_from: config.body_from,
        }))
    }
}

struct JsonResponse {
    status: u16,
    status_from: Option<String>,
    headers: Vec<(HeaderName, wf_template::Template)>,
    body: Option<TemplateValue>,
    body_from: Option<String>,
}

#[async_trait]
impl Step for JsonResponse {
    fn documented_status(&self) -> Option<u16> {
        // A status taken from the data is not known in advance.
        self.status_from.is_none().then_some(self.status)
    }

    async fn run(&self, ctx: &PipelineContext) -> Result<StepOutput, StepError> {
        let status = match self
            .status_from
            .as_deref()
            .and_then(|p| crate::resolve_path(ctx, p))
        {
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| (100..=599).contains(n))
                .ok_or_else(|| {
                    StepError::invalid_input(format!(
                        "`status_from` gave {v}, which is not an HTTP status"
                    ))
                })?,
            None => self.status,
        };
        let body = match (&self.body_from, &self.body) {
            (Some(path), _) => Some(crate::resolve_path(ctx, path).unwrap_or(Value::Null)),
            (None, Some(body)) => Some(crate::render(body, ctx)?),
            (None, None) => None,
        };
        let data = ctx.scope();
        let mut output = crate::output([("status", json!(status))]);
        match ctx.extensions.get::<Arc<HttpExchange>>() {
            Some(exchange) => {
                let status =
                    StatusCode::from_u16(status).map_err(|e| StepError::internal(e.to_string()))?;
                let mut response = match &body {
                    Some(body) => wf_http::json_response(status, body),
                    None => {
                        let mut r = http::Response::new(Body::empty());
                        *r.status_mut() = status;
                        r
                    }
                };
                for (name, template) in &self.headers {
                    let value = template.render_string(&data).map_err(StepError::from)?;
                    let value = HeaderValue::from_str(&value).map_err(|_| {
                        StepError::invalid_input(format!(
                            "header `{name}` rendered to an invalid value"
                        ))
                    })?;
                    response.headers_mut().insert(name.clone(), value);
                }
                exchange.respond(response);
            }
            None => {
                output.insert("body".into(), body.unwrap_or(Value::Null));
            }
        }
        Ok(StepOutput {
            values: output,
            next: Next::Stop,
        })
    }
}
