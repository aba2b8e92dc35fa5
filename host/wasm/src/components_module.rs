//! `wasm.components`: an app's WebAssembly components — the runtime and its limits, what each
//! component is granted, the watched directory (hot swap), uploaded components kept across
//! restarts, and the components API.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use schemars::JsonSchema;
use serde::Deserialize;
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType, ServiceKind,
    StartContext, StopContext, async_trait,
};
use wf_messaging::MessageBroker;

use crate::host::HostServices;
use crate::limits::{Limits, LimitsConfig};
use crate::registry::{ComponentRegistry, Grant};
use crate::runtime::{Runtime, RuntimeConfig};
use crate::state_store::StateStore;
use crate::trigger_wiring::Watchers;
use crate::watch::DirWatcher;

impl ServiceKind for ComponentRegistry {
    const LABEL: &'static str = "a component registry";
}

/// The components API (`/api/dynamic/components`).
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// The `http.router` to serve it on; optional when the app has one router.
    #[serde(default)]
    pub router: Option<String>,
    /// Bearer token every request must carry (`Authorization: Bearer <token>`), e.g.
    /// `${WF_ADMIN_TOKEN}`. Whoever holds it can run code in the app, so the API refuses to
    /// start without one unless every server listens only on loopback (then it warns) or
    /// `allow_unauthenticated` says so.
    #[serde(default)]
    pub token: Option<String>,
    /// Serve the API without a token even where other machines can reach it (behind a proxy
    /// that authenticates, say). Anyone who reaches it can upload code.
    #[serde(default)]
    pub allow_unauthenticated: bool,
    /// Path prefix of the API.
    #[serde(default = "default_api_prefix")]
    pub prefix: String,
    /// Largest accepted upload, in MiB; also the largest file read from `dir`.
    #[serde(default = "default_max_upload_mib")]
    #[schemars(range(min = 1, max = 1024))]
    pub max_upload_mib: u32,
}

fn default_api_prefix() -> String {
    "/api/dynamic/components".to_string()
}

fn default_max_upload_mib() -> u32 {
    32
}

/// Configuration of `wasm.components`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComponentsConfig {
    /// A directory of `.wasm` components, relative to this config file. Each is loaded at
    /// start under the name its `describe` gives, and the directory is watched: a new or
    /// changed file is validated and swapped in without a restart.
    #[serde(default)]
    pub dir: Option<String>,
    /// Where uploaded components are kept across restarts and compiled code is cached,
    /// relative to this config file.
    #[serde(default = "default_data_dir")]
    pub data_dir: String,
    /// Limits for every component, unless its entry in `components` overrides them.
    #[serde(default)]
    pub defaults: LimitsConfig,
    /// Per component name: its configuration, capabilities and limits. Nothing is granted to
    /// a component that is not listed.
    #[serde(default)]
    pub components: BTreeMap<String, Grant>,
    /// Instances that may exist at once across all components; further calls wait.
    #[serde(default = "default_max_instances")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_instances: u32,
    /// The `http.router` trigger components' routes go on; optional when the app has one.
    #[serde(default)]
    pub router: Option<String>,
    /// The message broker components publish to (the `events` capability); optional when the
    /// app has one.
    #[serde(default)]
    pub broker: Option<String>,
    /// Serve the components API: upload, list, inspect, delete, roll back.
    #[serde(default)]
    pub api: Option<ApiConfig>,
    /// The database that keeps components' state buckets (table `wf_component_state`), so
    /// they survive restarts; optional when the app has one database module. Without one,
    /// buckets are kept in memory.
    #[serde(default)]
    pub state_database: Option<String>,
}

fn default_data_dir() -> String {
    ".wf/wasm".to_string()
}

fn default_max_instances() -> u32 {
    256
}

pub struct ComponentsType;

impl Described for ComponentsType {
    const NAME: &'static str = "wasm.components";
    const CATEGORY: Category = Category::Wasm;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "WebAssembly components of the app: limits, grants, a hot-swapped directory and the upload API.";
    type Config = ComponentsConfig;
}

impl ModuleType for ComponentsType {
    fn check(config: &ComponentsConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        for (name, grant) in &config.components {
            if let Err(message) = crate::component::check_name(name) {
                issues.push(ConfigIssue::new(format!("/components/{name}"), message));
            }
            if let Err(message) = Limits::merged(&Limits::default(), &grant.limits) {
                issues.push(ConfigIssue::new(
                    format!("/components/{name}/limits"),
                    message,
                ));
            }
        }
        if let Err(message) = Limits::merged(&Limits::default(), &config.defaults) {
            issues.push(ConfigIssue::new("/defaults", message));
        }
        if let Some(api) = &config.api {
            if let Err(issue) = wf_http::endpoint::choose_router(api.router.as_deref(), ctx) {
                issues.push(ConfigIssue {
                    pointer: format!("/api{}", issue.pointer),
                    ..issue
                });
            }
            if let Some(issue) = unauthenticated_api(api, ctx) {
                issues.push(issue);
            }
            if !api.prefix.starts_with('/') {
                issues.push(ConfigIssue::new(
                    "/api/prefix",
                    "the prefix must start with `/`",
                ));
            }
        }
        // Named ones must exist; without a name, having none is fine (no `events`, no
        // trigger routes).
        if config.router.is_some()
            && let Err(issue) = wf_http::endpoint::choose_router(config.router.as_deref(), ctx)
        {
            issues.push(issue);
        }
        if let Err(issue) = wf_storage::database_of(config.state_database.as_deref(), ctx) {
            issues.push(ConfigIssue {
                pointer: issue.pointer.replace("/database", "/state_database"),
                ..issue
            });
        }
        if config.broker.is_some()
            && let Err(issue) = ctx.choose(
                config.broker.as_deref(),
                "broker",
                "message broker",
                wf_messaging::BROKER_TYPES,
            )
        {
            issues.push(issue);
        }
        issues
    }

    fn references(config: &ComponentsConfig, ctx: &CheckContext<'_>) -> Vec<String> {
        let mut refs = Vec::new();
        if let Some(api) = &config.api
            && let Ok(router) = wf_http::endpoint::choose_router(api.router.as_deref(), ctx)
        {
            refs.push(router);
        }
        // Any router and broker are dependencies: trigger components route and subscribe on
        // them, and components publish to the broker when granted a topic.
        if let Ok(router) = wf_http::endpoint::choose_router(config.router.as_deref(), ctx) {
            refs.push(router);
        }
        if let Ok(broker) = ctx.choose(
            config.broker.as_deref(),
            "broker",
            "message broker",
            wf_messaging::BROKER_TYPES,
        ) {
            refs.push(broker);
        }
        if let Ok(Some(database)) = wf_storage::database_of(config.state_database.as_deref(), ctx) {
            refs.push(database);
        }
        refs
    }

    fn build(
        config: ComponentsConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        let data_dir = ctx.base_dir.join(&config.data_dir);
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: Some(data_dir.join("cache")),
            max_instances: config.max_instances,
            pooling: true,
        })?;
        let router = match config.router.as_deref() {
            Some(name) => Some(ctx.named_or_only::<wf_http::Router>(Some(name), "")?),
            None => ctx.named_or_only::<wf_http::Router>(None, "").ok(),
        };
        // Optional: without a broker, components granted topics get `unavailable`.
        let broker = match config.broker.as_deref() {
            Some(name) => Some(ctx.named_or_only::<dyn MessageBroker>(Some(name), "")?),
            None => ctx.named_or_only::<dyn MessageBroker>(None, "").ok(),
        };
        let watchers = Watchers {
            router,
            broker: broker.clone(),
        };
        let state = match wf_storage::chosen_database(config.state_database.as_deref(), ctx)? {
            Some(database) => Arc::new(StateStore::in_database(database)),
            None => Arc::new(StateStore::in_memory()),
        };
        let services = HostServices {
            broker,
            state,
            ..HostServices::default()
        };
        let usage = services.usage.clone();
        let defaults =
            Limits::merged(&Limits::default(), &config.defaults).map_err(anyhow::Error::msg)?;
        let registry = Arc::new(ComponentRegistry::new(
            runtime,
            services,
            defaults,
            config.components,
            Some(data_dir.join("components")),
        ));
        if let Some(api) = &config.api {
            crate::api::mount(api, &registry, ctx)?;
        }
        ctx.provide(registry.clone());
        Ok(Arc::new(ComponentsModule {
            watchers: Mutex::new(Some(watchers)),
            usage,
            registry,
            dir: config.dir.map(|d| ctx.base_dir.join(d)),
            max_file_bytes: u64::from(
                config
                    .api
                    .as_ref()
                    .map_or_else(default_max_upload_mib, |api| api.max_upload_mib),
            ) << 20,
            watcher: Mutex::new(None),
        }))
    }
}

/// An API without a token is an error where other machines can reach it, a warning where
/// every server listens on loopback only, and allowed when the config says so explicitly.
fn unauthenticated_api(api: &ApiConfig, ctx: &CheckContext<'_>) -> Option<ConfigIssue> {
    if api.token.as_deref().is_some_and(|t| !t.is_empty()) || api.allow_unauthenticated {
        return None;
    }
    let exposed: Vec<String> = ctx
        .modules_of_type(wf_http::SERVER_TYPES)
        .into_iter()
        .filter_map(|name| {
            let address = ctx.config.module(name)?.config.get("address")?.as_str()?;
            (!wf_http::server::is_loopback_address(address))
                .then(|| format!("`{name}` listens on `{address}`"))
        })
        .collect();
    let issue = if exposed.is_empty() {
        ConfigIssue::warning(
            "/api/token",
            "the components API has no token: any local process can upload code",
        )
    } else {
        ConfigIssue::new(
            "/api/token",
            format!(
                "the components API has no token, and {}: anyone who can reach it could upload code",
                exposed.join(", ")
            ),
        )
    };
    Some(issue.help(
        "set `token` (e.g. `token: ${WF_ADMIN_TOKEN}`), listen on 127.0.0.1 only, or set `allow_unauthenticated: true` if something in front of wf authenticates",
    ))
}

struct ComponentsModule {
    /// Handed to the registry at start, when the app's pipelines exist.
    watchers: Mutex<Option<Watchers>>,
    /// Exported through the app's `metrics.collector`, if it has one, from start.
    usage: Arc<crate::usage::ComponentUsage>,
    registry: Arc<ComponentRegistry>,
    dir: Option<PathBuf>,
    /// The largest component file read from `dir`: the upload limit.
    max_file_bytes: u64,
    watcher: Mutex<Option<DirWatcher>>,
}

#[async_trait]
impl Module for ComponentsModule {
    async fn start(&self, ctx: &StartContext) -> anyhow::Result<()> {
        if let Some(watchers) = self
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            self.registry.set_trigger_env(watchers, ctx.app.clone());
        }
        if let Some(services) = ctx.app.services()
            && let Some((_, metrics)) = services.all::<wf_http::metrics::Metrics>().first()
        {
            self.usage.bind(metrics)?;
        }
        crate::api::restore_uploads(&self.registry).await?;
        if let Some(dir) = &self.dir {
            if !dir.is_dir() {
                anyhow::bail!(
                    "the components directory `{}` does not exist; create it or fix `dir`",
                    dir.display()
                );
            }
            let loaded = load_directory(&self.registry, dir, self.max_file_bytes).await;
            let watcher = DirWatcher::start(
                self.registry.clone(),
                dir.clone(),
                self.max_file_bytes,
                loaded,
            )?;
            *self.watcher.lock().unwrap_or_else(|p| p.into_inner()) = Some(watcher);
        }
        Ok(())
    }

    async fn stop(&self, ctx: &StopContext) -> anyhow::Result<()> {
        self.watcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        self.registry.stop_modules(ctx.deadline).await;
        Ok(())
    }
}

/// Loads every `.wasm` file of `dir`, and returns the digest of each file it could read. A file
/// that fails is reported (and shown as rejected) but does not stop the others or the app.
pub async fn load_directory(
    registry: &Arc<ComponentRegistry>,
    dir: &Path,
    max_bytes: u64,
) -> HashMap<PathBuf, String> {
    let mut loaded = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return loaded;
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| crate::watch::is_component_file(p))
        .collect();
    paths.sort();
    for path in paths {
        if let Some(digest) = crate::watch::load_file(registry, dir, &path, max_bytes).await {
            loaded.insert(path, digest);
        }
    }
    loaded
}
