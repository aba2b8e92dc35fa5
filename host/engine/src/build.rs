//! Building a validated configuration into an [`App`]: modules in start order, then workflows
//! wired, then triggers configured. Nothing here binds or connects; that is `start`.

use std::collections::HashMap;
use std::sync::Arc;

use wf_config::{Diagnostic, Diagnostics, Origin};

use crate::context::{BuildContext, WireContext};
use crate::module::Module;
use crate::pipeline::{Pipelines, build_pipeline};
use crate::registry::Registry;
use crate::services::Services;
use crate::state::AppState;
use crate::trigger::Trigger;
use crate::validate::{ValidatedConfig, issue_diagnostic};
use wf_config::schema::PipelineEntry;

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

/// Wires one workflow (no trigger) or configures one trigger.
type Configure<'a> = dyn Fn(&mut WireContext<'_>) -> anyhow::Result<Option<Arc<dyn Trigger>>> + 'a;

/// What the host gives an app besides its configuration.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// Where the app keeps what must survive a restart when it declares no database: the run
    /// journal, state machine instances, uploaded components (`wf-host run --data-dir`).
    pub data_dir: Option<std::path::PathBuf>,
    /// This process holds the data directory's lock: no other host uses it.
    pub exclusive: bool,
}

/// Builds every module, wires workflows and configures triggers. All problems are reported
/// together, located at the configuration that caused them.
pub fn build(validated: &ValidatedConfig, registry: &Registry) -> Result<App, Diagnostics> {
    build_with(validated, registry, &BuildOptions::default())
}

/// [`build`] with what the host provides.
pub fn build_with(
    validated: &ValidatedConfig,
    registry: &Registry,
    options: &BuildOptions,
) -> Result<App, Diagnostics> {
    let config = validated.config();
    let types: Arc<[_]> = registry.types().into_iter().cloned().collect();
    let mut state = Arc::new(AppState::new(config.name.clone(), types));
    state.set_data_dir(options.data_dir.clone(), options.exclusive);
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
            depends_on: &decl.depends_on,
            app: &state,
            services: &mut services,
        };
        match (registered.factory)(&decl.config, &mut ctx) {
            Ok(module) => {
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
                    &decl.config_origin,
                )
                .module(&decl.name),
            ),
        }
    }

    // Dependency order, except that modules taking outside traffic (servers) start as late as
    // their dependents allow, and so stop first: nothing is served by a half-started or
    // half-stopped application.
    let position = crate::graph::module_index(config);
    let mut late = vec![false; config.modules.len()];
    for m in &modules {
        if let Some(&i) = position.get(m.name.as_str()) {
            late[i] = m.module.takes_traffic();
        }
    }
    let order = crate::graph::start_order_late(&edges, &late);
    let mut by_index: HashMap<usize, BuiltModule> = modules
        .into_iter()
        .filter_map(|m| position.get(m.name.as_str()).copied().map(|i| (i, m)))
        .collect();
    let modules: Vec<BuiltModule> = order
        .into_iter()
        .filter_map(|i| by_index.remove(&i))
        .collect();

    // The run journal, before the pipelines it records.
    if let Err(diagnostic) = crate::journal::build::journal(config, registry, &services, &state) {
        diagnostics.push(*diagnostic);
    }

    // Named pipelines, before the workflows and triggers that run them.
    let mut pipelines = Pipelines::default();
    for decl in &config.pipelines {
        let Ok(entry) = serde_json::from_value::<PipelineEntry>(decl.value.clone()) else {
            continue; // the application schema reported it
        };
        let base_dir = config
            .documents
            .get(decl.origin.doc.0)
            .map(|d| d.base_dir.clone())
            .unwrap_or_default();
        match build_pipeline(
            &decl.name,
            &entry,
            registry,
            &mut services,
            &state,
            &base_dir,
        ) {
            Ok(pipeline) => pipelines.insert(pipeline),
            Err(issues) => diagnostics.extend(
                issues
                    .into_iter()
                    .map(|issue| issue_diagnostic(config, issue, &decl.origin, None)),
            ),
        }
    }
    let pipelines = Arc::new(pipelines);
    state.set_pipelines(pipelines.clone());

    let wire = |kind: &str,
                services: &mut Services,
                diagnostics: &mut Diagnostics,
                triggers: &mut Vec<BuiltTrigger>,
                origin: &Origin,
                f: &Configure<'_>| {
        let mut ctx = WireContext {
            kind,
            config,
            app: &state,
            registry,
            services,
            issues: Vec::new(),
            listeners: Vec::new(),
        };
        let result = f(&mut ctx);
        triggers.extend(
            std::mem::take(&mut ctx.listeners)
                .into_iter()
                .map(|(label, trigger)| BuiltTrigger { label, trigger }),
        );
        let issues = std::mem::take(&mut ctx.issues);
        diagnostics.extend(
            issues
                .into_iter()
                .map(|issue| issue_diagnostic(config, issue, origin, None)),
        );
        result
    };

    // What starts runs: triggers, and the listeners workflows own (a webhook receiver).
    let mut triggers = Vec::new();

    // Workflows that declare pipelines (`integration`) are wired first, so the others may name
    // those pipelines whatever the file order; otherwise file order.
    let mut sections: Vec<_> = config.workflows.iter().collect();
    sections.sort_by_key(|section| {
        registry
            .workflow(&section.kind)
            .is_none_or(|entry| entry.declared_pipelines(&section.config).is_empty())
    });
    for section in sections {
        let Some(entry) = registry.workflow(&section.kind) else {
            continue;
        };
        let configure = |ctx: &mut WireContext<'_>| {
            (entry.registered.factory)(&section.config, ctx).map(|()| None)
        };
        if let Err(e) = wire(
            &section.kind,
            &mut services,
            &mut diagnostics,
            &mut triggers,
            &section.origin,
            &configure,
        ) {
            diagnostics.push(located(
                Diagnostic::error(
                    "build-failed",
                    format!("workflow `{}` could not be wired: {e:#}", section.label()),
                ),
                &section.origin,
            ));
        }
    }

    // Top-level triggers, then each pipeline's inline `trigger:` in the form its type expects.
    let inline: Vec<(String, String, serde_json::Value, Origin)> = config
        .pipelines
        .iter()
        .filter(|p| pipelines.get(&p.name).is_some())
        .filter_map(|p| {
            let kind = p.value.pointer("/trigger/type")?.as_str()?.to_string();
            let trigger_config = p
                .value
                .pointer("/trigger/config")
                .cloned()
                .unwrap_or(serde_json::Value::Null);
            let config = registry.inline_trigger(&kind, &p.name, trigger_config)?;
            Some((
                format!("{kind} (pipeline `{}`)", p.name),
                kind,
                config,
                p.origin.child("/trigger/config"),
            ))
        })
        .collect();
    let sections = config
        .triggers
        .iter()
        .map(|s| {
            (
                s.label(),
                s.kind.clone(),
                s.config.clone(),
                s.origin.clone(),
            )
        })
        .chain(inline);
    for (label, kind, trigger_config, origin) in sections {
        let Some(registered) = registry.trigger(&kind) else {
            continue;
        };
        let configure =
            |ctx: &mut WireContext<'_>| (registered.factory)(&trigger_config, ctx).map(Some);
        match wire(
            &kind,
            &mut services,
            &mut diagnostics,
            &mut triggers,
            &origin,
            &configure,
        ) {
            Ok(Some(trigger)) => triggers.push(BuiltTrigger { label, trigger }),
            Ok(None) => {}
            Err(e) => diagnostics.push(located(
                Diagnostic::error(
                    "build-failed",
                    format!("trigger `{label}` could not be configured: {e:#}"),
                ),
                &origin,
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
