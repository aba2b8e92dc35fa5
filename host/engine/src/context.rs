//! What type factories see: the declared configuration while checking, the services of earlier
//! modules while building, and every service while wiring workflows and triggers.

use std::path::Path;
use std::sync::Arc;

use wf_config::{AppConfig, did_you_mean};

use crate::registry::{ConfigIssue, Registry};
use crate::services::{ServiceError, ServiceKind, Services};
use crate::state::AppState;

/// Read-only view for `check`: every declared module, before anything is built.
pub struct CheckContext<'a> {
    pub config: &'a AppConfig,
    pub registry: &'a Registry,
    /// The module being checked, when a module's config is being checked.
    pub(crate) module: Option<&'a str>,
}

impl CheckContext<'_> {
    /// The name of the module whose config is being checked.
    pub fn current_module(&self) -> Option<&str> {
        self.module
    }

    /// The type of the declared module `name`.
    pub fn module_type(&self, name: &str) -> Option<&str> {
        self.config.module(name).map(|m| m.type_name.as_str())
    }

    /// An issue at `pointer` unless a module named `name` is declared.
    pub fn require_module(&self, pointer: &str, name: &str, what: &str) -> Option<ConfigIssue> {
        if self.config.module(name).is_some() {
            return None;
        }
        let names = self.config.modules.iter().map(|m| m.name.as_str());
        let issue = ConfigIssue::new(
            pointer,
            format!("{what} `{name}` is not a module of this application"),
        );
        Some(match did_you_mean(name, names) {
            Some(s) => issue.help(format!("did you mean `{s}`?")),
            None => issue.help(format!("declare a module named `{name}` under `modules:`")),
        })
    }

    /// An issue at `pointer` unless a pipeline named `name` is declared.
    pub fn require_pipeline(&self, pointer: &str, name: &str) -> Option<ConfigIssue> {
        if self.has_pipeline(name) {
            return None;
        }
        let names = self.config.pipelines.iter().map(|p| p.name.as_str());
        let issue = ConfigIssue::new(pointer, format!("no pipeline named `{name}`"));
        Some(match did_you_mean(name, names) {
            Some(s) => issue.help(format!("did you mean `{s}`?")),
            None => issue.help("declare it under `pipelines:`"),
        })
    }

    /// Whether a pipeline named `name` is declared, under `pipelines:` or by a workflow.
    pub fn has_pipeline(&self, name: &str) -> bool {
        self.config.pipelines.iter().any(|p| p.name == name) || self.declared_by_workflow(name)
    }

    /// Whether a workflow (an `integration`, ...) declares a pipeline named `name`.
    pub fn declared_by_workflow(&self, name: &str) -> bool {
        self.config.workflows.iter().any(|w| {
            self.registry
                .workflow(&w.kind)
                .is_some_and(|t| t.declared_pipelines(&w.config).iter().any(|p| p == name))
        })
    }

    /// The actions of the action target (a state machine definition, ...) a workflow
    /// declares under `name`, if one does.
    pub fn declared_actions(&self, name: &str) -> Option<Vec<String>> {
        self.config.workflows.iter().find_map(|w| {
            self.registry.workflow(&w.kind).and_then(|t| {
                t.declared_actions(&w.config)
                    .into_iter()
                    .find(|(target, _)| target == name)
                    .map(|(_, actions)| actions)
            })
        })
    }

    /// Names of declared modules whose type is one of `types`, in declaration order.
    pub fn modules_of_type(&self, types: &[&str]) -> Vec<&str> {
        self.config
            .modules
            .iter()
            .filter(|m| types.contains(&m.type_name.as_str()))
            .map(|m| m.name.as_str())
            .collect()
    }

    /// The module a config uses for a role (`router`, `broker`, ...): the one named under `key`,
    /// which must be of one of `types`; else the application's only module of those types; else
    /// the only one of them in the current module's `dependsOn`. Anything else is an issue that
    /// says what to write.
    pub fn choose(
        &self,
        configured: Option<&str>,
        key: &str,
        role: &str,
        types: &[&str],
    ) -> Result<String, ConfigIssue> {
        let pointer = format!("/{key}");
        if let Some(name) = configured {
            if let Some(issue) = self.require_module(&pointer, name, key) {
                return Err(issue);
            }
            return match self.module_type(name) {
                Some(t) if types.contains(&t) => Ok(name.to_string()),
                Some(t) => Err(ConfigIssue::new(
                    &pointer,
                    format!("`{name}` is a `{t}` module, not {}", with_article(role)),
                )),
                None => Err(ConfigIssue::new(
                    &pointer,
                    format!("`{name}` is not a module"),
                )),
            };
        }
        let candidates = self.modules_of_type(types);
        let depends_on = self
            .current_module()
            .and_then(|m| self.config.module(m))
            .map(|m| m.depends_on.as_slice())
            .unwrap_or_default();
        let preferred: Vec<&str> = candidates
            .iter()
            .copied()
            .filter(|c| depends_on.iter().any(|d| d == c))
            .collect();
        match (candidates.as_slice(), preferred.as_slice()) {
            ([only], _) | (_, [only]) => Ok(only.to_string()),
            ([], _) => Err(
                ConfigIssue::new("", format!("there is no {role} in this application")).help(
                    format!(
                        "add a `{}` module",
                        types.first().copied().unwrap_or_default()
                    ),
                ),
            ),
            (several, _) => Err(ConfigIssue::new(
                "",
                format!(
                    "the application has several {role}s ({}); say which one to use",
                    several
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .help(format!("add `{key}: <name>`"))),
        }
    }
}

/// "a router", "an HTTP router".
fn with_article(role: &str) -> String {
    let vowel = role.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {role}", if vowel { "an" } else { "a" })
}

/// Given to module and step factories.
pub struct BuildContext<'a> {
    pub name: &'a str,
    pub type_name: &'a str,
    /// Directory of the file that declared the module: relative paths resolve against it.
    pub base_dir: &'a Path,
    /// The module's `dependsOn`, for types that choose among peers by it.
    pub depends_on: &'a [String],
    pub app: &'a Arc<AppState>,
    pub(crate) services: &'a mut Services,
}

impl BuildContext<'_> {
    /// Offers a service under this module's name.
    pub fn provide<T: ServiceKind + ?Sized>(&mut self, service: Arc<T>) {
        self.services.provide(self.name, self.type_name, service);
    }

    /// Offers a service under another name as well (an alias the original's configs use).
    pub fn provide_as<T: ServiceKind + ?Sized>(&mut self, alias: &str, service: Arc<T>) {
        self.services.provide(alias, self.type_name, service);
    }

    /// A service of a module built earlier (one this module depends on).
    pub fn service<T: ServiceKind + ?Sized>(&self, name: &str) -> Result<Arc<T>, ServiceError> {
        self.services.get(name)
    }

    /// Every service of kind `T` built so far (dependencies first), with module names.
    pub fn all<T: ServiceKind + ?Sized>(&self) -> Vec<(&str, Arc<T>)> {
        self.services.all::<T>()
    }

    /// The service a config names, or else the first of its kind. Validation (via
    /// [`CheckContext::choose`]) has made sure an unnamed one is the only one; `missing` says
    /// what is absent when there is none ("there is no message broker").
    pub fn named_or_only<T: ServiceKind + ?Sized>(
        &self,
        name: Option<&str>,
        missing: &str,
    ) -> anyhow::Result<Arc<T>> {
        match name {
            Some(name) => Ok(self.service::<T>(name)?),
            None => self
                .all::<T>()
                .into_iter()
                .map(|(_, service)| service)
                .next()
                .ok_or_else(|| anyhow::anyhow!("{missing}")),
        }
    }
}

/// Given to workflow and trigger types after every module is built.
pub struct WireContext<'a> {
    /// The workflow or trigger key, e.g. `http-admin`.
    pub kind: &'a str,
    /// The whole (validated) configuration, for conventions that look at declarations.
    pub config: &'a AppConfig,
    pub app: &'a Arc<AppState>,
    pub(crate) registry: &'a Registry,
    pub(crate) services: &'a mut Services,
    pub(crate) issues: Vec<ConfigIssue>,
    pub(crate) listeners: Vec<(String, Arc<dyn crate::trigger::Trigger>)>,
}

impl WireContext<'_> {
    /// Something this workflow owns that starts runs from outside (a webhook receiver's
    /// listener): started and stopped with the app's triggers, under `label`.
    pub fn add_listener(
        &mut self,
        label: impl Into<String>,
        listener: Arc<dyn crate::trigger::Trigger>,
    ) {
        self.listeners.push((label.into(), listener));
    }

    /// The validation view of the configuration, to make the same choices validation made.
    pub fn check(&self) -> CheckContext<'_> {
        CheckContext {
            config: self.config,
            registry: self.registry,
            module: None,
        }
    }

    /// A named pipeline (top-level `pipelines:`).
    pub fn pipeline(&self, name: &str) -> Option<Arc<crate::pipeline::Pipeline>> {
        self.app.pipelines().get(name)
    }

    /// Builds a pipeline declared inside this workflow (a route's `steps:`). Problems are
    /// reported under `pointer`, and `None` is returned.
    pub fn build_pipeline(
        &mut self,
        name: &str,
        entry: &wf_config::schema::PipelineEntry,
        pointer: &str,
    ) -> Option<Arc<crate::pipeline::Pipeline>> {
        let base_dir = std::path::PathBuf::from(".");
        match crate::pipeline::build_pipeline(
            name,
            entry,
            self.registry,
            self.services,
            self.app,
            &base_dir,
        ) {
            Ok(pipeline) => Some(pipeline),
            Err(issues) => {
                for mut issue in issues {
                    issue.pointer = format!("{pointer}{}", issue.pointer);
                    self.issues.push(issue);
                }
                None
            }
        }
    }

    /// Makes a pipeline this workflow built (see [`Self::build_pipeline`]) a named pipeline of
    /// the app, which triggers, `step.sub_workflow` and `wf-host run-pipeline` can start.
    pub fn register_pipeline(&mut self, pipeline: Arc<crate::pipeline::Pipeline>) {
        let mut pipelines = (*self.app.pipelines()).clone();
        pipelines.insert(pipeline);
        self.app.set_pipelines(Arc::new(pipelines));
    }

    pub fn service<T: ServiceKind + ?Sized>(&self, name: &str) -> Result<Arc<T>, ServiceError> {
        self.services.get(name)
    }

    pub fn all<T: ServiceKind + ?Sized>(&self) -> Vec<(&str, Arc<T>)> {
        self.services.all::<T>()
    }

    pub fn module_type(&self, name: &str) -> Option<&str> {
        self.services.module_type(name)
    }

    /// Reports a problem at `pointer` (relative to this workflow's config) and lets wiring
    /// continue, so every problem is reported at once.
    pub fn issue(&mut self, issue: ConfigIssue) {
        self.issues.push(issue);
    }
}
