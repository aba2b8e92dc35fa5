//! `openapi.consumer`: an external API described by an OpenAPI 3 document. Its operations are
//! called by `operationId` from `step.openapi_call`, with parameters and bodies checked against
//! the document before anything is sent.
//!
//! ```yaml
//! - name: petstore
//!   type: openapi.consumer
//!   config:
//!     specFile: ./petstore.yaml           # or specUrl: https://…/openapi.json (read at start)
//!     baseUrl: https://petstore.example.com/v1
//!     headers: {Authorization: "Bearer ${secret:petstore#token}"}
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use wf_engine::wf_config::duration::{DURATION_PATTERN, parse_duration};
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType, ServiceKind,
    StartContext, StepError, StepOutput, async_trait,
};

use crate::http_call::Exchange;

pub const NAME: &str = "openapi.consumer";

/// Configuration of `openapi.consumer`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenApiConsumerConfig {
    /// The OpenAPI 3 document (JSON or YAML), relative to this config file. Read when the app
    /// is built, so steps naming unknown operations or parameters are refused then.
    #[serde(default, rename = "specFile")]
    pub spec_file: Option<String>,
    /// Or the document's URL, read when the module starts (a start fails if it cannot be read).
    #[serde(default, rename = "specUrl")]
    pub spec_url: Option<String>,
    /// Where calls go; the document's first `servers` URL when omitted.
    #[serde(default, rename = "baseUrl")]
    pub base_url: Option<String>,
    /// Headers sent with every call, e.g. credentials (use `${ENV}` or `${secret:…}`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Time limit of one call.
    #[serde(default = "default_timeout")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub timeout: String,
    /// Largest response body accepted.
    #[serde(default = "default_max_response", rename = "maxResponseBytes")]
    #[schemars(range(min = 1))]
    pub max_response_bytes: usize,
}

fn default_timeout() -> String {
    "30s".into()
}
fn default_max_response() -> usize {
    10 * 1024 * 1024
}

pub struct OpenApiConsumerType;

impl Described for OpenApiConsumerType {
    const NAME: &'static str = NAME;
    const CATEGORY: Category = Category::Integration;
    const PLUGIN: &'static str = "http";
    const DESCRIPTION: &'static str = "An external API from its OpenAPI 3 document: `step.openapi_call` calls its operations by operationId, with parameters and bodies validated.";
    type Config = OpenApiConsumerConfig;
}

impl ModuleType for OpenApiConsumerType {
    fn check(config: &OpenApiConsumerConfig, _: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        match (&config.spec_file, &config.spec_url) {
            (None, None) => issues.push(ConfigIssue::new(
                "",
                "give the API's document: `specFile` or `specUrl`",
            )),
            (Some(_), Some(_)) => issues.push(ConfigIssue::new(
                "/specUrl",
                "give `specFile` or `specUrl`, not both",
            )),
            _ => {}
        }
        for (pointer, url) in [
            ("/specUrl", &config.spec_url),
            ("/baseUrl", &config.base_url),
        ] {
            if let Some(url) = url {
                issues.extend(ConfigIssue::unless_http_address(pointer, url));
            }
        }
        if let Err(e) = parse_duration(&config.timeout) {
            issues.push(ConfigIssue::new("/timeout", e));
        }
        issues.extend(wf_http::config_headers::check(&config.headers));
        if !config.headers.is_empty() && config.base_url.is_none() {
            issues.push(
                ConfigIssue::new(
                    "/baseUrl",
                    "with `headers`, set `baseUrl`: credentials go where the config says, not where the API's document says",
                )
                .help("copy the server from the document's `servers`"),
            );
        }
        issues
    }

    fn build(
        config: OpenApiConsumerConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        let spec = OnceLock::new();
        if let Some(file) = &config.spec_file {
            let full = ctx.base_dir.join(file);
            let text = std::fs::read_to_string(&full)
                .map_err(|e| anyhow::anyhow!("cannot read `{}`: {e}", full.display()))?;
            let document = serde_saphyr::from_str::<Value>(&text)
                .map_err(|e| anyhow::anyhow!("`{}` is not JSON or YAML: {e}", full.display()))?;
            let parsed = ApiSpec::parse(&document)
                .map_err(|e| anyhow::anyhow!("`{}`: {e}", full.display()))?;
            let _ = spec.set(Arc::new(parsed));
        }
        let headers = wf_http::config_headers::to_map(&config.headers)?;
        let timeout = parse_duration(&config.timeout).map_err(anyhow::Error::msg)?;
        let consumer = Arc::new(OpenApiConsumer {
            name: ctx.name.to_string(),
            spec,
            spec_url: config.spec_url,
            base_url: config.base_url,
            headers,
            exchange: Exchange {
                client: crate::http_call::client(timeout)?,
                timeout,
                max_response_bytes: config.max_response_bytes,
            },
        });
        ctx.provide::<OpenApiConsumer>(consumer.clone());
        Ok(consumer)
    }
}

/// Where a parameter goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamIn {
    Path,
    Query,
    Header,
}

pub struct Parameter {
    pub name: String,
    pub location: ParamIn,
    pub required: bool,
    /// The schema's `type`, to read `"7"` as `7` where an integer is expected (values from
    /// templates are often text).
    scalar_type: Option<String>,
    schema: Option<jsonschema::Validator>,
}

pub struct Operation {
    pub method: reqwest::Method,
    /// The path template, e.g. `/pets/{petId}`.
    pub path: String,
    pub parameters: Vec<Parameter>,
    /// Whether a JSON body is required, and its schema.
    body: Option<(bool, Option<jsonschema::Validator>)>,
}

/// The callable part of an OpenAPI 3 document.
pub struct ApiSpec {
    server: Option<String>,
    pub operations: BTreeMap<String, Operation>,
}

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

impl ApiSpec {
    pub fn parse(document: &Value) -> Result<Self, String> {
        let version = document
            .get("openapi")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !version.starts_with("3.") {
            return Err(match document.get("swagger") {
                Some(_) => "Swagger 2 documents are not supported: convert it to OpenAPI 3".into(),
                None => "not an OpenAPI 3 document (no `openapi: 3.x`)".into(),
            });
        }
        let reader = Reader { document };
        let mut operations = BTreeMap::new();
        let paths = document.get("paths").and_then(Value::as_object);
        for (path, item) in paths.into_iter().flatten() {
            for method in METHODS {
                let Some(operation) = item.get(*method) else {
                    continue;
                };
                let Some(id) = operation.get("operationId").and_then(Value::as_str) else {
                    continue; // not callable by id
                };
                let parsed = reader
                    .operation(path, method, item, operation)
                    .map_err(|e| {
                        format!("operation `{id}` ({} {path}): {e}", method.to_uppercase())
                    })?;
                if operations.insert(id.to_string(), parsed).is_some() {
                    return Err(format!("operationId `{id}` is used twice"));
                }
            }
        }
        if operations.is_empty() {
            return Err("the document has no operation with an `operationId`".into());
        }
        Ok(ApiSpec {
            server: first_server(document),
            operations,
        })
    }
}

/// The first server, its variables at their defaults (`https://{region}.api…`).
fn first_server(document: &Value) -> Option<String> {
    let mut url = document.pointer("/servers/0/url")?.as_str()?.to_string();
    if let Some(Value::Object(variables)) = document.pointer("/servers/0/variables") {
        for (name, variable) in variables {
            if let Some(default) = variable.get("default").and_then(Value::as_str) {
                url = url.replace(&format!("{{{name}}}"), default);
            }
        }
    }
    Some(url)
}

/// Reads operations out of one document, following its local references.
struct Reader<'d> {
    document: &'d Value,
}

impl Reader<'_> {
    /// `value`, or what its local `$ref` points at.
    fn resolve(&self, value: &Value) -> Result<Value, String> {
        let Some(reference) = value.get("$ref").and_then(Value::as_str) else {
            return Ok(value.clone());
        };
        let pointer = reference
            .strip_prefix('#')
            .ok_or_else(|| format!("`{reference}`: only local `#/…` references are supported"))?;
        self.document
            .pointer(pointer)
            .cloned()
            .ok_or_else(|| format!("`{reference}` leads nowhere"))
    }

    /// A schema checked as `step.validate` checks. It keeps its `#/components/…` references:
    /// the components go along.
    fn compile(&self, schema: &Value) -> Result<jsonschema::Validator, String> {
        let mut schema = schema.clone();
        if let (Value::Object(map), Some(components)) =
            (&mut schema, self.document.get("components"))
        {
            map.insert("components".into(), components.clone());
        }
        crate::jsonschema_module::compile(&schema)
    }

    fn operation(
        &self,
        path: &str,
        method: &str,
        item: &Value,
        operation: &Value,
    ) -> Result<Operation, String> {
        // The path's parameters, each replaced by the operation's of the same name and place.
        let mut declared: Vec<Value> = Vec::new();
        let listed = |v: &Value| v.get("parameters").and_then(Value::as_array).cloned();
        for raw in listed(item)
            .into_iter()
            .flatten()
            .chain(listed(operation).into_iter().flatten())
        {
            let parameter = self.resolve(&raw)?;
            declared.retain(|p| !(p["name"] == parameter["name"] && p["in"] == parameter["in"]));
            declared.push(parameter);
        }
        let mut parameters = Vec::new();
        for parameter in declared {
            if let Some(parameter) = self.parameter(&parameter)? {
                parameters.push(parameter);
            }
        }
        let body = match operation.get("requestBody") {
            Some(raw) => {
                let body = self.resolve(raw)?;
                let schema = body
                    .pointer("/content/application~1json/schema")
                    .map(|s| self.compile(s))
                    .transpose()?;
                Some((body["required"].as_bool().unwrap_or(false), schema))
            }
            None => None,
        };
        Ok(Operation {
            method: method
                .to_uppercase()
                .parse()
                .map_err(|_| format!("`{method}` is not a method"))?,
            path: path.to_string(),
            parameters,
            body,
        })
    }

    /// One parameter; `None` for cookies, which are not sent.
    fn parameter(&self, parameter: &Value) -> Result<Option<Parameter>, String> {
        let location = match parameter["in"].as_str() {
            Some("path") => ParamIn::Path,
            Some("query") => ParamIn::Query,
            Some("header") => ParamIn::Header,
            _ => return Ok(None),
        };
        let schema = parameter
            .get("schema")
            .map(|s| self.resolve(s))
            .transpose()?;
        Ok(Some(Parameter {
            name: parameter["name"].as_str().unwrap_or_default().to_string(),
            location,
            required: location == ParamIn::Path || parameter["required"].as_bool().unwrap_or(false),
            scalar_type: schema
                .as_ref()
                .and_then(|s| s.get("type"))
                .and_then(Value::as_str)
                .map(str::to_string),
            schema: schema.as_ref().map(|s| self.compile(s)).transpose()?,
        }))
    }
}

/// One consumed API.
pub struct OpenApiConsumer {
    name: String,
    spec: OnceLock<Arc<ApiSpec>>,
    spec_url: Option<String>,
    base_url: Option<String>,
    headers: reqwest::header::HeaderMap,
    exchange: Exchange,
}

impl ServiceKind for OpenApiConsumer {
    const LABEL: &'static str = "an `openapi.consumer`";
}

#[async_trait]
impl Module for OpenApiConsumer {
    async fn start(&self, _: &StartContext) -> anyhow::Result<()> {
        let Some(url) = &self.spec_url else {
            return Ok(());
        };
        if self.spec.get().is_some() {
            return Ok(()); // restarted: the document is kept
        }
        let response = self
            .exchange
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("`{}`: cannot read {url}: {e}", self.name))?;
        if !response.status().is_success() {
            anyhow::bail!("`{}`: {url} answered {}", self.name, response.status());
        }
        let text = response.text().await?;
        let document = serde_saphyr::from_str::<Value>(&text)
            .map_err(|e| anyhow::anyhow!("`{}`: {url} is not JSON or YAML: {e}", self.name))?;
        let spec = ApiSpec::parse(&document)
            .map_err(|e| anyhow::anyhow!("`{}`: {url}: {e}", self.name))?;
        let _ = self.spec.set(Arc::new(spec));
        Ok(())
    }
}

impl OpenApiConsumer {
    /// Where calls go: `baseUrl`, or the document's server (a relative one is relative to
    /// `specUrl`, as OpenAPI says).
    fn base(&self, spec: &ApiSpec) -> Result<String, StepError> {
        let unusable = |why: String| {
            StepError::new(
                wf_engine::ErrorKind::InvalidConfig,
                format!("`{}`: {why}; set `baseUrl`", self.name),
            )
        };
        if let Some(base) = &self.base_url {
            return Ok(base.clone());
        }
        let server = spec
            .server
            .as_deref()
            .ok_or_else(|| unusable("the document names no server".into()))?;
        if reqwest::Url::parse(server).is_ok() {
            return Ok(server.to_string());
        }
        let spec_url = self
            .spec_url
            .as_deref()
            .and_then(|u| reqwest::Url::parse(u).ok())
            .ok_or_else(|| unusable(format!("the document's server `{server}` is relative")))?;
        spec_url
            .join(server)
            .map(String::from)
            .map_err(|e| unusable(format!("the document's server `{server}`: {e}")))
    }

    /// The document, once read (at build for `specFile`, at start for `specUrl`).
    pub fn spec(&self) -> Option<&Arc<ApiSpec>> {
        self.spec.get()
    }

    /// Calls `operation` with `parameters` (by name) and `body`, after checking both against the
    /// document. Mistakes in them are `invalid_input`: the request is not sent.
    pub async fn call(
        &self,
        operation: &str,
        parameters: &Map<String, Value>,
        body: Option<Value>,
    ) -> Result<StepOutput, StepError> {
        let spec = self.spec().ok_or_else(|| {
            StepError::unavailable(format!("`{}` has not read its document yet", self.name))
        })?;
        let op = spec.operations.get(operation).ok_or_else(|| {
            StepError::invalid_input(format!("`{}` has no operation `{operation}`", self.name))
        })?;
        let mut problems = Vec::new();
        for name in parameters.keys() {
            if !op.parameters.iter().any(|p| &p.name == name) {
                problems.push(format!("unknown parameter `{name}`"));
            }
        }
        let mut path = op.path.clone();
        let mut query = Vec::new();
        let mut headers = self.headers.clone();
        for parameter in &op.parameters {
            let Some(value) = parameters.get(&parameter.name).filter(|v| !v.is_null()) else {
                if parameter.required {
                    problems.push(format!("parameter `{}` is required", parameter.name));
                }
                continue;
            };
            let value = coerce(value, parameter.scalar_type.as_deref());
            if let Some(schema) = &parameter.schema {
                for error in schema.iter_errors(&value) {
                    problems.push(format!("parameter `{}`: {error}", parameter.name));
                }
            }
            let texts = match &value {
                Value::Array(items) => items.iter().map(scalar_text).collect(),
                other => vec![scalar_text(other)],
            };
            match parameter.location {
                ParamIn::Path if texts.iter().any(|t| t == "." || t == "..") => {
                    problems.push(format!(
                        "parameter `{}` cannot be `.` or `..`",
                        parameter.name
                    ));
                }
                ParamIn::Path => {
                    let encoded: Vec<String> = texts
                        .iter()
                        .map(|t| wf_template::percent_encode(t))
                        .collect();
                    path = path.replace(&format!("{{{}}}", parameter.name), &encoded.join(","));
                }
                ParamIn::Query => {
                    query.extend(texts.into_iter().map(|t| (parameter.name.clone(), t)));
                }
                ParamIn::Header => match (
                    reqwest::header::HeaderName::from_bytes(parameter.name.as_bytes()),
                    reqwest::header::HeaderValue::from_str(&texts.join(",")),
                ) {
                    (Ok(name), Ok(value)) => {
                        headers.insert(name, value);
                    }
                    _ => problems.push(format!(
                        "parameter `{}` cannot be sent as a header",
                        parameter.name
                    )),
                },
            }
        }
        match (&op.body, &body) {
            (Some((true, _)), None) => problems.push("a request body is required".into()),
            (Some((_, Some(schema))), Some(body)) => {
                for error in schema.iter_errors(body) {
                    let at = error.instance_path().to_string();
                    problems.push(if at.is_empty() {
                        format!("body: {error}")
                    } else {
                        format!("body at `{at}`: {error}")
                    });
                }
            }
            (None, Some(_)) => problems.push(format!("operation `{operation}` takes no body")),
            _ => {}
        }
        if !problems.is_empty() {
            return Err(StepError::invalid_input(format!(
                "`{operation}`: {}",
                problems.join("; ")
            )));
        }
        let base = self.base(spec)?;
        let mut url = reqwest::Url::parse(&format!("{}{path}", base.trim_end_matches('/')))
            .map_err(|e| StepError::invalid_input(format!("`{operation}`: {e}")))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(&query);
        }
        self.exchange
            .send(&op.method, url.as_str(), &headers, body.as_ref())
            .await
    }
}

/// `"7"` → `7` where the schema wants an integer (and so on): template output is text.
fn coerce(value: &Value, scalar_type: Option<&str>) -> Value {
    let Value::String(text) = value else {
        return value.clone();
    };
    let parsed = match scalar_type {
        Some("integer") => text.parse::<i64>().ok().map(Value::from),
        Some("number") => text.parse::<f64>().ok().map(Value::from),
        Some("boolean") => text.parse::<bool>().ok().map(Value::from),
        _ => None,
    };
    parsed.unwrap_or_else(|| value.clone())
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
