//! The `wf-host` binary as a user runs it.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{root, wf_host};

fn output(args: &[&str]) -> (i32, String, String) {
    let out = wf_host().args(args).output().expect("wf-host runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_exit_codes_and_json() {
    let (code, stdout, _) = output(&["validate", "example/hello/app.yaml"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.starts_with("ok: example/hello/app.yaml (5 modules, 1 workflows"),
        "{stdout}"
    );

    let (code, stdout, _) = output(&[
        "validate",
        "--format",
        "json",
        "tests/diagnostics/several-mistakes.yaml",
    ]);
    assert_eq!(code, 2);
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON output");
    assert_eq!(report["valid"], false);
    assert!(report["errors"].as_u64().unwrap() >= 10);
    for d in report["diagnostics"].as_array().unwrap() {
        assert_eq!(
            d["location"]["file"], "tests/diagnostics/several-mistakes.yaml",
            "{d}"
        );
        assert!(d["location"]["line"].as_u64().unwrap() > 0, "{d}");
        assert!(d["location"]["column"].as_u64().unwrap() > 0, "{d}");
        assert!(d["path"].is_string(), "{d}");
    }
}

#[test]
fn every_bundled_example_is_valid() {
    let examples = root().join("example");
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let dir = entry.unwrap().path();
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            if file.extension().is_some_and(|e| e == "yaml") {
                let relative = file
                    .strip_prefix(root())
                    .unwrap_or(&file)
                    .to_string_lossy()
                    .into_owned();
                let (code, stdout, stderr) = output(&["validate", &relative]);
                assert_eq!(code, 0, "{relative}:\n{stdout}{stderr}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 1);
}

#[test]
fn schema_and_types() {
    let (code, stdout, _) = output(&["schema", "http.server"]);
    assert_eq!(code, 0);
    let schema: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        schema["properties"]["address"]["description"]
            .as_str()
            .unwrap()
            .contains("host:port")
    );
    assert_eq!(schema["required"], serde_json::json!(["address"]));

    let (code, stdout, _) = output(&["schema"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("\"modules\""));

    let (code, _, stderr) = output(&["schema", "http.sever"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("did you mean `http.server`?"), "{stderr}");

    let (code, stdout, _) = output(&["types", "--kind", "module"]);
    assert_eq!(code, 0);
    for name in [
        "http.server",
        "http.router",
        "http.handler",
        "health.checker",
        "messaging.broker",
    ] {
        assert!(stdout.contains(name), "{name} missing from:\n{stdout}");
    }
}

#[test]
fn inspect_shows_start_order_and_routes() {
    let (code, stdout, _) = output(&["inspect", "--format", "json", "example/hello/app.yaml"]);
    assert_eq!(code, 0);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let modules: Vec<&str> = report["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        modules,
        ["routes", "hello", "health", "schemas", "web"],
        "servers start last"
    );
    let routes: Vec<String> = report["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["method"].as_str().unwrap(),
                r["path"].as_str().unwrap()
            )
        })
        .collect();
    assert!(routes.contains(&"GET /hello".to_string()), "{routes:?}");
    assert!(routes.contains(&"GET /readyz".to_string()), "{routes:?}");
}

#[test]
fn run_serves_until_sigterm_and_exits_cleanly() {
    let mut child = wf_host()
        .args(["run", "example/hello/app.yaml", "--grace-period", "5s"])
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wf-host starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let address = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("a `listening` log line");
        if let Some(i) = line.find("address=") {
            break line[i + "address=".len()..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_string();
        }
    };
    let body = get(&address, "/hello");
    assert!(body.contains("Hello from wf"), "{body}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            Instant::now() < deadline,
            "wf-host did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0));
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(
        rest.iter().any(|l| l.contains("signal=SIGTERM")),
        "{rest:?}"
    );
}

#[test]
fn run_refuses_an_invalid_configuration_with_exit_code_2() {
    let (code, _, stderr) = output(&["run", "tests/diagnostics/several-mistakes.yaml"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("error[unknown-type]: unknown module type `http.sever`"),
        "{stderr}"
    );
}

/// A minimal HTTP/1.1 GET over a plain socket (no client dependency for one request).
fn get(address: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn run_pipeline_prints_the_result_and_names_failures() {
    let examples = std::env::var("WF_SEED_EXAMPLES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root().join("../shared/seed/examples"));
    let seed = examples.join("data-sync-pipeline.yaml");
    let seed = seed.to_string_lossy().into_owned();
    let (code, stdout, stderr) = output(&[
        "run-pipeline",
        &seed,
        "manual-sync",
        "--input",
        r#"{"source": "crm"}"#,
    ]);
    assert_eq!(code, 0, "{stderr}");
    let result: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        result,
        serde_json::json!({"source": "crm", "sync_status": "in_progress", "sync_source": "external-api"})
    );

    let (code, _, stderr) = output(&["run-pipeline", &seed, "manual-snc"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("did you mean `manual-sync`?"), "{stderr}");

    let (code, _, stderr) = output(&["run-pipeline", &seed, "manual-sync", "--input", "[1]"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("must be a JSON object"), "{stderr}");
}

/// A Vault KV v2 stand-in that answers every read with one secret (Vault is in no package
/// registry this project may use).
fn serve_one_vault_secret(field: &str, value: &str) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let body = serde_json::json!({"data": {"data": {field: value}}}).to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(8) {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

#[test]
fn secrets_are_fetched_at_start_and_masked_in_the_console_log() {
    let secret = "console-secret-4c1d";
    let vault = serve_one_vault_secret("token", secret);
    let dir = std::env::temp_dir().join(format!("wf-cli-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("app.yaml");
    std::fs::write(
        &file,
        format!(
            r#"modules:
  - name: vault
    type: secrets.vault
    config: {{address: "http://{vault}", token: "${{TEST_VAULT_TOKEN}}"}}
pipelines:
  call:
    steps:
      - {{name: auth, type: step.set, config: {{values: {{header: "Bearer ${{secret:partner#token}}"}}}}}}
      - {{name: oops, type: step.log, config: {{message: "sending {{{{ .header }}}}"}}}}
"#
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap();

    // Offline validation does not fetch.
    let out = wf_host()
        .args(["validate", file])
        .env("TEST_VAULT_TOKEN", "t0ken")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("fetched when the app starts"), "{stdout}");

    let out = wf_host()
        .args(["run-pipeline", file, "call"])
        .env("TEST_VAULT_TOKEN", "t0ken")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // The result is the caller's to see; the log is not.
    assert!(stdout.contains(&format!("Bearer {secret}")), "{stdout}");
    assert!(stderr.contains("sending Bearer [redacted]"), "{stderr}");
    assert!(!stderr.contains(secret), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}
