//! HTTP middleware end to end: CORS preflights and origins (also in front of authentication),
//! rate limits under a burst (and spoofed `X-Forwarded-For`), request ids reaching pipelines,
//! security headers and request logging.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use wf_tests::{client, invalid_yaml, server_addr, start_yaml};

const APP: &str = r#"
modules:
  - {name: web, type: http.server, config: {address: "127.0.0.1:0"}}
  - {name: routes, type: http.router}
  - name: cors
    type: http.middleware.cors
    config:
      allowedOrigins: ["https://shop.example"]
      allowedHeaders: [Content-Type, Authorization]
      exposedHeaders: [X-Request-ID]
      allowCredentials: true
      maxAge: 600
  - {name: open-cors, type: http.middleware.cors}
  - {name: request-id, type: http.middleware.requestid}
  - {name: limit, type: http.middleware.ratelimit, config: {requestsPerMinute: 1, burstSize: 3}}
  - {name: proxied-limit, type: http.middleware.ratelimit, config: {requestsPerMinute: 1, burstSize: 1, trustForwardedFor: true}}
  - {name: headers, type: http.middleware.securityheaders, config: {permissionsPolicy: ""}}
  - {name: log, type: http.middleware.logging, config: {logLevel: debug}}
  - {name: authn, type: http.middleware.auth, config: {secretKey: "a-test-secret-that-is-32-bytes-long!"}}
workflows:
  http:
    routes:
      - method: GET
        path: /private
        middlewares: [cors, authn]
        steps: [{name: ok, type: step.set, config: {values: {ok: true}}}]
      - method: GET
        path: /public
        middlewares: [open-cors, request-id, log, headers]
        steps: [{name: echo, type: step.set, config: {values: {request_id: "{{ meta.request_id }}"}}}]
      - method: GET
        path: /limited
        middlewares: [limit]
        steps: [{name: ok, type: step.set, config: {values: {ok: true}}}]
      - method: GET
        path: /behind-proxy
        middlewares: [proxied-limit]
        steps: [{name: ok, type: step.set, config: {values: {ok: true}}}]
"#;

async fn send(
    http: &reqwest::Client,
    method: Method,
    url: String,
    headers: Vec<(&str, &str)>,
) -> reqwest::Response {
    let mut req = http.request(method, url);
    for (name, value) in headers {
        req = req.header(name, value);
    }
    req.send().await.unwrap()
}

fn header<'a>(res: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    res.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_preflights_before_authentication_and_only_for_allowed_origins() {
    let app = start_yaml(APP).await;
    let base = format!("http://{}", server_addr(&app, "web"));
    let http = client();
    let preflight = |origin: &'static str| {
        send(
            &http,
            Method::OPTIONS,
            format!("{base}/private"),
            vec![
                ("origin", origin),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "authorization"),
            ],
        )
    };

    // No credentials on a preflight, yet no 401: the CORS middleware answers it.
    let res = preflight("https://shop.example").await;
    assert_eq!(res.status(), 204);
    assert_eq!(
        header(&res, "access-control-allow-origin"),
        Some("https://shop.example")
    );
    assert_eq!(
        header(&res, "access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        header(&res, "access-control-allow-methods"),
        Some("GET, POST, PUT, DELETE, OPTIONS")
    );
    assert_eq!(
        header(&res, "access-control-allow-headers"),
        Some("Content-Type, Authorization")
    );
    assert_eq!(header(&res, "access-control-max-age"), Some("600"));
    assert_eq!(header(&res, "vary"), Some("Origin"));

    let res = preflight("https://evil.example").await;
    assert_eq!(res.status(), 403);
    assert_eq!(header(&res, "access-control-allow-origin"), None);

    // Actual requests: the allowed origin may read the answer (even a 401), others may not.
    let res = send(
        &http,
        Method::GET,
        format!("{base}/private"),
        vec![("origin", "https://shop.example")],
    )
    .await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        header(&res, "access-control-allow-origin"),
        Some("https://shop.example")
    );
    let res = send(
        &http,
        Method::GET,
        format!("{base}/private"),
        vec![("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(header(&res, "access-control-allow-origin"), None);

    // `*` is sent as `*`, never an echo of the caller's origin.
    let res = send(
        &http,
        Method::GET,
        format!("{base}/public"),
        vec![("origin", "https://any.example")],
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "access-control-allow-origin"), Some("*"));
    assert_eq!(header(&res, "vary"), None);
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_limit_gets_429_and_forwarded_for_is_believed_only_when_trusted() {
    let app = start_yaml(APP).await;
    let base = format!("http://{}", server_addr(&app, "web"));
    let http = client();
    let mut statuses = Vec::new();
    for i in 0..6 {
        // A new X-Forwarded-For each time: not trusted here, so still the same client.
        let spoofed = format!("203.0.113.{i}");
        let res = send(
            &http,
            Method::GET,
            format!("{base}/limited"),
            vec![("x-forwarded-for", &spoofed)],
        )
        .await;
        statuses.push(res.status().as_u16());
        if res.status() == 429 {
            let retry: u64 = header(&res, "retry-after").unwrap().parse().unwrap();
            assert!((1..=60).contains(&retry), "{retry}");
            let body: Value = res.json().await.unwrap();
            assert_eq!(body, json!({"error": "rate limit exceeded"}));
        }
    }
    assert_eq!(&statuses[..3], [200, 200, 200], "{statuses:?}");
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");

    // Behind a trusted proxy, each forwarded client has its own bucket.
    let behind = |client: &'static str| {
        send(
            &http,
            Method::GET,
            format!("{base}/behind-proxy"),
            vec![("x-forwarded-for", client)],
        )
    };
    assert_eq!(behind("203.0.113.9, 198.51.100.1").await.status(), 200);
    assert_eq!(behind("198.51.100.1").await.status(), 429);
    // Only the address the proxy appended counts: a made-up first entry changes nothing.
    assert_eq!(behind("192.0.2.77, 198.51.100.1").await.status(), 429);
    assert_eq!(behind("198.51.100.2").await.status(), 200);
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_reach_pipelines_and_security_headers_are_set() {
    let app = start_yaml(APP).await;
    let base = format!("http://{}", server_addr(&app, "web"));
    let http = client();

    let res = send(
        &http,
        Method::GET,
        format!("{base}/public"),
        vec![("x-request-id", "abc-123")],
    )
    .await;
    assert_eq!(header(&res, "x-request-id"), Some("abc-123"));
    assert_eq!(header(&res, "x-frame-options"), Some("DENY"));
    assert_eq!(header(&res, "x-content-type-options"), Some("nosniff"));
    assert_eq!(
        header(&res, "strict-transport-security"),
        Some("max-age=31536000; includeSubDomains")
    );
    assert_eq!(
        header(&res, "referrer-policy"),
        Some("strict-origin-when-cross-origin")
    );
    assert!(
        header(&res, "content-security-policy")
            .unwrap()
            .starts_with("default-src 'self'")
    );
    assert_eq!(
        header(&res, "permissions-policy"),
        None,
        "an empty value leaves it out"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["request_id"], "abc-123");

    // An id with line noise is replaced by a fresh UUID.
    let res = send(
        &http,
        Method::GET,
        format!("{base}/public"),
        vec![("x-request-id", "bad id; drop table")],
    )
    .await;
    let id = header(&res, "x-request-id").unwrap().to_string();
    assert_eq!(id.len(), 36, "{id}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["request_id"], id.as_str());
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

#[test]
fn middleware_mistakes_are_located() {
    let text = invalid_yaml(
        r#"
modules:
  - name: cors
    type: http.middleware.cors
    config: {allowedOrigins: ["*", "shop.example"], allowCredentials: true}
  - {name: log, type: http.middleware.logging, config: {logLevel: loud}}
  - {name: limit, type: http.middleware.ratelimit, config: {burstSize: 0}}
"#,
    );
    assert!(
        text.contains("`allowCredentials` with origin `*`"),
        "{text}"
    );
    assert!(text.contains("`shop.example` is not an origin"), "{text}");
    assert!(text.contains("unknown level `loud`"), "{text}");
    assert!(text.contains("burstSize"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_limits_and_timeouts_answer_for_the_handler_on_the_modular_names() {
    // A backend that takes five seconds.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow_url = format!("http://{}/", listener.local_addr().unwrap());
    let backend = axum::Router::new().route(
        "/",
        axum::routing::get(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "late"
        }),
    );
    tokio::spawn(async move { axum::serve(listener, backend).await.unwrap() });
    // `httpserver.modular` and `chimux.router`: the original's documented names.
    let app = start_yaml(
        &r#"
modules:
  - {name: web, type: httpserver.modular, config: {address: "127.0.0.1:0"}}
  - {name: routes, type: chimux.router}
  - {name: small, type: http.middleware.bodylimit, config: {maxBytes: 64}}
  - {name: quick, type: http.middleware.timeout, config: {timeout: 200ms}}
pipelines:
  echo:
    trigger: {type: http, config: {method: POST, path: /echo, middlewares: [small]}}
    steps:
      - {name: answer, type: step.set, config: {values: {got: "{{ .text }}"}}}
  slow:
    trigger: {type: http, config: {method: GET, path: /slow, middlewares: [quick]}}
    steps:
      - {name: wait, type: step.http_call, config: {url: "SLOW_URL", timeout: 10s}}
"#
        .replace("SLOW_URL", &slow_url),
    )
    .await;
    let base = format!("http://{}", server_addr(&app, "web"));
    let http = client();
    let ok = http
        .post(format!("{base}/echo"))
        .json(&json!({"text": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.json::<Value>().await.unwrap()["got"], "hi");
    // Declared too large: refused before the body is read.
    let large = client()
        .post(format!("{base}/echo"))
        .json(&json!({"text": "x".repeat(100)}))
        .send()
        .await
        .unwrap();
    assert_eq!(large.status(), 413);
    // Streamed (chunked, no Content-Length): cut off at the limit, also 413.
    let chunks = futures::stream::iter(
        (0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"0123456789abcdef"))),
    );
    let streamed = client()
        .post(format!("{base}/echo"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 413);
    // A new connection: the server closes the one whose body it refused half-read.
    let slow = client().get(format!("{base}/slow")).send().await.unwrap();
    assert_eq!(slow.status(), 503);
    assert_eq!(
        slow.json::<Value>().await.unwrap()["error"],
        "request timed out"
    );
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}
