//! `messaging.handler`: logs every message it receives (topic, size and, when it is JSON, its
//! `type`/`eventType`), counts them, and forwards each one to its target topics — the topics in
//! its `targetTopics` and in the `messaging` workflow's `producers[].forwardTo` for it (which
//! the original only printed). That is how the original's example chains
//! (`raw-input → validated-data → ...`) flow from stage to stage.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use schemars::JsonSchema;
use serde::Deserialize;
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType, async_trait,
};

use crate::{MessageBroker, MessageHandler};

/// Configuration of `messaging.handler`. It can also be subscribed to topics by the `messaging`
/// workflow.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoggingHandlerConfig {
    /// A topic this handler subscribes itself to.
    #[serde(default)]
    pub topic: Option<String>,
    /// The broker for `topic`; optional when the application has one.
    #[serde(default)]
    pub broker: Option<String>,
    /// How files in `watchPath` are read: `csv` (header row; values are strings), `json` (an
    /// object or an array of objects) or `jsonl` (an object per line).
    #[serde(default, rename = "inputType")]
    pub input_type: Option<crate::file_input::InputType>,
    /// A directory (relative to the config file) whose new files become messages: each record
    /// is published to the handler's target topics, then the file is renamed `.processed`.
    #[serde(default, rename = "watchPath")]
    pub watch_path: Option<String>,
    /// How often `watchPath` is checked for new files.
    #[serde(default, rename = "pollInterval")]
    #[schemars(regex(pattern = wf_engine::wf_config::duration::DURATION_PATTERN))]
    pub poll_interval: Option<String>,
    /// Topics every received message is published to, on the handler's broker.
    #[serde(default, rename = "targetTopics")]
    pub target_topics: Vec<String>,
    /// A description, as documentation.
    #[serde(default)]
    pub description: Option<String>,
}

pub struct LoggingHandlerType;

impl Described for LoggingHandlerType {
    const NAME: &'static str = "messaging.handler";
    const CATEGORY: Category = Category::Messaging;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Receives messages from the topics the `messaging` workflow subscribes it to, and logs them.";
    type Config = LoggingHandlerConfig;
}

impl ModuleType for LoggingHandlerType {
    fn check(config: &LoggingHandlerConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        match (&config.watch_path, &config.input_type) {
            (Some(_), None) => issues.push(
                ConfigIssue::new("/watchPath", "`watchPath` needs an `inputType`")
                    .help("add `inputType: csv` (or `json`, `jsonl`)"),
            ),
            (None, Some(_)) => issues.push(ConfigIssue::new(
                "/inputType",
                "`inputType` is for files read from `watchPath`, which is not set",
            )),
            _ => {}
        }
        if let Some(interval) = &config.poll_interval
            && let Err(e) = wf_engine::wf_config::duration::parse_duration(interval)
        {
            issues.push(ConfigIssue::new("/pollInterval", e));
        }
        if let Some(topic) = &config.topic {
            issues.extend(crate::check_topic("/topic", topic));
        }
        for (i, topic) in config.target_topics.iter().enumerate() {
            issues.extend(crate::check_topic(&format!("/targetTopics/{i}"), topic));
        }
        if config.topic.is_some() || !config.target_topics.is_empty() {
            issues.extend(crate::choose_broker(config.broker.as_deref(), ctx).err());
        }
        if let Some(name) = ctx.current_module() {
            issues.extend(crate::workflow::forwarding_cycle(ctx, name));
        }
        issues
    }

    fn references(config: &LoggingHandlerConfig, ctx: &CheckContext<'_>) -> Vec<String> {
        match config.topic.is_some() || !config.target_topics.is_empty() {
            true => crate::choose_broker(config.broker.as_deref(), ctx)
                .ok()
                .into_iter()
                .collect(),
            false => Vec::new(),
        }
    }

    fn build(
        config: LoggingHandlerConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        let files = match (&config.watch_path, config.input_type) {
            (Some(dir), Some(format)) => Some(WatchedDir {
                dir: ctx.base_dir.join(dir),
                format,
                poll: match &config.poll_interval {
                    Some(p) => wf_engine::wf_config::duration::parse_duration(p)
                        .map_err(anyhow::Error::msg)?,
                    None => crate::file_input::DEFAULT_POLL,
                },
            }),
            _ => None,
        };
        let handler = Arc::new(LoggingHandler {
            name: ctx.name.to_string(),
            received: AtomicU64::new(0),
            forward: RwLock::default(),
            files,
            poller: std::sync::Mutex::default(),
        });
        ctx.provide::<dyn MessageHandler>(handler.clone());
        ctx.provide::<LoggingHandler>(handler.clone());
        if config.topic.is_some() || !config.target_topics.is_empty() {
            // The broker is built first: it is one of this module's references.
            let broker = match &config.broker {
                Some(name) => ctx.service::<dyn MessageBroker>(name)?,
                None => {
                    // Validation chose: the only broker, or the one in `dependsOn`.
                    let brokers = ctx.all::<dyn MessageBroker>();
                    let preferred = brokers
                        .iter()
                        .find(|(name, _)| ctx.depends_on.iter().any(|d| d == name))
                        .or(brokers.first());
                    preferred
                        .map(|(_, broker)| broker.clone())
                        .ok_or_else(|| anyhow::anyhow!("there is no message broker"))?
                }
            };
            handler.forward_to(&broker, &config.target_topics);
            if let Some(topic) = &config.topic {
                broker.subscribe(topic, ctx.name, handler.clone())?;
            }
        }
        Ok(handler)
    }
}

pub struct LoggingHandler {
    name: String,
    received: AtomicU64,
    /// Where received messages are published next.
    /// Replaced whole when targets are added (at wiring), so each message takes an `Arc`.
    forward: RwLock<Arc<[ForwardTarget]>>,
    /// `watchPath`, when files are an input.
    files: Option<WatchedDir>,
    poller: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct WatchedDir {
    dir: std::path::PathBuf,
    format: crate::file_input::InputType,
    poll: std::time::Duration,
}

impl wf_engine::ServiceKind for LoggingHandler {
    const LABEL: &'static str = "a `messaging.handler`";
}

impl LoggingHandler {
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Adds target topics (on `broker`) that every received message is forwarded to.
    pub fn forward_to(&self, broker: &Arc<dyn MessageBroker>, topics: &[String]) {
        if let Ok(mut forward) = self.forward.write() {
            let mut all = forward.to_vec();
            all.extend(topics.iter().map(|topic| (broker.clone(), topic.clone())));
            *forward = all.into();
        }
    }
}

#[async_trait]
impl MessageHandler for LoggingHandler {
    async fn handle(&self, topic: &str, payload: Bytes) -> anyhow::Result<()> {
        let count = self.received.fetch_add(1, Ordering::Relaxed) + 1;
        let event_type = serde_json::from_slice::<serde_json::Value>(&payload)
            .ok()
            .and_then(|v| {
                v.get("type")
                    .or_else(|| v.get("eventType"))
                    .and_then(|t| t.as_str())
                    .map(str::to_string)
            });
        tracing::info!(handler = %self.name, %topic, bytes = payload.len(), event_type = event_type.as_deref().unwrap_or("-"), count, "message received");
        self.forward(Some(topic), payload).await
    }
}

/// A topic on a broker that received messages are forwarded to.
type ForwardTarget = (Arc<dyn MessageBroker>, String);

impl LoggingHandler {
    /// Publishes `payload` to every target topic except `from` (a handler forwarding to the
    /// topic it reads would feed itself forever).
    async fn forward(&self, from: Option<&str>, payload: Bytes) -> anyhow::Result<()> {
        let targets = self.forward.read().map(|f| f.clone()).unwrap_or_default();
        for (broker, target) in targets.iter() {
            if Some(target.as_str()) == from {
                continue;
            }
            broker
                .publish(target, payload.clone())
                .await
                .map_err(|e| anyhow::anyhow!("forwarding to `{target}`: {e:#}"))?;
        }
        Ok(())
    }

    /// Reads every waiting file of `watchPath` and publishes its records.
    async fn read_files(&self, watched: &WatchedDir) {
        use crate::file_input::{mark, pending_files, read_records};
        for path in pending_files(&watched.dir) {
            let records = match read_records(&path, watched.format) {
                Ok(records) => records,
                Err(error) => {
                    tracing::error!(handler = %self.name, file = %path.display(), %error, "cannot read an input file; renamed .failed");
                    mark(&path, ".failed");
                    continue;
                }
            };
            let count = records.len();
            for record in records {
                let payload = Bytes::from(serde_json::Value::Object(record).to_string());
                if let Err(e) = self.forward(None, payload).await {
                    // Left in place: the whole file is read again at the next poll.
                    tracing::error!(handler = %self.name, file = %path.display(), error = %format!("{e:#}"), "publishing a record failed; the file will be read again");
                    return;
                }
            }
            tracing::info!(handler = %self.name, file = %path.display(), records = count, "input file published");
            mark(&path, ".processed");
        }
    }
}

#[async_trait]
impl Module for LoggingHandler {
    async fn start(&self, ctx: &wf_engine::StartContext) -> anyhow::Result<()> {
        let Some(watched) = &self.files else {
            return Ok(());
        };
        if self.forward.read().map(|f| f.is_empty()).unwrap_or(true) {
            tracing::warn!(handler = %self.name, "files are read from `watchPath`, but the handler has no target topics: add `targetTopics` or a `producers` entry");
        }
        std::fs::create_dir_all(&watched.dir).map_err(|e| {
            anyhow::anyhow!("cannot create `watchPath` {}: {e}", watched.dir.display())
        })?;
        let services = ctx.app.services();
        let name = self.name.clone();
        let poll = watched.poll;
        let poller = tokio::spawn(async move {
            // The handler is looked up each round so the task does not keep the app alive.
            loop {
                let handler = services
                    .as_ref()
                    .and_then(|s| s.get::<LoggingHandler>(&name).ok());
                let Some(handler) = handler else { return };
                if let Some(watched) = &handler.files {
                    handler.read_files(watched).await;
                }
                drop(handler);
                tokio::time::sleep(poll).await;
            }
        });
        if let Ok(mut slot) = self.poller.lock() {
            *slot = Some(poller);
        }
        Ok(())
    }

    async fn stop(&self, _ctx: &wf_engine::StopContext) -> anyhow::Result<()> {
        if let Ok(mut slot) = self.poller.lock()
            && let Some(poller) = slot.take()
        {
            poller.abort();
        }
        Ok(())
    }
}
