//! `metrics.collector` end to end: requests per route pattern, pipeline runs and steps appear
//! in the Prometheus text served at `/metrics`; the original's order-processing example (which
//! needs the collector) starts and serves.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::time::Duration;

use wf_tests::{build_on_loopback, client, invalid_yaml, seed_examples, server_addr, start_yaml};

const APP: &str = r#"
modules:
  - name: web
    type: http.server
    config: {address: "127.0.0.1:0"}
  - name: routes
    type: http.router
  - name: metrics
    type: metrics.collector
    config: {namespace: shop}
workflows:
  http:
    routes:
      - method: GET
        path: "/orders/{id}"
        steps:
          - {name: found, type: step.set, config: {values: {id: "{{ id }}"}}}
      - method: POST
        path: /fail
        steps:
          - {name: check, type: step.validate, config: {required_fields: [card]}}
"#;

/// The value of the sample whose line starts with `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_runs_and_steps_are_counted_by_route_pattern() {
    let app = start_yaml(APP).await;
    let base = format!("http://{}", server_addr(&app, "web"));
    let http = client();
    for id in ["1", "2", "3"] {
        let res = http
            .get(format!("{base}/orders/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    assert_eq!(
        http.post(format!("{base}/fail"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        http.get(format!("{base}/nowhere"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let res = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        res.headers()
    );
    let text = res.text().await.unwrap();
    let count =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert_eq!(
        count(r#"shop_http_requests_total{method="GET",path="/orders/{id}",status_code="200"}"#),
        3.0
    );
    assert_eq!(
        count(r#"shop_http_requests_total{method="POST",path="/fail",status_code="400"}"#),
        1.0
    );
    // Unmatched paths share one series: a scanner cannot create a series per URL.
    assert_eq!(
        count(r#"shop_http_requests_total{method="GET",path="",status_code="404"}"#),
        1.0
    );
    assert_eq!(
        count(r#"shop_http_request_duration_seconds_count{method="GET",path="/orders/{id}"}"#),
        3.0
    );
    assert_eq!(
        count(
            r#"shop_workflow_executions_total{action="run",status="completed",workflow_type="http GET /orders/{id}"}"#
        ),
        3.0
    );
    assert_eq!(
        count(
            r#"shop_workflow_executions_total{action="run",status="failed",workflow_type="http POST /fail"}"#
        ),
        1.0
    );
    assert_eq!(
        count(
            r#"shop_step_executions_total{pipeline="http POST /fail",status="failed",step_type="step.validate"}"#
        ),
        1.0
    );
    assert_eq!(
        count(r#"shop_active_workflows{workflow_type="http GET /orders/{id}"}"#),
        0.0
    );
    assert!(!text.contains("/orders/1"), "raw paths never become labels");
    promtool_accepts(&text);
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

/// `promtool check metrics` (from Prometheus; `.ci/run` installs it) finds nothing to say of
/// the exposition: syntax, types, help texts and names.
fn promtool_accepts(text: &str) {
    use std::io::Write as _;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        assert!(
            std::env::var("WF_TEST_REQUIRE_PROMTOOL").is_err(),
            "promtool is required here (Debian package `prometheus`)"
        );
        eprintln!("promtool is not installed: skipping `promtool check metrics`");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_names_and_groups_are_located() {
    let text = invalid_yaml(
        "modules:\n  - {name: r, type: http.router}\n  - name: m\n    type: metrics.collector\n    config: {namespace: 9lives, enabledMetrics: [http, disk]}\n",
    );
    assert!(text.contains("a namespace is letters"), "{text}");
    assert!(text.contains("unknown metric group `disk`"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_processing_example_starts_and_reports_its_requests() {
    let registry = wf_host::registry().unwrap();
    let app = build_on_loopback(
        &seed_examples().join("order-processing-pipeline.yaml"),
        &registry,
    );
    let app = app.start(Duration::from_secs(10)).await.unwrap();
    let base = format!("http://{}", server_addr(&app, "order-server"));
    let http = client();
    let res = http
        .post(format!("{base}/api/orders"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        sample(
            &text,
            r#"workflow_http_requests_total{method="POST",path="/api/orders",status_code="200"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}
