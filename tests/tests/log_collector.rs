//! `log.collector` over HTTP with the tracing layer `wf-host` installs, and the original's
//! `dependency-injection-example.yaml` (a file server, a log collector, metrics, a cache, a
//! database, handlers and messaging) running as written.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::time::Duration;

use serde_json::{Value, json};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use wf_engine::Extensions;
use wf_tests::{build_on_loopback, client, seed_examples, server_addr, start_yaml};

async fn logs(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = http.get(url).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_entries_are_served_and_filtered() {
    // What `wf-host` installs (the ring is per process, so this binary's one test uses it).
    let _ = tracing_subscriber::registry()
        .with(wf_http::logs::layer())
        .try_init();
    let app = start_yaml(
        r#"
modules:
  - {name: web, type: http.server, config: {address: "127.0.0.1:0"}}
  - {name: routes, type: http.router}
  - {name: logger-service, type: log.collector, config: {level: info, format: json, maxEntries: 50}}
pipelines:
  greet:
    steps:
      - {name: hello, type: step.log, config: {level: info, message: "hello {{ .who }}"}}
      - {name: careful, type: step.log, config: {level: warn, message: "careful, {{ .who }}"}}
      - {name: detail, type: step.log, config: {level: debug, message: "not kept"}}
"#,
    )
    .await;
    let pipeline = app.state().pipelines().get("greet").unwrap();
    pipeline
        .run(
            json!({"who": "ada"}).as_object().cloned().unwrap(),
            Extensions::default(),
        )
        .await
        .unwrap();
    let http = client();
    let base = format!("http://{}/logs", server_addr(&app, "web"));

    let (status, all) = logs(&http, &base).await;
    assert_eq!(status, 200);
    assert_eq!(all["config"]["logLevel"], "info");
    let messages: Vec<&str> = all["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(messages.contains(&"hello ada"), "{messages:?}");
    assert!(messages.contains(&"careful, ada"));
    assert!(
        !messages.contains(&"not kept"),
        "below the collector's level"
    );
    assert_eq!(all["count"], all["entries"].as_array().unwrap().len());
    let hello = all["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["message"] == "hello ada")
        .unwrap();
    assert_eq!(hello["level"], "info");
    assert_eq!(hello["fields"]["step"], "greet.hello");
    assert!(hello["time"].as_str().unwrap().ends_with('Z'));

    let (_, warnings) = logs(&http, &format!("{base}?level=warn")).await;
    assert!(
        warnings["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["level"] == "warn" || e["level"] == "error")
    );
    assert!(warnings["count"].as_u64().unwrap() >= 1);
    let (_, one) = logs(&http, &format!("{base}?module=careful&limit=1")).await;
    assert_eq!(one["count"], 1);
    assert_eq!(one["entries"][0]["message"], "careful, ada");
    let (status, _) = logs(&http, &format!("{base}?level=loud")).await;
    assert_eq!(status, 400);
    let (status, _) = logs(&http, &format!("{base}?limit=0")).await;
    assert_eq!(status, 400);
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_dependency_injection_example_runs() {
    let registry = wf_host::registry().unwrap();
    let app = build_on_loopback(
        &seed_examples().join("dependency-injection-example.yaml"),
        &registry,
    )
    .start(Duration::from_secs(10))
    .await
    .unwrap();
    let http = client();
    let base = format!("http://{}", server_addr(&app, "http-server"));
    for path in ["/api/users", "/api/products", "/api/orders"] {
        let response = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let (status, entries) = logs(&http, &format!("{base}/logs")).await;
    assert_eq!(
        (status, entries["config"]["outputFormat"].as_str()),
        (200, Some("json"))
    );
    // The file server serves its root, the example's own directory.
    let file = http
        .get(format!("{base}/dependency-injection-example.yaml"))
        .send()
        .await
        .unwrap();
    assert_eq!(file.status(), 200);
    assert!(file.text().await.unwrap().contains("cache-service"));
    // Its cache is there for steps to use.
    let services = app.state().services().unwrap();
    let cache = services
        .get::<dyn wf_cache::Cache>("cache-service")
        .unwrap();
    cache.set("k", &json!(1), None).await.unwrap();
    assert_eq!(cache.get("k").await.unwrap(), Some(json!(1)));
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}
