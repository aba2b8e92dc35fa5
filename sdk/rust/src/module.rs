//! Module components: one long-lived instance, started when its version goes live and stopped
//! when it is replaced or the app stops; steps call its operations (`step.wasm` +
//! `operation:`). State kept in the value `start` returns carries from call to call.
//!
//! ```ignore
//! use wf_sdk::prelude::*;
//!
//! struct Tally { calls: u64 }
//!
//! impl Module for Tally {
//!     fn info() -> Info { Info::new("tally", "Counts calls") }
//!     fn start(_ctx: &Ctx) -> Result<Self, StepError> { Ok(Tally { calls: 0 }) }
//!     fn invoke(&mut self, operation: &str, _input: Value, _ctx: &Ctx) -> Result<Value, StepError> {
//!         match operation {
//!             "count" => { self.calls += 1; Ok(json!({"calls": self.calls})) }
//!             other => Err(StepError::invalid_input(format!("unknown operation `{other}`"))),
//!         }
//!     }
//! }
//!
//! export_module!(Tally);
//! ```

use std::cell::RefCell;
use std::thread::LocalKey;

use serde_json::Value;

use crate::bindings::wf::plugin::types::Error;
use crate::{Ctx, Info, StepError};

/// Bindings of the `module-component` world; the host interfaces are the step world's.
#[doc(hidden)]
pub mod bindings {
    world_sharing_host_interfaces!(
        "module-component",
        "__export_module_component",
        "wf_sdk::module::bindings"
    );
}

/// A module component.
pub trait Module: Sized + 'static {
    fn info() -> Info;

    /// Checks a configuration before the version goes live.
    fn validate_config(_config: &Value) -> Result<(), StepError> {
        Ok(())
    }

    /// Creates the module's state. A version whose `start` fails never goes live.
    fn start(ctx: &Ctx) -> Result<Self, StepError>;

    /// Called when the version is replaced or the app stops.
    fn stop(&mut self, _ctx: &Ctx) -> Result<(), StepError> {
        Ok(())
    }

    /// Runs one operation; the output must be a JSON object.
    fn invoke(&mut self, operation: &str, input: Value, ctx: &Ctx) -> Result<Value, StepError>;
}

/// The module's state between calls (one instance, one thread).
pub type State<M> = LocalKey<RefCell<Option<M>>>;

fn ctx() -> Ctx {
    Ctx::from_host(crate::host::Invocation::default())
}

#[doc(hidden)]
pub fn start<M: Module>(state: &'static State<M>) -> Result<(), Error> {
    let module = M::start(&ctx()).map_err(crate::__private::to_wit)?;
    state.with(|s| *s.borrow_mut() = Some(module));
    Ok(())
}

#[doc(hidden)]
pub fn stop<M: Module>(state: &'static State<M>) -> Result<(), Error> {
    match state.with(|s| s.borrow_mut().take()) {
        Some(mut module) => module.stop(&ctx()).map_err(crate::__private::to_wit),
        None => Ok(()),
    }
}

#[doc(hidden)]
pub fn invoke<M: Module>(
    state: &'static State<M>,
    operation: &str,
    input: &str,
) -> Result<String, Error> {
    let input = crate::__private::parse_input(input)?;
    state.with(|s| match s.borrow_mut().as_mut() {
        Some(module) => module
            .invoke(operation, input, &ctx())
            .map(|v| v.to_string())
            .map_err(crate::__private::to_wit),
        None => Err(Error::Internal(
            "the module was invoked before it started".into(),
        )),
    })
}

/// A module's functions as plain pointers, so a native build keeps them reachable.
#[doc(hidden)]
pub struct NativeModule<M> {
    pub info: fn() -> Info,
    pub start: fn(&Ctx) -> Result<M, StepError>,
    pub stop: fn(&mut M, &Ctx) -> Result<(), StepError>,
    pub invoke: fn(&mut M, &str, Value, &Ctx) -> Result<Value, StepError>,
}

/// Exports a [`Module`] implementation as the component's `module` interface.
#[macro_export]
macro_rules! export_module {
    ($module:ty) => {
        const _: () = {
            ::std::thread_local! {
                static STATE: ::std::cell::RefCell<::std::option::Option<$module>> =
                    const { ::std::cell::RefCell::new(::std::option::Option::None) };
            }
            #[allow(dead_code)]
            struct WfSdkGuest;
            impl $crate::module::bindings::exports::wf::plugin::module::Guest for WfSdkGuest {
                $crate::__describe_and_validate!($crate::Module, $module);
                fn start() -> ::std::result::Result<(), $crate::bindings::wf::plugin::types::Error>
                {
                    $crate::module::start::<$module>(&STATE)
                }
                fn stop() -> ::std::result::Result<(), $crate::bindings::wf::plugin::types::Error> {
                    $crate::module::stop::<$module>(&STATE)
                }
                fn invoke(
                    operation: ::std::string::String,
                    input: ::std::string::String,
                ) -> ::std::result::Result<
                    ::std::string::String,
                    $crate::bindings::wf::plugin::types::Error,
                > {
                    $crate::module::invoke::<$module>(&STATE, &operation, &input)
                }
            }
            #[cfg(target_arch = "wasm32")]
            $crate::module::bindings::__export_module_component!(WfSdkGuest);
        };
        /// The module's entry points, for native builds (the test harness).
        #[cfg(not(target_arch = "wasm32"))]
        #[doc(hidden)]
        pub static __WF_SDK_MODULE: $crate::module::NativeModule<$module> =
            $crate::module::NativeModule {
                info: <$module as $crate::Module>::info,
                start: <$module as $crate::Module>::start,
                stop: <$module as $crate::Module>::stop,
                invoke: <$module as $crate::Module>::invoke,
            };
    };
}
