//! The `statemachine` workflow: gives an engine its definitions and hooks, makes each
//! definition startable by triggers (`workflow: <definition>`, `action: <transition>`), and
//! feeds the state tracker through `resourceMappings`.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use wf_engine::{Category, CheckContext, ConfigIssue, Described, WireContext, WorkflowType};
use wf_messaging::MessageHandler;

use crate::definition::Definition;
use crate::engine::{DefinitionTarget, Hook, HookAction, StateMachineEngine, TransitionProcessor};
use crate::tracker::{Mapping, StateTracker};

/// Configuration of the `statemachine` workflow.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateMachineWorkflowConfig {
    /// The `statemachine.engine` module; optional when the application has one.
    #[serde(default)]
    pub engine: Option<String>,
    /// The state machines.
    pub definitions: Vec<Definition>,
    /// Handlers run before matching transitions commit; an error vetoes the transition.
    #[serde(default)]
    pub hooks: Vec<HookConfig>,
    /// Which resources the state tracker follows (default: one per definition, named after
    /// it, keyed by instance id).
    #[serde(default, rename = "resourceMappings")]
    pub resource_mappings: Vec<ResourceMapping>,
}

/// One hook.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// Only instances of this definition (default: all).
    #[serde(default, rename = "workflowType")]
    pub workflow_type: Option<String>,
    /// Only these transitions (default: all).
    #[serde(default)]
    pub transitions: Vec<String>,
    /// Only transitions leaving these states (default: all).
    #[serde(default, rename = "fromStates")]
    pub from_states: Vec<String>,
    /// Only transitions entering these states (default: all).
    #[serde(default, rename = "toStates")]
    pub to_states: Vec<String>,
    /// A module that receives `{workflowId, instanceId, transition, fromState, toState, data}`
    /// (a `messaging.handler`, a webhook sender, ...).
    #[serde(default)]
    pub handler: Option<String>,
    /// A pipeline run with the same data; a failed run vetoes the transition.
    #[serde(default)]
    pub pipeline: Option<String>,
}

/// One resource type the tracker follows.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceMapping {
    /// The tracker's name for the resources (`orders`).
    #[serde(rename = "resourceType")]
    pub resource_type: String,
    /// The engine whose instances it follows.
    #[serde(rename = "stateMachine")]
    pub state_machine: String,
    /// Instance data key holding the resource id (default: the instance id).
    #[serde(default, rename = "instanceIDKey")]
    pub instance_id_key: Option<String>,
}

pub struct StateMachineWorkflow;

impl Described for StateMachineWorkflow {
    const NAME: &'static str = "statemachine";
    const CATEGORY: Category = Category::StateMachine;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "Declares state machines (states, transitions, guards, hooks) on a `statemachine.engine`.";
    type Config = StateMachineWorkflowConfig;
}

fn choose_engine(
    config: &StateMachineWorkflowConfig,
    ctx: &CheckContext<'_>,
) -> Result<String, ConfigIssue> {
    ctx.choose(
        config.engine.as_deref(),
        "engine",
        "state machine engine",
        &["statemachine.engine"],
    )
}

impl WorkflowType for StateMachineWorkflow {
    fn check(config: &StateMachineWorkflowConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues: Vec<ConfigIssue> = choose_engine(config, ctx).err().into_iter().collect();
        let mut seen = std::collections::HashSet::new();
        for (i, definition) in config.definitions.iter().enumerate() {
            if !seen.insert(definition.name.as_str()) {
                issues.push(ConfigIssue::new(
                    format!("/definitions/{i}/name"),
                    format!("two definitions are named `{}`", definition.name),
                ));
            }
            for mut issue in definition.issues() {
                issue.pointer = format!("/definitions/{i}{}", issue.pointer);
                issues.push(issue);
            }
        }
        for (i, hook) in config.hooks.iter().enumerate() {
            let at = format!("/hooks/{i}");
            match (&hook.handler, &hook.pipeline) {
                (Some(handler), None) => issues.extend(ctx.require_module(
                    &format!("{at}/handler"),
                    handler,
                    "hook handler",
                )),
                (None, Some(pipeline)) => {
                    issues.extend(ctx.require_pipeline(&format!("{at}/pipeline"), pipeline))
                }
                _ => issues.push(ConfigIssue::new(
                    &at,
                    "a hook needs exactly one of `handler` and `pipeline`",
                )),
            }
            if let Some(t) = &hook.workflow_type
                && !config.definitions.iter().any(|d| &d.name == t)
            {
                issues.push(ConfigIssue::new(
                    format!("{at}/workflowType"),
                    format!("no definition named `{t}`"),
                ));
            }
        }
        issues
    }

    fn declared_actions(config: &StateMachineWorkflowConfig) -> Vec<(String, Vec<String>)> {
        config
            .definitions
            .iter()
            .map(|d| (d.name.clone(), d.transitions.keys().cloned().collect()))
            .collect()
    }

    fn configure(
        config: StateMachineWorkflowConfig,
        ctx: &mut WireContext<'_>,
    ) -> anyhow::Result<()> {
        let engine_name =
            choose_engine(&config, &ctx.check()).map_err(|issue| anyhow::anyhow!(issue.message))?;
        let engine = ctx.service::<StateMachineEngine>(&engine_name)?;
        for definition in &config.definitions {
            engine.add_definition(definition.clone())?;
            ctx.app.add_action_target(
                &definition.name,
                Arc::new(DefinitionTarget {
                    engine: engine.clone(),
                    workflow_type: definition.name.clone(),
                }),
            );
        }
        for (i, hook) in config.hooks.into_iter().enumerate() {
            let (name, action) = match (&hook.handler, &hook.pipeline) {
                (Some(handler), _) => (
                    handler.clone(),
                    match ctx.service::<dyn TransitionProcessor>(handler) {
                        Ok(processor) => HookAction::Processor(processor),
                        Err(_) => HookAction::Handler(ctx.service::<dyn MessageHandler>(handler)?),
                    },
                ),
                (None, Some(pipeline)) => match ctx.pipeline(pipeline) {
                    Some(p) => (format!("pipeline:{pipeline}"), HookAction::Pipeline(p)),
                    None => {
                        ctx.issue(ConfigIssue::new(
                            format!("/hooks/{i}/pipeline"),
                            format!("no pipeline named `{pipeline}`"),
                        ));
                        continue;
                    }
                },
                (None, None) => continue,
            };
            engine.add_hook(Hook {
                name,
                workflow_type: hook.workflow_type,
                transitions: hook.transitions,
                from_states: hook.from_states,
                to_states: hook.to_states,
                action,
            });
        }
        if let Some((_, tracker)) = ctx.all::<StateTracker>().into_iter().next() {
            let mappings: Vec<(String, String, Option<String>)> =
                if config.resource_mappings.is_empty() {
                    config
                        .definitions
                        .iter()
                        .map(|d| (d.name.clone(), engine_name.clone(), None))
                        .collect()
                } else {
                    config
                        .resource_mappings
                        .into_iter()
                        .map(|m| (m.resource_type, m.state_machine, m.instance_id_key))
                        .collect()
                };
            for (resource_type, state_machine, id_key) in mappings {
                engine.add_listener(Arc::new(Mapping {
                    tracker: tracker.clone(),
                    resource_type,
                    engine: state_machine,
                    id_key,
                }));
            }
        }
        Ok(())
    }
}
