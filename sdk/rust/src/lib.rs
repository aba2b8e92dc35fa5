//! `wf-sdk`: write wf pipeline steps as WebAssembly components in Rust.
//!
//! A step is a type implementing [`Step`], exported with [`export_step!`]:
//!
//! ```ignore
//! use wf_sdk::prelude::*;
//!
//! struct Hello;
//!
//! impl Step for Hello {
//!     fn info() -> Info {
//!         Info::new("hello", "Greets whoever the input names")
//!     }
//!
//!     fn run(input: Value, _ctx: &Ctx) -> Result<Output, StepError> {
//!         let name = input["name"].as_str().unwrap_or("world");
//!         Ok(json!({ "message": format!("hello, {name}") }).into())
//!     }
//! }
//!
//! export_step!(Hello);
//! ```
//!
//! Build it with `wf-plugin build` (or `cargo build --release --target wasm32-wasip2`). The same
//! code runs natively under [`testing::Harness`], so a step's logic is unit-tested with plain
//! `cargo test`, no host needed.

use std::fmt;

pub use serde_json::{Value, json};

/// Bindings of the module or trigger world, reusing the step world's host interfaces (one set
/// of imports and types for every kind of component).
macro_rules! world_sharing_host_interfaces {
    ($world:literal, $export_macro:literal, $bindings_module:literal) => {
        wit_bindgen::generate!({
            path: "../../wit",
            world: $world,
            with: {
                "wf:plugin/types@0.1.0": crate::bindings::wf::plugin::types,
                "wf:plugin/log@0.1.0": crate::bindings::wf::plugin::log,
                "wf:plugin/config@0.1.0": crate::bindings::wf::plugin::config,
                "wf:plugin/state@0.1.0": crate::bindings::wf::plugin::state,
                "wf:plugin/http@0.1.0": crate::bindings::wf::plugin::http,
                "wf:plugin/events@0.1.0": crate::bindings::wf::plugin::events,
                "wf:plugin/clock@0.1.0": crate::bindings::wf::plugin::clock,
            },
            pub_export_macro: true,
            export_macro_name: $export_macro,
            default_bindings_module: $bindings_module,
        });
    };
}

mod host;
pub mod module;
pub mod testing;
pub mod trigger;

pub use host::{Ctx, HttpRequest, HttpResponse, Level, StateEntry};
pub use module::Module;
pub use trigger::{Event, Source, Start, Trigger};

/// The generated bindings of the `wf:plugin` step world. Used by [`export_step!`]; a step
/// normally needs nothing from here.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "step-component",
        pub_export_macro: true,
        export_macro_name: "__export_step_component",
        default_bindings_module: "wf_sdk::bindings",
    });
}

/// The `describe` and `validate-config` every world exports, for a type implementing
/// `$kind` (`Step`, `Module` or `Trigger`: each has `info` and `validate_config`).
#[doc(hidden)]
#[macro_export]
macro_rules! __describe_and_validate {
    ($kind:path, $component:ty) => {
        fn describe() -> $crate::bindings::wf::plugin::types::ComponentInfo {
            $crate::__private::describe_info(
                <$component as $kind>::info(),
                env!("CARGO_PKG_VERSION"),
            )
        }
        fn validate_config(
            config: ::std::string::String,
        ) -> ::std::result::Result<(), $crate::bindings::wf::plugin::types::Error> {
            $crate::__private::validate_with(&config, <$component as $kind>::validate_config)
        }
    };
}

/// Everything a step usually needs.
pub mod prelude {
    pub use crate::{
        Ctx, Event, Info, Module, Output, Source, Start, Step, StepError, Trigger, Value,
        export_module, export_step, export_trigger, json,
    };
}

/// Why a step failed. The kind decides whether wf retries it and the HTTP status a request
/// that ran it gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepError {
    /// The input is wrong (HTTP 400; never retried).
    InvalidInput(String),
    /// The step's configuration is wrong.
    InvalidConfig(String),
    /// Not allowed, or a capability was not granted (HTTP 403).
    Denied(String),
    /// A dependency is temporarily unreachable (HTTP 503; retried when the step has `retry`).
    Unavailable(String),
    /// Anything else (HTTP 500).
    Internal(String),
}

impl StepError {
    pub fn invalid_input(message: impl Into<String>) -> Self {
        StepError::InvalidInput(message.into())
    }
    pub fn invalid_config(message: impl Into<String>) -> Self {
        StepError::InvalidConfig(message.into())
    }
    pub fn denied(message: impl Into<String>) -> Self {
        StepError::Denied(message.into())
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        StepError::Unavailable(message.into())
    }
    pub fn internal(message: impl Into<String>) -> Self {
        StepError::Internal(message.into())
    }

    pub fn message(&self) -> &str {
        match self {
            StepError::InvalidInput(m)
            | StepError::InvalidConfig(m)
            | StepError::Denied(m)
            | StepError::Unavailable(m)
            | StepError::Internal(m) => m,
        }
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for StepError {}

impl From<serde_json::Error> for StepError {
    fn from(e: serde_json::Error) -> Self {
        StepError::InvalidInput(e.to_string())
    }
}

/// What a step says about itself; wf reads it once per loaded version.
#[derive(Clone, Debug, Default)]
pub struct Info {
    /// The step type name pipelines use (lowercase letters, digits, `.`, `-`, `_`).
    pub name: String,
    /// Filled from the crate's version by [`export_step!`] when left empty.
    pub version: String,
    pub description: String,
    pub config_schema: Option<Value>,
    pub input_schema: Option<Value>,
    pub output_schema: Option<Value>,
    /// Capabilities the step needs, e.g. `http:api.example.com`; the app's YAML grants them.
    pub capabilities: Vec<String>,
}

impl Info {
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> Self {
        Info {
            name: name.into(),
            description: description.into(),
            ..Info::default()
        }
    }

    pub fn config_schema(mut self, schema: Value) -> Self {
        self.config_schema = Some(schema);
        self
    }

    pub fn input_schema(mut self, schema: Value) -> Self {
        self.input_schema = Some(schema);
        self
    }

    pub fn output_schema(mut self, schema: Value) -> Self {
        self.output_schema = Some(schema);
        self
    }

    pub fn capability(mut self, capability: impl Into<String>) -> Self {
        self.capabilities.push(capability.into());
        self
    }
}

/// Where the run goes after the step.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Merge this object into the run's data and go on.
    Next(Value),
    /// Merge the output, then continue at the named step.
    Branch { target: String, output: Value },
    /// Merge the output and end the run successfully.
    Stop(Value),
}

impl From<Value> for Output {
    fn from(value: Value) -> Self {
        Output::Next(value)
    }
}

/// A pipeline step type.
pub trait Step {
    fn info() -> Info;

    /// Checks a configuration before any run uses it: at load and before a hot swap.
    fn validate_config(_config: &Value) -> Result<(), StepError> {
        Ok(())
    }

    /// Runs the step on the run's current data (a JSON object).
    fn run(input: Value, ctx: &Ctx) -> Result<Output, StepError>;
}

/// Exports a [`Step`] implementation as the component's `step` interface.
#[macro_export]
macro_rules! export_step {
    ($step:ty) => {
        const _: () = {
            #[allow(dead_code)]
            struct WfSdkGuest;
            impl $crate::bindings::exports::wf::plugin::step::Guest for WfSdkGuest {
                $crate::__describe_and_validate!($crate::Step, $step);
                fn run(
                    invocation: $crate::bindings::exports::wf::plugin::step::Invocation,
                    input: ::std::string::String,
                ) -> ::std::result::Result<
                    $crate::bindings::exports::wf::plugin::step::Outcome,
                    $crate::bindings::exports::wf::plugin::step::Error,
                > {
                    $crate::__private::run::<$step>(invocation, &input)
                }
            }
            // Native builds (unit tests under `testing::Harness`) have no component exports;
            // their names are not valid linker symbols there.
            #[cfg(target_arch = "wasm32")]
            $crate::bindings::__export_step_component!(WfSdkGuest);
        };
        /// The step's entry points, for native builds (what the test harness and tools call).
        #[cfg(not(target_arch = "wasm32"))]
        #[doc(hidden)]
        pub static __WF_SDK_STEP: $crate::__private::NativeStep = $crate::__private::NativeStep {
            info: <$step as $crate::Step>::info,
            validate_config: <$step as $crate::Step>::validate_config,
            run: <$step as $crate::Step>::run,
        };
    };
}

/// Glue the export macro expands to; not part of the API.
#[doc(hidden)]
pub mod __private {
    use super::*;
    use crate::bindings::exports::wf::plugin::step::{
        BranchTo, ComponentInfo, Error, Invocation, Outcome,
    };

    /// A step's functions as plain pointers, so a native build keeps them reachable.
    pub struct NativeStep {
        pub info: fn() -> Info,
        pub validate_config: fn(&Value) -> Result<(), StepError>,
        pub run: fn(Value, &Ctx) -> Result<Output, StepError>,
    }

    fn schema_text(schema: Option<Value>) -> Option<String> {
        schema.map(|s| s.to_string())
    }

    /// `info` as the WIT record, the crate's version filling an empty one.
    pub fn describe_info(info: Info, crate_version: &str) -> ComponentInfo {
        ComponentInfo {
            name: info.name,
            version: if info.version.is_empty() {
                crate_version.to_string()
            } else {
                info.version
            },
            description: info.description,
            config_schema: schema_text(info.config_schema),
            input_schema: schema_text(info.input_schema),
            output_schema: schema_text(info.output_schema),
            capabilities: info.capabilities,
        }
    }

    pub fn to_wit(error: StepError) -> Error {
        match error {
            StepError::InvalidInput(m) => Error::InvalidInput(m),
            StepError::InvalidConfig(m) => Error::InvalidConfig(m),
            StepError::Denied(m) => Error::Denied(m),
            StepError::Unavailable(m) => Error::Unavailable(m),
            StepError::Internal(m) => Error::Internal(m),
        }
    }

    /// Parses a config and hands it to a component's check.
    pub fn validate_with(
        config: &str,
        check: fn(&Value) -> Result<(), StepError>,
    ) -> Result<(), Error> {
        let config: Value = serde_json::from_str(config)
            .map_err(|e| Error::InvalidConfig(format!("config is not JSON: {e}")))?;
        check(&config).map_err(to_wit)
    }

    /// Parses a JSON argument the host passed.
    pub fn parse_input(text: &str) -> Result<Value, Error> {
        serde_json::from_str(text)
            .map_err(|e| Error::InvalidInput(format!("input is not JSON: {e}")))
    }

    pub fn run<S: Step>(invocation: Invocation, input: &str) -> Result<Outcome, Error> {
        let input: Value = serde_json::from_str(input)
            .map_err(|e| Error::InvalidInput(format!("input is not JSON: {e}")))?;
        let ctx = Ctx::from_host(host::Invocation {
            pipeline: invocation.pipeline,
            run_id: invocation.run_id,
            step: invocation.step,
            attempt: invocation.attempt,
            deadline_ms: invocation.deadline_ms,
        });
        Ok(match S::run(input, &ctx).map_err(to_wit)? {
            Output::Next(v) => Outcome::Next(v.to_string()),
            Output::Stop(v) => Outcome::Stop(v.to_string()),
            Output::Branch { target, output } => Outcome::Branch(BranchTo {
                target,
                output: output.to_string(),
            }),
        })
    }
}
