//! Trigger components: declare what the host should watch (HTTP routes, topics) and turn each
//! event into pipeline runs.
//!
//! ```ignore
//! use wf_sdk::prelude::*;
//!
//! struct Hooks;
//!
//! impl Trigger for Hooks {
//!     fn info() -> Info { Info::new("hooks", "A pipeline run per webhook") }
//!     fn sources(_ctx: &Ctx) -> Vec<Source> {
//!         vec![Source::HttpRoute { method: "POST".into(), path: "/hooks".into() }]
//!     }
//!     fn on_event(event: Event, _ctx: &Ctx) -> Result<Vec<Start>, StepError> {
//!         Ok(vec![Start::new("handle-hook", event.payload["body"].clone())])
//!     }
//! }
//!
//! export_trigger!(Hooks);
//! ```

use serde_json::Value;

use crate::bindings::wf::plugin::types::Error;
use crate::{Ctx, Info, StepError};

/// Bindings of the `trigger-component` world; the host interfaces are the step world's.
#[doc(hidden)]
pub mod bindings {
    world_sharing_host_interfaces!(
        "trigger-component",
        "__export_trigger_component",
        "wf_sdk::trigger::bindings"
    );
}

use bindings::exports::wf::plugin::trigger as wit;

/// Something the host watches for a trigger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// An HTTP route on the app's router, e.g. `POST /hooks/github`.
    HttpRoute { method: String, path: String },
    /// A topic on the app's message broker.
    Topic(String),
    /// A cron expression (needs the scheduler).
    Cron(String),
}

/// Something happened on a source.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Index into the list [`Trigger::sources`] returned.
    pub source: u32,
    /// HTTP: `{method, path, query, headers, body}`; topic: `{topic, message}`.
    pub payload: Value,
}

/// A pipeline run to start.
#[derive(Clone, Debug, PartialEq)]
pub struct Start {
    pub pipeline: String,
    /// The run's trigger data: a JSON object.
    pub data: Value,
}

impl Start {
    pub fn new(pipeline: impl Into<String>, data: Value) -> Self {
        Start {
            pipeline: pipeline.into(),
            data,
        }
    }
}

/// A trigger component.
pub trait Trigger {
    fn info() -> Info;

    fn validate_config(_config: &Value) -> Result<(), StepError> {
        Ok(())
    }

    /// What the host should watch; read once per loaded version.
    fn sources(ctx: &Ctx) -> Vec<Source>;

    /// The runs an event starts.
    fn on_event(event: Event, ctx: &Ctx) -> Result<Vec<Start>, StepError>;
}

fn ctx() -> Ctx {
    Ctx::from_host(crate::host::Invocation::default())
}

#[doc(hidden)]
pub fn sources<T: Trigger>() -> Vec<wit::Source> {
    T::sources(&ctx())
        .into_iter()
        .map(|source| match source {
            Source::HttpRoute { method, path } => {
                wit::Source::HttpRoute(wit::Route { method, path })
            }
            Source::Topic(topic) => wit::Source::Topic(topic),
            Source::Cron(expression) => wit::Source::Cron(expression),
        })
        .collect()
}

#[doc(hidden)]
pub fn on_event<T: Trigger>(event: wit::Event) -> Result<Vec<wit::Start>, Error> {
    let payload = crate::__private::parse_input(&event.payload)?;
    let starts = T::on_event(
        Event {
            source: event.source,
            payload,
        },
        &ctx(),
    )
    .map_err(crate::__private::to_wit)?;
    Ok(starts
        .into_iter()
        .map(|start| wit::Start {
            pipeline: start.pipeline,
            data: start.data.to_string(),
        })
        .collect())
}

/// A trigger's functions as plain pointers, so a native build keeps them reachable.
#[doc(hidden)]
pub struct NativeTrigger {
    pub info: fn() -> Info,
    pub sources: fn(&Ctx) -> Vec<Source>,
    pub on_event: fn(Event, &Ctx) -> Result<Vec<Start>, StepError>,
}

/// Exports a [`Trigger`] implementation as the component's `trigger` interface.
#[macro_export]
macro_rules! export_trigger {
    ($trigger:ty) => {
        const _: () = {
            #[allow(dead_code)]
            struct WfSdkGuest;
            impl $crate::trigger::bindings::exports::wf::plugin::trigger::Guest for WfSdkGuest {
                $crate::__describe_and_validate!($crate::Trigger, $trigger);
                fn sources()
                -> ::std::vec::Vec<$crate::trigger::bindings::exports::wf::plugin::trigger::Source>
                {
                    $crate::trigger::sources::<$trigger>()
                }
                fn on_event(
                    event: $crate::trigger::bindings::exports::wf::plugin::trigger::Event,
                ) -> ::std::result::Result<
                    ::std::vec::Vec<$crate::trigger::bindings::exports::wf::plugin::trigger::Start>,
                    $crate::bindings::wf::plugin::types::Error,
                > {
                    $crate::trigger::on_event::<$trigger>(event)
                }
            }
            #[cfg(target_arch = "wasm32")]
            $crate::trigger::bindings::__export_trigger_component!(WfSdkGuest);
        };
        /// The trigger's entry points, for native builds (the test harness).
        #[cfg(not(target_arch = "wasm32"))]
        #[doc(hidden)]
        pub static __WF_SDK_TRIGGER: $crate::trigger::NativeTrigger =
            $crate::trigger::NativeTrigger {
                info: <$trigger as $crate::Trigger>::info,
                sources: <$trigger as $crate::Trigger>::sources,
                on_event: <$trigger as $crate::Trigger>::on_event,
            };
    };
}
