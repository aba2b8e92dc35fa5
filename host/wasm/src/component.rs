//! A loaded component version: checked, compiled, linked once (`InstancePre`), described, and
//! called under its limits with the `fresh` or `reuse` instance policy.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::OwnedSemaphorePermit;
use wasmtime::{Store, Trap};

use crate::bindings::exports::wf::plugin::step as wit_step;
use crate::bindings::module_world::{ModuleComponent, ModuleComponentPre};
use crate::bindings::trigger_world::exports::wf::plugin::trigger as wit_trigger;
use crate::bindings::trigger_world::{TriggerComponent, TriggerComponentPre};
use crate::bindings::wf::plugin::types as wit;
use crate::bindings::{StepComponent, StepComponentPre};
use crate::cache::sha256_hex;
use crate::capabilities::Capabilities;
use crate::host::{ComponentEnv, HostServices, HostState};
use crate::limits::{LimitKind, Limits};
use crate::runtime::Runtime;

/// What a component says about itself (its `describe`), with schemas parsed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ComponentInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub config_schema: Option<Value>,
    pub input_schema: Option<Value>,
    pub output_schema: Option<Value>,
    /// What the component asks for; only the app's YAML (or the upload) grants anything.
    pub capabilities: Vec<String>,
}

/// Which world a component implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ComponentKind {
    /// Exports `step`: a pipeline step type.
    Step,
    /// Exports `module`: one long-lived instance, started and stopped with the app, whose
    /// operations steps invoke.
    Module,
    /// Exports `trigger`: declares sources (routes, topics) and maps their events to runs.
    Trigger,
}

/// Something a trigger component asks the host to watch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TriggerSource {
    HttpRoute { method: String, path: String },
    Topic { topic: String },
    Cron { expression: String },
}

/// A run a trigger component asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct TriggerStart {
    pub pipeline: String,
    pub data: Map<String, Value>,
}

/// Everything needed to load one component version.
#[derive(Clone)]
pub struct ComponentSpec {
    pub bytes: Arc<Vec<u8>>,
    /// The component's configuration (its `config` import), checked by `validate-config`.
    pub config: Map<String, Value>,
    pub capabilities: Capabilities,
    pub limits: Limits,
    pub services: HostServices,
}

/// Why bytes could not become a usable component. Nothing changes when loading fails.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    NotAComponent(String),
    #[error("the component does not compile: {0}")]
    Invalid(String),
    #[error("the component does not fit this host: {0}")]
    Incompatible(String),
    #[error("the component's `describe` failed: {0}")]
    Describe(String),
    #[error("the module component's `start` failed: {0}")]
    Start(String),
    #[error("the component rejected its configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Host(String),
    /// A grant sent with an upload asked for more than the app's YAML allows the component.
    #[error(
        "the upload's grant asks for more than the app allows component `{name}`: {}; grant them under `wasm.components` → `components.{name}` in the app's YAML first", excess.join(", ")
    )]
    GrantExceeded { name: String, excess: Vec<String> },
}

/// How a call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The component returned an error of its own.
    #[error("{message}")]
    Guest {
        kind: wf_engine::ErrorKind,
        message: String,
    },
    /// The call broke a limit and was stopped.
    #[error("{}", kind.refusal(detail))]
    LimitExceeded { kind: LimitKind, detail: String },
    /// The guest trapped (a Rust panic, an out-of-bounds access, ...).
    #[error("the component crashed: {message}{}", stderr_suffix(stderr))]
    Trap { message: String, stderr: String },
    /// The host could not run the call.
    #[error("{0}")]
    Host(String),
    /// Every instance slot stayed busy for the whole call timeout (overload).
    #[error("{0}")]
    Busy(String),
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(" (stderr: {stderr})")
    }
}

/// Warm instances kept per component version under the `reuse` policy.
const MAX_IDLE_INSTANCES: usize = 8;
/// Limits for `describe` and `validate-config` while loading: small, so a bad candidate fails
/// fast instead of holding up a swap.
const PROBE_FUEL: u64 = 200_000_000;
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Latencies kept for p50/p99.
const LATENCY_WINDOW: usize = 1024;

/// Linked, ready-to-instantiate code of one version, by world.
enum Pre {
    Step(StepComponentPre<HostState>),
    Module(ModuleComponentPre<HostState>),
    Trigger(TriggerComponentPre<HostState>),
}

/// An instance's exports, by world.
enum Bindings {
    Step(StepComponent),
    Module(ModuleComponent),
    Trigger(TriggerComponent),
}

impl Bindings {
    async fn describe(&self, store: &mut Store<HostState>) -> wasmtime::Result<wit::ComponentInfo> {
        match self {
            Bindings::Step(b) => b.wf_plugin_step().call_describe(store).await,
            Bindings::Module(b) => b.wf_plugin_module().call_describe(store).await,
            Bindings::Trigger(b) => b.wf_plugin_trigger().call_describe(store).await,
        }
    }

    async fn validate_config(
        &self,
        store: &mut Store<HostState>,
        config: &str,
    ) -> wasmtime::Result<Result<(), wit::Error>> {
        match self {
            Bindings::Step(b) => {
                b.wf_plugin_step()
                    .call_validate_config(store, &config.to_string())
                    .await
            }
            Bindings::Module(b) => {
                b.wf_plugin_module()
                    .call_validate_config(store, &config.to_string())
                    .await
            }
            Bindings::Trigger(b) => {
                b.wf_plugin_trigger()
                    .call_validate_config(store, &config.to_string())
                    .await
            }
        }
    }
}

struct Instance {
    store: Store<HostState>,
    bindings: Bindings,
    uses: u32,
    _slot: OwnedSemaphorePermit,
}

/// Call counters and recent latencies, for the components API.
#[derive(Default)]
pub struct Stats {
    invocations: AtomicU64,
    errors: AtomicU64,
    latencies_us: Mutex<VecDeque<u64>>,
}

/// A snapshot of [`Stats`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StatsSnapshot {
    pub invocations: u64,
    pub errors: u64,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
}

impl Stats {
    fn record(&self, elapsed: Duration, ok: bool) {
        self.invocations.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let mut window = self.latencies_us.lock().unwrap_or_else(|p| p.into_inner());
        if window.len() == LATENCY_WINDOW {
            window.pop_front();
        }
        window.push_back(elapsed.as_micros() as u64);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let mut sorted: Vec<u64> = self
            .latencies_us
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        sorted.sort_unstable();
        let percentile =
            |p: usize| (!sorted.is_empty()).then(|| sorted[((sorted.len() - 1) * p) / 100]);
        StatsSnapshot {
            invocations: self.invocations.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            p50_us: percentile(50),
            p99_us: percentile(99),
        }
    }
}

/// One loaded version of a component.
pub struct LoadedComponent {
    pub info: ComponentInfo,
    pub kind: ComponentKind,
    /// sha256 of the component bytes, lowercase hex.
    pub digest: String,
    pub size: usize,
    pub limits: Limits,
    pub capabilities: Capabilities,
    /// The component's configuration as granted (a step's own config goes over it per call).
    pub config: Map<String, Value>,
    pub loaded_at: SystemTime,
    /// Whether the machine code came from the cache.
    pub cached: bool,
    pub stats: Stats,
    pub bytes: Arc<Vec<u8>>,
    runtime: Arc<Runtime>,
    env: Arc<ComponentEnv>,
    pre: Pre,
    idle: Mutex<Vec<Instance>>,
    /// What a trigger component watches (read once, at load).
    pub sources: Vec<TriggerSource>,
    /// A module component's one instance, started when the version goes live; calls take
    /// turns on it. `None` before start, after stop, and after a trap (the next call restarts).
    module: tokio::sync::Mutex<Option<Instance>>,
    /// Set when this version is replaced or removed: its warm instances are dropped (giving
    /// back their slots) and a stopped module is not restarted by a late call.
    retired: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for LoadedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedComponent")
            .field("name", &self.info.name)
            .field("version", &self.info.version)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

/// The largest component file a config names that wf reads (uploads and watched folders have
/// their own, smaller cap: `api.max_upload_mib`).
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// Reads a component file off the async runtime: a regular file of at most `max_bytes` (see
/// [`wf_config::files::read_regular`]).
pub async fn read_file(
    path: &std::path::Path,
    max_bytes: u64,
) -> Result<Vec<u8>, wf_config::files::ReadError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || wf_config::files::read_regular(&path, max_bytes))
        .await
        .map_err(|e| wf_config::files::ReadError::Io(std::io::Error::other(e)))?
}

/// Rejects what is not a WebAssembly component before the compiler sees it, with a reason a
/// person can act on.
pub fn check_format(bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.is_empty() {
        return Err(LoadError::NotAComponent("the file is empty".into()));
    }
    if wasmtime::Engine::detect_precompiled(bytes).is_some() || bytes.starts_with(b"\x7fELF") {
        return Err(LoadError::NotAComponent(
            "precompiled native code is never accepted: send the .wasm component; the host compiles and caches it itself".into(),
        ));
    }
    if !bytes.starts_with(b"\0asm") {
        return Err(LoadError::NotAComponent(
            "not a WebAssembly binary (it does not start with `\\0asm`)".into(),
        ));
    }
    match bytes.get(4..8) {
        Some([0x0d, 0x00, 0x01, 0x00]) => Ok(()),
        Some([0x01, 0x00, 0x00, 0x00]) => Err(LoadError::NotAComponent(
            "this is a core WebAssembly module, not a component: build for `wasm32-wasip2` (`wf-plugin build`) or wrap it with `wasm-tools component new`".into(),
        )),
        _ => Err(LoadError::NotAComponent(
            "truncated or unsupported WebAssembly header".into(),
        )),
    }
}

/// `name` as a step type may use it.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid component name (1-64 lowercase letters, digits, `.`, `-`, `_`)"
        ))
    }
}

fn parse_schema(field: &str, text: Option<String>) -> Result<Option<Value>, LoadError> {
    text.map(|t| {
        serde_json::from_str(&t)
            .map_err(|e| LoadError::Describe(format!("`{field}` is not JSON: {e}")))
    })
    .transpose()
}

fn guest_error(error: wit::Error) -> (wf_engine::ErrorKind, String) {
    use wf_engine::ErrorKind as K;
    match error {
        wit::Error::InvalidInput(m) => (K::InvalidInput, m),
        wit::Error::InvalidConfig(m) => (K::InvalidConfig, m),
        wit::Error::Denied(m) => (K::Denied, m),
        wit::Error::Unavailable(m) => (K::Unavailable, m),
        wit::Error::Internal(m) => (K::Internal, m),
    }
}

/// Where the run goes after a wasm step, with the output to merge.
#[derive(Clone, Debug, PartialEq)]
pub enum StepOutcome {
    Next(Map<String, Value>),
    Branch(String, Map<String, Value>),
    Stop(Map<String, Value>),
}

/// The run a call belongs to, as the guest sees it.
#[derive(Clone, Debug, Default)]
pub struct CallInfo {
    pub pipeline: String,
    pub run_id: String,
    pub step: String,
    pub attempt: u32,
    pub trace_parent: Option<String>,
    /// The step's own configuration, over the component's (what the `config` import returns).
    pub config: Arc<Map<String, Value>>,
    /// What the call's run may still spend, shared with its other steps.
    pub budget: Option<Arc<wf_engine::RunBudget>>,
}

/// The time and fuel one call may use: the component's limits, or what is left of its run's
/// budget when that is less — running out then is the run's limit, not the component's.
#[derive(Clone, Copy, Debug)]
struct Allowance {
    timeout: std::time::Duration,
    fuel: u64,
    /// The run's deadline is what bounds the time.
    run_time: bool,
    /// The run's fuel is what bounds the fuel.
    run_fuel: bool,
}

impl Allowance {
    fn of(limits: &Limits, budget: Option<&wf_engine::RunBudget>) -> Result<Allowance, CallError> {
        let mut allowance = Allowance {
            timeout: limits.timeout,
            fuel: limits.fuel,
            run_time: false,
            run_fuel: false,
        };
        let Some(budget) = budget else {
            return Ok(allowance);
        };
        if let Some(deadline) = budget.deadline() {
            let left = deadline
                .at
                .saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(CallError::LimitExceeded {
                    kind: LimitKind::RunTime,
                    detail: format!("the run reached its deadline ({})", deadline.setting),
                });
            }
            if left < allowance.timeout {
                allowance.timeout = left;
                allowance.run_time = true;
            }
        }
        let fuel_left = budget.fuel_left();
        if fuel_left == 0 {
            return Err(CallError::LimitExceeded {
                kind: LimitKind::RunCpu,
                detail: format!("the run used all of its {} fuel", budget.max_fuel()),
            });
        }
        if fuel_left < allowance.fuel {
            allowance.fuel = fuel_left;
            allowance.run_fuel = true;
        }
        Ok(allowance)
    }
}

/// Longest guest error text kept; the rest is cut (it reaches logs, answers and traces).
pub const MAX_ERROR_BYTES: usize = 4 << 10;
/// Longest branch target a step may name: step names are short.
pub const MAX_BRANCH_TARGET_BYTES: usize = 256;
/// Most runs a trigger component may ask for from one event.
pub const MAX_STARTS_PER_EVENT: usize = 100;

impl LoadedComponent {
    /// Checks, compiles (or loads cached code), links, and probes `describe` and
    /// `validate-config` under tight limits.
    pub async fn load(
        runtime: &Arc<Runtime>,
        spec: ComponentSpec,
    ) -> Result<LoadedComponent, LoadError> {
        Self::load_checked(runtime, spec, true).await
    }

    /// Loads a component without checking any configuration, with no grants and default
    /// limits: what tools and the registration of component step types need (its `info`,
    /// `kind` and `sources`).
    pub async fn inspect(
        runtime: &Arc<Runtime>,
        bytes: Arc<Vec<u8>>,
    ) -> Result<LoadedComponent, LoadError> {
        let spec = ComponentSpec {
            bytes,
            config: Map::new(),
            capabilities: Capabilities::default(),
            limits: Limits::default(),
            services: HostServices::default(),
        };
        Self::load_checked(runtime, spec, false).await
    }

    async fn load_checked(
        runtime: &Arc<Runtime>,
        spec: ComponentSpec,
        validate_config: bool,
    ) -> Result<LoadedComponent, LoadError> {
        check_format(&spec.bytes)?;
        let digest = sha256_hex(&spec.bytes);
        let (component, cached) = runtime
            .compile(spec.bytes.clone(), digest.clone())
            .await
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        let pre = runtime
            .linker()
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Incompatible(format!("{e:#}")))?;
        let (pre, kind) = match StepComponentPre::new(pre.clone()) {
            Ok(step) => (Pre::Step(step), ComponentKind::Step),
            Err(step_error) => match ModuleComponentPre::new(pre.clone()) {
                Ok(module) => (Pre::Module(module), ComponentKind::Module),
                Err(_) => match TriggerComponentPre::new(pre) {
                    Ok(trigger) => (Pre::Trigger(trigger), ComponentKind::Trigger),
                    Err(_) => {
                        return Err(LoadError::Incompatible(format!(
                            "it exports none of `wf:plugin/step@0.1.0`, `module@0.1.0`, `trigger@0.1.0` ({step_error:#}); build it against the `step-component`, `module-component` or `trigger-component` world"
                        )));
                    }
                },
            },
        };
        let env = ComponentEnv::new(
            "(loading)",
            spec.config.clone(),
            spec.capabilities.clone(),
            spec.limits.quotas.clone(),
            spec.services.clone(),
        );
        let mut loaded = LoadedComponent {
            info: ComponentInfo {
                name: String::new(),
                version: String::new(),
                description: String::new(),
                config_schema: None,
                input_schema: None,
                output_schema: None,
                capabilities: Vec::new(),
            },
            kind,
            size: spec.bytes.len(),
            digest,
            limits: spec.limits,
            capabilities: spec.capabilities,
            config: spec.config.clone(),
            loaded_at: SystemTime::now(),
            cached,
            stats: Stats::default(),
            bytes: spec.bytes,
            runtime: runtime.clone(),
            env: Arc::new(env),
            pre,
            idle: Mutex::new(Vec::new()),
            module: tokio::sync::Mutex::new(None),
            retired: std::sync::atomic::AtomicBool::new(false),
            sources: Vec::new(),
        };
        loaded.info = loaded
            .probe(validate_config.then_some(&spec.config))
            .await?;
        if loaded.kind == ComponentKind::Trigger {
            loaded.sources = loaded.read_sources().await?;
        }
        // The name only becomes known from `describe`; log lines from now on carry it. The
        // probe's instance is gone, so the environment is not shared yet.
        if let Some(env) = Arc::get_mut(&mut loaded.env) {
            env.name = loaded.info.name.clone();
        }
        Ok(loaded)
    }

    /// `describe` and `validate-config` on a throwaway instance with probe limits.
    async fn probe(&self, config: Option<&Map<String, Value>>) -> Result<ComponentInfo, LoadError> {
        let probe_limits = Limits {
            fuel: PROBE_FUEL.min(self.limits.fuel),
            timeout: PROBE_TIMEOUT.min(self.limits.timeout),
            ..self.limits.clone()
        };
        let mut instance = self
            .new_instance(&probe_limits)
            .await
            .map_err(|e| match e {
                CallError::Host(m) | CallError::Busy(m) => LoadError::Host(m),
                other => LoadError::Describe(other.to_string()),
            })?;
        let call = instance.bindings.describe(&mut instance.store);
        let info = match tokio::time::timeout(probe_limits.timeout, call).await {
            Err(_) => return Err(LoadError::Describe("timed out".into())),
            Ok(Err(e)) => {
                return Err(LoadError::Describe(
                    classify(e, &mut instance.store, &probe_limits).to_string(),
                ));
            }
            Ok(Ok(info)) => info,
        };
        check_name(&info.name).map_err(LoadError::Describe)?;
        // Shown by the API, `wf-host types` and the builder: short texts.
        let info = wit::ComponentInfo {
            version: crate::host::cut(&info.version, 64).into_owned(),
            description: crate::host::cut(&info.description, 1024).into_owned(),
            ..info
        };
        let info = ComponentInfo {
            config_schema: parse_schema("config-schema", info.config_schema)?,
            input_schema: parse_schema("input-schema", info.input_schema)?,
            output_schema: parse_schema("output-schema", info.output_schema)?,
            name: info.name,
            version: info.version,
            description: info.description,
            capabilities: info.capabilities,
        };
        let Some(config) = config else {
            return Ok(info);
        };
        let config_text = Value::Object(config.clone()).to_string();
        let call = instance
            .bindings
            .validate_config(&mut instance.store, &config_text);
        match tokio::time::timeout(probe_limits.timeout, call).await {
            Err(_) => Err(LoadError::Config("`validate-config` timed out".into())),
            Ok(Err(e)) => Err(LoadError::Config(
                classify(e, &mut instance.store, &probe_limits).to_string(),
            )),
            Ok(Ok(Err(e))) => Err(LoadError::Config(
                crate::host::cut(&guest_error(e).1, MAX_ERROR_BYTES).into_owned(),
            )),
            Ok(Ok(Ok(()))) => Ok(info),
        }
    }

    pub fn name(&self) -> &str {
        &self.info.name
    }

    async fn new_instance(&self, limits: &Limits) -> Result<Instance, CallError> {
        let slot = match tokio::time::timeout(
            limits.timeout,
            self.runtime.slots().clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(slot)) => slot,
            Ok(Err(_)) => return Err(CallError::Host("the wasm runtime is shutting down".into())),
            Err(_) => {
                return Err(CallError::Busy(format!(
                    "no free instance slot within {:?}: every one of `max_instances` is in use",
                    limits.timeout
                )));
            }
        };
        let state = HostState::new(self.env.clone(), limits.memory_bytes)
            .map_err(|e| CallError::Host(format!("{e:#}")))?;
        let mut store = Store::new(self.runtime.engine(), state);
        store.limiter(|s| &mut s.limiter);
        arm(&mut store, limits.fuel)?;
        let instantiate = async {
            Ok::<_, wasmtime::Error>(match &self.pre {
                Pre::Step(pre) => Bindings::Step(pre.instantiate_async(&mut store).await?),
                Pre::Module(pre) => Bindings::Module(pre.instantiate_async(&mut store).await?),
                Pre::Trigger(pre) => Bindings::Trigger(pre.instantiate_async(&mut store).await?),
            })
        };
        let bindings = match tokio::time::timeout(limits.timeout, instantiate).await {
            Err(_) => {
                return Err(CallError::LimitExceeded {
                    kind: LimitKind::Time,
                    detail: format!("instantiation took longer than {:?}", limits.timeout),
                });
            }
            Ok(Err(e)) => return Err(classify(e, &mut store, limits)),
            Ok(Ok(bindings)) => bindings,
        };
        Ok(Instance {
            store,
            bindings,
            uses: 0,
            _slot: slot,
        })
    }

    async fn instance(&self) -> Result<Instance, CallError> {
        if self.limits.policy == crate::Policy::Reuse {
            let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            if let Some(instance) = idle {
                return Ok(instance);
            }
        }
        self.new_instance(&self.limits).await
    }

    /// Returns a healthy instance to the warm pool (`reuse`), or drops it.
    fn release(&self, mut instance: Instance) {
        instance.uses += 1;
        if self.retired.load(Ordering::Relaxed) {
            return;
        }
        if self.limits.policy == crate::Policy::Reuse && instance.uses < self.limits.max_invocations
        {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE_INSTANCES {
                idle.push(instance);
            }
        }
    }

    /// Runs the step on `input` (a JSON object).
    pub async fn run_step(&self, call: &CallInfo, input: &Value) -> Result<StepOutcome, CallError> {
        let started = Instant::now();
        let result = self.run_step_inner(call, input).await;
        self.stats.record(started.elapsed(), result.is_ok());
        result
    }

    async fn run_step_inner(
        &self,
        call: &CallInfo,
        input: &Value,
    ) -> Result<StepOutcome, CallError> {
        if self.kind != ComponentKind::Step {
            return Err(CallError::Host(format!(
                "component `{}` is a module, not a step: name one of its operations with `operation:`",
                self.info.name
            )));
        }
        let allowance = Allowance::of(&self.limits, call.budget.as_deref())?;
        let mut instance = self.instance().await?;
        let invocation = self.prepare_call(&mut instance, call, &allowance)?;
        let input_text = input.to_string();
        let result = {
            let Bindings::Step(bindings) = &instance.bindings else {
                return Err(CallError::Host(
                    "a step instance without step exports".into(),
                ));
            };
            let future =
                bindings
                    .wf_plugin_step()
                    .call_run(&mut instance.store, &invocation, &input_text);
            tokio::time::timeout(allowance.timeout, future).await
        };
        let outcome = match self.settle(result, &mut instance.store, call, &allowance) {
            Ok(Ok(outcome)) => {
                self.release(instance);
                outcome
            }
            Ok(Err(guest)) => {
                self.release(instance);
                return Err(guest);
            }
            // A trap or a timeout poisons the instance: it is dropped, never reused.
            Err(broken) => return Err(broken),
        };
        let (text, branch) = match &outcome {
            wit_step::Outcome::Next(t) | wit_step::Outcome::Stop(t) => (t.as_str(), None),
            wit_step::Outcome::Branch(b) => (b.output.as_str(), Some(b.target.clone())),
        };
        if let Some(target) = &branch
            && target.len() > MAX_BRANCH_TARGET_BYTES
        {
            return Err(CallError::Guest {
                kind: wf_engine::ErrorKind::Internal,
                message: format!(
                    "the component branched to a step name of {} bytes (`{}`); step names are at most {MAX_BRANCH_TARGET_BYTES}",
                    target.len(),
                    crate::host::cut(target, 64)
                ),
            });
        }
        let output = self.output_object(text)?;
        Ok(match (outcome, branch) {
            (wit_step::Outcome::Stop(_), _) => StepOutcome::Stop(output),
            (_, Some(target)) => StepOutcome::Branch(target, output),
            _ => StepOutcome::Next(output),
        })
    }

    /// Sets the call's run, config, deadline and fuel on the instance and clears its per-call
    /// counts; the guest's invocation record.
    fn prepare_call(
        &self,
        instance: &mut Instance,
        call: &CallInfo,
        allowance: &Allowance,
    ) -> Result<wit_step::Invocation, CallError> {
        arm(&mut instance.store, allowance.fuel)?;
        let deadline = SystemTime::now() + allowance.timeout;
        let data = instance.store.data_mut();
        // Only this call's stderr is attached to its errors.
        data.stderr.take_text();
        data.call = crate::host::CallUsage::default();
        data.run_id = call.run_id.clone();
        data.call_config = call.config.clone();
        data.deadline = tokio::time::Instant::now() + allowance.timeout;
        Ok(wit_step::Invocation {
            pipeline: call.pipeline.clone(),
            run_id: call.run_id.clone(),
            step: call.step.clone(),
            attempt: call.attempt,
            deadline_ms: deadline
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            trace_parent: call.trace_parent.clone(),
        })
    }

    /// Sorts a call's result: `Ok(Ok)` success, `Ok(Err)` the guest's own error (the instance is
    /// healthy), `Err` a limit breach or trap (the instance must be dropped). Charges the fuel
    /// used to the run and reports the log messages the call's quota dropped.
    fn settle<T>(
        &self,
        result: Result<wasmtime::Result<Result<T, wit::Error>>, tokio::time::error::Elapsed>,
        store: &mut Store<HostState>,
        call: &CallInfo,
        allowance: &Allowance,
    ) -> Result<Result<T, CallError>, CallError> {
        if let Some(budget) = &call.budget {
            let left = store.get_fuel().unwrap_or(0);
            budget.spend_fuel(allowance.fuel.saturating_sub(left));
        }
        let usage = std::mem::take(&mut store.data_mut().call);
        if usage.logs_dropped > 0 {
            tracing::warn!(
                component = %self.info.name,
                dropped = usage.logs_dropped,
                "log messages over the per-call quota were dropped (`limits.logs_per_call`, `limits.log_kib_per_call`)"
            );
            self.env
                .services
                .usage
                .logs_dropped(&self.info.name, usage.logs_dropped);
        }
        match result {
            Err(_) if allowance.run_time => Err(CallError::LimitExceeded {
                kind: LimitKind::RunTime,
                detail: format!(
                    "the run reached its deadline ({})",
                    call.budget
                        .as_ref()
                        .and_then(|b| b.deadline())
                        .map_or("its deadline", |d| d.setting)
                ),
            }),
            Err(_) => Err(CallError::LimitExceeded {
                kind: LimitKind::Time,
                detail: format!("the call took longer than {:?}", self.limits.timeout),
            }),
            Ok(Err(e)) => Err(classify_call(e, store, &self.limits, allowance, call)),
            // A quota refused a host call and the call then failed: that is the error.
            Ok(Ok(Err(_))) if usage.refused.is_some() => {
                let (kind, detail) = usage.refused.unwrap_or((LimitKind::Output, String::new()));
                Ok(Err(CallError::LimitExceeded { kind, detail }))
            }
            Ok(Ok(Err(e))) => {
                let (kind, message) = guest_error(e);
                let message = crate::host::cut(&message, MAX_ERROR_BYTES).into_owned();
                Ok(Err(CallError::Guest { kind, message }))
            }
            Ok(Ok(Ok(value))) => Ok(Ok(value)),
        }
    }

    /// A call's JSON output as an object, within the output limit.
    fn output_object(&self, text: &str) -> Result<Map<String, Value>, CallError> {
        if text.len() > self.limits.max_output_bytes {
            return Err(CallError::LimitExceeded {
                kind: LimitKind::Output,
                detail: format!(
                    "the output is {} KiB, over the {} KiB limit",
                    text.len() >> 10,
                    self.limits.max_output_bytes >> 10
                ),
            });
        }
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(Value::Null) => Ok(Map::new()),
            Ok(other) => Err(CallError::Guest {
                kind: wf_engine::ErrorKind::Internal,
                message: format!(
                    "the output must be a JSON object, not {}",
                    json_kind(&other)
                ),
            }),
            Err(e) => Err(CallError::Guest {
                kind: wf_engine::ErrorKind::Internal,
                message: format!("the output is not JSON: {e}"),
            }),
        }
    }

    /// Starts a module component's instance (when the version goes live). A step component
    /// has nothing to start.
    pub async fn start_module(&self) -> Result<(), CallError> {
        if self.kind != ComponentKind::Module {
            return Ok(());
        }
        let mut slot = self.module.lock().await;
        if slot.is_none() {
            *slot = Some(self.started_module_instance().await?);
        }
        Ok(())
    }

    async fn started_module_instance(&self) -> Result<Instance, CallError> {
        let mut instance = self.new_instance(&self.limits).await?;
        let (call, allowance) = (CallInfo::default(), Allowance::of(&self.limits, None)?);
        self.prepare_call(&mut instance, &call, &allowance)?;
        let result = {
            let Bindings::Module(bindings) = &instance.bindings else {
                return Err(CallError::Host(
                    "a module instance without module exports".into(),
                ));
            };
            let future = bindings.wf_plugin_module().call_start(&mut instance.store);
            tokio::time::timeout(allowance.timeout, future).await
        };
        self.settle(result, &mut instance.store, &call, &allowance)??;
        Ok(instance)
    }

    /// Takes this version out of service (swapped out, rolled back from, removed): drops its
    /// warm instances so their slots return to the pool, and stops a module component (calls
    /// in progress finish first). A later call on it starts no new module instance.
    pub async fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.stop_module().await;
    }

    /// Puts a retired version back in service (a rollback).
    pub fn reinstate(&self) {
        self.retired.store(false, Ordering::Relaxed);
    }

    /// Stops a module component's instance; calls in progress finish first.
    pub async fn stop_module(&self) {
        let Some(mut instance) = self.module.lock().await.take() else {
            return;
        };
        let call = CallInfo::default();
        let Ok(allowance) = Allowance::of(&self.limits, None) else {
            return;
        };
        if self.prepare_call(&mut instance, &call, &allowance).is_err() {
            return;
        }
        let result = {
            let Bindings::Module(bindings) = &instance.bindings else {
                return;
            };
            let future = bindings.wf_plugin_module().call_stop(&mut instance.store);
            tokio::time::timeout(allowance.timeout, future).await
        };
        match self.settle(result, &mut instance.store, &call, &allowance) {
            Ok(Ok(())) => {}
            Ok(Err(e)) | Err(e) => {
                tracing::warn!(component = %self.info.name, "module component did not stop cleanly: {e}");
            }
        }
    }

    /// Runs one of a module component's operations on its instance. Calls take turns; after a
    /// trap or a timeout the instance is replaced (and started) on the next call.
    pub async fn invoke(
        &self,
        call: &CallInfo,
        operation: &str,
        input: &Value,
    ) -> Result<Map<String, Value>, CallError> {
        let started = Instant::now();
        let result = self.invoke_inner(call, operation, input).await;
        self.stats.record(started.elapsed(), result.is_ok());
        result
    }

    async fn invoke_inner(
        &self,
        call: &CallInfo,
        operation: &str,
        input: &Value,
    ) -> Result<Map<String, Value>, CallError> {
        if self.kind != ComponentKind::Module {
            return Err(CallError::Host(format!(
                "component `{}` is a step, not a module: remove `operation:`",
                self.info.name
            )));
        }
        let mut slot = self.module.lock().await;
        let mut instance = match slot.take() {
            Some(instance) => instance,
            None if self.retired.load(Ordering::Relaxed) => {
                return Err(CallError::Busy(format!(
                    "this version of `{}` was just replaced; try again",
                    self.info.name
                )));
            }
            None => self.started_module_instance().await?,
        };
        let allowance = match Allowance::of(&self.limits, call.budget.as_deref()) {
            Ok(allowance) => allowance,
            Err(e) => {
                *slot = Some(instance);
                return Err(e);
            }
        };
        self.prepare_call(&mut instance, call, &allowance)?;
        let input_text = input.to_string();
        let result = {
            let Bindings::Module(bindings) = &instance.bindings else {
                return Err(CallError::Host(
                    "a module instance without module exports".into(),
                ));
            };
            let future = bindings.wf_plugin_module().call_invoke(
                &mut instance.store,
                operation,
                &input_text,
            );
            tokio::time::timeout(allowance.timeout, future).await
        };
        let text = match self.settle(result, &mut instance.store, call, &allowance) {
            Ok(outcome) => {
                *slot = Some(instance);
                outcome?
            }
            Err(broken) => return Err(broken),
        };
        self.output_object(&text)
    }

    /// `sources` on a probe instance.
    async fn read_sources(&self) -> Result<Vec<TriggerSource>, LoadError> {
        let mut instance = self
            .new_instance(&self.limits)
            .await
            .map_err(|e| LoadError::Describe(e.to_string()))?;
        let Bindings::Trigger(bindings) = &instance.bindings else {
            return Ok(Vec::new());
        };
        let call = bindings
            .wf_plugin_trigger()
            .call_sources(&mut instance.store);
        let sources = match tokio::time::timeout(self.limits.timeout, call).await {
            Err(_) => return Err(LoadError::Describe("`sources` timed out".into())),
            Ok(Err(e)) => {
                return Err(LoadError::Describe(
                    classify(e, &mut instance.store, &self.limits).to_string(),
                ));
            }
            Ok(Ok(sources)) => sources,
        };
        Ok(sources
            .into_iter()
            .map(|source| match source {
                wit_trigger::Source::HttpRoute(route) => TriggerSource::HttpRoute {
                    method: route.method.to_ascii_uppercase(),
                    path: route.path,
                },
                wit_trigger::Source::Topic(topic) => TriggerSource::Topic { topic },
                wit_trigger::Source::Cron(expression) => TriggerSource::Cron { expression },
            })
            .collect())
    }

    /// Hands an event on source `source` (an index into [`Self::sources`]) to a trigger
    /// component; the runs it asks for.
    pub async fn on_event(
        &self,
        source: u32,
        payload: &Value,
    ) -> Result<Vec<TriggerStart>, CallError> {
        let started = Instant::now();
        let result = self.on_event_inner(source, payload).await;
        self.stats.record(started.elapsed(), result.is_ok());
        result
    }

    async fn on_event_inner(
        &self,
        source: u32,
        payload: &Value,
    ) -> Result<Vec<TriggerStart>, CallError> {
        if self.kind != ComponentKind::Trigger {
            return Err(CallError::Host(format!(
                "component `{}` is not a trigger",
                self.info.name
            )));
        }
        let call = CallInfo::default();
        let allowance = Allowance::of(&self.limits, None)?;
        let mut instance = self.instance().await?;
        self.prepare_call(&mut instance, &call, &allowance)?;
        let event = wit_trigger::Event {
            source,
            payload: payload.to_string(),
        };
        let result = {
            let Bindings::Trigger(bindings) = &instance.bindings else {
                return Err(CallError::Host(
                    "a trigger instance without trigger exports".into(),
                ));
            };
            let future = bindings
                .wf_plugin_trigger()
                .call_on_event(&mut instance.store, &event);
            tokio::time::timeout(allowance.timeout, future).await
        };
        let starts = match self.settle(result, &mut instance.store, &call, &allowance) {
            Ok(outcome) => {
                self.release(instance);
                outcome?
            }
            Err(broken) => return Err(broken),
        };
        if starts.len() > MAX_STARTS_PER_EVENT {
            return Err(CallError::LimitExceeded {
                kind: LimitKind::Output,
                detail: format!(
                    "the component asked for {} runs from one event; at most {MAX_STARTS_PER_EVENT} are started",
                    starts.len()
                ),
            });
        }
        starts
            .into_iter()
            .map(|start| {
                Ok(TriggerStart {
                    data: self.output_object(&start.data)?,
                    pipeline: start.pipeline,
                })
            })
            .collect()
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Refills fuel and sets the epoch deadline before a call.
fn arm(store: &mut Store<HostState>, fuel: u64) -> Result<(), CallError> {
    store
        .set_fuel(fuel)
        .map_err(|e| CallError::Host(format!("{e:#}")))?;
    // Guest code yields to the executor at every epoch tick instead of holding a worker thread
    // until its deadline; the outer timeout around the call enforces the time limit.
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);
    Ok(())
}

/// Turns a wasmtime error outside a budgeted call (loading, instantiating, probing) into the
/// limit it broke or the trap it was.
fn classify(error: wasmtime::Error, store: &mut Store<HostState>, limits: &Limits) -> CallError {
    let allowance = Allowance {
        timeout: limits.timeout,
        fuel: limits.fuel,
        run_time: false,
        run_fuel: false,
    };
    classify_call(error, store, limits, &allowance, &CallInfo::default())
}

/// Turns a call's wasmtime error into the limit it broke (the component's or its run's) or
/// the trap it was.
fn classify_call(
    error: wasmtime::Error,
    store: &mut Store<HostState>,
    limits: &Limits,
    allowance: &Allowance,
    call: &CallInfo,
) -> CallError {
    let stderr = store.data().stderr.take_text();
    if store.data().limiter.exceeded {
        return CallError::LimitExceeded {
            kind: LimitKind::Memory,
            detail: format!(
                "the component tried to grow its memory past {} MiB",
                limits.memory_bytes >> 20
            ),
        };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) if allowance.run_fuel => CallError::LimitExceeded {
            kind: LimitKind::RunCpu,
            detail: format!(
                "the run used all of its {} fuel",
                call.budget.as_ref().map_or(0, |b| b.max_fuel())
            ),
        },
        Some(Trap::OutOfFuel) => CallError::LimitExceeded {
            kind: LimitKind::Cpu,
            detail: format!("the call used all of its {} fuel", limits.fuel),
        },
        Some(Trap::Interrupt) => CallError::LimitExceeded {
            kind: LimitKind::Time,
            detail: format!("the call ran longer than {:?}", limits.timeout),
        },
        trap => CallError::Trap {
            message: describe_trap(&error, trap),
            stderr,
        },
    }
}

/// A trap in words: its kind (`stack overflow`, `unreachable`, `out-of-bounds memory
/// access`, ...) and the guest functions it happened in, innermost first.
fn describe_trap(error: &wasmtime::Error, trap: Option<&Trap>) -> String {
    let kind = match trap {
        Some(Trap::StackOverflow) => "stack overflow".to_string(),
        Some(Trap::UnreachableCodeReached) => {
            "unreachable code reached (a panic or an abort in the component)".to_string()
        }
        Some(Trap::MemoryOutOfBounds) => "out-of-bounds memory access".to_string(),
        Some(Trap::TableOutOfBounds) => "out-of-bounds table access".to_string(),
        Some(Trap::IntegerDivisionByZero) => "integer division by zero".to_string(),
        Some(Trap::IntegerOverflow) => "integer overflow".to_string(),
        Some(Trap::IndirectCallToNull) => "call through a null function reference".to_string(),
        Some(Trap::BadSignature) => "indirect call with the wrong signature".to_string(),
        Some(Trap::BadConversionToInteger) => "invalid conversion to an integer".to_string(),
        Some(Trap::HeapMisaligned) => "misaligned memory access".to_string(),
        Some(other) => other.to_string(),
        // Not a trap: the host or the canonical ABI refused something (a bad string, ...).
        None => error
            .chain()
            .map(|e| e.to_string())
            .find(|line| !line.starts_with("error while executing at wasm backtrace"))
            .unwrap_or_else(|| "the call failed".to_string()),
    };
    let frames: Vec<String> = error
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(|backtrace| {
            backtrace
                .frames()
                .iter()
                .filter_map(|frame| frame.func_name().map(demangle_short))
                .take(MAX_TRAP_FRAMES)
                .collect()
        })
        .unwrap_or_default();
    if frames.is_empty() {
        kind
    } else {
        format!("{kind} in {}", frames.join(" ← "))
    }
}

/// Guest frames named in a trap's message.
const MAX_TRAP_FRAMES: usize = 6;

/// A function name as a reader wants it: Rust's hash suffix (`::h0123…`) dropped.
fn demangle_short(name: &str) -> String {
    match name.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            head.to_string()
        }
        _ => name.to_string(),
    }
}

/// The names a component imports and exports (`wf:plugin/log@0.1.0`, ...), for inspection.
pub async fn interface_names(
    runtime: &Arc<Runtime>,
    bytes: &[u8],
) -> Result<(Vec<String>, Vec<String>), LoadError> {
    check_format(bytes)?;
    let digest = sha256_hex(bytes);
    let (component, _) = runtime
        .compile(Arc::new(bytes.to_vec()), digest)
        .await
        .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
    let ty = component.component_type();
    let engine = runtime.engine();
    let imports = ty
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let exports = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    Ok((imports, exports))
}
