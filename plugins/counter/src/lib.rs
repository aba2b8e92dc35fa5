//! A module component: named counters kept in the instance's memory between calls, started and
//! stopped with the app. Written with plain `wit-bindgen` against the `module-component` world
//! (no SDK), as a component in any language would be.
//!
//! Operations: `increment` `{"key": K, "by": N}` → `{"key": K, "count": C}`, `get` `{"key": K}`,
//! `total` → `{"total": T, "starts": S}`. Config: `start_at` (the first count, default 0),
//! `fail_start` (true: `start` fails, for tests).

// Native builds (the workspace's unit tests) compile the code without the component exports.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde_json::{Value, json};

wit_bindgen::generate!({
    path: "../../wit",
    world: "module-component",
});

use exports::wf::plugin::module::{ComponentInfo, Error, Guest};
use wf::plugin::config;

#[derive(Default)]
struct State {
    counts: BTreeMap<String, i64>,
    start_at: i64,
    starts: u32,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
    /// How often `start` ran in this instance, kept across stop/start.
    static STARTS: RefCell<u32> = const { RefCell::new(0) };
}

fn config_value(key: &str) -> Option<Value> {
    config::get(key).and_then(|text| serde_json::from_str(&text).ok())
}

struct Counter;

impl Guest for Counter {
    fn describe() -> ComponentInfo {
        ComponentInfo {
            name: "counter".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Named counters kept in memory between calls".into(),
            config_schema: Some(
                json!({
                    "type": "object",
                    "properties": {
                        "start_at": {"type": "integer", "description": "The first count (default 0)."},
                        "fail_start": {"type": "boolean", "description": "Make `start` fail (tests)."}
                    },
                    "additionalProperties": false
                })
                .to_string(),
            ),
            input_schema: None,
            output_schema: None,
            capabilities: Vec::new(),
        }
    }

    fn validate_config(config: String) -> Result<(), Error> {
        let config: Value =
            serde_json::from_str(&config).map_err(|e| Error::InvalidConfig(e.to_string()))?;
        match config.get("start_at") {
            None => Ok(()),
            Some(v) if v.is_i64() => Ok(()),
            Some(v) => Err(Error::InvalidConfig(format!(
                "start_at must be an integer, not {v}"
            ))),
        }
    }

    fn start() -> Result<(), Error> {
        if config_value("fail_start") == Some(Value::Bool(true)) {
            return Err(Error::Unavailable("configured to fail at start".into()));
        }
        let starts = STARTS.with(|s| {
            *s.borrow_mut() += 1;
            *s.borrow()
        });
        let start_at = config_value("start_at")
            .and_then(|v| v.as_i64())
            .unwrap_or(0);
        STATE.with(|s| {
            *s.borrow_mut() = Some(State {
                start_at,
                starts,
                ..State::default()
            })
        });
        Ok(())
    }

    fn stop() -> Result<(), Error> {
        STATE.with(|s| s.borrow_mut().take());
        Ok(())
    }

    fn invoke(operation: String, input: String) -> Result<String, Error> {
        let input: Value =
            serde_json::from_str(&input).map_err(|e| Error::InvalidInput(e.to_string()))?;
        STATE.with(|cell| {
            let mut guard = cell.borrow_mut();
            let state = guard
                .as_mut()
                .ok_or_else(|| Error::Internal("invoked before start".into()))?;
            let key = input["key"].as_str().unwrap_or("default").to_string();
            let out = match operation.as_str() {
                "increment" => {
                    let by = input["by"].as_i64().unwrap_or(1);
                    let start_at = state.start_at;
                    let count = state.counts.entry(key.clone()).or_insert(start_at);
                    *count += by;
                    json!({"key": key, "count": *count})
                }
                "get" => json!({"key": key, "count": state.counts.get(&key).copied().unwrap_or(state.start_at)}),
                "total" => json!({"total": state.counts.values().sum::<i64>(), "starts": state.starts}),
                other => return Err(Error::InvalidInput(format!("unknown operation `{other}`"))),
            };
            Ok(out.to_string())
        })
    }
}

#[cfg(target_arch = "wasm32")]
export!(Counter);
