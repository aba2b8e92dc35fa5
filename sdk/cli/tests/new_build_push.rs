//! The new-user path, end to end: `wf-plugin new` → `build` → `test` → `inspect` → `push` to a
//! running app, then edit, rebuild and push again to hot-swap the route's component.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};
use wf_http::HttpServer;

fn wf_plugin(args: &[&str], dir: &Path) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_wf-plugin"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    eprintln!(
        "$ wf-plugin {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const APP: &str = r#"
modules:
  - {name: web, type: http.server, config: {address: "127.0.0.1:0"}}
  - {name: routes, type: http.router}
  - {name: wasm, type: wasm.components, config: {data_dir: data, api: {token: t0ken}}}
workflows:
  http:
    routes:
      - method: POST
        path: /greet
        steps:
          - {name: greet, type: step.wasm, config: {component: greeter}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_build_test_inspect_push_and_hot_swap() {
    let tmp = TempDir(std::env::temp_dir().join(format!("wf-plugin-e2e-{}", std::process::id())));
    std::fs::create_dir_all(&tmp.0).unwrap();

    assert!(
        wf_plugin(&["new", "greeter", "--kind", "step"], &tmp.0)
            .status
            .success()
    );
    let project = tmp.0.join("greeter");
    assert!(project.join("src/lib.rs").exists() && project.join("tests/greets.json").exists());
    // A name taken twice, or an unsupported world, is a clear error.
    let again = wf_plugin(&["new", "greeter"], &tmp.0);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let built = wf_plugin(&["build"], &project);
    assert!(built.status.success());
    let stdout = String::from_utf8_lossy(&built.stdout);
    assert!(
        stdout.contains("built greeter 0.1.0 (step)") && stdout.contains("sha256"),
        "{stdout}"
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project.join("target"));
    let wasm = target.join("wasm32-wasip2/release/greeter.wasm");
    assert!(wasm.exists(), "{}", wasm.display());

    let tested = wf_plugin(&["test", "--wasm", wasm.to_str().unwrap()], &project);
    assert!(tested.status.success());
    assert!(String::from_utf8_lossy(&tested.stdout).contains("1 passed, 0 failed"));
    // A failing fixture fails the command.
    std::fs::write(
        project.join("tests/wrong.json"),
        json!({"input": {"name": "x"}, "expect": {"message": "bye"}}).to_string(),
    )
    .unwrap();
    let tested = wf_plugin(&["test", "--wasm", wasm.to_str().unwrap()], &project);
    assert!(!tested.status.success());
    std::fs::remove_file(project.join("tests/wrong.json")).unwrap();

    let inspected = wf_plugin(&["inspect", wasm.to_str().unwrap()], &project);
    let info: Value = serde_json::from_slice(&inspected.stdout).unwrap();
    assert_eq!(
        (info["name"].as_str(), info["kind"].as_str()),
        (Some("greeter"), Some("step"))
    );
    assert!(
        info["exports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "wf:plugin/step@0.1.0"),
        "{info}"
    );
    assert!(
        info["imports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "wf:plugin/log@0.1.0"),
        "{info}"
    );

    // A running app whose route names the component before it exists.
    let registry = wf_host::registry().unwrap();
    let vars = std::collections::HashMap::<String, String>::new();
    let loaded = wf_config::load_str(tmp.0.join("app.yaml"), APP, &vars);
    let validated =
        wf_engine::validate(loaded, &registry).unwrap_or_else(|_| panic!("app is invalid"));
    let app = wf_engine::build(&validated, &registry).unwrap_or_else(|d| panic!("{d:?}"));
    let running = app.start(Duration::from_secs(10)).await.unwrap();
    let services = running.state().services().unwrap();
    let addr = services
        .get::<HttpServer>("web")
        .unwrap()
        .local_addr()
        .unwrap();
    let host = format!("http://{addr}");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let greet = || async {
        let response = http
            .post(format!("{host}/greet"))
            .json(&json!({"name": "ada"}))
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    assert_eq!(greet().await.0, 503);

    let wrong_token = wf_plugin(
        &[
            "push",
            wasm.to_str().unwrap(),
            "--host",
            &host,
            "--token",
            "nope",
        ],
        &project,
    );
    assert!(!wrong_token.status.success());
    let pushed = wf_plugin(
        &[
            "push",
            wasm.to_str().unwrap(),
            "--host",
            &host,
            "--token",
            "t0ken",
        ],
        &project,
    );
    assert!(pushed.status.success());
    assert_eq!(
        greet().await,
        (200, json!({"name": "ada", "message": "hello, ada"}))
    );

    // Edit, rebuild, push: the route serves the new code, no restart.
    let source = std::fs::read_to_string(project.join("src/lib.rs")).unwrap();
    std::fs::write(
        project.join("src/lib.rs"),
        source.replace("\"hello, {who}\"", "\"welcome, {who}\""),
    )
    .unwrap();
    assert!(wf_plugin(&["build"], &project).status.success());
    // The project's folder instead of its `.wasm`: push finds what build made.
    let pushed = wf_plugin(
        &["push", ".", "--host", &host, "--token", "t0ken"],
        &project,
    );
    assert!(pushed.status.success());
    assert_eq!(
        greet().await,
        (200, json!({"name": "ada", "message": "welcome, ada"}))
    );
    running.stop(Duration::from_secs(5)).await;
}

#[test]
fn module_and_trigger_projects_build_out_of_the_box() {
    let tmp = TempDir(std::env::temp_dir().join(format!("wf-plugin-kinds-{}", std::process::id())));
    std::fs::create_dir_all(&tmp.0).unwrap();
    for (name, kind) in [("tally", "module"), ("hooks", "trigger")] {
        assert!(
            wf_plugin(&["new", name, "--kind", kind], &tmp.0)
                .status
                .success()
        );
        let project = tmp.0.join(name);
        let built = wf_plugin(&["build"], &project);
        assert!(built.status.success(), "{kind}");
        let stdout = String::from_utf8_lossy(&built.stdout);
        assert!(
            stdout.contains(&format!("built {name} 0.1.0 ({kind})")),
            "{stdout}"
        );
    }
    // The module's fixture case invokes an operation.
    let tally = tmp.0.join("tally");
    assert!(tally.join("tests/count.json").exists());
    let tested = wf_plugin(&["test"], &tally);
    assert!(tested.status.success());
    // The trigger's fixture case maps an event to runs.
    let tested = wf_plugin(&["test"], &tmp.0.join("hooks"));
    assert!(tested.status.success());
    assert!(String::from_utf8_lossy(&tested.stdout).contains("1 passed, 0 failed"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.0.join("hooks/target"));
    let inspected = wf_plugin(
        &[
            "inspect",
            target
                .join("wasm32-wasip2/release/hooks.wasm")
                .to_str()
                .unwrap(),
        ],
        &tmp.0,
    );
    let info: Value = serde_json::from_slice(&inspected.stdout).unwrap();
    assert_eq!(info["kind"], "trigger");
    assert_eq!(
        info["sources"],
        json!([{"kind": "http-route", "method": "POST", "path": "/hooks/hooks"}])
    );
}
