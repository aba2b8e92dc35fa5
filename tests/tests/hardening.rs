//! Regression tests for the holes the attack pass found (issue #16): each one failed before
//! its fix. Connections that send nothing, the components API without a token, special files
//! in a watched folder, tokens missing configured claims, links out of stores and roots,
//! storage mistakes answered as outages, body limits, loader bounds and the smaller ones.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wf_tests::{client, invalid_yaml, server_addr, start_yaml};

/// Reads until the server closes the connection; `None` if it is still open after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(received),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

fn server_app(server_config: &str) -> String {
    format!(
        r#"
modules:
  - name: web
    type: http.server
    config: {{address: "127.0.0.1:0", {server_config}}}
  - {{name: routes, type: http.router}}
workflows:
  http:
    routes:
      - method: GET
        path: /ping
        steps: [{{name: ok, type: step.set, config: {{values: {{pong: true}}}}}}]
"#
    )
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_read_timeout() {
    let app = start_yaml(&server_app("readTimeout: 300ms")).await;
    let addr = server_addr(&app, "web");
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(10))
            .await
            .is_some(),
        "a silent connection stayed open"
    );
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

#[tokio::test]
async fn an_http2_connection_idle_after_its_preface_is_closed() {
    let app = start_yaml(&server_app("readTimeout: 300ms")).await;
    let addr = server_addr(&app, "web");
    let mut h2 = TcpStream::connect(addr).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    h2.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let received = closed_within(&mut h2, Duration::from_secs(10))
        .await
        .expect("an idle HTTP/2 connection stayed open");
    // The server spoke HTTP/2 (its SETTINGS frame has type 4) before closing.
    assert!(received.len() >= 9 && received[3] == 4, "{received:?}");
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

async fn get_ping(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /ping HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn a_keep_alive_connection_is_closed_once_idle() {
    let app = start_yaml(&server_app("readTimeout: 30s, idleTimeout: 300ms")).await;
    let addr = server_addr(&app, "web");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let answer = get_ping(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        closed_within(&mut stream, Duration::from_secs(10))
            .await
            .is_some(),
        "an idle keep-alive connection stayed open"
    );
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

#[tokio::test]
async fn past_max_connections_clients_wait_instead_of_failing() {
    let app = start_yaml(&server_app("maxConnections: 1")).await;
    let addr: SocketAddr = server_addr(&app, "web");
    let mut first = TcpStream::connect(addr).await.unwrap();
    assert!(get_ping(&mut first).await.starts_with("HTTP/1.1 200"));

    // The second client connects (the kernel's backlog takes it) but is not served while the
    // first connection holds the only slot.
    let mut second = TcpStream::connect(addr).await.unwrap();
    second
        .write_all(b"GET /ping HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let early = tokio::time::timeout(Duration::from_millis(300), second.read(&mut buf)).await;
    assert!(early.is_err(), "served past the connection limit");

    // Once the first closes, the waiting client is served.
    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(10), second.read(&mut buf))
        .await
        .expect("served once a slot was free")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    // And ordinary clients keep working.
    drop(second);
    let answer = client()
        .get(format!("http://{addr}/ping"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_refused_at_once_naming_the_limit() {
    let app = start_yaml(
        r#"
modules:
  - {name: web, type: http.server, config: {address: "127.0.0.1:0", writeTimeout: 30s}}
  - {name: routes, type: http.router}
workflows:
  http:
    routes:
      - method: POST
        path: /small
        maxBodyBytes: 100
        steps: [{name: ok, type: step.set, config: {values: {ok: true}}}]
"#,
    )
    .await;
    let addr = server_addr(&app, "web");
    // It declares a megabyte and sends none of it: the answer must not wait for the bytes
    // (it was a 503 after `writeTimeout`: #16).
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /small HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000000\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("an answer before the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("request body is larger than 100 bytes (the route's `maxBodyBytes`)"),
        "{answer}"
    );
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

fn components_app(server_address: &str, api: &str) -> String {
    format!(
        r#"
modules:
  - {{name: web, type: http.server, config: {{address: "{server_address}"}}}}
  - {{name: routes, type: http.router}}
  - name: wasm
    type: wasm.components
    config:
      data_dir: /tmp/wf-hardening-unused
      api: {api}
"#
    )
}

#[test]
fn a_components_api_without_a_token_is_refused_where_others_can_reach_it() {
    // Reachable from other machines, no token: an error (it was open: #16).
    for api in ["{}", "{token: \"\"}"] {
        let problems = invalid_yaml(&components_app("0.0.0.0:8080", api));
        assert!(
            problems
                .contains("the components API has no token, and `web` listens on `0.0.0.0:8080`"),
            "{problems}"
        );
        assert!(problems.contains("allow_unauthenticated"), "{problems}");
    }
    // On loopback only: a warning; with a token or said explicitly: nothing.
    let registry = wf_host::registry().unwrap();
    for (address, api, warnings) in [
        ("127.0.0.1:0", "{}", 1),
        ("0.0.0.0:8080", "{token: s3cret}", 0),
        ("0.0.0.0:8080", "{allow_unauthenticated: true}", 0),
    ] {
        let yaml = components_app(address, api);
        let validated = wf_engine::validate(
            wf_config::load_str("app.yaml", &yaml, &wf_tests::example_vars()),
            &registry,
        )
        .unwrap_or_else(|i| panic!("{}", i.diagnostics.render(&i.config.sources)));
        assert_eq!(
            validated.warnings().warning_count(),
            warnings,
            "{address} {api}: {}",
            validated.warnings().render(&validated.config().sources)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_files_in_the_watched_folder_neither_block_nor_exhaust_the_host() {
    let dir = wf_tests::TempDir::new("watched-special");
    let components = dir.0.join("components");
    std::fs::create_dir_all(&components).unwrap();
    // A FIFO named like a component would block every read of it forever; a link to
    // /dev/zero would be read until memory ran out; a link out of the folder is not followed.
    let fifo = std::process::Command::new("mkfifo")
        .arg(components.join("fifo.wasm"))
        .status()
        .unwrap();
    assert!(fifo.success());
    std::os::unix::fs::symlink("/dev/zero", components.join("zero.wasm")).unwrap();
    let hello = wf_tests::repo_root().join("plugins/dist/hello.wasm");
    std::os::unix::fs::symlink(&hello, components.join("outside.wasm")).unwrap();
    let yaml = format!(
        r#"
modules:
  - {{name: web, type: http.server, config: {{address: "127.0.0.1:0"}}}}
  - {{name: routes, type: http.router}}
  - {{name: wasm, type: wasm.components, config: {{dir: "{}", data_dir: "{}"}}}}
workflows:
  http:
    routes:
      - method: GET
        path: /ping
        steps: [{{name: ok, type: step.set, config: {{values: {{pong: true}}}}}}]
"#,
        components.display(),
        dir.0.join("data").display()
    );
    let app = tokio::time::timeout(Duration::from_secs(30), async { start_yaml(&yaml).await })
        .await
        .expect("the app starts despite the special files");
    let addr = server_addr(&app, "web");
    // New special files while it runs: the watcher must not block either.
    std::os::unix::fs::symlink("/dev/zero", components.join("later.wasm")).unwrap();
    let fifo = std::process::Command::new("mkfifo")
        .arg(components.join("later-fifo.wasm"))
        .status()
        .unwrap();
    assert!(fifo.success());
    tokio::time::sleep(Duration::from_millis(600)).await;
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        client().get(format!("http://{addr}/ping")).send(),
    )
    .await
    .expect("the host keeps serving")
    .unwrap();
    assert_eq!(answer.status(), 200);
    let registry = app
        .state()
        .services()
        .unwrap()
        .get::<wf_wasm::ComponentRegistry>("wasm")
        .unwrap();
    assert!(
        registry.slots().is_empty(),
        "nothing was loaded from special files or links out of the folder"
    );
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_the_client_stops_reading_is_dropped_after_idle_timeout() {
    let dir = wf_tests::TempDir::new("slow-reader");
    let big = vec![b'x'; 32 << 20];
    std::fs::write(dir.0.join("big.bin"), &big).unwrap();
    let app = start_yaml(&format!(
        r#"
modules:
  - {{name: web, type: http.server, config: {{address: "127.0.0.1:0", idleTimeout: 300ms}}}}
  - {{name: routes, type: http.router}}
  - {{name: files, type: static.fileserver, config: {{root: "{}", spa: false}}}}
"#,
        dir.0.display()
    ))
    .await;
    let addr = server_addr(&app, "web");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /big.bin HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // A client that stops reading held the connection (and its slot) for as long as it
    // liked (#16); now the stalled response is dropped.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let received = closed_within(&mut stream, Duration::from_secs(20))
        .await
        .expect("the connection was closed");
    assert!(
        received.len() < big.len(),
        "the whole file arrived: the stalled response was not dropped"
    );
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}
