//! wf's WebAssembly component runtime.
//!
//! Components are WebAssembly components built against `wit/plugin.wit`. This crate compiles
//! and caches them ([`Runtime`]), runs them under fuel, time and memory limits with
//! deny-by-default capabilities ([`LoadedComponent`]), keeps the live version of each by name
//! with hot swap and rollback ([`ComponentRegistry`]), and plugs them into pipelines
//! (`step.wasm`, `dynamic.component`, `wasm.components`).

pub mod api;
mod bindings;
pub mod cache;
pub mod capabilities;
pub mod component;
pub mod component_types;
pub mod components_module;
pub mod dynamic_component;
pub mod host;
pub mod limits;
pub mod registry;
pub mod runtime;
pub mod state_store;
pub mod step_wasm;
pub mod trigger_wiring;
pub mod usage;
pub mod watch;

pub use capabilities::Capabilities;
pub use component::{
    CallError, CallInfo, ComponentInfo, ComponentSpec, LoadError, LoadedComponent, StepOutcome,
};
pub use host::HostServices;
pub use limits::{LimitKind, Limits, LimitsConfig, Policy};
pub use runtime::{Runtime, RuntimeConfig};

/// The plugin group of the wasm types (what `requires.plugins` names).
pub const PLUGIN: &str = "wasm";
pub use registry::{
    ComponentRegistry, Expect, ExtraGrant, Grant, InstallError, InstallOutcome, Origin, Slot,
};

/// Registers `wasm.components`, `dynamic.component` and `step.wasm`.
pub fn register(registry: &mut wf_engine::Registry) -> Result<(), wf_engine::RegistryError> {
    registry
        .register_module::<components_module::ComponentsType>()?
        .register_module::<dynamic_component::DynamicComponentType>()?
        .register_step::<step_wasm::WasmStepType>()?;
    Ok(())
}
