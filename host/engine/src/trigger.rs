//! Triggers start pipelines from outside events. They start after every module and stop first.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::context::CheckContext;
use crate::module::{StartContext, StopContext};
use crate::pipeline::Pipeline;
use crate::registry::ConfigIssue;
use crate::state::AppState;
use crate::step::Extensions;

#[async_trait]
pub trait Trigger: Send + Sync + 'static {
    async fn start(&self, ctx: &StartContext) -> anyhow::Result<()>;

    async fn stop(&self, _ctx: &StopContext) -> anyhow::Result<()> {
        Ok(())
    }
}

/// What one trigger entry (an HTTP route, a subscription, a scheduled job) starts, in the keys
/// every trigger type shares; flattened into each type's entry.
#[derive(Debug, Default, serde::Deserialize, schemars::JsonSchema)]
pub struct TriggerTarget {
    /// The pipeline to run.
    #[serde(default)]
    pub pipeline: Option<String>,
    /// The original's target: `pipeline:<name>` or a pipeline's name.
    #[serde(default)]
    pub workflow: Option<String>,
    /// The original's action name; kept for its configs, not needed by pipelines.
    #[serde(default)]
    pub action: Option<String>,
    /// Static values added to every run's data (over what the event carries).
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
}

impl TriggerTarget {
    /// The pipeline this entry starts: `pipeline`, else `workflow` without its `pipeline:`.
    pub fn pipeline_name(&self) -> Option<&str> {
        self.pipeline.as_deref().or_else(|| {
            self.workflow
                .as_deref()
                .map(|w| w.strip_prefix("pipeline:").unwrap_or(w))
        })
    }

    /// Whether the entry uses the original's `workflow:` form without `pipeline:`, which may
    /// name a state machine rather than a pipeline.
    fn names_workflow(&self) -> bool {
        self.pipeline.is_none()
            && self
                .workflow
                .as_deref()
                .is_some_and(|w| !w.starts_with("pipeline:"))
    }

    /// The issue for this entry at `pointer`, if it names no pipeline or an undeclared one.
    /// `workflow:` + `action:` may name a state machine definition and one of its
    /// transitions; naming neither a pipeline nor a state machine, or an action the machine
    /// lacks, is a warning (the original's configs do it), as each firing then fails.
    pub fn check(&self, ctx: &CheckContext<'_>, pointer: &str) -> Option<ConfigIssue> {
        let name = match self.pipeline_name() {
            None => {
                return Some(
                    ConfigIssue::new(pointer, "the entry names no pipeline")
                        .help("add `pipeline: <name>`"),
                );
            }
            Some(name) => name,
        };
        if !self.names_workflow() {
            return ctx.require_pipeline(pointer, name);
        }
        if ctx.has_pipeline(name) {
            return None;
        }
        match (ctx.declared_actions(name), self.action.as_deref()) {
            (Some(_), None) => Some(
                ConfigIssue::new(
                    pointer,
                    format!("`{name}` is a state machine: say which transition to fire"),
                )
                .help("add `action: <transition name>`"),
            ),
            (Some(actions), Some(action)) if !actions.iter().any(|a| a == action) => Some(
                ConfigIssue::warning(
                    format!("{pointer}/action"),
                    format!("`{action}` is not a transition of state machine `{name}`; this entry will fail each time it fires"),
                )
                .help(format!("its transitions: {}", actions.join(", "))),
            ),
            (Some(_), Some(_)) => None,
            (None, _) => Some(
                ConfigIssue::warning(
                    format!("{pointer}/workflow"),
                    format!("`{name}` is neither a pipeline nor a state machine of this application; this entry will fail each time it fires"),
                )
                .help("declare it, or point the entry at a pipeline with `pipeline: <name>`"),
            ),
        }
    }

    /// What this entry starts, found among the app's pipelines and action targets. `None`
    /// when it names nothing (validation has reported that).
    pub fn resolve(&self, app: &AppState) -> Option<Dispatch> {
        let name = self.pipeline_name()?;
        if let Some(pipeline) = app.pipelines().get(name) {
            return Some(Dispatch::Pipeline(pipeline));
        }
        self.names_workflow().then(|| Dispatch::Action {
            target: app.action_target(name),
            workflow: name.to_string(),
            action: self.action.clone().unwrap_or_default(),
        })
    }
}

/// A workflow other than a pipeline that triggers can start: a state machine definition,
/// whose actions are its transitions.
#[async_trait]
pub trait ActionTarget: Send + Sync + std::fmt::Debug {
    /// Runs `action` with the event's data; on success, what the action produced (the
    /// instance after the transition).
    async fn run_action(
        &self,
        action: &str,
        data: Map<String, Value>,
    ) -> Result<Value, ActionError>;
}

/// A failed action, with the HTTP status that describes it (400 not allowed, 404 no such
/// instance, 409 conflict, 500 the engine's own failure).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionError {
    pub status: u16,
    pub message: String,
}

impl std::fmt::Display for ActionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ActionError {}

/// What a trigger entry starts.
#[derive(Clone)]
pub enum Dispatch {
    Pipeline(Arc<Pipeline>),
    /// `target` is `None` when nothing of that name exists: each firing fails.
    Action {
        target: Option<Arc<dyn ActionTarget>>,
        workflow: String,
        action: String,
    },
}

impl Dispatch {
    /// `pipeline:<name>` or `workflow:<name>/<action>`, for logs and `inspect`.
    pub fn label(&self) -> String {
        match self {
            Dispatch::Pipeline(p) => format!("pipeline:{}", p.name),
            Dispatch::Action {
                workflow, action, ..
            } => format!("workflow:{workflow}/{action}"),
        }
    }

    /// Starts the pipeline run or the action with `data`; the run's output or the action's
    /// answer.
    pub async fn start(
        &self,
        data: Map<String, Value>,
        extensions: Extensions,
    ) -> Result<Value, ActionError> {
        match self {
            Dispatch::Pipeline(pipeline) => pipeline
                .run(data, extensions)
                .await
                .map(|outcome| Value::Object(outcome.context.current))
                .map_err(|e| ActionError {
                    status: 500,
                    message: format!("pipeline `{}` failed: {e}", pipeline.name),
                }),
            Dispatch::Action {
                target: Some(target),
                action,
                ..
            } => target.run_action(action, data).await,
            Dispatch::Action {
                target: None,
                workflow,
                ..
            } => Err(ActionError {
                status: 404,
                message: format!(
                    "`{workflow}` is neither a pipeline nor a state machine of this application"
                ),
            }),
        }
    }
}
