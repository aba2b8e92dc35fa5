//! `step.log`: writes a (templated) message to the log.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Map;
use wf_engine::{
    BuildContext, Category, Described, PipelineContext, Step, StepError, StepOutput, StepType,
    async_trait,
};
use wf_template::Template;

/// Configuration of `step.log`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Severity of the log line.
    #[serde(default)]
    pub level: Level,
    /// The message; may be a template.
    pub message: String,
}

/// Log severities.
#[derive(Debug, Default, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Detail for debugging.
    Debug,
    /// Normal operation (the default).
    #[default]
    Info,
    /// Something unexpected but handled.
    Warn,
    /// A failure.
    Error,
}

pub struct LogType;

impl Described for LogType {
    const NAME: &'static str = "step.log";
    const CATEGORY: Category = Category::Pipeline;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Writes a templated message to the log.";
    type Config = LogConfig;
}

impl StepType for LogType {
    fn build(config: LogConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Step>> {
        Ok(Arc::new(Log {
            name: ctx.name.to_string(),
            level: config.level,
            message: crate::compile_str("message", &config.message)?,
        }))
    }
}

struct Log {
    name: String,
    level: Level,
    message: Template,
}

#[async_trait]
impl Step for Log {
    async fn run(&self, ctx: &PipelineContext) -> Result<StepOutput, StepError> {
        let message = self
            .message
            .render_string(&ctx.scope())
            .map_err(StepError::from)?;
        let run_id = ctx
            .meta
            .get("run_id")
            .and_then(|v| v.as_str())
            .unwrap_or("-");
        match self.level {
            Level::Debug => tracing::debug!(step = %self.name, run_id, "{message}"),
            Level::Info => tracing::info!(step = %self.name, run_id, "{message}"),
            Level::Warn => tracing::warn!(step = %self.name, run_id, "{message}"),
            Level::Error => tracing::error!(step = %self.name, run_id, "{message}"),
        }
        Ok(StepOutput::values(Map::new()))
    }
}
