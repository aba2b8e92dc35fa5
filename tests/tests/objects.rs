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
    // Listing does not follow the link either (it did: #16).
    let listed = run(&app, "list", json!({"prefix": "escape/"}))
        .await
        .unwrap();
    assert_eq!(listed["count"], 0, "{listed:?}");

    // Keys the store cannot hold are the caller's mistake (`invalid-input`), not an outage
    // to retry (they were `unavailable`: #16).
    for (key, why) in [
        ("reports/2026", "names a directory"),
        ("bin/blob/inner", "runs through an existing object"),
        (&*format!("long/{}", "x".repeat(300)), "segment longer"),
    ] {
        let error = run(&app, "save-text", json!({"key": key, "text": "x"}))
            .await
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidInput, "{key}: {error}");
        assert!(error.message.contains(why), "{key}: {error}");
    }
    let error = run(&app, "remove", json!({"key": "reports/2026"}))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidInput, "{error}");
    let missing = run(&app, "read-text", json!({"key": "bin/blob/inner"}))
        .await
        .unwrap();
    assert_eq!(missing["found"], false, "{missing:?}");
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

/// A stand-in for Google's OAuth token endpoint (which cannot run here): it checks the signed
/// assertion against the service account's public key, as Google does, and counts exchanges.
struct TokenEndpoint {
    address: std::net::SocketAddr,
    exchanges: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// `Authorization` headers the GCS routes of this server saw.
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

async fn start_token_endpoint() -> TokenEndpoint {
    use axum::extract::State;
    use std::sync::atomic::Ordering;
    type Shared = (
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
        std::sync::Arc<std::sync::Mutex<Vec<String>>>,
        String,
    );
    async fn token(
        State((count, _, audience)): State<Shared>,
        form: String,
    ) -> (axum::http::StatusCode, String) {
        let assertion = form
            .split('&')
            .find_map(|pair| pair.strip_prefix("assertion="))
            .unwrap_or_default();
        let grant_ok =
            form.contains("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer");
        let public =
            std::fs::read(wf_tests::repo_root().join("tests/fixtures/jwt/rs256-public.pem"))
                .unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&[audience]);
        validation.set_issuer(&["wf-test@example.iam.gserviceaccount.com"]);
        let verified = jsonwebtoken::decode::<Value>(
            assertion,
            &jsonwebtoken::DecodingKey::from_rsa_pem(&public).unwrap(),
            &validation,
        );
        match verified {
            Ok(data)
                if grant_ok
                    && data.claims["scope"]
                        == "https://www.googleapis.com/auth/devstorage.read_write" =>
            {
                count.fetch_add(1, Ordering::SeqCst);
                (axum::http::StatusCode::OK, json!({"access_token": "ya29.from-key", "expires_in": 3600, "token_type": "Bearer"}).to_string())
            }
            _ => (
                axum::http::StatusCode::BAD_REQUEST,
                json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
                    .to_string(),
            ),
        }
    }
    async fn object(
        State((_, seen, _)): State<Shared>,
        headers: axum::http::HeaderMap,
    ) -> (axum::http::StatusCode, String) {
        let auth = headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        seen.lock().unwrap().push(auth);
        (
            axum::http::StatusCode::NOT_FOUND,
            json!({"error": {"code": 404, "message": "No such object"}}).to_string(),
        )
    }
    async fn bucket(State((_, seen, _)): State<Shared>, headers: axum::http::HeaderMap) -> String {
        let auth = headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        seen.lock().unwrap().push(auth);
        json!({"name": "bucket-1"}).to_string()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let exchanges = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let router = axum::Router::new()
        .route("/token", axum::routing::post(token))
        .route(
            "/storage/v1/b/{bucket}/o/{*key}",
            axum::routing::get(object),
        )
        .route("/storage/v1/b/{bucket}", axum::routing::get(bucket))
        .with_state((
            exchanges.clone(),
            seen.clone(),
            format!("http://{address}/token"),
        ));
    tokio::spawn(async move { axum::serve(listener, router).await });
    TokenEndpoint {
        address,
        exchanges,
        seen,
    }
}

/// A service-account key file for the fixture RSA key, exchanging at `token_uri`.
fn key_file(dir: &TempDir, token_uri: &str) -> std::path::PathBuf {
    let private =
        std::fs::read_to_string(wf_tests::repo_root().join("tests/fixtures/jwt/rs256-private.pem"))
            .unwrap();
    let path = dir.0.join("sa.json");
    std::fs::write(
        &path,
        json!({
            "type": "service_account",
            "project_id": "test",
            "private_key_id": "k1",
            "private_key": private,
            "client_email": "wf-test@example.iam.gserviceaccount.com",
            "token_uri": token_uri,
        })
        .to_string(),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gcs_service_account_key_buys_a_token_that_is_kept() {
    let endpoint = start_token_endpoint().await;
    let dir = TempDir::new("gcs-key");
    let key = key_file(&dir, &format!("http://{}/token", endpoint.address));
    let app = start_yaml(&app_yaml(&format!(
        "{{name: files, type: storage.gcs, config: {{bucket: bucket-1, endpoint: \"http://{}\", credentialsFile: \"{}\"}}}}",
        endpoint.address,
        key.display()
    )))
    .await;
    for _ in 0..3 {
        let out = run(&app, "read-text", json!({"key": "nothing.txt"}))
            .await
            .unwrap();
        assert_eq!(out["found"], false, "{out:?}");
    }
    assert_eq!(
        endpoint.exchanges.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one exchange, then the kept token"
    );
    let seen = endpoint.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "the bucket check at start, then three reads");
    assert!(seen.iter().all(|a| a == "Bearer ya29.from-key"), "{seen:?}");
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);

    // A refused assertion fails the start (the bucket check) with the endpoint's reason, never
    // the key.
    let refusing = key_file(&dir, &format!("http://{}/token?refuse", endpoint.address));
    let error = wf_tests::start_error(&app_yaml(&format!(
        "{{name: files, type: storage.gcs, config: {{bucket: bucket-1, endpoint: \"http://{}\", credentialsFile: \"{}\"}}}}",
        endpoint.address,
        refusing.display()
    )))
    .await;
    assert!(
        error.contains("refused service account `wf-test@example.iam.gserviceaccount.com`"),
        "{error}"
    );
    assert!(error.contains("Invalid JWT Signature"), "{error}");
    assert!(!error.contains("PRIVATE KEY"), "{error}");

    // Mistakes in the key file are found when the app is built.
    std::fs::write(
        dir.0.join("user.json"),
        r#"{"type": "authorized_user", "client_email": "x", "private_key": "x"}"#,
    )
    .unwrap();
    let error = wf_tests::build_error(&app_yaml(&format!(
        "{{name: files, type: storage.gcs, config: {{bucket: bucket-1, credentialsFile: \"{}\"}}}}",
        dir.0.join("user.json").display()
    )));
    assert!(error.contains("not a service-account key"), "{error}");
}

/// The key-file flow against the GCS API server, with the token endpoint above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gcs_store_with_a_service_account_key_works_on_a_gcs_api_server() {
    let endpoint = start_token_endpoint().await;
    let dir = TempDir::new("gcs-key-emulator");
    let key = key_file(&dir, &format!("http://{}/token", endpoint.address));
    exercise_cloud_store(
        "WF_TEST_GCS_ENDPOINT",
        &format!(
            r#"{{name: files, type: storage.gcs, config: {{bucket: BUCKET, endpoint: "ENDPOINT", project: test, credentialsFile: "{}", createBucket: true, prefix: app/}}}}"#,
            key.display()
        ),
        "PRIVATE KEY",
    )
    .await;
    if std::env::var("WF_TEST_GCS_ENDPOINT").is_ok() {
        assert!(endpoint.exchanges.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    }
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
