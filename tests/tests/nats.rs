//! `messaging.nats` against the real NATS server found through `WF_TEST_NATS_URL` (`.ci/run`
//! sets it; without it these tests say so and pass nothing off as checked).

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use wf_engine::App;
use wf_messaging::MessageBroker;
use wf_tests::{AttemptLog, build_yaml, eventually, unique_name};

fn nats_url() -> Option<String> {
    let url = std::env::var("WF_TEST_NATS_URL").ok();
    if url.is_none() {
        eprintln!("skipped: WF_TEST_NATS_URL is not set (`.ci/run` sets it)");
    }
    url
}

fn broker(app: &App, name: &str) -> Arc<dyn MessageBroker> {
    app.services().get::<dyn MessageBroker>(name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_nats_delivers_to_event_triggered_pipelines() {
    let Some(url) = nats_url() else { return };
    let prefix = unique_name("wfcore");
    let yaml = format!(
        r#"
modules:
  - {{name: bus, type: messaging.nats, config: {{url: "{url}"}}}}
pipelines:
  on-order:
    trigger: {{type: event, config: {{topic: {prefix}.orders}}}}
    steps:
      - {{name: out, type: step.publish, config: {{topic: {prefix}.seen, payload: {{id: "{{{{ .id }}}}"}}}}}}
"#
    );
    let app = build_yaml(&yaml);
    let bus = broker(&app, "bus");
    let seen = Arc::new(AttemptLog::default());
    bus.subscribe(&format!("{prefix}.seen"), "test", seen.clone())
        .unwrap();
    let app = app.start(Duration::from_secs(10)).await.unwrap();
    for id in 1..=3 {
        bus.publish(
            &format!("{prefix}.orders"),
            Bytes::from(json!({"id": id}).to_string()),
        )
        .await
        .unwrap();
    }
    let done = eventually(Duration::from_secs(5), || async {
        seen.attempts().len() == 3
    })
    .await;
    assert!(done, "saw {:?}", seen.attempts());
    for id in 1..=3 {
        assert_eq!(seen.attempts()[&json!({"id": id}).to_string()], 1);
    }
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
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
    let client = async_nats::connect(url.as_str()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);

    // First life: one message fails its first attempt and is redelivered by the server.
    let app = build_yaml(&yaml);
    let handler = Arc::new(AttemptLog::default());
    broker(&app, "bus")
        .subscribe(&subject, "worker", handler.clone())
        .unwrap();
    let running = app.start(Duration::from_secs(10)).await.unwrap();
    let bus = running
        .state()
        .services()
        .unwrap()
        .get::<dyn MessageBroker>("bus")
        .unwrap();
    let first = json!({"n": 1}).to_string();
    let flaky = json!({"n": 2, "fail_once": true}).to_string();
    for message in [&first, &flaky] {
        let delivery = bus
            .publish(&subject, Bytes::from(message.clone()))
            .await
            .unwrap();
        assert_eq!(delivery.queued, 1);
    }
    let done = eventually(Duration::from_secs(10), || async {
        handler.attempts().get(&flaky) == Some(&2)
    })
    .await;
    assert!(done, "no redelivery: {:?}", handler.attempts());
    assert_eq!(handler.attempts()[&first], 1);
    assert_eq!(running.stop(Duration::from_secs(5)).await, 0);

    // While the app is down, two more messages arrive (published by another client).
    let while_down = [json!({"n": 3}).to_string(), json!({"n": 4}).to_string()];
    for message in &while_down {
        jetstream
            .publish(subject.clone(), Bytes::from(message.clone()))
            .await
            .unwrap()
            .await
            .unwrap();
    }

    // Second life, same durable subscriber, `ackWait` changed: it gets exactly the two it
    // missed, and the server's consumer takes the new setting.
    let app = build_yaml(&yaml.replace("ackWait: 5s", "ackWait: 7s"));
    let handler = Arc::new(AttemptLog::default());
    broker(&app, "bus")
        .subscribe(&subject, "worker", handler.clone())
        .unwrap();
    let running = app.start(Duration::from_secs(10)).await.unwrap();
    let done = eventually(Duration::from_secs(10), || async {
        handler.attempts().len() == 2
    })
    .await;
    assert!(done, "after restart saw {:?}", handler.attempts());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let attempts = handler.attempts();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    for message in &while_down {
        assert_eq!(attempts[message], 1, "{attempts:?}");
    }
    let consumer_info = jetstream
        .get_stream(&stream)
        .await
        .unwrap()
        .consumer_info(format!("worker--{subject}").replace('.', "_"))
        .await
        .unwrap();
    assert_eq!(consumer_info.config.ack_wait, Duration::from_secs(7));
    assert_eq!(running.stop(Duration::from_secs(5)).await, 0);
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
