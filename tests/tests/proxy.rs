//! `reverseproxy` / `http.proxy` and `http.simple_proxy` against local backends: the
//! original's gateway examples, round robin and failover with health checks, timeouts, header
//! rules, streamed bodies and forwarded-header spoofing.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::{any, get};
use serde_json::{Value, json};
use wf_tests::{client, eventually, raw_get, seed_examples, server_addr, start_yaml};

/// A backend named `name` that answers every path with what it received, `/health` with
/// `200` while `healthy` is set (else `500`), and `/slow` after two seconds.
async fn backend(name: &'static str, healthy: Arc<AtomicBool>) -> String {
    let echo = move |method: axum::http::Method, uri: Uri, headers: HeaderMap, body: Bytes| async move {
        let headers: serde_json::Map<String, Value> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
            .collect();
        let reply = json!({
            "backend": name, "method": method.to_string(), "uri": uri.to_string(),
            "headers": headers, "body_len": body.len(),
        });
        (
            [
                ("content-type", "application/json"),
                ("connection", "x-internal"),
                ("x-internal", "1"),
            ],
            reply.to_string(),
        )
    };
    let app = axum::Router::new()
        .route(
            "/health",
            get(move || {
                let healthy = healthy.clone();
                async move {
                    if healthy.load(Ordering::SeqCst) {
                        StatusCode::OK
                    } else {
                        StatusCode::INTERNAL_SERVER_ERROR
                    }
                }
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                "late"
            }),
        )
        .route(
            "/upload",
            axum::routing::post(|body: Bytes| async move { body }),
        )
        .fallback(any(echo));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn get_json(http: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = http.get(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_gateway_examples_route_to_their_backends() {
    let up = Arc::new(AtomicBool::new(true));
    let users = backend("users", up.clone()).await;
    let products = backend("products", up.clone()).await;
    let orders = backend("orders", up.clone()).await;
    let health = backend("health", up.clone()).await;
    let http = client();
    for file in ["api-gateway-modular-config.yaml", "api-gateway-config.yaml"] {
        let text = std::fs::read_to_string(seed_examples().join(file)).unwrap();
        let text = wf_tests::loopback(&text)
            .replace("http://users-service:8080", &users)
            .replace("http://products-service:8080", &products)
            .replace("http://orders-service:8080", &orders)
            .replace("http://httpbin.org", &health)
            .replace("http://localhost:8091", &health);
        let app = start_yaml(&text).await;
        let gateway = format!("http://{}", server_addr(&app, "gateway-server"));
        let modular = file.contains("modular");

        let (status, seen) = get_json(
            &http,
            &format!("{gateway}/api/users/7?expand=orders"),
            &[
                ("Authorization", "Bearer t"),
                ("X-Request-ID", "r-1"),
                ("X-Secret", "kept-out"),
                ("X-Forwarded-For", "6.6.6.6"),
            ],
        )
        .await;
        assert_eq!(status, 200, "{file}: {seen}");
        assert_eq!(seen["backend"], if modular { "users" } else { "health" });
        // The path is not rewritten; the query goes along.
        assert_eq!(seen["uri"], "/api/users/7?expand=orders");
        let headers = &seen["headers"];
        assert_eq!(headers["authorization"], "Bearer t");
        assert_eq!(headers["x-request-id"], "r-1");
        // Only `forward_headers` reach the backend; the client cannot claim an address.
        assert!(headers.get("x-secret").is_none(), "{headers}");
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
        assert!(
            headers["x-forwarded-host"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:")
        );

        if modular {
            for (path, expected) in [
                ("/api/products", "products"),
                ("/api/orders/9/items", "orders"),
                ("/health/status", "health"),
                ("/anything/else", "health"), // the default backend
            ] {
                let (status, seen) = get_json(&http, &format!("{gateway}{path}"), &[]).await;
                assert_eq!(
                    (status, seen["backend"].as_str()),
                    (200, Some(expected)),
                    "{path}"
                );
            }
            // Hop-by-hop response headers stay on the backend's side.
            let response = http
                .get(format!("{gateway}/api/users"))
                .send()
                .await
                .unwrap();
            assert!(response.headers().get("x-internal").is_none());
        }
        assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_skips_unhealthy_backends_and_failover_keeps_order() {
    let (a_up, b_up) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(true)),
    );
    let a = backend("a", a_up.clone()).await;
    let b = backend("b", b_up.clone()).await;
    let app = start_yaml(&format!(
        r#"
modules:
  - {{name: web, type: http.server, config: {{address: "127.0.0.1:0"}}}}
  - {{name: routes, type: http.router}}
  - name: proxy
    type: http.proxy
    config:
      backend_services: {{a: "{a}", b: "{b}", dead: "http://127.0.0.1:1"}}
      timeout: 1
      health_check: {{path: /health, interval: 50ms, timeout: 1s, unhealthy_threshold: 1}}
      composite_routes:
        spread: {{pattern: /spread, backends: [a, b]}}
        ordered: {{pattern: /ordered, backends: [a, b], strategy: failover}}
        api:
          pattern: /api/v1/
          backends: [b]
          strip_prefix: true
          set_headers: {{X-Gateway: wf}}
          remove_headers: [Cookie]
          response_headers: {{Cache-Control: no-store}}
      routes: {{/gone: dead}}
"#
    ))
    .await;
    let gateway = format!("http://{}", server_addr(&app, "web"));
    let http = client();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (_, body) = get_json(&http, &format!("{gateway}/spread/x"), &[]).await;
        seen.push(body["backend"].as_str().unwrap().to_string());
    }
    seen.sort();
    assert_eq!(seen, ["a", "a", "b", "b"], "round robin");
    let (_, body) = get_json(&http, &format!("{gateway}/ordered"), &[]).await;
    assert_eq!(body["backend"], "a");

    // `a` fails its checks: every request goes to `b`, until `a` recovers.
    a_up.store(false, Ordering::SeqCst);
    let moved = eventually(Duration::from_secs(5), || async {
        get_json(&http, &format!("{gateway}/ordered"), &[]).await.1["backend"] == "b"
    })
    .await;
    assert!(moved, "failover to b");
    for _ in 0..4 {
        let (_, body) = get_json(&http, &format!("{gateway}/spread"), &[]).await;
        assert_eq!(body["backend"], "b");
    }
    // Both down: 503, never a request to a backend known to be down.
    b_up.store(false, Ordering::SeqCst);
    let refused = eventually(Duration::from_secs(5), || async {
        get_json(&http, &format!("{gateway}/spread"), &[]).await.0 == 503
    })
    .await;
    assert!(refused);
    a_up.store(true, Ordering::SeqCst);
    b_up.store(true, Ordering::SeqCst);
    let back = eventually(Duration::from_secs(5), || async {
        get_json(&http, &format!("{gateway}/ordered"), &[]).await.1["backend"] == "a"
    })
    .await;
    assert!(back, "a is back");

    // Prefix stripped, headers rewritten both ways.
    let response = http
        .get(format!("{gateway}/api/v1/users/3"))
        .header("Cookie", "session=1")
        .header("X-Gateway", "spoofed")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["uri"], "/users/3");
    assert_eq!(body["headers"]["x-gateway"], "wf");
    assert!(body["headers"].get("cookie").is_none());

    // No climbing out of the routed prefix: `..` and `.` segments, raw or encoded, are 400.
    let gateway_addr = server_addr(&app, "web");
    for path in [
        "/api/v1/../secret",
        "/api/v1/%2e%2e/secret",
        "/api/v1/%2E%2e/%2e%2e/x",
        "/api/v1/a%2f..%2fb",
        "/spread/./x",
    ] {
        assert_eq!(raw_get(gateway_addr, path).await.0, 400, "{path}");
    }
    // Headers a client could claim an address with never reach the backend.
    let response = http
        .get(format!("{gateway}/api/v1/who"))
        .header("Forwarded", "for=6.6.6.6")
        .header("X-Real-IP", "6.6.6.6")
        .header("X-Forwarded-Proto", "https")
        .send()
        .await
        .unwrap();
    let seen: Value = response.json().await.unwrap();
    assert!(seen["headers"].get("forwarded").is_none(), "{seen}");
    assert!(seen["headers"].get("x-real-ip").is_none());
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");

    // A body streams through both ways unchanged.
    let upload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let echoed = http
        .post(format!("{gateway}/api/v1/upload"))
        .body(upload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.bytes().await.unwrap().as_ref(), upload.as_slice());

    // A slow backend is 504 (JSON, no details); one that fails its checks gets nothing.
    let (status, body) = get_json(&http, &format!("{gateway}/api/v1/slow"), &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (504, Some("gateway timeout"))
    );
    let (status, body) = get_json(&http, &format!("{gateway}/gone"), &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("no healthy backend"))
    );
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simple_proxy_forwards_by_the_longest_prefix() {
    let up = Arc::new(AtomicBool::new(true));
    let short = backend("short", up.clone()).await;
    let long = backend("long", up).await;
    let app = start_yaml(&format!(
        r#"
modules:
  - {{name: web, type: http.server, config: {{address: "127.0.0.1:0"}}}}
  - {{name: routes, type: http.router}}
  - {{name: proxy, type: http.simple_proxy, config: {{targets: {{/api: "{short}", /api/v2: "{long}", /dead: "http://127.0.0.1:1"}}}}}}
workflows:
  http:
    routes:
      - {{method: GET, path: "/{{path...}}", handler: proxy}}
"#
    ))
    .await;
    let gateway = format!("http://{}", server_addr(&app, "web"));
    let http = client();
    let (_, body) = get_json(&http, &format!("{gateway}/api/v2/items"), &[]).await;
    assert_eq!(
        (body["backend"].as_str(), body["uri"].as_str()),
        (Some("long"), Some("/api/v2/items"))
    );
    let (_, body) = get_json(&http, &format!("{gateway}/api/v1"), &[]).await;
    assert_eq!(body["backend"], "short");
    // A prefix covers whole segments: `/api` is not `/apiary`.
    let (status, _) = get_json(&http, &format!("{gateway}/apiary"), &[]).await;
    assert_eq!(status, 502);
    let (status, body) = get_json(&http, &format!("{gateway}/other"), &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (502, Some("no backend configured for path"))
    );
    // An unreachable backend: 502, the address only in the log.
    let (status, body) = get_json(&http, &format!("{gateway}/dead/x"), &[]).await;
    assert_eq!((status, body), (502, json!({"error": "bad gateway"})));
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

#[test]
fn proxy_mistakes_are_located() {
    let rendered = wf_tests::invalid_yaml(
        r#"
modules:
  - {name: routes, type: http.router}
  - {name: gateway, type: reverseproxy}
  - {name: simple, type: http.simple_proxy, config: {targets: {api: "localhost:80"}}}
reverseproxy:
  backend_services: {users: "ftp://users", ok: "http://ok:80"}
  default_backend: nobody
  forward_headers: ["bad header"]
  composite_routes:
    "/a": {pattern: "/a/{id}", backends: [ok]}
    "/b": {backends: [ghost], strategy: merge}
    "/c": {pattern: /b, backends: [ok], strategy: random}
  health_check: {interval: soon}
"#,
    );
    for expected in [
        "`ftp://users` is not an `http://` or `https://` address",
        "`nobody` is not one of `backend_services`",
        "`bad header` is not a header name",
        "`/a/{id}` is not a path prefix",
        "`ghost` is not one of `backend_services`",
        "the `merge` strategy (one answer from several backends) is not implemented",
        "`random` is not a strategy",
        "prefix `/b` is routed twice",
        "`api` is not a path prefix",
        "`localhost:80` is not an `http://` or `https://` address",
    ] {
        assert!(
            rendered.contains(expected),
            "missing {expected:?} in\n{rendered}"
        );
    }
    // Problems in the top-level section are reported there.
    assert!(rendered.contains("app.yaml:8:"), "{rendered}");
}
