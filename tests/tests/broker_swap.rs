//! The example app `example/orders` runs unchanged on the in-memory broker, NATS and Kafka:
//! only the imported broker module differs. The NATS and Kafka runs need the servers found
//! through `WF_TEST_NATS_URL` and `WF_TEST_KAFKA_BROKERS` (`.ci/run` provides both).

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::time::Duration;

use serde_json::Value;
use wf_config::load_files;
use wf_engine::{build, validate};
use wf_tests::{
    TempDir, client, eventually, example_vars, http_receiver, repo_root, server_addr, unique_name,
};

/// Places three orders through HTTP and waits for each one's fulfilment webhook.
async fn orders_flow(file: &str, extra: &[(&str, String)]) {
    let (receiver, url) = http_receiver(&[]).await;
    let dead_letters = TempDir::new("orders-dead-letters");
    let mut vars = example_vars();
    vars.insert(
        "ORDERS_DEAD_LETTERS".into(),
        dead_letters.0.display().to_string(),
    );
    vars.insert("ORDERS_ADDRESS".into(), "127.0.0.1:0".into());
    vars.insert("ORDERS_WEBHOOK_URL".into(), url);
    for (k, v) in extra {
        vars.insert((*k).to_string(), v.clone());
    }
    let path = repo_root().join("example/orders").join(file);
    let registry = wf_host::registry().unwrap();
    let validated = validate(load_files(&[path], &vars), &registry)
        .unwrap_or_else(|i| panic!("{}", i.diagnostics.render(&i.config.sources)));
    let app = build(&validated, &registry).unwrap();
    let app = app.start(Duration::from_secs(20)).await.unwrap();
    let base = format!("http://{}", server_addr(&app, "web"));

    let http = client();
    let mut ids = Vec::new();
    for (sku, quantity) in [("A-1", 2), ("B-7", 1), ("C-3", 5)] {
        let response = http
            .post(format!("{base}/orders"))
            .json(&serde_json::json!({"sku": sku, "quantity": quantity}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{file}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "accepted");
        ids.push(body["order_id"].as_str().unwrap().to_string());
    }
    // The caller's mistake is a 400, and publishes nothing.
    let bad = http
        .post(format!("{base}/orders"))
        .json(&serde_json::json!({"sku": "A-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400, "{file}");

    let all_fulfilled = eventually(Duration::from_secs(30), || async {
        let posted = receiver.json_bodies();
        ids.iter().all(|id| {
            posted
                .iter()
                .any(|p| p["order_id"] == id.as_str() && p["status"] == "fulfilled")
        })
    })
    .await;
    assert!(
        all_fulfilled,
        "{file}: webhooks received {:?}",
        receiver.json_bodies()
    );
    assert_eq!(app.stop(Duration::from_secs(10)).await, 0, "{file}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orders_example_runs_on_the_in_memory_broker() {
    orders_flow("memory.yaml", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orders_example_runs_on_nats() {
    let Ok(url) = std::env::var("WF_TEST_NATS_URL") else {
        eprintln!("skipped: WF_TEST_NATS_URL is not set (`.ci/run` sets it)");
        return;
    };
    let stream = unique_name("ORDERS");
    orders_flow(
        "nats.yaml",
        &[("NATS_URL", url.clone()), ("ORDERS_STREAM", stream.clone())],
    )
    .await;
    let client = async_nats::connect(url.as_str()).await.unwrap();
    async_nats::jetstream::new(client)
        .delete_stream(&stream)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orders_example_runs_on_kafka() {
    let Ok(brokers) = std::env::var("WF_TEST_KAFKA_BROKERS") else {
        eprintln!("skipped: WF_TEST_KAFKA_BROKERS is not set (`.ci/run` sets it)");
        return;
    };
    orders_flow(
        "kafka.yaml",
        &[
            ("KAFKA_BROKERS", brokers),
            ("ORDERS_GROUP", unique_name("orders")),
        ],
    )
    .await;
}
