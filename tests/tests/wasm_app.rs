//! Components in a running app: `step.wasm` routes, `dynamic.component`, the components API
//! (upload, list, delete, rollback, bad uploads, token), restarts that restore uploads, the
//! watched directory, and hot swap under load with no failed request.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use wf_config::load_str;
use wf_engine::{RunningApp, build, validate};
use wf_tests::{
    TempDir, client, eventually, example_vars, plugin, server_addr, wasm_variant as variant,
};

async fn start(dir: &Path, yaml: &str) -> RunningApp {
    let registry = wf_host::registry().unwrap();
    let path = dir.join("app.yaml");
    let validated = validate(load_str(&path, yaml, &example_vars()), &registry)
        .unwrap_or_else(|i| panic!("{}", i.diagnostics.render(&i.config.sources)));
    let app = build(&validated, &registry).unwrap_or_else(|d| panic!("{d:?}"));
    app.start(Duration::from_secs(10)).await.unwrap()
}

fn app_yaml(components: &str) -> String {
    format!(
        r#"
modules:
  - {{name: web, type: http.server, config: {{address: "127.0.0.1:0"}}}}
  - {{name: routes, type: http.router}}
  - name: wasm
    type: wasm.components
    config:
{components}
workflows:
  http:
    routes:
      - method: POST
        path: /hello
        steps:
          - {{name: greet, type: step.wasm, config: {{component: hello}}}}
"#
    )
}

async fn post_hello(base: &str, name: &str) -> (u16, Value) {
    let response = client()
        .post(format!("{base}/hello"))
        .json(&json!({"name": name}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn upload(base: &str, bytes: Vec<u8>, query: &str, grant: Option<Value>) -> (u16, Value) {
    let mut request = client()
        .post(format!("{base}/api/dynamic/components{query}"))
        .header("authorization", "Bearer s3cret-token")
        .body(bytes);
    if let Some(grant) = grant {
        request = request.header("x-wf-grant", grant.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn api(method: reqwest::Method, url: String) -> (u16, Value) {
    let response = client()
        .request(method, url)
        .header("authorization", "Bearer s3cret-token")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

const API: &str = "      api: {token: s3cret-token}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dynamic_component_serves_a_route_through_step_wasm() {
    let dir = TempDir::new("dynamic");
    std::fs::write(dir.0.join("hello.wasm"), plugin("hello")).unwrap();
    let yaml = r#"
modules:
  - {name: web, type: http.server, config: {address: "127.0.0.1:0"}}
  - {name: routes, type: http.router}
  - {name: wasm, type: wasm.components, config: {data_dir: data}}
  - name: greeter
    type: dynamic.component
    config:
      source: hello.wasm
      componentId: hello
      config: {greeting: howdy}
workflows:
  http:
    routes:
      - method: POST
        path: /hello
        steps:
          - {name: greet, type: step.wasm, config: {component: hello}}
"#;
    let running = start(&dir.0, yaml).await;
    let base = format!("http://{}", server_addr(&running, "web"));
    let (status, body) = post_hello(&base, "ada").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"name": "ada", "message": "howdy, ada"}));
    running.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_go_live_survive_restarts_and_are_refused_deletion_while_used() {
    let dir = TempDir::new("upload");
    let yaml = app_yaml(&format!("      data_dir: data\n{API}"));
    let running = start(&dir.0, &yaml).await;
    let base = format!("http://{}", server_addr(&running, "web"));

    // Before the upload the route answers 503 (the log says which component is missing).
    let (status, body) = post_hello(&base, "ada").await;
    assert_eq!(status, 503, "{body}");

    // Without the token nothing happens.
    let response = client()
        .post(format!("{base}/api/dynamic/components"))
        .body(plugin("hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    let (status, info) = upload(
        &base,
        plugin("hello"),
        "?name=hello",
        Some(json!({"config": {"greeting": "hi"}})),
    )
    .await;
    assert_eq!(status, 201, "{info}");
    assert_eq!(
        (
            info["name"].as_str(),
            info["status"].as_str(),
            info["kind"].as_str()
        ),
        (Some("hello"), Some("live"), Some("step"))
    );
    let users = info["used_by"].as_array().unwrap();
    assert!(
        users.len() == 1 && users[0].as_str().unwrap().ends_with("greet"),
        "{info}"
    );
    let (status, body) = post_hello(&base, "ada").await;
    assert_eq!(
        (status, body),
        (200, json!({"name": "ada", "message": "hi, ada"}))
    );

    // The same bytes and grant again: nothing changes.
    let (status, _) = upload(
        &base,
        plugin("hello"),
        "?name=hello",
        Some(json!({"config": {"greeting": "hi"}})),
    )
    .await;
    assert_eq!(status, 200);

    let (status, list) = api(
        reqwest::Method::GET,
        format!("{base}/api/dynamic/components"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["invocations"], 1);
    assert!(list[0]["p50_us"].as_u64().is_some());
    assert_eq!(list[0]["digest"].as_str().unwrap().len(), 64);

    // In use by the route: deletion is refused unless forced.
    let (status, body) = api(
        reqwest::Method::DELETE,
        format!("{base}/api/dynamic/components/hello"),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    running.stop(Duration::from_secs(5)).await;

    // A restart restores the upload, grant included.
    let running = start(&dir.0, &yaml).await;
    let base = format!("http://{}", server_addr(&running, "web"));
    let (status, body) = post_hello(&base, "bo").await;
    assert_eq!(
        (status, body),
        (200, json!({"name": "bo", "message": "hi, bo"}))
    );

    let (status, _) = api(
        reqwest::Method::DELETE,
        format!("{base}/api/dynamic/components/hello?force=true"),
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = post_hello(&base, "bo").await;
    assert_eq!(status, 503);
    let (status, _) = api(
        reqwest::Method::GET,
        format!("{base}/api/dynamic/components/hello"),
    )
    .await;
    assert_eq!(status, 404);
    running.stop(Duration::from_secs(5)).await;

    // Deleted means deleted: not restored by the next start.
    let running = start(&dir.0, &yaml).await;
    let base = format!("http://{}", server_addr(&running, "web"));
    assert_eq!(post_hello(&base, "cy").await.0, 503);
    running.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_are_rejected_and_change_nothing() {
    let dir = TempDir::new("bad");
    let yaml = app_yaml(
        "      data_dir: data
      api: {token: s3cret-token, max_upload_mib: 1}
",
    );
    let running = start(&dir.0, &yaml).await;
    let base = format!("http://{}", server_addr(&running, "web"));
    assert_eq!(
        upload(&base, plugin("hello"), "?name=hello", None).await.0,
        201
    );
    let before = api(
        reqwest::Method::GET,
        format!("{base}/api/dynamic/components/hello"),
    )
    .await
    .1;

    let hello = plugin("hello");
    let rt = wf_wasm::Runtime::new(wf_wasm::RuntimeConfig::default()).unwrap();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "garbage",
            b"not a component at all".to_vec(),
            415,
            "not a WebAssembly binary",
        ),
        (
            "core module",
            b"\0asm\x01\0\0\0".to_vec(),
            415,
            "core WebAssembly module",
        ),
        (
            "truncated",
            hello[..hello.len() / 3].to_vec(),
            422,
            "does not compile",
        ),
        (
            "precompiled",
            rt.engine().precompile_component(&hello).unwrap(),
            415,
            "precompiled",
        ),
        ("oversized", vec![0u8; 2 << 20], 413, "`api.max_upload_mib`"),
        (
            "wrong name",
            plugin("sentiment"),
            422,
            "calls itself `sentiment`",
        ),
    ];
    for (what, bytes, status, reason) in cases {
        let (got, body) = upload(&base, bytes, "?name=hello", None).await;
        assert_eq!(got, status, "{what}: {body}");
        assert!(
            body["error"].as_str().unwrap_or("").contains(reason),
            "{what}: {body}"
        );
        assert_eq!(
            post_hello(&base, "ada").await.0,
            200,
            "{what}: the live version must keep serving"
        );
    }
    let after = api(
        reqwest::Method::GET,
        format!("{base}/api/dynamic/components/hello"),
    )
    .await
    .1;
    assert_eq!(
        (before["digest"].clone(), before["revision"].clone()),
        (after["digest"].clone(), after["revision"].clone())
    );
    assert!(
        after["rejected"]["error"]
            .as_str()
            .unwrap()
            .contains("sentiment"),
        "{after}"
    );
    // Rejected uploads leave no compiled code behind: only the live version's (they did: #16).
    let cached: Vec<_> = std::fs::read_dir(dir.0.join("data/cache"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(
        cached[0].starts_with(after["digest"].as_str().unwrap()),
        "{cached:?}"
    );
    running.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_restores_the_previous_version() {
    let dir = TempDir::new("rollback");
    let running = start(&dir.0, &app_yaml(&format!("      data_dir: data\n{API}"))).await;
    let base = format!("http://{}", server_addr(&running, "web"));
    assert_eq!(
        upload(
            &base,
            plugin("hello"),
            "?name=hello",
            Some(json!({"config": {"greeting": "v1"}}))
        )
        .await
        .0,
        201
    );
    assert_eq!(
        upload(
            &base,
            variant(&plugin("hello"), "2"),
            "?name=hello",
            Some(json!({"config": {"greeting": "v2"}}))
        )
        .await
        .0,
        201
    );
    assert_eq!(post_hello(&base, "a").await.1["message"], "v2, a");
    let (status, info) = api(
        reqwest::Method::POST,
        format!("{base}/api/dynamic/components/hello/rollback"),
    )
    .await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(post_hello(&base, "a").await.1["message"], "v1, a");
    let (status, _) = api(
        reqwest::Method::POST,
        format!("{base}/api/dynamic/components/hello/rollback"),
    )
    .await;
    assert_eq!(status, 409);
    running.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watched_directory_hot_swaps_and_keeps_the_old_version_on_a_bad_file() {
    let dir = TempDir::new("watch");
    let components = dir.0.join("components");
    std::fs::create_dir_all(&components).unwrap();
    std::fs::write(components.join("hello.wasm"), plugin("hello")).unwrap();
    let yaml = app_yaml(&format!(
        "      data_dir: data\n      dir: components\n      components:\n        hello: {{config: {{greeting: watched}}}}\n{API}"
    ));
    let running = start(&dir.0, &yaml).await;
    let base = format!("http://{}", server_addr(&running, "web"));
    assert_eq!(
        post_hello(&base, "a").await,
        (200, json!({"name": "a", "message": "watched, a"}))
    );
    let info = |base: String| async move {
        api(
            reqwest::Method::GET,
            format!("{base}/api/dynamic/components/hello"),
        )
        .await
        .1
    };
    let first = info(base.clone()).await;

    // A broken file: rejected, the old version keeps serving.
    std::fs::write(components.join("hello.wasm"), b"\0asm\x0d\0\x01\0garbage").unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            info(base.clone()).await["rejected"].is_object()
        })
        .await,
        "the bad file was never reported"
    );
    assert_eq!(post_hello(&base, "b").await.0, 200);
    assert_eq!(info(base.clone()).await["digest"], first["digest"]);

    // A new good version (written the way editors do: temp file, then rename) goes live.
    let fixed = variant(&plugin("hello"), "new");
    std::fs::write(components.join(".hello.wasm.tmp"), &fixed).unwrap();
    std::fs::rename(
        components.join(".hello.wasm.tmp"),
        components.join("hello.wasm"),
    )
    .unwrap();
    let new_digest = wf_wasm::cache::sha256_hex(&fixed);
    assert!(
        eventually(Duration::from_secs(10), || async {
            info(base.clone()).await["digest"] == json!(new_digest)
        })
        .await,
        "the new version never went live"
    );
    assert_eq!(info(base.clone()).await["rejected"], Value::Null);
    assert_eq!(post_hello(&base, "c").await.0, 200);
    running.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_under_load_fails_no_request() {
    let dir = TempDir::new("swap");
    let running = start(
        &dir.0,
        &app_yaml(&format!(
            "      data_dir: data\n      defaults: {{policy: reuse}}\n{API}"
        )),
    )
    .await;
    let base = format!("http://{}", server_addr(&running, "web"));
    assert_eq!(
        upload(
            &base,
            plugin("hello"),
            "?name=hello",
            Some(json!({"config": {"greeting": "v0"}}))
        )
        .await
        .0,
        201
    );

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for worker in 0..8 {
        let (stop, ok, failed, base) = (stop.clone(), ok.clone(), failed.clone(), base.clone());
        load.push(tokio::spawn(async move {
            let mut seen = std::collections::BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                let (status, body) = post_hello(&base, &format!("w{worker}")).await;
                if status == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                    seen.insert(
                        body["message"]
                            .as_str()
                            .unwrap_or("")
                            .split(',')
                            .next()
                            .unwrap_or("")
                            .to_string(),
                    );
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("failed request during swap: {status} {body}");
                }
            }
            seen
        }));
    }
    // Ten swaps, alternating new bytes and new grants, while the load runs.
    for round in 1..=10 {
        let bytes = variant(&plugin("hello"), &round.to_string());
        let (status, body) = upload(
            &base,
            bytes,
            "?name=hello",
            Some(json!({"config": {"greeting": format!("v{round}")}})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut greetings = std::collections::BTreeSet::new();
    for task in load {
        greetings.extend(task.await.unwrap());
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during hot swap"
    );
    assert!(
        ok.load(Ordering::Relaxed) > 50,
        "too little load to mean anything: {}",
        ok.load(Ordering::Relaxed)
    );
    assert!(
        greetings.contains("v10"),
        "the last version never served: {greetings:?}"
    );
    assert!(
        greetings.len() >= 3,
        "swaps were not observed under load: {greetings:?}"
    );
    let (_, info) = api(
        reqwest::Method::GET,
        format!("{base}/api/dynamic/components/hello"),
    )
    .await;
    assert_eq!(info["revision"], 11);
    assert_eq!(info["previous_versions"].as_array().unwrap().len(), 3);
    running.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_component_is_a_step_type_under_its_own_name() {
    let dir = TempDir::new("types");
    let components = dir.0.join("components");
    std::fs::create_dir_all(&components).unwrap();
    std::fs::write(components.join("sentiment.wasm"), plugin("sentiment")).unwrap();
    let yaml = |config: &str| {
        format!(
            r#"
modules:
  - {{name: web, type: http.server, config: {{address: "127.0.0.1:0"}}}}
  - {{name: routes, type: http.router}}
  - {{name: wasm, type: wasm.components, config: {{dir: components, data_dir: data}}}}
workflows:
  http:
    routes:
      - method: POST
        path: /feedback
        steps:
          - {{name: score, type: sentiment, config: {config}}}
"#
        )
    };
    let path = dir.0.join("app.yaml");
    let mut registry = wf_host::registry().unwrap();
    let loaded = load_str(&path, &yaml("{field: comment}"), &example_vars());
    let warnings =
        wf_wasm::component_types::register_component_types(&loaded.config, &mut registry).await;
    assert!(warnings.is_empty(), "{warnings:?}");
    let info = registry
        .find_type("sentiment")
        .expect("a step type named after the component");
    assert!(
        info.description.contains("WebAssembly component"),
        "{}",
        info.description
    );

    // The component's config schema is checked like a built-in's.
    let bad_yaml = yaml("{field: comment, colour: red}");
    let Err(bad) = validate(load_str(&path, &bad_yaml, &example_vars()), &registry) else {
        panic!("an unknown config key must be an error");
    };
    let rendered = bad.diagnostics.render(&bad.config.sources);
    assert!(rendered.contains("colour"), "{rendered}");

    let validated = validate(loaded, &registry)
        .unwrap_or_else(|i| panic!("{}", i.diagnostics.render(&i.config.sources)));
    let running = build(&validated, &registry)
        .unwrap()
        .start(Duration::from_secs(10))
        .await
        .unwrap();
    let base = format!("http://{}", server_addr(&running, "web"));
    let response = client()
        .post(format!("{base}/feedback"))
        .json(&json!({"comment": "not good, slow and broken"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["sentiment"], "negative", "{body}");
    running.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_component_keeps_its_state_between_calls_and_restarts_on_swap() {
    let dir = TempDir::new("module");
    std::fs::write(dir.0.join("counter.wasm"), plugin("counter")).unwrap();
    let yaml = format!(
        r#"
modules:
  - {{name: web, type: http.server, config: {{address: "127.0.0.1:0"}}}}
  - {{name: routes, type: http.router}}
  - name: wasm
    type: wasm.components
    config:
      data_dir: data
{API}  - name: counter
    type: dynamic.component
    config: {{source: counter.wasm, componentId: counter, config: {{start_at: 10}}}}
workflows:
  http:
    routes:
      - method: POST
        path: /count
        steps:
          - name: bump
            type: step.wasm
            config: {{component: counter, operation: increment, input: {{key: "{{{{ .key }}}}"}}}}
      - method: POST
        path: /misused
        steps:
          - {{name: run, type: step.wasm, config: {{component: counter}}}}
"#
    );
    let running = start(&dir.0, &yaml).await;
    let base = format!("http://{}", server_addr(&running, "web"));
    let count = |key: &'static str| {
        let base = base.clone();
        async move {
            let response = client()
                .post(format!("{base}/count"))
                .json(&json!({"key": key}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null)["count"].clone(),
            )
        }
    };
    // One long-lived instance: the count carries from call to call.
    assert_eq!(count("a").await, (200, json!(11)));
    assert_eq!(count("a").await, (200, json!(12)));
    assert_eq!(count("b").await, (200, json!(11)));
    let (_, info) = api(
        reqwest::Method::GET,
        format!("{base}/api/dynamic/components/counter"),
    )
    .await;
    assert_eq!(info["kind"], "module", "{info}");

    // A module used as a step is the app's mistake, said plainly in the log; the caller gets 500.
    let response = client()
        .post(format!("{base}/misused"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);

    // A version whose `start` fails is rejected; the running one keeps its state.
    let (status, body) = upload(
        &base,
        variant(&plugin("counter"), "x"),
        "?name=counter",
        Some(json!({"config": {"fail_start": true}})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("`start` failed"),
        "{body}"
    );
    assert_eq!(count("a").await, (200, json!(13)));

    // A good new version starts fresh (module state lives in the instance) and the old one stops.
    let (status, body) = upload(
        &base,
        variant(&plugin("counter"), "y"),
        "?name=counter",
        Some(json!({"config": {"start_at": 100}})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(count("a").await, (200, json!(101)));
    running.stop(Duration::from_secs(5)).await;
}

/// An app with a broker and the `alert-intake` trigger component (written into `dir`), with
/// the component's YAML lines (`config`, `capabilities`) and the app's pipelines.
fn intake_app(dir: &TempDir, component: &str, pipelines: &str) -> String {
    std::fs::write(dir.0.join("alert_intake.wasm"), plugin("alert_intake")).unwrap();
    format!(
        r#"
modules:
  - {{name: web, type: http.server, config: {{address: "127.0.0.1:0"}}}}
  - {{name: routes, type: http.router}}
  - {{name: bus, type: messaging.broker, config: {{delivery: sync}}}}
  - {{name: wasm, type: wasm.components, config: {{data_dir: data}}}}
  - name: intake
    type: dynamic.component
    config:
      source: alert_intake.wasm
{component}
pipelines:
{pipelines}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_component_starts_pipelines_from_its_route_and_topic() {
    let dir = TempDir::new("trigger");
    let yaml = intake_app(
        &dir,
        r#"      config: {path: /alerts, topic: alerts.raw}
      capabilities:
        routes: ["POST /alerts"]
        subscribe: [alerts.raw]
        pipelines: [page-on-call, record-alert]"#,
        r#"  page-on-call:
    steps:
      - {name: page, type: step.set, config: {values: {paged: "{{ .alert.title }}", channel: pager}}}
  record-alert:
    steps:
      - {name: record, type: step.set, config: {values: {recorded: "{{ .alert.title }}"}}}"#,
    );
    let running = start(&dir.0, &yaml).await;
    let base = format!("http://{}", server_addr(&running, "web"));
    let post = |body: Value| {
        let base = base.clone();
        async move {
            let response = client()
                .post(format!("{base}/alerts"))
                .json(&body)
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, body) = post(json!({"title": "Primary DB down", "severity": "critical"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["runs"][0]["pipeline"], "page-on-call", "{body}");
    assert_eq!(body["runs"][0]["status"], "completed", "{body}");
    assert_eq!(
        body["runs"][0]["output"]["paged"], "Primary DB down",
        "{body}"
    );
    assert_eq!(body["runs"][0]["output"]["via"], "http", "{body}");
    let (_, body) = post(json!({"title": "disk at 70%"})).await;
    assert_eq!(
        body["runs"][0]["output"]["recorded"], "disk at 70%",
        "{body}"
    );
    // The component's own input check is the caller's 400.
    let (status, _) = post(json!(["not", "an", "alert"])).await;
    assert_eq!(status, 400);

    // The topic source (synchronous delivery): a message becomes a run; a failing run is a
    // failed delivery.
    let services = running.state().services().unwrap();
    let broker = services
        .get::<dyn wf_messaging::MessageBroker>("bus")
        .unwrap();
    let delivery = broker
        .publish(
            "alerts.raw",
            bytes::Bytes::from(json!({"title": "latency up"}).to_string()),
        )
        .await
        .unwrap();
    assert_eq!((delivery.delivered, delivery.failed), (1, 0));
    let delivery = broker
        .publish("alerts.raw", bytes::Bytes::from_static(b"not json"))
        .await
        .unwrap();
    assert_eq!(delivery.failed, 1);
    running.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_trigger_component_gets_its_route_while_the_app_runs() {
    let dir = TempDir::new("trigger-upload");
    let yaml = format!(
        r#"
modules:
  - {{name: web, type: http.server, config: {{address: "127.0.0.1:0"}}}}
  - {{name: routes, type: http.router}}
  - {{name: bus, type: messaging.broker}}
  - name: wasm
    type: wasm.components
    config:
      data_dir: data
      components:
        alert-intake:
          capabilities: {{routes: ["POST /intake"], subscribe: [intake.raw], pipelines: [record-alert]}}
{API}pipelines:
  record-alert:
    steps:
      - {{name: record, type: step.set, config: {{values: {{recorded: "{{{{ .alert.title }}}}"}}}}}}
"#
    );
    let running = start(&dir.0, &yaml).await;
    let base = format!("http://{}", server_addr(&running, "web"));
    let intake = || async {
        let response = client()
            .post(format!("{base}/intake"))
            .json(&json!({"title": "cpu warm"}))
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    assert_eq!(intake().await.0, 404);
    let capabilities = json!({"routes": ["POST /intake"], "subscribe": ["intake.raw"], "pipelines": ["record-alert"]});
    // A route the YAML does not grant is refused, even when the upload asks for it: the
    // uploader cannot widen what the app's author allowed (it could: #16).
    let (status, body) = upload(
        &base,
        plugin("alert_intake"),
        "?name=alert-intake",
        Some(json!({
            "config": {"path": "/other", "topic": "intake.raw"},
            "capabilities": {"routes": ["POST /other"], "subscribe": ["intake.raw"], "pipelines": ["*"]},
        })),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("capabilities.routes: `POST /other`")
            && error.contains("capabilities.pipelines: `*`"),
        "{body}"
    );
    // Asking for a route of its own config that the grant lacks is refused at install.
    let (status, body) = upload(
        &base,
        plugin("alert_intake"),
        "?name=alert-intake",
        Some(json!({
            "config": {"path": "/other", "topic": "intake.raw"},
            "capabilities": {"subscribe": ["intake.raw"]},
        })),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("capabilities.routes"),
        "{body}"
    );
    let grant =
        json!({"config": {"path": "/intake", "topic": "intake.raw"}, "capabilities": capabilities});
    let (status, body) = upload(
        &base,
        plugin("alert_intake"),
        "?name=alert-intake",
        Some(grant.clone()),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["kind"], "trigger");
    let (status, body) = intake().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["runs"][0]["output"]["recorded"], "cpu warm", "{body}");
    // A critical alert asks for `page-on-call`, which this grant does not include.
    let response = client()
        .post(format!("{base}/intake"))
        .json(&json!({"title": "db down"}))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["runs"][0]["status"], "failed", "{body}");
    assert!(
        body["runs"][0]["error"]
            .as_str()
            .unwrap()
            .contains("capabilities.pipelines"),
        "{body}"
    );

    // A new version watching something else is refused; the same sources swap fine.
    let moved = json!({"config": {"path": "/elsewhere", "topic": "intake.raw"}, "capabilities": capabilities});
    let (status, body) = upload(
        &base,
        variant(&plugin("alert_intake"), "2"),
        "?name=alert-intake",
        Some(moved),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("restart"),
        "{body}"
    );
    let (status, _) = upload(
        &base,
        variant(&plugin("alert_intake"), "3"),
        "?name=alert-intake",
        Some(grant),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(intake().await.0, 200);

    // Deleted: its route stays but answers 503.
    let (status, _) = api(
        reqwest::Method::DELETE,
        format!("{base}/api/dynamic/components/alert-intake"),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(intake().await.0, 503);
    running.stop(Duration::from_secs(5)).await;
}

/// Collects what is published on a topic.
struct Collect(tokio::sync::mpsc::UnboundedSender<Value>);

#[wf_engine::async_trait]
impl wf_messaging::MessageHandler for Collect {
    async fn handle(&self, _topic: &str, payload: bytes::Bytes) -> anyhow::Result<()> {
        let _ = self.0.send(serde_json::from_slice(&payload)?);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_component_schedule_starts_runs() {
    let dir = TempDir::new("trigger-cron");
    let yaml = intake_app(
        &dir,
        r#"      config: {heartbeat: "* * * * * *"}
      capabilities: {routes: ["POST /alerts"], subscribe: [alerts.raw], pipelines: [record-alert]}"#,
        r#"  record-alert:
    steps:
      - {name: note, type: step.publish, config: {topic: recorded, payload: {title: "{{ .alert.title }}", via: "{{ .via }}"}}}"#,
    );
    let running = start(&dir.0, &yaml).await;
    let services = running.state().services().unwrap();
    let broker = services
        .get::<dyn wf_messaging::MessageBroker>("bus")
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    broker
        .subscribe("recorded", "test", Arc::new(Collect(tx)))
        .unwrap();
    // Every second: the first heartbeat comes within about two.
    let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("no scheduled run within 5s");
    assert_eq!(
        first,
        Some(json!({"title": "heartbeat", "via": "schedule"}))
    );
    running.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processing_step_runs_a_component_and_moves_the_instance_on() {
    let dir = TempDir::new("processing");
    std::fs::write(dir.0.join("hello.wasm"), plugin("hello")).unwrap();
    let yaml = r#"
modules:
  - {name: wasm, type: wasm.components, config: {data_dir: data}}
  - name: greeter
    type: dynamic.component
    config: {source: hello.wasm, componentId: hello, config: {greeting: howdy}}
  - {name: engine, type: statemachine.engine}
  - name: greet
    type: processing.step
    config: {componentId: hello, successTransition: greeted, maxRetries: 0}
workflows:
  statemachine:
    engine: engine
    definitions:
      - name: visit
        initialState: arrived
        states: {arrived: {}, greeting: {}, greeted: {isFinal: true}}
        transitions:
          welcome: {fromState: arrived, toState: greeting}
          greeted: {fromState: greeting, toState: greeted}
    hooks:
      - {transitions: [welcome], handler: greet}
"#;
    let running = start(&dir.0, yaml).await;
    let engine = running
        .state()
        .services()
        .unwrap()
        .get::<wf_state::StateMachineEngine>("engine")
        .unwrap();
    let mut data = serde_json::Map::new();
    data.insert("name".into(), json!("ada"));
    engine.create("visit", Some("v-1"), data).await.unwrap();
    let visit = engine
        .trigger("v-1", "welcome", serde_json::Map::new())
        .await
        .unwrap();
    assert_eq!(visit.current_state, "greeted");
    assert_eq!(visit.data["message"], "howdy, ada");
    running.stop(Duration::from_secs(5)).await;
}
