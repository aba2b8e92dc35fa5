//! Start-up failures and graceful shutdown of a real HTTP server.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use wf_config::load_str;
use wf_engine::{
    BuildContext, Category, Described, Module, ModuleType, Registry, RunningApp, build, validate,
};
use wf_http::{HttpHandler, RouteService, json_response, route_fn};
use wf_tests::{client, example_vars, server_addr};

/// A handler that answers after `delay_ms`, to have requests in flight during shutdown.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SlowConfig {
    /// How long each request takes.
    delay_ms: u64,
}

struct SlowType;
impl Described for SlowType {
    const NAME: &'static str = "test.slow";
    const CATEGORY: Category = Category::Http;
    const PLUGIN: &'static str = "test";
    const DESCRIPTION: &'static str = "Answers after a delay.";
    type Config = SlowConfig;
}

struct Slow(Duration);
impl Module for Slow {}
impl HttpHandler for Slow {
    fn service(self: Arc<Self>) -> RouteService {
        route_fn(move |_| {
            let delay = self.0;
            async move {
                tokio::time::sleep(delay).await;
                json_response(reqwest::StatusCode::OK, &serde_json::json!({"done": true}))
            }
        })
    }
}

impl ModuleType for SlowType {
    fn build(config: SlowConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Module>> {
        let slow = Arc::new(Slow(Duration::from_millis(config.delay_ms)));
        ctx.provide::<dyn HttpHandler>(slow.clone());
        Ok(slow)
    }
}

fn registry() -> Registry {
    let mut registry = wf_host::registry().unwrap();
    registry.register_module::<SlowType>().unwrap();
    registry
}

fn app_yaml(address: &str, delay_ms: u64) -> String {
    format!(
        "modules:
  - {{name: web, type: http.server, config: {{address: '{address}'}}}}
  - {{name: routes, type: http.router}}
  - {{name: slow, type: test.slow, config: {{delay_ms: {delay_ms}}}}}
  - {{name: health, type: health.checker}}
workflows:
  http:
    routes:
      - {{method: GET, path: /slow, handler: slow}}
"
    )
}

async fn start(yaml: &str) -> Result<RunningApp, wf_engine::StartError> {
    let registry = registry();
    let validated =
        validate(load_str("app.yaml", yaml, &example_vars()), &registry).expect("valid");
    build(&validated, &registry)
        .expect("builds")
        .start(Duration::from_secs(5))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_during_shutdown_and_new_ones_are_refused() {
    let running = start(&app_yaml("127.0.0.1:0", 400)).await.unwrap();
    let addr = server_addr(&running, "web");
    let http = client();
    assert_eq!(
        http.get(format!("http://{addr}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let in_flight = tokio::spawn({
        let http = http.clone();
        async move { http.get(format!("http://{addr}/slow")).send().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await; // the request is now being handled
    let failures = running.stop(Duration::from_secs(5)).await;
    assert_eq!(failures, 0);

    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "{\"done\":true}\n");
    assert!(
        client()
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .is_err(),
        "listener is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_up_after_the_grace_period() {
    let running = start(&app_yaml("127.0.0.1:0", 10_000)).await.unwrap();
    let addr = server_addr(&running, "web");
    let stuck =
        tokio::spawn(async move { client().get(format!("http://{addr}/slow")).send().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let failures = running.stop(Duration::from_millis(300)).await;
    assert_eq!(failures, 1, "the server reports that it could not drain");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stop waited {:?}",
        started.elapsed()
    );
    stuck.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_fails_start_naming_the_module_and_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let err = start(&app_yaml(&address, 1))
        .await
        .expect_err("start fails");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "module `web` (`http.server`) failed to start: cannot listen on `{address}`"
        )),
        "{message}"
    );
    assert!(message.contains("in use"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_false_until_started_and_after_stop_begins() {
    let running = start(&app_yaml("127.0.0.1:0", 1)).await.unwrap();
    let state = running.state().clone();
    assert!(state.is_ready());
    let addr = server_addr(&running, "web");
    let body = client()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "{\"checks\":{},\"status\":\"healthy\"}\n");
    running.stop(Duration::from_secs(5)).await;
    assert!(!state.is_ready());
}
