//! The contract of a pipeline step. The executor that runs steps lives with pipelines.

use async_trait::async_trait;
use serde_json::{Map, Value};

/// The data a pipeline run carries from step to step (the original's `PipelineContext`).
#[derive(Clone, Debug, Default)]
pub struct PipelineContext {
    /// The data the run was started with.
    pub trigger: Map<String, Value>,
    /// Each finished step's output, by step name.
    pub steps: Map<String, Value>,
    /// Run metadata: pipeline name, start time, ...
    pub meta: Map<String, Value>,
    /// The working map: starts as the trigger data, each step's output is merged over it.
    pub current: Map<String, Value>,
}

/// Where the run goes after a step.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Next {
    /// The following step.
    #[default]
    Continue,
    /// The named step.
    Jump(String),
    /// End the run successfully.
    Stop,
}

#[derive(Clone, Debug, Default)]
pub struct StepOutput {
    pub values: Map<String, Value>,
    pub next: Next,
}

#[async_trait]
pub trait Step: Send + Sync + 'static {
    async fn run(&self, ctx: &PipelineContext) -> anyhow::Result<StepOutput>;
}
