//! `${secret:…}` from `secrets.vault` and `secrets.aws`: values reach module configs and
//! pipeline steps, mistakes are located and never quote a value, and the logs hide them.
//!
//! Vault itself cannot be installed here (it is in no package registry this project may use),
//! so its KV v2 API is served by a small stand-in below that checks the token and counts
//! reads. Secrets Manager is moto's server (`WF_TEST_SECRETSMANAGER_ENDPOINT`, started by
//! `.ci/run`).

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use wf_config::load_str;
use wf_engine::{App, Extensions, resolve_secrets, validate};
use wf_tests::{client, server_addr, unique_name};

const TOKEN: &str = "vault-test-token";
const SIGNING_KEY: &str = "signing-key-from-vault-0123456789abcdef";
const API_TOKEN: &str = "api-token-7f3a9c";

struct FakeVault {
    reads: AtomicUsize,
    /// `mount/path` → the secret's fields.
    secrets: HashMap<String, Value>,
}

async fn kv_read(
    State(vault): State<Arc<FakeVault>>,
    Path((mount, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    vault.reads.fetch_add(1, Ordering::SeqCst);
    if headers.get("x-vault-token").and_then(|v| v.to_str().ok()) != Some(TOKEN) {
        return json_response(
            StatusCode::FORBIDDEN,
            json!({"errors": ["permission denied"]}),
        );
    }
    match vault.secrets.get(&format!("{mount}/{path}")) {
        Some(data) => json_response(
            StatusCode::OK,
            json!({"data": {"data": data, "metadata": {"version": 3}}}),
        ),
        None => json_response(StatusCode::NOT_FOUND, json!({"errors": []})),
    }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A Vault KV v2 read API on a free loopback port.
async fn start_vault() -> (SocketAddr, Arc<FakeVault>) {
    let vault = Arc::new(FakeVault {
        reads: AtomicUsize::new(0),
        secrets: [
            (
                "secret/app/jwt".to_string(),
                json!({"signing-key": SIGNING_KEY, "previous": "old"}),
            ),
            ("secret/app/api".to_string(), json!({"token": API_TOKEN})),
            ("team/db".to_string(), json!({"value": "db-password-2"})),
        ]
        .into(),
    });
    let router = axum::Router::new()
        .route("/v1/{mount}/data/{*path}", axum::routing::get(kv_read))
        .with_state(vault.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, vault)
}

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Load → resolve secrets → validate → build, as `wf-host run` does; the rendered diagnostics
/// when anything fails.
async fn prepare(yaml: &str, vars: &HashMap<String, String>) -> Result<App, String> {
    let registry = wf_host::registry().unwrap();
    let loaded = resolve_secrets(load_str("app.yaml", yaml, vars), &registry).await;
    let validated =
        validate(loaded, &registry).map_err(|i| i.diagnostics.render(&i.config.sources))?;
    wf_engine::build(&validated, &registry).map_err(|d| format!("{d:?}"))
}

/// Starts `app`, runs `pipeline` once on no data, stops; the run's result.
async fn run_once(app: App, pipeline: &str) -> serde_json::Map<String, Value> {
    let running = app.start(std::time::Duration::from_secs(10)).await.unwrap();
    let outcome = running
        .state()
        .pipelines()
        .get(pipeline)
        .unwrap()
        .run(Default::default(), Extensions::default())
        .await
        .unwrap();
    running.stop(std::time::Duration::from_secs(5)).await;
    outcome.context.current
}

/// Why the files are refused, rendered (with no variables set).
async fn refusal(yaml: &str) -> String {
    prepare(yaml, &vars(&[])).await.unwrap_err()
}

fn vault_app(addr: SocketAddr) -> String {
    format!(
        r#"
modules:
  - name: vault
    type: secrets.vault
    config:
      address: "http://{addr}"
      token: "${{VAULT_TEST_TOKEN}}"
  - {{name: web, type: http.server, config: {{address: "127.0.0.1:0"}}}}
  - {{name: routes, type: http.router}}
  - {{name: logs, type: log.collector, config: {{level: info}}}}
  - name: auth
    type: auth.jwt
    config:
      secret: "${{secret:app/jwt#signing-key}}"
pipelines:
  call-partner:
    steps:
      - name: header
        type: step.set
        config:
          values:
            authorization: "Bearer ${{secret:app/api#token}}"
            again: "${{vault:app/api#token}}"
            literal: "$${{secret:not-a-reference}}"
      - {{name: careless, type: step.log, config: {{message: "calling with {{{{ .authorization }}}}"}}}}
workflows:
  http:
    routes:
      # Failures whose messages hold the secret (in the URL it calls).
      - method: POST
        path: /unreachable
        steps:
          - {{name: call, type: step.http_call, config: {{url: "http://127.0.0.1:1/x?token=${{secret:app/api#token}}"}}}}
      - method: POST
        path: /malformed
        steps:
          - {{name: call, type: step.http_call, config: {{url: "http://bad host/{{{{ .page }}}}?token=${{secret:app/api#token}}"}}}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_secrets_reach_modules_and_steps_and_stay_out_of_logs() {
    let _ = tracing_subscriber::registry()
        .with(wf_http::logs::layer())
        .try_init();
    let (addr, vault) = start_vault().await;
    let app = prepare(&vault_app(addr), &vars(&[("VAULT_TEST_TOKEN", TOKEN)]))
        .await
        .unwrap();
    // Two distinct secrets, each read once however often it is referenced.
    assert_eq!(vault.reads.load(Ordering::SeqCst), 2);

    let app = app.start(std::time::Duration::from_secs(10)).await.unwrap();
    let outcome = app
        .state()
        .pipelines()
        .get("call-partner")
        .unwrap()
        .run(Default::default(), Extensions::default())
        .await
        .unwrap();
    assert_eq!(
        outcome.context.current["authorization"],
        format!("Bearer {API_TOKEN}")
    );
    assert_eq!(outcome.context.current["again"], API_TOKEN);
    assert_eq!(
        outcome.context.current["literal"],
        "${secret:not-a-reference}"
    );

    // Error answers never carry the secret: a server failure is generic, and a caller's
    // mistake is explained with the value masked.
    let http = client();
    let base = format!("http://{}", server_addr(&app, "web"));
    for (path, status) in [("/unreachable", 503), ("/malformed", 400)] {
        let response = http
            .post(format!("{base}{path}"))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path}");
        let body = response.text().await.unwrap();
        assert!(!body.contains(API_TOKEN), "{path}: {body}");
    }
    let logs: Value = http
        .get(format!("{base}/logs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = logs.to_string();
    assert!(
        text.contains("calling with Bearer [redacted]"),
        "the log line is kept, masked: {text}"
    );
    assert!(!text.contains(API_TOKEN), "{text}");
    assert!(
        text.contains("token=[redacted]"),
        "the failed call is logged, masked: {text}"
    );
    assert!(!text.contains(SIGNING_KEY));
    app.stop(std::time::Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_module_signs_with_the_secret_from_vault() {
    let (addr, _) = start_vault().await;
    let yaml = format!(
        r#"
modules:
  - name: vault
    type: secrets.vault
    config: {{address: "http://{addr}", token: "{TOKEN}"}}
  - {{name: web, type: http.server, config: {{address: "127.0.0.1:0"}}}}
  - {{name: routes, type: http.router}}
  - name: auth
    type: auth.jwt
    config:
      secret: "${{secret:app/jwt#signing-key}}"
      allowRegistration: true
workflows:
  http:
    routes:
      - {{method: POST, path: /auth/register, handler: auth}}
"#
    );
    let app = prepare(&yaml, &vars(&[]))
        .await
        .unwrap()
        .start(std::time::Duration::from_secs(10))
        .await
        .unwrap();
    let http = client();
    let base = format!("http://{}", server_addr(&app, "web"));
    let answer: Value = http
        .post(format!("{base}/auth/register"))
        .json(&json!({"email": "ada@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = answer["token"].as_str().unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(SIGNING_KEY.as_bytes()),
        &validation,
    )
    .expect("signed with the key from Vault");
    app.stop(std::time::Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_mistakes_are_located_and_never_quote_values() {
    let (addr, vault) = start_vault().await;
    let source = |name: &str, mount: &str, token: &str| {
        format!(
            "  - name: {name}\n    type: secrets.vault\n    config: {{address: \"http://{addr}\", token: \"{token}\", mountPath: {mount}}}\n"
        )
    };
    let with = |sources: &str, value: &str| {
        let sources = if sources.is_empty() {
            " []\n".to_string()
        } else {
            format!("\n{sources}")
        };
        format!(
            "modules:{sources}pipelines:\n  p:\n    steps:\n      - name: s\n        type: step.set\n        config:\n          values: {{x: \"{value}\"}}\n"
        )
    };

    // A missing secret, and a missing field, each at its line.
    let err = refusal(&with(
        &source("vault", "secret", TOKEN),
        "${secret:app/nothing}",
    ))
    .await;
    assert!(
        err.contains("secret `app/nothing` from `vault` (secrets.vault): not found"),
        "{err}"
    );
    assert!(
        err.contains("app.yaml:11:23"),
        "located at the reference: {err}"
    );
    let err = refusal(&with(
        &source("vault", "secret", TOKEN),
        "${secret:app/jwt#nope}",
    ))
    .await;
    assert!(err.contains("has no field `nope`"), "{err}");
    assert!(!err.contains(SIGNING_KEY), "{err}");

    // A refused token.
    let err = refusal(&with(
        &source("vault", "secret", "wrong"),
        "${secret:app/api#token}",
    ))
    .await;
    assert!(err.contains("access denied"), "{err}");

    // No source, and two sources without saying which.
    let err = refusal(&with("", "${secret:app/api#token}")).await;
    assert!(err.contains("needs a secrets module"), "{err}");
    let two = format!(
        "{}{}",
        source("vault-a", "secret", TOKEN),
        source("vault-b", "team", TOKEN)
    );
    let err = refusal(&with(&two, "${secret:db}")).await;
    assert!(err.contains("`${secret:MODULE:db}`"), "{err}");
    assert!(err.contains("`vault-a`, `vault-b`"), "{err}");
    let app = prepare(&with(&two, "${secret:vault-b:db}"), &vars(&[]))
        .await
        .unwrap();
    assert_eq!(run_once(app, "p").await["x"], "db-password-2");

    // A default makes no sense for a secret; a source cannot read its own credentials from
    // secrets.
    let err = refusal(&with(
        &source("vault", "secret", TOKEN),
        "${secret:x:-fallback}",
    ))
    .await;
    assert!(err.contains("secrets take no default"), "{err}");
    let err = refusal(&with(
        &source("vault", "secret", "${secret:token}"),
        "plain",
    ))
    .await;
    assert!(err.contains("cannot reference secrets"), "{err}");

    // The type's rules judge the value, not the reference: a 32-byte minimum passes with the
    // key from Vault, and a short value fails without being quoted.
    let short = format!(
        "modules:\n{}  - name: auth\n    type: auth.jwt\n    config: {{secret: \"${{secret:app/api#token}}\"}}\n",
        source("vault", "secret", TOKEN)
    );
    let err = refusal(&short).await;
    assert!(err.contains("at least 32"), "{err}");
    assert!(!err.contains(API_TOKEN), "the value is never quoted: {err}");
    // Nor by a rule whose message quotes the setting.
    let quoted = format!(
        "modules:\n{}pipelines:\n  p:\n    steps:\n      - {{name: c, type: step.http_call, config: {{url: \"http://bad host/${{secret:app/api#token}}\"}}}}\n",
        source("vault", "secret", TOKEN)
    );
    let err = refusal(&quoted).await;
    assert!(
        err.contains("`http://bad host/[redacted]` is not a URL"),
        "{err}"
    );
    assert!(!err.contains(API_TOKEN), "{err}");
    assert!(vault.reads.load(Ordering::SeqCst) > 0);
}

#[test]
fn offline_validation_checks_structure_and_defers_the_values() {
    let dir = std::env::temp_dir().join(unique_name("wf-secrets-validate"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("app.yaml");
    std::fs::write(
        &file,
        "modules:\n  - {name: vault, type: secrets.vault, config: {address: \"http://127.0.0.1:1\", token: t}}\n  - {name: auth, type: auth.jwt, config: {secret: \"${secret:app/jwt#key}\"}}\n",
    )
    .unwrap();
    let registry = wf_host::registry().unwrap();
    let (code, out) =
        wf_host::commands::validate_with(std::slice::from_ref(&file), &registry, false, &vars(&[]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("fetched when the app starts"), "{out}");

    // Structure is still checked: an unknown key of the source is an error.
    std::fs::write(
        &file,
        "modules:\n  - {name: vault, type: secrets.vault, config: {adress: \"http://127.0.0.1:1\"}}\n  - {name: auth, type: auth.jwt, config: {secret: \"${secret:app/jwt#key}\"}}\n",
    )
    .unwrap();
    let (code, out) = wf_host::commands::validate_with(&[file], &registry, false, &vars(&[]));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("adress"), "{out}");
    let _ = std::fs::remove_dir_all(dir);
}

/// moto's Secrets Manager, or `None` (the test is skipped) when it is not configured.
fn secretsmanager() -> Option<String> {
    std::env::var("WF_TEST_SECRETSMANAGER_ENDPOINT").ok()
}

/// Creates a secret through the Secrets Manager API, signed as a client would.
async fn create_secret(endpoint: &str, name: &str, value: &str) {
    use wf_objects::sigv4::{self, Credentials};
    let url = reqwest::Url::parse(endpoint).unwrap();
    let host = sigv4::host(&url);
    let body = json!({"Name": name, "SecretString": value}).to_string();
    let credentials = Credentials {
        access_key_id: "testing".into(),
        secret_access_key: "testing".into(),
        session_token: None,
    };
    let headers = sigv4::sign(
        &credentials,
        "us-east-1",
        "secretsmanager",
        "POST",
        &host,
        "/",
        &[],
        &sigv4::sha256_hex(body.as_bytes()),
        chrono::Utc::now(),
    );
    let mut request = client()
        .post(endpoint)
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", "secretsmanager.CreateSecret")
        .body(body);
    for (k, v) in headers {
        request = request.header(k, v);
    }
    let response = request.send().await.unwrap();
    assert!(
        response.status().is_success(),
        "{}",
        response.text().await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_secrets_manager_values_by_name_and_field() {
    let Some(endpoint) = secretsmanager() else {
        eprintln!("skipped: WF_TEST_SECRETSMANAGER_ENDPOINT is not set");
        return;
    };
    let name = unique_name("wf-test/db");
    create_secret(
        &endpoint,
        &name,
        r#"{"username":"app","password":"pw-from-aws-91"}"#,
    )
    .await;
    let yaml = format!(
        r#"
modules:
  - name: aws
    type: secrets.aws
    config: {{endpoint: "{endpoint}", region: us-east-1, accessKeyId: testing, secretAccessKey: testing}}
pipelines:
  p:
    steps:
      - name: s
        type: step.set
        config:
          values:
            password: "${{aws-sm:{name}#password}}"
            whole: "${{secret:{name}}}"
"#
    );
    let app = prepare(&yaml, &vars(&[])).await.unwrap();
    let out = run_once(app, "p").await;
    assert_eq!(out["password"], "pw-from-aws-91");
    let whole: Value = serde_json::from_str(out["whole"].as_str().unwrap()).unwrap();
    assert_eq!(whole["username"], "app");

    let missing = yaml.replace(&format!("{name}#password"), "wf-test/no-such-secret");
    let err = refusal(&missing).await;
    assert!(
        err.contains("secret `wf-test/no-such-secret` from `aws` (secrets.aws): not found"),
        "{err}"
    );
}
