//! `step.http_call`: an outbound HTTP request with templated URL, headers and body.
//!
//! A response status of 400 or more is an error carrying the status and the start of the body:
//! 429 and 5xx are `unavailable` (retryable with `retry:`), other 4xx `internal` (the caller of
//! this pipeline did nothing wrong). Connection failures are `unavailable`, timeouts `timeout`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use wf_engine::wf_config::duration::{DURATION_PATTERN, parse_duration};
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, ErrorKind, PipelineContext, Step,
    StepError, StepOutput, StepType, async_trait,
};
use wf_template::{Template, TemplateValue};

use wf_engine::backoff::{RetryPolicy, retry};

use crate::httpclient_module::HttpClient;

/// Configuration of `step.http_call`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpCallConfig {
    /// The URL; may be a template (`https://api.example.com/users/{{ .id }}`). With `client`, a
    /// path under the client's `baseURL` (`/users/{{ .id }}`).
    pub url: String,
    /// An `httpclient.modular` module: its base URL, headers, timeout and retries apply.
    #[serde(default)]
    pub client: Option<String>,
    /// HTTP method.
    #[serde(default = "default_method")]
    pub method: String,
    /// Request headers; values may be templates.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// JSON body; strings may be templates. Without it, methods other than GET, HEAD and DELETE
    /// send the run's current data.
    #[serde(default)]
    pub body: Option<Value>,
    /// Longest time the whole exchange may take (default `30s`, or the client's).
    #[serde(default)]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub timeout: Option<String>,
    /// Largest response body accepted; a larger one fails the step as `unavailable`.
    #[serde(default = "default_max_response")]
    #[schemars(range(min = 1))]
    pub max_response_bytes: usize,
}

fn default_method() -> String {
    "GET".to_string()
}

fn default_max_response() -> usize {
    10 * 1024 * 1024
}

/// The part of an error response's body kept in the error message.
const EXCERPT: usize = 512;

pub struct HttpCallType;

impl Described for HttpCallType {
    const NAME: &'static str = "step.http_call";
    const CATEGORY: Category = Category::Pipeline;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Calls an HTTP endpoint with templated URL, headers and body; outputs status, headers and the parsed body.";
    type Config = HttpCallConfig;
}

impl StepType for HttpCallType {
    fn check(config: &HttpCallConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if config.method.parse::<reqwest::Method>().is_err()
            || !config.method.bytes().all(|b| b.is_ascii_uppercase())
        {
            issues.push(ConfigIssue::new(
                "/method",
                format!(
                    "`{}` is not an HTTP method (write it in capitals)",
                    config.method
                ),
            ));
        }
        match &config.client {
            Some(client) => {
                if let Some(issue) = ctx.require_module("/client", client, "client") {
                    issues.push(issue);
                } else if ctx.module_type(client) != Some(crate::httpclient_module::NAME) {
                    issues.push(ConfigIssue::new(
                        "/client",
                        format!("`{client}` is not an `httpclient.modular` module"),
                    ));
                }
                if !config.url.starts_with('/') {
                    issues.push(
                        ConfigIssue::new(
                            "/url",
                            format!("with `client`, `{}` must be a path starting with `/`", config.url),
                        )
                        .help("the client's `baseURL` gives the host; a step cannot send its credentials elsewhere"),
                    );
                }
            }
            None => {
                if !config.url.contains("{{") && reqwest::Url::parse(&config.url).is_err() {
                    issues.push(
                        ConfigIssue::new("/url", format!("`{}` is not a URL", config.url))
                            .help("write an absolute URL such as `https://api.example.com/items`"),
                    );
                }
            }
        }
        if let Some(Err(e)) = config.timeout.as_deref().map(parse_duration) {
            issues.push(ConfigIssue::new("/timeout", e));
        }
        issues
    }

    fn build(config: HttpCallConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Step>> {
        let shared = config
            .client
            .as_deref()
            .map(|name| ctx.service::<HttpClient>(name))
            .transpose()?;
        let timeout = match (&config.timeout, &shared) {
            (Some(t), _) => parse_duration(t).map_err(anyhow::Error::msg)?,
            (None, Some(shared)) => shared.timeout,
            (None, None) => Duration::from_secs(30),
        };
        let mut headers = Vec::new();
        for (name, value) in &config.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| anyhow::anyhow!("`{name}` is not a valid header name"))?;
            headers.push((name, crate::compile_str("headers", value)?));
        }
        Ok(Arc::new(HttpCall {
            url: crate::compile_str("url", &config.url)?,
            method: config.method.parse()?,
            headers,
            body: config
                .body
                .as_ref()
                .map(|b| crate::compile("body", b))
                .transpose()?,
            exchange: Exchange {
                timeout,
                max_response_bytes: config.max_response_bytes,
                client: match &shared {
                    Some(shared) if config.timeout.is_none() => shared.client.clone(),
                    _ => client(timeout)?,
                },
            },
            shared,
        }))
    }
}

/// An outbound HTTP client (one per step or module: connections are pooled across calls).
pub fn client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    // reqwest is built without a default TLS backend; ring is ours. Installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder().timeout(timeout).build()?)
}

/// The start of an error response's body, for messages: at most a few KiB are read (an
/// upstream must not be able to exhaust memory), at most `EXCERPT` characters kept.
pub async fn body_excerpt(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        bytes.extend_from_slice(&chunk);
        if bytes.len() >= EXCERPT * 4 {
            break;
        }
    }
    String::from_utf8_lossy(&bytes)
        .chars()
        .take(EXCERPT)
        .collect()
}

struct HttpCall {
    url: Template,
    method: reqwest::Method,
    headers: Vec<(reqwest::header::HeaderName, Template)>,
    body: Option<TemplateValue>,
    exchange: Exchange,
    /// The `httpclient.modular` this call goes through: base URL, headers, retries.
    shared: Option<Arc<HttpClient>>,
}

/// How outbound calls are made (`step.http_call`, `step.openapi_call`): one request and its
/// response, read up to a limit, as the steps' output.
pub struct Exchange {
    pub client: reqwest::Client,
    pub timeout: Duration,
    pub max_response_bytes: usize,
}

#[async_trait]
impl Step for HttpCall {
    async fn run(&self, ctx: &PipelineContext) -> Result<StepOutput, StepError> {
        let scope = ctx.scope();
        let rendered = self.url.render_string(&scope).map_err(StepError::from)?;
        // With a client the host is its own: the rendered part is only ever a path.
        let url = match &self.shared {
            Some(shared) => {
                // Data in the path may not leave the base path (`..`, raw or encoded).
                let path = rendered.split(['?', '#']).next().unwrap_or_default();
                if path.split('/').any(|s| {
                    matches!(
                        s.to_ascii_lowercase().replace("%2e", ".").as_str(),
                        "." | ".."
                    )
                }) {
                    return Err(StepError::invalid_input(format!(
                        "`{rendered}` has a `.` or `..` segment; a client's calls stay under its base URL"
                    )));
                }
                format!("{}/{}", shared.base_url, rendered.trim_start_matches('/'))
            }
            None => rendered,
        };
        let mut headers = self
            .shared
            .as_ref()
            .map(|s| s.headers.clone())
            .unwrap_or_default();
        for (name, template) in &self.headers {
            let value = template.render_string(&scope).map_err(StepError::from)?;
            let value = reqwest::header::HeaderValue::from_str(&value).map_err(|_| {
                StepError::invalid_input(format!("the value of header `{name}` is not valid"))
            })?;
            headers.insert(name.clone(), value);
        }
        // The step's key, the same in every attempt and after a durable run resumes: a
        // receiver that honours it does the work once (a header the step sets wins).
        if let Some(key) = ctx.meta.get("idempotency_key").and_then(Value::as_str)
            && !headers.contains_key("idempotency-key")
            && let Ok(value) = reqwest::header::HeaderValue::from_str(key)
        {
            headers.insert("idempotency-key", value);
        }
        let body = match &self.body {
            Some(template) => Some(crate::render(template, ctx)?),
            None if !matches!(
                self.method,
                reqwest::Method::GET | reqwest::Method::HEAD | reqwest::Method::DELETE
            ) =>
            {
                Some(Value::Object(ctx.current.clone()))
            }
            None => None,
        };
        let policy = match &self.shared {
            Some(shared) => RetryPolicy {
                attempts: shared.retries_for(&self.method) + 1,
                base: shared.backoff,
                max: Duration::from_secs(30),
            },
            None => RetryPolicy::ONCE,
        };
        retry(
            policy,
            |e: &StepError| matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Timeout),
            |e, attempt, wait| {
                tracing::debug!(%url, attempt, error = %e.message, ?wait, "retrying the call");
                true
            },
            |_| {
                self.exchange
                    .send(&self.method, &url, &headers, body.as_ref())
            },
        )
        .await
        .map_err(|(e, attempts)| e.after_attempts(attempts))
    }
}

impl Exchange {
    /// One request and its response (`status_code`, `status`, `headers`, `body`): a 429 or 5xx
    /// answer, a timeout or a connection failure is a retryable error.
    pub async fn send(
        &self,
        method: &reqwest::Method,
        url: &str,
        headers: &reqwest::header::HeaderMap,
        body: Option<&Value>,
    ) -> Result<StepOutput, StepError> {
        let mut request = self
            .client
            .request(method.clone(), url)
            .headers(headers.clone());
        // The step's span goes along, so the callee's spans join the run's trace.
        if let Some(span) = wf_engine::trace::current()
            && !headers.contains_key("traceparent")
        {
            request = request.header("traceparent", span.traceparent());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                StepError::new(
                    ErrorKind::Timeout,
                    format!("{method} {url} timed out after {:?}", self.timeout),
                )
            } else if e.is_builder() {
                StepError::invalid_input(format!("cannot call `{url}`: {e}"))
            } else {
                StepError::unavailable(format!("{method} {url} failed: {e}"))
            }
        })?;
        let status = response.status();
        let headers: Map<String, Value> = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), json!(String::from_utf8_lossy(v.as_bytes()))))
            .collect();
        // Read at most `max_response_bytes`: an upstream must not be able to exhaust memory.
        let mut response = response;
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| StepError::unavailable(format!("reading the response of {url}: {e}")))?
        {
            if bytes.len() + chunk.len() > self.max_response_bytes {
                return Err(StepError::unavailable(format!(
                    "the response of {url} is larger than {} bytes (`max_response_bytes`)",
                    self.max_response_bytes
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        if status.as_u16() >= 400 {
            let text = String::from_utf8_lossy(&bytes);
            let excerpt: String = text.chars().take(EXCERPT).collect();
            let kind = if status.is_server_error() || status.as_u16() == 429 {
                ErrorKind::Unavailable
            } else {
                ErrorKind::Internal
            };
            return Err(StepError::new(
                kind,
                format!("HTTP {}: {excerpt}", status.as_u16()),
            ));
        }
        let body = serde_json::from_slice::<Value>(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok(StepOutput::values(crate::output([
            ("status_code", json!(status.as_u16())),
            ("status", json!(status.to_string())),
            ("headers", Value::Object(headers)),
            ("body", body),
        ])))
    }
}
