//! Engine behaviour with small test-only types: validation, start order, failure handling.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use wf_engine::{
    BuildContext, Category, ConfigIssue, Described, Module, ModuleType, Registry, StartContext,
    StopContext, Trigger, TriggerType, WireContext, async_trait, build, validate,
};

static EVENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn record(event: String) {
    EVENTS.lock().unwrap().push(event);
}

/// Events whose module name starts with `prefix` (tests run in parallel).
fn events(prefix: &str) -> Vec<String> {
    EVENTS
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.split(' ').nth(1).is_some_and(|n| n.starts_with(prefix)))
        .cloned()
        .collect()
}

/// A module that records its lifecycle.
struct Probe {
    name: String,
    fail_start: bool,
}

/// Config of the test probe.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ProbeConfig {
    /// Fail in `start`.
    #[serde(default)]
    fail_start: bool,
    /// Must be less than `max`.
    #[serde(default)]
    min: u32,
    /// Must be greater than `min`.
    #[serde(default = "default_max")]
    max: u32,
}

fn default_max() -> u32 {
    10
}

struct ProbeType;
impl Described for ProbeType {
    const NAME: &'static str = "test.probe";
    const CATEGORY: Category = Category::Other;
    const PLUGIN: &'static str = "test";
    const DESCRIPTION: &'static str = "Records its lifecycle.";
    type Config = ProbeConfig;
}
impl ModuleType for ProbeType {
    fn check(config: &ProbeConfig, _: &wf_engine::CheckContext<'_>) -> Vec<ConfigIssue> {
        if config.min >= config.max {
            vec![
                ConfigIssue::new("/min", "`min` must be less than `max`")
                    .help("lower `min` or raise `max`"),
            ]
        } else {
            Vec::new()
        }
    }
    fn build(config: ProbeConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Module>> {
        record(format!("build {}", ctx.name));
        Ok(Arc::new(Probe {
            name: ctx.name.to_string(),
            fail_start: config.fail_start,
        }))
    }
}

#[async_trait]
impl Module for Probe {
    async fn start(&self, _: &StartContext) -> anyhow::Result<()> {
        if self.fail_start {
            record(format!("fail {}", self.name));
            anyhow::bail!("address 127.0.0.1:1 is already in use");
        }
        record(format!("start {}", self.name));
        Ok(())
    }
    async fn stop(&self, _: &StopContext) -> anyhow::Result<()> {
        record(format!("stop {}", self.name));
        Ok(())
    }
}

/// Config of the test trigger.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct TickConfig {
    /// Name used in recorded events.
    name: String,
}

struct TickType;
impl Described for TickType {
    const NAME: &'static str = "tick";
    const CATEGORY: Category = Category::Scheduling;
    const PLUGIN: &'static str = "test";
    const DESCRIPTION: &'static str = "Records its lifecycle.";
    type Config = TickConfig;
}
struct Tick(String);
impl TriggerType for TickType {
    fn configure(config: TickConfig, _: &mut WireContext<'_>) -> anyhow::Result<Arc<dyn Trigger>> {
        Ok(Arc::new(Tick(config.name)))
    }
}
#[async_trait]
impl Trigger for Tick {
    async fn start(&self, _: &StartContext) -> anyhow::Result<()> {
        record(format!("start {}", self.0));
        Ok(())
    }
    async fn stop(&self, _: &StopContext) -> anyhow::Result<()> {
        record(format!("stop {}", self.0));
        Ok(())
    }
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register_module::<ProbeType>()
        .unwrap()
        .register_trigger::<TickType>()
        .unwrap();
    r
}

fn load(yaml: &str) -> wf_config::Loaded {
    wf_config::load_str("app.yaml", yaml, &HashMap::<String, String>::new())
}

#[tokio::test]
async fn modules_start_in_depends_on_order_then_triggers_and_stop_in_reverse() {
    let yaml = "
modules:
  - {name: a-web, type: test.probe, dependsOn: [a-router]}
  - {name: a-router, type: test.probe, dependsOn: [a-db]}
  - {name: a-db, type: test.probe}
  - {name: a-cache, type: test.probe}
triggers:
  tick: {name: a-tick}
";
    let registry = registry();
    let validated = validate(load(yaml), &registry).expect("valid");
    let app = build(&validated, &registry).expect("builds");
    assert_eq!(
        app.start_order()
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>(),
        ["a-db", "a-router", "a-web", "a-cache"]
    );
    let running = app.start(Duration::from_secs(1)).await.expect("starts");
    assert!(running.state().is_ready());
    assert_eq!(running.stop(Duration::from_secs(1)).await, 0);
    let starts_and_stops: Vec<String> = events("a-")
        .into_iter()
        .filter(|e| !e.starts_with("build"))
        .collect();
    assert_eq!(
        starts_and_stops,
        [
            "start a-db",
            "start a-router",
            "start a-web",
            "start a-cache",
            "start a-tick",
            "stop a-tick",
            "stop a-cache",
            "stop a-web",
            "stop a-router",
            "stop a-db",
        ]
    );
}

#[tokio::test]
async fn a_module_that_fails_to_start_stops_the_ones_already_started() {
    let yaml = "
modules:
  - {name: b-first, type: test.probe}
  - {name: b-second, type: test.probe}
  - {name: b-broken, type: test.probe, config: {fail_start: true}}
  - {name: b-never, type: test.probe}
";
    let registry = registry();
    let app = build(&validate(load(yaml), &registry).unwrap(), &registry).unwrap();
    let err = app.start(Duration::from_secs(1)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "module `b-broken` (`test.probe`) failed to start: address 127.0.0.1:1 is already in use"
    );
    let lifecycle: Vec<String> = events("b-")
        .into_iter()
        .filter(|e| !e.starts_with("build"))
        .collect();
    assert_eq!(
        lifecycle,
        [
            "start b-first",
            "start b-second",
            "fail b-broken",
            "stop b-second",
            "stop b-first"
        ]
    );
}

#[test]
fn every_problem_is_reported_at_once_with_its_location() {
    let yaml = "modules:
  - {name: web, type: test.prob}
  - {name: web, type: test.probe}
  - name: db
    type: test.probe
    dependsOn: [cache, nope]
  - name: cache
    type: test.probe
    dependsOn: [db]
  - name: limits
    type: test.probe
    config: {min: 5, max: 1, colour: red}
  - name: bounds
    type: test.probe
    config: {min: 5, max: 1}
  - {name: kafka, type: messaging.kafka}
triggers:
  tick: {}
  cron: {}
";
    let invalid = validate(load(yaml), &registry()).unwrap_err();
    let found: Vec<(u32, &str, String)> = invalid
        .diagnostics
        .iter()
        .map(|d| (d.location.unwrap().line, d.code, d.message.clone()))
        .collect();
    let expected: Vec<(u32, &str, String)> = vec![
        (2, "unknown-type", "unknown module type `test.prob`".into()),
        (
            3,
            "duplicate-name",
            "module name `web` is already used".into(),
        ),
        (
            6,
            "dependency-cycle",
            "dependency cycle: db → cache → db".into(),
        ),
        (
            6,
            "unknown-module",
            "`dependsOn` names `nope`, which is not a module".into(),
        ),
        (
            12,
            "unknown-key",
            "unknown key `colour` in `test.probe` config".into(),
        ),
        (15, "invalid-config", "`min` must be less than `max`".into()),
        (
            16,
            "not-implemented",
            "module type `messaging.kafka` is not implemented in this build yet".into(),
        ),
        (
            18,
            "missing-key",
            "missing required key `name` in `tick` trigger".into(),
        ),
        // `cron` is in no catalogue: unknown, not "not implemented".
        (19, "unknown-type", "unknown trigger type `cron`".into()),
    ];
    assert_eq!(found, expected);
    let unknown = invalid.diagnostics.iter().next().unwrap();
    assert_eq!(unknown.help.as_deref(), Some("did you mean `test.probe`?"));
}

#[test]
fn duplicate_registration_is_refused() {
    let mut r = Registry::new();
    r.register_module::<ProbeType>().unwrap();
    let err = r.register_module::<ProbeType>().err().unwrap();
    assert_eq!(
        err.to_string(),
        "module type `test.probe` is registered twice"
    );
}
