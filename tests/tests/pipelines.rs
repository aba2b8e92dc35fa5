//! Pipelines over HTTP: inline triggers (the original never served them), route pipelines,
//! request parsing, JSON responses and the caller's mistakes answered with 4xx.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::time::Duration;

use serde_json::{Value, json};
use wf_config::load_str;
use wf_engine::{RunningApp, build, validate};
use wf_tests::{build_on_loopback, client, example_vars, seed_examples, server_addr};

async fn start(yaml: &str) -> RunningApp {
    let registry = wf_host::registry().unwrap();
    let validated = validate(load_str("app.yaml", yaml, &example_vars()), &registry)
        .unwrap_or_else(|i| panic!("{}", i.diagnostics.render(&i.config.sources)));
    let app = build(&validated, &registry).unwrap_or_else(|d| panic!("{d:?}"));
    app.start(Duration::from_secs(5)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_sync_pipeline_runs_through_its_inline_http_triggers() {
    let registry = wf_host::registry().unwrap();
    let app = build_on_loopback(&seed_examples().join("data-sync-pipeline.yaml"), &registry);
    let running = app.start(Duration::from_secs(5)).await.unwrap();
    let base = format!("http://{}", server_addr(&running, "sync-server"));
    let http = client();

    let response = http
        .post(format!("{base}/api/sync/trigger"))
        .json(&json!({"source": "crm"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"source": "crm", "sync_status": "in_progress", "sync_source": "external-api"})
    );

    let body: Value = http
        .get(format!("{base}/api/health/deep"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "healthy");
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));

    let response = http
        .post(format!("{base}/api/sync/trigger"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("request body is not valid JSON"),
        "{body}"
    );
    running.stop(Duration::from_secs(5)).await;
}

const ORDERS: &str = r#"
modules:
  - {name: web, type: http.server, config: {address: "127.0.0.1:0"}}
  - {name: routes, type: http.router}
workflows:
  http:
    routes:
      - method: POST
        path: /orders/{customer}
        maxBodyBytes: 256
        steps:
          - name: parse-request
            type: step.request_parse
            config: {path_params: [customer], query_params: [priority], parse_body: true}
          - name: check
            type: step.validate
            config: {source: steps.parse-request.body, required_fields: [item]}
          - name: order
            type: step.set
            config:
              values:
                id: "{{ uuidv4 }}"
                item: "{{ index .steps \"parse-request\" \"body\" \"item\" }}"
                quantity: "{{ steps.parse-request.body.quantity | default(value=1) }}"
          - name: respond
            type: step.json_response
            config:
              status: 201
              headers: {X-Customer: "{{ .steps.parse-request.path_params.customer }}"}
              body:
                id: "{{ .id }}"
                item: "{{ .item }}"
                quantity: "{{ .quantity }}"
                priority: "{{ default \"normal\" .steps.parse-request.query.priority }}"
      - method: GET
        path: /files/{path...}
        steps:
          - {name: parse, type: step.request_parse, config: {path_params: [path]}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_pipelines_parse_requests_and_write_responses() {
    let running = start(ORDERS).await;
    let base = format!("http://{}", server_addr(&running, "web"));
    let http = client();

    let response = http
        .post(format!("{base}/orders/acme?priority=high"))
        .json(&json!({"item": "widget", "quantity": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-customer"], "acme");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["item"], "widget");
    assert_eq!(
        body["quantity"], 3,
        "a single expression keeps its JSON type"
    );
    assert_eq!(body["priority"], "high");
    assert_eq!(body["id"].as_str().unwrap().len(), 36);

    let response = http
        .post(format!("{base}/orders/acme"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("item=gadget")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (
            body["item"].clone(),
            body["quantity"].clone(),
            body["priority"].clone()
        ),
        (json!("gadget"), json!(1), json!("normal"))
    );

    let response = http
        .post(format!("{base}/orders/acme"))
        .json(&json!({"quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"],
        "step `check` failed: validate step \"check\": missing required fields: item"
    );

    let response = http
        .post(format!("{base}/orders/acme"))
        .json(&json!({"item": "x".repeat(1000)}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);

    let body: Value = http
        .get(format!("{base}/files/a/b/c.txt"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["path_params"], json!({"path": "a/b/c.txt"}));
    running.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_failing_at_run_time_is_the_callers_400_naming_the_key() {
    let yaml = r#"
modules:
  - {name: web, type: http.server, config: {address: "127.0.0.1:0"}}
  - {name: routes, type: http.router}
workflows:
  http:
    routes:
      - method: POST
        path: /greet
        steps:
          - {name: greet, type: step.set, config: {values: {greeting: "hello {{ .person.name }}"}}}
"#;
    let running = start(yaml).await;
    let base = format!("http://{}", server_addr(&running, "web"));
    let response = client()
        .post(format!("{base}/greet"))
        .json(&json!({"nobody": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    let error = body["error"].as_str().unwrap();
    // It names what the request lacked, never the template's text (it did: #16).
    assert!(
        error.contains("`person.name` is missing from the data") && !error.contains("{{"),
        "{error}"
    );
    running.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_query_and_command_shape_the_data_as_the_original() {
    let yaml = r#"
modules:
  - {name: web, type: http.server, config: {address: "127.0.0.1:0"}}
  - {name: routes, type: http.router}
  - {name: queries, type: api.query}
  - {name: commands, type: api.command}
workflows:
  http:
    routes:
      - method: GET
        path: /api/items
        handler: queries
        steps:
          - {name: out, type: step.json_response, config: {body: {name: "{{ .queryName }}", tags: "{{ .query.tag }}"}}}
      - method: POST
        path: /api/items/create
        handler: commands
        steps:
          - {name: out, type: step.json_response, config: {status: 201, body: "{{ .body }}"}}
      - method: GET
        path: /api/other
        handler: queries
"#;
    let running = start(yaml).await;
    let base = format!("http://{}", server_addr(&running, "web"));
    let http = client();
    let body: Value = http
        .get(format!("{base}/api/items?tag=a&tag=b"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body, json!({"name": "items", "tags": ["a", "b"]}));

    let response = http
        .post(format!("{base}/api/items/create"))
        .json(&json!({"title": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"title": "x"})
    );

    let response = http.get(format!("{base}/api/other")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"error": "unknown query: other"})
    );
    running.stop(Duration::from_secs(5)).await;
}
