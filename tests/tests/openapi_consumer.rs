//! `openapi.consumer` and `step.openapi_call`: operations called by operationId against a local
//! API, parameters and bodies checked against the document before anything is sent.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::HeaderMap;
use serde_json::{Value, json};
use wf_config::load_str;
use wf_engine::{Extensions, RunningApp, build, validate};
use wf_tests::unique_name;

const SPEC: &str = r##"
openapi: 3.0.3
info: {title: Pets, version: "1"}
servers:
  - url: http://unused.invalid/v1
paths:
  /pets/{petId}:
    parameters:
      - name: petId
        in: path
        required: true
        schema: {type: integer, minimum: 1}
    get:
      operationId: getPet
      parameters:
        - {name: verbose, in: query, schema: {type: boolean}}
        - {name: X-Trace-Note, in: header, schema: {type: string}}
      responses: {"200": {description: ok}}
  /pets:
    post:
      operationId: createPet
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: "#/components/schemas/NewPet"}
      responses: {"201": {description: created}}
    get:
      operationId: listPets
      parameters:
        - $ref: "#/components/parameters/Limit"
      responses: {"200": {description: ok}}
components:
  parameters:
    Limit: {name: limit, in: query, required: true, schema: {type: integer, maximum: 100}}
  schemas:
    NewPet:
      type: object
      required: [name]
      properties:
        name: {type: string, minLength: 1}
        tag: {type: string}
      additionalProperties: false
"##;

#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<Value>>,
}

async fn record(
    State(seen): State<Arc<Seen>>,
    path: Option<UrlPath<String>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: String,
) -> String {
    let entry = json!({
        "id": path.map(|p| p.0),
        "query": query,
        "note": headers.get("x-trace-note").map(|v| v.to_str().unwrap().to_string()),
        "key": headers.get("x-api-key").map(|v| v.to_str().unwrap().to_string()),
        "body": body,
    });
    seen.requests.lock().unwrap().push(entry.clone());
    json!({"echo": entry}).to_string()
}

async fn start_api() -> (SocketAddr, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    // Served with a relative server, which is relative to where the document came from.
    let spec = SPEC.replace("http://unused.invalid/v1", "/v1");
    let router = axum::Router::new()
        .route("/v1/pets/{id}", axum::routing::get(record))
        .route("/v1/pets", axum::routing::post(record).get(record))
        .route(
            "/openapi.yaml",
            axum::routing::get(move || async move { spec }),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, seen)
}

/// A directory holding the API document, and the app file's path inside it.
fn app_dir() -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(unique_name("wf-openapi-consumer"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("pets.yaml"), SPEC).unwrap();
    let app = dir.join("app.yaml");
    (dir, app)
}

fn prepare(path: &Path, yaml: &str) -> Result<wf_engine::App, String> {
    let registry = wf_host::registry().unwrap();
    let validated = validate(
        load_str(
            path,
            yaml,
            &std::collections::HashMap::<String, String>::new(),
        ),
        &registry,
    )
    .map_err(|i| i.diagnostics.render(&i.config.sources))?;
    build(&validated, &registry).map_err(|d| format!("{d:?}"))
}

async fn run(app: &RunningApp, pipeline: &str, input: Value) -> Result<Value, String> {
    app.state()
        .pipelines()
        .get(pipeline)
        .unwrap()
        .run(input.as_object().cloned().unwrap(), Extensions::default())
        .await
        .map(|o| Value::Object(o.context.current))
        .map_err(|e| e.message)
}

fn steps_yaml(addr: SocketAddr, source: &str) -> String {
    format!(
        r#"
modules:
  - name: pets
    type: openapi.consumer
    config:
      {source}
      baseUrl: "http://{addr}/v1"
      headers: {{X-Api-Key: k-123}}
pipelines:
  get:
    steps:
      - name: call
        type: step.openapi_call
        config:
          operation: getPet
          parameters: {{petId: "{{{{ .id }}}}", verbose: true, X-Trace-Note: "{{{{ .note }}}}"}}
  create:
    steps:
      - name: call
        type: step.openapi_call
        config:
          operation: createPet
          body: {{name: "{{{{ .name }}}}", tag: cat}}
  list:
    steps:
      - {{name: call, type: step.openapi_call, config: {{operation: listPets, parameters: {{limit: "{{{{ .limit }}}}"}}}}}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_are_called_by_id_with_checked_parameters_and_bodies() {
    let (addr, seen) = start_api().await;
    let (dir, path) = app_dir();
    let app = prepare(&path, &steps_yaml(addr, "specFile: pets.yaml"))
        .unwrap()
        .start(Duration::from_secs(10))
        .await
        .unwrap();

    // Text from the template becomes the integer the document asks for; query and header
    // parameters and the module's headers are sent.
    let out = run(&app, "get", json!({"id": "7", "note": "hello"}))
        .await
        .unwrap();
    assert_eq!(out["status_code"], 200, "{out}");
    let request = &out["body"]["echo"];
    assert_eq!(request["id"], "7");
    assert_eq!(request["query"], "verbose=true");
    assert_eq!(request["note"], "hello");
    assert_eq!(request["key"], "k-123");

    let out = run(&app, "create", json!({"name": "Rex"})).await.unwrap();
    let body: Value = serde_json::from_str(out["body"]["echo"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, json!({"name": "Rex", "tag": "cat"}));
    let out = run(&app, "list", json!({"limit": 20})).await.unwrap();
    assert_eq!(out["body"]["echo"]["query"], "limit=20");

    // Mistakes are the caller's, and nothing is sent.
    let before = seen.requests.lock().unwrap().len();
    let err = run(&app, "get", json!({"id": "0", "note": "x"}))
        .await
        .unwrap_err();
    assert!(err.contains("parameter `petId`"), "{err}");
    assert!(err.contains("minimum"), "{err}");
    let err = run(&app, "get", json!({"id": "seven", "note": "x"}))
        .await
        .unwrap_err();
    assert!(err.contains("parameter `petId`"), "{err}");
    let err = run(&app, "get", json!({"id": "..", "note": "x"}))
        .await
        .unwrap_err();
    assert!(err.contains("parameter `petId`"), "{err}");
    let err = run(&app, "create", json!({"name": ""})).await.unwrap_err();
    assert!(err.contains("body at `/name`"), "{err}");
    let err = run(&app, "list", json!({"limit": 500})).await.unwrap_err();
    assert!(err.contains("parameter `limit`"), "{err}");
    assert_eq!(seen.requests.lock().unwrap().len(), before);

    app.stop(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_from_a_url_is_read_at_start() {
    let (addr, _) = start_api().await;
    let (dir, path) = app_dir();
    let app = prepare(
        &path,
        &steps_yaml(addr, &format!("specUrl: \"http://{addr}/openapi.yaml\"")),
    )
    .unwrap()
    .start(Duration::from_secs(10))
    .await
    .unwrap();
    let out = run(&app, "get", json!({"id": 3, "note": "n"}))
        .await
        .unwrap();
    assert_eq!(out["body"]["echo"]["id"], "3");
    app.stop(Duration::from_secs(5)).await;

    // Without `baseUrl` (and so without headers), calls go to the document's server.
    let yaml = steps_yaml(addr, &format!("specUrl: \"http://{addr}/openapi.yaml\""))
        .replace(&format!("      baseUrl: \"http://{addr}/v1\"\n"), "")
        .replace("      headers: {X-Api-Key: k-123}\n", "");
    let app = prepare(&path, &yaml)
        .unwrap()
        .start(Duration::from_secs(10))
        .await
        .unwrap();
    let out = run(&app, "get", json!({"id": 4, "note": "n"}))
        .await
        .unwrap();
    assert_eq!(out["body"]["echo"]["id"], "4");
    assert_eq!(out["body"]["echo"]["key"], Value::Null);
    app.stop(Duration::from_secs(5)).await;

    // An unreadable document fails the start, naming the module.
    let err = prepare(
        &path,
        &steps_yaml(addr, &format!("specUrl: \"http://{addr}/missing.yaml\"")),
    )
    .unwrap()
    .start(Duration::from_secs(10))
    .await
    .err()
    .unwrap();
    assert!(format!("{err:#}").contains("404"), "{err:#}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn steps_naming_unknown_operations_or_parameters_are_refused_at_build() {
    let (dir, path) = app_dir();
    let with = |step: &str| {
        format!(
            "modules:\n  - {{name: pets, type: openapi.consumer, config: {{specFile: pets.yaml}}}}\npipelines:\n  p:\n    steps:\n      - {{name: s, type: step.openapi_call, config: {step}}}\n"
        )
    };
    let err = prepare(&path, &with("{operation: getPets}")).err().unwrap();
    assert!(err.contains("did you mean `getPet`"), "{err}");
    let err = prepare(&path, &with("{operation: getPet, parameters: {petid: 1}}"))
        .err()
        .unwrap();
    assert!(err.contains("did you mean `petId`"), "{err}");
    let err = prepare(&path, &with("{operation: listPets}"))
        .err()
        .unwrap();
    assert!(err.contains("needs parameter `limit`"), "{err}");

    std::fs::write(dir.join("swagger.yaml"), "swagger: \"2.0\"\npaths: {}\n").unwrap();
    let err = prepare(
        &path,
        "modules:\n  - {name: pets, type: openapi.consumer, config: {specFile: swagger.yaml}}\n",
    )
    .err()
    .unwrap();
    assert!(err.contains("Swagger 2"), "{err}");
    let rendered = wf_tests::invalid_yaml(
        "modules:\n  - {name: pets, type: openapi.consumer, config: {baseUrl: x}}\n",
    );
    assert!(rendered.contains("`specFile` or `specUrl`"), "{rendered}");
    assert!(rendered.contains("is not an http(s) address"), "{rendered}");
    // Credentials go only where the config says.
    let rendered = wf_tests::invalid_yaml(
        "modules:\n  - {name: pets, type: openapi.consumer, config: {specUrl: \"http://127.0.0.1:1/o.json\", headers: {X-Api-Key: k}}}\n",
    );
    assert!(
        rendered.contains("with `headers`, set `baseUrl`"),
        "{rendered}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
