//! The run journal, in process, on SQLite and PostgreSQL: what a run records, idempotent
//! routes, replay, cancel and the dead-letter view over `runs.api`, retention, and a journal
//! the app cannot use.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Notify;
use wf_tests::{TempDir, client, database_backends, eventually, server_addr, unique_name};

/// A local HTTP peer the apps call: it records every call by name, answers `200 {"name"}`
/// (or the statuses queued for that name), and holds calls to a name while it is gated.
#[derive(Default)]
struct Peer {
    calls: Mutex<Vec<(String, HeaderMap, Value)>>,
    answers: Mutex<HashMap<String, Vec<StatusCode>>>,
    gated: Mutex<Vec<String>>,
    opened: Notify,
}

impl Peer {
    fn calls(&self, name: &str) -> Vec<(HeaderMap, Value)> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, h, b)| (h.clone(), b.clone()))
            .collect()
    }

    fn answer(&self, name: &str, statuses: &[StatusCode]) {
        self.answers
            .lock()
            .unwrap()
            .insert(name.to_string(), statuses.to_vec());
    }

    fn gate(&self, name: &str) {
        self.gated.lock().unwrap().push(name.to_string());
    }

    fn open(&self, name: &str) {
        self.gated.lock().unwrap().retain(|n| n != name);
        self.opened.notify_waiters();
    }
}

async fn called(
    State(peer): State<Arc<Peer>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, axum::Json<Value>) {
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    peer.calls
        .lock()
        .unwrap()
        .push((name.clone(), headers, body));
    // Held while gated (bounded: a forgotten gate fails the test, it does not hang it).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let opened = peer.opened.notified();
        if !peer.gated.lock().unwrap().contains(&name) || tokio::time::Instant::now() > deadline {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), opened).await;
    }
    let status = {
        let mut answers = peer.answers.lock().unwrap();
        match answers.get_mut(&name) {
            Some(queued) if !queued.is_empty() => queued.remove(0),
            _ => StatusCode::OK,
        }
    };
    (status, axum::Json(json!({"name": name})))
}

async fn peer() -> (Arc<Peer>, String) {
    let peer = Arc::new(Peer::default());
    let app = axum::Router::new()
        .route("/call/{name}", axum::routing::post(called))
        .with_state(peer.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/call", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (peer, url)
}

/// An app on database `dsn` keeping its journal there, with `routes` (YAML list items),
/// `pipelines` and `extra` top-level sections, served on a free port.
fn app(name: &str, dsn: &str, runs: &str, routes: &str, pipelines: &str) -> String {
    app_with(name, dsn, runs, routes, pipelines, "")
}

fn app_with(
    name: &str,
    dsn: &str,
    runs: &str,
    routes: &str,
    pipelines: &str,
    extra: &str,
) -> String {
    format!(
        r#"
name: {name}
modules:
  - {{name: web, type: http.server, config: {{address: "127.0.0.1:0"}}}}
  - {{name: router, type: http.router}}
  - {{name: db, type: database.workflow, config: {{dsn: "{dsn}"}}}}
  - {{name: runs, type: runs.api}}
runs:
  database: db
{runs}
workflows:
  http:
    routes:
{routes}
pipelines:
{pipelines}
{extra}
"#
    )
}

async fn get(url: &str) -> (u16, Value) {
    let response = client().get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn post(url: &str, body: Value) -> (u16, Value) {
    let response = client().post(url).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Waits (bounded) until run `id` has ended; its record.
async fn ended(base: &str, id: &str) -> Value {
    let url = format!("{base}/api/runs/{id}");
    let last = Arc::new(Mutex::new(Value::Null));
    let done = eventually(Duration::from_secs(20), || {
        let url = url.clone();
        let last = last.clone();
        async move {
            let (status, run) = get(&url).await;
            let finished = status == 200
                && !matches!(run["status"].as_str(), Some("running" | "queued") | None);
            *last.lock().unwrap() = run;
            finished
        }
    })
    .await;
    let last = last.lock().unwrap().clone();
    assert!(done, "run {id} did not end: {last}");
    last
}

#[tokio::test]
async fn a_run_records_its_trigger_each_step_and_its_end() {
    let dir = TempDir::new("journal-record");
    for (backend, dsn) in database_backends(&dir) {
        let name = unique_name("journal-record-");
        let routes = r#"
      - method: POST
        path: /orders/{id}
        pipeline:
          steps:
            - {name: parse, type: step.request_parse, config: {path_params: [id]}}
            - {name: route, type: step.conditional, config: {field: kind, routes: {big: big}, default: small}}
            - {name: big, type: step.set, config: {values: {size: big}}}
            - {name: small, type: step.set, config: {values: {size: small}}}
            - {name: respond, type: step.json_response, config: {status: 201, body: {id: "{{ .steps.parse.path_params.id }}", size: "{{ .size }}"}}}
"#;
        let yaml = app(&name, &dsn, "  max_value_bytes: 1024", routes, "  {}");
        let running = wf_tests::start_yaml(&yaml).await;
        let base = format!("http://{}", server_addr(&running, "web"));

        let response = client()
            .post(format!("{base}/orders/7"))
            .header("Authorization", "Bearer not-for-the-journal")
            .header("X-Trace-Note", "kept")
            .json(&json!({"kind": "big", "note": "x".repeat(2000)}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{backend}");
        let (status, page) = get(&format!("{base}/api/runs")).await;
        assert_eq!(status, 200, "{backend}: {page}");
        let id = page["runs"][0]["run_id"].as_str().unwrap().to_string();
        let run = ended(&base, &id).await;
        assert_eq!(run["status"], "succeeded", "{backend}: {run}");
        assert_eq!(run["trigger"]["kind"], "http");
        assert_eq!(run["trigger"]["source"], "POST /orders/{id}");
        // Too large for `max_value_bytes`: a marker, not the value.
        assert_eq!(run["input"]["_truncated"], true, "{backend}: {run}");
        let steps: Vec<(&str, &str)> = run["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["step"].as_str().unwrap(), s["status"].as_str().unwrap()))
            .collect();
        // The conditional's choice is recorded; the branch not taken never ran.
        assert_eq!(
            steps,
            [
                ("parse", "succeeded"),
                ("route", "succeeded"),
                ("big", "succeeded"),
                ("respond", "succeeded")
            ],
            "{backend}: {run}"
        );
        assert_eq!(run["steps"][1]["next"], "big");
        assert_eq!(run["steps"][2]["output"]["size"], "big");
        // The run's output carries the large note too: cut like the input.
        assert_eq!(run["output"]["_truncated"], true, "{backend}: {run}");
        // Credentials are never recorded; other headers are.
        let recorded = run.to_string();
        assert!(
            !recorded.contains("not-for-the-journal"),
            "{backend}: {recorded}"
        );

        // A small run: its whole input is kept, and the request with it.
        let (status, _) = post(&format!("{base}/orders/8"), json!({"kind": "small"})).await;
        assert_eq!(status, 201);
        let (_, page) = get(&format!("{base}/api/runs?limit=1")).await;
        assert_eq!(page["runs"].as_array().unwrap().len(), 1);
        let newest = page["runs"][0]["run_id"].as_str().unwrap().to_string();
        let run = ended(&base, &newest).await;
        assert_eq!(
            run["input"],
            json!({"kind": "small", "id": "8"}),
            "{backend}"
        );
        assert_eq!(run["steps"][2]["step"], "small");
        // Paging: the cursor of a full page leads to the older run.
        let cursor = page["next"].as_str().expect("a full page has a cursor");
        let (_, older) = get(&format!("{base}/api/runs?limit=1&cursor={cursor}")).await;
        assert_eq!(
            older["runs"][0]["run_id"],
            id.as_str(),
            "{backend}: {older}"
        );
        // Filters, and a filter the API does not know.
        let (_, none) = get(&format!("{base}/api/runs?status=failed")).await;
        assert_eq!(none["runs"], json!([]));
        let (status, _) = get(&format!("{base}/api/runs?status=done")).await;
        assert_eq!(status, 400);
        let (status, _) = get(&format!("{base}/api/runs/no-such-run")).await;
        assert_eq!(status, 404);
        assert_eq!(running.stop(Duration::from_secs(5)).await, 0, "{backend}");
    }
}

#[tokio::test]
async fn an_idempotent_route_answers_a_repeated_key_without_running_again() {
    let dir = TempDir::new("journal-idempotency");
    let (peer, url) = peer().await;
    for (backend, dsn) in database_backends(&dir) {
        let name = unique_name("journal-idem-");
        let call = format!("charge-{backend}");
        let routes = format!(
            r#"
      - method: POST
        path: /charges
        idempotency: {{header: Idempotency-Key, ttl: 1h}}
        pipeline:
          steps:
            - {{name: charge, type: step.http_call, config: {{url: "{url}/{call}", method: POST}}}}
            - {{name: respond, type: step.json_response, config: {{status: 201, body: {{charged: "{{{{ .amount }}}}"}}}}}}
"#
        );
        let running = wf_tests::start_yaml(&app(&name, &dsn, "", &routes, "  {}")).await;
        let charges = format!("http://{}/charges", server_addr(&running, "web"));
        let send = |key: &'static str, amount: u32| {
            let charges = charges.clone();
            async move {
                let response = client()
                    .post(&charges)
                    .header("Idempotency-Key", key)
                    .json(&json!({"amount": amount}))
                    .send()
                    .await
                    .unwrap();
                let replayed = response.headers().contains_key("idempotent-replayed");
                let status = response.status().as_u16();
                (status, response.json::<Value>().await.unwrap(), replayed)
            }
        };

        let first = send("key-1", 10).await;
        assert_eq!((first.0, first.2), (201, false), "{backend}: {first:?}");
        let again = send("key-1", 10).await;
        assert_eq!(again.0, 201, "{backend}");
        assert_eq!(again.1, first.1, "{backend}: the first answer");
        assert!(again.2, "{backend}: marked as a replayed answer");
        assert_eq!(peer.calls(&call).len(), 1, "{backend}: ran once");
        // The key of another request is the caller's mistake.
        let other = send("key-1", 99).await;
        assert_eq!(other.0, 422, "{backend}: {other:?}");
        // While the first run of a key goes, a repeat is told to wait.
        peer.gate(&call);
        let slow = tokio::spawn(send("key-2", 20));
        assert!(
            eventually(Duration::from_secs(10), || async {
                peer.calls(&call).len() == 2
            })
            .await
        );
        let meanwhile = send("key-2", 20).await;
        assert_eq!(meanwhile.0, 409, "{backend}: {meanwhile:?}");
        peer.open(&call);
        assert_eq!(slow.await.unwrap().0, 201);
        assert_eq!(send("key-2", 20).await.0, 201);
        assert_eq!(peer.calls(&call).len(), 2, "{backend}");
        // A failure of the server's own is not kept: a retry runs again.
        peer.answer(&call, &[StatusCode::BAD_GATEWAY]);
        assert_eq!(send("key-3", 30).await.0, 503, "{backend}");
        assert_eq!(send("key-3", 30).await.0, 201, "{backend}");
        assert_eq!(peer.calls(&call).len(), 4, "{backend}");
        // Each call carried its step's key, the same in a retry of that run.
        let (headers, _) = &peer.calls(&call)[0];
        assert!(
            headers.contains_key("idempotency-key"),
            "{backend}: step.http_call sends the step's key"
        );
        assert_eq!(running.stop(Duration::from_secs(5)).await, 0);
    }
}

#[tokio::test]
async fn replay_cancel_and_the_dead_letter_view_over_http() {
    let dir = TempDir::new("journal-replay");
    let (peer, url) = peer().await;
    for (backend, dsn) in database_backends(&dir) {
        let name = unique_name("journal-replay-");
        let ship = format!("ship-{backend}");
        let undo = format!("undo-{backend}");
        let pipelines = format!(
            r#"
  fulfil:
    on_error: compensate
    steps:
      - {{name: reserve, type: step.set, config: {{values: {{reserved: "{{{{ .sku }}}}"}}}}}}
      - {{name: ship, type: step.http_call, config: {{url: "{url}/{ship}", method: POST}}}}
      - {{name: done, type: step.set, config: {{values: {{shipped: true}}}}}}
    compensation:
      - {{name: unreserve, type: step.http_call, config: {{url: "{url}/{undo}", method: POST}}}}
"#
        );
        let routes = r#"
      - {method: GET, path: /ping, pipeline: {steps: [{name: pong, type: step.set, config: {values: {ok: true}}}]}}
"#;
        let triggers = "triggers:\n  http:\n    routes:\n      - {method: POST, path: /direct, pipeline: fulfil}\n";
        let yaml = app_with(&name, &dsn, "", routes, &pipelines, triggers);
        let running = wf_tests::start_yaml(&yaml).await;
        let base = format!("http://{}", server_addr(&running, "web"));

        // A run that fails at `ship`: its compensation runs, and it is a dead letter.
        peer.answer(&ship, &[StatusCode::BAD_REQUEST]);
        let (status, _) = post(&format!("{base}/direct"), json!({"sku": "A-1"})).await;
        assert_eq!(status, 500, "{backend}");
        let (_, failed) = get(&format!(
            "{base}/api/runs?status=failed&unreplayed=true&pipeline=fulfil"
        ))
        .await;
        let failed_id = failed["runs"][0]["run_id"]
            .as_str()
            .expect("a failed run")
            .to_string();
        assert_eq!(peer.calls(&undo).len(), 1, "{backend}: compensation ran");

        // Replayed from `ship`: `reserve` is not run again but reused.
        let (status, queued) = post(
            &format!("{base}/api/runs/{failed_id}/replay"),
            json!({"from": "ship"}),
        )
        .await;
        assert_eq!(status, 202, "{backend}: {queued}");
        let replay_id = queued["run_id"].as_str().unwrap().to_string();
        let replay = ended(&base, &replay_id).await;
        assert_eq!(replay["status"], "succeeded", "{backend}: {replay}");
        assert_eq!(replay["replay_of"], failed_id.as_str());
        assert_eq!(
            replay["steps"][0]["status"], "reused",
            "{backend}: {replay}"
        );
        assert_eq!(replay["output"]["reserved"], "A-1");
        // The original is no longer a dead letter.
        let (_, failed) = get(&format!(
            "{base}/api/runs?status=failed&unreplayed=true&pipeline=fulfil"
        ))
        .await;
        assert_eq!(failed["runs"], json!([]), "{backend}");

        // Bulk replay of what failed.
        peer.answer(&ship, &[StatusCode::BAD_REQUEST, StatusCode::BAD_REQUEST]);
        for sku in ["B-1", "B-2"] {
            post(&format!("{base}/direct"), json!({"sku": sku})).await;
        }
        let (status, bulk) = post(
            &format!("{base}/api/runs/replay"),
            json!({"pipeline": "fulfil"}),
        )
        .await;
        assert_eq!(status, 202, "{backend}: {bulk}");
        assert_eq!(
            bulk["replays"].as_array().unwrap().len(),
            2,
            "{backend}: {bulk}"
        );
        for replay in bulk["replays"].as_array().unwrap() {
            let run = ended(&base, replay["run_id"].as_str().unwrap()).await;
            assert_eq!(run["status"], "succeeded", "{backend}: {run}");
        }

        // Cancel a run waiting at `ship`: it stops there, compensates, ends cancelled.
        peer.gate(&ship);
        let undone = peer.calls(&undo).len();
        let waiting = tokio::spawn({
            let base = base.clone();
            async move { post(&format!("{base}/direct"), json!({"sku": "C-1"})).await }
        });
        let found = Arc::new(Mutex::new(String::new()));
        assert!(
            eventually(Duration::from_secs(10), || {
                let base = base.clone();
                let found = found.clone();
                async move {
                    let (_, page) =
                        get(&format!("{base}/api/runs?status=running&pipeline=fulfil")).await;
                    match page["runs"][0]["run_id"].as_str() {
                        Some(id) => {
                            *found.lock().unwrap() = id.to_string();
                            true
                        }
                        None => false,
                    }
                }
            })
            .await
        );
        let running_id = found.lock().unwrap().clone();
        let (status, answer) =
            post(&format!("{base}/api/runs/{running_id}/cancel"), json!({})).await;
        assert_eq!(status, 202, "{backend}: {answer}");
        let (status, _) = waiting.await.unwrap();
        assert_eq!(
            status, 409,
            "{backend}: the caller hears the run was cancelled"
        );
        peer.open(&ship);
        let cancelled = ended(&base, &running_id).await;
        assert_eq!(cancelled["status"], "cancelled", "{backend}: {cancelled}");
        assert_eq!(
            peer.calls(&undo).len(),
            undone + 1,
            "{backend}: compensation ran"
        );
        // Ended runs cannot be cancelled; unknown ones are not found.
        let (status, _) = post(&format!("{base}/api/runs/{running_id}/cancel"), json!({})).await;
        assert_eq!(status, 409);
        let (status, _) = post(&format!("{base}/api/runs/nope/cancel"), json!({})).await;
        assert_eq!(status, 404);
        let (status, _) = post(&format!("{base}/api/runs/nope/replay"), json!({})).await;
        assert_eq!(status, 404);
        let (status, answer) = post(
            &format!("{base}/api/runs/{replay_id}/replay"),
            json!({"from": "no-such-step"}),
        )
        .await;
        assert_eq!(status, 409, "{backend}: {answer}");
        assert_eq!(running.stop(Duration::from_secs(5)).await, 0);
    }
}

#[tokio::test]
async fn retention_keeps_the_newest_finished_runs() {
    let dir = TempDir::new("journal-retention");
    let dsn = dir.0.join("app.db").to_string_lossy().into_owned();
    let name = unique_name("journal-retention-");
    let routes = r#"
      - {method: POST, path: /tick, pipeline: {retention: {max_runs: 2}, steps: [{name: one, type: step.set, config: {values: {ok: true}}}]}}
"#;
    let yaml = app(&name, &dsn, "", routes, "  {}");
    let running = wf_tests::start_yaml(&yaml).await;
    let base = format!("http://{}", server_addr(&running, "web"));
    for _ in 0..5 {
        assert_eq!(post(&format!("{base}/tick"), json!({})).await.0, 200);
    }
    let (_, page) = get(&format!("{base}/api/runs")).await;
    assert_eq!(page["runs"].as_array().unwrap().len(), 5);
    running.stop(Duration::from_secs(5)).await;
    // Pruning runs in the background of a serving host, shortly after it starts.
    let running = wf_tests::start_yaml(&yaml).await;
    let base = format!("http://{}", server_addr(&running, "web"));
    let pruned = eventually(Duration::from_secs(10), || {
        let base = base.clone();
        async move {
            let (_, page) = get(&format!("{base}/api/runs")).await;
            page["runs"].as_array().is_some_and(|r| r.len() == 2)
        }
    })
    .await;
    assert!(pruned, "the two newest runs remain");
    running.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_journal_the_app_cannot_use_stops_its_start_with_what_to_do() {
    let yaml = r#"
modules:
  - {name: web, type: http.server, config: {address: "127.0.0.1:0"}}
  - {name: router, type: http.router}
workflows:
  http:
    routes:
      - {method: GET, path: /x, pipeline: {steps: [{name: one, type: step.set, config: {values: {ok: true}}}]}}
"#;
    // Not a database at all.
    let dir = TempDir::new("journal-corrupt");
    std::fs::write(
        dir.0.join("runs.db"),
        "this is not a SQLite file, it is text ".repeat(200),
    )
    .unwrap();
    let error = match wf_tests::build_yaml_in(yaml, &dir.0)
        .start(Duration::from_secs(5))
        .await
    {
        Ok(_) => panic!("the app started on a corrupt journal"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("runs.db"), "{error}");
    assert!(error.contains("move the file aside"), "{error}");

    // Written by a newer wf.
    let dir = TempDir::new("journal-newer");
    let running = wf_tests::start_yaml_in(yaml, &dir.0).await;
    running.stop(Duration::from_secs(5)).await;
    let db = wf_storage::Database::new(
        "check",
        &wf_storage::Target::Sqlite {
            path: dir.0.join("runs.db").to_string_lossy().into_owned(),
            wal: true,
        },
        &wf_storage::PoolSettings {
            max_connections: 1,
            min_connections: 0,
            connect_timeout: Duration::from_secs(5),
        },
    )
    .unwrap();
    db.execute(
        "INSERT INTO wf_migrations (set_name, version, name, checksum, applied_at) VALUES ('runs', 99, 'future', 'x', 'now')",
        &[],
    )
    .await
    .unwrap();
    db.close().await;
    let error = match wf_tests::build_yaml_in(yaml, &dir.0)
        .start(Duration::from_secs(5))
        .await
    {
        Ok(_) => panic!("the app started on a newer journal"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("newer wf"), "{error}");
    assert!(error.contains("--data-dir"), "{error}");
}

#[tokio::test]
async fn durable_runs_are_refused_with_503_while_the_journal_is_away() {
    let Ok(pg) = std::env::var("WF_TEST_POSTGRES_URL") else {
        eprintln!("WF_TEST_POSTGRES_URL is not set: skipping");
        return;
    };
    let target: std::net::SocketAddr = {
        let rest = pg.split_once('@').map_or(pg.as_str(), |(_, r)| r);
        let host = rest.split('/').next().unwrap();
        tokio::net::lookup_host(host).await.unwrap().next().unwrap()
    };
    let proxy = wf_tests::chaos::ChaosProxy::start(target).await;
    let (_, dsn) = wf_tests::chaos::through(&pg, proxy.addr());
    let name = unique_name("journal-away-");
    let routes = r#"
      - {method: POST, path: /work, durable: true, pipeline: {steps: [{name: one, type: step.set, config: {values: {ok: true}}}]}}
"#;
    let yaml = app(&name, &dsn, "", routes, "  {}")
        .replace("config: {dsn:", "config: {connectTimeout: 2s, dsn:");
    let running = wf_tests::start_yaml(&yaml).await;
    let work = format!("http://{}/work", server_addr(&running, "web"));
    assert_eq!(post(&work, json!({})).await.0, 200);
    proxy.cut();
    let (status, body) = post(&work, json!({})).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        !body.to_string().contains("127.0.0.1"),
        "nothing internal: {body}"
    );
    proxy.restore();
    let back = eventually(Duration::from_secs(30), || {
        let work = work.clone();
        async move { post(&work, json!({})).await.0 == 200 }
    })
    .await;
    assert!(
        back,
        "durable runs are accepted again once the journal is back"
    );
    running.stop(Duration::from_secs(5)).await;
}

/// A state machine's follow-up (here an auto-transition whose hook calls a service) is retried
/// when it fails in a way that may pass, and one that keeps failing is recorded in the journal
/// as a failed run, with every attempt; it cannot be replayed as a pipeline run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_state_machine_follow_ups_are_retried_then_recorded() {
    let dir = TempDir::new("journal-follow-up");
    let (peer, url) = peer().await;
    for (backend, dsn) in database_backends(&dir) {
        let name = unique_name("journal-follow-up-");
        let charge = format!("charge-{backend}");
        let extra = r#"
  statemachine:
    engine: orders-engine
    definitions:
      - name: order
        initialState: new
        states:
          new: {}
          charged: {isFinal: true}
        transitions:
          charge: {fromState: new, toState: charged, autoTransform: true}
    hooks:
      - transitions: [charge]
        pipeline: charge-card
"#;
        let pipelines = format!(
            r#"
  charge-card:
    steps:
      - {{name: call, type: step.http_call, config: {{url: "{url}/{charge}", method: POST}}}}
"#
        );
        let routes = r#"
      - {method: POST, path: /api/orders, handler: orders-api}
      - {method: GET, path: "/api/orders/{id}", handler: orders-api}
"#;
        let yaml = app_with(&name, &dsn, "", routes, &pipelines, "").replace(
            "  - {name: runs, type: runs.api}\n",
            "  - {name: runs, type: runs.api}\n  - {name: orders-engine, type: statemachine.engine}\n  - {name: orders-api, type: api.handler, config: {resourceName: orders, workflowType: order}}\n",
        ).replace("workflows:\n  http:\n", &format!("workflows:{extra}  http:\n"));
        let running = wf_tests::start_yaml(&yaml).await;
        let base = format!("http://{}", server_addr(&running, "web"));
        // PostgreSQL is shared between test runs: ids of this run's own.
        let (first, second) = (unique_name("o-"), unique_name("o-"));

        // Fails twice, then passes: the retries move the order on.
        peer.answer(
            &charge,
            &[
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::SERVICE_UNAVAILABLE,
            ],
        );
        let (status, created) = post(&format!("{base}/api/orders"), json!({"id": first})).await;
        assert_eq!(status, 201, "{backend}: {created}");
        let (_, order) = get(&format!("{base}/api/orders/{first}")).await;
        assert_eq!(order["state"], "charged", "{backend}: {order}");
        assert_eq!(peer.calls(&charge).len(), 3, "{backend}");

        // Keeps failing: the order waits in `new`, and the journal says why.
        peer.answer(&charge, &[StatusCode::SERVICE_UNAVAILABLE; 4]);
        let (status, _) = post(&format!("{base}/api/orders"), json!({"id": second})).await;
        assert_eq!(status, 201, "{backend}");
        let (_, order) = get(&format!("{base}/api/orders/{second}")).await;
        assert_eq!(order["state"], "new", "{backend}: {order}");
        let (_, page) = get(&format!(
            "{base}/api/runs?status=failed&pipeline=statemachine.orders-engine"
        ))
        .await;
        let id = page["runs"][0]["run_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{backend}: a failed follow-up in {page}"))
            .to_string();
        let (_, run) = get(&format!("{base}/api/runs/{id}")).await;
        assert_eq!(run["trigger"]["kind"], "statemachine", "{backend}: {run}");
        assert_eq!(run["input"]["instanceId"], json!(second));
        assert_eq!(run["input"]["transition"], "charge");
        assert_eq!(
            run["steps"].as_array().unwrap().len(),
            4,
            "{backend}: {run}"
        );
        assert_eq!(run["error"]["kind"], "unavailable", "{backend}: {run}");
        let (status, refused) = post(&format!("{base}/api/runs/{id}/replay"), json!({})).await;
        assert_eq!(status, 409, "{backend}: {refused}");
        assert_eq!(running.stop(Duration::from_secs(5)).await, 0);
    }
}
