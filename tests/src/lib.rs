//! Helpers shared by the end-to-end suites.

pub mod broker_contract;
pub mod chaos;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use wf_config::load_str;
use wf_engine::{App, Registry, RunningApp, build, validate};
use wf_http::HttpServer;

/// The original's example configurations, beside the repository (`../shared/seed/examples`), or
/// where `WF_SEED_EXAMPLES` points.
pub fn seed_examples() -> PathBuf {
    if let Ok(dir) = std::env::var("WF_SEED_EXAMPLES") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/seed/examples")
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Variables the original's examples reference, with test values.
pub fn example_vars() -> HashMap<String, String> {
    [
        ("JWT_SECRET", "conformance-test-secret-of-at-least-32-bytes"),
        ("INTEGRATION_CRM_TOKEN", "crm-token"),
        ("INTEGRATION_PAYMENT_USER", "payments"),
        ("INTEGRATION_PAYMENT_PASSWORD", "payments-password"),
        ("INTEGRATION_EMAIL_TOKEN", "email-token"),
        ("INTEGRATION_INVENTORY_TOKEN", "inventory-token"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Builds an app from YAML text after moving every `http.server` to a free loopback port
/// (tests never bind fixed ports or other interfaces).
pub fn build_on_loopback(path: &Path, registry: &Registry) -> App {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let text = loopback(&text);
    let loaded = load_str(path, &text, &example_vars());
    let validated = validate(loaded, registry).unwrap_or_else(|invalid| {
        panic!(
            "{} is invalid:\n{}",
            path.display(),
            invalid.diagnostics.render(&invalid.config.sources)
        )
    });
    build(&validated, registry)
        .unwrap_or_else(|d| panic!("{} does not build: {d:?}", path.display()))
}

/// `address: ":8080"` → `address: "127.0.0.1:0"`, for every listen address.
pub fn loopback(text: &str) -> String {
    text.lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.starts_with("address:") {
                let indent = &line[..line.len() - trimmed.len()];
                format!("{indent}address: \"127.0.0.1:0\"")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where the server module `name` listens.
pub fn server_addr(app: &RunningApp, name: &str) -> SocketAddr {
    let services = app.state().services().expect("services while running");
    let server = services.get::<HttpServer>(name).expect("server module");
    server.local_addr().expect("server is listening")
}

pub fn client() -> reqwest::Client {
    // reqwest is built without a default TLS backend (wf uses rustls with ring).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .expect("http client")
}

/// Polls `check` until it holds, for at most `limit` (tests bound every wait).
pub async fn eventually<F, Fut>(limit: std::time::Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}

/// Validates, builds and starts an app from YAML text (panicking with the rendered
/// diagnostics when it is invalid).
pub async fn start_yaml(yaml: &str) -> RunningApp {
    build_yaml(yaml)
        .start(std::time::Duration::from_secs(10))
        .await
        .expect("the app starts")
}

/// [`start_yaml`] with a data directory (where the journal and module state live).
pub async fn start_yaml_in(yaml: &str, data_dir: &Path) -> RunningApp {
    build_yaml_in(yaml, data_dir)
        .start(std::time::Duration::from_secs(10))
        .await
        .expect("the app starts")
}

/// Validates and builds an app from YAML text with a data directory (held exclusively, as
/// `wf-host run` holds it).
pub fn build_yaml_in(yaml: &str, data_dir: &Path) -> App {
    let registry = wf_host::registry().expect("registry");
    let validated = validate(load_str("app.yaml", yaml, &example_vars()), &registry)
        .unwrap_or_else(|i| panic!("{}", i.diagnostics.render(&i.config.sources)));
    let options = wf_engine::BuildOptions {
        data_dir: Some(data_dir.to_path_buf()),
        exclusive: true,
    };
    wf_engine::build_with(&validated, &registry, &options).unwrap_or_else(|d| panic!("{d:?}"))
}

/// Why an app from valid YAML text fails to start (panicking if it starts).
pub async fn start_error(yaml: &str) -> String {
    match build_yaml(yaml)
        .start(std::time::Duration::from_secs(10))
        .await
    {
        Ok(_) => panic!("the app started"),
        Err(e) => format!("{e:#}"),
    }
}

/// The rendered diagnostics of YAML text that must not validate.
pub fn invalid_yaml(yaml: &str) -> String {
    let registry = wf_host::registry().expect("registry");
    match validate(load_str("app.yaml", yaml, &example_vars()), &registry) {
        Ok(_) => panic!("the config validated"),
        Err(i) => i.diagnostics.render(&i.config.sources),
    }
}

/// Validates and builds (without starting) an app from YAML text.
pub fn build_yaml(yaml: &str) -> App {
    let registry = wf_host::registry().expect("registry");
    let validated = validate(load_str("app.yaml", yaml, &example_vars()), &registry)
        .unwrap_or_else(|i| panic!("{}", i.diagnostics.render(&i.config.sources)));
    build(&validated, &registry).unwrap_or_else(|d| panic!("{d:?}"))
}

/// Why valid YAML text fails to build (panicking if it builds).
pub fn build_error(yaml: &str) -> String {
    let registry = wf_host::registry().expect("registry");
    let validated = validate(load_str("app.yaml", yaml, &example_vars()), &registry)
        .unwrap_or_else(|i| panic!("{}", i.diagnostics.render(&i.config.sources)));
    match build(&validated, &registry) {
        Ok(_) => panic!("the app built"),
        Err(d) => format!("{d:?}"),
    }
}

/// A name no earlier run used (topics, streams, consumer groups on shared servers).
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}{nanos:x}{:x}", std::process::id())
}

/// A message handler recording how often each payload was delivered; it refuses the first
/// attempt of any JSON message with `"fail_once": true`, to exercise redelivery.
#[derive(Default)]
pub struct AttemptLog(std::sync::Mutex<HashMap<String, u32>>);

#[wf_engine::async_trait]
impl wf_messaging::MessageHandler for AttemptLog {
    async fn handle(&self, _topic: &str, payload: bytes::Bytes) -> anyhow::Result<()> {
        let text = String::from_utf8_lossy(&payload).into_owned();
        let attempts = {
            let mut seen = self.0.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            let n = seen.entry(text.clone()).or_default();
            *n += 1;
            *n
        };
        let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if value["fail_once"] == true && attempts == 1 {
            anyhow::bail!("first attempt refused");
        }
        Ok(())
    }
}

impl AttemptLog {
    /// Payload → deliveries so far.
    pub fn attempts(&self) -> HashMap<String, u32> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wf-test-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// This process's resident memory in KiB (`VmRSS`), 0 where `/proc` cannot tell.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

/// A first-party component from `plugins/dist` (built by `make plugins`).
pub fn plugin(name: &str) -> Vec<u8> {
    let path = repo_root()
        .join("plugins/dist")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (run `make plugins`)", path.display()))
}

/// The same component with a custom section appended: different bytes and digest, same code.
pub fn wasm_variant(bytes: &[u8], tag: &str) -> Vec<u8> {
    let name = b"wf-test-variant";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = bytes.to_vec();
    out.push(0); // custom section
    out.push(payload.len() as u8);
    out.extend_from_slice(&payload);
    out
}

/// Validates and builds the app in `path` (imports included) with `vars` for `${…}`.
pub fn build_file(path: &Path, vars: &HashMap<String, String>) -> App {
    let registry = wf_host::registry().expect("registry");
    let loaded = wf_config::load_files(&[path.to_path_buf()], vars);
    let validated = validate(loaded, &registry)
        .unwrap_or_else(|i| panic!("{}", i.diagnostics.render(&i.config.sources)));
    build(&validated, &registry)
        .unwrap_or_else(|d| panic!("{} does not build: {d:?}", path.display()))
}

/// A local HTTP endpoint (`POST /hook`) recording what it receives and answering with the
/// given statuses in turn, then `200`.
#[derive(Default)]
pub struct HttpReceiver {
    pub requests: std::sync::Mutex<Vec<(axum::http::HeaderMap, bytes::Bytes)>>,
    answers: std::sync::Mutex<Vec<axum::http::StatusCode>>,
}

impl HttpReceiver {
    /// The JSON bodies received so far.
    pub fn json_bodies(&self) -> Vec<serde_json::Value> {
        self.requests
            .lock()
            .map(|r| {
                r.iter()
                    .filter_map(|(_, b)| serde_json::from_slice(b).ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

async fn receive(
    axum::extract::State(r): axum::extract::State<std::sync::Arc<HttpReceiver>>,
    headers: axum::http::HeaderMap,
    body: bytes::Bytes,
) -> axum::http::StatusCode {
    if let Ok(mut requests) = r.requests.lock() {
        requests.push((headers, body));
    }
    match r.answers.lock() {
        Ok(mut answers) if !answers.is_empty() => answers.remove(0),
        _ => axum::http::StatusCode::OK,
    }
}

/// Starts an [`HttpReceiver`] on a free loopback port; returns it and its URL.
pub async fn http_receiver(
    answers: &[axum::http::StatusCode],
) -> (std::sync::Arc<HttpReceiver>, String) {
    let state = std::sync::Arc::new(HttpReceiver::default());
    if let Ok(mut a) = state.answers.lock() {
        *a = answers.to_vec();
    }
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let url = format!("http://{}/hook", listener.local_addr().expect("an address"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (state, url)
}

/// A broker of a running app, by module name.
pub fn running_broker(
    app: &RunningApp,
    name: &str,
) -> std::sync::Arc<dyn wf_messaging::MessageBroker> {
    app.state()
        .services()
        .expect("the app is running")
        .get::<dyn wf_messaging::MessageBroker>(name)
        .expect("the app has this broker")
}

/// The databases a storage suite runs on: a SQLite file in `dir` always, and PostgreSQL when
/// `WF_TEST_POSTGRES_URL` is set (`.ci/run` sets it, so CI never skips it).
pub fn database_backends(dir: &TempDir) -> Vec<(&'static str, String)> {
    let mut out = vec![(
        "sqlite",
        dir.0.join("app.db").to_string_lossy().into_owned(),
    )];
    match std::env::var("WF_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => out.push(("postgres", url)),
        _ => {
            eprintln!("WF_TEST_POSTGRES_URL is not set: skipping the PostgreSQL half of this test")
        }
    }
    out
}

/// Collects the JSON messages of the topics it is subscribed to (see [`collect`]).
#[derive(Default)]
pub struct Collect(std::sync::Mutex<Vec<(String, serde_json::Value)>>);

#[wf_engine::async_trait]
impl wf_messaging::MessageHandler for Collect {
    async fn handle(&self, topic: &str, payload: bytes::Bytes) -> anyhow::Result<()> {
        let value = serde_json::from_slice(&payload).unwrap_or(serde_json::Value::Null);
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((topic.to_string(), value));
        Ok(())
    }
}

impl Collect {
    pub fn on(&self, topic: &str) -> Vec<serde_json::Value> {
        let seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub async fn wait_for(&self, topic: &str, count: usize) -> Vec<serde_json::Value> {
        let done = eventually(std::time::Duration::from_secs(5), || async {
            self.on(topic).len() >= count
        })
        .await;
        assert!(
            done,
            "expected {count} messages on `{topic}`, saw {:?}",
            self.on(topic)
        );
        self.on(topic)
    }
}

/// Subscribes a new [`Collect`] to `topics` on `broker`, as subscriber `test`.
pub fn collect(
    broker: &std::sync::Arc<dyn wf_messaging::MessageBroker>,
    topics: &[&str],
) -> std::sync::Arc<Collect> {
    let collect = std::sync::Arc::new(Collect::default());
    for topic in topics {
        broker
            .subscribe(topic, "test", collect.clone())
            .expect("the test can subscribe");
    }
    collect
}

/// A `GET` written byte for byte, so its path reaches the server unnormalized (clients resolve
/// `..` before sending); the status and the body come back.
pub async fn raw_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("the server accepts");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("the request is written");
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .await
        .expect("the answer is read");
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
