//! HTTP runs and the run journal: what a request run records of its request (without its
//! credentials) so that a resumed or replayed run sees the same request; a route's `durable`
//! and `idempotency` settings; and idempotent answers — a repeated `Idempotency-Key` gets the
//! first answer without running again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use wf_engine::journal::{
    IdempotencyRef, Journal, KeyClaim, RunOptions, RunTrigger, TriggerRestorer,
};
use wf_engine::{ConfigIssue, Extensions, Pipeline, RunMeta, WireContext};

use crate::exchange::HttpExchange;
use crate::middleware_auth::AuthClaims;
use crate::router::PathParams;
use crate::{Response, json_response};

/// Headers never recorded: credentials (a replay runs without them; the caller's verified
/// claims are kept in `meta.auth`).
const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "x-auth-token",
    "x-csrf-token",
];

fn is_credential(name: &str) -> bool {
    CREDENTIAL_HEADERS.contains(&name)
        || ["token", "secret", "password", "api-key", "apikey"]
            .iter()
            .any(|word| name.contains(word))
}

/// `idempotency: {header: Idempotency-Key, ttl: 24h}`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyConfig {
    /// The request header carrying the key.
    #[serde(default = "default_header")]
    pub header: String,
    /// How long an answer is kept for repeats, e.g. `24h` (the default).
    #[serde(default = "default_ttl")]
    #[schemars(regex(pattern = r"^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$"))]
    pub ttl: String,
    /// Refuse requests without the header (`400`) instead of running them unguarded.
    #[serde(default)]
    pub required: bool,
}

fn default_header() -> String {
    "Idempotency-Key".to_string()
}

fn default_ttl() -> String {
    "24h".to_string()
}

/// Longest key accepted: keys are stored, and a caller must not make wf store megabytes.
const MAX_KEY_LEN: usize = 255;

/// Largest answer body kept for repeats; a larger answer is not kept (the key is released).
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// A route's idempotency, checked and ready.
#[derive(Clone, Debug)]
pub struct Idempotency {
    pub header: HeaderName,
    pub ttl: Duration,
    pub required: bool,
    /// Keys are per route: `METHOD pattern`.
    pub scope: String,
}

impl IdempotencyConfig {
    /// The settings for the route `scope`, or what is wrong with them (pointer, message).
    pub fn resolve(&self, scope: &str) -> Result<Idempotency, (&'static str, String)> {
        let header = HeaderName::try_from(self.header.as_str()).map_err(|_| {
            (
                "/idempotency/header",
                format!("`{}` is not a header name", self.header),
            )
        })?;
        let ttl =
            wf_engine::wf_config::parse_duration(&self.ttl).map_err(|e| ("/idempotency/ttl", e))?;
        if ttl.is_zero() {
            return Err(("/idempotency/ttl", "must be more than 0".to_string()));
        }
        Ok(Idempotency {
            header,
            ttl,
            required: self.required,
            scope: scope.to_string(),
        })
    }
}

/// What an HTTP run records of its request: enough for a resumed or replayed run's steps to
/// read the same request, never its credentials.
pub fn request_record(exchange: &HttpExchange) -> Value {
    let mut headers = Map::new();
    for (name, value) in &exchange.headers {
        let name = name.as_str();
        if is_credential(name) {
            continue;
        }
        if let Ok(text) = value.to_str() {
            headers.insert(name.to_string(), json!(text));
        }
    }
    let mut record = json!({
        "method": exchange.method,
        "path": exchange.path,
        "uri": exchange.uri.to_string(),
        "pattern": exchange.pattern,
        "query": exchange.query,
        "path_params": exchange.path_params.0,
        "headers": headers,
        "request_id": exchange.request_id,
    });
    match std::str::from_utf8(&exchange.body) {
        Ok(text) => record["body"] = json!(text),
        Err(_) => {
            record["body_base64"] =
                json!(base64::engine::general_purpose::STANDARD.encode(&exchange.body))
        }
    }
    record
}

/// Rebuilds an HTTP run's request from its record (see [`request_record`]).
pub struct HttpRestorer;

#[wf_engine::async_trait]
impl TriggerRestorer for HttpRestorer {
    fn restore(&self, trigger: &RunTrigger, extensions: &mut Extensions) {
        let Some(record) = &trigger.request else {
            return;
        };
        let text = |key: &str| {
            record
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let pairs = |key: &str| -> Vec<(String, String)> {
            serde_json::from_value(record.get(key).cloned().unwrap_or(Value::Null))
                .unwrap_or_default()
        };
        let mut headers = HeaderMap::new();
        if let Some(Value::Object(map)) = record.get("headers") {
            for (name, value) in map {
                if let (Ok(name), Some(Ok(value))) = (
                    HeaderName::try_from(name.as_str()),
                    value.as_str().map(HeaderValue::from_str),
                ) {
                    headers.insert(name, value);
                }
            }
        }
        let body = match (record.get("body"), record.get("body_base64")) {
            (Some(Value::String(text)), _) => Bytes::from(text.clone()),
            (_, Some(Value::String(encoded))) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map(Bytes::from)
                .unwrap_or_default(),
            _ => Bytes::new(),
        };
        let claims = extensions
            .get::<RunMeta>()
            .and_then(|m| m.0.get("auth").cloned())
            .map(AuthClaims);
        let exchange = HttpExchange {
            method: text("method"),
            path: text("path"),
            pattern: record
                .get("pattern")
                .and_then(Value::as_str)
                .map(str::to_string),
            headers,
            query: pairs("query"),
            path_params: PathParams(pairs("path_params")),
            body,
            uri: text("uri").parse().unwrap_or_default(),
            claims,
            request_id: record
                .get("request_id")
                .and_then(Value::as_str)
                .map(str::to_string),
            deadline: None,
            response: Mutex::new(None),
        };
        extensions.insert(Arc::new(exchange));
    }

    /// The response the run's caller gets (put back for it), as kept for repeats.
    async fn answer(
        &self,
        extensions: &Extensions,
        outcome: Result<&Map<String, Value>, &wf_engine::PipelineError>,
    ) -> Option<Value> {
        let exchange = extensions.get::<Arc<HttpExchange>>()?;
        let (parts, body) = crate::exchange::answer(exchange, outcome).into_parts();
        // Responses steps build are whole and small; a larger or unreadable one is not kept.
        let bytes = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => Bytes::new(),
        };
        let kept = stored_answer(parts.status, &parts.headers, &bytes);
        exchange.respond(Response::from_parts(parts, axum::body::Body::from(bytes)));
        kept
    }
}

/// The key a request carries for `idempotency`, or why it is refused (a 400).
pub fn request_key(
    idempotency: &Idempotency,
    headers: &HeaderMap,
) -> Result<Option<String>, String> {
    let Some(value) = headers.get(&idempotency.header) else {
        if idempotency.required {
            return Err(format!(
                "this route needs an `{}` header",
                idempotency.header
            ));
        }
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if !key.is_empty() && key.len() <= MAX_KEY_LEN => Ok(Some(key.to_string())),
        _ => Err(format!(
            "the `{}` header must be 1 to {MAX_KEY_LEN} visible characters",
            idempotency.header
        )),
    }
}

/// The 400 answer for a refused key.
pub fn refused_key(reason: &str) -> Response {
    json_response(StatusCode::BAD_REQUEST, &json!({"error": reason}))
}

/// What tells a repeat from a different request under the same key: method, path, query and
/// body.
pub fn fingerprint(exchange: &HttpExchange) -> String {
    wf_engine::journal::fingerprint(&[
        exchange.method.as_bytes(),
        exchange.uri.to_string().as_bytes(),
        &exchange.body,
    ])
}

/// What a route does about a key before running.
pub enum Admission {
    /// Run, answering under this key.
    Run(IdempotencyRef),
    /// Answer this without running.
    Answer(Response),
}

/// Claims `key` for run `run_id`.
pub async fn admit(
    journal: &Journal,
    idempotency: &Idempotency,
    key: String,
    exchange: &HttpExchange,
    run_id: &str,
) -> Admission {
    let expires = wf_engine::wf_config::time::unix_millis_now()
        + i64::try_from(idempotency.ttl.as_millis()).unwrap_or(i64::MAX / 2);
    let claim = journal
        .store()
        .claim_key(
            &idempotency.scope,
            &key,
            &fingerprint(exchange),
            run_id,
            expires,
        )
        .await;
    match claim {
        Ok(KeyClaim::Claimed) => Admission::Run(IdempotencyRef {
            scope: idempotency.scope.clone(),
            key,
        }),
        Ok(KeyClaim::Done { answer }) => Admission::Answer(replayed_answer(&answer)),
        Ok(KeyClaim::Running { run_id }) => Admission::Answer(json_response(
            StatusCode::CONFLICT,
            &json!({"error": format!("a request with this `{}` is still being handled (run {run_id}); retry later", idempotency.header)}),
        )),
        Ok(KeyClaim::Mismatch) => Admission::Answer(json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({"error": format!("this `{}` was used for a different request", idempotency.header)}),
        )),
        Err(e) => {
            tracing::error!(error = %e, "idempotency key could not be claimed");
            Admission::Answer(json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"error": "a service this request needs is unavailable; try again later"}),
            ))
        }
    }
}

/// An answer as kept: status, content type and body. `None` for answers not kept: server
/// failures (a retry should run again) and bodies over [`MAX_ANSWER_BYTES`].
fn stored_answer(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Option<Value> {
    if status.is_server_error() || body.len() > MAX_ANSWER_BYTES {
        return None;
    }
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let mut answer = json!({"status": status.as_u16(), "content_type": content_type});
    match std::str::from_utf8(body) {
        Ok(text) => answer["body"] = json!(text),
        Err(_) => {
            answer["body_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(body))
        }
    }
    Some(answer)
}

/// A kept answer, sent again.
fn replayed_answer(answer: &Value) -> Response {
    let status = answer
        .get("status")
        .and_then(Value::as_u64)
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .unwrap_or(StatusCode::OK);
    let body = match (answer.get("body"), answer.get("body_base64")) {
        (Some(Value::String(text)), _) => Bytes::from(text.clone()),
        (_, Some(Value::String(encoded))) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map(Bytes::from)
            .unwrap_or_default(),
        _ => Bytes::new(),
    };
    let mut response = Response::new(axum::body::Body::from(body));
    *response.status_mut() = status;
    if let Some(Ok(content_type)) = answer
        .get("content_type")
        .and_then(Value::as_str)
        .map(HeaderValue::from_str)
    {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, content_type);
    }
    response.headers_mut().insert(
        HeaderName::from_static("idempotent-replayed"),
        HeaderValue::from_static("true"),
    );
    response
}

/// A route's `durable` and `idempotency` settings for its pipeline, checked: both need the
/// pipeline's runs journaled. Problems are issues under `pointer`. Also teaches the journal
/// to rebuild the route's requests.
pub fn route_settings(
    ctx: &mut WireContext<'_>,
    pipeline: &Pipeline,
    durable: bool,
    idempotency: Option<&IdempotencyConfig>,
    source: &str,
    pointer: &str,
) -> (bool, Option<Idempotency>) {
    if let Some(journal) = ctx.app.journal() {
        journal.add_restorer("http", Arc::new(HttpRestorer));
    }
    if !durable && idempotency.is_none() {
        return (false, None);
    }
    if !pipeline.is_journaled() {
        let key = if durable { "durable" } else { "idempotency" };
        ctx.issue(
            ConfigIssue::new(
                format!("{pointer}/{key}"),
                format!("`{key}` needs the run journal, and this app's runs are not recorded"),
            )
            .help("run the app with `wf-host run` (its data directory keeps the journal), or set `runs: {journal: true}`; a pipeline with `journal: false` cannot back such a route"),
        );
        return (false, None);
    }
    let idempotency = match idempotency.map(|i| i.resolve(source)) {
        Some(Ok(settings)) => Some(settings),
        Some(Err((at, message))) => {
            ctx.issue(ConfigIssue::new(format!("{pointer}{at}"), message));
            None
        }
        None => None,
    };
    (durable, idempotency)
}

/// The run options of a route run.
pub fn run_options(durable: bool, key: Option<IdempotencyRef>) -> Option<RunOptions> {
    (durable || key.is_some()).then_some(RunOptions {
        durable,
        idempotency: key,
    })
}
