//! The registry of every type a configuration can name: module, step, trigger and workflow types.
//!
//! Registration is explicit (`registry.register_module::<HttpServer>()?` in one place, the
//! `wf-host` binary), duplicates are refused, and each type's config schema is generated from its
//! Rust config struct, so the validator, `wf-host schema`, the module-schemas endpoint and the UI
//! all read the same source.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;
use wf_config::CompiledSchema;

use crate::context::{BuildContext, CheckContext, WireContext};
use crate::module::Module;
use crate::step::Step;
use crate::trigger::Trigger;

/// What kind of thing a registered type is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Module,
    Step,
    Trigger,
    Workflow,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Module => "module",
            Kind::Step => "step",
            Kind::Trigger => "trigger",
            Kind::Workflow => "workflow",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Functional area of a type, for `wf-host types` and the builder palette.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    Http,
    Middleware,
    Auth,
    Api,
    StateMachine,
    Messaging,
    Storage,
    Pipeline,
    Observability,
    Scheduling,
    Integration,
    Secrets,
    Wasm,
    Other,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Http => "http",
            Category::Middleware => "middleware",
            Category::Auth => "auth",
            Category::Api => "api",
            Category::StateMachine => "state-machine",
            Category::Messaging => "messaging",
            Category::Storage => "storage",
            Category::Pipeline => "pipeline",
            Category::Observability => "observability",
            Category::Scheduling => "scheduling",
            Category::Integration => "integration",
            Category::Secrets => "secrets",
            Category::Wasm => "wasm",
            Category::Other => "other",
        }
    }
}

/// Everything the outside world may know about a registered type.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TypeInfo {
    #[serde(rename = "type")]
    pub name: &'static str,
    pub kind: Kind,
    pub category: Category,
    /// The plugin group the type belongs to (what `requires.plugins` names).
    pub plugin: &'static str,
    pub description: &'static str,
    /// JSON Schema of the type's `config`.
    pub schema: Value,
}

/// A problem a type found in its own configuration beyond what the schema expresses
/// (cross-field rules, references to other modules).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigIssue {
    /// JSON pointer relative to the checked config, e.g. `/routes/2/handler`.
    pub pointer: String,
    pub message: String,
    pub help: Option<String>,
    /// A warning is shown but does not make the configuration invalid.
    pub warning: bool,
    /// The configuration asks for a feature this build does not have yet (not a user mistake).
    pub not_implemented: bool,
}

impl ConfigIssue {
    pub fn new(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigIssue {
            pointer: pointer.into(),
            message: message.into(),
            help: None,
            warning: false,
            not_implemented: false,
        }
    }

    pub fn not_implemented(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigIssue {
            not_implemented: true,
            ..ConfigIssue::new(pointer, message)
        }
    }

    pub fn warning(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigIssue {
            warning: true,
            ..ConfigIssue::new(pointer, message)
        }
    }

    /// An issue at `pointer` unless `address` is an `http://` or `https://` URL (an endpoint,
    /// a server's address).
    pub fn unless_http_address(pointer: &str, address: &str) -> Option<Self> {
        let is_http =
            url::Url::parse(address).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
        (!is_http)
            .then(|| ConfigIssue::new(pointer, format!("`{address}` is not an http(s) address")))
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// Static description shared by every type trait.
pub trait Described {
    /// The name configurations use, e.g. `http.server`.
    const NAME: &'static str;
    const CATEGORY: Category;
    /// The plugin group, e.g. `http`.
    const PLUGIN: &'static str;
    /// One sentence for `wf-host types` and the builder palette.
    const DESCRIPTION: &'static str;
    /// The typed configuration; `deny_unknown_fields`, a doc comment on every field.
    type Config: DeserializeOwned + JsonSchema + Send + 'static;
}

/// A module type: builds one module instance from its config.
pub trait ModuleType: Described {
    /// Rules the schema cannot express. The context knows every declared module.
    fn check(_config: &Self::Config, _ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        Vec::new()
    }

    /// Modules this one uses (by name, from its config or chosen by convention). They are built
    /// and started before it, as if listed in `dependsOn`.
    fn references(_config: &Self::Config, _ctx: &CheckContext<'_>) -> Vec<String> {
        Vec::new()
    }

    /// Creates the module and registers the services it provides. Must not do I/O that can
    /// fail at run time (binding, connecting): that belongs in `Module::start`.
    fn build(config: Self::Config, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Module>>;
}

/// A workflow type: wires modules together (routes, subscriptions, ...) after all modules exist.
pub trait WorkflowType: Described {
    /// Whether this type handles the workflow key `kind` (e.g. `http` also handles `http-admin`).
    fn handles(kind: &str) -> bool {
        kind == Self::NAME
    }

    fn check(_config: &Self::Config, _ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        Vec::new()
    }

    fn configure(config: Self::Config, ctx: &mut WireContext<'_>) -> anyhow::Result<()>;

    /// Names of the pipelines this workflow declares (registered with
    /// [`WireContext::register_pipeline`]), so triggers and steps may name them.
    fn declared_pipelines(_config: &Self::Config) -> Vec<String> {
        Vec::new()
    }

    /// Workflows other than pipelines this one declares, with their actions (a state
    /// machine definition and its transitions), so triggers may start them by
    /// `workflow:` and `action:`. They are registered with [`crate::AppState::add_action_target`].
    fn declared_actions(_config: &Self::Config) -> Vec<(String, Vec<String>)> {
        Vec::new()
    }
}

/// A trigger type: something that starts pipelines (an HTTP route, a topic, a schedule).
pub trait TriggerType: Described {
    fn check(_config: &Self::Config, _ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        Vec::new()
    }

    fn configure(
        config: Self::Config,
        ctx: &mut WireContext<'_>,
    ) -> anyhow::Result<Arc<dyn Trigger>>;

    /// Turns a pipeline's inline `trigger: {type, config}` into this type's full config.
    /// By default the pipeline's name is added as `pipeline`.
    fn inline(pipeline: &str, config: Value) -> Value {
        let mut map = match config {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        map.insert("pipeline".to_string(), Value::String(pipeline.to_string()));
        Value::Object(map)
    }
}

/// A step type: one kind of pipeline step.
pub trait StepType: Described {
    fn check(_config: &Self::Config, _ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        Vec::new()
    }

    fn build(config: Self::Config, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Step>>;
}

/// What a config value failed to deserialize into; the schema normally catches this first.
fn typed<C: DeserializeOwned>(type_name: &str, config: &Value) -> anyhow::Result<C> {
    serde_json::from_value(config.clone())
        .map_err(|e| anyhow::anyhow!("invalid `{type_name}` config: {e}"))
}

type ReferencesFn = Box<dyn Fn(&Value, &CheckContext<'_>) -> Vec<String> + Send + Sync>;
type CheckFn =
    Box<dyn Fn(&Value, &CheckContext<'_>) -> anyhow::Result<Vec<ConfigIssue>> + Send + Sync>;
type BuildModuleFn =
    Box<dyn Fn(&Value, &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Module>> + Send + Sync>;
pub type BuildStepFn =
    Box<dyn Fn(&Value, &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Step>> + Send + Sync>;
type ConfigureFn = Box<dyn Fn(&Value, &mut WireContext<'_>) -> anyhow::Result<()> + Send + Sync>;
type ConfigureTriggerFn =
    Box<dyn Fn(&Value, &mut WireContext<'_>) -> anyhow::Result<Arc<dyn Trigger>> + Send + Sync>;

/// A step type defined at run time (see [`Registry::register_external_step`]).
pub struct ExternalStep {
    pub name: String,
    pub description: String,
    pub category: Category,
    pub plugin: &'static str,
    /// JSON Schema of the step's `config`.
    pub schema: Value,
    pub factory: BuildStepFn,
}

/// A registered type with its erased factory.
pub struct Registered<F> {
    pub info: TypeInfo,
    pub schema: CompiledSchema,
    pub(crate) check: CheckFn,
    pub(crate) factory: F,
}

pub struct TriggerEntry {
    pub(crate) registered: Registered<ConfigureTriggerFn>,
    inline: fn(&str, Value) -> Value,
}

pub struct ModuleEntry {
    pub(crate) registered: Registered<BuildModuleFn>,
    pub(crate) references: ReferencesFn,
}

pub struct WorkflowEntry {
    pub(crate) registered: Registered<ConfigureFn>,
    handles: fn(&str) -> bool,
    declared_pipelines: DeclaredPipelinesFn,
    declared_actions: DeclaredActionsFn,
}

type DeclaredActionsFn = Box<dyn Fn(&Value) -> Vec<(String, Vec<String>)> + Send + Sync>;

type DeclaredPipelinesFn = Box<dyn Fn(&Value) -> Vec<String> + Send + Sync>;

impl WorkflowEntry {
    /// The pipelines a workflow with this `config` declares (none when it does not parse).
    pub fn declared_pipelines(&self, config: &Value) -> Vec<String> {
        (self.declared_pipelines)(config)
    }

    /// The action targets (name, actions) a workflow with this `config` declares.
    pub fn declared_actions(&self, config: &Value) -> Vec<(String, Vec<String>)> {
        (self.declared_actions)(config)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{kind} type `{name}` is registered twice")]
    Duplicate { kind: Kind, name: &'static str },
    #[error("the generated schema of {kind} type `{name}` does not compile: {reason}")]
    BadSchema {
        kind: Kind,
        name: &'static str,
        reason: String,
    },
}

/// Every type this build of wf knows.
#[derive(Default)]
pub struct Registry {
    modules: BTreeMap<&'static str, ModuleEntry>,
    steps: BTreeMap<&'static str, Registered<BuildStepFn>>,
    triggers: BTreeMap<&'static str, TriggerEntry>,
    workflows: Vec<WorkflowEntry>,
    /// Other names plugin groups were known by, e.g. `workflow-plugin-http` → `http`.
    plugin_aliases: BTreeMap<&'static str, &'static str>,
    /// Module types that are secret sources, by type name.
    secret_sources: BTreeMap<&'static str, crate::secrets::SecretSource>,
    /// Where run journals are kept (set by the crate implementing the stores).
    journal_backend: Option<Arc<dyn crate::journal::JournalBackend>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("modules", &self.modules.keys().collect::<Vec<_>>())
            .field("steps", &self.steps.keys().collect::<Vec<_>>())
            .field("triggers", &self.triggers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn info<T: Described>(kind: Kind) -> Result<(TypeInfo, CompiledSchema), RegistryError> {
    let schema = schemars::schema_for!(T::Config).to_value();
    let compiled = CompiledSchema::compile(&schema).map_err(|reason| RegistryError::BadSchema {
        kind,
        name: T::NAME,
        reason,
    })?;
    let info = TypeInfo {
        name: T::NAME,
        kind,
        category: T::CATEGORY,
        plugin: T::PLUGIN,
        description: T::DESCRIPTION,
        schema,
    };
    Ok((info, compiled))
}

fn checker<T: Described>(check: fn(&T::Config, &CheckContext<'_>) -> Vec<ConfigIssue>) -> CheckFn {
    Box::new(move |value, ctx| Ok(check(&typed::<T::Config>(T::NAME, value)?, ctx)))
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `backend` the maker of run journal stores.
    pub fn set_journal_backend(&mut self, backend: Arc<dyn crate::journal::JournalBackend>) {
        self.journal_backend = Some(backend);
    }

    pub fn journal_backend(&self) -> Option<&Arc<dyn crate::journal::JournalBackend>> {
        self.journal_backend.as_ref()
    }

    pub fn register_module<T: ModuleType>(&mut self) -> Result<&mut Self, RegistryError> {
        if self.modules.contains_key(T::NAME) {
            return Err(RegistryError::Duplicate {
                kind: Kind::Module,
                name: T::NAME,
            });
        }
        let (info, schema) = info::<T>(Kind::Module)?;
        let factory: BuildModuleFn =
            Box::new(|value, ctx| T::build(typed::<T::Config>(T::NAME, value)?, ctx));
        let references: ReferencesFn = Box::new(|value, ctx| {
            serde_json::from_value::<T::Config>(value.clone())
                .map(|config| T::references(&config, ctx))
                .unwrap_or_default()
        });
        self.modules.insert(
            T::NAME,
            ModuleEntry {
                registered: Registered {
                    info,
                    schema,
                    check: checker::<T>(T::check),
                    factory,
                },
                references,
            },
        );
        Ok(self)
    }

    /// Registers a module type that is also a secret source: `${secret:…}` references are
    /// fetched from its modules before the app is validated.
    pub fn register_secret_source<T: crate::secrets::SecretSourceType>(
        &mut self,
    ) -> Result<&mut Self, RegistryError> {
        self.register_module::<T>()?;
        self.secret_sources.insert(
            T::NAME,
            crate::secrets::SecretSource {
                scheme: T::SCHEME,
                connect: Box::new(|value| T::store(typed::<T::Config>(T::NAME, value)?)),
            },
        );
        Ok(self)
    }

    /// The secret source registered under module type `type_name`.
    pub fn secret_source(&self, type_name: &str) -> Option<&crate::secrets::SecretSource> {
        self.secret_sources.get(type_name)
    }

    pub fn register_step<T: StepType>(&mut self) -> Result<&mut Self, RegistryError> {
        if self.steps.contains_key(T::NAME) {
            return Err(RegistryError::Duplicate {
                kind: Kind::Step,
                name: T::NAME,
            });
        }
        let (info, schema) = info::<T>(Kind::Step)?;
        let factory: BuildStepFn =
            Box::new(|value, ctx| T::build(typed::<T::Config>(T::NAME, value)?, ctx));
        self.steps.insert(
            T::NAME,
            Registered {
                info,
                schema,
                check: checker::<T>(T::check),
                factory,
            },
        );
        Ok(self)
    }

    /// Registers a step type known only at run time (a WebAssembly component's `describe`),
    /// with its config schema and factory. Built-in names win: a clash is refused.
    ///
    /// Names and descriptions are leaked into `'static` strings: this happens once per
    /// component per process, at start-up, like the built-ins' constants.
    pub fn register_external_step(
        &mut self,
        step: ExternalStep,
    ) -> Result<&mut Self, RegistryError> {
        let name: &'static str = Box::leak(step.name.into_boxed_str());
        if self.steps.contains_key(name) {
            return Err(RegistryError::Duplicate {
                kind: Kind::Step,
                name,
            });
        }
        let compiled =
            CompiledSchema::compile(&step.schema).map_err(|reason| RegistryError::BadSchema {
                kind: Kind::Step,
                name,
                reason,
            })?;
        let info = TypeInfo {
            name,
            kind: Kind::Step,
            category: step.category,
            plugin: step.plugin,
            description: Box::leak(step.description.into_boxed_str()),
            schema: step.schema,
        };
        self.steps.insert(
            name,
            Registered {
                info,
                schema: compiled,
                check: Box::new(|_, _| Ok(Vec::new())),
                factory: step.factory,
            },
        );
        Ok(self)
    }

    pub fn register_trigger<T: TriggerType>(&mut self) -> Result<&mut Self, RegistryError> {
        if self.triggers.contains_key(T::NAME) {
            return Err(RegistryError::Duplicate {
                kind: Kind::Trigger,
                name: T::NAME,
            });
        }
        let (info, schema) = info::<T>(Kind::Trigger)?;
        let factory: ConfigureTriggerFn =
            Box::new(|value, ctx| T::configure(typed::<T::Config>(T::NAME, value)?, ctx));
        self.triggers.insert(
            T::NAME,
            TriggerEntry {
                registered: Registered {
                    info,
                    schema,
                    check: checker::<T>(T::check),
                    factory,
                },
                inline: T::inline,
            },
        );
        Ok(self)
    }

    pub fn register_workflow<T: WorkflowType>(&mut self) -> Result<&mut Self, RegistryError> {
        if self
            .workflows
            .iter()
            .any(|w| w.registered.info.name == T::NAME)
        {
            return Err(RegistryError::Duplicate {
                kind: Kind::Workflow,
                name: T::NAME,
            });
        }
        let (info, schema) = info::<T>(Kind::Workflow)?;
        let factory: ConfigureFn =
            Box::new(|value, ctx| T::configure(typed::<T::Config>(T::NAME, value)?, ctx));
        self.workflows.push(WorkflowEntry {
            registered: Registered {
                info,
                schema,
                check: checker::<T>(T::check),
                factory,
            },
            handles: T::handles,
            declared_pipelines: Box::new(|value| {
                serde_json::from_value::<T::Config>(value.clone())
                    .map(|c| T::declared_pipelines(&c))
                    .unwrap_or_default()
            }),
            declared_actions: Box::new(|value| {
                serde_json::from_value::<T::Config>(value.clone())
                    .map(|c| T::declared_actions(&c))
                    .unwrap_or_default()
            }),
        });
        Ok(self)
    }

    /// Accepts `alias` wherever the plugin group `plugin` is named (`requires.plugins`).
    pub fn alias_plugin(&mut self, alias: &'static str, plugin: &'static str) -> &mut Self {
        self.plugin_aliases.insert(alias, plugin);
        self
    }

    pub fn module(&self, name: &str) -> Option<&Registered<BuildModuleFn>> {
        self.modules.get(name).map(|m| &m.registered)
    }

    /// Modules the declared module `config` of type `type_name` uses.
    pub fn module_references(
        &self,
        type_name: &str,
        config: &Value,
        ctx: &CheckContext<'_>,
    ) -> Vec<String> {
        self.modules
            .get(type_name)
            .map(|m| (m.references)(config, ctx))
            .unwrap_or_default()
    }

    pub fn step(&self, name: &str) -> Option<&Registered<BuildStepFn>> {
        self.steps.get(name)
    }

    pub fn trigger(&self, name: &str) -> Option<&Registered<ConfigureTriggerFn>> {
        self.triggers.get(name).map(|t| &t.registered)
    }

    /// A trigger type's conversion of a pipeline's inline trigger config (see [`TriggerType::inline`]).
    pub fn inline_trigger(&self, name: &str, pipeline: &str, config: Value) -> Option<Value> {
        self.triggers
            .get(name)
            .map(|t| (t.inline)(pipeline, config))
    }

    /// The workflow type that handles the workflow key `kind`.
    pub fn workflow(&self, kind: &str) -> Option<&WorkflowEntry> {
        self.workflows.iter().find(|w| (w.handles)(kind))
    }

    /// Every registered type, modules first, each kind sorted by name.
    pub fn types(&self) -> Vec<&TypeInfo> {
        let mut workflows: Vec<&TypeInfo> =
            self.workflows.iter().map(|w| &w.registered.info).collect();
        workflows.sort_by_key(|i| i.name);
        self.modules
            .values()
            .map(|r| &r.registered.info)
            .chain(self.steps.values().map(|r| &r.info))
            .chain(self.triggers.values().map(|r| &r.registered.info))
            .chain(workflows)
            .collect()
    }

    /// Finds a type by name in any kind.
    pub fn find_type(&self, name: &str) -> Option<&TypeInfo> {
        self.types().into_iter().find(|t| t.name == name)
    }

    pub fn names(&self, kind: Kind) -> Vec<&'static str> {
        self.types()
            .into_iter()
            .filter(|t| t.kind == kind)
            .map(|t| t.name)
            .collect()
    }

    /// Plugin group names, with the aliases they are also known by.
    pub fn plugins(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.types().into_iter().map(|t| t.plugin).collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Resolves a plugin group name or alias to the group name, if this build has it.
    pub fn resolve_plugin(&self, name: &str) -> Option<&'static str> {
        let plugins = self.plugins();
        let canonical = self.plugin_aliases.get(name).copied();
        plugins
            .into_iter()
            .find(|p| *p == name || Some(*p) == canonical)
    }

    pub fn plugin_names_and_aliases(&self) -> Vec<&'static str> {
        let mut all = self.plugins();
        all.extend(self.plugin_aliases.keys().copied());
        all
    }
}

impl WorkflowEntry {
    pub fn info(&self) -> &TypeInfo {
        &self.registered.info
    }
}
