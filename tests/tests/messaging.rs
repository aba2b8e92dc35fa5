//! Messaging end to end on the in-memory broker: `event` triggers starting pipelines (event
//! filter, params, redelivery, dead letters), lifecycle events, and the original's handler
//! chains.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use wf_engine::Extensions;
use wf_messaging::MessageBroker;
use wf_messaging::handler::LoggingHandler;
use wf_tests::{
    build_on_loopback, collect, eventually, invalid_yaml, running_broker, seed_examples, start_yaml,
};

async fn publish(broker: &Arc<dyn MessageBroker>, topic: &str, payload: &str) {
    broker
        .publish(topic, Bytes::from(payload.to_string()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_triggers_start_pipelines_and_dead_letter_what_they_cannot_run() {
    let app = start_yaml(
        r#"
modules:
  - name: bus
    type: messaging.broker
    config: {maxDeliveries: 3, retryBackoff: 1ms, deadLetterTopic: dead}
pipelines:
  on-order:
    trigger:
      type: event
      config: {topic: orders, event: order.created, params: {source: shop}}
    steps:
      - {name: check, type: step.validate, config: {required_fields: [id]}}
      - name: out
        type: step.publish
        config: {topic: seen, payload: {id: "{{ .id }}", source: "{{ .source }}"}}
"#,
    )
    .await;
    let bus = running_broker(&app, "bus");
    let seen = collect(&bus, &["seen", "dead"]);

    publish(&bus, "orders", r#"{"type": "order.created", "id": 1}"#).await;
    // Another event type on the same topic starts nothing.
    publish(&bus, "orders", r#"{"type": "order.cancelled", "id": 2}"#).await;
    // The original's `eventType` spelling is matched too.
    publish(&bus, "orders", r#"{"eventType": "order.created", "id": 3}"#).await;
    // Not JSON: dead-lettered at once. A run that fails (no `id`): redelivered, then
    // dead-lettered after the third attempt.
    publish(&bus, "orders", "not json").await;
    publish(&bus, "orders", r#"{"type": "order.created"}"#).await;

    let runs = seen.wait_for("seen", 2).await;
    assert_eq!(
        runs,
        [
            json!({"id": 1, "source": "shop"}),
            json!({"id": 3, "source": "shop"}),
        ]
    );
    let dead = seen.wait_for("dead", 2).await;
    assert_eq!(dead[0]["payload"], "not json");
    assert_eq!(dead[0]["attempts"], 1);
    assert_eq!(dead[0]["subscriber"], "pipeline:on-order");
    assert!(
        dead[0]["error"].as_str().unwrap().contains("is not JSON"),
        "{}",
        dead[0]
    );
    assert_eq!(dead[1]["attempts"], 3);
    assert!(
        dead[1]["error"].as_str().unwrap().contains("id"),
        "{}",
        dead[1]
    );
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_events_reach_subscribed_pipelines_without_feeding_back() {
    let app = start_yaml(
        r#"
modules:
  - {name: events, type: eventbus.modular}
pipelines:
  work:
    steps:
      - {name: compute, type: step.set, config: {values: {answer: 42}}}
  audit:
    trigger: {type: eventbus, config: {topic: workflow.completed}}
    steps:
      - name: note
        type: step.publish
        config: {topic: audited, payload: {pipeline: "{{ .pipeline }}", run: "{{ .run_id }}", answer: "{{ .result.answer }}"}}
"#,
    )
    .await;
    let bus = running_broker(&app, "events");
    let seen = collect(&bus, &["audited", "step.completed", "workflow.failed"]);
    let work = app.state().pipelines().get("work").unwrap();
    let outcome = work
        .run(serde_json::Map::new(), Extensions::default())
        .await
        .unwrap();

    let audited = seen.wait_for("audited", 1).await;
    assert_eq!(audited[0]["pipeline"], "work");
    assert_eq!(audited[0]["run"], outcome.context.meta["run_id"]);
    assert_eq!(audited[0]["answer"], 42);
    let steps = seen.wait_for("step.completed", 1).await;
    assert_eq!(steps[0]["step"], "compute");
    assert_eq!(steps[0]["step_type"], "step.set");
    assert_eq!(steps[0]["type"], "step.completed");
    assert!(steps[0]["duration_ms"].is_number(), "{}", steps[0]);

    // `audit` ran because of a lifecycle event, so its own completion published nothing:
    // a second run of `work` gives exactly one more audit.
    work.run(serde_json::Map::new(), Extensions::default())
        .await
        .unwrap();
    seen.wait_for("audited", 2).await;
    // Stopping drains every queue: whatever was still on its way has arrived by then.
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
    assert_eq!(seen.on("audited").len(), 2);
    assert!(
        seen.on("step.completed")
            .iter()
            .all(|e| e["pipeline"] == "work"),
        "{:?}",
        seen.on("step.completed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_processor_example_forwards_along_its_producers() {
    let registry = wf_host::registry().unwrap();
    let app = build_on_loopback(
        &seed_examples().join("event-processor-config.yaml"),
        &registry,
    );
    let app = app.start(Duration::from_secs(5)).await.unwrap();
    let bus = running_broker(&app, "event-broker");
    publish(&bus, "incoming-events", r#"{"type": "sensor.reading"}"#).await;
    let services = app.state().services().unwrap();
    let received = |name: &str| services.get::<LoggingHandler>(name).unwrap().received();
    // event-receiver forwards to processed-events (event-notifier) and error-events
    // (error-handler), as its `producers` entry says.
    let done = eventually(Duration::from_secs(5), || async {
        received("event-notifier") == 1 && received("error-handler") == 1
    })
    .await;
    assert!(
        done,
        "the chain did not reach the notifier and the error handler"
    );
    assert_eq!(received("event-receiver"), 1);
    assert_eq!(received("event-processor"), 0);
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

#[test]
fn handlers_forwarding_in_a_circle_are_refused() {
    let rendered = invalid_yaml(
        r#"
modules:
  - {name: bus, type: messaging.broker}
  - {name: a, type: messaging.handler}
  - {name: b, type: messaging.handler}
workflows:
  messaging:
    subscriptions:
      - {topic: one, handler: a}
      - {topic: two, handler: b}
    producers:
      - {name: a, forwardTo: [two]}
      - {name: b, forwardTo: [one]}
"#,
    );
    assert!(
        rendered.contains("messages would circulate forever: `one` → `two` → `one`"),
        "{rendered}"
    );
    // The same loop through the handlers' own `topic` and `targetTopics`, with no workflow.
    let rendered = invalid_yaml(
        r#"
modules:
  - {name: bus, type: messaging.broker}
  - {name: a, type: messaging.handler, config: {topic: one, targetTopics: [two]}}
  - {name: b, type: messaging.handler, config: {topic: two, targetTopics: [one]}}
"#,
    );
    assert!(
        rendered.contains("messages would circulate forever: `one` → `two` → `one`"),
        "{rendered}"
    );
    assert_eq!(
        rendered.matches("circulate forever").count(),
        1,
        "{rendered}"
    );
}

#[test]
fn an_event_trigger_names_its_problems() {
    let rendered = invalid_yaml(
        r#"
modules:
  - {name: bus, type: messaging.broker}
triggers:
  event:
    subscriptions:
      - {topic: orders, pipeline: missing}
      - {topic: "orders.*", pipeline: p}
      - {topic: orders, workflow: order-machine, action: create}
pipelines:
  p:
    steps: [{name: s, type: step.set, config: {values: {a: 1}}}]
"#,
    );
    assert!(
        rendered.contains("no pipeline named `missing`"),
        "{rendered}"
    );
    assert!(
        rendered.contains("topic patterns such as `orders.*`"),
        "{rendered}"
    );
    assert!(
        rendered.contains("`order-machine` is neither a pipeline nor a state machine"),
        "{rendered}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_in_a_watched_directory_become_messages() {
    let dir = wf_tests::TempDir::new("file-input");
    let app = start_yaml(&format!(
        r#"
modules:
  - {{name: bus, type: messaging.broker}}
  - name: csv-input
    type: messaging.handler
    config: {{inputType: csv, watchPath: "{}", pollInterval: 20ms, targetTopics: [raw-input]}}
"#,
        dir.0.display()
    ))
    .await;
    let bus = running_broker(&app, "bus");
    let seen = collect(&bus, &["raw-input"]);
    // Written under a temporary name, then renamed: never read half-written.
    std::fs::write(
        dir.0.join("people.csv.tmp"),
        "name,role\nada,engineer\ngrace,admiral\n",
    )
    .unwrap();
    std::fs::rename(dir.0.join("people.csv.tmp"), dir.0.join("people.csv")).unwrap();
    std::fs::write(dir.0.join("broken.csv"), "name,role\nada,engineer,extra\n").unwrap();

    let records = seen.wait_for("raw-input", 2).await;
    assert_eq!(
        records,
        [
            json!({"name": "ada", "role": "engineer"}),
            json!({"name": "grace", "role": "admiral"})
        ]
    );
    let done = eventually(Duration::from_secs(5), || async {
        dir.0.join("people.csv.processed").exists() && dir.0.join("broken.csv.failed").exists()
    })
    .await;
    assert!(done, "files were not marked");
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_pipeline_example_carries_csv_rows_through_every_stage() {
    // Run from a copy, so its `./input` directory is created there and not in the examples.
    let dir = wf_tests::TempDir::new("data-pipeline");
    let config = dir.0.join("data-pipeline-config.yaml");
    std::fs::copy(seed_examples().join("data-pipeline-config.yaml"), &config).unwrap();
    let registry = wf_host::registry().unwrap();
    let app = build_on_loopback(&config, &registry)
        .start(Duration::from_secs(5))
        .await
        .unwrap();
    std::fs::write(dir.0.join("input/batch.csv"), "sku,qty\nA-1,2\nB-7,1\n").unwrap();
    let services = app.state().services().unwrap();
    let received = |name: &str| services.get::<LoggingHandler>(name).unwrap().received();
    // raw-input → data-validation → validated-data → data-transformation → transformed-data →
    // data-enrichment → processed-data → db-output and notification-output.
    let done = eventually(Duration::from_secs(10), || async {
        received("db-output") == 2 && received("notification-output") == 2
    })
    .await;
    assert!(
        done,
        "stages saw: validation {}, transformation {}, enrichment {}, db {}",
        received("data-validation"),
        received("data-transformation"),
        received("data-enrichment"),
        received("db-output")
    );
    assert_eq!(received("data-validation"), 2);
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_logger_keeps_lifecycle_events_in_a_rotated_file() {
    let dir = wf_tests::TempDir::new("event-log");
    let file = dir.0.join("logs/events.jsonl");
    let app = start_yaml(&format!(
        r#"
modules:
  - {{name: bus, type: messaging.broker}}
  - {{name: audit, type: eventlogger.modular, config: {{file: "{}", maxFileBytes: 2048}}}}
pipelines:
  greet:
    steps:
      - {{name: hello, type: step.set, config: {{values: {{greeting: hi}}}}}}
"#,
        file.display()
    ))
    .await;
    let pipeline = app.state().pipelines().get("greet").unwrap();
    for _ in 0..12 {
        pipeline
            .run(serde_json::Map::new(), Extensions::default())
            .await
            .unwrap();
    }
    let rotated = dir.0.join("logs/events.jsonl.1");
    // 12 runs × 4 events of a few hundred bytes each: more than one file's worth.
    let rotated_and_written = eventually(Duration::from_secs(5), || async {
        rotated.exists()
            && std::fs::read_to_string(&file)
                .is_ok_and(|t| t.lines().any(|l| l.contains("workflow.completed")))
    })
    .await;
    assert!(
        rotated_and_written,
        "the file was rotated and written again"
    );
    // Stopped first: the logger writes what is queued, so no rotation happens while the files
    // are read.
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
    for path in [&file, &rotated] {
        assert!(
            std::fs::metadata(path).unwrap().len() <= 2048,
            "{}",
            path.display()
        );
        for line in std::fs::read_to_string(path).unwrap().lines() {
            serde_json::from_str::<Value>(line).unwrap();
        }
    }
    let text = std::fs::read_to_string(&file).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert!(last["time"].as_str().unwrap().ends_with('Z'));
    assert!(
        [
            "workflow.completed",
            "step.completed",
            "workflow.started",
            "step.started"
        ]
        .contains(&last["topic"].as_str().unwrap()),
        "{last}"
    );
}
