//! The wf engine: the registry of types, validation, building an application from a validated
//! configuration, typed services between modules, and the start/stop lifecycle.
//!
//! ```text
//! Loaded ──validate──▶ ValidatedConfig ──build──▶ App ──start──▶ RunningApp ──stop
//! ```

pub mod backoff;
pub mod build;
pub mod catalogue;
pub mod context;
pub mod events;
pub mod graph;
pub mod journal;
pub mod lifecycle;
pub mod module;
pub mod pipeline;
pub mod registry;
pub mod secrets;
pub mod services;
pub mod state;
pub mod step;
pub mod trace;
pub mod trigger;
pub mod validate;

pub use build::{App, BuildOptions, build, build_with};
pub use context::{BuildContext, CheckContext, WireContext};
pub use lifecycle::{RunningApp, StartError};
pub use module::{Module, StartContext, StopContext};
pub use pipeline::{NestedRun, Pipeline, PipelineError, Pipelines, RunOutcome};
pub use registry::{
    BuildStepFn, Category, ConfigIssue, Described, ExternalStep, Kind, ModuleType, Registry,
    RegistryError, StepType, TriggerType, TypeInfo, WorkflowType,
};
pub use secrets::{SecretError, SecretSourceType, SecretStore, resolve_secrets};
pub use services::{ServiceError, ServiceKind, Services};
pub use state::{AppState, RouteInfo, ScheduleInfo};
pub use step::{
    ErrorKind, Extensions, Next, PipelineContext, RunBudget, RunDeadline, RunMeta, Step, StepError,
    StepOutput,
};
pub use trigger::{ActionError, ActionTarget, Dispatch, Trigger, TriggerTarget};
pub use validate::{Invalid, ValidatedConfig, validate};

// Re-exported so type crates depend on one engine crate.
pub use async_trait::async_trait;
pub use wf_config;
pub use wf_config::redact;
