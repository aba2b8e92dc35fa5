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
//! has `requestsPerMinute`), so it gets that step's timeouts, JSON handling and error
//! reporting, wrapped in an [`IntegrationCall`] that evaluates the step's `transform`, retries,
//! and publishes `onSuccess` / `onError` notifications. `${data.x}` reads the run's data,
//! `${<step>.x}` an earlier step's response body. Path parameters are percent-encoded: data can
//! never change which host or path is called. `webhook` connectors listen for events instead
//! (see [`crate::webhook_receiver`]). The original validated these workflows but nothing could
//! run them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use base64::Engine as _;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use wf_engine::wf_config::duration::{DURATION_PATTERN, parse_duration};
use wf_engine::wf_config::schema::{PipelineEntry, RetryEntry, StepEntry};
use wf_engine::{Category, CheckContext, ConfigIssue, Described, WireContext, WorkflowType};
use wf_messaging::MessageBroker;

use crate::integration_call::{IntegrationCall, MAX_RETRY_DELAY, Notify};
use crate::transform_expr::{self, Expr};
use crate::webhook_receiver::WebhookReceiver;
use crate::workflow_registry::{
    ConnectorSummary, IntegrationSummary, StepSummary, WorkflowRegistry,
};

/// Configuration of the `integration` workflow.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntegrationConfig {
    /// The pipeline these steps become; triggers and `step.sub_workflow` start it by this name.
    #[serde(default)]
    pub name: Option<String>,
    /// A `workflow.registry` module that lists this integration and its runs, and can start it
    /// over HTTP.
    #[serde(default)]
    pub registry: Option<String>,
    /// The message broker that `onSuccess` / `onError` notifications and `webhook` connectors
    /// publish on; optional when the application has one.
    #[serde(default)]
    pub broker: Option<String>,
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
    /// `http`, `rest` and `api` are HTTP services that steps call; `webhook` receives events
    /// on its own port; `database` is not implemented in this version.
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
    /// The path a `webhook` connector accepts `POST`s on.
    #[serde(default)]
    pub path: Option<String>,
    /// The port a `webhook` connector listens on, on every interface (default 8080).
    #[serde(default)]
    pub port: Option<u16>,
    /// Where a `webhook` connector listens, `host:port`; overrides `port`.
    #[serde(default)]
    pub address: Option<String>,
    /// The topic a `webhook` connector publishes each event to (default
    /// `webhooks.<connector>`); published whenever it is set or no `pipeline` is.
    #[serde(default)]
    pub topic: Option<String>,
    /// A pipeline a `webhook` connector runs for each event; the caller gets its answer.
    #[serde(default)]
    pub pipeline: Option<String>,
    /// HMAC-SHA256 key a `webhook` connector checks `X-Webhook-Signature` with (the scheme
    /// `webhook.sender` signs with); unsigned or stale events get `401`. Use `${ENV_VAR}`.
    #[serde(default)]
    pub secret: Option<String>,
    /// Largest event a `webhook` connector accepts (default 1 MiB); larger ones get `413`.
    #[serde(default, rename = "maxBodyBytes")]
    #[schemars(range(min = 1))]
    pub max_body_bytes: Option<usize>,
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
    /// The call's parameters as an object of expressions over the run's data and earlier
    /// responses (`{"amount": data.total, "id": check-customer.id, "at": data.a || lookup.b}`);
    /// its keys override `input`'s.
    #[serde(default)]
    pub transform: Option<String>,
    /// A topic that gets `{integration, step, status: "succeeded", result, run_id}` after the
    /// call succeeds.
    #[serde(default, rename = "onSuccess")]
    pub on_success: Option<String>,
    /// A topic that gets `{integration, step, status: "failed", error, run_id}` when the call
    /// fails for good; the run then goes on with the next step, the error as this step's
    /// output.
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
        if let Some(registry) = &config.registry {
            if let Some(issue) = ctx.require_module("/registry", registry, "registry") {
                issues.push(issue);
            } else if ctx.module_type(registry) != Some(crate::workflow_registry::NAME) {
                issues.push(ConfigIssue::new(
                    "/registry",
                    format!(
                        "`{registry}` is not a `{}` module",
                        crate::workflow_registry::NAME
                    ),
                ));
            }
        }
        // A broker is needed only by notifications and webhook events that publish.
        let publishes = config
            .steps
            .iter()
            .any(|s| s.on_success.is_some() || s.on_error.is_some())
            || config
                .connectors
                .iter()
                .any(|c| c.kind == "webhook" && webhook_publishes(&c.config));
        if publishes && let Err(issue) = wf_messaging::choose_broker(config.broker.as_deref(), ctx)
        {
            issues.push(issue.help(
                "notifications and webhook events are published on a message broker: add a `messaging.broker` module, or name one as `broker:`",
            ));
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
                "webhook" => issues.extend(check_webhook(&c.config, &at("/config"), ctx)),
                "database" => issues.push(ConfigIssue::not_implemented(
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
            match config.connectors.iter().find(|c| c.name == step.connector) {
                None => issues.push(ConfigIssue::new(
                    at("/connector"),
                    format!("no connector named `{}`", step.connector),
                )),
                Some(c) if c.kind == "webhook" => issues.push(
                    ConfigIssue::new(
                        at("/connector"),
                        format!(
                            "`{}` is a webhook connector: it receives events, steps cannot call it",
                            c.name
                        ),
                    )
                    .help("name an `http` connector, or handle the webhook's events with its `topic` or `pipeline`"),
                ),
                Some(_) => {}
            }
            if let Some(text) = &step.transform
                && let Err(e) = check_transform(text, &step_names[..i])
            {
                issues.push(ConfigIssue::new(at("/transform"), e));
            }
            for (key, topic) in [
                ("/onSuccess", &step.on_success),
                ("/onError", &step.on_error),
            ] {
                if topic.as_deref().is_some_and(|t| t.trim().is_empty()) {
                    issues.push(ConfigIssue::new(at(key), "the topic is empty"));
                }
            }
            if let Err(e) = parse_action(&step.action) {
                issues.push(ConfigIssue::new(at("/action"), e));
            }
            if let Some(delay) = &step.retry_delay
                && let Err(e) = parse_duration(delay)
            {
                issues.push(ConfigIssue::new(at("/retryDelay"), e));
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
        // The broker is resolved only when something publishes (validation made sure it exists).
        let broker = |ctx: &WireContext<'_>| -> anyhow::Result<Arc<dyn MessageBroker>> {
            let chosen = wf_messaging::choose_broker(config.broker.as_deref(), &ctx.check())
                .map_err(|issue| anyhow::anyhow!(issue.message))?;
            Ok(ctx.service::<dyn MessageBroker>(&chosen)?)
        };
        // Parsed once: the call's parameters come from its keys, the wrapper evaluates it.
        let transforms = config
            .steps
            .iter()
            .map(|step| {
                step.transform
                    .as_deref()
                    .map(transform_expr::parse)
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("step `{}`: {e}", step.name))
            })
            .collect::<anyhow::Result<Vec<Option<Expr>>>>()?;
        let mut steps = Vec::new();
        for (step, transform) in config.steps.iter().zip(&transforms) {
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
            steps.push(step_entry(
                &step.name,
                "step.http_call",
                http_call(step, connector, transform.as_ref())?,
                None,
            ));
        }
        let entry = PipelineEntry {
            steps,
            ..PipelineEntry::default()
        };
        let Some(pipeline) = ctx.build_pipeline(&name, &entry, "/steps") else {
            return Ok(());
        };
        let mut pipeline = Arc::try_unwrap(pipeline)
            .map_err(|_| anyhow::anyhow!("pipeline `{name}` was shared before it was finished"))?;
        // Each call is wrapped: transform, retries and notifications.
        for (step, transform) in config.steps.iter().zip(transforms) {
            let Some(built) = pipeline.steps.iter_mut().find(|s| s.name == step.name) else {
                continue;
            };
            let notify = match (&step.on_success, &step.on_error) {
                (None, None) => None,
                (on_success, on_error) => Some(Notify {
                    broker: broker(ctx)?,
                    on_success: on_success.clone(),
                    on_error: on_error.clone(),
                }),
            };
            let retry = match &step.retry_delay {
                Some(delay) => parse_duration(delay).map_err(anyhow::Error::msg)?,
                None => std::time::Duration::from_secs(1),
            };
            built.step = Arc::new(IntegrationCall {
                integration: name.clone(),
                step: step.name.clone(),
                call: built.step.clone(),
                transform,
                retry: wf_engine::backoff::RetryPolicy {
                    attempts: step.retry_count + 1,
                    base: retry,
                    max: MAX_RETRY_DELAY,
                },
                notify,
            });
        }
        ctx.register_pipeline(pipeline.into_shared());

        for connector in config.connectors.iter().filter(|c| c.kind == "webhook") {
            let settings = &connector.config;
            let mut receiver = WebhookReceiver::new(
                &connector.name,
                webhook_address(settings),
                settings.path.clone().unwrap_or_default(),
            );
            if webhook_publishes(settings) {
                receiver.publish = Some((webhook_topic(connector), broker(ctx)?));
            }
            receiver.pipeline = settings.pipeline.clone();
            receiver.secret = settings.secret.clone();
            if let Some(max) = settings.max_body_bytes {
                receiver.max_body_bytes = max;
            }
            ctx.app.add_route(wf_engine::RouteInfo {
                server: Some(format!("webhook:{}", connector.name)),
                router: format!("webhook:{}", connector.name),
                method: "POST".into(),
                path: receiver.path.clone(),
                handler: format!(
                    "webhook connector `{}` ({})",
                    connector.name, receiver.address
                ),
                middlewares: Vec::new(),
                ..Default::default()
            });
            ctx.add_listener(
                format!("webhook connector `{}`", connector.name),
                Arc::new(receiver),
            );
        }

        if let Some(registry) = &config.registry {
            ctx.service::<WorkflowRegistry>(registry)?
                .register(summary(&name, &config));
        }
        Ok(())
    }
}

/// What the registry lists of an integration: no credentials.
fn summary(name: &str, config: &IntegrationConfig) -> IntegrationSummary {
    IntegrationSummary {
        name: name.to_string(),
        connectors: config
            .connectors
            .iter()
            .map(|c| ConnectorSummary {
                name: c.name.clone(),
                kind: c.kind.clone(),
                target: if c.kind == "webhook" {
                    c.config.path.clone()
                } else {
                    c.config.base_url.clone()
                },
            })
            .collect(),
        steps: config
            .steps
            .iter()
            .map(|s| StepSummary {
                name: s.name.clone(),
                connector: s.connector.clone(),
                action: s.action.clone(),
            })
            .collect(),
    }
}

/// Whether a webhook connector publishes its events: when it names a topic or no pipeline.
fn webhook_publishes(settings: &ConnectorSettings) -> bool {
    settings.topic.is_some() || settings.pipeline.is_none()
}

fn webhook_topic(connector: &Connector) -> String {
    connector
        .config
        .topic
        .clone()
        .unwrap_or_else(|| format!("webhooks.{}", connector.name))
}

/// `address`, else `:port` (8080, the original's default).
fn webhook_address(settings: &ConnectorSettings) -> String {
    settings
        .address
        .clone()
        .unwrap_or_else(|| format!(":{}", settings.port.unwrap_or(8080)))
}

fn check_webhook(
    settings: &ConnectorSettings,
    at: &str,
    ctx: &CheckContext<'_>,
) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    match settings.path.as_deref() {
        Some(path) if path.starts_with('/') && !path.contains(['{', '}', '*', ':']) => {}
        Some(_) => issues.push(ConfigIssue::new(
            format!("{at}/path"),
            "a webhook connector's `path` is a fixed path starting with `/`, e.g. `/webhooks/events`",
        )),
        None => issues.push(ConfigIssue::new(
            at,
            "a webhook connector needs a `path` to accept events on",
        )),
    }
    if let Err(e) = wf_http::HttpServer::check_address(&webhook_address(settings)) {
        issues.push(ConfigIssue::new(format!("{at}/address"), e));
    }
    if settings.port == Some(0) && settings.address.is_none() {
        issues.push(ConfigIssue::new(
            format!("{at}/port"),
            "port 0 would pick a port nobody knows; set a port, or `address: 127.0.0.1:0` in tests",
        ));
    }
    if let Some(pipeline) = &settings.pipeline
        && !ctx.has_pipeline(pipeline)
    {
        issues.push(ConfigIssue::new(
            format!("{at}/pipeline"),
            format!("no pipeline named `{pipeline}`"),
        ));
    }
    if settings
        .topic
        .as_deref()
        .is_some_and(|t| t.trim().is_empty())
    {
        issues.push(ConfigIssue::new(
            format!("{at}/topic"),
            "the topic is empty",
        ));
    }
    // An empty secret (an unset `${VAR:-}`) would silently accept unsigned events.
    if settings
        .secret
        .as_deref()
        .is_some_and(|t| t.trim().is_empty())
    {
        issues.push(
            ConfigIssue::new(format!("{at}/secret"), "the secret is empty")
                .help("set the variable it reads, or remove `secret` to accept unsigned events"),
        );
    }
    for (key, set) in [
        ("/baseURL", settings.base_url.is_some()),
        ("/authType", settings.auth_type.is_some()),
        ("/requestsPerMinute", settings.requests_per_minute.is_some()),
    ] {
        if set {
            issues.push(ConfigIssue::warning(
                format!("{at}{key}"),
                format!("`{}` has no effect on a webhook connector", &key[1..]),
            ));
        }
    }
    issues
}

/// A transform must parse, be an object (its keys are the call's parameters), and read only
/// the run's data and earlier steps.
fn check_transform(text: &str, earlier: &[&str]) -> Result<(), String> {
    let expr = transform_expr::parse(text).map_err(|e| e.to_string())?;
    let Expr::Object(entries) = &expr else {
        return Err(
            "a transform is an object, `{\"key\": value, ...}`: its keys are the call's parameters"
                .into(),
        );
    };
    for (key, _) in entries {
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "transform key `{key}`: parameter names are letters, digits, `_` and `-`"
            ));
        }
    }
    for root in expr.roots() {
        if root != "data" && !earlier.contains(&root) {
            return Err(format!(
                "the transform reads `{root}`, which is neither `data` nor a step that runs before this one"
            ));
        }
    }
    Ok(())
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
fn http_call(
    step: &IntegrationStep,
    connector: &Connector,
    transform: Option<&Expr>,
) -> anyhow::Result<Value> {
    let (method, path) = parse_action(&step.action).map_err(anyhow::Error::msg)?;
    let settings = &connector.config;
    let base = settings.base_url.clone().unwrap_or_default();
    let mut input = step.input.clone();
    // A transform's keys read its result, which the call finds as this step's own body (see
    // `IntegrationCall`); they override `input`'s.
    if let Some(Expr::Object(entries)) = transform {
        for (key, _) in entries {
            input.insert(key.clone(), json!(format!("${{{}.{key}}}", step.name)));
        }
    }
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
