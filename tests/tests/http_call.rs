//! `step.http_call` against a local HTTP server.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Response, StatusCode};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use wf_config::load_str;
use wf_engine::{Extensions, PipelineContext, PipelineError, build, validate};
use wf_tests::example_vars;

fn json_response(status: StatusCode, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// A backend with a JSON resource, an echo, a flaky endpoint and errors.
async fn backend() -> String {
    let flaky = Arc::new(AtomicU32::new(0));
    let app = Router::new()
        .route(
            "/users/{id}",
            get(|Path(id): Path<String>| async move {
                json_response(StatusCode::OK, json!({"id": id, "name": "Ada"}))
            }),
        )
        .route(
            "/echo",
            post(|headers: HeaderMap, body: Bytes| async move {
                let token = headers
                    .get("x-token")
                    .map(|v| v.to_str().unwrap().to_string());
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                json_response(
                    StatusCode::CREATED,
                    json!({"token": token, "received": body}),
                )
            }),
        )
        .route(
            "/flaky",
            get(|State(count): State<Arc<AtomicU32>>| async move {
                if count.fetch_add(1, Ordering::SeqCst) < 2 {
                    json_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        json!({"error": "warming up"}),
                    )
                } else {
                    json_response(StatusCode::OK, json!({"ok": true}))
                }
            }),
        )
        .route(
            "/missing",
            get(|| async {
                Response::builder()
                    .status(404)
                    .body(Body::from("no such thing"))
                    .unwrap()
            }),
        )
        .route("/text", get(|| async { "plain words" }))
        .with_state(flaky);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

async fn run(steps: &str, input: Value) -> Result<PipelineContext, PipelineError> {
    let registry = wf_host::registry().unwrap();
    let yaml = format!("pipelines:\n  p:\n    steps:\n{steps}");
    let validated = validate(load_str("app.yaml", &yaml, &example_vars()), &registry)
        .unwrap_or_else(|i| panic!("{}", i.diagnostics.render(&i.config.sources)));
    let app = build(&validated, &registry).unwrap_or_else(|d| panic!("{d:?}"));
    let pipeline = app.state().pipelines().get("p").unwrap();
    let input: Map<String, Value> = input.as_object().unwrap().clone();
    pipeline
        .run(input, Extensions::default())
        .await
        .map(|o| o.context)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templated_requests_and_parsed_responses() {
    let base = backend().await;
    let ctx = run(
        &format!(
            "      - {{name: get-user, type: step.http_call, config: {{url: \"{base}/users/{{{{ .id }}}}\"}}}}
      - name: send
        type: step.http_call
        config:
          url: \"{base}/echo\"
          method: POST
          headers: {{X-Token: \"{{{{ .token }}}}\"}}
          body: {{name: \"{{{{ index .steps \\\"get-user\\\" \\\"body\\\" \\\"name\\\" }}}}\"}}
      - {{name: text, type: step.http_call, config: {{url: \"{base}/text\"}}}}
"
        ),
        json!({"id": 7, "token": "secret-token"}),
    )
    .await
    .unwrap();
    assert_eq!(ctx.steps["get-user"]["status_code"], 200);
    assert_eq!(
        ctx.steps["get-user"]["body"],
        json!({"id": "7", "name": "Ada"})
    );
    assert_eq!(
        ctx.steps["get-user"]["headers"]["content-type"],
        "application/json"
    );
    assert_eq!(ctx.steps["send"]["status_code"], 201);
    assert_eq!(
        ctx.steps["send"]["body"],
        json!({"token": "secret-token", "received": {"name": "Ada"}})
    );
    assert_eq!(ctx.steps["text"]["body"], "plain words");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_statuses_fail_with_status_and_excerpt_and_5xx_retries() {
    let base = backend().await;
    let err = run(
        &format!(
            "      - {{name: get, type: step.http_call, config: {{url: \"{base}/missing\"}}}}\n"
        ),
        json!({}),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (err.kind, err.message.as_str()),
        (
            wf_engine::ErrorKind::Internal,
            "step `get` failed: HTTP 404: no such thing"
        )
    );

    let ctx = run(
        &format!(
            "      - name: flaky
        type: step.http_call
        config: {{url: \"{base}/flaky\"}}
        retry: {{max_attempts: 3, backoff: 5ms}}
"
        ),
        json!({}),
    )
    .await
    .unwrap();
    assert_eq!(ctx.steps["flaky"]["body"], json!({"ok": true}));

    let err = run("      - {name: nowhere, type: step.http_call, config: {url: \"http://127.0.0.1:9/x\", timeout: 2s}}\n", json!({}))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind,
        wf_engine::ErrorKind::Unavailable,
        "{}",
        err.message
    );

    let err = run(
        &format!("      - {{name: big, type: step.http_call, config: {{url: \"{base}/text\", max_response_bytes: 5}}}}\n"),
        json!({}),
    )
    .await
    .unwrap_err();
    assert!(
        err.message.contains("larger than 5 bytes"),
        "{}",
        err.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_client_gives_base_url_headers_and_retries() {
    let base = backend().await;
    let registry = wf_host::registry().unwrap();
    let yaml = format!(
        r#"
modules:
  - name: api
    type: httpclient.modular
    config: {{baseURL: "{base}", headers: {{X-Token: client-token}}, timeout: 5s, retries: 2, retryBackoff: 10ms}}
pipelines:
  p:
    steps:
      - {{name: flaky, type: step.http_call, config: {{client: api, url: /flaky}}}}
      - {{name: user, type: step.http_call, config: {{client: api, url: "/users/{{{{ .id }}}}"}}}}
      - {{name: send, type: step.http_call, config: {{client: api, url: /echo, method: POST, body: {{a: 1}}}}}}
      - {{name: mine, type: step.http_call, config: {{client: api, url: /echo, method: POST, headers: {{X-Token: step-token}}}}}}
"#
    );
    let validated = validate(load_str("app.yaml", &yaml, &example_vars()), &registry)
        .unwrap_or_else(|i| panic!("{}", i.diagnostics.render(&i.config.sources)));
    let app = build(&validated, &registry).unwrap_or_else(|d| panic!("{d:?}"));
    let pipeline = app.state().pipelines().get("p").unwrap();
    let ctx = pipeline
        .run(
            json!({"id": "a b"}).as_object().cloned().unwrap(),
            Extensions::default(),
        )
        .await
        .unwrap()
        .context;
    // Two 503s, then success: the client's retries.
    assert_eq!(ctx.steps["flaky"]["body"], json!({"ok": true}));
    assert_eq!(ctx.steps["user"]["body"]["id"], "a b");
    assert_eq!(ctx.steps["send"]["body"]["token"], "client-token");
    assert_eq!(
        ctx.steps["mine"]["body"]["token"], "step-token",
        "a step's header wins"
    );
    // Data cannot climb out of the base path.
    let error = pipeline
        .run(
            json!({"id": "../../admin"}).as_object().cloned().unwrap(),
            Extensions::default(),
        )
        .await
        .unwrap_err();
    assert!(error.message.contains("`..` segment"), "{error}");

    let rendered = wf_tests::invalid_yaml(
        "modules:\n  - {name: api, type: httpclient.modular, config: {baseURL: \"ftp://x\"}}\n  - {name: other, type: messaging.broker}\npipelines:\n  p:\n    steps:\n      - {name: a, type: step.http_call, config: {client: api, url: \"https://elsewhere.example/x\"}}\n      - {name: b, type: step.http_call, config: {client: other, url: /x}}\n",
    );
    for expected in [
        "is not an http(s) base address",
        "with `client`, `https://elsewhere.example/x` must be a path starting with `/`",
        "`other` is not an `httpclient.modular` module",
    ] {
        assert!(
            rendered.contains(expected),
            "missing {expected:?} in\n{rendered}"
        );
    }
}
