//! Durable runs with the real binary: a run killed with SIGKILL mid-step is resumed by the next
//! start without repeating its finished steps; `wf-host runs` lists, shows, replays and
//! cancels on SQLite (the data directory) and PostgreSQL; a state machine without a database
//! keeps its instances across a restart; one data directory serves one `wf-host run`.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::{TempDir, app_file, request, run, wf_host};
use serde_json::{Value, json};

/// A local HTTP peer the apps call (`POST /<name>`): it records each call's headers and
/// answers `200 {}`; calls to a gated name wait until it is opened (at most 30 s).
#[derive(Default)]
struct Peer {
    calls: Mutex<Vec<(String, HashMap<String, String>)>>,
    gated: Mutex<Vec<String>>,
    changed: Condvar,
}

impl Peer {
    fn start() -> (Arc<Peer>, String) {
        let peer = Arc::new(Peer::default());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let serving = peer.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let peer = serving.clone();
                std::thread::spawn(move || peer.serve(stream));
            }
        });
        (peer, url)
    }

    fn serve(&self, mut stream: TcpStream) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            return;
        }
        let name = line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .trim_start_matches('/')
            .to_string();
        let mut headers = HashMap::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        let _ = reader.read_exact(&mut body);
        self.calls.lock().unwrap().push((name.clone(), headers));
        self.changed.notify_all();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut gated = self.gated.lock().unwrap();
        while gated.contains(&name) && Instant::now() < deadline {
            gated = self
                .changed
                .wait_timeout(gated, Duration::from_millis(200))
                .unwrap()
                .0;
        }
        drop(gated);
        let _ = stream.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        );
    }

    fn calls(&self, name: &str) -> Vec<HashMap<String, String>> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, h)| h.clone())
            .collect()
    }

    fn gate(&self, name: &str) {
        self.gated.lock().unwrap().push(name.to_string());
    }

    fn open(&self, name: &str) {
        self.gated.lock().unwrap().retain(|n| n != name);
        self.changed.notify_all();
    }

    /// Waits (at most 20 s) until `name` was called `count` times.
    fn wait_for(&self, name: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.calls(name).len() < count {
            assert!(
                Instant::now() < deadline,
                "`{name}` was called {} times, not {count}",
                self.calls(name).len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// An app whose `order` pipeline calls the peer at `first` then `second`, then sets `done`.
fn order_app(peer: &str, tag: &str) -> String {
    format!(
        r#"
name: durable-{tag}
modules:
  - {{name: web, type: http.server, config: {{address: "127.0.0.1:0"}}}}
  - {{name: router, type: http.router}}
  - {{name: runs, type: runs.api}}
pipelines:
  order:
    durable: true
    steps:
      - {{name: first, type: step.http_call, config: {{url: "{peer}/first-{tag}", method: POST}}}}
      - {{name: second, type: step.http_call, config: {{url: "{peer}/second-{tag}", method: POST}}}}
      - {{name: third, type: step.set, config: {{values: {{done: true}}}}}}
triggers:
  http:
    routes:
      - {{method: POST, path: /orders, pipeline: order}}
"#
    )
}

/// `GET path` on a running app as JSON.
fn get_json(address: &str, path: &str) -> Value {
    let (status, body) = request(address, "GET", path, &[], b"").unwrap();
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits (at most 30 s) for run `id` to end; its record.
fn ended(address: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let run = get_json(address, &format!("/api/runs/{id}"));
        if !matches!(run["status"].as_str(), Some("running" | "queued")) {
            return run;
        }
        assert!(Instant::now() < deadline, "run {id} did not end: {run}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `order_app` with its journal in PostgreSQL at `pg` (`runs_extra`: more keys of `runs:`).
fn on_postgres(yaml: &str, pg: &str, runs_extra: &str) -> String {
    // The database module goes among the modules; `runs:` after them.
    yaml.replace(
        "  - {name: runs, type: runs.api}\n",
        &format!(
            "  - {{name: runs, type: runs.api}}\n  - {{name: pg, type: database.workflow, config: {{dsn: \"{pg}\"}}}}\nruns: {{database: pg{runs_extra}}}\n"
        ),
    )
}

/// Runs `order_app` file `app` (tag `tag`) with `envs`, kills it with SIGKILL while its run
/// waits in step `second`, starts it again (same `envs`), and checks the run was resumed:
/// finished, `first` not run again, both calls of `second` carrying the step's one key.
fn killed_mid_step_then_resumed(app: &str, tag: &str, envs: &[(&str, &str)], peer: &Peer) {
    let (first_step, second_step) = (format!("first-{tag}"), format!("second-{tag}"));
    let mut first = run(&[app], envs);
    peer.gate(&second_step);
    let address = first.address.clone();
    // The caller's connection dies with the process; its answer does not matter.
    std::thread::spawn(move || {
        let _ = request(
            &address,
            "POST",
            "/orders",
            &[("Content-Type", "application/json")],
            br#"{"id": 1}"#,
        );
    });
    peer.wait_for(&second_step, 1);
    first.child.kill().unwrap(); // SIGKILL: nothing gets to clean up
    first.child.wait().unwrap();
    peer.open(&second_step);

    let second = run(&[app], envs);
    let runs = get_json(&second.address, "/api/runs?pipeline=order");
    let id = runs["runs"][0]["run_id"]
        .as_str()
        .expect("the run was recorded")
        .to_string();
    let resumed = ended(&second.address, &id);
    assert_eq!(resumed["status"], "succeeded", "{resumed}");
    assert_eq!(resumed["output"]["done"], true, "{resumed}");
    // `first` ran once; `second` twice (cut short, then again), with one key.
    assert_eq!(
        peer.calls(&first_step).len(),
        1,
        "the finished step is not run again"
    );
    let calls = peer.calls(&second_step);
    assert_eq!(calls.len(), 2);
    let keys: Vec<&str> = calls
        .iter()
        .map(|h| h["idempotency-key"].as_str())
        .collect();
    assert_eq!(keys[0], keys[1], "one idempotency key for both calls");
    assert_eq!(keys[0], format!("{id}:second"));
    assert_eq!(
        runs["runs"].as_array().unwrap().len(),
        1,
        "one run, not a new one: {runs}"
    );
    assert_eq!(second.terminate(Duration::from_secs(10)), Some(0));
}

#[test]
fn a_durable_run_killed_mid_step_resumes_without_repeating_finished_steps() {
    let dir = TempDir::new("durable-kill");
    let (peer, url) = Peer::start();
    let app = app_file(&dir, order_app(&url, "kill"));
    let data = dir.0.join("data");
    killed_mid_step_then_resumed(
        app.to_str().unwrap(),
        "kill",
        &[("WF_DATA_DIR", data.to_str().unwrap())],
        &peer,
    );
}

/// The same on PostgreSQL: the restarted host has a new identity (a data directory of its
/// own), and takes the dead one's run over once `runs.takeover_after` has passed without its
/// heartbeat.
#[test]
fn a_durable_run_on_postgres_is_taken_over_after_its_host_dies() {
    let Ok(pg) = std::env::var("WF_TEST_POSTGRES_URL") else {
        eprintln!("WF_TEST_POSTGRES_URL is not set: skipping");
        return;
    };
    let dir = TempDir::new("durable-kill-pg");
    let (peer, url) = Peer::start();
    // PostgreSQL is shared between test runs: an app (and so a journal) of this run's own.
    let tag = format!("pg{}", std::process::id());
    let yaml = on_postgres(&order_app(&url, &tag), &pg, ", takeover_after: 2s");
    let app = app_file(&dir, yaml);
    killed_mid_step_then_resumed(app.to_str().unwrap(), &tag, &[], &peer);
}

/// `wf-host runs ARGS` on `app` with `data` as the data directory: (exit code, stdout,
/// stderr).
fn runs_cli(app: &str, data: &str, args: &[&str]) -> (i32, String, String) {
    let output = wf_host()
        .arg("runs")
        .arg(args[0])
        .arg(app)
        .args(&args[1..])
        .env("WF_DATA_DIR", data)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_runs_command_lists_shows_replays_and_cancels_on_sqlite_and_postgres() {
    let mut backends = vec![("sqlite", String::new())];
    match std::env::var("WF_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => backends.push(("postgres", url)),
        _ => eprintln!("WF_TEST_POSTGRES_URL is not set: skipping the PostgreSQL half"),
    }
    for (backend, pg) in backends {
        let dir = TempDir::new(&format!("runs-cli-{backend}"));
        let (peer, url) = Peer::start();
        let tag = format!("{backend}{}", std::process::id());
        let yaml = order_app(&url, &tag);
        let yaml = if pg.is_empty() {
            yaml
        } else {
            on_postgres(&yaml, &pg, "")
        };
        let app = app_file(&dir, yaml);
        let app = app.to_str().unwrap();
        let data = dir.0.join("data");
        let data = data.to_str().unwrap();

        // Before any run: nothing to list.
        let (code, out, err) = runs_cli(app, data, &["list"]);
        assert_eq!(code, 0, "{backend}: {err}");
        assert!(out.contains("no run"), "{backend}: {out}");

        let server = run(&[app], &[("WF_DATA_DIR", data)]);
        let (status, _) = request(&server.address, "POST", "/orders", &[], b"{}").unwrap();
        assert_eq!(status, 200, "{backend}");
        let (code, out, err) = runs_cli(app, data, &["list", "--format", "json"]);
        assert_eq!(code, 0, "{backend}: {err}");
        let page: Value = serde_json::from_str(&out).unwrap();
        let id = page["runs"][0]["run_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{backend}: a run in {out} ({err})"))
            .to_string();
        ended(&server.address, &id);

        let (code, out, _) = runs_cli(app, data, &["list", "--pipeline", "order"]);
        assert_eq!(code, 0);
        assert!(
            out.contains(&id) && out.contains("succeeded"),
            "{backend}: {out}"
        );
        let (code, out, _) = runs_cli(app, data, &["show", &id]);
        assert_eq!(code, 0);
        for expected in ["first", "second", "third", "succeeded", "http POST /orders"] {
            assert!(out.contains(expected), "{backend}: `{expected}` in {out}");
        }

        // A replay from the CLI is queued; the running app starts it.
        let (code, out, err) = runs_cli(
            app,
            data,
            &["replay", &id, "--from", "third", "--wait", "30s"],
        );
        assert_eq!(code, 0, "{backend}: {out}{err}");
        assert!(
            out.contains("succeeded") && out.contains("reused"),
            "{backend}: {out}"
        );
        assert_eq!(
            peer.calls(&format!("first-{tag}")).len(),
            1,
            "{backend}: reused, not run"
        );

        // A cancel from the CLI reaches the running app, which stops the run.
        peer.gate(&format!("second-{tag}"));
        let address = server.address.clone();
        std::thread::spawn(move || {
            let _ = request(&address, "POST", "/orders", &[], b"{}");
        });
        peer.wait_for(&format!("second-{tag}"), 2);
        let (_, out, _) = runs_cli(
            app,
            data,
            &["list", "--status", "running", "--format", "json"],
        );
        let page: Value = serde_json::from_str(&out).unwrap();
        let going = page["runs"][0]["run_id"]
            .as_str()
            .expect("a running run")
            .to_string();
        let (code, out, err) = runs_cli(app, data, &["cancel", &going]);
        assert_eq!(code, 0, "{backend}: {out}{err}");
        let cancelled = ended(&server.address, &going);
        peer.open(&format!("second-{tag}"));
        assert_eq!(cancelled["status"], "cancelled", "{backend}: {cancelled}");
        // Refusals: an ended run, an unknown run.
        let (code, _, err) = runs_cli(app, data, &["cancel", &going]);
        assert_eq!(code, 1, "{backend}: {err}");
        assert!(err.contains("already ended"), "{backend}: {err}");
        let (code, _, err) = runs_cli(app, data, &["show", "no-such-run"]);
        assert_eq!(code, 2, "{backend}: {err}");
        assert_eq!(server.terminate(Duration::from_secs(10)), Some(0));
    }
}

#[test]
fn a_state_machine_without_a_database_keeps_its_instances_across_a_restart() {
    let dir = TempDir::new("durable-statemachine");
    let app = app_file(
        &dir,
        r#"
modules:
  - {name: web, type: http.server, config: {address: "127.0.0.1:0"}}
  - {name: routes, type: http.router}
  - {name: orders-engine, type: statemachine.engine}
  - name: orders-api
    type: api.handler
    config: {resourceName: orders, workflowType: order}
workflows:
  http:
    routes:
      - {method: POST, path: /api/orders, handler: orders-api}
      - {method: GET, path: "/api/orders/{id}", handler: orders-api}
      - {method: POST, path: "/api/orders/{id}/transition", handler: orders-api}
  statemachine:
    engine: orders-engine
    definitions:
      - name: order
        initialState: new
        states: {new: {}, paid: {}, shipped: {isFinal: true}}
        transitions:
          pay: {fromState: new, toState: paid}
          ship: {fromState: paid, toState: shipped}
"#,
    );
    let app = app.to_str().unwrap();
    let data = dir.0.join("data");
    let data = data.to_str().unwrap();
    let first = run(&[app], &[("WF_DATA_DIR", data)]);
    let (status, body) = request(
        &first.address,
        "POST",
        "/api/orders",
        &[],
        br#"{"id": "o-1"}"#,
    )
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let (status, body) = request(
        &first.address,
        "POST",
        "/api/orders/o-1/transition",
        &[],
        br#"{"transition": "pay"}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(first.terminate(Duration::from_secs(10)), Some(0));

    let second = run(&[app], &[("WF_DATA_DIR", data)]);
    let order = get_json(&second.address, "/api/orders/o-1");
    assert_eq!(order["state"], "paid", "{order}");
    assert!(
        std::path::Path::new(data)
            .join("data/orders-engine.db")
            .exists()
    );
    assert_eq!(second.terminate(Duration::from_secs(10)), Some(0));
}

#[test]
fn one_data_directory_serves_one_wf_host_run() {
    let dir = TempDir::new("durable-lock");
    let app = app_file(
        &dir,
        r#"
modules:
  - {name: web, type: http.server, config: {address: "127.0.0.1:0"}}
  - {name: router, type: http.router}
workflows:
  http:
    routes:
      - {method: GET, path: /x, pipeline: {steps: [{name: one, type: step.set, config: {values: {ok: true}}}]}}
"#,
    );
    let app = app.to_str().unwrap();
    let data = dir.0.join("data");
    let data = data.to_str().unwrap();
    let first = run(&[app], &[("WF_DATA_DIR", data)]);
    let output = wf_host()
        .args(["run", app])
        .env("WF_DATA_DIR", data)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("is in use by another wf-host"), "{err}");
    assert!(
        err.contains(&first.child.id().to_string()),
        "names the holder: {err}"
    );
    assert!(err.contains("--data-dir"), "{err}");
    let _ = json!({});
    assert_eq!(first.terminate(Duration::from_secs(10)), Some(0));
}
