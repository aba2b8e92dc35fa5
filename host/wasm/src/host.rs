//! The host side of the WIT imports (`log`, `config`, `state`, `http`, `events`, `clock`) and
//! the per-call store data they work on. Every capability check happens here.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wf_messaging::MessageBroker;

use crate::bindings::wf::plugin::{clock, config, events, http, log, state, types};
use crate::capabilities::{self, Capabilities};
use crate::limits::{LimitKind, Quotas};
use crate::state_store::{StateError, StateStore};

/// Bytes of guest stderr kept per call; the rest is dropped.
pub const STDERR_CAPACITY: usize = 16 << 10;
/// Largest HTTP response body a component may receive.
const MAX_HTTP_RESPONSE_BYTES: usize = 10 << 20;

/// Where "now" comes from, so tests and replays can fix time.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// The machine's clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// What the host offers every component of an app.
#[derive(Clone)]
pub struct HostServices {
    pub state: Arc<StateStore>,
    pub broker: Option<Arc<dyn MessageBroker>>,
    pub clock: Arc<dyn Clock>,
    /// What components make the host hold and pass on, counted for `metrics.collector`.
    pub usage: Arc<crate::usage::ComponentUsage>,
}

impl Default for HostServices {
    fn default() -> Self {
        HostServices {
            state: Arc::default(),
            broker: None,
            clock: Arc::new(SystemClock),
            usage: Arc::default(),
        }
    }
}

/// Guest stderr: the first [`STDERR_CAPACITY`] bytes of each call are kept for error
/// messages, the rest is dropped. Writes always succeed, so a chatty guest never fails (Rust's
/// `eprintln!` panics when stderr reports an error).
#[derive(Clone, Default)]
pub struct CapturedOutput {
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl CapturedOutput {
    /// What was written since the last call, lossily decoded and trimmed; clears the buffer.
    pub fn take_text(&self) -> String {
        let mut buffer = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        let text = String::from_utf8_lossy(&buffer).trim().to_string();
        buffer.clear();
        text
    }
}

impl wasmtime_wasi::cli::IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for CapturedOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut buffer = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        let room = STDERR_CAPACITY.saturating_sub(buffer.len());
        buffer.extend_from_slice(&data[..data.len().min(room)]);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// One component version's grants and configuration, shared by all its calls.
pub struct ComponentEnv {
    pub name: String,
    pub config: serde_json::Map<String, serde_json::Value>,
    pub capabilities: Capabilities,
    /// What the host holds and passes on for it (state, events, logs).
    pub quotas: Quotas,
    /// Built on first use: most components never make HTTP calls, and building a TLS client
    /// costs milliseconds on every load and swap.
    http: std::sync::OnceLock<Result<reqwest::Client, String>>,
    pub services: HostServices,
    /// Values of the granted `env` keys, read once at load.
    pub env: Vec<(String, String)>,
}

impl ComponentEnv {
    pub fn new(
        name: &str,
        config: serde_json::Map<String, serde_json::Value>,
        capabilities: Capabilities,
        quotas: Quotas,
        services: HostServices,
    ) -> ComponentEnv {
        let env = capabilities
            .env
            .iter()
            .filter_map(|key| std::env::var(key).ok().map(|v| (key.clone(), v)))
            .collect();
        ComponentEnv {
            name: name.to_string(),
            http: std::sync::OnceLock::new(),
            config,
            capabilities,
            quotas,
            services,
            env,
        }
    }

    fn http_client(&self) -> Result<&reqwest::Client, &str> {
        self.http
            .get_or_init(|| {
                capabilities::http_client(&self.capabilities).map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(String::as_str)
    }
}

/// Linear memory growth beyond the component's limit traps, and the breach is remembered so
/// the error can say `limit-exceeded: memory`.
pub struct MemoryLimiter {
    pub max_bytes: usize,
    pub exceeded: bool,
    /// Linear memory of every memory of the instance together: the limit is per instance,
    /// however many core modules and memories the component has.
    pub used_bytes: usize,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .used_bytes
            .saturating_sub(current)
            .saturating_add(desired);
        if total > self.max_bytes {
            self.exceeded = true;
            return Err(wasmtime::Error::msg(format!(
                "memory limit of {} MiB reached",
                self.max_bytes >> 20
            )));
        }
        let allowed = maximum.is_none_or(|m| desired <= m);
        if allowed {
            self.used_bytes = total;
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000 && maximum.is_none_or(|m| desired <= m))
    }
}

/// The data of one store: WASI with nothing granted but what the YAML says, the memory
/// limiter, captured stderr, and the component's environment.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: MemoryLimiter,
    pub stderr: CapturedOutput,
    pub env: Arc<ComponentEnv>,
    /// The run the current call belongs to, for log lines.
    pub run_id: String,
    /// The calling step's configuration, over the component's.
    pub call_config: Arc<serde_json::Map<String, serde_json::Value>>,
    /// The call's deadline; outbound HTTP never waits past it.
    pub deadline: tokio::time::Instant,
    /// What this call made the host do, against the per-call quotas.
    pub call: CallUsage,
}

/// One call's use of the per-call quotas, and the first quota it broke.
#[derive(Debug, Default)]
pub struct CallUsage {
    pub events: u32,
    pub logs: u32,
    pub log_bytes: usize,
    pub logs_dropped: u64,
    /// The first quota a host call refused, so a call that then fails is reported as the
    /// typed `limit-exceeded` it is.
    pub refused: Option<(LimitKind, String)>,
}

impl HostState {
    pub fn new(env: Arc<ComponentEnv>, memory_bytes: usize) -> anyhow::Result<HostState> {
        let stderr = CapturedOutput::default();
        let mut wasi = WasiCtxBuilder::new();
        wasi.stderr(stderr.clone())
            .stdout(tokio::io::empty())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }));
        for (key, value) in &env.env {
            wasi.env(key, value);
        }
        for dir in &env.capabilities.dirs {
            wasi.preopened_dir(&dir.host, &dir.guest, FsPerms::ReadOnly)
                .map_err(|e| {
                    anyhow::anyhow!("cannot open granted directory `{}`: {e}", dir.host)
                })?;
        }
        Ok(HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                max_bytes: memory_bytes,
                exceeded: false,
                used_bytes: 0,
            },
            stderr,
            env,
            run_id: String::new(),
            call_config: Arc::default(),
            deadline: tokio::time::Instant::now() + Duration::from_secs(3600),
            call: CallUsage::default(),
        })
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl HostState {
    /// Refuses a host call for a quota: remembered for the call's result, counted, and
    /// answered to the guest as `denied` with the limit and the key that raises it.
    fn refuse(&mut self, kind: LimitKind, detail: String) -> types::Error {
        let message = kind.refusal(&detail);
        self.env.services.usage.refused(&self.env.name, kind);
        self.call.refused.get_or_insert((kind, detail));
        types::Error::Denied(message)
    }
}

/// `message` cut to at most `max` bytes (on a character boundary), marked when cut.
pub fn cut(message: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if message.len() <= max {
        return message.into();
    }
    let mut end = max;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes cut)", &message[..end], message.len() - end).into()
}

impl log::Host for HostState {
    async fn log(&mut self, level: log::Level, message: String) {
        let quotas = &self.env.quotas;
        let message = cut(&message, quotas.log_message_bytes);
        if self.call.logs >= quotas.logs_per_call
            || self.call.log_bytes + message.len() > quotas.log_bytes_per_call
        {
            self.call.logs_dropped += 1;
            return;
        }
        self.call.logs += 1;
        self.call.log_bytes += message.len();
        let component = self.env.name.as_str();
        let run_id = self.run_id.as_str();
        match level {
            log::Level::Trace => tracing::trace!(component, run_id, "{message}"),
            log::Level::Debug => tracing::debug!(component, run_id, "{message}"),
            log::Level::Info => tracing::info!(component, run_id, "{message}"),
            log::Level::Warn => tracing::warn!(component, run_id, "{message}"),
            log::Level::Error => tracing::error!(component, run_id, "{message}"),
        }
    }
}

impl config::Host for HostState {
    async fn all(&mut self) -> String {
        let mut all = self.env.config.clone();
        all.extend(self.call_config.iter().map(|(k, v)| (k.clone(), v.clone())));
        serde_json::Value::Object(all).to_string()
    }

    async fn get(&mut self, key: String) -> Option<String> {
        self.call_config
            .get(&key)
            .or_else(|| self.env.config.get(&key))
            .map(|v| v.to_string())
    }
}

fn denied(message: String) -> types::Error {
    types::Error::Denied(message)
}

impl HostState {
    /// Exports a bucket's counts after a write.
    fn counted(&self, bucket: &str) {
        let services = &self.env.services;
        services
            .usage
            .state(bucket, services.state.bucket_usage(bucket));
    }

    /// A state call's refusal as the guest sees it.
    fn state_error(&mut self, error: StateError) -> types::Error {
        match error {
            StateError::Quota(kind, detail) => self.refuse(kind, detail),
            StateError::Unavailable(message) => {
                tracing::error!(component = %self.env.name, "{message}");
                types::Error::Unavailable("the state store is unavailable".into())
            }
        }
    }
}

impl state::Host for HostState {
    async fn get(
        &mut self,
        bucket: String,
        key: String,
    ) -> Result<Option<state::Entry>, types::Error> {
        self.env
            .capabilities
            .state_allowed(&bucket)
            .map_err(denied)?;
        match self.env.services.state.get(&bucket, &key).await {
            Ok(entry) => Ok(entry.map(|(value, revision)| state::Entry { value, revision })),
            Err(e) => Err(self.state_error(e)),
        }
    }

    async fn set(
        &mut self,
        bucket: String,
        key: String,
        value: String,
    ) -> Result<u64, types::Error> {
        self.env
            .capabilities
            .state_allowed(&bucket)
            .map_err(denied)?;
        check_json(&value)?;
        let env = self.env.clone();
        match env
            .services
            .state
            .set(&bucket, &key, value, &env.quotas)
            .await
        {
            Ok(revision) => {
                self.counted(&bucket);
                Ok(revision)
            }
            Err(e) => Err(self.state_error(e)),
        }
    }

    async fn compare_and_swap(
        &mut self,
        bucket: String,
        key: String,
        expected: Option<u64>,
        value: String,
    ) -> Result<Option<u64>, types::Error> {
        self.env
            .capabilities
            .state_allowed(&bucket)
            .map_err(denied)?;
        check_json(&value)?;
        let env = self.env.clone();
        match env
            .services
            .state
            .compare_and_swap(&bucket, &key, expected, value, &env.quotas)
            .await
        {
            Ok(revision) => {
                self.counted(&bucket);
                Ok(revision)
            }
            Err(e) => Err(self.state_error(e)),
        }
    }

    async fn delete(&mut self, bucket: String, key: String) -> Result<bool, types::Error> {
        self.env
            .capabilities
            .state_allowed(&bucket)
            .map_err(denied)?;
        match self.env.services.state.delete(&bucket, &key).await {
            Ok(existed) => {
                self.counted(&bucket);
                Ok(existed)
            }
            Err(e) => Err(self.state_error(e)),
        }
    }
}

fn check_json(text: &str) -> Result<(), types::Error> {
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| ())
        .map_err(|e| types::Error::InvalidInput(format!("value is not JSON: {e}")))
}

impl http::Host for HostState {
    async fn send(&mut self, request: http::Request) -> Result<http::Response, types::Error> {
        let url = reqwest::Url::parse(&request.url)
            .map_err(|e| types::Error::InvalidInput(format!("bad URL `{}`: {e}", request.url)))?;
        self.env.capabilities.url_allowed(&url).map_err(denied)?;
        let method = reqwest::Method::from_bytes(request.method.as_bytes()).map_err(|_| {
            types::Error::InvalidInput(format!("bad HTTP method `{}`", request.method))
        })?;
        let client = self
            .env
            .http_client()
            .map_err(|e| types::Error::Internal(format!("cannot create the HTTP client: {e}")))?;
        // The URL decides where the request goes: a guest may not redirect it to another
        // virtual host behind the same address, or talk to a proxy.
        if let Some((name, _)) = request.headers.iter().find(|(name, _)| {
            let name = name.to_ascii_lowercase();
            name == "host" || name.starts_with("proxy-")
        }) {
            return Err(types::Error::Denied(format!(
                "the `{name}` header may not be set; the URL names the host"
            )));
        }
        let mut builder = client.request(method, url.clone());
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        // Ends a little before the call's own deadline, so the guest gets `unavailable` and
        // time to handle it, rather than the whole call ending as a time-limit breach.
        let remaining = self
            .deadline
            .saturating_duration_since(tokio::time::Instant::now());
        let remaining = remaining.saturating_sub((remaining / 10).min(Duration::from_millis(100)));
        let timeout = request
            .timeout_ms
            .map(|ms| Duration::from_millis(ms.into()).min(remaining))
            .unwrap_or(remaining);
        let call = async {
            let mut response = builder.send().await?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
                .collect();
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if body.len() + chunk.len() > MAX_HTTP_RESPONSE_BYTES {
                    return Ok(Err(types::Error::Unavailable(format!(
                        "response from {url} is larger than {} MiB",
                        MAX_HTTP_RESPONSE_BYTES >> 20
                    ))));
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, reqwest::Error>(Ok(http::Response {
                status,
                headers,
                body,
            }))
        };
        match tokio::time::timeout(timeout, call).await {
            Err(_) => Err(types::Error::Unavailable(format!(
                "HTTP request to {} timed out",
                request.url
            ))),
            Ok(Err(e)) if refused_by_resolver(&e) => {
                Err(types::Error::Denied(describe_reqwest_error(&e)))
            }
            Ok(Err(e)) => Err(types::Error::Unavailable(describe_reqwest_error(&e))),
            Ok(Ok(result)) => result,
        }
    }
}

fn refused_by_resolver(error: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.is::<capabilities::InternalAddressRefused>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// The whole cause chain: reqwest's top-level message alone ("error sending request") does not
/// say that the resolver refused a private address.
fn describe_reqwest_error(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl events::Host for HostState {
    async fn publish(&mut self, topic: String, payload: String) -> Result<(), types::Error> {
        self.env
            .capabilities
            .topic_allowed(&topic)
            .map_err(denied)?;
        let quotas = &self.env.quotas;
        if payload.len() > quotas.event_payload_bytes {
            let detail = format!(
                "a payload of {} KiB is over the {} KiB limit",
                payload.len() >> 10,
                quotas.event_payload_bytes >> 10
            );
            return Err(self.refuse(LimitKind::EventPayload, detail));
        }
        if self.call.events >= quotas.events_per_call {
            let detail = format!("more than {} publishes in one call", quotas.events_per_call);
            return Err(self.refuse(LimitKind::EventsPerCall, detail));
        }
        check_json(&payload)?;
        self.call.events += 1;
        self.env
            .services
            .usage
            .published(&self.env.name, payload.len());
        let broker = self.env.services.broker.clone().ok_or_else(|| {
            types::Error::Unavailable("the app has no message broker to publish to".into())
        })?;
        broker
            .publish(&topic, Bytes::from(payload))
            .await
            .map(|_| ())
            .map_err(|e| types::Error::Unavailable(format!("publishing to `{topic}`: {e}")))
    }
}

impl clock::Host for HostState {
    async fn now_ms(&mut self) -> u64 {
        self.env.services.clock.now_ms()
    }
}
