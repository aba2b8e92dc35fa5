//! The `integration` workflow end to end: the original's `integration-workflow.yaml` against
//! local stand-ins for its four services (transforms, `onSuccess` / `onError` notifications, the
//! webhook receiver, the registry's listing and `execute`), and a signed webhook connector
//! that runs a pipeline.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::{Value, json};
use wf_tests::{client, collect, running_broker, seed_examples, server_addr, start_yaml};

/// One request a stand-in service saw.
#[derive(Clone, Debug)]
struct Seen {
    call: String,
    auth: String,
    body: Value,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn record(log: &Log, call: String, headers: &HeaderMap, body: &[u8]) {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = serde_json::from_slice(body).unwrap_or(Value::Null);
    log.lock().unwrap().push(Seen { call, auth, body });
}

fn reply(
    status: StatusCode,
    body: Value,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
}

/// The CRM, inventory, payment and email services of the example, under one address:
/// `/crm`, `/inventory`, `/payment`, `/email`. Customer `ghost` does not exist.
async fn services(log: Log) -> String {
    let (l1, l2, l3, l4, l5) = (log.clone(), log.clone(), log.clone(), log.clone(), log);
    let app = axum::Router::new()
        .route(
            "/crm/customers/{id}",
            get(move |Path(id): Path<String>, h: HeaderMap| async move {
                record(&l1, format!("GET /crm/customers/{id}"), &h, b"");
                if id == "ghost" {
                    return reply(StatusCode::NOT_FOUND, json!({"error": "no such customer"}));
                }
                reply(
                    StatusCode::OK,
                    json!({"id": format!("crm-{id}"), "tier": "gold"}),
                )
            }),
        )
        .route(
            "/inventory/products/{id}/inventory",
            get(
                move |Path(id): Path<String>, RawQuery(q): RawQuery, h: HeaderMap| async move {
                    let q = q.unwrap_or_default();
                    record(
                        &l2,
                        format!("GET /inventory/products/{id}/inventory?{q}"),
                        &h,
                        b"",
                    );
                    reply(
                        StatusCode::OK,
                        json!({"available": 7, "preferredLocation": "WH-2"}),
                    )
                },
            ),
        )
        .route(
            "/payment/transactions",
            post(move |h: HeaderMap, body: axum::body::Bytes| async move {
                record(&l3, "POST /payment/transactions".into(), &h, &body);
                let amount = serde_json::from_slice::<Value>(&body).unwrap()["amount"].clone();
                reply(
                    StatusCode::CREATED,
                    json!({"transactionId": "tx-1", "amount": amount}),
                )
            }),
        )
        .route(
            "/inventory/products/{id}/reserve",
            post(
                move |Path(id): Path<String>, h: HeaderMap, body: axum::body::Bytes| async move {
                    record(
                        &l4,
                        format!("POST /inventory/products/{id}/reserve"),
                        &h,
                        &body,
                    );
                    reply(StatusCode::OK, json!({"reserved": true}))
                },
            ),
        )
        .route(
            "/email/send",
            post(move |h: HeaderMap, body: axum::body::Bytes| async move {
                record(&l5, "POST /email/send".into(), &h, &body);
                reply(StatusCode::ACCEPTED, json!({"queued": true}))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// The example, with its services, its server and its webhook port moved to loopback, and its
/// two routes sent to the registry. The example routes them to an `api.handler`, a plain
/// resource store that cannot run integrations (in the original, nothing could).
fn example(base: &str) -> String {
    let text = std::fs::read_to_string(seed_examples().join("integration-workflow.yaml")).unwrap();
    wf_tests::loopback(&text)
        .replace("https://api.crm-provider.com/v1", &format!("{base}/crm"))
        .replace(
            "https://api.payment-provider.com/v2",
            &format!("{base}/payment"),
        )
        .replace("https://api.email-service.com/v3", &format!("{base}/email"))
        .replace(
            "https://api.inventory-system.com",
            &format!("{base}/inventory"),
        )
        .replace("port: 8081", "address: \"127.0.0.1:0\"")
        .replace("handler: integration-api", "handler: integration-registry")
}

fn calls(log: &Log) -> Vec<Seen> {
    log.lock().unwrap().clone()
}

fn find(log: &Log, prefix: &str) -> Seen {
    calls(log)
        .into_iter()
        .find(|s| s.call.starts_with(prefix))
        .unwrap_or_else(|| panic!("no call {prefix}; saw {:?}", calls(log)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_integration_example_runs_against_local_services() {
    let log: Log = Arc::default();
    let base = services(log.clone()).await;
    let app = start_yaml(&example(&base)).await;
    let bus = running_broker(&app, "integration-broker");
    let heard = collect(
        &bus,
        &[
            "inventory-updated",
            "order-error-handler",
            "webhooks.webhook-receiver",
        ],
    );
    let http = client();
    let api = format!(
        "http://{}/api/integrations",
        server_addr(&app, "http-server")
    );

    // An order, through the registry's `execute`.
    let order = json!({
        "orderId": "o-1", "customerId": "42", "productId": "p/9", "locationId": "",
        "quantity": 2, "amount": 10, "totalAmount": 19.5, "currency": "EUR",
        "paymentMethodId": "ignored", "paymentMethod": {"id": "pm-7"},
        "customerEmail": "ada@example.com", "estimatedDelivery": "2026-12-01"
    });
    let response = http
        .post(format!("{api}/integration/execute"))
        .json(&order)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let outcome: Value = response.json().await.unwrap();
    assert_eq!(outcome["status"], "completed", "{outcome}");
    assert!(outcome["run_id"].is_string());
    assert_eq!(outcome["results"]["send-confirmation"]["status_code"], 202);

    // Each service got its call, with its own credentials.
    let customer = find(&log, "GET /crm/customers/42");
    assert_eq!(customer.auth, "Bearer crm-token");
    // `p/9` arrived as one segment (the stand-in's router decodes it): percent-encoded.
    let stock = find(&log, "GET /inventory/products/p/9/inventory");
    assert_eq!(
        stock.call,
        "GET /inventory/products/p/9/inventory?locationId="
    );
    assert_eq!(stock.auth, "Bearer inventory-token");
    // The payment body: `input`, overridden by the transform (total, not amount; the
    // customer as the CRM knows it; the nested payment method).
    let payment = find(&log, "POST /payment/transactions");
    assert_eq!(payment.auth, "Basic cGF5bWVudHM6cGF5bWVudHMtcGFzc3dvcmQ=");
    assert_eq!(
        payment.body,
        json!({"amount": 19.5, "currency": "EUR", "customerId": "crm-42",
               "paymentMethodId": "pm-7", "description": "Order o-1"})
    );
    // `data.locationId || check-inventory.preferredLocation`: the empty location falls back.
    // The path parameter `productId` is taken out of the body, as with `input`.
    let reserve = find(&log, "POST /inventory/products/p/9/reserve");
    assert_eq!(
        reserve.body,
        json!({"quantity": 2, "orderId": "o-1", "locationId": "WH-2"})
    );
    // A later step reads an earlier response (`${process-payment.amount}`).
    let email = find(&log, "POST /email/send");
    assert_eq!(email.auth, "Bearer email-token");
    assert_eq!(
        email.body,
        json!({"to": "ada@example.com", "template": "order-confirmation",
               "variables": {"orderId": "o-1", "total": 19.5, "estimatedDelivery": "2026-12-01"}})
    );
    // `onSuccess: inventory-updated` announced the reservation.
    let updated = heard.wait_for("inventory-updated", 1).await;
    assert_eq!(updated[0]["status"], "succeeded");
    assert_eq!(updated[0]["step"], "update-inventory");
    assert_eq!(updated[0]["result"], json!({"reserved": true}));
    assert_eq!(updated[0]["run_id"], outcome["run_id"]);

    // An unknown customer: `onError: order-error-handler` hears of it, and the run goes on
    // with the error as the step's output, as the original did.
    let mut ghost = order.clone();
    ghost["customerId"] = json!("ghost");
    let response = http
        .post(format!("{api}/integration/execute"))
        .json(&ghost)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let outcome: Value = response.json().await.unwrap();
    let failed = &outcome["results"]["check-customer"];
    assert!(
        failed["error"].as_str().unwrap().contains("404"),
        "{failed}"
    );
    assert_eq!(failed["notified"], "order-error-handler");
    let errors = heard.wait_for("order-error-handler", 1).await;
    assert_eq!(errors[0]["status"], "failed");
    assert_eq!(errors[0]["step"], "check-customer");
    assert_eq!(errors[0]["error_kind"], "internal");

    // The registry lists the integration, its connectors without credentials, and its runs.
    let listing: Value = http.get(&api).send().await.unwrap().json().await.unwrap();
    let text = listing.to_string();
    assert!(
        !text.contains("crm-token") && !text.contains("payments-password"),
        "{text}"
    );
    let integration = &listing["integrations"][0];
    assert_eq!(integration["name"], "integration");
    assert_eq!(integration["connectors"].as_array().unwrap().len(), 5);
    assert_eq!(integration["steps"][2]["action"], "POST /transactions");
    assert_eq!(integration["runs"]["runs"], 2);
    assert_eq!(integration["runs"]["last_succeeded"], true);
    // Mistakes of the caller are 4xx.
    let missing = http
        .post(format!("{api}/nothing/execute"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let garbled = http
        .post(format!("{api}/integration/execute"))
        .body("[1, 2]")
        .send()
        .await
        .unwrap();
    assert_eq!(garbled.status(), 400);

    // The webhook receiver: events are published on the broker.
    let hook = app.state().listening("webhook:webhook-receiver").unwrap();
    let url = format!("http://{hook}/webhooks/external-events");
    let accepted = http
        .post(&url)
        .json(&json!({"type": "order.shipped", "orderId": "o-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    let events = heard.wait_for("webhooks.webhook-receiver", 1).await;
    assert_eq!(
        events[0],
        json!({"type": "order.shipped", "orderId": "o-1"})
    );
    let not_json = http.post(&url).body("shipped!").send().await.unwrap();
    assert_eq!(not_json.status(), 400);
    assert_eq!(http.get(&url).send().await.unwrap().status(), 405);
    assert_eq!(heard.on("webhooks.webhook-receiver").len(), 1);

    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_runs_its_pipeline() {
    let app = start_yaml(
        r#"
modules:
  - {name: bus, type: messaging.broker}
pipelines:
  on-payment:
    steps:
      - {name: answer, type: step.set, config: {values: {seen: "{{ .paymentId }}"}}}
workflows:
  integration:
    name: payments
    connectors:
      - name: psp-events
        type: webhook
        config: {path: /psp, address: "127.0.0.1:0", pipeline: on-payment, secret: whsec-1, maxBodyBytes: 256}
"#,
    )
    .await;
    let hook = app.state().listening("webhook:psp-events").unwrap();
    let url = format!("http://{hook}/psp");
    let http = client();
    let body = br#"{"paymentId":"pay-9"}"#;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let signed = wf_outbound_signature;

    let response = http
        .post(&url)
        .header("X-Webhook-Timestamp", &now)
        .header("X-Webhook-Signature", signed(&now, body))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["seen"], "pay-9");

    // Unsigned, tampered, replayed from long ago, too large: refused before the pipeline.
    let unsigned = http.post(&url).body(body.to_vec()).send().await.unwrap();
    assert_eq!(unsigned.status(), 401);
    let tampered = http
        .post(&url)
        .header("X-Webhook-Timestamp", &now)
        .header("X-Webhook-Signature", signed(&now, body))
        .body(br#"{"paymentId":"pay-10"}"#.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(tampered.status(), 401);
    let old = "1000000000";
    let replayed = http
        .post(&url)
        .header("X-Webhook-Timestamp", old)
        .header("X-Webhook-Signature", signed(old, body))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), 401);
    let large = vec![b' '; 512];
    let too_large = http
        .post(&url)
        .header("X-Webhook-Timestamp", &now)
        .header("X-Webhook-Signature", signed(&now, &large))
        .body(large)
        .send()
        .await
        .unwrap();
    assert_eq!(too_large.status(), 413);
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

/// `sha256=<hex>` of `<timestamp>.<body>` under the test's secret, computed here from the
/// scheme's definition rather than with wf's own signer.
fn wf_outbound_signature(timestamp: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"whsec-1").unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

#[test]
fn integration_mistakes_are_located() {
    let rendered = wf_tests::invalid_yaml(
        r#"
modules:
  - {name: shelf, type: messaging.handler}
workflows:
  integration:
    registry: shelf
    connectors:
      - {name: crm, type: http, config: {baseURL: "not a url", authType: bearer}}
      - {name: hook, type: webhook, config: {path: "/in/{id}", port: 8081, pipeline: nowhere, secret: ""}}
      - {name: db, type: database, config: {driver: postgres, dsn: "x"}}
    steps:
      - {name: a, connector: nowhere, action: "fetch customers"}
      - {name: a, connector: crm, action: "GET /z", input: {q: "{{ .secret }}"}}
      - {name: b, connector: crm, action: "GET /x", input: {v: "${later.id}"}, transform: "{v: later.id}"}
      - {name: later, connector: hook, action: "GET /y", onSuccess: done}
      - {name: c, connector: crm, action: "GET /c", transform: "{\n  \"x\": data.a\n  \"y\": 1\n}"}
      - {name: d, connector: crm, action: "GET /d", transform: "data.a"}
"#,
    );
    for expected in [
        "`baseURL` is not an absolute URL",
        "`authType: bearer` needs a `token`",
        "`shelf` is not a `workflow.registry` module",
        "a webhook connector's `path` is a fixed path",
        "no pipeline named `nowhere`",
        "the secret is empty",
        "`database` connectors are not implemented in this build yet",
        "no connector named `nowhere`",
        "`fetch customers` is not `METHOD /path`",
        "`${later.id}` reads step `later`, which does not run before `b`",
        "the transform reads `later`, which is neither `data` nor a step that runs before this one",
        "`hook` is a webhook connector: it receives events, steps cannot call it",
        "there is no message broker in this application",
        "line 3, column 3 of the transform: expected `}` or `,` after a value",
        "a transform is an object",
        "step `a` is declared twice",
        "are not allowed in integration values",
    ] {
        assert!(
            rendered.contains(expected),
            "missing {expected:?} in\n{rendered}"
        );
    }
}
