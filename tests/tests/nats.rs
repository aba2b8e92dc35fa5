//! `messaging.nats` against the real NATS server found through `WF_TEST_NATS_URL` (`.ci/run`
//! sets it; without it these tests say so and pass nothing off as checked).

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::time::Duration;

use wf_tests::broker_contract::{
    delivers_to_an_event_triggered_pipeline, redelivers_and_resumes_without_loss,
};
use wf_tests::{build_yaml, unique_name};

fn nats_url() -> Option<String> {
    let url = std::env::var("WF_TEST_NATS_URL").ok();
    if url.is_none() {
        eprintln!("skipped: WF_TEST_NATS_URL is not set (`.ci/run` sets it)");
    }
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_nats_delivers_to_event_triggered_pipelines() {
    let Some(url) = nats_url() else { return };
    delivers_to_an_event_triggered_pipeline(
        &format!(r#"{{name: bus, type: messaging.nats, config: {{url: "{url}"}}}}"#),
        &unique_name("wfcore"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_redelivers_failures_and_a_restarted_consumer_loses_nothing() {
    let Some(url) = nats_url() else { return };
    let stream = unique_name("WFTEST");
    let subject = format!("{}.jobs", stream.to_lowercase());
    let yaml = format!(
        r#"
modules:
  - name: bus
    type: messaging.nats
    config:
      url: "{url}"
      maxDeliveries: 3
      retryBackoff: 10ms
      jetstream: {{stream: {stream}, subjects: ["{}.>"], storage: memory, ackWait: 5s}}
"#,
        stream.to_lowercase()
    );
    // The second life changes `ackWait`: the server's existing consumer takes it.
    let second = yaml.replace("ackWait: 5s", "ackWait: 7s");
    redelivers_and_resumes_without_loss(&yaml, &second, &subject).await;

    let jetstream = async_nats::jetstream::new(async_nats::connect(url.as_str()).await.unwrap());
    let consumer_info = jetstream
        .get_stream(&stream)
        .await
        .unwrap()
        .consumer_info(format!("worker--{subject}").replace('.', "_"))
        .await
        .unwrap();
    assert_eq!(
        consumer_info.config.ack_wait,
        std::time::Duration::from_secs(7)
    );
    jetstream.delete_stream(&stream).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_a_clear_start_up_error() {
    // A closed port: no server needed for this one.
    let app = build_yaml(
        r#"
modules:
  - {name: bus, type: messaging.nats, config: {url: "nats://127.0.0.1:1", connectTimeout: 2s}}
"#,
    );
    let started = tokio::time::timeout(Duration::from_secs(10), app.start(Duration::from_secs(5)))
        .await
        .expect("start-up must not hang");
    let error = started.unwrap_err().to_string();
    assert!(
        error.contains("cannot reach NATS at `nats://127.0.0.1:1`"),
        "{error}"
    );
}

/// A message delivered twice under one `Nats-Msg-Id` (a publisher's retry on core NATS, which
/// does not deduplicate) starts one run: the event trigger remembers the ids it handled in the
/// run journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_id_seen_before_starts_no_second_run() {
    let Some(url) = nats_url() else { return };
    let subject = unique_name("wfdedup");
    let yaml = format!(
        r#"
modules:
  - {{name: bus, type: messaging.nats, config: {{url: "{url}"}}}}
pipelines:
  on-order:
    trigger: {{type: event, config: {{topic: {subject}}}}}
    steps:
      - {{name: keep, type: step.set, config: {{values: {{seen: true}}}}}}
"#
    );
    let dir = wf_tests::TempDir::new("nats-dedup");
    let app = wf_tests::start_yaml_in(&yaml, &dir.0).await;
    let client = async_nats::connect(url.as_str()).await.unwrap();
    for (id, order) in [("m-1", 1), ("m-1", 1), ("m-2", 2)] {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id);
        client
            .publish_with_headers(
                subject.clone(),
                headers,
                serde_json::json!({"order": order}).to_string().into(),
            )
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    let journal = app
        .state()
        .journal()
        .expect("a data directory keeps a journal");
    let query = wf_engine::journal::RunQuery {
        pipeline: Some("on-order".into()),
        limit: 10,
        ..Default::default()
    };
    let ran_two = wf_tests::eventually(Duration::from_secs(10), || {
        let journal = journal.clone();
        let query = query.clone();
        async move {
            journal.flush().await.unwrap();
            journal.store().list(&query).await.unwrap().runs.len() == 2
        }
    })
    .await;
    assert!(ran_two, "m-1 and m-2 each ran");
    // A moment more: the repeat of m-1 must not have become a third run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    journal.flush().await.unwrap();
    assert_eq!(journal.store().list(&query).await.unwrap().runs.len(), 2);
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}
