//! The app's components by name: the live version of each, the last good versions for
//! rollback, and the last rejected candidate. Swapping is an atomic pointer store: calls in
//! flight keep the version they started with.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::capabilities::Capabilities;
use wf_engine::AppState;

use crate::component::{ComponentKind, ComponentSpec, LoadError, LoadedComponent, TriggerSource};
use crate::host::HostServices;
use crate::limits::{Limits, LimitsConfig};
use crate::runtime::Runtime;
use crate::trigger_wiring::Watchers;

/// Good versions kept for rollback besides the live one.
pub const KEPT_VERSIONS: usize = 3;

/// Where a component came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Origin {
    /// A file named in the config (`dynamic.component`) or found in a watched directory.
    File { path: String },
    /// Uploaded through the components API.
    Upload,
}

/// What the YAML grants a component by name, beyond the runtime's defaults.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The component's configuration (its `config` import).
    #[serde(default)]
    pub config: Map<String, Value>,
    /// Capabilities granted to it; everything else is denied.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Its limits; unset fields take the defaults.
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// What is granted beyond a component's `wasm.components` entry.
#[derive(Clone, Copy, Debug)]
pub enum ExtraGrant<'a> {
    /// Nothing: the entry alone.
    None,
    /// A `dynamic.component` module's own config: the app's author wrote it, so it adds to
    /// the entry.
    Config(&'a Grant),
    /// Sent with an upload: it may narrow the entry (the capabilities it lists replace the
    /// entry's, its limits may only be tighter), never widen it.
    Upload(&'a Grant),
}

/// A candidate that failed validation; the live version (if any) stayed.
#[derive(Clone, Debug, Serialize)]
pub struct Rejection {
    pub digest: String,
    pub error: String,
    #[serde(with = "crate::registry::rfc3339")]
    pub at: SystemTime,
}

/// One component name.
pub struct Slot {
    pub name: String,
    live: ArcSwapOption<LoadedComponent>,
    history: Mutex<Vec<Arc<LoadedComponent>>>,
    rejected: Mutex<Option<Rejection>>,
    origin: Mutex<Option<Origin>>,
    revision: std::sync::atomic::AtomicU64,
    /// Pipelines' steps that use this component (`pipeline/step`), for refusing deletes.
    references: Mutex<Vec<String>>,
    /// The sources watched for this trigger component (routes added, topics subscribed).
    wired: Mutex<Option<Vec<TriggerSource>>>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Slot {
    fn new(name: &str) -> Slot {
        Slot {
            name: name.to_string(),
            live: ArcSwapOption::empty(),
            history: Mutex::new(Vec::new()),
            rejected: Mutex::new(None),
            origin: Mutex::new(None),
            revision: std::sync::atomic::AtomicU64::new(0),
            references: Mutex::new(Vec::new()),
            wired: Mutex::new(None),
        }
    }

    /// The live version, if one is loaded. Cheap: one atomic load.
    pub fn live(&self) -> Option<Arc<LoadedComponent>> {
        self.live.load_full()
    }

    pub fn add_reference(&self, user: String) {
        let mut refs = lock(&self.references);
        if !refs.contains(&user) {
            refs.push(user);
        }
    }

    pub fn references(&self) -> Vec<String> {
        lock(&self.references).clone()
    }

    pub fn rejected(&self) -> Option<Rejection> {
        lock(&self.rejected).clone()
    }

    pub fn origin(&self) -> Option<Origin> {
        lock(&self.origin).clone()
    }

    /// Increases with every swap and rollback.
    pub fn revision(&self) -> u64 {
        self.revision.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Older good versions, newest first.
    pub fn previous(&self) -> Vec<Arc<LoadedComponent>> {
        lock(&self.history).iter().rev().cloned().collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Which name a candidate must have.
#[derive(Clone, Copy, Debug)]
pub enum Expect<'a> {
    /// Exactly this name (an upload that names it, a `dynamic.component`).
    Name(&'a str),
    /// A file's stem: `hello.wasm` must be `hello`; `pii_redact.wasm` may be `pii-redact`
    /// (cargo writes `-` as `_` in file names).
    FileStem(&'a str),
    /// Whatever `describe` says.
    Any,
}

impl Expect<'_> {
    pub fn accepts(&self, name: &str) -> bool {
        match self {
            Expect::Name(expected) => *expected == name,
            Expect::FileStem(stem) => *stem == name || *stem == name.replace('-', "_"),
            Expect::Any => true,
        }
    }

    /// The slot a rejection is recorded on.
    pub fn slot_name(&self) -> Option<String> {
        match self {
            Expect::Name(name) => Some(name.to_string()),
            Expect::FileStem(stem) => Some(stem.replace('_', "-")),
            Expect::Any => None,
        }
    }
}

/// What happened to a candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstallOutcome {
    /// It is live now.
    Swapped,
    /// The same bytes and grants were already live; nothing changed.
    Unchanged,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(
        "the component calls itself `{found}` (its `describe`), but it was installed as `{expected}`; rename one of them"
    )]
    NameMismatch { expected: String, found: String },
    #[error("no component `{0}`")]
    NotFound(String),
    #[error("component `{name}` is used by {}; stop using it first or delete with force", users.join(", "))]
    InUse { name: String, users: Vec<String> },
    #[error("component `{0}` has no earlier version to roll back to")]
    NoPrevious(String),
}

/// Every component of one app.
pub struct ComponentRegistry {
    runtime: Arc<Runtime>,
    services: HostServices,
    defaults: Limits,
    grants: BTreeMap<String, Grant>,
    slots: RwLock<BTreeMap<String, Arc<Slot>>>,
    /// Where uploaded components are kept so a restart restores them.
    upload_dir: Option<PathBuf>,
    /// Where trigger components' sources are watched, and the app whose pipelines they start;
    /// set when the app starts.
    trigger_env: std::sync::OnceLock<(Watchers, Arc<AppState>)>,
    /// Trigger components' schedules, stopped with the app.
    schedules: Mutex<Vec<Arc<wf_scheduler::CronScheduler>>>,
    /// Installs, rollbacks and removals take turns, so history, wiring and what is on disk
    /// follow the order versions went live.
    changes: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for ComponentRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentRegistry").finish_non_exhaustive()
    }
}

impl ComponentRegistry {
    pub fn new(
        runtime: Arc<Runtime>,
        services: HostServices,
        defaults: Limits,
        grants: BTreeMap<String, Grant>,
        upload_dir: Option<PathBuf>,
    ) -> ComponentRegistry {
        ComponentRegistry {
            runtime,
            services,
            defaults,
            grants,
            slots: RwLock::new(BTreeMap::new()),
            upload_dir,
            trigger_env: std::sync::OnceLock::new(),
            schedules: Mutex::new(Vec::new()),
            changes: tokio::sync::Mutex::new(()),
        }
    }

    /// Trigger components installed from now on get their sources watched.
    pub fn set_trigger_env(&self, watchers: Watchers, app: Arc<AppState>) {
        let _ = self.trigger_env.set((watchers, app));
    }

    /// Watches a new trigger component's sources, once per name. Failing (no router, a route
    /// taken) rejects the candidate.
    fn wire_trigger(&self, slot: &Arc<Slot>, loaded: &LoadedComponent) -> Result<(), LoadError> {
        if loaded.kind != ComponentKind::Trigger {
            return Ok(());
        }
        // Watched already (by this name, even if since deleted): the sources must be the same.
        if let Some(wired) = lock(&slot.wired).as_ref() {
            if *wired != loaded.sources {
                return Err(LoadError::Incompatible(format!(
                    "its sources ({:?}) differ from those already watched for `{}` ({wired:?}); restart the app to change what a trigger watches",
                    loaded.sources, slot.name
                )));
            }
            // A new version must still be granted what it watches.
            return crate::trigger_wiring::check_sources(
                &slot.name,
                &loaded.sources,
                &loaded.capabilities,
            )
            .map_err(|e| LoadError::Incompatible(format!("{e:#}")));
        }
        let Some((watchers, app)) = self.trigger_env.get() else {
            return Err(LoadError::Host(
                "trigger components can only be installed in a running app".into(),
            ));
        };
        let scheduler =
            crate::trigger_wiring::wire(slot, &loaded.sources, &loaded.capabilities, watchers, app)
                .map_err(|e| LoadError::Incompatible(format!("{e:#}")))?;
        lock(&self.schedules).extend(scheduler);
        *lock(&slot.wired) = Some(loaded.sources.clone());
        Ok(())
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    pub fn upload_dir(&self) -> Option<&PathBuf> {
        self.upload_dir.as_ref()
    }

    /// The slot for `name`, created empty if needed, so a step can hold it before the
    /// component arrives.
    pub fn slot(&self, name: &str) -> Arc<Slot> {
        if let Some(slot) = self
            .slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return slot.clone();
        }
        self.slots
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(Slot::new(name)))
            .clone()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Slot>> {
        self.slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Every slot that has or had a component, by name.
    pub fn slots(&self) -> Vec<Arc<Slot>> {
        self.slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|s| s.live().is_some() || s.rejected().is_some())
            .cloned()
            .collect()
    }

    /// The YAML grant for a component, by name or by file stem (`pii_redact.wasm` finds
    /// the grant of `pii-redact`).
    fn grant(&self, expect: &Expect<'_>) -> Grant {
        let found = match expect {
            Expect::Name(name) => self.grants.get(*name),
            Expect::FileStem(stem) => self
                .grants
                .get(*stem)
                .or_else(|| self.grants.get(&stem.replace('_', "-"))),
            Expect::Any => None,
        };
        found.cloned().unwrap_or_default()
    }

    /// The spec for a component: its YAML grant with `extra` applied, over the runtime's
    /// defaults.
    pub fn spec(
        &self,
        expect: &Expect<'_>,
        bytes: Arc<Vec<u8>>,
        extra: ExtraGrant<'_>,
    ) -> Result<ComponentSpec, LoadError> {
        let yaml = self.grant(expect);
        let mut config = yaml.config;
        let mut capabilities = yaml.capabilities;
        let mut limits = Limits::merged(&self.defaults, &yaml.limits).map_err(LoadError::Host)?;
        match extra {
            ExtraGrant::None => {}
            ExtraGrant::Config(extra) => {
                config.extend(extra.config.clone());
                capabilities = capabilities.union(&extra.capabilities);
                limits = Limits::merged(&limits, &extra.limits).map_err(LoadError::Host)?;
            }
            ExtraGrant::Upload(extra) => {
                // An upload may narrow what the YAML grants, never widen it: whoever can
                // upload must not hand code more than the app's author allowed.
                let asked = Limits::merged(&limits, &extra.limits).map_err(LoadError::Host)?;
                let mut excess = extra.capabilities.not_covered_by(&capabilities);
                excess.extend(limits.loosened_by(&asked));
                if !excess.is_empty() {
                    return Err(LoadError::GrantExceeded {
                        name: expect.slot_name().unwrap_or_default(),
                        excess,
                    });
                }
                config.extend(extra.config.clone());
                if extra.capabilities != Capabilities::default() {
                    capabilities = extra.capabilities.clone();
                }
                limits = asked;
            }
        }
        Ok(ComponentSpec {
            bytes,
            config,
            capabilities,
            limits,
            services: self.services.clone(),
        })
    }

    fn reject(&self, slot: Option<String>, digest: String, error: &impl std::fmt::Display) {
        self.discard_code_of(&digest);
        if let Some(name) = slot {
            *lock(&self.slot(&name).rejected) = Some(Rejection {
                digest,
                error: error.to_string(),
                at: SystemTime::now(),
            });
        }
    }

    /// Deletes the cached machine code of a candidate that was refused, so rejected uploads
    /// leave no compiled code behind (unless a kept version has the same bytes).
    pub fn discard_code(&self, bytes: &[u8]) {
        self.discard_code_of(&crate::cache::sha256_hex(bytes));
    }

    fn discard_code_of(&self, digest: &str) {
        let kept = self
            .slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|slot| {
                slot.live().is_some_and(|c| c.digest == digest)
                    || lock(&slot.history).iter().any(|c| c.digest == digest)
            });
        if !kept {
            self.runtime.forget_code(digest);
        }
    }

    /// Validates `spec` and, when it passes, makes it the live version of its name. A failed
    /// candidate is recorded on the slot it was meant for, and the live version stays.
    pub async fn install(
        &self,
        expect: &Expect<'_>,
        spec: ComponentSpec,
        origin: Origin,
    ) -> Result<(Arc<Slot>, InstallOutcome), InstallError> {
        let _turn = self.changes.lock().await;
        let digest = crate::cache::sha256_hex(&spec.bytes);
        if let Some(name) = expect.slot_name()
            && let Some(live) = self.get(&name).and_then(|s| s.live())
            && live.digest == digest
            && live.capabilities == spec.capabilities
            && live.limits == spec.limits
            && live.config == spec.config
        {
            return Ok((self.slot(&name), InstallOutcome::Unchanged));
        }
        let loaded = match LoadedComponent::load(&self.runtime, spec).await {
            Ok(loaded) => loaded,
            Err(error) => {
                self.reject(expect.slot_name(), digest, &error);
                return Err(error.into());
            }
        };
        let name = loaded.info.name.clone();
        if !expect.accepts(&name) {
            let error = InstallError::NameMismatch {
                expected: expect.slot_name().unwrap_or_default(),
                found: name,
            };
            self.reject(expect.slot_name(), digest, &error);
            return Err(error);
        }
        // A module component starts before it goes live; one that cannot start never does.
        if let Err(error) = loaded.start_module().await {
            let error = LoadError::Start(error.to_string());
            self.reject(Some(name.clone()), digest, &error);
            return Err(error.into());
        }
        let slot = self.slot(&name);
        if let Err(error) = self.wire_trigger(&slot, &loaded) {
            loaded.stop_module().await;
            self.reject(Some(name.clone()), digest, &error);
            return Err(error.into());
        }
        let new = Arc::new(loaded);
        if let Some(old) = slot.live.swap(Some(new.clone())) {
            // Its calls in progress finish first (they hold its instance).
            old.retire().await;
            let evicted = {
                let mut history = lock(&slot.history);
                history.push(old);
                (history.len() > KEPT_VERSIONS).then(|| history.remove(0))
            };
            // A version no longer kept leaves no compiled code behind either.
            if let Some(evicted) = evicted {
                self.discard_code_of(&evicted.digest);
            }
        }
        *lock(&slot.rejected) = None;
        *lock(&slot.origin) = Some(origin);
        slot.revision
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            component = %name,
            version = %new.info.version,
            digest = %&new.digest[..12],
            cached = new.cached,
            "component is live"
        );
        Ok((slot, InstallOutcome::Swapped))
    }

    /// Makes the previous good version live again.
    pub async fn rollback(&self, name: &str) -> Result<Arc<LoadedComponent>, InstallError> {
        let _turn = self.changes.lock().await;
        let slot = self
            .get(name)
            .ok_or_else(|| InstallError::NotFound(name.to_string()))?;
        let previous = lock(&slot.history)
            .pop()
            .ok_or_else(|| InstallError::NoPrevious(name.to_string()))?;
        previous.reinstate();
        if let Err(error) = previous.start_module().await {
            lock(&slot.history).push(previous);
            return Err(LoadError::Start(error.to_string()).into());
        }
        if let Some(current) = slot.live.swap(Some(previous.clone())) {
            current.retire().await;
        }
        slot.revision
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(component = %name, version = %previous.info.version, "rolled back");
        Ok(previous)
    }

    /// Unloads `name`. Refused while a pipeline uses it, unless `force`.
    pub async fn remove(&self, name: &str, force: bool) -> Result<(), InstallError> {
        let _turn = self.changes.lock().await;
        let slot = self
            .get(name)
            .filter(|s| s.live().is_some() || s.rejected().is_some())
            .ok_or_else(|| InstallError::NotFound(name.to_string()))?;
        let users = slot.references();
        if !users.is_empty() && !force {
            return Err(InstallError::InUse {
                name: name.to_string(),
                users,
            });
        }
        let mut gone: Vec<String> = lock(&slot.history)
            .drain(..)
            .map(|c| c.digest.clone())
            .collect();
        if let Some(live) = slot.live.swap(None) {
            gone.push(live.digest.clone());
            live.retire().await;
        }
        for digest in gone {
            self.discard_code_of(&digest);
        }
        *lock(&slot.rejected) = None;
        *lock(&slot.origin) = None;
        Ok(())
    }
}

impl ComponentRegistry {
    /// Stops trigger schedules and every live module component (when the app stops).
    pub async fn stop_modules(&self, deadline: tokio::time::Instant) {
        let schedulers: Vec<_> = lock(&self.schedules).drain(..).collect();
        for scheduler in schedulers {
            // Ticking stops at once; an event in progress may finish until the deadline.
            if let Err(e) = scheduler.stop(deadline).await {
                tracing::warn!(error = %format!("{e:#}"), "a trigger component's schedule did not stop cleanly");
            }
        }
        for slot in self.slots() {
            if let Some(live) = slot.live() {
                live.stop_module().await;
            }
        }
    }
}

/// RFC 3339 timestamps in API output.
pub(crate) mod rfc3339 {
    use std::time::SystemTime;

    pub fn serialize<S: serde::Serializer>(at: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*at))
    }

    pub fn format(at: SystemTime) -> String {
        let secs = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        wf_config::time::rfc3339(secs)
    }
}
