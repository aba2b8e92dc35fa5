//! State machines end to end: the original's trigger example fires transitions over HTTP and
//! from events; `api.handler` resources tied to a machine keep their state across restarts on
//! SQLite and PostgreSQL; concurrent transitions on one instance never both win, even from two
//! hosts sharing the database; hooks veto and guards refuse.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use wf_messaging::MessageBroker;
use wf_state::StateMachineEngine;
use wf_tests::{
    TempDir, build_on_loopback, client, eventually, seed_examples, server_addr, start_yaml,
    unique_name,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trigger_example_fires_transitions_over_http_and_from_events() {
    let registry = wf_host::registry().unwrap();
    let app = build_on_loopback(
        &seed_examples().join("trigger-workflow-example.yaml"),
        &registry,
    );
    let app = app.start(Duration::from_secs(10)).await.unwrap();
    let base = format!("http://{}", server_addr(&app, "api-http-server"));
    let http = client();

    let submitted = http
        .post(format!("{base}/api/workflows/orders/submit"))
        .json(&json!({"id": "o-1", "total": 12}))
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status(), 202);
    let submitted: Value = submitted.json().await.unwrap();
    assert_eq!(submitted["status"], "workflow triggered");
    assert_eq!(
        submitted["result"]["currentState"], "processing",
        "{submitted}"
    );
    assert_eq!(submitted["result"]["data"]["total"], 12);

    let completed: Value = http
        .post(format!("{base}/api/workflows/orders/o-1/complete"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(completed["result"]["currentState"], "completed");
    assert_eq!(completed["result"]["completed"], true);

    // A final state has no way out; an unknown instance is a 404.
    let again = http
        .post(format!("{base}/api/workflows/orders/o-1/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 400);
    let again: Value = again.json().await.unwrap();
    assert!(
        again["error"].as_str().unwrap().contains("is complete"),
        "{again}"
    );
    let missing = http
        .post(format!("{base}/api/workflows/orders/nope/complete"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // Submitting twice: the second finds the instance in `processing`, the original's text.
    let submit = http
        .post(format!("{base}/api/workflows/orders/submit"))
        .json(&json!({"id": "o-3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(submit.status(), 202);
    let twice = http
        .post(format!("{base}/api/workflows/orders/submit"))
        .json(&json!({"id": "o-3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), 400);
    let twice: Value = twice.json().await.unwrap();
    assert_eq!(
        twice["error"],
        "cannot trigger transition 'submit_order' from state 'processing', expected 'new'"
    );

    // `order.created` on `order-events` submits an order too.
    let services = app.state().services().unwrap();
    let broker = services.get::<dyn MessageBroker>("message-broker").unwrap();
    broker
        .publish(
            "order-events",
            Bytes::from(json!({"type": "order.created", "id": "o-2"}).to_string()),
        )
        .await
        .unwrap();
    let engine = services
        .get::<StateMachineEngine>("order-state-machine")
        .unwrap();
    let submitted = eventually(Duration::from_secs(5), || {
        let engine = engine.clone();
        async move {
            engine
                .get("o-2")
                .await
                .unwrap()
                .is_some_and(|i| i.current_state == "processing")
        }
    })
    .await;
    assert!(submitted, "the event did not submit the order");

    // The protected resource routes still want a token.
    assert_eq!(
        http.get(format!("{base}/api/orders"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    app.stop(Duration::from_secs(5)).await;
}

fn resource_app(dsn: &str) -> String {
    format!(
        r#"
modules:
  - name: web
    type: http.server
    config: {{address: "127.0.0.1:0"}}
  - name: routes
    type: http.router
  - name: db
    type: database.workflow
    config: {{dsn: "{dsn}"}}
  - name: orders-engine
    type: statemachine.engine
  - name: orders-api
    type: api.handler
    config:
      resourceName: orders
      workflowType: order
      instanceIDPrefix: "order-"
  - name: tracker
    type: state.tracker
workflows:
  http:
    routes:
      - {{method: GET, path: /api/orders, handler: orders-api}}
      - {{method: POST, path: /api/orders, handler: orders-api}}
      - {{method: GET, path: "/api/orders/{{id}}", handler: orders-api}}
      - {{method: PUT, path: "/api/orders/{{id}}", handler: orders-api}}
      - {{method: DELETE, path: "/api/orders/{{id}}", handler: orders-api}}
      - {{method: POST, path: "/api/orders/{{id}}/transition", handler: orders-api}}
  statemachine:
    engine: orders-engine
    definitions:
      - name: order
        initialState: new
        states:
          new: {{}}
          paid: {{}}
          review: {{}}
          shipped: {{isFinal: true}}
          refused: {{isFinal: true, isError: true}}
        transitions:
          pay: {{fromState: new, toState: paid}}
          ship: {{fromState: paid, toState: shipped, condition: "{{{{ .address }}}}"}}
          flag: {{fromState: new, toState: review}}
          refuse: {{fromState: review, toState: refused, autoTransform: true}}
    hooks:
      - transitions: [pay]
        pipeline: check-payment
pipelines:
  check-payment:
    steps:
      - name: amount
        type: step.validate
        config: {{source: data, required_fields: [amount]}}
"#
    )
}

async fn transition(
    http: &reqwest::Client,
    base: &str,
    id: &str,
    name: &str,
    data: Value,
) -> (u16, Value) {
    let response = http
        .post(format!("{base}/api/orders/{id}/transition"))
        .json(&json!({"transition": name, "data": data}))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_follow_their_state_machine_and_survive_a_restart_on_both_backends() {
    let dir = TempDir::new("statemachine");
    for (backend, dsn) in wf_tests::database_backends(&dir) {
        let id = unique_name("o");
        let app = start_yaml(&resource_app(&dsn)).await;
        let base = format!("http://{}", server_addr(&app, "web"));
        let http = client();

        let created = http
            .post(format!("{base}/api/orders"))
            .json(&json!({"id": id, "sku": "A-1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201, "{backend}");
        let created: Value = created.json().await.unwrap();
        assert_eq!(created["state"], "new", "{backend}: {created}");
        assert_eq!(created["data"]["sku"], "A-1");

        // The hook vetoes `pay` without an amount; nothing changes.
        let (status, body) = transition(&http, &base, &id, "pay", json!({})).await;
        assert_eq!(status, 400, "{backend}: {body}");
        assert_eq!(body["success"], false);
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .starts_with("transition handler failed"),
            "{body}"
        );

        // The guard of `ship` needs an address.
        let (status, body) = transition(&http, &base, &id, "pay", json!({"amount": 12})).await;
        assert_eq!(
            (status, body["state"].clone()),
            (200, json!("paid")),
            "{backend}: {body}"
        );
        let (status, body) = transition(&http, &base, &id, "ship", json!({})).await;
        assert_eq!(status, 400, "{backend}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("condition"),
            "{body}"
        );

        // Wrong state: the original's message.
        let (status, body) = transition(&http, &base, &id, "flag", json!({})).await;
        assert_eq!(status, 400);
        assert_eq!(
            body["error"],
            "cannot trigger transition 'flag' from state 'paid', expected 'new'"
        );
        let (status, _) = transition(&http, &base, "no-such-order", "pay", json!({})).await;
        assert_eq!(status, 404);

        // An auto-transition fires on entering its state: flag → review → refused.
        let other = unique_name("o");
        http.post(format!("{base}/api/orders"))
            .json(&json!({"id": other}))
            .send()
            .await
            .unwrap();
        let (status, body) = transition(&http, &base, &other, "flag", json!({})).await;
        assert_eq!(
            (status, body["state"].clone()),
            (200, json!("refused")),
            "{backend}: {body}"
        );
        app.stop(Duration::from_secs(5)).await;

        // Restarted, the resource and its machine are where they were.
        let app = start_yaml(&resource_app(&dsn)).await;
        let base = format!("http://{}", server_addr(&app, "web"));
        let got: Value = http
            .get(format!("{base}/api/orders/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(got["state"], "paid", "{backend}: {got}");
        assert_eq!(got["data"]["sku"], "A-1");
        let (status, body) =
            transition(&http, &base, &id, "ship", json!({"address": "1 Main St"})).await;
        assert_eq!(
            (status, body["state"].clone()),
            (200, json!("shipped")),
            "{backend}: {body}"
        );

        // Two hosts (two apps on one database) race to move one order: exactly one wins.
        let second = start_yaml(&resource_app(&dsn)).await;
        let second_base = format!("http://{}", server_addr(&second, "web"));
        let racer = unique_name("o");
        let created = http
            .post(format!("{base}/api/orders"))
            .json(&json!({"id": racer}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let attempts: Vec<_> = (0..8)
            .map(|i| {
                let http = http.clone();
                let base = if i % 2 == 0 {
                    base.clone()
                } else {
                    second_base.clone()
                };
                let racer = racer.clone();
                tokio::spawn(async move {
                    transition(&http, &base, &racer, "pay", json!({"amount": i})).await
                })
            })
            .collect();
        let mut wins = 0;
        for attempt in attempts {
            let (status, body) = attempt.await.unwrap();
            match status {
                200 => wins += 1,
                400 | 409 => {}
                other => panic!("{backend}: unexpected {other}: {body}"),
            }
        }
        assert_eq!(wins, 1, "{backend}: one transition from `new` may win");
        let got: Value = http
            .get(format!("{second_base}/api/orders/{racer}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(got["state"], "paid", "{backend}");

        // Bad bodies are the caller's mistake; a deleted resource is gone.
        let bad = http
            .post(format!("{base}/api/orders"))
            .body("[1,2]")
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
        assert_eq!(
            http.delete(format!("{base}/api/orders/{racer}"))
                .send()
                .await
                .unwrap()
                .status(),
            204
        );
        assert_eq!(
            http.get(format!("{base}/api/orders/{racer}"))
                .send()
                .await
                .unwrap()
                .status(),
            404
        );
        second.stop(Duration::from_secs(5)).await;
        app.stop(Duration::from_secs(5)).await;
    }
}

const PROCESSING_APP: &str = r#"
modules:
  - {name: web, type: http.server, config: {address: "127.0.0.1:0"}}
  - {name: routes, type: http.router}
  - {name: orders-engine, type: statemachine.engine}
  - name: orders-api
    type: api.handler
    config: {resourceName: orders, workflowType: order}
  - name: charge
    type: processing.step
    config:
      pipeline: charge-card
      successTransition: charged
      compensateTransition: decline
      maxRetries: 2
      retryBackoffMs: 10
  - {name: metrics, type: metrics.collector}
pipelines:
  charge-card:
    steps:
      - {name: check, type: step.validate, config: {required_fields: [card]}}
      - {name: receipt, type: step.set, config: {values: {receipt: "r-{{ workflowId }}"}}}
workflows:
  http:
    routes:
      - {method: POST, path: /api/orders, handler: orders-api}
      - {method: POST, path: "/api/orders/{id}/transition", handler: orders-api}
  statemachine:
    engine: orders-engine
    definitions:
      - name: order
        initialState: new
        states:
          new: {}
          charging: {}
          paid: {isFinal: true}
          declined: {isFinal: true, isError: true}
        transitions:
          pay: {fromState: new, toState: charging}
          charged: {fromState: charging, toState: paid}
          decline: {fromState: charging, toState: declined}
    hooks:
      - {transitions: [pay], handler: charge}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processing_step_moves_the_instance_on_or_compensates_after_its_retries() {
    let app = start_yaml(PROCESSING_APP).await;
    let base = format!("http://{}", server_addr(&app, "web"));
    let http = client();
    for (id, body) in [
        ("o-card", json!({"id": "o-card", "card": "4242"})),
        ("o-none", json!({"id": "o-none"})),
    ] {
        let created = http
            .post(format!("{base}/api/orders"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201, "{id}");
    }

    // The work succeeds: the follow-up fires before the caller is answered.
    let (status, body) = transition(&http, &base, "o-card", "pay", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "paid", "{body}");
    let engine = app
        .state()
        .services()
        .unwrap()
        .get::<StateMachineEngine>("orders-engine")
        .unwrap();
    let paid = engine.get("o-card").await.unwrap().unwrap();
    assert_eq!(paid.data["receipt"], "r-o-card", "{:?}", paid.data);
    assert!(
        !paid.data.contains_key("transitionId"),
        "coordinates stay out"
    );

    // The work fails three times (two retries): the compensation fires with the error.
    let (status, body) = transition(&http, &base, "o-none", "pay", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "declined", "{body}");
    let declined = engine.get("o-none").await.unwrap().unwrap();
    let error = declined.data["error"].as_str().unwrap();
    assert!(error.contains("card"), "{error}");

    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"workflow_module_operations_total{module="charge",operation="process",status="success"} 1"#,
        r#"workflow_module_operations_total{module="charge",operation="process",status="error"} 1"#,
        r#"workflow_workflow_executions_total{action="run",status="failed",workflow_type="charge-card"} 3"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in\n{metrics}"
        );
    }
    app.stop(Duration::from_secs(5)).await;
}

#[test]
fn a_processing_step_needs_an_executor() {
    let text = wf_tests::invalid_yaml(
        "modules:\n  - name: p\n    type: processing.step\n    config: {successTransition: done}\n",
    );
    assert!(text.contains("needs an executor"), "{text}");
}

/// A transition's hooks run holding neither a lock nor a connection: a hook that queries the
/// engine's own database works with a pool of one connection, on both backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_hold_no_connection_while_they_run() {
    let dir = TempDir::new("statemachine-lease");
    for (backend, dsn) in wf_tests::database_backends(&dir) {
        let yaml = resource_app(&dsn)
            .replace(
                &format!("config: {{dsn: \"{dsn}\"}}"),
                &format!("config: {{dsn: \"{dsn}\", maxOpenConns: 1}}"),
            )
            .replace(
                "        config: {source: data, required_fields: [amount]}\n",
                "        config: {source: data, required_fields: [amount]}\n      - name: count\n        type: step.db_query\n        config: {query: \"SELECT COUNT(*) AS n FROM wf_state_instances\", mode: single}\n",
            );
        assert!(yaml.contains("maxOpenConns: 1") && yaml.contains("step.db_query"));
        let app = start_yaml(&yaml).await;
        let base = format!("http://{}", server_addr(&app, "web"));
        let http = client();
        for _ in 0..3 {
            let id = unique_name("o");
            let created = http
                .post(format!("{base}/api/orders"))
                .json(&json!({"id": id}))
                .send()
                .await
                .unwrap();
            assert_eq!(created.status(), 201, "{backend}");
            let (status, body) = transition(&http, &base, &id, "pay", json!({"amount": 5})).await;
            assert_eq!(
                (status, body["state"].clone()),
                (200, json!("paid")),
                "{backend}: {body}"
            );
        }
        app.stop(Duration::from_secs(5)).await;
    }
}
