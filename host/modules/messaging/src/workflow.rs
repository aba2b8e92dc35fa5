//! The `messaging` workflow: subscribes handler modules to topics on a broker.

use schemars::JsonSchema;
use serde::Deserialize;
use wf_engine::{Category, CheckContext, ConfigIssue, Described, WireContext, WorkflowType};

use crate::{MessageBroker, MessageHandler};

/// Configuration of the `messaging` workflow.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MessagingWorkflowConfig {
    /// The broker module; optional when the application has one.
    #[serde(default)]
    pub broker: Option<String>,
    /// Which handler receives which topic.
    pub subscriptions: Vec<Subscription>,
    /// Services that publish to topics, as documentation.
    #[serde(default)]
    pub producers: Vec<Producer>,
}

/// One topic → handler subscription.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// Topic name.
    pub topic: String,
    /// The module receiving the topic's messages (e.g. a `messaging.handler`).
    pub handler: String,
}

/// A declared publisher, as documentation.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Producer {
    /// Name of the publishing service.
    pub name: String,
    /// Topic it publishes to.
    #[serde(default)]
    pub topic: Option<String>,
    /// Topics it publishes to (the original's spelling for several).
    #[serde(default, rename = "forwardTo")]
    pub forward_to: Vec<String>,
}

pub struct MessagingWorkflow;

impl Described for MessagingWorkflow {
    const NAME: &'static str = "messaging";
    const CATEGORY: Category = Category::Messaging;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Subscribes handler modules to broker topics.";
    type Config = MessagingWorkflowConfig;
}

impl WorkflowType for MessagingWorkflow {
    fn check(config: &MessagingWorkflowConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues: Vec<ConfigIssue> = crate::choose_broker(config.broker.as_deref(), ctx)
            .err()
            .into_iter()
            .collect();
        for (i, s) in config.subscriptions.iter().enumerate() {
            issues.extend(ctx.require_module(
                &format!("/subscriptions/{i}/handler"),
                &s.handler,
                "handler",
            ));
            issues.extend(crate::check_topic(
                &format!("/subscriptions/{i}/topic"),
                &s.topic,
            ));
        }
        issues
    }

    fn configure(config: MessagingWorkflowConfig, ctx: &mut WireContext<'_>) -> anyhow::Result<()> {
        let broker = match &config.broker {
            Some(name) => ctx.service::<dyn MessageBroker>(name)?,
            None => match ctx.all::<dyn MessageBroker>().as_slice() {
                [(_, only)] => only.clone(),
                other => anyhow::bail!("expected one message broker, found {}", other.len()),
            },
        };
        for (i, s) in config.subscriptions.iter().enumerate() {
            match ctx.service::<dyn MessageHandler>(&s.handler) {
                Ok(handler) => broker.subscribe(&s.topic, &s.handler, handler)?,
                Err(e) => ctx.issue(ConfigIssue::new(
                    format!("/subscriptions/{i}/handler"),
                    e.to_string(),
                )),
            }
        }
        Ok(())
    }
}
