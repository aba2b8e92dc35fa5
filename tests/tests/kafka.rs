//! `messaging.kafka` against the real Kafka-protocol broker found through
//! `WF_TEST_KAFKA_BROKERS` (`.ci/run` starts one and sets it; without it these tests say so and
//! pass nothing off as checked).

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use wf_engine::App;
use wf_messaging::MessageBroker;
use wf_tests::{AttemptLog, build_yaml, eventually, unique_name};

fn kafka_brokers() -> Option<String> {
    let brokers = std::env::var("WF_TEST_KAFKA_BROKERS").ok();
    if brokers.is_none() {
        eprintln!("skipped: WF_TEST_KAFKA_BROKERS is not set (`.ci/run` sets it)");
    }
    brokers
}

fn broker(app: &App, name: &str) -> Arc<dyn MessageBroker> {
    app.services().get::<dyn MessageBroker>(name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_delivers_to_event_triggered_pipelines() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let prefix = unique_name("wf-kafka-");
    let yaml = format!(
        r#"
modules:
  - {{name: bus, type: messaging.kafka, config: {{brokers: ["{brokers}"]}}}}
pipelines:
  on-order:
    trigger: {{type: event, config: {{topic: {prefix}-orders}}}}
    steps:
      - {{name: out, type: step.publish, config: {{topic: {prefix}-seen, payload: {{id: "{{{{ .id }}}}"}}}}}}
"#
    );
    let app = build_yaml(&yaml);
    let bus = broker(&app, "bus");
    let seen = Arc::new(AttemptLog::default());
    bus.subscribe(&format!("{prefix}-seen"), "test", seen.clone())
        .unwrap();
    let app = app.start(Duration::from_secs(20)).await.unwrap();
    for id in 1..=3 {
        bus.publish(
            &format!("{prefix}-orders"),
            Bytes::from(json!({"id": id}).to_string()),
        )
        .await
        .unwrap();
    }
    let done = eventually(Duration::from_secs(30), || async {
        seen.attempts().len() == 3
    })
    .await;
    assert!(done, "saw {:?}", seen.attempts());
    for id in 1..=3 {
        assert_eq!(seen.attempts()[&json!({"id": id}).to_string()], 1);
    }
    assert_eq!(app.stop(Duration::from_secs(10)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_redelivers_failures_and_a_restarted_group_loses_nothing() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let topic = unique_name("wf-kafka-jobs-");
    let yaml = format!(
        r#"
modules:
  - name: bus
    type: messaging.kafka
    config: {{brokers: ["{brokers}"], groupId: {topic}, maxDeliveries: 3, retryBackoff: 10ms}}
"#
    );

    // First life: one message fails its first attempt and is delivered again.
    let app = build_yaml(&yaml);
    let handler = Arc::new(AttemptLog::default());
    broker(&app, "bus")
        .subscribe(&topic, "worker", handler.clone())
        .unwrap();
    let running = app.start(Duration::from_secs(20)).await.unwrap();
    let bus = running
        .state()
        .services()
        .unwrap()
        .get::<dyn MessageBroker>("bus")
        .unwrap();
    let first = json!({"n": 1}).to_string();
    let flaky = json!({"n": 2, "fail_once": true}).to_string();
    for message in [&first, &flaky] {
        bus.publish(&topic, Bytes::from(message.clone()))
            .await
            .unwrap();
    }
    let done = eventually(Duration::from_secs(30), || async {
        handler.attempts().get(&flaky) == Some(&2)
    })
    .await;
    assert!(done, "no redelivery: {:?}", handler.attempts());
    assert_eq!(handler.attempts()[&first], 1);
    assert_eq!(running.stop(Duration::from_secs(10)).await, 0);

    // While the consumer is down, another app publishes two more.
    let publisher = build_yaml(&yaml)
        .start(Duration::from_secs(20))
        .await
        .unwrap();
    let while_down = [json!({"n": 3}).to_string(), json!({"n": 4}).to_string()];
    let bus = publisher
        .state()
        .services()
        .unwrap()
        .get::<dyn MessageBroker>("bus")
        .unwrap();
    for message in &while_down {
        bus.publish(&topic, Bytes::from(message.clone()))
            .await
            .unwrap();
    }
    assert_eq!(publisher.stop(Duration::from_secs(10)).await, 0);

    // Second life, same group: exactly the two it missed, from the committed offsets.
    let app = build_yaml(&yaml);
    let handler = Arc::new(AttemptLog::default());
    broker(&app, "bus")
        .subscribe(&topic, "worker", handler.clone())
        .unwrap();
    let running = app.start(Duration::from_secs(20)).await.unwrap();
    let done = eventually(Duration::from_secs(30), || async {
        handler.attempts().len() == 2
    })
    .await;
    assert!(done, "after restart saw {:?}", handler.attempts());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let attempts = handler.attempts();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    for message in &while_down {
        assert_eq!(attempts[message], 1, "{attempts:?}");
    }
    assert_eq!(running.stop(Duration::from_secs(10)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_is_a_clear_start_up_error() {
    // A closed port: no broker needed for this one.
    let app = build_yaml(
        r#"
modules:
  - {name: bus, type: messaging.kafka, config: {brokers: ["127.0.0.1:1"], connectTimeout: 2s}}
"#,
    );
    let started = tokio::time::timeout(Duration::from_secs(20), app.start(Duration::from_secs(5)))
        .await
        .expect("start-up must not hang");
    let error = started.unwrap_err().to_string();
    assert!(
        error.contains("cannot reach Kafka at `127.0.0.1:1`"),
        "{error}"
    );
}
