//! State machines and the resources built on them: `statemachine.engine` (instances kept in
//! the app's database, transitions serialized per instance, across hosts on PostgreSQL), the
//! `statemachine` workflow (definitions, guards, hooks that can veto, auto-transitions),
//! `state.tracker` and `state.connector`, and `api.handler` REST resources.
//!
//! Triggers start transitions by naming a definition and a transition
//! (`workflow: order-workflow`, `action: submit_order`), which the original documented but
//! could not run.

use wf_engine::{Registry, RegistryError};

pub mod definition;
pub mod engine;
pub mod engine_module;
pub mod processing_step;
pub mod resource;
pub mod tracker;
pub mod workflow;

pub use engine::{Instance, SmError, StateMachineEngine};

pub const PLUGIN: &str = "statemachine";

pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    registry
        .register_module::<engine_module::EngineType>()?
        .register_module::<tracker::TrackerType>()?
        .register_module::<tracker::ConnectorType>()?
        .register_module::<resource::ResourceType>()?
        .register_module::<processing_step::ProcessingStepType>()?
        .register_workflow::<workflow::StateMachineWorkflow>()?;
    Ok(())
}
