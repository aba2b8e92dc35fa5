//! The pipeline executor's rules, with small test-only step types.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use wf_engine::{
    BuildContext, Category, Described, ErrorKind, Extensions, Next, PipelineContext, PipelineError,
    Registry, Step, StepError, StepOutput, StepType, async_trait, build, validate,
};

/// Sets `key: value`, optionally jumps, fails, sleeps or fails transiently.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ProbeConfig {
    /// Key to set.
    #[serde(default)]
    key: Option<String>,
    /// Value to set.
    #[serde(default)]
    value: Option<Value>,
    /// Jump here afterwards.
    #[serde(default)]
    jump: Option<String>,
    /// Jump here while `count` (in current) is below `until`.
    #[serde(default)]
    loop_to: Option<String>,
    /// Loop bound.
    #[serde(default)]
    until: Option<i64>,
    /// Fail with this error kind.
    #[serde(default)]
    fail: Option<ErrorKind>,
    /// Fail this many times, then succeed.
    #[serde(default)]
    fail_times: u32,
    /// Sleep this long first.
    #[serde(default)]
    sleep_ms: u64,
    /// Declared branch targets.
    #[serde(default)]
    branches: Vec<String>,
}

struct Probe {
    config: ProbeConfig,
    calls: AtomicU32,
}

struct ProbeType;
impl Described for ProbeType {
    const NAME: &'static str = "test.step";
    const CATEGORY: Category = Category::Pipeline;
    const PLUGIN: &'static str = "test";
    const DESCRIPTION: &'static str = "A configurable test step.";
    type Config = ProbeConfig;
}
impl StepType for ProbeType {
    fn build(config: ProbeConfig, _: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Step>> {
        Ok(Arc::new(Probe {
            config,
            calls: AtomicU32::new(0),
        }))
    }
}

#[async_trait]
impl Step for Probe {
    async fn run(&self, ctx: &PipelineContext) -> Result<StepOutput, StepError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.config.sleep_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.config.sleep_ms)).await;
        }
        if call <= self.config.fail_times {
            return Err(StepError::unavailable(format!("attempt {call} failed")));
        }
        if let Some(kind) = self.config.fail {
            return Err(StepError::new(kind, "boom"));
        }
        let mut values = Map::new();
        if let (Some(k), Some(v)) = (&self.config.key, &self.config.value) {
            values.insert(k.clone(), v.clone());
        }
        let count = ctx
            .current
            .get("count")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        values.insert("count".into(), json!(count + 1));
        values.insert("trail".into(), {
            let mut trail = ctx
                .current
                .get("trail")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            trail.push(json!(ctx.meta["pipeline"].clone()));
            Value::Array(trail)
        });
        let next = match (&self.config.loop_to, self.config.until) {
            (Some(target), Some(until)) if count + 1 < until => Next::Jump(target.clone()),
            _ => self.config.jump.clone().map_or(Next::Continue, Next::Jump),
        };
        Ok(StepOutput { values, next })
    }

    fn branch_targets(&self) -> Vec<String> {
        self.config.branches.clone()
    }
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register_step::<ProbeType>().unwrap();
    r
}

async fn run(yaml: &str, name: &str) -> Result<PipelineContext, PipelineError> {
    let registry = registry();
    let loaded = wf_config::load_str("app.yaml", yaml, &HashMap::<String, String>::new());
    let validated = validate(loaded, &registry)
        .unwrap_or_else(|i| panic!("{}", i.diagnostics.render(&i.config.sources)));
    let app = build(&validated, &registry).unwrap_or_else(|d| panic!("{d:?}"));
    let pipeline = app.state().pipelines().get(name).unwrap();
    pipeline
        .run(Map::new(), Extensions::default())
        .await
        .map(|o| o.context)
}

fn ran(ctx: &PipelineContext) -> Vec<&str> {
    ctx.steps.keys().map(String::as_str).collect()
}

#[tokio::test]
async fn outputs_merge_into_current_and_steps() {
    let ctx = run(
        "pipelines:
  p:
    steps:
      - {name: a, type: test.step, config: {key: x, value: 1}}
      - {name: b, type: test.step, config: {key: x, value: 2}}
",
        "p",
    )
    .await
    .unwrap();
    assert_eq!(ctx.current["x"], 2);
    assert_eq!(ctx.steps["a"]["x"], 1);
    assert_eq!(ctx.current["count"], 2);
    assert_eq!(ctx.meta["pipeline"], "p");
    assert!(ctx.meta.contains_key("run_id") && ctx.meta.contains_key("completed_at"));
}

#[tokio::test]
async fn a_chosen_branch_does_not_fall_through_into_the_others() {
    let ctx = run(
        "pipelines:
  p:
    steps:
      - {name: route, type: test.step, config: {jump: success, branches: [success, failure, unknown]}}
      - {name: success, type: test.step, config: {key: status, value: ok}}
      - {name: failure, type: test.step, config: {key: status, value: failed}}
      - {name: unknown, type: test.step, config: {key: status, value: unknown}}
      - {name: after, type: test.step, config: {key: done, value: true}}
",
        "p",
    )
    .await
    .unwrap();
    assert_eq!(ran(&ctx), ["route", "success", "after"]);
    assert_eq!(ctx.current["status"], "ok");
}

#[tokio::test]
async fn backward_jumps_loop_and_the_guard_stops_runaway_loops() {
    let ctx = run(
        "pipelines:
  p:
    steps:
      - {name: body, type: test.step}
      - {name: again, type: test.step, config: {loop_to: body, until: 6}}
",
        "p",
    )
    .await
    .unwrap();
    assert_eq!(ctx.current["count"], 6);

    let err = run(
        "pipelines:
  p:
    max_steps: 50
    steps:
      - {name: forever, type: test.step, config: {jump: forever, branches: []}}
",
        "p",
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.message,
        "pipeline `p` stopped after 50 steps: a jump loops (raise `max_steps` if the loop is intended)"
    );
}

#[tokio::test]
async fn on_error_stop_skip_and_compensate() {
    let err = run(
        "pipelines:
  p:
    steps:
      - {name: a, type: test.step}
      - {name: b, type: test.step, config: {fail: invalid-input}}
      - {name: c, type: test.step}
",
        "p",
    )
    .await
    .unwrap_err();
    assert_eq!(
        (err.step.as_deref(), err.kind, err.message.as_str()),
        (Some("b"), ErrorKind::InvalidInput, "step `b` failed: boom")
    );

    let ctx = run(
        "pipelines:
  p:
    on_error: skip
    steps:
      - {name: b, type: test.step, config: {fail: internal}}
      - {name: c, type: test.step}
",
        "p",
    )
    .await
    .unwrap();
    assert_eq!(ctx.steps["b"], json!({"_error": "boom", "_skipped": true}));
    assert_eq!(ran(&ctx), ["b", "c"]);

    let err = run(
        "pipelines:
  p:
    on_error: compensate
    steps:
      - {name: a, type: test.step}
      - {name: b, type: test.step, config: {fail: internal}}
    compensation:
      - {name: undo-a, type: test.step}
      - {name: undo-b, type: test.step, config: {fail: internal}}
",
        "p",
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.message,
        "step `b` failed: boom (compensation also failed: step `undo-b`: boom)"
    );
}

#[tokio::test]
async fn retries_transient_failures_only() {
    let ctx = run(
        "pipelines:
  p:
    steps:
      - name: flaky
        type: test.step
        config: {fail_times: 2, key: ok, value: true}
        retry: {max_attempts: 3, backoff: 1ms}
",
        "p",
    )
    .await
    .unwrap();
    assert_eq!(ctx.current["ok"], true);

    let err = run(
        "pipelines:
  p:
    steps:
      - name: flaky
        type: test.step
        config: {fail_times: 5}
        retry: {max_attempts: 2, backoff: 1ms}
",
        "p",
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.message,
        "step `flaky` failed: attempt 2 failed (after 2 attempts)"
    );

    let err = run(
        "pipelines:
  p:
    steps:
      - name: bad
        type: test.step
        config: {fail: invalid-input}
        retry: {max_attempts: 5, backoff: 1ms}
",
        "p",
    )
    .await
    .unwrap_err();
    assert_eq!(err.message, "step `bad` failed: boom");
}

#[tokio::test]
async fn step_and_pipeline_timeouts_cancel_the_running_step() {
    let err = run(
        "pipelines:
  p:
    steps:
      - {name: slow, type: test.step, timeout: 20ms, config: {sleep_ms: 5000}}
",
        "p",
    )
    .await
    .unwrap_err();
    assert_eq!(
        (err.kind, err.message.as_str()),
        (
            ErrorKind::Timeout,
            "step `slow` failed: timed out after 20ms"
        )
    );

    let started = std::time::Instant::now();
    let err = run(
        "pipelines:
  p:
    timeout: 30ms
    steps:
      - {name: slow, type: test.step, config: {sleep_ms: 5000}}
",
        "p",
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.message,
        "step `slow` failed: pipeline `p` ran past its deadline (the pipeline's `timeout`)"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn a_route_to_a_missing_step_is_a_build_error() {
    let registry = registry();
    let loaded = wf_config::load_str(
        "app.yaml",
        "pipelines:\n  p:\n    steps:\n      - {name: r, type: test.step, config: {branches: [nope]}}\n",
        &HashMap::<String, String>::new(),
    );
    let validated = validate(loaded, &registry).unwrap();
    let diagnostics = build(&validated, &registry).unwrap_err();
    let d = diagnostics.iter().next().unwrap();
    assert_eq!(
        d.message,
        "step `r` routes to `nope`, which is not a step of pipeline `p`"
    );
    assert_eq!(d.location.map(|l| l.line), Some(4));
}
