//! What the host keeps on a component's behalf (issue #29): a component that floods state,
//! events, logs and error text gets typed `limit-exceeded` answers naming the quota and its
//! YAML key, host memory stays bounded and the host keeps serving; runs have a deadline and a
//! fuel budget across all their steps; traps say what they were; the guest learns its step's
//! name; an outbound call times out before the call does; state survives restarts in the
//! app's database; and `metrics.collector` shows it all.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::time::Duration;

use serde_json::{Map, Value, json};
use wf_engine::{PipelineError, RunningApp};
use wf_tests::{TempDir, client, repo_root, rss_kib, server_addr, start_yaml};

fn adversary_app(data: &TempDir, extra_modules: &str, limits: &str) -> String {
    format!(
        r#"
modules:
  - {{name: web, type: http.server, config: {{address: "127.0.0.1:0", writeTimeout: 1s}}}}
  - {{name: routes, type: http.router}}
  - {{name: bus, type: messaging.broker}}
  - {{name: metrics, type: metrics.collector}}
{extra_modules}
  - name: wasm
    type: wasm.components
    config:
      data_dir: "{data}"
      components:
        adversary:
          capabilities: {{state: [flood, counts], events: ["flood.*"], http: ["127.0.0.1"]}}
          limits: {{{limits}}}
  - name: adversary
    type: dynamic.component
    config: {{source: "{source}", componentId: adversary}}
pipelines:
  attack:
    steps:
      - {{name: attack, type: step.wasm, config: {{component: adversary}}}}
  spin:
    max_fuel: 30000000
    max_steps: 1000000
    steps:
      - {{name: again, type: step.wasm, config: {{component: adversary, input: {{mode: branch, arg: again}}}}}}
  burn-fuel:
    max_fuel: 300000000
    steps:
      - {{name: burn, type: step.wasm, config: {{component: adversary, input: {{mode: loop}}}}}}
  burn-time:
    timeout: 300ms
    max_fuel: 10000000000000
    steps:
      - {{name: burn, type: step.wasm, config: {{component: adversary, input: {{mode: loop}}}}}}
workflows:
  http:
    routes:
      - method: POST
        path: /burn
        pipeline:
          max_fuel: 10000000000000
          steps:
            - {{name: burn, type: step.wasm, config: {{component: adversary, input: {{mode: loop}}}}}}
      - method: GET
        path: /ping
        steps:
          - {{name: ok, type: step.set, config: {{values: {{pong: true}}}}}}
"#,
        data = data.0.display(),
        source = repo_root().join("plugins/dist/adversary.wasm").display(),
    )
}

async fn attack(app: &RunningApp, input: Value) -> Result<Map<String, Value>, PipelineError> {
    run(app, "attack", input).await
}

async fn run(
    app: &RunningApp,
    pipeline: &str,
    input: Value,
) -> Result<Map<String, Value>, PipelineError> {
    let pipeline = app.state().pipelines().get(pipeline).unwrap();
    pipeline
        .run(input.as_object().cloned().unwrap(), Default::default())
        .await
        .map(|outcome| outcome.context.current)
}

/// The error of a run that must fail, with what its message must say.
async fn refused(app: &RunningApp, input: Value, says: &[&str]) -> String {
    let error = attack(app, input.clone()).await.unwrap_err();
    for needle in says {
        assert!(error.message.contains(needle), "{input}: {error}");
    }
    error.message
}

/// What floods may leave resident: one full bucket (16 MiB) and the instance pool's memory,
/// with slack. Before the quotas, one flood request left ~600 MiB.
const FLOOD_MARGIN_KIB: u64 = 128 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_get_typed_refusals_while_memory_stays_bounded() {
    let data = TempDir::new("quotas");
    let app = start_yaml(&adversary_app(&data, "", "")).await;
    // Warm: the component is compiled and instantiated once.
    let echoed = attack(&app, json!({"mode": "echo"})).await.unwrap();
    // The guest learns its pipeline and step (`invocation.step` was empty: #29).
    assert_eq!(
        (echoed["step"].as_str(), echoed["pipeline"].as_str()),
        (Some("attack"), Some("attack"))
    );
    let before = rss_kib();

    // State: a value over the limit; a bucket past its bytes; a bucket past its keys.
    for _ in 0..3 {
        refused(
            &app,
            json!({"mode": "flood-state", "arg": "flood", "kib": 1024, "count": 20}),
            &["limit-exceeded: state", "`limits.state_value_kib`"],
        )
        .await;
    }
    refused(
        &app,
        json!({"mode": "flood-state", "arg": "flood", "kib": 200, "count": 200}),
        &[
            "limit-exceeded: state",
            "`limits.state_bucket_mib`",
            "over its 16 MiB limit",
        ],
    )
    .await;
    refused(
        &app,
        json!({"mode": "flood-state", "arg": "counts", "kib": 0, "count": 10_001}),
        &["limit-exceeded: state", "`limits.state_keys`"],
    )
    .await;
    // Events: a payload over the limit; too many publishes in one call.
    refused(
        &app,
        json!({"mode": "flood-events", "arg": "flood.big", "kib": 1024}),
        &["limit-exceeded: events", "`limits.event_payload_kib`"],
    )
    .await;
    refused(
        &app,
        json!({"mode": "flood-events", "arg": "flood.many", "kib": 1, "count": 1000}),
        &["limit-exceeded: events", "`limits.events_per_call`"],
    )
    .await;
    // Logs: the call succeeds; what is over the quota is dropped and counted.
    attack(
        &app,
        json!({"mode": "flood-logs", "arg": "\nforged line ", "kib": 0, "count": 100_000}),
    )
    .await
    .unwrap();
    attack(
        &app,
        json!({"mode": "flood-logs", "arg": "big ", "kib": 1024, "count": 50}),
    )
    .await
    .unwrap();
    // Error text and branch targets are cut.
    let message = refused(
        &app,
        json!({"mode": "huge-error", "kib": 20_480}),
        &["bytes cut"],
    )
    .await;
    assert!(message.len() < 8 << 10, "{} bytes", message.len());
    let branch = "x".repeat(100_000);
    let message = refused(
        &app,
        json!({"mode": "branch", "arg": branch}),
        &["step name of 100000 bytes"],
    )
    .await;
    assert!(message.len() < 1 << 10, "{} bytes", message.len());

    let after = rss_kib();
    assert!(
        after <= before + FLOOD_MARGIN_KIB,
        "resident memory grew from {before} KiB to {after} KiB"
    );
    // The host keeps serving.
    let addr = server_addr(&app, "web");
    let ping = client()
        .get(format!("http://{addr}/ping"))
        .send()
        .await
        .unwrap();
    assert_eq!(ping.status(), 200);

    // `metrics.collector` shows what was held, published, dropped and refused.
    let metrics = client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        // 100,000 lines: 100 kept; 50 lines of 1 MiB: each cut to 4 KiB, 15 fit in 64 KiB.
        "workflow_component_log_messages_dropped_total{component=\"adversary\"} 99935",
        "workflow_component_quota_refusals_total{component=\"adversary\",quota=\"state_value_kib\"} 3",
        "workflow_component_quota_refusals_total{component=\"adversary\",quota=\"state_bucket_mib\"} 1",
        "workflow_component_quota_refusals_total{component=\"adversary\",quota=\"events_per_call\"} 1",
        "workflow_component_state_keys{bucket=\"counts\"} 10000",
    ] {
        assert!(metrics.contains(line), "no `{line}` in:\n{metrics}");
    }
    let state_bytes: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("workflow_component_state_bytes{bucket=\"flood\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        state_bytes <= 16 << 20 && state_bytes > 15 << 20,
        "{state_bytes}"
    );
    assert!(metrics.contains("workflow_component_published_bytes_total{component=\"adversary\"}"));
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_stop_at_their_budget_as_one_typed_error() {
    let data = TempDir::new("budgets");
    // Per-call fuel far above the run's, so the run's budgets are what stop the loops (a
    // loop burns billions of fuel a second).
    let app = start_yaml(&adversary_app(&data, "", "fuel: 100000000000000")).await;
    // A step that branches to itself: the run's fuel ends it (it ran until `max_steps` × the
    // per-call limits: #29).
    let error = run(&app, "spin", json!({})).await.unwrap_err();
    assert!(
        error.message.contains("limit-exceeded: run-cpu") && error.message.contains("`max_fuel`"),
        "{error}"
    );
    // One call that would burn more than the run has left is cut at the run's fuel...
    let error = run(&app, "burn-fuel", json!({})).await.unwrap_err();
    assert!(error.message.contains("limit-exceeded: run-cpu"), "{error}");
    // ... or at the run's deadline.
    let error = run(&app, "burn-time", json!({})).await.unwrap_err();
    assert!(
        error.message.contains("limit-exceeded: run-time")
            && error.message.contains("the pipeline's `timeout`"),
        "{error}"
    );
    // An HTTP run ends at the server's `writeTimeout` with its own answer (504), not cut off
    // by the server (503).
    let addr = server_addr(&app, "web");
    let response = client()
        .post(format!("http://{addr}/burn"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504, "{:?}", response.text().await);
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traps_say_what_they_were_and_outbound_calls_end_before_the_call() {
    let data = TempDir::new("traps");
    let app = start_yaml(&adversary_app(&data, "", "timeout: 1s")).await;
    refused(
        &app,
        json!({"mode": "recurse"}),
        &["crashed", "stack overflow"],
    )
    .await;
    let panicked = refused(
        &app,
        json!({"mode": "panic"}),
        &["crashed", "unreachable", "stderr: about to fail"],
    )
    .await;
    assert!(
        !panicked.contains("error while executing at wasm backtrace"),
        "{panicked}"
    );

    // A server that accepts and never answers: the component's call gets `unavailable` in
    // time to handle it (it was killed as a time-limit breach: #29).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", silent.local_addr().unwrap());
    let error = attack(&app, json!({"mode": "http", "arg": url}))
        .await
        .unwrap_err();
    assert_eq!(error.kind, wf_engine::ErrorKind::Unavailable, "{error}");
    assert!(
        error.message.contains("timed out") && !error.message.contains("limit-exceeded"),
        "{error}"
    );
    drop(silent);
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_lives_in_the_apps_database_and_survives_a_restart() {
    let data = TempDir::new("state-db");
    let db = format!(
        "  - {{name: db, type: database.workflow, config: {{dsn: \"{}\"}}}}",
        data.0.join("app.db").display()
    );
    let yaml = adversary_app(&data, &db, "");
    let app = start_yaml(&yaml).await;
    let wrote = attack(&app, json!({"mode": "state", "arg": "counts"}))
        .await
        .unwrap();
    assert_eq!(wrote["value"], 1);
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);

    let app = start_yaml(&yaml).await;
    let read = attack(&app, json!({"mode": "state-get", "arg": "counts"}))
        .await
        .unwrap();
    assert_eq!(read["value"], 1, "{read:?}");
    // Its quotas hold there too.
    refused(
        &app,
        json!({"mode": "flood-state", "arg": "flood", "kib": 1024}),
        &["`limits.state_value_kib`"],
    )
    .await;
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}
