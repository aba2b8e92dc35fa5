//! The `messaging` workflow: subscribes handler modules to topics on a broker.

use schemars::JsonSchema;
use serde::Deserialize;
use wf_engine::{Category, CheckContext, ConfigIssue, Described, WireContext, WorkflowType};

use crate::handler::LoggingHandler;
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

/// A declared publisher. When `name` is a `messaging.handler`, every message it receives is
/// forwarded to these topics; other modules are listed as documentation.
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
        // The same choice validation made.
        let broker_name = crate::choose_broker(config.broker.as_deref(), &ctx.check())
            .map_err(|issue| anyhow::anyhow!(issue.message))?;
        let broker = ctx.service::<dyn MessageBroker>(&broker_name)?;
        for (i, s) in config.subscriptions.iter().enumerate() {
            match ctx.service::<dyn MessageHandler>(&s.handler) {
                Ok(handler) => broker.subscribe(&s.topic, &s.handler, handler)?,
                Err(e) => ctx.issue(ConfigIssue::new(
                    format!("/subscriptions/{i}/handler"),
                    e.to_string(),
                )),
            }
        }
        for producer in &config.producers {
            if let Ok(handler) = ctx.service::<LoggingHandler>(&producer.name) {
                let topics: Vec<String> = producer
                    .topic
                    .iter()
                    .chain(&producer.forward_to)
                    .cloned()
                    .collect();
                handler.forward_to(&broker, &topics);
            }
        }
        Ok(())
    }
}

/// Handlers forward what they receive, so a topic that leads back to itself through
/// subscriptions and forwarding would circulate every message forever: refuse it. The whole
/// app counts — every `messaging` workflow's subscriptions and producers, and each
/// `messaging.handler`'s own `topic` and `targetTopics` — so the one check finds cycles that
/// span both. Reported once, at the first handler (in declaration order) on the cycle: the
/// issue for `handler`, if it is that one.
pub(crate) fn forwarding_cycle(ctx: &CheckContext<'_>, handler: &str) -> Option<ConfigIssue> {
    use std::collections::{BTreeMap, BTreeSet};
    let handlers: BTreeSet<&str> = ctx
        .modules_of_type(&["messaging.handler"])
        .into_iter()
        .collect();
    // handler → topics it reads, and topics it forwards to.
    let mut reads: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut forwards: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for module in &ctx.config.modules {
        if module.type_name != "messaging.handler" {
            continue;
        }
        let name = module.name.clone();
        if let Some(topic) = module.config.get("topic").and_then(|t| t.as_str()) {
            reads
                .entry(name.clone())
                .or_default()
                .insert(topic.to_string());
        }
        let targets = module.config.get("targetTopics").and_then(|t| t.as_array());
        for target in targets.into_iter().flatten().filter_map(|t| t.as_str()) {
            forwards
                .entry(name.clone())
                .or_default()
                .insert(target.to_string());
        }
    }
    for workflow in ctx
        .config
        .workflows
        .iter()
        .filter(|w| w.kind == "messaging")
    {
        let Ok(config) = serde_json::from_value::<MessagingWorkflowConfig>(workflow.config.clone())
        else {
            continue; // the schema reports it
        };
        for s in config.subscriptions {
            reads.entry(s.handler).or_default().insert(s.topic);
        }
        for p in config.producers {
            if handlers.contains(p.name.as_str()) {
                let entry = forwards.entry(p.name).or_default();
                entry.extend(p.topic);
                entry.extend(p.forward_to);
            }
        }
    }
    // topic → topics its messages reach next.
    let mut next: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (handler, topics) in &reads {
        for topic in topics {
            for target in forwards.get(handler).into_iter().flatten() {
                if target != topic {
                    next.entry(topic.as_str())
                        .or_default()
                        .insert(target.as_str());
                }
            }
        }
    }
    fn visit<'a>(
        topic: &'a str,
        next: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(at) = path.iter().position(|t| *t == topic) {
            let mut cycle = path[at..].to_vec();
            cycle.push(topic);
            return Some(cycle);
        }
        if !done.insert(topic) {
            return None;
        }
        path.push(topic);
        for target in next.get(topic).into_iter().flatten() {
            if let Some(cycle) = visit(target, next, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for topic in next.keys() {
        if let Some(cycle) = visit(topic, &next, &mut Vec::new(), &mut done) {
            let on_cycle = |h: &str| {
                let touches = |set: Option<&BTreeSet<String>>| {
                    set.into_iter()
                        .flatten()
                        .any(|t| cycle.contains(&t.as_str()))
                };
                touches(reads.get(h)) && touches(forwards.get(h))
            };
            let first = ctx
                .config
                .modules
                .iter()
                .map(|m| m.name.as_str())
                .find(|m| handlers.contains(m) && on_cycle(m));
            if first != Some(handler) {
                return None;
            }
            return Some(
                ConfigIssue::new(
                    "",
                    format!(
                        "messages would circulate forever: {}",
                        cycle.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(" → ")
                    ),
                )
                .help("remove one of the forwarding topics (`forwardTo`, `targetTopics`) that closes the loop"),
            );
        }
    }
    None
}
