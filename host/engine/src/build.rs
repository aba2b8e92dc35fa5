//! Building a validated configuration into an [`App`]: modules in start order, then workflows
//! wired, then triggers configured. Nothing here binds or connects; that is `start`.

use std::sync::Arc;

use wf_config::{Diagnostic, Diagnostics, Origin};

use crate::context::{BuildContext, WireContext};
use crate::module::Module;
use crate::registry::Registry;
use crate::services::Services;
use crate::state::{AppState, ModuleInfo};
use crate::trigger::Trigger;
use crate::validate::{ValidatedConfig, issue_diagnostic};

pub(crate) struct BuiltModule {
    pub name: String,
    pub type_name: String,
    pub module: Arc<dyn Module>,
}

pub(crate) struct BuiltTrigger {
    pub label: String,
    pub trigger: Arc<dyn Trigger>,
}

/// A built application, ready to start.
pub struct App {
    pub(crate) state: Arc<AppState>,
    pub(crate) modules: Vec<BuiltModule>,
    pub(crate) triggers: Vec<BuiltTrigger>,
    pub(crate) services: Arc<Services>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("modules", &self.start_order())
            .field(
                "triggers",
                &self.triggers.iter().map(|t| &t.label).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl App {
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    pub fn services(&self) -> &Services {
        &self.services
    }

    /// `(name, type)` of every module, in the order they start.
    pub fn start_order(&self) -> Vec<(&str, &str)> {
        self.modules
            .iter()
            .map(|m| (m.name.as_str(), m.type_name.as_str()))
            .collect()
    }

    pub fn trigger_labels(&self) -> Vec<&str> {
        self.triggers.iter().map(|t| t.label.as_str()).collect()
    }
}

/// Builds every module, wires workflows and configures triggers. All problems are reported
/// together, located at the configuration that caused them.
pub fn build(validated: &ValidatedConfig, registry: &Registry) -> Result<App, Diagnostics> {
    let config = validated.config();
    let types: Arc<[_]> = registry.types().into_iter().cloned().collect();
    let state = Arc::new(AppState::new(config.name.clone(), types));
    let mut services = Services::default();
    let mut diagnostics = Diagnostics::default();
    let located = |d: Diagnostic, origin: &Origin| config.diagnostic_at(d, origin);

    let mut modules = Vec::with_capacity(config.modules.len());
    let edges = crate::graph::dependency_edges(config, registry);
    for i in crate::graph::start_order(&edges) {
        let decl = &config.modules[i];
        let Some(registered) = registry.module(&decl.type_name) else {
            continue;
        };
        services.declare(&decl.name, &decl.type_name);
        let mut ctx = BuildContext {
            name: &decl.name,
            type_name: &decl.type_name,
            base_dir: &decl.base_dir,
            app: &state,
            services: &mut services,
        };
        match (registered.factory)(&decl.config, &mut ctx) {
            Ok(module) => {
                state.add_module(ModuleInfo {
                    name: decl.name.clone(),
                    type_name: decl.type_name.clone(),
                });
                modules.push(BuiltModule {
                    name: decl.name.clone(),
                    type_name: decl.type_name.clone(),
                    module,
                });
            }
            Err(e) => diagnostics.push(
                located(
                    Diagnostic::error(
                        "build-failed",
                        format!(
                            "module `{}` (`{}`) could not be built: {e:#}",
                            decl.name, decl.type_name
                        ),
                    ),
                    &decl.origin.child("/config"),
                )
                .module(&decl.name),
            ),
        }
    }

    for section in &config.workflows {
        let Some(entry) = registry.workflow(&section.kind) else {
            continue;
        };
        let mut ctx = WireContext {
            kind: &section.kind,
            config,
            app: &state,
            services: &mut services,
            issues: Vec::new(),
        };
        let result = (entry.registered.factory)(&section.config, &mut ctx);
        let issues = std::mem::take(&mut ctx.issues);
        diagnostics.extend(
            issues
                .into_iter()
                .map(|issue| issue_diagnostic(config, issue, &section.origin, None)),
        );
        if let Err(e) = result {
            diagnostics.push(located(
                Diagnostic::error(
                    "build-failed",
                    format!("workflow `{}` could not be wired: {e:#}", section.label()),
                ),
                &section.origin,
            ));
        }
    }

    let mut triggers = Vec::new();
    for section in &config.triggers {
        let Some(registered) = registry.trigger(&section.kind) else {
            continue;
        };
        let mut ctx = WireContext {
            kind: &section.kind,
            config,
            app: &state,
            services: &mut services,
            issues: Vec::new(),
        };
        let result = (registered.factory)(&section.config, &mut ctx);
        let issues = std::mem::take(&mut ctx.issues);
        diagnostics.extend(
            issues
                .into_iter()
                .map(|issue| issue_diagnostic(config, issue, &section.origin, None)),
        );
        match result {
            Ok(trigger) => triggers.push(BuiltTrigger {
                label: section.label(),
                trigger,
            }),
            Err(e) => diagnostics.push(located(
                Diagnostic::error(
                    "build-failed",
                    format!(
                        "trigger `{}` could not be configured: {e:#}",
                        section.label()
                    ),
                ),
                &section.origin,
            )),
        }
    }

    if diagnostics.has_errors() {
        return Err(diagnostics.sorted());
    }
    let services = Arc::new(services);
    state.set_services(Some(services.clone()));
    Ok(App {
        state,
        modules,
        triggers,
        services,
    })
}
