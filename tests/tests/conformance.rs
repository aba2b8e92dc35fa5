//! The original's example configurations: each one validates, or fails only because it names
//! types or features this build does not implement yet; and the three the foundation covers run
//! and answer as the original did (inventory §2.1, §4.1).

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, StatusCode};
use wf_config::load_files;
use wf_engine::validate;
use wf_messaging::MessageBroker;
use wf_tests::{build_on_loopback, client, eventually, example_vars, seed_examples, server_addr};

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
    {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") && is_app(&path) {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Whether a YAML file is an application (or a part one imports), not a docker-compose file,
/// a Prometheus or Grafana config or seed data that the flagship apps carry beside theirs.
fn is_app(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|text| {
        text.lines().any(|line| {
            [
                "modules:",
                "workflows:",
                "pipelines:",
                "imports:",
                "triggers:",
            ]
            .iter()
            .any(|key| line.starts_with(key))
        })
    })
}

/// Mistakes in the original's examples themselves, which wf reports as it should. Each one is
/// listed with the reason; nothing else may fail.
const KNOWN_DEFECTS: &[(&str, &str)] = &[
    // `step.delegate` to `order-service`, which the file never declares (the original failed
    // at build time too).
    (
        "test-route-pipeline.yaml",
        "service `order-service` is not a module of this application",
    ),
    // Its database steps name `main-db`, which the file never declares either.
    (
        "test-route-pipeline.yaml",
        "database `main-db` is not a module of this application",
    ),
    // Its `processing.step` runs component `event-pattern-matcher`, which nothing loads (the
    // original's Init failed on the missing component too).
    (
        "event-driven-workflow.yaml",
        "there is no component registry in this application",
    ),
];

#[test]
fn every_example_validates_or_names_only_unimplemented_types() {
    let dir = seed_examples();
    assert!(
        dir.is_dir(),
        "the seed examples are missing at {} (set WF_SEED_EXAMPLES)",
        dir.display()
    );
    let registry = wf_host::registry().unwrap();
    let files = yaml_files(&dir);
    assert!(
        files.len() >= 30,
        "expected the original's ~33 examples, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    let mut valid = Vec::new();
    for file in &files {
        let loaded = load_files(std::slice::from_ref(file), &example_vars());
        match validate(loaded, &registry) {
            Ok(_) => valid.push(file.file_name().unwrap().to_string_lossy().into_owned()),
            Err(invalid) => {
                let name = file
                    .strip_prefix(&dir)
                    .unwrap_or(file)
                    .to_string_lossy()
                    .into_owned();
                let unexpected: Vec<String> = invalid
                    .diagnostics
                    .iter()
                    .filter(|d| d.is_error() && d.code != "not-implemented")
                    .filter(|d| {
                        !KNOWN_DEFECTS
                            .iter()
                            .any(|(f, m)| *f == name && d.message.contains(m))
                    })
                    .map(|d| d.render(&invalid.config.sources))
                    .collect();
                if !unexpected.is_empty() {
                    failures.push(format!("{}:\n{}", file.display(), unexpected.join("\n")));
                }
                // Every unimplemented thing must be named, never reported without a location.
                for d in invalid
                    .diagnostics
                    .iter()
                    .filter(|d| d.code == "not-implemented")
                {
                    assert!(
                        d.location.is_some(),
                        "{}: unlocated diagnostic {d:?}",
                        file.display()
                    );
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "unexpected diagnostics:\n{}",
        failures.join("\n")
    );
    for required in [
        "api-server-config.yaml",
        "simple-workflow-config.yaml",
        "sms-chat-config.yaml",
    ] {
        assert!(
            valid.iter().any(|v| v == required),
            "{required} should be valid; valid: {valid:?}"
        );
    }
}

/// The original's `http.handler` body: `{"handler":"<name>","message":"Default handler response","status":"success"}` + `\n`.
fn default_body(handler: &str) -> String {
    format!(
        "{{\"handler\":\"{handler}\",\"message\":\"Default handler response\",\"status\":\"success\"}}\n"
    )
}

struct Expect {
    method: &'static str,
    path: &'static str,
    status: StatusCode,
    body: Option<String>,
    allow: Option<&'static str>,
}

fn ok(method: &'static str, path: &'static str, handler: &str) -> Expect {
    Expect {
        method,
        path,
        status: StatusCode::OK,
        body: Some(default_body(handler)),
        allow: None,
    }
}

async fn check_routes(base: &str, expectations: &[Expect]) {
    let http = client();
    for e in expectations {
        let response = http
            .request(
                Method::from_bytes(e.method.as_bytes()).unwrap(),
                format!("{base}{}", e.path),
            )
            .send()
            .await
            .unwrap_or_else(|err| panic!("{} {}: {err}", e.method, e.path));
        let status = response.status();
        let allow = response
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_string());
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let body = response.text().await.unwrap();
        assert_eq!(status, e.status, "{} {}: body {body:?}", e.method, e.path);
        if let Some(expected) = &e.body {
            assert_eq!(&body, expected, "{} {}", e.method, e.path);
            if status == StatusCode::OK && e.method != "HEAD" {
                assert_eq!(
                    content_type.as_deref(),
                    Some("application/json"),
                    "{} {}",
                    e.method,
                    e.path
                );
            }
        }
        if e.allow.is_some() {
            assert_eq!(allow.as_deref(), e.allow, "{} {}", e.method, e.path);
        }
    }
}

fn not_found(path: &'static str) -> Expect {
    Expect {
        method: "GET",
        path,
        status: StatusCode::NOT_FOUND,
        body: Some("404 page not found\n".into()),
        allow: None,
    }
}

fn not_allowed(method: &'static str, path: &'static str, allow: &'static str) -> Expect {
    Expect {
        method,
        path,
        status: StatusCode::METHOD_NOT_ALLOWED,
        body: Some("Method Not Allowed\n".into()),
        allow: Some(allow),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_config_answers_as_the_original() {
    let registry = wf_host::registry().unwrap();
    let app = build_on_loopback(&seed_examples().join("api-server-config.yaml"), &registry);
    let running = app.start(Duration::from_secs(5)).await.expect("starts");
    let base = format!("http://{}", server_addr(&running, "api-http-server"));
    check_routes(
        &base,
        &[
            ok("GET", "/api/users", "users-handler"),
            ok("POST", "/api/users", "users-handler"),
            ok("GET", "/api/products", "products-handler"),
            ok("POST", "/api/products", "products-handler"),
            ok("GET", "/health", "health-handler"),
            Expect {
                method: "HEAD",
                path: "/health",
                status: StatusCode::OK,
                body: Some(String::new()),
                allow: None,
            },
            not_allowed("DELETE", "/api/users", "GET, HEAD, POST"),
            not_allowed("PUT", "/health", "GET, HEAD"),
            not_found("/api/orders"),
            not_found("/"),
        ],
    )
    .await;
    assert_eq!(running.stop(Duration::from_secs(5)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_workflow_config_serves_routes_and_delivers_messages() {
    let registry = wf_host::registry().unwrap();
    let app = build_on_loopback(
        &seed_examples().join("simple-workflow-config.yaml"),
        &registry,
    );
    // dependsOn orders start-up: the router starts after the server it names.
    let order: Vec<&str> = app.start_order().iter().map(|(n, _)| *n).collect();
    let position = |name: &str| order.iter().position(|n| *n == name).unwrap();
    assert!(position("httpServer") < position("httpRouter"));
    assert!(position("httpRouter") < position("userService"));
    assert!(position("messageBroker") < position("notificationService"));

    let running = app.start(Duration::from_secs(5)).await.expect("starts");
    let base = format!("http://{}", server_addr(&running, "httpServer"));
    check_routes(
        &base,
        &[
            ok("GET", "/api/users", "userService"),
            ok("GET", "/health", "healthService"),
            not_allowed("POST", "/api/users", "GET, HEAD"),
            not_found("/api/products"),
        ],
    )
    .await;

    let services = running.state().services().unwrap();
    let broker = services.get::<dyn MessageBroker>("messageBroker").unwrap();
    let delivery = broker
        .publish(
            "user-events",
            Bytes::from_static(br#"{"type":"user.created"}"#),
        )
        .await
        .unwrap();
    // Queued for the one subscriber, whose worker then handles it.
    assert_eq!(delivery.queued, 1);
    let handler = services
        .get::<wf_messaging::handler::LoggingHandler>("notificationService")
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async { handler.received() == 1 }).await,
        "the handler never received the message"
    );
    assert_eq!(running.stop(Duration::from_secs(5)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_chat_config_serves_the_webhook_and_wires_every_topic() {
    let registry = wf_host::registry().unwrap();
    let app = build_on_loopback(&seed_examples().join("sms-chat-config.yaml"), &registry);
    let running = app.start(Duration::from_secs(5)).await.expect("starts");
    let base = format!("http://{}", server_addr(&running, "sms-http-server"));
    check_routes(
        &base,
        &[
            ok("POST", "/sms/webhook", "sms-webhook-handler"),
            ok("GET", "/sms/status", "sms-webhook-handler"),
            not_allowed("GET", "/sms/webhook", "POST"),
            not_found("/sms"),
        ],
    )
    .await;

    let services = running.state().services().unwrap();
    let broker = services.get::<dyn MessageBroker>("message-broker").unwrap();
    assert_eq!(
        broker.subscriptions(),
        [
            ("incoming-sms", "triage-survey-handler"),
            ("triage-complete", "agent-assignment-handler"),
            ("agent-response", "chat-response-handler"),
            ("outgoing-sms", "notification-handler"),
        ]
        .map(|(t, h)| (t.to_string(), h.to_string()))
    );
    for (topic, handler) in broker.subscriptions() {
        let delivery = broker
            .publish(&topic, Bytes::from_static(b"{}"))
            .await
            .unwrap();
        assert_eq!(delivery.queued, 1, "{topic}");
        let handler = services
            .get::<wf_messaging::handler::LoggingHandler>(&handler)
            .unwrap();
        assert!(
            eventually(Duration::from_secs(5), || async { handler.received() == 1 }).await,
            "`{topic}` was never handled"
        );
    }
    assert_eq!(running.stop(Duration::from_secs(5)).await, 0);
}
