//! `observability.otel`: spans of runs and steps arrive at an OTLP/HTTP receiver, continue the
//! caller's W3C trace context, and travel on to the services a step calls.
//!
//! The receiver is a local OTLP/HTTP endpoint below (POST `/v1/traces`, JSON), recording what
//! it is sent, as an OpenTelemetry Collector would receive it.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{Value, json};
use wf_tests::{client, eventually, server_addr, start_yaml};

#[derive(Default)]
struct Received {
    /// Every exported span, with its resource's `service.name`.
    spans: Mutex<Vec<(String, Value)>>,
    /// `traceparent` headers the upstream service saw.
    upstream: Mutex<Vec<String>>,
}

async fn traces(State(received): State<Arc<Received>>, body: String) -> &'static str {
    let export: Value = serde_json::from_str(&body).expect("OTLP JSON");
    for resource in export["resourceSpans"].as_array().unwrap() {
        let service = resource["resource"]["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == "service.name")
            .map(|a| a["value"]["stringValue"].as_str().unwrap().to_string())
            .unwrap_or_default();
        for scope in resource["scopeSpans"].as_array().unwrap() {
            for span in scope["spans"].as_array().unwrap() {
                received
                    .spans
                    .lock()
                    .unwrap()
                    .push((service.clone(), span.clone()));
            }
        }
    }
    "{}"
}

async fn upstream(State(received): State<Arc<Received>>, headers: HeaderMap) -> String {
    if let Some(tp) = headers.get("traceparent") {
        received
            .upstream
            .lock()
            .unwrap()
            .push(tp.to_str().unwrap().to_string());
    }
    json!({"stock": 7}).to_string()
}

async fn start_receiver() -> (SocketAddr, Arc<Received>) {
    let received = Arc::new(Received::default());
    let router = axum::Router::new()
        .route("/v1/traces", axum::routing::post(traces))
        .route("/stock", axum::routing::get(upstream))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, received)
}

fn attribute<'a>(span: &'a Value, key: &str) -> Option<&'a str> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)?["value"]["stringValue"]
        .as_str()
}

fn spans_of(received: &Received, trace_id: &str) -> Vec<Value> {
    received
        .spans
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, s)| s["traceId"] == trace_id)
        .map(|(_, s)| s.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_and_steps_are_traced_and_context_flows_in_and_out() {
    let (receiver, received) = start_receiver().await;
    let app = start_yaml(&format!(
        r#"
name: orders-app
modules:
  - {{name: web, type: http.server, config: {{address: "127.0.0.1:0"}}}}
  - {{name: routes, type: http.router}}
  - name: tracing
    type: observability.otel
    config: {{endpoint: "http://{receiver}", exportInterval: 50ms}}
pipelines:
  place-order:
    steps:
      - {{name: check-stock, type: step.http_call, config: {{url: "http://{receiver}/stock", method: GET}}}}
      - {{name: note, type: step.set, config: {{values: {{placed: true}}}}}}
      - {{name: notify, type: step.sub_workflow, config: {{workflow: notify-customer}}}}
  notify-customer:
    steps:
      - {{name: compose, type: step.set, config: {{values: {{sent: true}}}}}}
  broken:
    steps:
      - {{name: refuse, type: step.validate, config: {{strategy: required_fields, required_fields: [id]}}}}
triggers:
  http:
    routes:
      - {{path: /orders, pipeline: place-order}}
      - {{path: /broken, pipeline: broken}}
"#
    ))
    .await;
    let http = client();
    let base = format!("http://{}", server_addr(&app, "web"));

    // A caller's trace is continued.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let status = http
        .post(format!("{base}/orders"))
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "{status}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            spans_of(&received, caller_trace).len() >= 6
        })
        .await,
        "the run, its three steps, the sub-pipeline and its step are exported"
    );
    let spans = spans_of(&received, caller_trace);
    let run = spans.iter().find(|s| s["name"] == "place-order").unwrap();
    assert_eq!(run["parentSpanId"], caller_span, "{run}");
    assert_eq!(run["kind"], 2, "the server side of the caller's request");
    assert_eq!(run["status"]["code"], 1);
    assert_eq!(attribute(run, "wf.pipeline"), Some("place-order"));
    assert!(attribute(run, "wf.run_id").is_some_and(|id| id.len() == 36));
    let run_span = run["spanId"].as_str().unwrap();
    let check = spans.iter().find(|s| s["name"] == "check-stock").unwrap();
    assert_eq!(check["parentSpanId"], run_span);
    assert_eq!(attribute(check, "wf.step_type"), Some("step.http_call"));
    let start: u128 = check["startTimeUnixNano"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let end: u128 = check["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
    assert!(start > 0 && end >= start);
    let note = spans.iter().find(|s| s["name"] == "note").unwrap();
    assert_eq!(note["parentSpanId"], run_span);
    // The sub-pipeline's run hangs off the step that started it.
    let notify = spans.iter().find(|s| s["name"] == "notify").unwrap();
    let child = spans
        .iter()
        .find(|s| s["name"] == "notify-customer")
        .unwrap();
    assert_eq!(child["parentSpanId"], notify["spanId"]);
    assert_eq!(child["kind"], 1);
    let compose = spans.iter().find(|s| s["name"] == "compose").unwrap();
    assert_eq!(compose["parentSpanId"], child["spanId"]);

    // The called service saw the http_call step's span as its parent.
    let upstream = received.upstream.lock().unwrap().clone();
    assert_eq!(
        upstream,
        vec![format!(
            "00-{caller_trace}-{}-01",
            check["spanId"].as_str().unwrap()
        )]
    );
    // The service is named after the app.
    assert!(
        received
            .spans
            .lock()
            .unwrap()
            .iter()
            .all(|(service, _)| service == "orders-app")
    );

    // Without a caller, a run starts its own trace; a failed step and run are errors.
    http.post(format!("{base}/broken"))
        .header("traceparent", "not-a-traceparent")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            received
                .spans
                .lock()
                .unwrap()
                .iter()
                .any(|(_, s)| s["name"] == "broken")
        })
        .await
    );
    let all = received.spans.lock().unwrap().clone();
    let broken = &all.iter().find(|(_, s)| s["name"] == "broken").unwrap().1;
    let trace_id = broken["traceId"].as_str().unwrap();
    assert_eq!(trace_id.len(), 32);
    assert_ne!(trace_id, caller_trace);
    assert!(
        broken.get("parentSpanId").is_none(),
        "a root span: {broken}"
    );
    assert_eq!(broken["kind"], 1);
    assert_eq!(broken["status"]["code"], 2);
    let refuse = &all.iter().find(|(_, s)| s["name"] == "refuse").unwrap().1;
    assert_eq!(refuse["traceId"], trace_id);
    assert_eq!(refuse["status"]["code"], 2);
    assert!(refuse["status"]["message"].as_str().unwrap().contains("id"));
    app.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsampled_callers_are_not_recorded_and_queued_spans_are_flushed_at_stop() {
    let (receiver, received) = start_receiver().await;
    let app = start_yaml(&format!(
        r#"
modules:
  - {{name: web, type: http.server, config: {{address: "127.0.0.1:0"}}}}
  - {{name: routes, type: http.router}}
  - name: tracing
    type: observability.otel
    # A long interval: only the flush at stop can deliver the spans.
    config: {{endpoint: "http://{receiver}", serviceName: svc, exportInterval: 1h}}
pipelines:
  p:
    steps:
      - {{name: s, type: step.set, config: {{values: {{a: 1}}}}}}
triggers:
  http:
    routes:
      - {{path: /p, pipeline: p}}
"#
    ))
    .await;
    let http = client();
    let base = format!("http://{}", server_addr(&app, "web"));
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    http.post(format!("{base}/p"))
        .header("traceparent", format!("00-{unsampled}-b7ad6b7169203331-00"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    http.post(format!("{base}/p"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    // The first interval tick fires at once; after it, nothing is sent until stop.
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.stop(Duration::from_secs(5)).await;
    let spans = received.spans.lock().unwrap().clone();
    assert!(spans.iter().all(|(_, s)| s["traceId"] != unsampled));
    assert_eq!(
        spans.len(),
        2,
        "the sampled run and its step, delivered at stop: {spans:?}"
    );
    assert!(spans.iter().all(|(service, _)| service == "svc"));
}

#[test]
fn configuration_mistakes_are_located() {
    let rendered = wf_tests::invalid_yaml(
        "modules:\n  - name: t\n    type: observability.otel\n    config:\n      endpoint: \"localhost:4318\"\n      exportInterval: soon\n      sampleRatio: 2\n",
    );
    assert!(rendered.contains("is not an http(s) address"), "{rendered}");
    assert!(rendered.contains("app.yaml:6:"), "{rendered}");
    assert!(rendered.contains("sampleRatio"), "{rendered}");
}

/// A route handled by a module rather than a pipeline (`api.handler` firing a transition) still
/// passes the caller's context to the runs it starts: the transition's hook pipeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transition_hook_continues_the_callers_trace() {
    let (receiver, received) = start_receiver().await;
    let app = start_yaml(&format!(
        r#"
modules:
  - {{name: web, type: http.server, config: {{address: "127.0.0.1:0"}}}}
  - {{name: routes, type: http.router}}
  - name: tracing
    type: observability.otel
    config: {{endpoint: "http://{receiver}", exportInterval: 50ms}}
  - {{name: orders-engine, type: statemachine.engine}}
  - name: orders-api
    type: api.handler
    config: {{resourceName: orders, workflowType: order}}
workflows:
  http:
    routes:
      - {{method: POST, path: /api/orders, handler: orders-api}}
      - {{method: POST, path: "/api/orders/{{id}}/transition", handler: orders-api}}
  statemachine:
    engine: orders-engine
    definitions:
      - name: order
        initialState: new
        states: {{new: {{}}, paid: {{isFinal: true}}}}
        transitions:
          pay: {{fromState: new, toState: paid}}
    hooks:
      - transitions: [pay]
        pipeline: check-payment
pipelines:
  check-payment:
    steps:
      - {{name: check, type: step.set, config: {{values: {{checked: true}}}}}}
"#
    ))
    .await;
    let http = client();
    let base = format!("http://{}", server_addr(&app, "web"));
    let created = http
        .post(format!("{base}/api/orders"))
        .json(&json!({"id": "o-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let caller_trace = "0af7651916cd43dd8448eb211c80319c";
    let caller_span = "b7ad6b7169203331";
    let paid = http
        .post(format!("{base}/api/orders/o-1/transition"))
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .json(&json!({"transition": "pay", "data": {}}))
        .send()
        .await
        .unwrap();
    assert!(paid.status().is_success(), "{}", paid.status());
    assert!(
        eventually(Duration::from_secs(10), || async {
            spans_of(&received, caller_trace).len() >= 2
        })
        .await,
        "the hook run and its step are exported in the caller's trace"
    );
    let spans = spans_of(&received, caller_trace);
    let hook = spans.iter().find(|s| s["name"] == "check-payment").unwrap();
    assert_eq!(hook["parentSpanId"], caller_span);
    assert_eq!(hook["kind"], 2);
    app.stop(Duration::from_secs(5)).await;
}
