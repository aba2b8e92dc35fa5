//! `messaging.kafka` against the real Kafka-protocol broker found through
//! `WF_TEST_KAFKA_BROKERS` (`.ci/run` starts one and sets it; without it these tests say so and
//! pass nothing off as checked).

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::time::Duration;

use wf_tests::broker_contract::{
    delivers_to_an_event_triggered_pipeline, redelivers_and_resumes_without_loss,
};
use wf_tests::{build_yaml, unique_name};

fn kafka_brokers() -> Option<String> {
    let brokers = std::env::var("WF_TEST_KAFKA_BROKERS").ok();
    if brokers.is_none() {
        eprintln!("skipped: WF_TEST_KAFKA_BROKERS is not set (`.ci/run` sets it)");
    }
    brokers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_delivers_to_event_triggered_pipelines() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    delivers_to_an_event_triggered_pipeline(
        &format!(r#"{{name: bus, type: messaging.kafka, config: {{brokers: ["{brokers}"]}}}}"#),
        &unique_name("wf-kafka-"),
    )
    .await;
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
    redelivers_and_resumes_without_loss(&yaml, &yaml, &topic).await;
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
