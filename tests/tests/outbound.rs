//! `webhook.sender` and `notification.slack` against a local HTTP receiver: signatures,
//! retries, dead letters that survive a restart, and replay over HTTP and the CLI.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use std::sync::Arc;

use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;
use wf_host::commands::{DeadLetterAction, dead_letters_command};
use wf_tests::{
    TempDir, client, http_receiver as receiver, running_broker, server_addr, start_yaml,
};

fn app_yaml(url: &str, dir: &std::path::Path) -> String {
    format!(
        r#"
modules:
  - {{name: web, type: http.server, config: {{address: "127.0.0.1:0"}}}}
  - {{name: routes, type: http.router}}
  - {{name: bus, type: messaging.broker, config: {{delivery: sync}}}}
  - name: hooks
    type: webhook.sender
    config:
      url: "{url}"
      secret: s3cret
      headers: {{X-Source: wf}}
      maxRetries: 2
      initialBackoff: 10ms
      maxBackoff: 50ms
      deadLetterDir: "{}"
      api: {{token: admin-token}}
workflows:
  messaging:
    subscriptions:
      - {{topic: orders, handler: hooks}}
"#,
        dir.display()
    )
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_signed_and_retried_with_the_same_id() {
    let dir = TempDir::new("webhook-ok");
    let (receiver, url) =
        receiver(&[StatusCode::BAD_GATEWAY, StatusCode::SERVICE_UNAVAILABLE]).await;
    let app = start_yaml(&app_yaml(&url, &dir.0)).await;
    let bus = running_broker(&app, "bus");
    let delivery = bus
        .publish("orders", bytes::Bytes::from_static(br#"{"id":7}"#))
        .await
        .unwrap();
    assert_eq!(delivery.delivered, 1);

    let requests = receiver.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 3, "two failures, then success");
    let ids: Vec<&str> = requests
        .iter()
        .map(|(h, _)| header(h, "x-webhook-id"))
        .collect();
    assert!(
        !ids[0].is_empty() && ids.iter().all(|id| *id == ids[0]),
        "{ids:?}"
    );
    for (headers, body) in &requests {
        assert_eq!(&body[..], br#"{"id":7}"#);
        assert_eq!(header(headers, "x-source"), "wf");
        assert_eq!(header(headers, "content-type"), "application/json");
        // The receiver's check: HMAC-SHA256 over "<timestamp>.<body>".
        let timestamp = header(headers, "x-webhook-timestamp");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(format!("{timestamp}.").as_bytes());
        mac.update(body);
        let expected: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            header(headers, "x-webhook-signature"),
            format!("sha256={expected}")
        );
    }
    assert!(
        std::fs::read_dir(&dir.0).unwrap().next().is_none(),
        "no dead letters"
    );
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_become_dead_letters_that_survive_a_restart_and_replay() {
    let dir = TempDir::new("webhook-dead");
    // Three 500s use up the first delivery (1 + 2 retries); the 400 is final at once.
    let (receiver, url) = receiver(&[
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::BAD_REQUEST,
    ])
    .await;
    let yaml = app_yaml(&url, &dir.0);
    let app = start_yaml(&yaml).await;
    let bus = running_broker(&app, "bus");
    for body in [r#"{"n":1}"#, r#"{"n":2}"#] {
        // Handled (kept as a dead letter), so the broker does not redeliver on top.
        let delivery = bus
            .publish("orders", bytes::Bytes::from(body))
            .await
            .unwrap();
        assert_eq!(delivery.delivered, 1);
    }
    assert_eq!(receiver.requests.lock().unwrap().len(), 4);
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);

    // A new process (the CLI) sees both letters.
    let config = dir.0.join("app.yaml");
    std::fs::write(&config, &yaml).unwrap();
    let registry = wf_host::registry().unwrap();
    let (code, out, err) = dead_letters_command(
        &config,
        None,
        DeadLetterAction::List { json: true },
        &registry,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let letters: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(letters.len(), 2, "{out}");
    let by_body = |n: &str| {
        letters
            .iter()
            .find(|l| l["body"] == json!(format!("{{\"n\":{n}}}")))
            .unwrap()
            .clone()
    };
    let (first, second) = (by_body("1"), by_body("2"));
    assert_eq!(first["attempts"], 3);
    assert!(first["error"].as_str().unwrap().contains("500"), "{first}");
    assert_eq!(second["attempts"], 1, "a 400 is not retried");
    assert_eq!(first["topic"], "orders");

    // Restarted app: the API lists them, refuses without the token, and replays one.
    let app = start_yaml(&yaml).await;
    let base = format!(
        "http://{}/api/webhooks/hooks/dead-letters",
        server_addr(&app, "web")
    );
    let http = client();
    let denied = http.get(&base).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    let listed = admin(&http, Method::GET, &base)
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let id = first["id"].as_str().unwrap();
    let replayed = admin(&http, Method::POST, &format!("{base}/{id}/replay")).await;
    assert_eq!(replayed.status(), 200);
    let received = receiver.requests.lock().unwrap().clone();
    assert_eq!(received.len(), 5);
    assert_eq!(&received[4].1[..], br#"{"n":1}"#);
    assert_eq!(
        header(&received[4].0, "x-webhook-id"),
        id,
        "same id as the original"
    );
    let missing = admin(&http, Method::POST, &format!("{base}/{id}/replay")).await;
    assert_eq!(missing.status(), 404, "delivered letters are removed");

    // The other one is replayed from the CLI.
    let other = second["id"].as_str().unwrap().to_string();
    let (code, out, err) = dead_letters_command(
        &config,
        None,
        DeadLetterAction::Replay { id: other },
        &registry,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("delivered"), "{out}");
    assert_eq!(receiver.requests.lock().unwrap().len(), 6);
    let left = admin(&http, Method::GET, &base)
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(left, json!([]));
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_notifications_post_text_channel_and_username() {
    let (receiver, url) = receiver(&[StatusCode::OK, StatusCode::OK, StatusCode::FORBIDDEN]).await;
    let app = start_yaml(&format!(
        r##"
modules:
  - {{name: event-broker, type: messaging.broker, config: {{delivery: sync}}}}
  - name: slack-notifier
    type: notification.slack
    config: {{webhookURL: "{url}", channel: "#alerts", username: workflow-bot}}
workflows:
  messaging:
    subscriptions:
      - {{topic: events.received, handler: slack-notifier}}
"##
    ))
    .await;
    let bus = running_broker(&app, "event-broker");
    let mut deliveries = Vec::new();
    for body in [
        r#"{"text":"disk full"}"#,
        r#"{"level":"warn"}"#,
        r#"{"text":"x"}"#,
    ] {
        let delivery = bus
            .publish("events.received", bytes::Bytes::from(body))
            .await
            .unwrap();
        deliveries.push((delivery.delivered, delivery.failed));
    }
    // Slack refusing a post (403) is a failed delivery, which the broker counts and could
    // redeliver.
    assert_eq!(deliveries, [(1, 0), (1, 0), (0, 1)]);
    let posted: Vec<Value> = receiver
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|(_, b)| serde_json::from_slice(b).unwrap())
        .collect();
    assert_eq!(
        posted[0],
        json!({"text": "disk full", "channel": "#alerts", "username": "workflow-bot"})
    );
    assert_eq!(posted[1]["text"], r#"[events.received] {"level":"warn"}"#);
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

/// The integration example's shape against a local "CRM" and "shop": bearer and basic auth,
/// percent-encoded path and query values, references to earlier responses, retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_integration_calls_its_connectors_in_order() {
    use axum::extract::{Path, RawQuery};
    use axum::http::HeaderMap;
    use axum::routing::{get, post};
    use std::sync::atomic::{AtomicU32, Ordering};

    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let flaky = Arc::new(AtomicU32::new(0));
    let (s1, s2, f) = (seen.clone(), seen.clone(), flaky.clone());
    let backend = axum::Router::new()
        .route(
            "/customers/{id}",
            get(
                move |Path(id): Path<String>, RawQuery(q): RawQuery, h: HeaderMap| {
                    let seen = s1.clone();
                    async move {
                        let auth = h
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let client = h
                            .get("x-client")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        seen.lock().unwrap().push(format!(
                            "GET id={id} query={} auth={auth} client={client}",
                            q.unwrap_or_default()
                        ));
                        json_reply(
                            axum::http::StatusCode::OK,
                            json!({"id": id, "tier": "gold"}),
                        )
                    }
                },
            ),
        )
        .route(
            "/orders",
            post(move |h: HeaderMap, body: axum::body::Bytes| {
                let (seen, flaky) = (s2.clone(), f.clone());
                async move {
                    if flaky.fetch_add(1, Ordering::SeqCst) == 0 {
                        return json_reply(
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            json!({"error": "busy"}),
                        );
                    }
                    let auth = h
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    seen.lock().unwrap().push(format!(
                        "POST auth={auth} body={}",
                        String::from_utf8_lossy(&body)
                    ));
                    json_reply(axum::http::StatusCode::CREATED, json!({"order": 1}))
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, backend).await.unwrap() });

    let app = start_yaml(&format!(
        r#"
modules:
  - {{name: bus, type: messaging.broker}}
triggers:
  event:
    subscriptions:
      - {{topic: orders, pipeline: order-sync}}
workflows:
  integration:
    name: order-sync
    connectors:
      - name: crm
        type: http
        config: {{baseURL: "{base}", authType: bearer, token: "${{WF_TEST_CRM_TOKEN:-t0k}}", headers: {{X-Client: wf}}, requestsPerMinute: 600}}
      - name: shop
        type: rest
        config: {{baseURL: "{base}", authType: basic, username: ada, password: pw, timeoutSeconds: 5}}
    steps:
      - name: check-customer
        connector: crm
        action: "GET /customers/{{customerId}}"
        input: {{customerId: "${{data.customerId}}", expand: "orders & more"}}
      - name: place
        connector: shop
        action: "POST /orders"
        input: {{customer: "${{check-customer.id}}", tier: "${{check-customer.tier}}", amount: "${{data.amount}}"}}
        retryCount: 2
        retryDelay: 10ms
"#
    ))
    .await;
    let pipeline = app.state().pipelines().get("order-sync").unwrap();
    let mut data = serde_json::Map::new();
    data.insert("customerId".into(), json!("c/1?x"));
    data.insert("amount".into(), json!(12.5));
    let outcome = pipeline
        .run(data, wf_engine::Extensions::default())
        .await
        .unwrap();
    assert_eq!(outcome.context.steps["place"]["status_code"], 201);
    let seen_all = seen.clone();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen[0], "GET id=c/1?x query=expand=orders%20%26%20more auth=Bearer t0k client=wf",
        "the id arrives whole, as one percent-encoded segment"
    );
    // `ada:pw` in base64; the 503 was retried.
    assert!(
        seen[1].starts_with("POST auth=Basic YWRhOnB3 body="),
        "{seen:?}"
    );
    let body: Value = serde_json::from_str(seen[1].split_once("body=").unwrap().1).unwrap();
    assert_eq!(
        body,
        json!({"customer": "c/1?x", "tier": "gold", "amount": 12.5})
    );
    assert_eq!(flaky.load(Ordering::SeqCst), 2);

    // A value that would climb the path fails the step instead of calling another URL.
    let mut data = serde_json::Map::new();
    data.insert("customerId".into(), json!(".."));
    data.insert("amount".into(), json!(1));
    let error = pipeline
        .run(data, wf_engine::Extensions::default())
        .await
        .unwrap_err();
    assert!(
        error.message.contains("cannot be a path segment"),
        "{error}"
    );
    assert_eq!(seen_count(&seen_all), 2, "nothing more was called");
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

/// A JSON answer (the tests' axum is built without its `json` feature).
fn json_reply(
    status: axum::http::StatusCode,
    body: Value,
) -> (
    axum::http::StatusCode,
    [(axum::http::HeaderName, &'static str); 1],
    String,
) {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

fn seen_count(seen: &std::sync::Mutex<Vec<String>>) -> usize {
    seen.lock().unwrap().len()
}

/// A request to the dead-letter API with its admin token.
async fn admin(http: &reqwest::Client, method: Method, url: &str) -> reqwest::Response {
    http.request(method, url)
        .bearer_auth("admin-token")
        .send()
        .await
        .unwrap()
}
