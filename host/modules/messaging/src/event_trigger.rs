//! The `event` and `eventbus` triggers: messages on a topic start a pipeline.
//!
//! ```yaml
//! triggers:
//!   event:
//!     subscriptions:
//!       - {topic: orders, event: order.created, pipeline: fulfil, params: {source: shop}}
//! pipelines:
//!   audit:
//!     trigger: {type: event, config: {topic: workflow.failed}}
//! ```
//!
//! The message must be a JSON object; its fields, then `params`, become the run's trigger data.
//! With `event`, only messages whose `type` (or `eventType`) equals it start a run. A message
//! that is not a JSON object can never start a run: it is counted, logged with its topic and
//! handed to the broker's dead-letter topic. A run started by a lifecycle event produces no
//! lifecycle events itself, so a pipeline listening to `workflow.completed` cannot feed itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use wf_engine::events::{LIFECYCLE_TOPICS, QuietRun};
use wf_engine::journal::{IdempotencyRef, Journal, KeyClaim, RunId, RunOptions, RunTrigger};
use wf_engine::{
    Category, CheckContext, ConfigIssue, Described, Dispatch, Extensions, StartContext, Trigger,
    TriggerType, WireContext, async_trait,
};

use crate::{MessageBroker, MessageHandler, PoisonMessage};

/// Configuration of the `event` and `eventbus` triggers.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventTriggerConfig {
    /// The broker for every subscription that names none; optional when the app has one.
    #[serde(default)]
    pub broker: Option<String>,
    /// Topics that start pipelines.
    pub subscriptions: Vec<EventSubscription>,
}

/// One topic → pipeline subscription.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventSubscription {
    /// The topic to listen to.
    pub topic: String,
    /// Only messages whose `type` or `eventType` field equals this start a run.
    #[serde(default)]
    pub event: Option<String>,
    /// What the entry starts: `pipeline` (or the original's `workflow`, `action`) and `params`.
    #[serde(flatten)]
    pub target: wf_engine::TriggerTarget,
    /// Acknowledge the message as soon as the run starts instead of when it succeeds. A failing
    /// run is then only logged; otherwise it makes the broker redeliver the message. At most
    /// 256 such runs go at once per subscription; more wait (back-pressure on the broker).
    #[serde(default, rename = "async")]
    pub run_async: bool,
    /// This subscription's broker, over the trigger's `broker`.
    #[serde(default)]
    pub broker: Option<String>,
    /// The subscriber name: names the durable consumer (NATS) or consumer group (Kafka), so
    /// keep it stable across restarts. Defaults to `pipeline:<pipeline>`.
    #[serde(default)]
    pub name: Option<String>,
}

macro_rules! event_trigger_type {
    ($type:ident, $name:literal, $description:literal) => {
        pub struct $type;

        impl Described for $type {
            const NAME: &'static str = $name;
            const CATEGORY: Category = Category::Messaging;
            const PLUGIN: &'static str = crate::PLUGIN;
            const DESCRIPTION: &'static str = $description;
            type Config = EventTriggerConfig;
        }

        impl TriggerType for $type {
            fn check(config: &EventTriggerConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
                check(config, ctx)
            }

            fn configure(
                config: EventTriggerConfig,
                ctx: &mut WireContext<'_>,
            ) -> anyhow::Result<Arc<dyn Trigger>> {
                configure(config, ctx)
            }

            fn inline(pipeline: &str, config: Value) -> Value {
                inline(pipeline, config)
            }
        }
    };
}

event_trigger_type!(
    EventTriggerType,
    "event",
    "Starts a pipeline for each JSON message on a topic, optionally only for one event type."
);
event_trigger_type!(
    EventBusTriggerType,
    "eventbus",
    "The `event` trigger under the original's event-bus name."
);

fn check(config: &EventTriggerConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    for (i, s) in config.subscriptions.iter().enumerate() {
        let at = |suffix: &str| format!("/subscriptions/{i}{suffix}");
        issues.extend(crate::check_topic(&at("/topic"), &s.topic));
        issues.extend(s.target.check(ctx, &at("")));
        if let Err(mut issue) =
            crate::choose_broker(s.broker.as_deref().or(config.broker.as_deref()), ctx)
        {
            if s.broker.is_some() {
                issue.pointer = at(&issue.pointer);
            }
            issues.push(issue);
        }
    }
    issues
}

fn configure(
    config: EventTriggerConfig,
    ctx: &mut WireContext<'_>,
) -> anyhow::Result<Arc<dyn Trigger>> {
    for (i, s) in config.subscriptions.into_iter().enumerate() {
        let broker_name = crate::choose_broker(
            s.broker.as_deref().or(config.broker.as_deref()),
            &ctx.check(),
        )
        .map_err(|issue| anyhow::anyhow!(issue.message))?;
        let broker = ctx.service::<dyn MessageBroker>(&broker_name)?;
        let Some(dispatch) = s.target.resolve(ctx.app) else {
            ctx.issue(ConfigIssue::new(
                format!("/subscriptions/{i}"),
                "the subscription names no pipeline or workflow",
            ));
            continue;
        };
        let label = dispatch.label();
        let subscriber = s.name.clone().unwrap_or_else(|| label.clone());
        let handler = Arc::new(EventHandler {
            quiet: LIFECYCLE_TOPICS.contains(&s.topic.as_str()),
            dispatch,
            label,
            event: s.event,
            params: s.target.params,
            run_async: s.run_async,
            rejected: AtomicU64::new(0),
            async_runs: Arc::new(tokio::sync::Semaphore::new(MAX_ASYNC_RUNS)),
        });
        broker.subscribe(&s.topic, &subscriber, handler)?;
    }
    Ok(Arc::new(EventTrigger))
}

/// `trigger: {type: event, config: {topic, event, params, async, broker}}` → one subscription.
fn inline(pipeline: &str, config: Value) -> Value {
    let mut subscription = match config {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    subscription.insert("pipeline".into(), Value::String(pipeline.to_string()));
    Value::Object(Map::from_iter([(
        "subscriptions".to_string(),
        Value::Array(vec![Value::Object(subscription)]),
    )]))
}

/// The subscriptions live on the brokers; the trigger has nothing to start or stop.
struct EventTrigger;

#[async_trait]
impl Trigger for EventTrigger {
    async fn start(&self, _: &StartContext) -> anyhow::Result<()> {
        Ok(())
    }
}

struct EventHandler {
    dispatch: Dispatch,
    /// `pipeline:<name>` or `workflow:<name>/<action>`, for logs.
    label: String,
    event: Option<String>,
    params: Map<String, Value>,
    run_async: bool,
    /// The topic carries lifecycle events: runs it starts must not emit any.
    quiet: bool,
    /// Messages that were not JSON objects.
    rejected: AtomicU64,
    /// Bounds the runs `async: true` has going at once.
    async_runs: Arc<tokio::sync::Semaphore>,
}

const MAX_ASYNC_RUNS: usize = 256;

impl EventHandler {
    /// Claims message `id` for the run about to start: false when a run already handled it
    /// (the broker delivered it again); an error, for redelivery, while one is handling it.
    async fn claim(
        &self,
        journal: &Journal,
        topic: &str,
        id: &str,
        payload: &[u8],
        extensions: &mut Extensions,
    ) -> anyhow::Result<bool> {
        let RunId(run_id) = RunId::fresh();
        let scope = format!("message {topic} {}", self.label);
        let fingerprint = wf_engine::journal::fingerprint(&[payload]);
        let expires = wf_engine::wf_config::time::unix_millis_now() + MESSAGE_ID_TTL_MS;
        let claim = journal
            .store()
            .claim_key(&scope, id, &fingerprint, &run_id, expires)
            .await?;
        match claim {
            KeyClaim::Done { .. } => {
                tracing::debug!(%topic, message_id = %id, target = %self.label, "a message already handled came again; acknowledged without a run");
                Ok(false)
            }
            KeyClaim::Running { run_id } => Err(anyhow::anyhow!(
                "message `{id}` is being handled by run {run_id}; it is redelivered later"
            )),
            // The broker reused an id for another message: not a repeat.
            KeyClaim::Mismatch => Ok(true),
            KeyClaim::Claimed => {
                extensions.insert(RunId(run_id));
                extensions.insert(RunOptions {
                    durable: false,
                    idempotency: Some(IdempotencyRef {
                        scope,
                        key: id.to_string(),
                    }),
                });
                Ok(true)
            }
        }
    }
}

/// How long a handled message's id is remembered, so a redelivery does not run again.
const MESSAGE_ID_TTL_MS: i64 = 24 * 3600 * 1000;

#[async_trait]
impl MessageHandler for EventHandler {
    async fn handle(&self, topic: &str, payload: Bytes) -> anyhow::Result<()> {
        self.handle_delivery(topic, payload, None).await
    }

    async fn handle_delivery(
        &self,
        topic: &str,
        payload: Bytes,
        id: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut data = match serde_json::from_slice::<Value>(&payload) {
            Ok(Value::Object(map)) => map,
            parsed => {
                let rejected = self.rejected.fetch_add(1, Ordering::Relaxed) + 1;
                let why = match parsed {
                    Ok(_) => "is JSON but not an object".to_string(),
                    Err(e) => format!("is not JSON ({e})"),
                };
                tracing::warn!(%topic, target = %self.label, rejected, "a message {why}; it cannot start a run");
                return Err(PoisonMessage(format!(
                    "the message on `{topic}` {why}; `{}` needs a JSON object",
                    self.label
                ))
                .into());
            }
        };
        if let Some(wanted) = &self.event {
            let kind = data
                .get("type")
                .or_else(|| data.get("eventType"))
                .and_then(Value::as_str);
            if kind != Some(wanted.as_str()) {
                return Ok(());
            }
        }
        for (k, v) in &self.params {
            data.insert(k.clone(), v.clone());
        }
        let mut extensions = Extensions::default();
        if self.quiet {
            extensions.insert(QuietRun);
        }
        if let Dispatch::Pipeline(pipeline) = &self.dispatch
            && let Some(journal) = pipeline.journal()
        {
            extensions.insert(RunTrigger {
                kind: "event".into(),
                source: topic.to_string(),
                request: None,
            });
            if let Some(id) = id
                && !self
                    .claim(journal, topic, id, &payload, &mut extensions)
                    .await?
            {
                return Ok(());
            }
        }
        if self.run_async {
            let dispatch = self.dispatch.clone();
            let label = self.label.clone();
            let topic = topic.to_string();
            let permit = self.async_runs.clone().acquire_owned().await?;
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = dispatch.start(data, extensions).await {
                    tracing::error!(%topic, target = %label, error = %e, "a run started by a message failed");
                }
            });
            return Ok(());
        }
        self.dispatch
            .start(data, extensions)
            .await
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.label))
    }
}
