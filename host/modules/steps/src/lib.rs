//! The step library: the original's pipeline steps with their config keys and output fields.

use serde_json::{Map, Value};
use wf_engine::{PipelineContext, Registry, RegistryError, StepError};
use wf_template::{Template, TemplateValue};

pub mod circuit_breaker;
pub mod conditional;
pub mod delegate;
pub mod http_call;
pub mod httpclient_module;
pub mod jq;
pub mod json_response;
pub mod jsonschema_module;
pub mod log;
pub mod openapi_call;
pub mod openapi_consumer;
pub mod publish;
pub mod rate_limit;
pub mod request_parse;
pub mod set;
pub mod sub_workflow;
pub mod transform;
pub mod validate;

pub const PLUGIN: &str = "pipeline-steps";

pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    registry
        .register_step::<set::SetType>()?
        .register_step::<log::LogType>()?
        .register_step::<validate::ValidateType>()?
        .register_step::<conditional::ConditionalType>()?
        .register_step::<request_parse::RequestParseType>()?
        .register_step::<json_response::JsonResponseType>()?
        .register_step::<transform::TransformType>()?
        .register_step::<publish::PublishType>()?
        .register_step::<delegate::DelegateType>()?
        .register_step::<rate_limit::RateLimitType>()?
        .register_step::<sub_workflow::SubWorkflowType>()?
        .register_step::<http_call::HttpCallType>()?
        .register_step::<jq::JqType>()?
        .register_step::<circuit_breaker::CircuitBreakerType>()?
        .register_module::<transform::DataTransformerType>()?
        .register_module::<jsonschema_module::JsonSchemasType>()?
        .register_module::<httpclient_module::HttpClientType>()?
        .register_module::<openapi_consumer::OpenApiConsumerType>()?
        .register_step::<openapi_call::OpenApiCallType>()?;
    Ok(())
}

/// Compiles a config value's templates at build time; a syntax error fails the build with the
/// field named.
pub fn compile(field: &str, value: &Value) -> anyhow::Result<TemplateValue> {
    TemplateValue::compile(value).map_err(|e| anyhow::anyhow!("`{field}`: {e}"))
}

pub fn compile_str(field: &str, text: &str) -> anyhow::Result<Template> {
    Template::compile(text).map_err(|e| anyhow::anyhow!("`{field}`: {e}"))
}

/// A run-time template failure: the input did not have what the template reads.
pub fn render(template: &TemplateValue, ctx: &PipelineContext) -> Result<Value, StepError> {
    template.render(&ctx.scope()).map_err(StepError::from)
}

/// A run-time string template failure: the input did not have what the template reads.
pub fn render_str(template: &Template, ctx: &PipelineContext) -> Result<String, StepError> {
    template
        .render_string(&ctx.scope())
        .map_err(StepError::from)
}

/// The value at a dotted path (`steps.parse.body`) in what templates see.
pub(crate) fn resolve_path(ctx: &PipelineContext, path: &str) -> Option<Value> {
    ctx.scope().lookup(path)
}

/// A map output.
pub fn output(pairs: impl IntoIterator<Item = (&'static str, Value)>) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}
