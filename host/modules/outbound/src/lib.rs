//! Outbound integration: `webhook.sender` (signed deliveries, retries, durable dead letters),
//! `notification.slack`, the `integration` workflow (HTTP connectors and the calls to them,
//! webhook receivers) and `workflow.registry`, its catalogue.

use wf_engine::{Registry, RegistryError};

pub mod dead_letters;
pub mod integration;
pub mod integration_call;
pub mod signature;
pub mod slack;
pub mod transform_expr;
pub mod webhook_receiver;
pub mod webhook_sender;
pub mod workflow_registry;

pub const PLUGIN: &str = "messaging";

pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    registry
        .register_module::<webhook_sender::WebhookSenderType>()?
        .register_module::<slack::SlackNotifierType>()?
        .register_module::<workflow_registry::WorkflowRegistryType>()?
        .register_workflow::<integration::IntegrationWorkflow>()?;
    Ok(())
}
