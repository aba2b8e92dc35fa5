//! Run a step natively, without the host: config, state, HTTP responses, published events,
//! logs and the clock are in-memory and inspectable.
//!
//! ```ignore
//! let mut harness = Harness::new().config(json!({"threshold": 0.5}));
//! let out = harness.run::<Sentiment>(json!({"text": "great"})).unwrap();
//! assert_eq!(out, Output::Next(json!({"sentiment": "positive"})));
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use serde_json::Value;

use crate::host::{Backend, Invocation};
use crate::{
    Ctx, Event, HttpRequest, HttpResponse, Level, Module, Output, Source, Start, StateEntry, Step,
    StepError, Trigger,
};

type HttpHandler = Box<dyn Fn(&HttpRequest) -> Result<HttpResponse, StepError>>;

#[derive(Default)]
struct Inner {
    config: Value,
    state: BTreeMap<(String, String), StateEntry>,
    revision: u64,
    published: Vec<(String, Value)>,
    logs: Vec<(Level, String)>,
    http: Option<HttpHandler>,
    now_ms: u64,
}

/// In-memory stand-ins for the host; see the module docs.
#[derive(Clone, Default)]
pub struct Harness {
    inner: Rc<RefCell<Inner>>,
}

impl Harness {
    pub fn new() -> Self {
        let harness = Harness::default();
        harness.inner.borrow_mut().config = Value::Object(Default::default());
        harness
    }

    /// The step's configuration, as `config:` in YAML would give it.
    pub fn config(self, config: Value) -> Self {
        self.inner.borrow_mut().config = config;
        self
    }

    /// Answers the step's outbound HTTP requests.
    pub fn http(
        self,
        handler: impl Fn(&HttpRequest) -> Result<HttpResponse, StepError> + 'static,
    ) -> Self {
        self.inner.borrow_mut().http = Some(Box::new(handler));
        self
    }

    /// What `ctx.now_ms()` returns.
    pub fn now_ms(self, now_ms: u64) -> Self {
        self.inner.borrow_mut().now_ms = now_ms;
        self
    }

    fn ctx(&self, step: String) -> Ctx {
        Ctx::with_backend(
            Invocation {
                pipeline: "test".into(),
                run_id: "test-run".into(),
                step,
                attempt: 1,
                deadline_ms: u64::MAX,
            },
            Rc::new(self.clone()),
        )
    }

    fn config_value(&self) -> Value {
        self.inner.borrow().config.clone()
    }

    /// Runs the step's config check, then the step, on `input`.
    pub fn run<S: Step>(&self, input: Value) -> Result<Output, StepError> {
        S::validate_config(&self.config_value())?;
        S::run(input, &self.ctx(S::info().name))
    }

    /// A module's config check, then its `start`: the module to invoke.
    pub fn start<M: Module>(&self) -> Result<M, StepError> {
        M::validate_config(&self.config_value())?;
        M::start(&self.ctx(M::info().name))
    }

    /// One operation of a started module.
    pub fn invoke<M: Module>(
        &self,
        module: &mut M,
        operation: &str,
        input: Value,
    ) -> Result<Value, StepError> {
        module.invoke(operation, input, &self.ctx(M::info().name))
    }

    /// What a trigger asks the host to watch.
    pub fn sources<T: Trigger>(&self) -> Result<Vec<Source>, StepError> {
        T::validate_config(&self.config_value())?;
        Ok(T::sources(&self.ctx(T::info().name)))
    }

    /// The runs a trigger starts for an event on source `source`.
    pub fn on_event<T: Trigger>(
        &self,
        source: u32,
        payload: Value,
    ) -> Result<Vec<Start>, StepError> {
        T::on_event(Event { source, payload }, &self.ctx(T::info().name))
    }

    /// Events the step published, in order.
    pub fn published(&self) -> Vec<(String, Value)> {
        self.inner.borrow().published.clone()
    }

    /// Lines the step logged, in order.
    pub fn logs(&self) -> Vec<(Level, String)> {
        self.inner.borrow().logs.clone()
    }

    /// A stored state value.
    pub fn state(&self, bucket: &str, key: &str) -> Option<Value> {
        self.inner
            .borrow()
            .state
            .get(&(bucket.to_string(), key.to_string()))
            .map(|e| e.value.clone())
    }
}

impl Backend for Harness {
    fn log(&self, level: Level, message: &str) {
        self.inner
            .borrow_mut()
            .logs
            .push((level, message.to_string()));
    }

    fn config(&self) -> Value {
        self.inner.borrow().config.clone()
    }

    fn state_get(&self, bucket: &str, key: &str) -> Result<Option<StateEntry>, StepError> {
        Ok(self
            .inner
            .borrow()
            .state
            .get(&(bucket.to_string(), key.to_string()))
            .cloned())
    }

    fn state_set(&self, bucket: &str, key: &str, value: &Value) -> Result<u64, StepError> {
        let mut inner = self.inner.borrow_mut();
        inner.revision += 1;
        let revision = inner.revision;
        inner.state.insert(
            (bucket.to_string(), key.to_string()),
            StateEntry {
                value: value.clone(),
                revision,
            },
        );
        Ok(revision)
    }

    fn state_compare_and_swap(
        &self,
        bucket: &str,
        key: &str,
        expected: Option<u64>,
        value: &Value,
    ) -> Result<Option<u64>, StepError> {
        let current = self
            .inner
            .borrow()
            .state
            .get(&(bucket.to_string(), key.to_string()))
            .map(|e| e.revision);
        if current != expected {
            return Ok(None);
        }
        self.state_set(bucket, key, value).map(Some)
    }

    fn state_delete(&self, bucket: &str, key: &str) -> Result<bool, StepError> {
        Ok(self
            .inner
            .borrow_mut()
            .state
            .remove(&(bucket.to_string(), key.to_string()))
            .is_some())
    }

    fn http_send(&self, request: HttpRequest) -> Result<HttpResponse, StepError> {
        match &self.inner.borrow().http {
            Some(handler) => handler(&request),
            None => Err(StepError::denied(format!(
                "no HTTP handler in the test harness for {} {}",
                request.method, request.url
            ))),
        }
    }

    fn publish(&self, topic: &str, payload: &Value) -> Result<(), StepError> {
        self.inner
            .borrow_mut()
            .published
            .push((topic.to_string(), payload.clone()));
        Ok(())
    }

    fn now_ms(&self) -> u64 {
        self.inner.borrow().now_ms
    }
}
