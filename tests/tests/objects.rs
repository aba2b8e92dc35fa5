//! `storage.local` and the object steps: text, JSON and binary objects, listing by prefix,
//! deletion, atomic writes, and keys that try to leave the store.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::time::Duration;

use serde_json::{Map, Value, json};
use wf_engine::{ErrorKind, Extensions, PipelineError, RunningApp};
use wf_tests::{TempDir, start_yaml};

async fn run(
    app: &RunningApp,
    pipeline: &str,
    data: Value,
) -> Result<Map<String, Value>, PipelineError> {
    let pipeline = app.state().pipelines().get(pipeline).unwrap();
    let outcome = pipeline
        .run(data.as_object().cloned().unwrap(), Extensions::default())
        .await?;
    Ok(outcome
        .context
        .steps
        .values()
        .next_back()
        .cloned()
        .unwrap()
        .as_object()
        .cloned()
        .unwrap())
}

/// Pipelines over the store `files`: save-report, save-text, save-bytes, read-json,
/// read-text, read-bytes, list and remove.
const PIPELINES: &str = r#"
pipelines:
  save-report:
    steps:
      - {name: put, type: step.storage_put, config: {key: "reports/{{ .year }}/{{ .name }}.json", content: {total: "{{ .total }}", by: "{{ .who }}"}}}
  save-text:
    steps:
      - {name: put, type: step.storage_put, config: {key: "{{ .key }}", content: "{{ .text }}"}}
  save-bytes:
    steps:
      - {name: put, type: step.storage_put, config: {key: "{{ .key }}", content: "{{ .b64 }}", encoding: base64}}
  read-json:
    steps:
      - {name: get, type: step.storage_get, config: {key: "{{ .key }}", decode: json}}
  read-text:
    steps:
      - {name: get, type: step.storage_get, config: {key: "{{ .key }}"}}
  read-bytes:
    steps:
      - {name: get, type: step.storage_get, config: {key: "{{ .key }}", decode: base64}}
  read-small:
    steps:
      - {name: get, type: step.storage_get, config: {key: "{{ .key }}", max_bytes: 4}}
  list:
    steps:
      - {name: ls, type: step.storage_list, config: {prefix: "{{ .prefix }}", limit: 10}}
  remove:
    steps:
      - {name: rm, type: step.storage_delete, config: {key: "{{ .key }}"}}
"#;

fn app_yaml(store: &str) -> String {
    format!("modules:\n  - {store}\n{PIPELINES}")
}

/// What every backend must do alike.
async fn exercise(app: &RunningApp) {
    let saved = run(
        app,
        "save-report",
        json!({"year": 2026, "name": "q1", "total": 12.5, "who": "ada"}),
    )
    .await
    .unwrap();
    assert_eq!(saved["key"], "reports/2026/q1.json");
    run(
        app,
        "save-report",
        json!({"year": 2026, "name": "q2", "total": 3, "who": "bob"}),
    )
    .await
    .unwrap();
    run(
        app,
        "save-text",
        json!({"key": "notes/hello.txt", "text": "héllo"}),
    )
    .await
    .unwrap();
    run(app, "save-bytes", json!({"key": "bin/blob", "b64": "AP8Q"}))
        .await
        .unwrap();

    let report = run(app, "read-json", json!({"key": "reports/2026/q1.json"}))
        .await
        .unwrap();
    assert_eq!(report["content"], json!({"total": 12.5, "by": "ada"}));
    let text = run(app, "read-text", json!({"key": "notes/hello.txt"}))
        .await
        .unwrap();
    assert_eq!(
        (text["content"].as_str(), text["size"].as_u64()),
        (Some("héllo"), Some(6))
    );
    // Larger than the step accepts: refused unread, as the caller's mistake.
    let error = run(app, "read-small", json!({"key": "notes/hello.txt"}))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidInput);
    assert!(error.message.contains("larger than 4 bytes"), "{error}");
    let bytes = run(app, "read-bytes", json!({"key": "bin/blob"}))
        .await
        .unwrap();
    assert_eq!(bytes["content"], "AP8Q");
    // Binary read as text: the caller's mistake, with the way out.
    let error = run(app, "read-text", json!({"key": "bin/blob"}))
        .await
        .unwrap_err();
    assert!(error.message.contains("decode: base64"), "{error}");
    let missing = run(app, "read-text", json!({"key": "nope.txt"}))
        .await
        .unwrap();
    assert_eq!(
        (missing["found"].clone(), missing["content"].clone()),
        (json!(false), Value::Null)
    );

    let listed = run(app, "list", json!({"prefix": "reports/20"}))
        .await
        .unwrap();
    let keys: Vec<&str> = listed["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["reports/2026/q1.json", "reports/2026/q2.json"]);
    let everything = run(app, "list", json!({"prefix": ""})).await.unwrap();
    assert_eq!(
        everything["count"], 4,
        "no temporary files are left or listed"
    );

    assert_eq!(
        run(app, "remove", json!({"key": "notes/hello.txt"}))
            .await
            .unwrap()["deleted"],
        true
    );
    assert_eq!(
        run(app, "remove", json!({"key": "notes/hello.txt"}))
            .await
            .unwrap()["deleted"],
        false
    );

    // Climbing, absolute and odd keys are the caller's mistake, whatever the backend.
    for key in [
        "../secret.txt",
        "/etc/passwd",
        "a/../../secret.txt",
        "a\\b",
        "a//b",
    ] {
        let error = run(app, "read-text", json!({"key": key}))
            .await
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidInput, "{key}: {error}");
        let error = run(app, "save-text", json!({"key": key, "text": "x"}))
            .await
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidInput, "{key}: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_store_keeps_objects_inside_its_root() {
    let dir = TempDir::new("objects");
    let root = dir.0.join("store");
    std::fs::write(dir.0.join("secret.txt"), "outside").unwrap();
    let app = start_yaml(&app_yaml(&format!(
        "{{name: files, type: storage.local, config: {{rootDir: \"{}\"}}}}",
        root.display()
    )))
    .await;
    exercise(&app).await;
    assert_eq!(std::fs::read(root.join("bin/blob")).unwrap(), [0, 255, 16]);
    // A link inside the root that leads out is not followed.
    std::os::unix::fs::symlink(&dir.0, root.join("escape")).unwrap();
    let error = run(&app, "read-text", json!({"key": "escape/secret.txt"}))
        .await
        .unwrap_err();
    assert!(error.message.contains("leads outside the store"), "{error}");
    assert_eq!(error.kind, ErrorKind::InvalidInput);
    let error = run(
        &app,
        "save-text",
        json!({"key": "escape/planted.txt", "text": "x"}),
    )
    .await
    .unwrap_err();
    assert!(error.message.contains("leads outside the store"), "{error}");
    assert_eq!(error.kind, ErrorKind::InvalidInput);
    assert!(!dir.0.join("planted.txt").exists());
    assert_eq!(
        std::fs::read_to_string(dir.0.join("secret.txt")).unwrap(),
        "outside"
    );
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

/// A cloud store on the server `WF_TEST_<var>` names: the shared exercise with `createBucket`,
/// then the same store on a missing bucket without it fails the start, without `secret` in
/// the error. `store` is the module's YAML with `BUCKET` and `ENDPOINT` to fill in.
async fn exercise_cloud_store(var: &str, store: &str, secret: &str) {
    let Ok(endpoint) = std::env::var(var) else {
        eprintln!("{var} is not set: skipping this object store test");
        return;
    };
    let bucket = wf_tests::unique_name("wf-test").to_lowercase();
    let store = store
        .replace("ENDPOINT", &endpoint)
        .replace("BUCKET", &bucket);
    let app = start_yaml(&app_yaml(&store)).await;
    exercise(&app).await;
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
    let missing = store
        .replace(&bucket, &format!("{bucket}-missing"))
        .replace("createBucket: true", "createBucket: false");
    let error = wf_tests::start_error(&app_yaml(&missing)).await;
    assert!(error.contains("the bucket does not exist"), "{error}");
    assert!(
        !error.contains(secret),
        "the credential never shows: {error}"
    );
}

/// Against a real S3-compatible server (moto's server mode, which `.ci/run` starts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_store_does_the_same_on_a_real_s3_server() {
    exercise_cloud_store(
        "WF_TEST_S3_ENDPOINT",
        r#"{name: files, type: storage.s3, config: {bucket: BUCKET, endpoint: "ENDPOINT", region: eu-west-1, accessKeyId: test, secretAccessKey: test-secret, createBucket: true, prefix: app/}}"#,
        "test-secret",
    )
    .await;
}

/// Against a server speaking GCS's JSON API (gcp-storage-emulator from PyPI, which `.ci/run`
/// starts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gcs_store_does_the_same_on_a_gcs_api_server() {
    exercise_cloud_store(
        "WF_TEST_GCS_ENDPOINT",
        r#"{name: files, type: storage.gcs, config: {bucket: BUCKET, endpoint: "ENDPOINT", project: test, token: not-checked, createBucket: true, prefix: app/}}"#,
        "not-checked",
    )
    .await;
}

#[test]
fn object_step_mistakes_are_located() {
    let rendered = wf_tests::invalid_yaml(
        r#"
pipelines:
  p:
    steps:
      - {name: a, type: step.storage_get, config: {key: k, decode: yaml}}
      - {name: b, type: step.storage_put, config: {key: k}}
"#,
    );
    assert!(
        rendered.contains("there is no object store in this application"),
        "{rendered}"
    );
    assert!(rendered.contains("yaml"), "{rendered}");
}
