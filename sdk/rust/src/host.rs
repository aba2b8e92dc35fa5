//! What a step can reach outside itself: the run it belongs to, its config, logging, state,
//! outbound HTTP, events and the clock. In a component these are the host's imports; under
//! [`crate::testing::Harness`] they are in-memory fakes.

use std::rc::Rc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::StepError;
use crate::bindings::wf::plugin as wit;

/// Log levels, as the host's log knows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// The run a call belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Invocation {
    pub pipeline: String,
    pub run_id: String,
    pub step: String,
    pub attempt: u32,
    /// When the host stops the call, in milliseconds since the Unix epoch.
    pub deadline_ms: u64,
}

/// A stored value and its revision.
#[derive(Clone, Debug, PartialEq)]
pub struct StateEntry {
    pub value: Value,
    pub revision: u64,
}

/// An outbound HTTP request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout_ms: Option<u32>,
}

impl HttpRequest {
    pub fn get(url: impl Into<String>) -> Self {
        HttpRequest {
            method: "GET".into(),
            url: url.into(),
            ..HttpRequest::default()
        }
    }

    pub fn post_json(url: impl Into<String>, body: &Value) -> Self {
        HttpRequest {
            method: "POST".into(),
            url: url.into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: Some(body.to_string().into_bytes()),
            timeout_ms: None,
        }
    }
}

/// An HTTP response.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn json(&self) -> Result<Value, StepError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| StepError::unavailable(format!("response is not JSON: {e}")))
    }
}

/// The host's side of a call; swapped for fakes by the test harness.
pub(crate) trait Backend {
    fn log(&self, level: Level, message: &str);
    fn config(&self) -> Value;
    fn state_get(&self, bucket: &str, key: &str) -> Result<Option<StateEntry>, StepError>;
    fn state_set(&self, bucket: &str, key: &str, value: &Value) -> Result<u64, StepError>;
    fn state_compare_and_swap(
        &self,
        bucket: &str,
        key: &str,
        expected: Option<u64>,
        value: &Value,
    ) -> Result<Option<u64>, StepError>;
    fn state_delete(&self, bucket: &str, key: &str) -> Result<bool, StepError>;
    fn http_send(&self, request: HttpRequest) -> Result<HttpResponse, StepError>;
    fn publish(&self, topic: &str, payload: &Value) -> Result<(), StepError>;
    fn now_ms(&self) -> u64;
}

/// A step's view of the world during one call.
pub struct Ctx {
    invocation: Invocation,
    backend: Rc<dyn Backend>,
}

impl Ctx {
    pub(crate) fn from_host(invocation: Invocation) -> Self {
        Ctx {
            invocation,
            backend: Rc::new(WasmHost),
        }
    }

    pub(crate) fn with_backend(invocation: Invocation, backend: Rc<dyn Backend>) -> Self {
        Ctx {
            invocation,
            backend,
        }
    }

    /// The pipeline run this call belongs to.
    pub fn invocation(&self) -> &Invocation {
        &self.invocation
    }

    pub fn log(&self, level: Level, message: impl AsRef<str>) {
        self.backend.log(level, message.as_ref());
    }

    pub fn info(&self, message: impl AsRef<str>) {
        self.log(Level::Info, message);
    }

    /// The step's whole configuration object from the app's YAML.
    pub fn config(&self) -> Value {
        self.backend.config()
    }

    /// One configuration key, deserialized; `None` when absent.
    pub fn config_get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StepError> {
        match self.backend.config().get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| StepError::invalid_config(format!("config `{key}`: {e}"))),
        }
    }

    pub fn state_get(&self, bucket: &str, key: &str) -> Result<Option<StateEntry>, StepError> {
        self.backend.state_get(bucket, key)
    }

    pub fn state_set(&self, bucket: &str, key: &str, value: &Value) -> Result<u64, StepError> {
        self.backend.state_set(bucket, key, value)
    }

    /// Writes only if the key's revision is still `expected` (`None`: only if absent).
    /// Returns the new revision, or `None` when the condition failed.
    pub fn state_compare_and_swap(
        &self,
        bucket: &str,
        key: &str,
        expected: Option<u64>,
        value: &Value,
    ) -> Result<Option<u64>, StepError> {
        self.backend
            .state_compare_and_swap(bucket, key, expected, value)
    }

    pub fn state_delete(&self, bucket: &str, key: &str) -> Result<bool, StepError> {
        self.backend.state_delete(bucket, key)
    }

    pub fn http(&self, request: HttpRequest) -> Result<HttpResponse, StepError> {
        self.backend.http_send(request)
    }

    pub fn publish(&self, topic: &str, payload: &Value) -> Result<(), StepError> {
        self.backend.publish(topic, payload)
    }

    /// Milliseconds since the Unix epoch, as the host's clock says.
    pub fn now_ms(&self) -> u64 {
        self.backend.now_ms()
    }
}

fn from_wit(error: wit::types::Error) -> StepError {
    use wit::types::Error as E;
    match error {
        E::InvalidInput(m) => StepError::InvalidInput(m),
        E::InvalidConfig(m) => StepError::InvalidConfig(m),
        E::Denied(m) => StepError::Denied(m),
        E::Unavailable(m) => StepError::Unavailable(m),
        E::Internal(m) => StepError::Internal(m),
    }
}

fn parse(text: &str, what: &str) -> Result<Value, StepError> {
    serde_json::from_str(text).map_err(|e| StepError::internal(format!("{what} is not JSON: {e}")))
}

/// The real host, through the component's imports.
struct WasmHost;

impl Backend for WasmHost {
    fn log(&self, level: Level, message: &str) {
        use wit::log::Level as L;
        let level = match level {
            Level::Trace => L::Trace,
            Level::Debug => L::Debug,
            Level::Info => L::Info,
            Level::Warn => L::Warn,
            Level::Error => L::Error,
        };
        wit::log::log(level, message);
    }

    fn config(&self) -> Value {
        parse(&wit::config::all(), "config").unwrap_or(Value::Null)
    }

    fn state_get(&self, bucket: &str, key: &str) -> Result<Option<StateEntry>, StepError> {
        match wit::state::get(bucket, key).map_err(from_wit)? {
            None => Ok(None),
            Some(entry) => Ok(Some(StateEntry {
                value: parse(&entry.value, "state value")?,
                revision: entry.revision,
            })),
        }
    }

    fn state_set(&self, bucket: &str, key: &str, value: &Value) -> Result<u64, StepError> {
        wit::state::set(bucket, key, &value.to_string()).map_err(from_wit)
    }

    fn state_compare_and_swap(
        &self,
        bucket: &str,
        key: &str,
        expected: Option<u64>,
        value: &Value,
    ) -> Result<Option<u64>, StepError> {
        wit::state::compare_and_swap(bucket, key, expected, &value.to_string()).map_err(from_wit)
    }

    fn state_delete(&self, bucket: &str, key: &str) -> Result<bool, StepError> {
        wit::state::delete(bucket, key).map_err(from_wit)
    }

    fn http_send(&self, request: HttpRequest) -> Result<HttpResponse, StepError> {
        let response = wit::http::send(&wit::http::Request {
            method: request.method,
            url: request.url,
            headers: request.headers,
            body: request.body,
            timeout_ms: request.timeout_ms,
        })
        .map_err(from_wit)?;
        Ok(HttpResponse {
            status: response.status,
            headers: response.headers,
            body: response.body,
        })
    }

    fn publish(&self, topic: &str, payload: &Value) -> Result<(), StepError> {
        wit::events::publish(topic, &payload.to_string()).map_err(from_wit)
    }

    fn now_ms(&self) -> u64 {
        wit::clock::now_ms()
    }
}
