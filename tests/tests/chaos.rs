//! Chaos (issue #16): PostgreSQL, NATS and Redis cut away from a running app mid-traffic and
//! brought back (through a proxy the test controls), and a full disk under the data directory.
//! Every case must end in clear answers while the dependency is gone (503s naming nothing
//! internal, never a hang past the configured timeouts), recover without a restart when it
//! comes back, and lose nothing that was acknowledged.
//!
//! The services are found through `WF_TEST_POSTGRES_URL`, `WF_TEST_NATS_URL` and
//! `WF_TEST_REDIS_URL` (`.ci/run` sets them); a `kill -9` of the process is in the wf-host
//! crate's `hardening` suite.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use wf_engine::RunningApp;
use wf_tests::chaos::{ChaosProxy, through};
use wf_tests::{TempDir, client, server_addr, start_yaml, unique_name};

fn service_url(var: &str) -> Option<String> {
    let url = std::env::var(var).ok().filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("skipped: {var} is not set (`.ci/run` sets it)");
    }
    url
}

/// What a stream of numbered requests saw.
#[derive(Default)]
struct Outcomes {
    acked: BTreeSet<u64>,
    refused: Vec<(u16, String)>,
}

/// Sends `POST {url}` with `{"id": n}` for n in `ids`, recording which were acknowledged
/// (`ok` status) and what the others answered. Each request is bounded by the client's 10 s.
async fn send_ids(url: &str, ids: std::ops::Range<u64>, ok: u16, outcomes: &Mutex<Outcomes>) {
    let http = client();
    for id in ids {
        match http.post(url).json(&json!({"id": id})).send().await {
            Ok(response) if response.status().as_u16() == ok => {
                outcomes.lock().unwrap().acked.insert(id);
            }
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                outcomes.lock().unwrap().refused.push((status, body));
            }
            Err(e) => panic!("request {id} got no answer: {e}"),
        }
    }
}

/// Sends until one request is acknowledged again (at most `limit`): the app recovered
/// without a restart.
async fn until_acked(
    url: &str,
    first: u64,
    ok: u16,
    outcomes: &Mutex<Outcomes>,
    limit: Duration,
) -> u64 {
    let deadline = tokio::time::Instant::now() + limit;
    let mut id = first;
    loop {
        send_ids(url, id..id + 1, ok, outcomes).await;
        id += 1;
        if outcomes.lock().unwrap().acked.contains(&(id - 1)) {
            return id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no recovery within {limit:?}; last answers: {:?}",
            outcomes
                .lock()
                .unwrap()
                .refused
                .iter()
                .rev()
                .take(3)
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Traffic through an outage: `before` acknowledged requests, the dependency cut for the
/// next `during` (each must be a clear refusal), then restored: requests are acknowledged again
/// without a restart, and `after` more are sent. What every request saw.
async fn through_an_outage(
    proxy: &ChaosProxy,
    url: &str,
    ok: u16,
    (before, during, after): (u64, u64, u64),
) -> Outcomes {
    let outcomes = Mutex::new(Outcomes::default());
    send_ids(url, 0..before, ok, &outcomes).await;
    proxy.cut();
    send_ids(url, before..before + during, ok, &outcomes).await;
    assert_clear_refusals(&outcomes.lock().unwrap());
    proxy.restore();
    let next = until_acked(url, before + during, ok, &outcomes, Duration::from_secs(30)).await;
    send_ids(url, next..next + after, ok, &outcomes).await;
    outcomes.into_inner().unwrap()
}

/// Refusals while a dependency was away: the generic 503 of a server-side outage, with nothing
/// internal (addresses, driver text) in it.
fn assert_clear_refusals(outcomes: &Outcomes) {
    assert!(!outcomes.refused.is_empty(), "the cut refused nothing");
    for (status, body) in &outcomes.refused {
        assert_eq!(*status, 503, "{body}");
        assert!(
            body.contains("a service this request needs is unavailable"),
            "{body}"
        );
        assert!(!body.contains("127.0.0.1"), "{body}");
    }
}

async fn ids_in(app: &RunningApp, path: &str) -> BTreeSet<u64> {
    let body: Value = client()
        .get(format!("http://{}{path}", server_addr(app, "web")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .filter_map(|row| row["id"].as_u64())
        .collect()
}

fn database_app(dsn: &str, table: &str) -> String {
    format!(
        r#"
modules:
  - {{name: web, type: http.server, config: {{address: "127.0.0.1:0"}}}}
  - {{name: routes, type: http.router}}
  - {{name: db, type: database.workflow, config: {{dsn: "{dsn}", connectTimeout: 2s, maxOpenConns: 4}}}}
pipelines:
  setup:
    steps:
      - {{name: create, type: step.db_exec, config: {{query: "CREATE TABLE IF NOT EXISTS {table} (id BIGINT PRIMARY KEY)"}}}}
  add:
    trigger: {{type: http, config: {{path: /items, method: POST}}}}
    steps:
      - {{name: insert, type: step.db_exec, config: {{query: "INSERT INTO {table} (id) VALUES (?)", params: ["{{{{ .id }}}}"]}}}}
      - {{name: respond, type: step.json_response, config: {{status: 201, body: {{ok: true}}}}}}
  list:
    trigger: {{type: http, config: {{path: /items, method: GET}}}}
    steps:
      - {{name: all, type: step.db_query, config: {{query: "SELECT id FROM {table} ORDER BY id"}}}}
      - {{name: respond, type: step.json_response, config: {{body: "{{{{ .steps.all }}}}"}}}}
"#
    )
}

async fn run_pipeline(app: &RunningApp, name: &str) {
    app.state()
        .pipelines()
        .get(name)
        .unwrap()
        .run(Default::default(), Default::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cut_mid_traffic_answers_503_recovers_and_keeps_every_acknowledged_row() {
    let Some(url) = service_url("WF_TEST_POSTGRES_URL") else {
        return;
    };
    let (target, _) = through(&url, "127.0.0.1:1".parse().unwrap());
    let proxy = ChaosProxy::start(target).await;
    let (_, dsn) = through(&url, proxy.addr());
    let table = unique_name("chaos_items_");
    let app = start_yaml(&database_app(&dsn, &table)).await;
    run_pipeline(&app, "setup").await;
    let items = format!("http://{}/items", server_addr(&app, "web"));
    let acked = through_an_outage(&proxy, &items, 201, (20, 10, 20))
        .await
        .acked;

    // Every acknowledged row is there; nothing acknowledged was lost.
    let stored = ids_in(&app, "/items").await;
    assert!(
        acked.is_subset(&stored),
        "lost: {:?}",
        acked.difference(&stored).collect::<Vec<_>>()
    );
    assert!(acked.len() >= 40, "{acked:?}");
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cut_mid_traffic_answers_503_and_recovers() {
    let Some(url) = service_url("WF_TEST_REDIS_URL") else {
        return;
    };
    let (target, _) = through(&url, "127.0.0.1:1".parse().unwrap());
    let proxy = ChaosProxy::start(target).await;
    let (_, redis_url) = through(&url, proxy.addr());
    let prefix = unique_name("chaos:");
    let app = start_yaml(&format!(
        r#"
modules:
  - {{name: web, type: http.server, config: {{address: "127.0.0.1:0"}}}}
  - {{name: routes, type: http.router}}
  - {{name: cache, type: cache.modular, config: {{backend: redis, redisURL: "{redis_url}", keyPrefix: "{prefix}", connectTimeout: 2s}}}}
pipelines:
  put:
    trigger: {{type: http, config: {{path: /put, method: POST}}}}
    steps:
      - {{name: set, type: step.cache_set, config: {{key: "item-{{{{ .id }}}}", value: "{{{{ .id }}}}"}}}}
      - {{name: get, type: step.cache_get, config: {{key: "item-{{{{ .id }}}}"}}}}
      - {{name: respond, type: step.json_response, config: {{status: 201, body: {{value: "{{{{ .steps.get.value }}}}"}}}}}}
"#
    ))
    .await;
    let put = format!("http://{}/put", server_addr(&app, "web"));
    let outcomes = through_an_outage(&proxy, &put, 201, (10, 5, 10)).await;
    assert!(outcomes.acked.len() >= 20);
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_cut_mid_traffic_answers_503_recovers_and_delivers_every_acknowledged_message() {
    let Some(url) = service_url("WF_TEST_NATS_URL") else {
        return;
    };
    let (target, _) = through(&url, "127.0.0.1:1".parse().unwrap());
    let proxy = ChaosProxy::start(target).await;
    let (_, nats_url) = through(&url, proxy.addr());
    let stream = unique_name("WFCHAOS");
    let subjects = stream.to_lowercase();
    let (received, sink) = recording_receiver().await;
    let app = start_yaml(&format!(
        r#"
modules:
  - {{name: web, type: http.server, config: {{address: "127.0.0.1:0"}}}}
  - {{name: routes, type: http.router}}
  - name: bus
    type: messaging.nats
    config:
      url: "{nats_url}"
      connectTimeout: 2s
      deliveryTimeout: 2s
      maxDeliveries: 20
      retryBackoff: 100ms
      jetstream: {{stream: {stream}, subjects: ["{subjects}.>"], storage: memory, ackWait: 3s}}
pipelines:
  publish:
    trigger: {{type: http, config: {{path: /publish, method: POST}}}}
    steps:
      - {{name: send, type: step.publish, config: {{broker: bus, topic: {subjects}.jobs, payload: {{id: "{{{{ .id }}}}"}}}}}}
      - {{name: respond, type: step.json_response, config: {{status: 202, body: {{ok: true}}}}}}
  consume:
    trigger: {{type: event, config: {{topic: {subjects}.jobs, broker: bus}}}}
    steps:
      - {{name: record, type: step.http_call, config: {{url: "{sink}", method: POST, body: {{id: "{{{{ .id }}}}"}}}}}}
"#
    ))
    .await;
    let publish = format!("http://{}/publish", server_addr(&app, "web"));
    let acked = through_an_outage(&proxy, &publish, 202, (20, 5, 20))
        .await
        .acked;

    // Every message the app acknowledged reaches the consumer (redelivered if need be).
    let delivered = wf_tests::eventually(Duration::from_secs(60), || {
        let received = received.clone();
        let acked = acked.clone();
        async move { acked.is_subset(&received.lock().unwrap()) }
    })
    .await;
    let seen = received.lock().unwrap().clone();
    assert!(
        delivered,
        "not delivered: {:?}",
        acked.difference(&seen).collect::<Vec<_>>()
    );
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
    let jetstream = async_nats::jetstream::new(async_nats::connect(url.as_str()).await.unwrap());
    let _ = jetstream.delete_stream(&stream).await;
}

/// A local endpoint recording the `id` of every JSON body posted to it.
async fn recording_receiver() -> (Arc<Mutex<BTreeSet<u64>>>, String) {
    let ids = Arc::new(Mutex::new(BTreeSet::new()));
    let seen = ids.clone();
    let app = axum::Router::new().route(
        "/sink",
        axum::routing::post(move |body: bytes::Bytes| {
            let seen = seen.clone();
            async move {
                let body: Value = serde_json::from_slice(&body).unwrap_or_default();
                if let Some(id) = body["id"]
                    .as_u64()
                    .or_else(|| body["id"].as_str().and_then(|s| s.parse().ok()))
                {
                    seen.lock().unwrap().insert(id);
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/sink", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (ids, url)
}

/// A tmpfs of 1 MiB mounted for the test, unmounted on drop; `None` where mounting is not
/// permitted (not root), which the test reports.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &TempDir) -> Option<SmallDisk> {
        let at = dir.0.join("disk");
        std::fs::create_dir_all(&at).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(SmallDisk(at))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_keeps_what_was_written_and_recovers_once_space_is_free() {
    let dir = TempDir::new("chaos-disk");
    let Some(disk) = SmallDisk::mount(&dir) else {
        eprintln!(
            "skipped: cannot mount a tmpfs here (needs root); the full-disk case is not checked"
        );
        return;
    };
    let db = disk.0.join("app.db");
    let objects = disk.0.join("objects");
    let mut yaml = database_app(db.to_str().unwrap(), "items");
    yaml = yaml.replace(
        "  - {name: routes, type: http.router}\n",
        &format!(
            "  - {{name: routes, type: http.router}}\n  - {{name: files, type: storage.local, config: {{rootDir: \"{}\"}}}}\n",
            objects.display()
        ),
    );
    yaml.push_str(
        r#"  save:
    trigger: {type: http, config: {path: /objects, method: POST}}
    steps:
      - {name: put, type: step.storage_put, config: {key: "blob-{{ .id }}", content: "{{ .data }}"}}
      - {name: respond, type: step.json_response, config: {status: 201, body: {ok: true}}}
"#,
    );
    let app = start_yaml(&yaml).await;
    run_pipeline(&app, "setup").await;
    let base = format!("http://{}", server_addr(&app, "web"));
    let http = client();
    let outcomes = Mutex::new(Outcomes::default());
    send_ids(&format!("{base}/items"), 0..20, 201, &outcomes).await;

    // Fill the disk with objects until the store refuses one.
    let chunk = "x".repeat(64 << 10);
    let mut saved = 0;
    let full = loop {
        let response = http
            .post(format!("{base}/objects"))
            .json(&json!({"id": saved, "data": chunk}))
            .send()
            .await
            .unwrap();
        if response.status() != 201 {
            break (response.status().as_u16(), response.text().await.unwrap());
        }
        saved += 1;
        assert!(saved < 64, "a 1 MiB disk took {saved} objects of 64 KiB");
    };
    assert_eq!(full.0, 503, "{full:?}");
    assert!(
        full.1
            .contains("a service this request needs is unavailable"),
        "{full:?}"
    );
    // The database refuses writes the same way while the disk is full.
    send_ids(&format!("{base}/items"), 20..120, 201, &outcomes).await;
    {
        let outcomes = outcomes.lock().unwrap();
        if outcomes.acked.len() < 120 {
            assert_clear_refusals(&outcomes);
        }
    }

    // Space comes back: writes work again without a restart, and nothing written was lost.
    for entry in std::fs::read_dir(&objects).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let next = until_acked(
        &format!("{base}/items"),
        120,
        201,
        &outcomes,
        Duration::from_secs(30),
    )
    .await;
    let response = http
        .post(format!("{base}/objects"))
        .json(&json!({"id": "after", "data": "fits"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let stored = ids_in(&app, "/items").await;
    let acked = outcomes.lock().unwrap().acked.clone();
    assert!(
        acked.is_subset(&stored),
        "lost: {:?}",
        acked.difference(&stored).collect::<Vec<_>>()
    );
    assert!(stored.contains(&(next - 1)));
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
    drop(disk);
}
