//! `state.tracker` and `state.connector`: the current state of each resource
//! (`orders/42 → shipped`), fed by state machine transitions through the `statemachine`
//! workflow's `resourceMappings`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use wf_engine::{BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType};

use crate::engine::{Instance, TransitionListener};

/// Configuration of `state.tracker`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrackerConfig {}

/// One resource's tracked state.
#[derive(Clone, Debug, PartialEq)]
pub struct TrackedState {
    pub current_state: String,
    pub previous_state: String,
    pub last_update: String,
    pub data: Map<String, Value>,
}

impl TrackedState {
    pub fn to_json(&self) -> Value {
        json!({
            "currentState": self.current_state,
            "previousState": self.previous_state,
            "lastUpdate": self.last_update,
            "data": self.data,
        })
    }
}

/// `(resource type, id) → state`.
#[derive(Debug, Default)]
pub struct StateTracker {
    states: RwLock<HashMap<(String, String), TrackedState>>,
}

impl wf_engine::ServiceKind for StateTracker {
    const LABEL: &'static str = "a state tracker";
}

impl StateTracker {
    pub fn get(&self, resource_type: &str, id: &str) -> Option<TrackedState> {
        self.states
            .read()
            .ok()?
            .get(&(resource_type.to_string(), id.to_string()))
            .cloned()
    }

    pub fn set(&self, resource_type: &str, id: &str, state: TrackedState) {
        if let Ok(mut states) = self.states.write() {
            states.insert((resource_type.to_string(), id.to_string()), state);
        }
    }
}

/// Copies a state machine's transitions into the tracker for one resource type.
pub struct Mapping {
    pub tracker: Arc<StateTracker>,
    pub resource_type: String,
    /// The engine whose instances this mapping follows.
    pub engine: String,
    /// Instance data key holding the resource id; the instance id when absent.
    pub id_key: Option<String>,
}

impl TransitionListener for Mapping {
    fn on_change(&self, engine: &str, instance: &Instance) {
        if engine != self.engine {
            return;
        }
        let id = self
            .id_key
            .as_ref()
            .and_then(|k| instance.data.get(k))
            .and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .unwrap_or_else(|| instance.id.clone());
        self.tracker.set(
            &self.resource_type,
            &id,
            TrackedState {
                current_state: instance.current_state.clone(),
                previous_state: instance.previous_state.clone(),
                last_update: instance.last_updated.clone(),
                data: instance.data.clone(),
            },
        );
    }
}

pub struct TrackerType;

impl Described for TrackerType {
    const NAME: &'static str = "state.tracker";
    const CATEGORY: Category = Category::StateMachine;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Tracks the current state of each resource, fed by state machine transitions (`resourceMappings`).";
    type Config = TrackerConfig;
}

impl ModuleType for TrackerType {
    fn build(
        _config: TrackerConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        let tracker = Arc::new(StateTracker::default());
        ctx.provide::<StateTracker>(tracker.clone());
        Ok(Arc::new(Passive))
    }
}

/// Configuration of `state.connector`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {}

pub struct ConnectorType;

impl Described for ConnectorType {
    const NAME: &'static str = "state.connector";
    const CATEGORY: Category = Category::StateMachine;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Connects state machine engines to the state tracker; the `statemachine` workflow's `resourceMappings` say which resources follow which machine.";
    type Config = ConnectorConfig;
}

impl ModuleType for ConnectorType {
    fn check(_config: &ConnectorConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        if ctx.modules_of_type(&["state.tracker"]).is_empty() {
            return vec![
                ConfigIssue::warning("", "there is no `state.tracker` for the connector to feed")
                    .help("add a `state.tracker` module"),
            ];
        }
        Vec::new()
    }

    fn build(
        _config: ConnectorConfig,
        _ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        // The `statemachine` workflow installs the mappings; the module marks that the app
        // wants them.
        Ok(Arc::new(Passive))
    }
}

/// A module with nothing to start or stop.
struct Passive;

impl Module for Passive {}
