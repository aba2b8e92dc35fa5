//! `step.openapi_call`: calls an operation of an `openapi.consumer` by its `operationId`.
//!
//! ```yaml
//! - name: pet
//!   type: step.openapi_call
//!   config:
//!     operation: getPetById
//!     parameters: {petId: "{{ .id }}", verbose: true}
//!     body: {name: "{{ .name }}"}          # for operations with a request body
//! ```
//!
//! Parameters and the body are checked against the document first; a mistake fails the step
//! as `invalid_input` without sending anything. The output is `step.http_call`'s: `status_code`,
//! `status`, `headers` and `body`.

use std::collections::BTreeMap;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use wf_engine::wf_config::did_you_mean;
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, PipelineContext, Step, StepError,
    StepOutput, StepType, async_trait,
};
use wf_template::TemplateValue;

use crate::openapi_consumer::{self, OpenApiConsumer};

/// Configuration of `step.openapi_call`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenApiCallConfig {
    /// The `openapi.consumer` module; optional when the app has one.
    #[serde(default)]
    pub consumer: Option<String>,
    /// The operation's `operationId` in the document.
    pub operation: String,
    /// Path, query and header parameters by name; values may be templates.
    #[serde(default)]
    pub parameters: BTreeMap<String, Value>,
    /// The JSON request body; strings may be templates.
    #[serde(default)]
    pub body: Option<Value>,
}

pub struct OpenApiCallType;

impl Described for OpenApiCallType {
    const NAME: &'static str = "step.openapi_call";
    const CATEGORY: Category = Category::Integration;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Calls an `openapi.consumer` operation by operationId, checking parameters and body against the API's document first.";
    type Config = OpenApiCallConfig;
}

impl StepType for OpenApiCallType {
    fn check(config: &OpenApiCallConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        match ctx.choose(
            config.consumer.as_deref(),
            "consumer",
            "OpenAPI consumer",
            &[openapi_consumer::NAME],
        ) {
            Ok(_) => Vec::new(),
            Err(issue) => vec![issue],
        }
    }

    fn build(
        config: OpenApiCallConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Step>> {
        let consumer = ctx.named_or_only::<OpenApiConsumer>(
            config.consumer.as_deref(),
            "there is no `openapi.consumer` module",
        )?;
        // With a document read at build, mistakes are found now rather than at the first call.
        if let Some(spec) = consumer.spec() {
            let Some(operation) = spec.operations.get(&config.operation) else {
                let hint = did_you_mean(
                    &config.operation,
                    spec.operations.keys().map(String::as_str),
                )
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_else(|| {
                    format!(
                        "; it has {}",
                        spec.operations
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                });
                anyhow::bail!("the API has no operation `{}`{hint}", config.operation);
            };
            for name in config.parameters.keys() {
                if !operation.parameters.iter().any(|p| &p.name == name) {
                    let known = operation.parameters.iter().map(|p| p.name.as_str());
                    let hint = did_you_mean(name, known)
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    anyhow::bail!(
                        "operation `{}` has no parameter `{name}`{hint}",
                        config.operation
                    );
                }
            }
            if let Some(missing) = operation
                .parameters
                .iter()
                .find(|p| p.required && !config.parameters.contains_key(&p.name))
            {
                anyhow::bail!(
                    "operation `{}` needs parameter `{}`",
                    config.operation,
                    missing.name
                );
            }
        }
        let mut parameters = Vec::new();
        for (name, value) in &config.parameters {
            parameters.push((name.clone(), crate::compile("parameters", value)?));
        }
        Ok(Arc::new(OpenApiCall {
            consumer,
            operation: config.operation,
            parameters,
            body: config
                .body
                .as_ref()
                .map(|b| crate::compile("body", b))
                .transpose()?,
        }))
    }
}

struct OpenApiCall {
    consumer: Arc<OpenApiConsumer>,
    operation: String,
    parameters: Vec<(String, TemplateValue)>,
    body: Option<TemplateValue>,
}

#[async_trait]
impl Step for OpenApiCall {
    async fn run(&self, ctx: &PipelineContext) -> Result<StepOutput, StepError> {
        let mut parameters = Map::new();
        for (name, template) in &self.parameters {
            parameters.insert(name.clone(), crate::render(template, ctx)?);
        }
        let body = self
            .body
            .as_ref()
            .map(|b| crate::render(b, ctx))
            .transpose()?;
        self.consumer.call(&self.operation, &parameters, body).await
    }
}
