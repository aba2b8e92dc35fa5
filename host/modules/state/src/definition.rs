//! State machine definitions as the `statemachine` workflow declares them.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use wf_engine::ConfigIssue;
use wf_template::{Scope, Template};

/// One state machine: its states and the transitions between them.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    /// The definition's name: instances' `workflowType`, and what triggers name as
    /// `workflow:`.
    pub name: String,
    /// What the machine is for, as documentation.
    #[serde(default)]
    pub description: Option<String>,
    /// The state new instances start in.
    #[serde(rename = "initialState")]
    pub initial_state: String,
    /// States by name.
    pub states: BTreeMap<String, StateDef>,
    /// Transitions by name (the actions triggers and `/{id}/transition` fire).
    pub transitions: BTreeMap<String, TransitionDef>,
}

/// One state.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateDef {
    /// As documentation.
    #[serde(default)]
    pub description: Option<String>,
    /// Entering it completes the instance; no transition leaves it.
    #[serde(default, rename = "isFinal")]
    pub is_final: bool,
    /// Completing here is a failure: the instance's `error` is set.
    #[serde(default, rename = "isError")]
    pub is_error: bool,
    /// Values merged into the instance's data on entering the state.
    #[serde(default)]
    pub data: Map<String, Value>,
}

/// One transition.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransitionDef {
    /// The state the instance must be in.
    #[serde(rename = "fromState")]
    pub from_state: String,
    /// The state it moves to.
    #[serde(rename = "toState")]
    pub to_state: String,
    /// Fire this transition by itself as soon as the instance enters `fromState` (and its
    /// `condition`, if any, holds).
    #[serde(default, rename = "autoTransform")]
    pub auto_transform: bool,
    /// A guard: a template over the instance's data (`{{ .approved }}`); the transition is
    /// refused unless it renders to something true (not `false`, `0`, `""`, `null`).
    #[serde(default)]
    pub condition: Option<String>,
    /// Values merged into the instance's data when the transition fires.
    #[serde(default)]
    pub data: Map<String, Value>,
    /// `condition`, compiled by [`Definition::compiled`].
    #[serde(skip)]
    #[schemars(skip)]
    guard: Option<Guard>,
}

/// A compiled `condition`.
#[derive(Clone)]
struct Guard(Template);

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Guard").field(&self.0.source()).finish()
    }
}

impl TransitionDef {
    /// Whether the guard lets the transition through for an instance with `data` (always,
    /// without a `condition`).
    pub fn allows(&self, data: &Map<String, Value>) -> bool {
        self.guard.as_ref().is_none_or(|Guard(template)| {
            template.render(&Scope::of(data)).is_ok_and(|v| truthy(&v))
        })
    }
}

impl Definition {
    /// The definition with its guards compiled, ready for an engine.
    pub fn compiled(mut self) -> anyhow::Result<Definition> {
        for (name, t) in &mut self.transitions {
            if let Some(condition) = &t.condition {
                let template = Template::compile(condition).map_err(|e| {
                    anyhow::anyhow!("transition `{name}`: condition: {}", e.message)
                })?;
                t.guard = Some(Guard(template));
            }
        }
        Ok(self)
    }

    /// Problems a definition can have on its own, with pointers relative to it.
    pub fn issues(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        let known = |state: &str| self.states.contains_key(state);
        let names = || self.states.keys().cloned().collect::<Vec<_>>().join(", ");
        if !known(&self.initial_state) {
            issues.push(
                ConfigIssue::new(
                    "/initialState",
                    format!("`{}` is not one of the states", self.initial_state),
                )
                .help(format!("states: {}", names())),
            );
        }
        for (name, t) in &self.transitions {
            for (key, state) in [("fromState", &t.from_state), ("toState", &t.to_state)] {
                if !known(state) {
                    issues.push(
                        ConfigIssue::new(
                            format!("/transitions/{name}/{key}"),
                            format!("`{state}` is not one of the states"),
                        )
                        .help(format!("states: {}", names())),
                    );
                }
            }
            if self.states.get(&t.from_state).is_some_and(|s| s.is_final) {
                issues.push(ConfigIssue::new(
                    format!("/transitions/{name}/fromState"),
                    format!(
                        "`{}` is a final state: no transition can leave it",
                        t.from_state
                    ),
                ));
            }
            if let Some(condition) = &t.condition
                && let Err(e) = Template::compile(condition)
            {
                issues.push(ConfigIssue::new(
                    format!("/transitions/{name}/condition"),
                    e.message,
                ));
            }
        }
        issues
    }
}

/// Whether a rendered guard lets a transition through.
pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !matches!(s.trim(), "" | "false" | "0" | "no" | "null"),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}
