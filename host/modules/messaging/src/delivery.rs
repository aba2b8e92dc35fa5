//! What every broker does with one delivery: run the handler within a time limit, decide between
//! acknowledging, redelivering and dead-lettering, and build the dead-letter envelope. The
//! brokers differ only in how they wait and acknowledge.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use wf_engine::wf_config::duration::{DURATION_PATTERN, parse_duration};
use wf_engine::wf_config::time::rfc3339_now;

use crate::{MessageBroker, MessageHandler};

/// A message its handler can never process (e.g. not JSON where JSON is required). Returned
/// as the handler's error, it is dead-lettered at once instead of being redelivered.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PoisonMessage(pub String);

/// Delivery settings every broker module accepts (flattened into its config).
#[derive(Debug, Deserialize, JsonSchema)]
pub struct DeliveryConfig {
    /// Longest time a handler may take with one message; past it the attempt counts as failed.
    #[serde(default = "default_delivery_timeout", rename = "deliveryTimeout")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub delivery_timeout: String,
    /// Attempts per message and subscriber, the first included; a handler error or timeout
    /// before the last one redelivers the message after a backoff.
    #[serde(default = "default_max_deliveries", rename = "maxDeliveries")]
    #[schemars(range(min = 1))]
    pub max_deliveries: u32,
    /// First wait before a redelivery; it doubles per attempt (with jitter) up to `30s`.
    #[serde(default = "default_retry_backoff", rename = "retryBackoff")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub retry_backoff: String,
    /// Where messages go that failed their last attempt or could never be processed, as a JSON
    /// envelope `{topic, subscriber, error, attempts, failed_at, payload}` (`payload` is the
    /// message text, or base64 with `payload_base64: true` when it is not UTF-8). Without it,
    /// such messages are logged and counted, then dropped.
    #[serde(default, rename = "deadLetterTopic")]
    pub dead_letter_topic: Option<String>,
}

fn default_delivery_timeout() -> String {
    "30s".to_string()
}

fn default_max_deliveries() -> u32 {
    1
}

fn default_retry_backoff() -> String {
    "100ms".to_string()
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            delivery_timeout: default_delivery_timeout(),
            max_deliveries: default_max_deliveries(),
            retry_backoff: default_retry_backoff(),
            dead_letter_topic: None,
        }
    }
}

const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(30);

/// [`DeliveryConfig`], parsed.
#[derive(Debug, Clone)]
pub struct DeliveryPolicy {
    pub timeout: Duration,
    pub max_deliveries: u32,
    pub retry_backoff: Duration,
    pub dead_letter_topic: Option<String>,
}

impl DeliveryPolicy {
    pub fn from_config(config: &DeliveryConfig) -> anyhow::Result<Self> {
        Ok(DeliveryPolicy {
            timeout: parse_duration(&config.delivery_timeout)
                .map_err(|e| anyhow::anyhow!("`deliveryTimeout`: {e}"))?,
            max_deliveries: config.max_deliveries.max(1),
            retry_backoff: parse_duration(&config.retry_backoff)
                .map_err(|e| anyhow::anyhow!("`retryBackoff`: {e}"))?,
            dead_letter_topic: config.dead_letter_topic.clone(),
        })
    }

    /// One attempt (`attempt` counts from 1) of delivering `payload` (the broker's message
    /// `id`, when it has one) to `handler`.
    pub async fn attempt(
        &self,
        handler: &dyn MessageHandler,
        topic: &str,
        payload: Bytes,
        id: Option<&str>,
        attempt: u32,
    ) -> Outcome {
        let handled = handler.handle_delivery(topic, payload, id);
        let error = match tokio::time::timeout(self.timeout, handled).await {
            Ok(Ok(())) => return Outcome::Handled,
            Ok(Err(e)) if e.downcast_ref::<PoisonMessage>().is_some() => {
                return Outcome::DeadLetter(format!("{e:#}"));
            }
            Ok(Err(e)) => format!("{e:#}"),
            Err(_) => format!("the handler took longer than {:?}", self.timeout),
        };
        if attempt < self.max_deliveries {
            Outcome::Retry {
                after: wf_engine::backoff::exponential_with_jitter(
                    self.retry_backoff,
                    MAX_RETRY_BACKOFF,
                    attempt,
                ),
                error,
            }
        } else {
            Outcome::DeadLetter(error)
        }
    }
}

/// What to do with a message after an attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledge it.
    Handled,
    /// Deliver it again after the wait.
    Retry { after: Duration, error: String },
    /// Give up on it: dead-letter it (when a topic is configured) and acknowledge it.
    DeadLetter(String),
}

/// The dead-letter message for a payload `subscriber` could not process.
pub fn dead_letter_envelope(
    topic: &str,
    subscriber: &str,
    error: &str,
    attempts: u32,
    payload: &[u8],
) -> Bytes {
    let mut envelope = json!({
        "topic": topic,
        "subscriber": subscriber,
        "error": error,
        "attempts": attempts,
        "failed_at": rfc3339_now(),
    });
    match std::str::from_utf8(payload) {
        Ok(text) => envelope["payload"] = json!(text),
        Err(_) => {
            envelope["payload"] = json!(base64::engine::general_purpose::STANDARD.encode(payload));
            envelope["payload_base64"] = json!(true);
        }
    }
    Bytes::from(envelope.to_string())
}

/// How a message ended for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The handler succeeded.
    Handled,
    /// It failed for good and is on the dead-letter topic (or there is none: logged, dropped).
    DeadLettered,
    /// It failed for good and publishing the dead letter failed too: the message must not be
    /// acknowledged.
    Unsettled,
}

/// Delivers one message to one subscriber in this process: every attempt with its backoff,
/// then the dead-letter topic (published on `broker`). Used by brokers that do not redeliver
/// themselves (in-memory, core NATS, Kafka).
#[allow(clippy::too_many_arguments)]
pub async fn deliver_with_retries(
    policy: &DeliveryPolicy,
    broker: &dyn MessageBroker,
    broker_name: &str,
    topic: &str,
    subscriber: &str,
    handler: &dyn MessageHandler,
    payload: Bytes,
    id: Option<&str>,
) -> Settled {
    let mut attempt = 1;
    loop {
        let outcome = policy
            .attempt(handler, topic, payload.clone(), id, attempt)
            .await;
        match outcome {
            Outcome::Handled => return Settled::Handled,
            Outcome::Retry { after, error } => {
                tracing::warn!(broker = %broker_name, %topic, %subscriber, attempt, %error, ?after, "delivery failed; redelivering");
                tokio::time::sleep(after).await;
                attempt += 1;
            }
            Outcome::DeadLetter(error) => {
                let parked = dead_letter(
                    policy,
                    broker,
                    broker_name,
                    topic,
                    subscriber,
                    &error,
                    attempt,
                    &payload,
                )
                .await;
                return if parked {
                    Settled::DeadLettered
                } else {
                    Settled::Unsettled
                };
            }
        }
    }
}

/// Logs a message that could not be delivered and publishes it to the dead-letter topic.
/// False when that publish failed (the caller must then not acknowledge the message).
#[allow(clippy::too_many_arguments)]
pub async fn dead_letter(
    policy: &DeliveryPolicy,
    broker: &dyn MessageBroker,
    broker_name: &str,
    topic: &str,
    subscriber: &str,
    error: &str,
    attempts: u32,
    payload: &[u8],
) -> bool {
    tracing::error!(broker = %broker_name, %topic, %subscriber, attempts, %error, dead_letter_topic = ?policy.dead_letter_topic, "message could not be delivered");
    let Some(dead_letters) = &policy.dead_letter_topic else {
        return true;
    };
    // Never dead-letter the dead-letter topic's own messages into itself.
    if dead_letters == topic {
        return true;
    }
    let envelope = dead_letter_envelope(topic, subscriber, error, attempts, payload);
    // Boxed: publishing may deliver synchronously, which can come back here.
    match Box::pin(broker.publish(dead_letters, envelope)).await {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(broker = %broker_name, %topic, error = %format!("{e:#}"), "dead-lettering failed; the message stays unacknowledged");
            false
        }
    }
}
