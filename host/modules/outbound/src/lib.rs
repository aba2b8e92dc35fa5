//! Outbound integration: `webhook.sender` (signed deliveries, retries, durable dead letters),
//! `notification.slack`, and the `integration` workflow (HTTP connectors and the calls to them).

use wf_engine::{Registry, RegistryError};

pub mod dead_letters;
pub mod integration;
pub mod slack;
pub mod webhook_sender;

pub const PLUGIN: &str = "messaging";

pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    registry
        .register_module::<webhook_sender::WebhookSenderType>()?
        .register_module::<slack::SlackNotifierType>()?
        .register_workflow::<integration::IntegrationWorkflow>()?;
    Ok(())
}
