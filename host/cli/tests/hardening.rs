//! The `wf-host` process under abuse (issues #16 and #29): resident memory after a burst of
//! failed sign-ins (each one an Argon2 hash of 19 MiB) returns near where it started, text from
//! callers and components cannot forge lines of the console log, and a `kill -9` mid-write loses
//! no acknowledged write.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

mod common;

use common::{TempDir, app_file, request, run, run_pipeline};

const SECRET: &str = "a-test-secret-that-is-32-bytes-long!";

/// What a burst of password hashes may leave resident beyond the process's size before it:
/// one 19 MiB work area per CPU, kept for reuse, and allocator slack. Before the work areas
/// were reused, 200 failed sign-ins left ~700 MiB.
const HASHING_MARGIN_KIB: u64 = 160 * 1024;

#[test]
fn failed_sign_ins_do_not_leave_memory_behind() {
    let dir = TempDir::new("argon");
    let app = app_file(
        &dir,
        format!(
            r#"
modules:
  - {{name: web, type: http.server, config: {{address: "127.0.0.1:0"}}}}
  - {{name: routes, type: http.router}}
  - {{name: db, type: database.workflow, config: {{dsn: "{}"}}}}
  - {{name: users, type: auth.user-store}}
  - {{name: auth, type: auth.jwt, config: {{secret: "{SECRET}"}}}}
workflows:
  http:
    routes:
      - {{method: POST, path: /api/auth/register, handler: auth}}
      - {{method: POST, path: /api/auth/login, handler: auth}}
"#,
            dir.0.join("app.db").display()
        ),
    );
    let host = run(&[app.to_str().unwrap()], &[]);
    let json = [("content-type", "application/json")];
    let (status, body) = request(
        &host.address,
        "POST",
        "/api/auth/register",
        &json,
        br#"{"email": "ada@example.com", "password": "correct horse battery"}"#,
    )
    .unwrap();
    assert!(status == 201 || status == 200, "{status} {body}");
    let before = host.rss_kib();
    assert!(before > 0, "cannot read the process's memory");

    // 200 wrong passwords from 16 clients at once.
    let address = host.address.clone();
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let address = address.clone();
            std::thread::spawn(move || {
                for _ in 0..(200 / 16 + 1) {
                    let (status, _) = request(
                        &address,
                        "POST",
                        "/api/auth/login",
                        &[("content-type", "application/json")],
                        br#"{"email": "ada@example.com", "password": "wrong password"}"#,
                    )
                    .unwrap();
                    assert_eq!(status, 401);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let after = host.rss_kib();
    eprintln!("resident memory: {before} KiB before 200 failed sign-ins, {after} KiB after");
    assert!(
        after <= before + HASHING_MARGIN_KIB,
        "resident memory grew from {before} KiB to {after} KiB after 200 failed sign-ins"
    );
}

#[test]
fn callers_cannot_forge_console_log_lines() {
    let dir = TempDir::new("forged-log");
    let app = app_file(
        &dir,
        r#"
pipelines:
  greet:
    steps:
      - {name: say, type: step.log, config: {level: warn, message: "hello {{ .name }}"}}
"#,
    );
    let forged = "ada\n2026-12-07T00:00:00.000000Z ERROR forged: the admin password is hunter2\r";
    let (ok, stderr) = run_pipeline(&app, "greet", &serde_json::json!({ "name": forged }));
    assert!(ok, "{stderr}");
    let logged: Vec<&str> = stderr.lines().filter(|l| l.contains("hello ada")).collect();
    assert_eq!(logged.len(), 1, "{stderr}");
    assert!(
        logged[0].contains("hello ada\\n2026-12-07T00:00:00.000000Z ERROR forged"),
        "{stderr}"
    );
    assert!(
        !stderr
            .lines()
            .any(|l| l.contains("ERROR forged") && !l.contains("hello ada")),
        "a forged line: {stderr}"
    );
}

#[test]
fn a_killed_host_restarts_on_its_data_with_every_acknowledged_write() {
    let dir = TempDir::new("kill-9");
    let app = app_file(
        &dir,
        format!(
            r#"
modules:
  - {{name: web, type: http.server, config: {{address: "127.0.0.1:0"}}}}
  - {{name: routes, type: http.router}}
  - {{name: db, type: database.workflow, config: {{dsn: "{}"}}}}
pipelines:
  add:
    trigger: {{type: http, config: {{path: /items, method: POST}}}}
    steps:
      - {{name: create, type: step.db_exec, config: {{query: "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY)"}}}}
      - {{name: insert, type: step.db_exec, config: {{query: "INSERT INTO items (id) VALUES (?)", params: ["{{{{ .id }}}}"]}}}}
      - {{name: respond, type: step.json_response, config: {{status: 201, body: {{ok: true}}}}}}
  list:
    trigger: {{type: http, config: {{path: /items, method: GET}}}}
    steps:
      - {{name: all, type: step.db_query, config: {{query: "SELECT id FROM items ORDER BY id"}}}}
      - {{name: respond, type: step.json_response, config: {{body: "{{{{ .steps.all }}}}"}}}}
"#,
            dir.0.join("app.db").display()
        ),
    );
    let mut host = run(&[app.to_str().unwrap()], &[]);
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = {
        let (address, acked) = (host.address.clone(), acked.clone());
        std::thread::spawn(move || {
            for id in 0u64.. {
                let body = format!("{{\"id\": {id}}}");
                match request(
                    &address,
                    "POST",
                    "/items",
                    &[("content-type", "application/json")],
                    body.as_bytes(),
                ) {
                    Ok((201, _)) => acked.lock().unwrap().push(id),
                    _ => return,
                }
            }
        })
    };
    // Killed while writes are in flight.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while acked.lock().unwrap().len() < 200 {
        assert!(std::time::Instant::now() < deadline, "too few writes");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    host.child.kill().unwrap();
    let _ = host.child.wait();
    writer.join().unwrap();

    let host = run(&[app.to_str().unwrap()], &[]);
    let (status, body) = request(&host.address, "GET", "/items", &[], b"").unwrap();
    assert_eq!(status, 200, "{body}");
    let stored: std::collections::BTreeSet<u64> = serde_json::from_str::<serde_json::Value>(&body)
        .unwrap()["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_u64())
        .collect();
    let acked = acked.lock().unwrap().clone();
    let lost: Vec<_> = acked.iter().filter(|id| !stored.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "acknowledged writes lost after kill -9: {lost:?}"
    );
    // And the database takes writes again.
    let (status, _) = request(
        &host.address,
        "POST",
        "/items",
        &[("content-type", "application/json")],
        b"{\"id\": 1000000}",
    )
    .unwrap();
    assert_eq!(status, 201);
}

#[test]
fn components_cannot_forge_console_log_lines() {
    let dir = TempDir::new("forged-guest-log");
    let app = app_file(
        &dir,
        format!(
            r#"
modules:
  - {{name: wasm, type: wasm.components, config: {{data_dir: "{}"}}}}
  - name: adversary
    type: dynamic.component
    config: {{source: "{}", componentId: adversary}}
pipelines:
  flood:
    steps:
      - {{name: say, type: step.wasm, config: {{component: adversary}}}}
"#,
            dir.0.join("data").display(),
            common::root().join("plugins/dist/adversary.wasm").display()
        ),
    );
    let input = serde_json::json!({
        "mode": "flood-logs",
        "arg": "\n2026-12-07T00:00:00.000000Z ERROR forged by a component ",
        "kib": 0,
        "count": 3,
    });
    let (ok, stderr) = run_pipeline(&app, "flood", &input);
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("forged by a component"))
        .collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("component=\"adversary\"") || l.contains("component=adversary")),
        "{stderr}"
    );
    assert!(
        !stderr.lines().any(|l| l.starts_with("2026-12-07T00:00:00")),
        "a forged line: {stderr}"
    );
}
