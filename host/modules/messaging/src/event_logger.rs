//! `eventlogger.modular`: writes the events published on a broker's topics — by default the
//! run lifecycle events (`workflow.started` … `step.failed`) — to the structured log, and
//! optionally to a JSON-lines file that is rotated by size. An audit trail of what ran,
//! without a pipeline to build.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;
use wf_engine::events::LIFECYCLE_TOPICS;
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType, async_trait,
};

use crate::{MessageBroker, MessageHandler};

/// Configuration of `eventlogger.modular`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventLoggerConfig {
    /// The broker whose topics are logged; optional when the application has one.
    #[serde(default)]
    pub broker: Option<String>,
    /// The topics logged; by default the six run lifecycle events.
    #[serde(default)]
    pub topics: Vec<String>,
    /// The log level of the entries: `error`, `warn`, `info` (default) or `debug`.
    #[serde(default = "default_level")]
    pub level: String,
    /// Also append each event as one JSON line to this file (relative to this config file).
    #[serde(default)]
    pub file: Option<String>,
    /// When the file grows past this, it is renamed to `<file>.1` (replacing an older one) and
    /// a new file is started.
    #[serde(default = "default_max_file_bytes", rename = "maxFileBytes")]
    #[schemars(range(min = 1024))]
    pub max_file_bytes: u64,
}

fn default_level() -> String {
    "info".into()
}
fn default_max_file_bytes() -> u64 {
    10 * 1024 * 1024
}

pub struct EventLoggerType;

impl Described for EventLoggerType {
    const NAME: &'static str = "eventlogger.modular";
    const CATEGORY: Category = Category::Observability;
    const PLUGIN: &'static str = "modular-compat";
    const DESCRIPTION: &'static str = "Logs the events of broker topics (run lifecycle events by default), optionally to a rotated JSON-lines file.";
    type Config = EventLoggerConfig;
}

impl ModuleType for EventLoggerType {
    fn check(config: &EventLoggerConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues: Vec<ConfigIssue> = crate::choose_broker(config.broker.as_deref(), ctx)
            .err()
            .into_iter()
            .collect();
        if !matches!(config.level.as_str(), "error" | "warn" | "info" | "debug") {
            issues.push(ConfigIssue::new(
                "/level",
                format!(
                    "`{}` is not a level (error, warn, info, debug)",
                    config.level
                ),
            ));
        }
        for (i, topic) in config.topics.iter().enumerate() {
            if let Some(issue) = crate::check_topic(&format!("/topics/{i}"), topic) {
                issues.push(issue);
            }
        }
        issues
    }

    fn references(config: &EventLoggerConfig, ctx: &CheckContext<'_>) -> Vec<String> {
        crate::choose_broker(config.broker.as_deref(), ctx)
            .ok()
            .into_iter()
            .collect()
    }

    fn build(
        config: EventLoggerConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        let broker = ctx.named_or_only::<dyn MessageBroker>(
            config.broker.as_deref(),
            "there is no message broker",
        )?;
        let logger = Arc::new(EventLogger {
            name: ctx.name.to_string(),
            level: config.level,
            file: config.file.map(|f| ctx.base_dir.join(f)),
            max_file_bytes: config.max_file_bytes,
            writer: tokio::sync::Mutex::new(()),
        });
        let topics: Vec<String> = if config.topics.is_empty() {
            LIFECYCLE_TOPICS.iter().map(|t| t.to_string()).collect()
        } else {
            config.topics
        };
        for topic in &topics {
            broker.subscribe(topic, &format!("eventlogger:{}", ctx.name), logger.clone())?;
        }
        Ok(logger)
    }
}

pub struct EventLogger {
    name: String,
    level: String,
    file: Option<PathBuf>,
    max_file_bytes: u64,
    /// One writer at a time, so lines never interleave and rotation is not raced.
    writer: tokio::sync::Mutex<()>,
}

impl Module for EventLogger {}

impl EventLogger {
    async fn append(&self, path: &PathBuf, line: &[u8]) -> std::io::Result<()> {
        let _guard = self.writer.lock().await;
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let size = tokio::fs::metadata(path)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        if size > 0 && size + line.len() as u64 > self.max_file_bytes {
            let mut rotated = path.clone().into_os_string();
            rotated.push(".1");
            tokio::fs::rename(path, PathBuf::from(rotated)).await?;
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await?;
        file.write_all(line).await?;
        file.flush().await
    }
}

#[async_trait]
impl MessageHandler for EventLogger {
    async fn handle(&self, topic: &str, payload: Bytes) -> anyhow::Result<()> {
        let event: Value = serde_json::from_slice(&payload)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&payload).into_owned()));
        let text = event.to_string();
        match self.level.as_str() {
            "error" => {
                tracing::error!(target: "wf::events", logger = %self.name, %topic, event = %text, "event")
            }
            "warn" => {
                tracing::warn!(target: "wf::events", logger = %self.name, %topic, event = %text, "event")
            }
            "debug" => {
                tracing::debug!(target: "wf::events", logger = %self.name, %topic, event = %text, "event")
            }
            _ => {
                tracing::info!(target: "wf::events", logger = %self.name, %topic, event = %text, "event")
            }
        }
        if let Some(path) = &self.file {
            let mut line = serde_json::to_vec(&json!({
                "time": wf_engine::wf_config::time::rfc3339_now(),
                "topic": topic,
                "event": event,
            }))?;
            line.push(b'\n');
            // A failed write is a failed delivery: the broker retries or dead-letters it.
            self.append(path, &line)
                .await
                .map_err(|e| anyhow::anyhow!("event log `{}`: {e}", path.display()))?;
        }
        Ok(())
    }
}
