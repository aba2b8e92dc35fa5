//! Triggers start pipelines from outside events. They start after every module and stop first.

use async_trait::async_trait;

use crate::context::CheckContext;
use crate::module::{StartContext, StopContext};
use crate::registry::ConfigIssue;

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

    /// The issue for this entry at `pointer`, if it names no pipeline or an undeclared one. A
    /// `workflow:` naming something that is not a pipeline (a state machine, ...) is reported
    /// as not implemented.
    pub fn check(&self, ctx: &CheckContext<'_>, pointer: &str) -> Option<ConfigIssue> {
        match self.pipeline_name() {
            None => Some(
                ConfigIssue::new(pointer, "the entry names no pipeline")
                    .help("add `pipeline: <name>`"),
            ),
            Some(name)
                if ctx.config.pipelines.iter().any(|p| p.name == name)
                    || ctx.declared_by_workflow(name) =>
            {
                None
            }
            Some(name)
                if self.pipeline.is_none()
                    && self
                        .workflow
                        .as_deref()
                        .is_some_and(|w| !w.starts_with("pipeline:")) =>
            {
                Some(
                    ConfigIssue::not_implemented(
                        format!("{pointer}/workflow"),
                        format!("starting workflow `{name}` (not a pipeline) from a trigger is not implemented in this build yet"),
                    )
                    .help("point the entry at a pipeline with `pipeline: <name>`"),
                )
            }
            Some(name) => ctx.require_pipeline(pointer, name),
        }
    }
}
