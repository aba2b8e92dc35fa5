//! The wasm sandbox: every limit (fuel, time, memory, output) and every capability (files,
//! sockets, environment, HTTP, state, events) is denied by default and allowed when granted;
//! traps and bad bytes become typed errors and the host stays up. Components come from
//! `make plugins` (plugins/dist).

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::sync::Arc;

use serde_json::{Map, Value, json};
use wf_engine::ErrorKind;
use wf_wasm::component::{CallInfo, ComponentSpec, LoadedComponent, StepOutcome, check_format};
use wf_wasm::{
    CallError, Capabilities, HostServices, LimitKind, Limits, LoadError, Policy, Runtime,
    RuntimeConfig,
};

use wf_tests::plugin;

fn runtime() -> Arc<Runtime> {
    Runtime::new(RuntimeConfig::default()).unwrap()
}

async fn load_with(name: &str, capabilities: Capabilities, limits: Limits) -> LoadedComponent {
    let spec = ComponentSpec {
        bytes: Arc::new(plugin(name)),
        config: Map::new(),
        capabilities,
        limits,
        services: HostServices::default(),
    };
    LoadedComponent::load(&runtime(), spec).await.unwrap()
}

async fn adversary(capabilities: Capabilities, limits: Limits) -> LoadedComponent {
    load_with("adversary", capabilities, limits).await
}

fn call() -> CallInfo {
    CallInfo {
        pipeline: "test".into(),
        run_id: "run-1".into(),
        step: "step".into(),
        attempt: 1,
        ..CallInfo::default()
    }
}

async fn run(component: &LoadedComponent, input: Value) -> Result<Map<String, Value>, CallError> {
    match component.run_step(&call(), &input).await? {
        StepOutcome::Next(out) | StepOutcome::Stop(out) | StepOutcome::Branch(_, out) => Ok(out),
    }
}

fn limit_kind(result: Result<Map<String, Value>, CallError>) -> LimitKind {
    match result {
        Err(CallError::LimitExceeded { kind, .. }) => kind,
        other => panic!("expected a limit breach, got {other:?}"),
    }
}

fn guest_error(result: Result<Map<String, Value>, CallError>) -> (ErrorKind, String) {
    match result {
        Err(CallError::Guest { kind, message }) => (kind, message),
        other => panic!("expected a guest error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_component_describes_itself_and_runs() {
    let hello = load_with("hello", Capabilities::default(), Limits::default()).await;
    assert_eq!(hello.info.name, "hello");
    assert_eq!(hello.info.version, "0.1.0");
    assert!(!hello.cached);
    let out = run(&hello, json!({"name": "ada"})).await.unwrap();
    assert_eq!(Value::Object(out), json!({"message": "hello, ada"}));
    // The step's own config reaches the component's `config` import.
    let with_config = CallInfo {
        config: Arc::new(json!({"greeting": "hi"}).as_object().unwrap().clone()),
        ..call()
    };
    let out = hello
        .run_step(&with_config, &json!({"name": "bo"}))
        .await
        .unwrap();
    assert_eq!(
        out,
        StepOutcome::Next(json!({"message": "hi, bo"}).as_object().unwrap().clone())
    );
    let stats = hello.stats.snapshot();
    assert_eq!((stats.invocations, stats.errors), (2, 0));
    assert!(stats.p50_us.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_runs_out_of_fuel() {
    let limits = Limits {
        fuel: 20_000_000,
        ..Limits::default()
    };
    let component = adversary(Capabilities::default(), limits).await;
    let result = run(&component, json!({"mode": "loop"})).await;
    let message = result.as_ref().unwrap_err().to_string();
    assert_eq!(limit_kind(result), LimitKind::Cpu);
    assert!(
        message.contains("limit-exceeded: cpu") && message.contains("limits.fuel"),
        "{message}"
    );
    // The host is fine and the component still serves.
    assert!(run(&component, json!({"mode": "echo"})).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_with_fuel_to_spare_hits_the_time_limit() {
    let limits = Limits {
        fuel: u64::MAX / 2,
        timeout: std::time::Duration::from_millis(200),
        ..Limits::default()
    };
    let component = adversary(Capabilities::default(), limits).await;
    let result = run(&component, json!({"mode": "loop"})).await;
    let message = result.as_ref().unwrap_err().to_string();
    assert_eq!(limit_kind(result), LimitKind::Time);
    assert!(message.contains("limits.timeout"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allocation_bomb_hits_the_memory_limit() {
    let limits = Limits {
        memory_bytes: 16 << 20,
        ..Limits::default()
    };
    let component = adversary(Capabilities::default(), limits).await;
    let result = run(&component, json!({"mode": "alloc"})).await;
    let message = result.as_ref().unwrap_err().to_string();
    assert_eq!(limit_kind(result), LimitKind::Memory);
    assert!(
        message.contains("16 MiB") && message.contains("limits.memory_mib"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_output_is_refused() {
    let limits = Limits {
        max_output_bytes: 64 << 10,
        ..Limits::default()
    };
    let component = adversary(Capabilities::default(), limits).await;
    assert_eq!(
        limit_kind(run(&component, json!({"mode": "big-output"})).await),
        LimitKind::Output
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_a_typed_error_with_the_guest_stderr_attached() {
    for policy in [Policy::Fresh, Policy::Reuse] {
        let component = adversary(
            Capabilities::default(),
            Limits {
                policy,
                ..Limits::default()
            },
        )
        .await;
        let result = run(&component, json!({"mode": "panic"})).await;
        let Err(CallError::Trap { stderr, .. }) = &result else {
            panic!("expected a trap, got {result:?}")
        };
        assert!(stderr.contains("adversary panicked on purpose"), "{stderr}");
        assert!(stderr.contains("about to fail on purpose"), "{stderr}");
        // A trapped instance is never entered again: the next call gets a fresh one.
        assert!(run(&component, json!({"mode": "echo"})).await.is_ok());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_unreachable_unless_a_directory_is_granted_read_only() {
    let denied = adversary(Capabilities::default(), Limits::default()).await;
    let (kind, message) =
        guest_error(run(&denied, json!({"mode": "read-file", "arg": "/etc/passwd"})).await);
    assert_eq!(kind, ErrorKind::Denied, "{message}");

    let dir = std::env::temp_dir().join(format!("wf-wasm-fs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("greeting.txt"), "hello from the host").unwrap();
    let granted = Capabilities {
        dirs: vec![wf_wasm::capabilities::DirGrant {
            host: dir.display().to_string(),
            guest: "/data".into(),
        }],
        ..Capabilities::default()
    };
    let component = adversary(granted, Limits::default()).await;
    let out = run(
        &component,
        json!({"mode": "read-file", "arg": "/data/greeting.txt"}),
    )
    .await
    .unwrap();
    assert_eq!(out["read"], "hello from the host");
    // Read-only: writing fails, and nothing outside the grant is visible.
    let (kind, _) = guest_error(
        run(
            &component,
            json!({"mode": "write-file", "arg": "/data/new.txt"}),
        )
        .await,
    );
    assert_eq!(kind, ErrorKind::Denied);
    assert!(!dir.join("new.txt").exists());
    let (kind, _) = guest_error(
        run(
            &component,
            json!({"mode": "read-file", "arg": "/etc/passwd"}),
        )
        .await,
    );
    assert_eq!(kind, ErrorKind::Denied);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_are_always_denied() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Even with HTTP granted to that address, raw sockets stay closed.
    let caps = Capabilities {
        http: vec![addr.to_string()],
        ..Capabilities::default()
    };
    let component = adversary(caps, Limits::default()).await;
    let (kind, message) = guest_error(
        run(
            &component,
            json!({"mode": "connect", "arg": addr.to_string()}),
        )
        .await,
    );
    assert_eq!(kind, ErrorKind::Denied, "{message}");
    let accepted =
        tokio::time::timeout(std::time::Duration::from_millis(100), listener.accept()).await;
    assert!(accepted.is_err(), "the guest reached the listener");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_is_empty_unless_keys_are_granted() {
    let denied = adversary(Capabilities::default(), Limits::default()).await;
    let out = run(&denied, json!({"mode": "env", "arg": "PATH"}))
        .await
        .unwrap();
    assert_eq!(out["value"], Value::Null);
    assert_eq!(out["all"], 0);
    let granted = adversary(
        Capabilities {
            env: vec!["PATH".into()],
            ..Capabilities::default()
        },
        Limits::default(),
    )
    .await;
    let out = run(&granted, json!({"mode": "env", "arg": "PATH"}))
        .await
        .unwrap();
    assert_eq!(out["value"], json!(std::env::var("PATH").unwrap()));
    assert_eq!(out["all"], 1);
}

/// A one-route HTTP server on loopback answering `pong`.
async fn pong_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/ping", axum::routing::get(|| async { "pong" }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_http_needs_the_host_on_the_allow_list() {
    let addr = pong_server().await;
    let url = format!("http://{addr}/ping");
    let denied = adversary(Capabilities::default(), Limits::default()).await;
    let (kind, message) = guest_error(run(&denied, json!({"mode": "http", "arg": url})).await);
    assert_eq!(kind, ErrorKind::Denied);
    assert!(
        message.contains(&format!("add `{addr}` to `capabilities.http`")),
        "{message}"
    );

    // Another port of the same address is still refused.
    let other = adversary(
        Capabilities {
            http: vec!["127.0.0.1:1".into()],
            ..Capabilities::default()
        },
        Limits::default(),
    )
    .await;
    assert_eq!(
        guest_error(run(&other, json!({"mode": "http", "arg": url})).await).0,
        ErrorKind::Denied
    );

    let granted = adversary(
        Capabilities {
            http: vec![addr.to_string()],
            ..Capabilities::default()
        },
        Limits::default(),
    )
    .await;
    // The URL decides the host: a guest may not point the request at another virtual host.
    let (kind, message) =
        guest_error(run(&granted, json!({"mode": "http-host", "arg": url})).await);
    assert_eq!(kind, ErrorKind::Denied, "{message}");
    let out = run(&granted, json!({"mode": "http", "arg": url}))
        .await
        .unwrap();
    assert_eq!(
        (out["status"].clone(), out["body"].clone()),
        (json!(200), json!("pong"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_by_name_needs_the_name_granted() {
    // (That a granted name resolving to an internal address is refused at connect time is
    // covered by the resolver's own tests in wf-wasm.)
    let addr = pong_server().await;
    let url = format!("http://localhost:{}/ping", addr.port());
    let caps = Capabilities {
        http: vec![format!("127.0.0.1:{}", addr.port())],
        ..Capabilities::default()
    };
    let component = adversary(caps, Limits::default()).await;
    assert_eq!(
        guest_error(run(&component, json!({"mode": "http", "arg": url})).await).0,
        ErrorKind::Denied
    );
    let caps = Capabilities {
        http: vec![format!("localhost:{}", addr.port())],
        ..Capabilities::default()
    };
    let component = adversary(caps, Limits::default()).await;
    let out = run(&component, json!({"mode": "http", "arg": url}))
        .await
        .unwrap();
    assert_eq!(out["body"], "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_buckets_must_be_granted() {
    let denied = adversary(Capabilities::default(), Limits::default()).await;
    let (kind, message) = guest_error(run(&denied, json!({"mode": "state", "arg": "cache"})).await);
    assert_eq!(kind, ErrorKind::Denied);
    assert!(message.contains("capabilities.state"), "{message}");
    let granted = adversary(
        Capabilities {
            state: vec!["cache".into()],
            ..Capabilities::default()
        },
        Limits::default(),
    )
    .await;
    let out = run(&granted, json!({"mode": "state", "arg": "cache"}))
        .await
        .unwrap();
    assert_eq!(out["value"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_topics_must_be_granted() {
    let denied = adversary(Capabilities::default(), Limits::default()).await;
    let (kind, message) =
        guest_error(run(&denied, json!({"mode": "publish", "arg": "orders.created"})).await);
    assert_eq!(kind, ErrorKind::Denied);
    assert!(message.contains("capabilities.events"), "{message}");
    // Granted, but this host has no broker: a clear `unavailable`, not a silent drop.
    let granted = adversary(
        Capabilities {
            events: vec!["orders.*".into()],
            ..Capabilities::default()
        },
        Limits::default(),
    )
    .await;
    let (kind, message) = guest_error(
        run(
            &granted,
            json!({"mode": "publish", "arg": "orders.created"}),
        )
        .await,
    );
    assert_eq!(kind, ErrorKind::Unavailable, "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_instances_get_fresh_fuel_for_every_call() {
    // Enough fuel for a few calls, not for fifty: only a refill before each call passes.
    let probe = adversary(
        Capabilities::default(),
        Limits {
            policy: Policy::Reuse,
            ..Limits::default()
        },
    )
    .await;
    run(&probe, json!({"mode": "echo"})).await.unwrap();
    let limits = Limits {
        policy: Policy::Reuse,
        fuel: 5_000_000,
        max_invocations: 1000,
        ..Limits::default()
    };
    let component = adversary(Capabilities::default(), limits).await;
    for i in 0..50 {
        let out = run(&component, json!({"mode": "echo", "i": i}))
            .await
            .unwrap();
        assert_eq!(out["echo"]["i"], i);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_errors_keep_their_kind() {
    let component = adversary(Capabilities::default(), Limits::default()).await;
    let (kind, message) =
        guest_error(run(&component, json!({"mode": "fail", "arg": "db down"})).await);
    assert_eq!(
        (kind, message.as_str()),
        (ErrorKind::Unavailable, "failing on purpose: db down")
    );
    let (kind, _) = guest_error(run(&component, json!({"mode": "nonsense"})).await);
    assert_eq!(kind, ErrorKind::InvalidInput);
    let out = component
        .run_step(&call(), &json!({"mode": "branch", "arg": "done"}))
        .await
        .unwrap();
    assert!(
        matches!(out, StepOutcome::Branch(ref target, _) if target == "done"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_a_component_are_rejected_with_a_reason() {
    let hello = plugin("hello");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "empty"),
        (
            "garbage",
            b"definitely not wasm".to_vec(),
            "not a WebAssembly binary",
        ),
        (
            "core module",
            b"\0asm\x01\0\0\0".to_vec(),
            "core WebAssembly module",
        ),
        ("elf", b"\x7fELF\x02\x01\x01\0rest".to_vec(), "precompiled"),
    ];
    for (what, bytes, reason) in cases {
        let error = check_format(&bytes).unwrap_err().to_string();
        assert!(error.contains(reason), "{what}: {error}");
    }
    // A truncated component passes the header check and fails compilation, cleanly.
    let truncated = hello[..hello.len() / 2].to_vec();
    let spec = ComponentSpec {
        bytes: Arc::new(truncated),
        config: Map::new(),
        capabilities: Capabilities::default(),
        limits: Limits::default(),
        services: HostServices::default(),
    };
    let error = LoadedComponent::load(&runtime(), spec).await.unwrap_err();
    assert!(matches!(error, LoadError::Invalid(_)), "{error}");
    // Precompiled wasmtime code is refused even though this host could run it.
    let rt = runtime();
    let precompiled = rt.engine().precompile_component(&hello).unwrap();
    assert!(
        check_format(&precompiled)
            .unwrap_err()
            .to_string()
            .contains("precompiled")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_code_is_cached_by_content_hash() {
    let dir = std::env::temp_dir().join(format!("wf-wasm-cache-{}", std::process::id()));
    let spec = || ComponentSpec {
        bytes: Arc::new(plugin("hello")),
        config: Map::new(),
        capabilities: Capabilities::default(),
        limits: Limits::default(),
        services: HostServices::default(),
    };
    let first = Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.clone()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    assert!(!LoadedComponent::load(&first, spec()).await.unwrap().cached);
    // A new runtime (a restart) loads the machine code instead of compiling.
    let second = Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.clone()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let loaded = LoadedComponent::load(&second, spec()).await.unwrap();
    assert!(loaded.cached);
    assert_eq!(
        Value::Object(run(&loaded, json!({})).await.unwrap()),
        json!({"message": "hello, world"})
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_component_is_started_invoked_and_stopped() {
    let counter = load_with("counter", Capabilities::default(), Limits::default()).await;
    assert_eq!(counter.kind, wf_wasm::component::ComponentKind::Module);
    // Not a step.
    assert!(matches!(
        counter.run_step(&call(), &json!({})).await,
        Err(CallError::Host(_))
    ));
    counter.start_module().await.unwrap();
    let out = counter
        .invoke(&call(), "increment", &json!({"key": "k", "by": 5}))
        .await
        .unwrap();
    assert_eq!(out["count"], 5);
    let out = counter.invoke(&call(), "total", &json!({})).await.unwrap();
    assert_eq!(
        (out["total"].clone(), out["starts"].clone()),
        (json!(5), json!(1))
    );
    let (kind, _) = guest_error(counter.invoke(&call(), "explode", &json!({})).await);
    assert_eq!(kind, ErrorKind::InvalidInput);
    // Stopped, then invoked again: a new instance is started first.
    counter.stop_module().await;
    let out = counter
        .invoke(&call(), "get", &json!({"key": "k"}))
        .await
        .unwrap();
    assert_eq!(out["count"], 0);
}
