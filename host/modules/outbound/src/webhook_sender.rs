//! `webhook.sender`: delivers messages to an HTTP endpoint, signed, retried, and never lost.
//!
//! Subscribed to topics (by the `messaging` workflow or a handler's `topic`), it POSTs each
//! message to `url`. Every request carries `X-Webhook-Id` (the same on every retry, for the
//! receiver's idempotency), `X-Webhook-Timestamp` (Unix seconds) and, with a `secret`,
//! `X-Webhook-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`, so the receiver
//! can check origin and freshness. Timeouts, connection errors, 408, 429 and 5xx are retried
//! with exponential backoff and jitter; other 4xx are the receiver refusing the payload and are
//! not. A delivery that fails for good becomes a dead letter on disk, listed and replayed over
//! HTTP (`api:`) or with `wf-host dead-letters`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use wf_engine::wf_config::duration::{DURATION_PATTERN, parse_duration};
use wf_engine::wf_config::time::rfc3339_now;
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType, async_trait,
};
use wf_http::{PathParams, Response, json_response, route_fn};
use wf_messaging::MessageHandler;

use crate::dead_letters::{DeadLetter, DeadLetterStore};

/// Configuration of `webhook.sender`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSenderConfig {
    /// Where messages are delivered.
    pub url: String,
    /// HTTP method.
    #[serde(default = "default_method")]
    #[schemars(regex(pattern = r"^[A-Z]+$"))]
    pub method: String,
    /// Headers sent with every delivery (`Content-Type: application/json` unless set).
    #[serde(default)]
    pub headers: Map<String, Value>,
    /// Key for the `X-Webhook-Signature` HMAC; use `${ENV_VAR}` rather than writing it here.
    #[serde(default)]
    pub secret: Option<String>,
    /// Retries after the first attempt.
    #[serde(default = "default_max_retries", rename = "maxRetries")]
    #[schemars(range(max = 20))]
    pub max_retries: u32,
    /// Wait before the first retry; doubles per retry, with jitter.
    #[serde(default = "default_initial_backoff", rename = "initialBackoff")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub initial_backoff: String,
    /// Longest wait between retries.
    #[serde(default = "default_max_backoff", rename = "maxBackoff")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub max_backoff: String,
    /// Time limit of one attempt.
    #[serde(default = "default_timeout")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub timeout: String,
    /// Where dead letters are kept; relative to the config file. Default
    /// `data/webhooks/<module name>`.
    #[serde(default, rename = "deadLetterDir")]
    pub dead_letter_dir: Option<String>,
    /// Serve the dead letters over HTTP.
    #[serde(default)]
    pub api: Option<DeadLetterApiConfig>,
    /// A description, as documentation.
    #[serde(default)]
    pub description: Option<String>,
}

/// The dead-letter API: `GET <prefix>`, `GET|DELETE <prefix>/{id}`,
/// `POST <prefix>/{id}/replay`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterApiConfig {
    /// The `http.router` to serve it on; optional when the app has one router.
    #[serde(default)]
    pub router: Option<String>,
    /// Bearer token every request must carry (`Authorization: Bearer <token>`): dead letters
    /// hold message bodies, so the API is never open. Use `${ENV_VAR}`.
    #[schemars(length(min = 1))]
    pub token: String,
    /// Path prefix; default `/api/webhooks/<module name>/dead-letters`.
    #[serde(default)]
    pub prefix: Option<String>,
}

fn default_method() -> String {
    "POST".to_string()
}
fn default_max_retries() -> u32 {
    3
}
fn default_initial_backoff() -> String {
    "1s".to_string()
}
fn default_max_backoff() -> String {
    "60s".to_string()
}
fn default_timeout() -> String {
    "30s".to_string()
}

pub struct WebhookSenderType;

impl Described for WebhookSenderType {
    const NAME: &'static str = "webhook.sender";
    const CATEGORY: Category = Category::Integration;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Delivers messages to an HTTP endpoint: HMAC-signed, retried with backoff, failures kept as dead letters to list and replay.";
    type Config = WebhookSenderConfig;
}

impl ModuleType for WebhookSenderType {
    fn check(config: &WebhookSenderConfig, _ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if reqwest::Url::parse(&config.url).is_err() {
            issues.push(ConfigIssue::new(
                "/url",
                format!("`{}` is not an absolute URL", config.url),
            ));
        }
        for (key, value) in [
            ("/initialBackoff", &config.initial_backoff),
            ("/maxBackoff", &config.max_backoff),
            ("/timeout", &config.timeout),
        ] {
            if let Err(e) = parse_duration(value) {
                issues.push(ConfigIssue::new(key, e));
            }
        }
        issues
    }

    fn build(
        config: WebhookSenderConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        let dir = config
            .dead_letter_dir
            .clone()
            .unwrap_or_else(|| format!("data/webhooks/{}", ctx.name));
        let timeout = parse_duration(&config.timeout).map_err(anyhow::Error::msg)?;
        let mut headers: Vec<(String, String)> = config
            .headers
            .iter()
            .map(|(k, v)| {
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                (k.clone(), v)
            })
            .collect();
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            headers.push(("Content-Type".into(), "application/json".into()));
        }
        let sender = Arc::new(WebhookSender {
            name: ctx.name.to_string(),
            url: config.url.clone(),
            method: Method::from_bytes(config.method.as_bytes())
                .map_err(|_| anyhow::anyhow!("`{}` is not an HTTP method", config.method))?,
            headers,
            secret: config.secret.clone().filter(|s| !s.is_empty()),
            max_retries: config.max_retries,
            initial_backoff: parse_duration(&config.initial_backoff).map_err(anyhow::Error::msg)?,
            max_backoff: parse_duration(&config.max_backoff).map_err(anyhow::Error::msg)?,
            client: wf_steps::http_call::client(timeout)?,
            store: DeadLetterStore::new(resolve(ctx.base_dir, &dir)),
            delivering: std::sync::Mutex::default(),
        });
        ctx.provide::<dyn MessageHandler>(sender.clone());
        ctx.provide::<WebhookSender>(sender.clone());
        if let Some(api) = &config.api {
            mount_api(api, &sender, ctx)?;
        }
        Ok(sender)
    }
}

fn resolve(base: &std::path::Path, dir: &str) -> PathBuf {
    let path = PathBuf::from(dir);
    if path.is_absolute() {
        path
    } else {
        base.join(path)
    }
}

pub struct WebhookSender {
    name: String,
    url: String,
    method: Method,
    headers: Vec<(String, String)>,
    secret: Option<String>,
    max_retries: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    client: reqwest::Client,
    store: DeadLetterStore,
    /// Letters this process is delivering (first deliveries and replays): not replayed or
    /// deleted meanwhile.
    delivering: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Marks a letter as being delivered by this process until dropped.
struct Delivering<'a> {
    sender: &'a WebhookSender,
    id: String,
}

impl Drop for Delivering<'_> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.sender.delivering.lock() {
            set.remove(&self.id);
        }
    }
}

impl wf_engine::ServiceKind for WebhookSender {
    const LABEL: &'static str = "a `webhook.sender`";
}

/// How one delivery ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    Delivered {
        attempts: u32,
    },
    /// Failed for good and kept as this dead letter.
    DeadLettered {
        id: String,
        error: String,
    },
}

impl WebhookSender {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dead_letters(&self) -> &DeadLetterStore {
        &self.store
    }

    /// Whether this process is delivering the letter `id` right now.
    pub fn is_delivering(&self, id: &str) -> bool {
        self.delivering
            .lock()
            .map(|s| s.contains(id))
            .unwrap_or(false)
    }

    /// Claims `id` for one delivery; `None` when it is already being delivered here.
    fn claim(&self, id: &str) -> Option<Delivering<'_>> {
        let mut set = self.delivering.lock().ok()?;
        set.insert(id.to_string()).then(|| Delivering {
            sender: self,
            id: id.to_string(),
        })
    }

    /// One attempt: `Ok` on 2xx; `Err((error, retryable))` otherwise.
    async fn attempt(&self, id: &str, body: &Bytes) -> Result<(), (String, bool)> {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default()
            .to_string();
        let mut request = self
            .client
            .request(self.method.clone(), &self.url)
            .header("X-Webhook-Id", id)
            .header("X-Webhook-Timestamp", &timestamp)
            .header("Idempotency-Key", idempotency_key(id, body).as_ref())
            .body(body.clone());
        for (k, v) in &self.headers {
            request = request.header(k, v);
        }
        if let Some(secret) = &self.secret {
            let signature = crate::signature::sign(secret, &timestamp, body);
            request = request.header("X-Webhook-Signature", signature);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => {
                let status = response.status();
                let excerpt = wf_steps::http_call::body_excerpt(response).await;
                let retryable = status.is_server_error()
                    || status == StatusCode::REQUEST_TIMEOUT
                    || status == StatusCode::TOO_MANY_REQUESTS;
                Err((
                    format!("the receiver answered {status}: {excerpt}"),
                    retryable,
                ))
            }
            // Without the URL: it may carry a credential (Slack-style webhook URLs do).
            Err(e) => Err((error_chain(&e.without_url()), true)),
        }
    }

    /// Delivers `body` with every retry; a delivery that fails for good is dead-lettered.
    /// The letter is written before the first attempt and removed once delivered, so a
    /// delivery cut short (a crash, the broker's time limit) is still on disk to replay. `Err`
    /// only when the letter cannot be written.
    pub async fn send(&self, body: Bytes, topic: Option<&str>) -> anyhow::Result<Sent> {
        let (text, base64) = DeadLetter::encode_body(&body);
        let now = rfc3339_now();
        let mut letter = DeadLetter {
            id: uuid::Uuid::new_v4().to_string(),
            status: "delivering".into(),
            url: self.url.clone(),
            method: self.method.to_string(),
            body: text,
            body_base64: base64,
            topic: topic.map(str::to_string),
            error: "the delivery was interrupted (the app stopped or a time limit cut it short)"
                .into(),
            attempts: 0,
            first_attempt_at: now.clone(),
            failed_at: now,
        };
        let _claim = self.claim(&letter.id);
        self.store.save(&letter)?;
        match self.deliver(&letter.id, &body).await {
            Ok(attempts) => {
                // Delivered: a failure to clean up must not fail the message (the broker would
                // deliver it again, under a new id).
                if let Err(e) = self.store.remove(&letter.id) {
                    tracing::error!(sender = %self.name, id = %letter.id, error = %format!("{e:#}"), "a delivered message's letter could not be removed; it will be listed as interrupted");
                }
                Ok(Sent::Delivered { attempts })
            }
            Err((error, attempts)) => {
                letter.status = "failed".into();
                letter.error = error.clone();
                letter.attempts = attempts;
                letter.failed_at = rfc3339_now();
                self.store.save(&letter)?;
                tracing::error!(sender = %self.name, id = %letter.id, attempts, %error, dir = %self.store.dir().display(), "webhook delivery failed; kept as a dead letter");
                Ok(Sent::DeadLettered {
                    id: letter.id,
                    error,
                })
            }
        }
    }

    /// Attempts with backoff; `Ok(attempts)` or `Err((last error, attempts))`.
    async fn deliver(&self, id: &str, body: &Bytes) -> Result<u32, (String, u32)> {
        let mut attempt = 1;
        loop {
            match self.attempt(id, body).await {
                Ok(()) => return Ok(attempt),
                Err((error, retryable)) if retryable && attempt <= self.max_retries => {
                    let wait = wf_engine::backoff::exponential_with_jitter(
                        self.initial_backoff,
                        self.max_backoff,
                        attempt,
                    );
                    tracing::warn!(sender = %self.name, id, attempt, %error, ?wait, "webhook delivery failed; retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err((error, _)) => return Err((error, attempt)),
            }
        }
    }

    /// Delivers a dead letter again (with retries), with the sender's current URL, headers and
    /// secret, under its original id. Delivered: the letter is removed. Failed: it stays, with
    /// the new error and attempt count. `None` when there is no such letter.
    pub async fn replay(&self, id: &str) -> anyhow::Result<Option<Result<u32, String>>> {
        let Some(mut letter) = self.store.get(id)? else {
            return Ok(None);
        };
        let Some(_claim) = self.claim(id) else {
            return Ok(Some(Err(format!("`{id}` is being delivered right now"))));
        };
        let body = Bytes::from(letter.body_bytes());
        match self.deliver(&letter.id, &body).await {
            Ok(attempts) => {
                self.store.remove(id)?;
                tracing::info!(sender = %self.name, id, "dead letter replayed and delivered");
                Ok(Some(Ok(attempts)))
            }
            Err((error, attempts)) => {
                letter.attempts += attempts;
                letter.status = "failed".into();
                letter.error = error.clone();
                letter.failed_at = rfc3339_now();
                self.store.save(&letter)?;
                Ok(Some(Err(error)))
            }
        }
    }
}

/// The `Idempotency-Key` of a delivery: the publishing step's key when the message carries it
/// (a JSON object with `idempotency_key`, e.g. `"{{ .meta.idempotency_key }}"`: the same when
/// a durable run resumes and publishes again), else the delivery's id (the same in every
/// retry and replay of it).
fn idempotency_key<'a>(id: &'a str, body: &[u8]) -> std::borrow::Cow<'a, str> {
    #[derive(serde::Deserialize)]
    struct Keyed {
        idempotency_key: String,
    }
    match serde_json::from_slice::<Keyed>(body) {
        Ok(keyed)
            if !keyed.idempotency_key.is_empty()
                && keyed.idempotency_key.len() <= 255
                && keyed.idempotency_key.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            std::borrow::Cow::Owned(keyed.idempotency_key)
        }
        _ => std::borrow::Cow::Borrowed(id),
    }
}

#[async_trait]
impl MessageHandler for WebhookSender {
    async fn handle(&self, topic: &str, payload: Bytes) -> anyhow::Result<()> {
        // Dead-lettered counts as handled: the message is kept, so the broker must not
        // deliver it again on top.
        self.send(payload, Some(topic)).await.map(|_| ())
    }
}

#[wf_engine::async_trait]
impl Module for WebhookSender {
    /// Letters still `delivering` from an earlier run of the app were interrupted by its stop:
    /// they are failed deliveries now, to replay.
    async fn start(&self, _ctx: &wf_engine::StartContext) -> anyhow::Result<()> {
        for mut letter in self.store.list()? {
            if letter.status == "delivering" && !self.is_delivering(&letter.id) {
                letter.status = "failed".into();
                self.store.save(&letter)?;
            }
        }
        Ok(())
    }
}

fn mount_api(
    api: &DeadLetterApiConfig,
    sender: &Arc<WebhookSender>,
    ctx: &BuildContext<'_>,
) -> anyhow::Result<()> {
    let router = wf_http::endpoint::endpoint_router(api.router.as_deref(), ctx)?;
    let prefix = api
        .prefix
        .clone()
        .unwrap_or_else(|| format!("/api/webhooks/{}/dead-letters", ctx.name));
    let prefix = prefix.trim_end_matches('/').to_string();
    if api.token.is_empty() {
        anyhow::bail!("`api.token` is empty: the dead-letter API needs a token");
    }
    let token: Option<Arc<str>> = Some(Arc::from(api.token.as_str()));
    let routes = [
        (Method::GET, prefix.clone(), Action::List),
        (Method::GET, format!("{prefix}/{{id}}"), Action::Get),
        (Method::DELETE, format!("{prefix}/{{id}}"), Action::Delete),
        (
            Method::POST,
            format!("{prefix}/{{id}}/replay"),
            Action::Replay,
        ),
    ];
    for (method, path, action) in routes {
        let (sender, token) = (sender.clone(), token.clone());
        let served = router.add_route(
            method.clone(),
            &path,
            route_fn(move |req| {
                let (sender, token) = (sender.clone(), token.clone());
                async move {
                    if let Some(denied) = wf_http::check_bearer(&req, token.as_deref()) {
                        return denied;
                    }
                    let id = req
                        .extensions()
                        .get::<PathParams>()
                        .and_then(|p| p.get("id"))
                        .unwrap_or_default()
                        .to_string();
                    serve(&sender, action, id).await
                }
            }),
        )?;
        ctx.app.add_route(wf_engine::RouteInfo {
            server: None,
            router: router.name().to_string(),
            method: method.to_string(),
            path: served,
            handler: ctx.name.to_string(),
            middlewares: Vec::new(),
            ..Default::default()
        });
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Action {
    List,
    Get,
    Delete,
    Replay,
}

async fn serve(sender: &WebhookSender, action: Action, id: String) -> Response {
    let not_found = || {
        json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no dead letter `{id}`")}),
        )
    };
    let result = match action {
        Action::List => sender
            .store
            .list()
            .map(|all| json_response(StatusCode::OK, &json!(all))),
        Action::Get => sender.store.get(&id).map(|letter| match letter {
            Some(letter) => json_response(StatusCode::OK, &json!(letter)),
            None => not_found(),
        }),
        Action::Delete | Action::Replay if sender.is_delivering(&id) => Ok(json_response(
            StatusCode::CONFLICT,
            &json!({"error": format!("`{id}` is being delivered right now; try again when it has failed or been delivered")}),
        )),
        Action::Delete => sender.store.remove(&id).map(|removed| {
            if removed {
                json_response(StatusCode::OK, &json!({"deleted": id}))
            } else {
                not_found()
            }
        }),
        Action::Replay => sender.replay(&id).await.map(|outcome| match outcome {
            None => not_found(),
            Some(Ok(attempts)) => json_response(
                StatusCode::OK,
                &json!({"id": id, "delivered": true, "attempts": attempts}),
            ),
            // The receiver failed, not us or the caller: 502, and the letter stays.
            Some(Err(error)) => json_response(
                StatusCode::BAD_GATEWAY,
                &json!({"id": id, "delivered": false, "error": error}),
            ),
        }),
    };
    result.unwrap_or_else(|e| {
        tracing::error!(sender = %sender.name, error = %format!("{e:#}"), "dead-letter API failed");
        json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": "internal error"}),
        )
    })
}

/// An error with its causes (`error sending request: … connection refused`): reqwest's own
/// message alone does not say what went wrong.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
