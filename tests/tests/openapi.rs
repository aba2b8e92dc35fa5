//! `openapi.generator`: the document describes every route (workflows, triggers, endpoint
//! modules), with path parameters and bearer security where the auth middleware guards a
//! route, and it passes openapi-spec-validator (from PyPI; `.ci/run` installs it).

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::time::Duration;

use serde_json::Value;
use wf_tests::{TempDir, client, server_addr, start_yaml};

const APP: &str = r#"
name: shop
modules:
  - {name: web, type: http.server, config: {address: "127.0.0.1:0"}}
  - {name: routes, type: http.router}
  - {name: users, type: http.handler}
  - {name: auth, type: http.middleware.auth, config: {secretKey: "an-openapi-test-secret-of-32-bytes!"}}
  - {name: metrics, type: metrics.collector}
  - name: docs
    type: openapi.generator
    config:
      version: "2.1.0"
      description: The shop's API
      servers: ["https://api.shop.example", {url: "http://localhost:8080", description: local}]
workflows:
  http:
    routes:
      - {method: GET, path: /api/users, handler: users}
      - {method: GET, path: "/api/users/:id", handler: users, middlewares: [auth]}
      - {method: DELETE, path: "/api/users/{id}", handler: users, middlewares: [auth]}
      - method: POST
        path: /api/users
        steps:
          - {name: check, type: step.validate, config: {strategy: required_fields, required_fields: [email]}}
          - {name: created, type: step.json_response, config: {status: 201, body: {ok: true}}}
pipelines:
  place-order:
    trigger: {type: http, config: {method: POST, path: /api/orders}}
    steps:
      - {name: parse, type: step.request_parse, config: {parse_body: true}}
      - name: check
        type: step.validate
        config:
          schema: {type: object, required: [sku, quantity], properties: {sku: {type: string}, quantity: {type: integer, minimum: 1}}}
      - {name: ok, type: step.set, config: {values: {placed: true}}}
  no-schema:
    trigger: {type: http, config: {method: PUT, path: /api/carts}}
    steps:
      - {name: ok, type: step.set, config: {values: {kept: true}}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_describes_every_route_and_is_valid() {
    let app = start_yaml(APP).await;
    let base = format!("http://{}", server_addr(&app, "web"));
    let http = client();
    let response = http
        .get(format!("{base}/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let text = response.text().await.unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "shop");
    assert_eq!(doc["info"]["version"], "2.1.0");
    assert_eq!(doc["servers"][1]["description"], "local");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.contains_key("/api/users"));
    assert!(
        paths.contains_key("/metrics"),
        "endpoint modules too: {:?}",
        paths.keys()
    );
    assert!(!paths.contains_key("/api/openapi.json"), "not itself");
    let one = &paths["/api/users/{id}"];
    assert_eq!(one["get"]["parameters"][0]["name"], "id");
    assert_eq!(
        one["get"]["security"][0]["bearerAuth"],
        serde_json::json!([])
    );
    assert!(one["delete"]["responses"].get("401").is_some());
    assert!(paths["/api/users"]["get"].get("security").is_none());
    // Request bodies carry the schema the route's pipeline checks; fixed statuses are used.
    let order = &paths["/api/orders"]["post"];
    assert_eq!(order["requestBody"]["required"], true);
    assert_eq!(
        order["requestBody"]["content"]["application/json"]["schema"]["required"],
        serde_json::json!(["sku", "quantity"])
    );
    assert!(order["responses"].get("400").is_some());
    assert!(order["responses"].get("200").is_some());
    let create = &paths["/api/users"]["post"];
    assert_eq!(
        create["requestBody"]["content"]["application/json"]["schema"],
        serde_json::json!({"type": "object", "required": ["email"]})
    );
    assert!(create["responses"].get("201").is_some(), "{create}");
    assert!(create["responses"].get("200").is_none());
    let cart = &paths["/api/carts"]["put"];
    assert_eq!(cart["requestBody"]["required"], false);
    assert!(cart["responses"].get("400").is_none());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );

    // The same document as YAML (JSON is YAML).
    let yaml = http
        .get(format!("{base}/api/openapi.yaml"))
        .send()
        .await
        .unwrap();
    assert_eq!(yaml.headers()["content-type"], "application/yaml");
    assert_eq!(yaml.text().await.unwrap(), text);

    // openapi-spec-validator agrees.
    let available = std::process::Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .status()
        .is_ok_and(|s| s.success());
    if available {
        let dir = TempDir::new("openapi");
        let file = dir.0.join("openapi.json");
        std::fs::write(&file, &text).unwrap();
        let out = std::process::Command::new("python3")
            .args(["-m", "openapi_spec_validator"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        assert!(
            std::env::var("WF_TEST_REQUIRE_OPENAPI_VALIDATOR").is_err(),
            "openapi-spec-validator is required here (python3 -m pip install openapi-spec-validator)"
        );
        eprintln!(
            "openapi-spec-validator is not installed: skipping the validation of the document"
        );
    }
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

/// Endpoint modules take `middlewares` like routes do: the logs, the document, the metrics and
/// proxied or static routes can sit behind authentication, and the document says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_modules_sit_behind_their_middlewares() {
    let dir = TempDir::new("guarded-endpoints");
    std::fs::write(dir.0.join("index.html"), "<h1>admin</h1>").unwrap();
    let app = start_yaml(&format!(
        r#"
modules:
  - {{name: web, type: http.server, config: {{address: "127.0.0.1:0"}}}}
  - {{name: routes, type: http.router}}
  - name: ops-auth
    type: http.middleware.auth
    config: {{apiKeys: [{{name: ops, key: "an-operations-key-0123456789"}}]}}
  - {{name: logs, type: log.collector, config: {{middlewares: [ops-auth]}}}}
  - {{name: metrics, type: metrics.collector, config: {{middlewares: [ops-auth]}}}}
  - {{name: ui, type: static.fileserver, config: {{root: "{}", prefix: /admin, middlewares: [ops-auth]}}}}
  - {{name: docs, type: openapi.generator, config: {{middlewares: [ops-auth]}}}}
"#,
        dir.0.display()
    ))
    .await;
    let base = format!("http://{}", server_addr(&app, "web"));
    let http = client();
    for path in ["/logs", "/metrics", "/admin/", "/api/openapi.json"] {
        let refused = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(refused.status(), 401, "{path}");
        let admitted = http
            .get(format!("{base}{path}"))
            .header("X-API-Key", "an-operations-key-0123456789")
            .send()
            .await
            .unwrap();
        assert_eq!(admitted.status(), 200, "{path}");
    }
    let doc: Value = http
        .get(format!("{base}/api/openapi.json"))
        .header("X-API-Key", "an-operations-key-0123456789")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        doc["paths"]["/logs"]["get"]["security"][0]["bearerAuth"],
        serde_json::json!([])
    );
    let rendered = wf_tests::invalid_yaml(
        "modules:\n  - {name: routes, type: http.router}\n  - {name: logs, type: log.collector, config: {middlewares: [nobody]}}\n",
    );
    assert!(rendered.contains("`nobody`"), "{rendered}");
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}
