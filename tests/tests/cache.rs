//! `cache.modular` and the cache steps: in memory, and on the real Redis (shared by two apps,
//! as by two hosts), with TTLs; an unreachable Redis fails the start.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::time::Duration;

use serde_json::{Map, Value, json};
use wf_engine::Extensions;
use wf_tests::{eventually, start_error, start_yaml, unique_name};

/// An app with a cache and three pipelines: `put` (key, value, optional ttl), `fetch` (key)
/// and `forget` (key).
fn app(cache_config: &str) -> String {
    format!(
        r#"
modules:
  - {{name: cache, type: cache.modular, config: {cache_config}}}
pipelines:
  put:
    steps:
      - {{name: store, type: step.cache_set, config: {{key: "item:{{{{ .key }}}}", value: "{{{{ .value }}}}"}}}}
  put-briefly:
    steps:
      - {{name: store, type: step.cache_set, config: {{key: "item:{{{{ .key }}}}", value: "{{{{ .value }}}}", ttl: 50ms}}}}
  fetch:
    steps:
      - {{name: read, type: step.cache_get, config: {{key: "item:{{{{ .key }}}}", output: item}}}}
  forget:
    steps:
      - {{name: drop, type: step.cache_delete, config: {{key: "item:{{{{ .key }}}}"}}}}
"#
    )
}

async fn run(app: &wf_engine::RunningApp, pipeline: &str, data: Value) -> Map<String, Value> {
    let pipeline = app.state().pipelines().get(pipeline).unwrap();
    let outcome = pipeline
        .run(data.as_object().cloned().unwrap(), Extensions::default())
        .await
        .unwrap();
    let last = outcome.context.steps.values().next_back().cloned().unwrap();
    last.as_object().cloned().unwrap()
}

async fn exercise(writer: &wf_engine::RunningApp, reader: &wf_engine::RunningApp) {
    let value = json!({"name": "Ada", "tags": ["a", "b"], "n": 3});
    run(writer, "put", json!({"key": "k1", "value": value})).await;
    let read = run(reader, "fetch", json!({"key": "k1"})).await;
    assert_eq!(read["found"], true);
    assert_eq!(
        read["item"], value,
        "the JSON value comes back with its types"
    );
    let missing = run(reader, "fetch", json!({"key": "nope"})).await;
    assert_eq!(
        (missing["found"].clone(), missing["item"].clone()),
        (json!(false), Value::Null)
    );

    run(writer, "put-briefly", json!({"key": "k2", "value": 1})).await;
    let expired = eventually(Duration::from_secs(5), || async {
        run(reader, "fetch", json!({"key": "k2"})).await["found"] == false
    })
    .await;
    assert!(expired, "the TTL ran out");

    assert_eq!(
        run(reader, "forget", json!({"key": "k1"})).await["deleted"],
        true
    );
    assert_eq!(
        run(writer, "forget", json!({"key": "k1"})).await["deleted"],
        false
    );
    assert_eq!(
        run(writer, "fetch", json!({"key": "k1"})).await["found"],
        false
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_cache_keeps_values_with_their_ttl() {
    let app = start_yaml(&app("{maxSize: 100}")).await;
    exercise(&app, &app).await;
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cache_is_shared_by_every_host() {
    let Ok(url) = std::env::var("WF_TEST_REDIS_URL") else {
        eprintln!("WF_TEST_REDIS_URL is not set: skipping the Redis cache test");
        return;
    };
    let prefix = unique_name("wf-test-cache");
    let config = format!("{{backend: redis, redisURL: \"{url}\", keyPrefix: \"{prefix}:\"}}");
    let one = start_yaml(&app(&config)).await;
    let two = start_yaml(&app(&config)).await;
    exercise(&one, &two).await;
    assert_eq!(one.stop(Duration::from_secs(5)).await, 0);
    assert_eq!(two.stop(Duration::from_secs(5)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_fails_the_start() {
    let error = start_error(&app(
        "{backend: redis, redisURL: \"redis://127.0.0.1:1\", connectTimeout: 2s}",
    ))
    .await;
    assert!(error.contains("Redis at redis://127.0.0.1:1"), "{error}");
}

#[test]
fn cache_mistakes_are_located() {
    let rendered = wf_tests::invalid_yaml(
        r#"
modules:
  - {name: cache, type: cache.modular, config: {backend: memcached, defaultTTL: soon}}
pipelines:
  p:
    steps:
      - {name: a, type: step.cache_get, config: {key: k, output: found}}
      - {name: b, type: step.cache_set, config: {cache: nowhere, key: k}}
"#,
    );
    for expected in [
        "`memcached` is not a cache backend (memory, redis)",
        "the output field needs a name other than `found`",
        "`nowhere`",
    ] {
        assert!(
            rendered.contains(expected),
            "missing {expected:?} in\n{rendered}"
        );
    }
}
