//! `step.request_parse`: path parameters, query parameters and the body of the HTTP request that
//! started the run (JSON or form encoded). Without a request (`wf-host run-pipeline`), it reads
//! the trigger data instead.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use wf_engine::{
    BuildContext, Category, Described, PipelineContext, Step, StepError, StepOutput, StepType,
    async_trait,
};
use wf_http::HttpExchange;

/// Configuration of `step.request_parse`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestParseConfig {
    /// Path parameters to extract (`id` for `/users/{id}`, `path` for `/files/{path...}`);
    /// output as `path_params`.
    #[serde(default)]
    pub path_params: Vec<String>,
    /// Query parameters to extract (first value of each); output as `query`.
    #[serde(default)]
    pub query_params: Vec<String>,
    /// Parse the body (JSON, or `application/x-www-form-urlencoded`) into `body`.
    #[serde(default)]
    pub parse_body: bool,
    /// Request headers to extract; output as `headers`.
    #[serde(default)]
    pub headers: Vec<String>,
    /// Body fields to keep; the body is parsed (as with `parse_body`) and other fields dropped.
    #[serde(default)]
    pub fields: Vec<String>,
}

pub struct RequestParseType;

impl Described for RequestParseType {
    const NAME: &'static str = "step.request_parse";
    const CATEGORY: Category = Category::Pipeline;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "Extracts path and query parameters, headers and the JSON or form body of the request.";
    type Config = RequestParseConfig;
}

impl StepType for RequestParseType {
    fn build(
        config: RequestParseConfig,
        _: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Step>> {
        Ok(Arc::new(RequestParse { config }))
    }
}

struct RequestParse {
    config: RequestParseConfig,
}

fn parse_body(exchange: &HttpExchange) -> Result<Value, StepError> {
    match exchange.parsed_body().map_err(StepError::invalid_input)? {
        Some(body) => Ok(body),
        None if exchange.body.is_empty() => Ok(Value::Object(Map::new())),
        None => Err(StepError::invalid_input(
            "request body is neither JSON nor form data",
        )),
    }
}

#[async_trait]
impl Step for RequestParse {
    async fn run(&self, ctx: &PipelineContext) -> Result<StepOutput, StepError> {
        let exchange = ctx.extensions.get::<Arc<HttpExchange>>();
        let mut values = Map::new();
        if !self.config.path_params.is_empty() {
            let params: Map<String, Value> = self
                .config
                .path_params
                .iter()
                .filter_map(|name| {
                    let value = match exchange {
                        Some(x) => x.path_params.get(name).map(str::to_string),
                        None => ctx.trigger.get(name).and_then(scalar_text),
                    };
                    value.map(|v| (name.clone(), Value::String(v)))
                })
                .collect();
            values.insert("path_params".into(), Value::Object(params));
        }
        if !self.config.query_params.is_empty() {
            let query: Map<String, Value> = self
                .config
                .query_params
                .iter()
                .filter_map(|name| {
                    let value = match exchange {
                        Some(x) => x.query_param(name).map(str::to_string),
                        None => ctx.trigger.get(name).and_then(scalar_text),
                    };
                    value
                        .filter(|v| !v.is_empty())
                        .map(|v| (name.clone(), Value::String(v)))
                })
                .collect();
            values.insert("query".into(), Value::Object(query));
        }
        if !self.config.headers.is_empty() {
            let headers: Map<String, Value> = self
                .config
                .headers
                .iter()
                .filter_map(|name| {
                    let value = exchange?.headers.get(name.as_str())?.to_str().ok()?;
                    Some((name.clone(), Value::String(value.to_string())))
                })
                .collect();
            values.insert("headers".into(), Value::Object(headers));
        }
        if self.config.parse_body || !self.config.fields.is_empty() {
            // As the original: a body already in the trigger data or the current data wins.
            let mut body = match (ctx.trigger.get("body"), ctx.current.get("body"), exchange) {
                (Some(body), _, _) | (None, Some(body), _) => body.clone(),
                (None, None, Some(exchange)) => parse_body(exchange)?,
                (None, None, None) => Value::Object(ctx.trigger.clone()),
            };
            if !self.config.fields.is_empty()
                && let Value::Object(map) = &mut body
            {
                map.retain(|k, _| self.config.fields.contains(k));
            }
            values.insert("body".into(), body);
        }
        Ok(StepOutput::values(values))
    }
}

/// A trigger value as request text would carry it: strings as they are, numbers and booleans
/// written out; maps and lists are not parameters.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
