//! The scenarios every external broker must pass, run by the NATS and Kafka suites with their
//! own module YAML: delivery to an event-triggered pipeline, and redelivery after a failing
//! handler plus a restart that loses nothing published meanwhile.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use wf_engine::App;
use wf_messaging::MessageBroker;

use crate::{AttemptLog, build_yaml, eventually, running_broker};

/// The broker module named `bus` of a built (not started) app.
pub fn broker(app: &App, name: &str) -> Arc<dyn MessageBroker> {
    app.services()
        .get::<dyn MessageBroker>(name)
        .expect("the app has this broker")
}

/// `bus_module` (one YAML flow mapping, e.g. `{name: bus, type: messaging.kafka, ...}`): three
/// messages on `<prefix>-orders` each start a pipeline that publishes to `<prefix>-seen` once.
pub async fn delivers_to_an_event_triggered_pipeline(bus_module: &str, prefix: &str) {
    let yaml = format!(
        r#"
modules:
  - {bus_module}
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
        .expect("subscribes");
    let app = app.start(Duration::from_secs(20)).await.expect("starts");
    for id in 1..=3 {
        bus.publish(
            &format!("{prefix}-orders"),
            Bytes::from(json!({"id": id}).to_string()),
        )
        .await
        .expect("publishes");
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

/// With `yaml` (a `bus` broker with `maxDeliveries` ≥ 2): a message failing its first attempt
/// is delivered again; then, while the consumer is down, another app publishes two messages,
/// and a second life of the same subscriber (`second_yaml`, the same broker, possibly with
/// changed settings) gets exactly those two.
pub async fn redelivers_and_resumes_without_loss(yaml: &str, second_yaml: &str, topic: &str) {
    let start = |yaml: String, handler: Arc<AttemptLog>| async move {
        let app = build_yaml(&yaml);
        broker(&app, "bus")
            .subscribe(topic, "worker", handler)
            .expect("subscribes");
        app.start(Duration::from_secs(20)).await.expect("starts")
    };

    let handler = Arc::new(AttemptLog::default());
    let running = start(yaml.to_string(), handler.clone()).await;
    let bus = running_broker(&running, "bus");
    let first = json!({"n": 1}).to_string();
    let flaky = json!({"n": 2, "fail_once": true}).to_string();
    for message in [&first, &flaky] {
        // A durable broker accepts the message; what it did with it is checked below.
        bus.publish(topic, Bytes::from(message.clone()))
            .await
            .expect("publishes");
    }
    let done = eventually(Duration::from_secs(30), || async {
        handler.attempts().get(&flaky) == Some(&2)
    })
    .await;
    assert!(done, "no redelivery: {:?}", handler.attempts());
    assert_eq!(handler.attempts()[&first], 1);
    assert_eq!(running.stop(Duration::from_secs(10)).await, 0);

    // While the consumer is down, another app (no subscriptions) publishes two more.
    let publisher = build_yaml(yaml)
        .start(Duration::from_secs(20))
        .await
        .expect("starts");
    let bus = running_broker(&publisher, "bus");
    let while_down = [json!({"n": 3}).to_string(), json!({"n": 4}).to_string()];
    for message in &while_down {
        bus.publish(topic, Bytes::from(message.clone()))
            .await
            .expect("publishes");
    }
    assert_eq!(publisher.stop(Duration::from_secs(10)).await, 0);

    let handler = Arc::new(AttemptLog::default());
    let running = start(second_yaml.to_string(), handler.clone()).await;
    let done = eventually(Duration::from_secs(30), || async {
        handler.attempts().len() == 2
    })
    .await;
    assert!(done, "after restart saw {:?}", handler.attempts());
    // Stopping finishes the messages in hand: anything else delivered is in the log by then.
    assert_eq!(running.stop(Duration::from_secs(10)).await, 0);
    let attempts = handler.attempts();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    for message in &while_down {
        assert_eq!(attempts[message], 1, "{attempts:?}");
    }
}
