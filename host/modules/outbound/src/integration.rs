//! The `integration` workflow: named HTTP connectors (base URL, auth, headers, timeout, rate)
//! and steps that call them, run as one named pipeline.
//!
//! ```yaml
//! workflows:
//!   integration:
//!     name: order-sync                 # the pipeline's name; default `integration`
//!     connectors:
//!       - name: crm
//!         type: http
//!         config: {baseURL: "https://crm.example.com/v1", authType: bearer, token: "${CRM_TOKEN}"}
//!     steps:
//!       - {name: check-customer, connector: crm, action: "GET /customers/{customerId}",
//!          input: {customerId: "${data.customerId}"}, retryCount: 2, retryDelay: 1s}
//! ```
//!
//! Each step becomes a `step.http_call` (plus a `step.rate_limit` in front when the connector
//! has `requestsPerMinute`), so it gets that step's timeouts, JSON handling, error reporting and
//! retries. `${data.x}` reads the run's data, `${<step>.x}` an earlier step's response body.
//! Path parameters are percent-encoded: data can never change which host or path is called.
//! The original validated these workflows but nothing could run them.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use wf_engine::wf_config::duration::{DURATION_PATTERN, parse_duration};
use wf_engine::wf_config::schema::{PipelineEntry, RetryEntry, StepEntry};
use wf_engine::{Category, CheckContext, ConfigIssue, Described, WireContext, WorkflowType};

/// Configuration of the `integration` workflow.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntegrationConfig {
    /// The pipeline these steps become; triggers and `step.sub_workflow` start it by this name.
    #[serde(default)]
    pub name: Option<String>,
    /// The original's registry module; documentation only in this version.
    #[serde(default)]
    pub registry: Option<String>,
    /// External services, by name.
    #[schemars(length(min = 1))]
    pub connectors: Vec<Connector>,
    /// Calls, in order.
    #[serde(default)]
    pub steps: Vec<IntegrationStep>,
}

/// One external service.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Connector {
    /// How steps name this connector.
    pub name: String,
    /// `http`, `rest` and `api` are HTTP services; `webhook` and `database` are not
    /// implemented in this version.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where the service is and how to authenticate.
    #[serde(default)]
    pub config: ConnectorSettings,
}

/// How to reach a connector's service.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectorSettings {
    /// Every action's path is appended to this.
    #[serde(default, rename = "baseURL")]
    pub base_url: Option<String>,
    /// `none` (default), `bearer` (`token`) or `basic` (`username`, `password`).
    #[serde(default, rename = "authType")]
    pub auth_type: Option<String>,
    /// The bearer token (`authType: bearer`); use `${ENV_VAR}`.
    #[serde(default)]
    pub token: Option<String>,
    /// The user (`authType: basic`).
    #[serde(default)]
    pub username: Option<String>,
    /// The password (`authType: basic`); use `${ENV_VAR}`.
    #[serde(default)]
    pub password: Option<String>,
    /// Sent with every call.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Time limit of one call.
    #[serde(default, rename = "timeoutSeconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: Option<u64>,
    /// Calls per minute to this connector, shared by all its steps; a call over the rate waits
    /// for the next free slot (up to ten tries, then the step fails as rate-limited).
    #[serde(default, rename = "requestsPerMinute")]
    #[schemars(range(min = 1))]
    pub requests_per_minute: Option<u32>,
    /// Accepted for the original's configs. The host is fixed by `baseURL` and data only
    /// fills percent-encoded path segments and query values, so calls cannot be redirected.
    #[serde(default, rename = "allowPrivateIPs")]
    pub allow_private_ips: Option<bool>,
    /// The path a `webhook` connector listens on (not implemented in this version).
    #[serde(default)]
    pub path: Option<String>,
    /// The port a `webhook` connector listens on (not implemented in this version).
    #[serde(default)]
    pub port: Option<u16>,
    /// The driver of a `database` connector (not implemented in this version).
    #[serde(default)]
    pub driver: Option<String>,
    /// The data source of a `database` connector (not implemented in this version).
    #[serde(default)]
    pub dsn: Option<String>,
    /// The pool size of a `database` connector (not implemented in this version).
    #[serde(default, rename = "maxOpenConns")]
    pub max_open_conns: Option<u32>,
}

/// One call.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntegrationStep {
    /// The step's name; later steps read its response as `${<name>.field}`.
    pub name: String,
    /// The connector this step calls.
    pub connector: String,
    /// `METHOD /path/{param}`; `{param}` comes from `input`.
    pub action: String,
    /// Values for path parameters, then the query (GET, DELETE) or the JSON body (others).
    /// `${data.x}` reads the run's data, `${<step>.x}` an earlier step's response body.
    #[serde(default)]
    pub input: Map<String, Value>,
    /// Attempts after the first, for timeouts, 5xx and transport errors.
    #[serde(default, rename = "retryCount")]
    #[schemars(range(max = 20))]
    pub retry_count: u32,
    /// Wait before a retry; it doubles per attempt, with jitter.
    #[serde(default, rename = "retryDelay")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub retry_delay: Option<String>,
    /// The original's response transform expression: not implemented in this version.
    #[serde(default)]
    pub transform: Option<String>,
    /// The original's routing on success: not implemented in this version.
    #[serde(default, rename = "onSuccess")]
    pub on_success: Option<String>,
    /// The original's routing on error: not implemented in this version.
    #[serde(default, rename = "onError")]
    pub on_error: Option<String>,
}

pub struct IntegrationWorkflow;

impl Described for IntegrationWorkflow {
    const NAME: &'static str = "integration";
    const CATEGORY: Category = Category::Integration;
    const PLUGIN: &'static str = "api";
    const DESCRIPTION: &'static str =
        "Named HTTP connectors and the steps that call them, run as one pipeline.";
    type Config = IntegrationConfig;
}

fn pipeline_name(config: &IntegrationConfig) -> String {
    config
        .name
        .clone()
        .unwrap_or_else(|| "integration".to_string())
}

const HTTP_KINDS: &[&str] = &["http", "rest", "api"];

impl WorkflowType for IntegrationWorkflow {
    /// `integration`, and `integration-<anything>` for several in one app.
    fn handles(kind: &str) -> bool {
        kind == "integration" || kind.starts_with("integration-")
    }

    fn declared_pipelines(config: &IntegrationConfig) -> Vec<String> {
        vec![pipeline_name(config)]
    }

    fn check(config: &IntegrationConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        let name = pipeline_name(config);
        if ctx.config.pipelines.iter().any(|p| p.name == name) {
            issues.push(
                ConfigIssue::new(
                    "",
                    format!("a pipeline named `{name}` is already declared under `pipelines:`"),
                )
                .help("give the integration another `name:`"),
            );
        }
        let mut seen = BTreeSet::new();
        for (i, c) in config.connectors.iter().enumerate() {
            let at = |s: &str| format!("/connectors/{i}{s}");
            if !seen.insert(c.name.as_str()) {
                issues.push(ConfigIssue::new(
                    at("/name"),
                    format!("connector `{}` is declared twice", c.name),
                ));
            }
            match c.kind.as_str() {
                k if HTTP_KINDS.contains(&k) => {
                    issues.extend(check_http(&c.config, &at("/config")))
                }
                "webhook" | "database" => issues.push(ConfigIssue::not_implemented(
                    at("/type"),
                    format!(
                        "`{}` connectors are not implemented in this build yet",
                        c.kind
                    ),
                )),
                other => issues.push(ConfigIssue::new(
                    at("/type"),
                    format!(
                        "`{other}` is not a connector type (http, rest, api, webhook, database)"
                    ),
                )),
            }
        }
        let step_names: Vec<&str> = config.steps.iter().map(|s| s.name.as_str()).collect();
        for (i, step) in config.steps.iter().enumerate() {
            let at = |s: &str| format!("/steps/{i}{s}");
            if step_names[..i].contains(&step.name.as_str()) {
                issues.push(ConfigIssue::new(
                    at("/name"),
                    format!("step `{}` is declared twice", step.name),
                ));
            }
            for (key, value) in &step.input {
                if let Err(e) = check_value(value) {
                    issues.push(ConfigIssue::new(at(&format!("/input/{key}")), e));
                }
            }
            if !seen.contains(step.connector.as_str()) {
                issues.push(ConfigIssue::new(
                    at("/connector"),
                    format!("no connector named `{}`", step.connector),
                ));
            }
            if let Err(e) = parse_action(&step.action) {
                issues.push(ConfigIssue::new(at("/action"), e));
            }
            if let Some(delay) = &step.retry_delay
                && let Err(e) = parse_duration(delay)
            {
                issues.push(ConfigIssue::new(at("/retryDelay"), e));
            }
            for (key, set) in [
                ("/transform", &step.transform),
                ("/onSuccess", &step.on_success),
                ("/onError", &step.on_error),
            ] {
                if set.is_some() {
                    issues.push(ConfigIssue::not_implemented(
                        at(key),
                        format!(
                            "`{}` of integration steps is not implemented in this build yet",
                            &key[1..]
                        ),
                    ));
                }
            }
            for (key, value) in &step.input {
                for reference in references(value) {
                    let step_ref = reference.split('.').next().unwrap_or_default();
                    if step_ref != "data"
                        && reference.contains('.')
                        && !step_names[..i].contains(&step_ref)
                    {
                        issues.push(ConfigIssue::new(
                            at(&format!("/input/{key}")),
                            format!("`${{{reference}}}` reads step `{step_ref}`, which does not run before `{}`", step.name),
                        ));
                    }
                }
            }
        }
        issues
    }

    fn configure(config: IntegrationConfig, ctx: &mut WireContext<'_>) -> anyhow::Result<()> {
        let name = pipeline_name(&config);
        let connectors: BTreeMap<&str, &Connector> = config
            .connectors
            .iter()
            .map(|c| (c.name.as_str(), c))
            .collect();
        let mut steps = Vec::new();
        for step in &config.steps {
            let connector = connectors
                .get(step.connector.as_str())
                .ok_or_else(|| anyhow::anyhow!("no connector `{}`", step.connector))?;
            if let Some(rate) = connector.config.requests_per_minute.filter(|r| *r > 0) {
                // One shared bucket per connector; over the rate, the gate waits one slot's time
                // per try instead of failing the call at once.
                let slot_ms = (60_000 / u64::from(rate)).max(1);
                steps.push(step_entry(
                    &format!("{}--rate", step.name),
                    "step.rate_limit",
                    json!({
                        "requests_per_minute": rate,
                        "burst_size": rate.clamp(1, 10),
                        "shared": format!("integration:{name}:{}", connector.name),
                    }),
                    Some(RetryEntry {
                        max_attempts: 10,
                        backoff: format!("{slot_ms}ms"),
                        max_backoff: format!("{}ms", slot_ms * 2),
                        on: vec![wf_engine::ErrorKind::RateLimited],
                    }),
                ));
            }
            let retry = (step.retry_count > 0).then(|| RetryEntry {
                max_attempts: step.retry_count + 1,
                backoff: step.retry_delay.clone().unwrap_or_else(|| "1s".into()),
                max_backoff: "60s".into(),
                on: vec![
                    wf_engine::ErrorKind::Unavailable,
                    wf_engine::ErrorKind::Timeout,
                ],
            });
            steps.push(step_entry(
                &step.name,
                "step.http_call",
                http_call(step, connector)?,
                retry,
            ));
        }
        let entry = PipelineEntry {
            trigger: None,
            steps,
            on_error: None,
            compensation: Vec::new(),
            timeout: None,
            max_steps: None,
        };
        if let Some(pipeline) = ctx.build_pipeline(&name, &entry, "/steps") {
            ctx.register_pipeline(pipeline);
        }
        Ok(())
    }
}

fn check_http(settings: &ConnectorSettings, at: &str) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    match settings.base_url.as_deref().map(reqwest::Url::parse) {
        Some(Ok(_)) => {}
        Some(Err(_)) => issues.push(ConfigIssue::new(
            format!("{at}/baseURL"),
            "`baseURL` is not an absolute URL",
        )),
        None => issues.push(ConfigIssue::new(at, "an HTTP connector needs a `baseURL`")),
    }
    match settings.auth_type.as_deref().unwrap_or("none") {
        "none" => {}
        "bearer" if settings.token.as_deref().is_some_and(|t| !t.is_empty()) => {}
        "bearer" => issues.push(ConfigIssue::new(
            format!("{at}/token"),
            "`authType: bearer` needs a `token`",
        )),
        "basic" if settings.username.is_some() => {}
        "basic" => issues.push(ConfigIssue::new(
            format!("{at}/username"),
            "`authType: basic` needs a `username` (and `password`)",
        )),
        other => issues.push(ConfigIssue::new(
            format!("{at}/authType"),
            format!("`{other}` is not an auth type (none, bearer, basic)"),
        )),
    }
    issues
}

/// Literal text may not look like a template, and references must be plain paths.
fn check_value(value: &Value) -> Result<(), String> {
    match value {
        Value::String(s) => {
            if s.contains("{{") || s.contains("{%") || s.contains("{#") {
                return Err(format!(
                    "`{s}`: `{{{{`, `{{%` and `{{#` are not allowed in integration values; use `${{data.x}}` references"
                ));
            }
            for reference in references(value) {
                let ok = reference.split('.').all(|seg| {
                    !seg.is_empty()
                        && seg
                            .chars()
                            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
                });
                if !ok {
                    return Err(format!(
                        "`${{{reference}}}` is not a reference (`data.field` or `step.field`: letters, digits, `_`, `-`)"
                    ));
                }
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(check_value),
        Value::Object(map) => map.values().try_for_each(check_value),
        _ => Ok(()),
    }
}

/// `GET /customers/{id}` → (method, path).
fn parse_action(action: &str) -> Result<(String, String), String> {
    let (method, path) = action.trim().split_once(' ').ok_or_else(|| {
        format!("`{action}` is not `METHOD /path` (e.g. `GET /customers/{{id}}`)")
    })?;
    let path = path.trim();
    if !method.chars().all(|c| c.is_ascii_uppercase()) || !path.starts_with('/') {
        return Err(format!(
            "`{action}` is not `METHOD /path` (e.g. `GET /customers/{{id}}`)"
        ));
    }
    Ok((method.to_string(), path.to_string()))
}

/// The `${...}` references in a value.
fn references(value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    match value {
        Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${") {
                let Some(end) = rest[start..].find('}') else {
                    break;
                };
                out.push(rest[start + 2..start + end].trim().to_string());
                rest = &rest[start + end + 1..];
            }
        }
        Value::Array(items) => items.iter().for_each(|v| out.extend(references(v))),
        Value::Object(map) => map.values().for_each(|v| out.extend(references(v))),
        _ => {}
    }
    out
}

/// A `${...}` reference as a tera expression: `data.x` → the run's `x`, `step.x` → that
/// step's response body, a bare `x` → the run's `x`.
fn expression(reference: &str) -> String {
    // Every segment bracketed: keys may have hyphens or spell tera keywords.
    let brackets = |path: &str| {
        path.split('.')
            .map(|seg| format!("[\"{seg}\"]"))
            .collect::<String>()
    };
    match reference.split_once('.') {
        Some(("data", path)) => format!("trigger{}", brackets(path)),
        Some((step, path)) => format!("steps[\"{step}\"][\"body\"]{}", brackets(path)),
        None => format!("trigger[\"{reference}\"]"),
    }
}

/// A string with `${...}` references as a template (a lone reference keeps its JSON type).
/// `filter` is applied to each reference and `literal` to the text around them.
fn template(value: &Value, filter: &str, literal: &dyn Fn(&str) -> String) -> Value {
    match value {
        Value::String(s) if s.contains("${") => {
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${") {
                let Some(end) = rest[start..].find('}') else {
                    break;
                };
                out.push_str(&literal(&rest[..start]));
                out.push_str(&format!(
                    "{{{{ {}{filter} }}}}",
                    expression(rest[start + 2..start + end].trim())
                ));
                rest = &rest[start + end + 1..];
            }
            out.push_str(&literal(rest));
            Value::String(out)
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| template(v, filter, literal)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), template(v, filter, literal)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn unchanged(text: &str) -> String {
    text.to_string()
}

/// A path segment or query value: a reference renders percent-encoded at run time, a literal
/// is percent-encoded now.
fn url_part(value: &Value, filter: &str) -> String {
    match value {
        Value::String(s) if s.contains("${") => {
            match template(value, filter, &|t: &str| wf_template::percent_encode(t)) {
                Value::String(t) => t,
                other => other.to_string(),
            }
        }
        Value::String(s) => wf_template::percent_encode(s),
        other => wf_template::percent_encode(&other.to_string()),
    }
}

/// The `step.http_call` config of one integration step.
fn http_call(step: &IntegrationStep, connector: &Connector) -> anyhow::Result<Value> {
    let (method, path) = parse_action(&step.action).map_err(anyhow::Error::msg)?;
    let settings = &connector.config;
    let base = settings.base_url.clone().unwrap_or_default();
    let mut input = step.input.clone();
    // Path parameters, percent-encoded.
    let mut url = base.trim_end_matches('/').to_string();
    let mut rest = path.as_str();
    while let Some(start) = rest.find('{') {
        let Some(end) = rest[start..].find('}') else {
            break;
        };
        url.push_str(&rest[..start]);
        let param = &rest[start + 1..start + end];
        let value = input
            .remove(param)
            .unwrap_or(Value::String(format!("${{data.{param}}}")));
        url.push_str(&url_part(&value, " | path_segment"));
        rest = &rest[start + end + 1..];
    }
    url.push_str(rest);
    let mut config = Map::new();
    let body_method = !matches!(method.as_str(), "GET" | "DELETE" | "HEAD");
    if body_method {
        // Always a body: without one, `step.http_call` would send the run's whole data.
        config.insert(
            "body".into(),
            template(&Value::Object(input), "", &unchanged),
        );
    } else if !input.is_empty() {
        let query: Vec<String> = input
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    wf_template::percent_encode(k),
                    url_part(v, " | urlencode_strict")
                )
            })
            .collect();
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&query.join("&"));
    }
    let mut headers: Map<String, Value> = settings
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    match settings.auth_type.as_deref() {
        Some("bearer") => {
            headers.insert(
                "Authorization".into(),
                json!(format!(
                    "Bearer {}",
                    settings.token.clone().unwrap_or_default()
                )),
            );
        }
        Some("basic") => {
            let pair = format!(
                "{}:{}",
                settings.username.clone().unwrap_or_default(),
                settings.password.clone().unwrap_or_default()
            );
            headers.insert(
                "Authorization".into(),
                json!(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )),
            );
        }
        _ => {}
    }
    config.insert("url".into(), json!(url));
    config.insert("method".into(), json!(method));
    config.insert("headers".into(), Value::Object(headers));
    config.insert(
        "timeout".into(),
        json!(format!("{}s", settings.timeout_seconds.unwrap_or(30))),
    );
    Ok(Value::Object(config))
}

fn step_entry(name: &str, type_name: &str, config: Value, retry: Option<RetryEntry>) -> StepEntry {
    StepEntry {
        name: name.to_string(),
        type_name: type_name.to_string(),
        config: match config {
            Value::Object(map) => Some(map.into_iter().collect()),
            _ => None,
        },
        on_error: None,
        timeout: None,
        retry,
    }
}
