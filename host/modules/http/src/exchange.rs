//! Pipelines behind HTTP: the request a run was started by, the response slot a step may fill,
//! and the route service that runs a pipeline for each request.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use serde_json::{Map, Value, json};
use wf_engine::journal::{RunId, RunTrigger};
use wf_engine::{Dispatch, ErrorKind, Extensions, Pipeline, PipelineError, RunMeta};

use crate::durable;

use crate::middleware_auth::AuthClaims;

use crate::router::{MatchedRoute, PathParams};
use crate::{Request, Response, RouteService, json_response, route_fn};

/// Request bodies larger than this get `413` unless configured otherwise.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// The HTTP request behind a pipeline run, in the run's extensions.
#[derive(Debug)]
pub struct HttpExchange {
    pub method: String,
    pub path: String,
    /// The route pattern that matched, e.g. `/users/{id}`.
    pub pattern: Option<String>,
    pub headers: HeaderMap,
    /// Query parameters in order (a name may repeat).
    pub query: Vec<(String, String)>,
    pub path_params: PathParams,
    pub body: Bytes,
    /// The request URI as the client sent it (path and encoded query).
    pub uri: http::Uri,
    /// The caller's verified claims, when an authentication middleware let the request in.
    pub claims: Option<AuthClaims>,
    /// The id `http.middleware.requestid` gave the request.
    pub request_id: Option<String>,
    /// When the server stops waiting for the answer (its `writeTimeout`).
    pub deadline: Option<crate::RequestDeadline>,
    pub(crate) response: Mutex<Option<Response>>,
}

impl HttpExchange {
    /// Sets the response the client gets (the last call wins).
    pub fn respond(&self, response: Response) {
        if let Ok(mut slot) = self.response.lock() {
            *slot = Some(response);
        }
    }

    fn take_response(&self) -> Option<Response> {
        self.response.lock().ok().and_then(|mut r| r.take())
    }

    /// The first value of query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The body as data: JSON (by content type, or text that starts with `{` or `[` and
    /// parses, whatever the content type says — as the original read it, so `curl -d '{...}'`,
    /// which says it sends a form, works); a form body as a map (first value of each field);
    /// `None` for an empty body or another format. Invalid JSON under a JSON content type is
    /// the caller's mistake, with the reason.
    pub fn parsed_body(&self) -> Result<Option<Value>, String> {
        if self.body.is_empty() {
            return Ok(None);
        }
        let content_type = self.content_type();
        let declared_json =
            content_type.starts_with("application/json") || content_type.contains("+json");
        let looks_json = matches!(
            self.body.iter().find(|b| !b.is_ascii_whitespace()),
            Some(b'{' | b'[')
        );
        if declared_json || looks_json {
            match serde_json::from_slice(&self.body) {
                Ok(value) => return Ok(Some(value)),
                Err(e) if declared_json || !is_form(content_type) => {
                    return Err(format!("request body is not valid JSON: {e}"));
                }
                // A form field that happens to start with `{`: read as the form it says it is.
                Err(_) => {}
            }
        }
        if is_form(content_type) {
            let mut map = Map::new();
            for (k, v) in parse_query(&String::from_utf8_lossy(&self.body)) {
                map.entry(k).or_insert(Value::String(v));
            }
            return Ok(Some(Value::Object(map)));
        }
        Ok(None)
    }
}

fn is_form(content_type: &str) -> bool {
    content_type.starts_with("application/x-www-form-urlencoded")
}

/// `/api/items/` → `items`: the original's query and command names.
pub fn last_segment(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
}

/// Decodes `a=1&b=x%20y` into pairs.
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high * 16 + low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Options of a route that runs a pipeline.
#[derive(Clone, Debug)]
pub struct PipelineRoute {
    pub max_body_bytes: usize,
    /// Static values added to the trigger data (the original's `params`).
    pub params: Map<String, Value>,
    /// How the request becomes the run's trigger data.
    pub shape: TriggerShape,
    /// `METHOD pattern`, as the run journal records where a run came from.
    pub source: String,
    /// Runs are durable whatever the pipeline says.
    pub durable: bool,
    /// Repeated keys get the first answer.
    pub idempotency: Option<crate::durable::Idempotency>,
}

/// How a request becomes trigger data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TriggerShape {
    /// Query parameters (first values), then the fields of a JSON-object body, then path
    /// parameters, then static `params`.
    #[default]
    Fields,
    /// The original's `api.query`: `{method, path, queryName, query: {name: [values]}}`.
    Query,
    /// The original's `api.command`: `{method, path, commandName, body}` (`body` when it is a
    /// JSON object).
    Command,
}

impl Default for PipelineRoute {
    fn default() -> Self {
        PipelineRoute {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            params: Map::new(),
            shape: TriggerShape::Fields,
            source: String::new(),
            durable: false,
            idempotency: None,
        }
    }
}

/// A route service that runs `pipeline` for each request.
///
/// Trigger data: query parameters (first values), then the fields of a JSON-object body, then
/// path parameters, then static `params`. The response is what a step wrote (`step.json_response`),
/// else `200` with the final `current` map as JSON. Errors: invalid input → `400` with the
/// message; timeout → `504`; anything else → a generic `500`, the details in the log.
pub fn pipeline_service(pipeline: Arc<Pipeline>, options: PipelineRoute) -> RouteService {
    let options = Arc::new(options);
    route_fn(move |req: Request| {
        let pipeline = pipeline.clone();
        let options = options.clone();
        async move { run(pipeline, &options, req).await }
    })
}

/// A route service that fires a state machine transition (a trigger's `workflow:` +
/// `action:`) for each request, with the same trigger data as a pipeline route. Success is
/// `202 {"status": "workflow triggered", "workflow", "action", "result"}` (the original's
/// status text, plus what the action did); failures carry the action's status and
/// `{"error"}`, except that the engine's own failures are a generic 500.
pub fn action_service(dispatch: Dispatch, options: PipelineRoute) -> RouteService {
    let options = Arc::new(options);
    // The answer's fixed part, made once; each request adds its `result`.
    let accepted = Arc::new(match &dispatch {
        Dispatch::Action {
            workflow, action, ..
        } => json!({"status": "workflow triggered", "workflow": workflow, "action": action}),
        Dispatch::Pipeline(p) => json!({"status": "workflow triggered", "workflow": p.name}),
    });
    let dispatch = Arc::new(dispatch);
    route_fn(move |req: Request| {
        let dispatch = dispatch.clone();
        let options = options.clone();
        let accepted = accepted.clone();
        async move {
            let exchange = match read_exchange(&options, req).await {
                Ok(exchange) => exchange,
                Err(response) => return response,
            };
            let data = match trigger_data(&exchange, &options) {
                Ok(data) => data,
                Err(message) => {
                    return json_response(StatusCode::BAD_REQUEST, &json!({"error": message}));
                }
            };
            match dispatch.start(data, Extensions::default()).await {
                Ok(result) => {
                    let mut body = (*accepted).clone();
                    body["result"] = result;
                    json_response(StatusCode::ACCEPTED, &body)
                }
                Err(e) => {
                    let status =
                        StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    if status.is_server_error() {
                        tracing::error!(target = %dispatch.label(), error = %e.message, "triggered workflow failed");
                        json_response(status, &json!({"error": "internal error"}))
                    } else {
                        json_response(status, &json!({"error": e.message}))
                    }
                }
            }
        }
    })
}

/// A request body refused for its size, naming the limit that applied.
#[derive(Debug, thiserror::Error)]
#[error("request body is larger than {limit} bytes ({setting})")]
pub struct BodyTooLarge {
    pub limit: usize,
    /// The setting that holds the limit, e.g. ``the route's `maxBodyBytes` ``.
    pub setting: String,
}

impl BodyTooLarge {
    pub fn response(&self) -> Response {
        json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &json!({"error": self.to_string()}),
        )
    }
}

/// A request body of at most `limit` bytes, or the response refusing it: `413` naming
/// `setting` when it is larger — at once when its declared length already is, without
/// waiting for the bytes — and `400` when it cannot be read (the client went away mid-body).
pub async fn read_body(
    body: axum::body::Body,
    limit: usize,
    setting: &str,
) -> Result<Bytes, Response> {
    use hyper::body::Body as _;
    let too_large = || BodyTooLarge {
        limit,
        setting: setting.to_string(),
    };
    if body.size_hint().lower() > limit as u64 {
        drain_refused(body);
        let mut response = too_large().response();
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        return Err(response);
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => {
            // An outer layer's limit (`http.middleware.bodylimit`) names itself.
            if let Some(outer) = find_source::<BodyTooLarge>(e.as_ref()) {
                return Err(outer.response());
            }
            if e.is::<http_body_util::LengthLimitError>() {
                return Err(too_large().response());
            }
            Err(json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "could not read the request body"}),
            ))
        }
    }
}

/// How much of a body refused by its declared size is still read (and dropped), and for how
/// long: a client that sends its body without waiting for an answer then reads the 413
/// instead of a reset connection. Beyond these it gets the reset.
const DRAIN_BYTES: usize = 16 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

fn drain_refused(mut body: axum::body::Body) {
    use http_body_util::BodyExt as _;
    tokio::spawn(async move {
        let mut left = DRAIN_BYTES;
        let drain = async {
            while let Some(Ok(frame)) = body.frame().await {
                let read = frame.data_ref().map_or(0, Bytes::len);
                if read >= left {
                    break;
                }
                left -= read;
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
    });
}

/// The first error of type `T` down `error`'s sources.
fn find_source<'a, T: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// Whether a body error is a length limit (ours, or one an outer layer such as
/// `http.middleware.bodylimit` put on the body, found down the error's sources).
pub(crate) fn over_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    find_source::<http_body_util::LengthLimitError>(error).is_some()
        || find_source::<BodyTooLarge>(error).is_some()
}

/// The request as an exchange, or the response refusing it (body too large or unreadable).
async fn read_exchange(options: &PipelineRoute, req: Request) -> Result<HttpExchange, Response> {
    let (parts, body) = req.into_parts();
    let body = read_body(body, options.max_body_bytes, "the route's `maxBodyBytes`").await?;
    Ok(HttpExchange {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        pattern: parts
            .extensions
            .get::<MatchedRoute>()
            .map(|m| m.0.to_string()),
        query: parse_query(parts.uri.query().unwrap_or("")),
        path_params: parts
            .extensions
            .get::<PathParams>()
            .cloned()
            .unwrap_or_default(),
        headers: parts.headers,
        body,
        uri: parts.uri.clone(),
        claims: parts.extensions.get::<AuthClaims>().cloned(),
        request_id: parts
            .extensions
            .get::<crate::middleware_requestid::RequestId>()
            .map(|r| r.0.clone()),
        deadline: parts.extensions.get::<crate::RequestDeadline>().copied(),
        response: Mutex::new(None),
    })
}

async fn run(pipeline: Arc<Pipeline>, options: &PipelineRoute, req: Request) -> Response {
    let exchange = match read_exchange(options, req).await {
        Ok(exchange) => exchange,
        Err(response) => return response,
    };
    let data = match trigger_data(&exchange, options) {
        Ok(data) => data,
        Err(message) => return json_response(StatusCode::BAD_REQUEST, &json!({"error": message})),
    };

    let exchange = Arc::new(exchange);
    let mut extensions = Extensions::default();
    let mut meta = Map::new();
    if let Some(claims) = &exchange.claims {
        meta.insert("auth".into(), claims.0.clone());
    }
    if let Some(id) = &exchange.request_id {
        meta.insert("request_id".into(), json!(id));
    }
    if !meta.is_empty() {
        extensions.insert(RunMeta(meta));
    }
    if let Some(deadline) = exchange.deadline {
        extensions.insert(deadline.run_deadline());
    }
    if let Some(journal) = pipeline.journal() {
        // What the journal keeps of where the run came from, and the key it answers.
        let mut key = None;
        if let Some(idempotency) = &options.idempotency {
            match durable::request_key(idempotency, &exchange.headers) {
                Err(reason) => return durable::refused_key(&reason),
                Ok(None) => {}
                Ok(Some(text)) => {
                    let run_id = RunId::fresh();
                    match durable::admit(journal, idempotency, text, &exchange, &run_id.0).await {
                        durable::Admission::Answer(response) => return response,
                        durable::Admission::Run(claimed) => {
                            extensions.insert(run_id);
                            key = Some(claimed);
                        }
                    }
                }
            }
        }
        extensions.insert(RunTrigger {
            kind: "http".into(),
            source: options.source.clone(),
            request: Some(durable::request_record(&exchange)),
        });
        if let Some(run_options) = durable::run_options(options.durable, key) {
            extensions.insert(run_options);
        }
    }
    extensions.insert(exchange.clone());
    match pipeline.run(data, extensions).await {
        Ok(outcome) => answer(&exchange, Ok(&outcome.context.current)),
        Err(e) => {
            if e.kind.is_server_side() {
                tracing::error!(pipeline = %e.pipeline, step = e.step.as_deref().unwrap_or("-"), error = %e.full(), "pipeline failed");
            } else if let Some(detail) = &e.detail {
                // The caller was told what its request lacked; the author may want the rest.
                tracing::debug!(pipeline = %e.pipeline, %detail, "request refused");
            }
            answer(&exchange, Err(&e))
        }
    }
}

/// What the caller of a run gets: the response a step set (`step.json_response`), else `200`
/// with the final data; for a failure, the status its kind calls for with a message (a generic
/// one for the server's own failures, whose details go to the log).
pub(crate) fn answer(
    exchange: &HttpExchange,
    outcome: Result<&Map<String, Value>, &PipelineError>,
) -> Response {
    let e = match outcome {
        Ok(current) => {
            return exchange
                .take_response()
                .unwrap_or_else(|| json_response(StatusCode::OK, &Value::Object(current.clone())));
        }
        Err(e) => e,
    };
    let (status, message) = match e.kind {
        ErrorKind::InvalidInput => (StatusCode::BAD_REQUEST, e.message.clone()),
        ErrorKind::Denied => (StatusCode::FORBIDDEN, "forbidden".to_string()),
        ErrorKind::RateLimited => (StatusCode::TOO_MANY_REQUESTS, e.message.clone()),
        ErrorKind::Cancelled => (StatusCode::CONFLICT, "the run was cancelled".to_string()),
        ErrorKind::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "a service this request needs is unavailable; try again later".to_string(),
        ),
        ErrorKind::Timeout => (
            StatusCode::GATEWAY_TIMEOUT,
            "the request timed out".to_string(),
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error".to_string(),
        ),
    };
    json_response(status, &json!({"error": message}))
}

/// The run's trigger data for a request, or the reason the body is unusable (a 400).
fn trigger_data(
    exchange: &HttpExchange,
    options: &PipelineRoute,
) -> Result<Map<String, Value>, String> {
    let body = exchange.parsed_body()?;
    let last_segment = last_segment(&exchange.path).to_string();
    let mut data = Map::new();
    match options.shape {
        TriggerShape::Fields => {
            for (k, v) in &exchange.query {
                data.entry(k.clone())
                    .or_insert_with(|| Value::String(v.clone()));
            }
            if let Some(Value::Object(fields)) = body {
                data.extend(fields);
            }
            for (k, v) in &exchange.path_params.0 {
                data.insert(k.clone(), Value::String(v.clone()));
            }
        }
        TriggerShape::Query => {
            let mut query: Map<String, Value> = Map::new();
            for (k, v) in &exchange.query {
                if let Value::Array(values) = query
                    .entry(k.clone())
                    .or_insert_with(|| Value::Array(Vec::new()))
                {
                    values.push(Value::String(v.clone()));
                }
            }
            data.insert("method".into(), json!(exchange.method));
            data.insert("path".into(), json!(exchange.path));
            data.insert("queryName".into(), json!(last_segment));
            data.insert("query".into(), Value::Object(query));
        }
        TriggerShape::Command => {
            data.insert("method".into(), json!(exchange.method));
            data.insert("path".into(), json!(exchange.path));
            data.insert("commandName".into(), json!(last_segment));
            if let Some(body @ Value::Object(_)) = body {
                data.insert("body".into(), body);
            }
        }
    }
    data.extend(options.params.clone());
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode() {
        assert_eq!(
            parse_query("a=1&b=x%20y&c=&d&e=a+b&f=%C3%A9%"),
            [
                ("a", "1"),
                ("b", "x y"),
                ("c", ""),
                ("d", ""),
                ("e", "a b"),
                ("f", "é%")
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    fn exchange(content_type: Option<&str>, body: &str) -> HttpExchange {
        let mut headers = HeaderMap::new();
        if let Some(ct) = content_type {
            headers.insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_str(ct).unwrap(),
            );
        }
        HttpExchange {
            method: "POST".into(),
            path: "/".into(),
            pattern: None,
            headers,
            query: Vec::new(),
            path_params: PathParams::default(),
            body: Bytes::from(body.to_string()),
            uri: http::Uri::from_static("/"),
            claims: None,
            request_id: None,
            deadline: None,
            response: Mutex::new(None),
        }
    }

    #[test]
    fn json_bodies_are_json_whatever_the_content_type_says() {
        let form = "application/x-www-form-urlencoded";
        let json = serde_json::json!({"sku": "A-1", "quantity": 2});
        // curl -d '{...}' says it sends a form; the original read JSON anyway, and so do we.
        for content_type in [
            None,
            Some(form),
            Some("application/json"),
            Some("text/plain"),
        ] {
            let parsed = exchange(content_type, r#" {"sku": "A-1", "quantity": 2}"#).parsed_body();
            assert_eq!(parsed, Ok(Some(json.clone())), "{content_type:?}");
        }
        // Real forms stay forms, also one whose field starts with `{`.
        let parsed = exchange(Some(form), "sku=A-1&quantity=2").parsed_body();
        assert_eq!(
            parsed,
            Ok(Some(serde_json::json!({"sku": "A-1", "quantity": "2"})))
        );
        let parsed = exchange(Some(form), "{x=1").parsed_body();
        assert_eq!(parsed, Ok(Some(serde_json::json!({"{x": "1"}))));
        // Broken JSON is the caller's mistake when it says JSON or nothing.
        assert!(
            exchange(Some("application/json"), "{x")
                .parsed_body()
                .is_err()
        );
        assert!(exchange(None, "{x").parsed_body().is_err());
        assert_eq!(exchange(None, "plain text").parsed_body(), Ok(None));
    }
}
