//! Scheduling end to end, on a hand-moved clock (no test waits for a real tick): the original's scheduler
//! examples run their jobs, the `schedule` trigger starts pipelines in a timezone, and bad
//! schedules are located config errors.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use serde_json::Value;
use wf_config::load_str;
use wf_engine::{App, build, validate};
use wf_messaging::handler::LoggingHandler;
use wf_messaging::{MessageBroker, MessageHandler};
use wf_scheduler::ManualClock;
use wf_scheduler::scheduler_module::SchedulerModule;
use wf_tests::{build_on_loopback, eventually, example_vars, invalid_yaml, seed_examples};

/// Puts every scheduler of `app` on one manual clock starting at `start`.
fn manual_clock(app: &App, start: chrono::DateTime<Utc>) -> Arc<ManualClock> {
    let clock = Arc::new(ManualClock::new(start));
    for (_, module) in app.services().all::<SchedulerModule>() {
        module.scheduler.set_clock(clock.clone());
    }
    clock
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_jobs_example_runs_each_job_on_its_schedulers_tick() {
    let registry = wf_host::registry().unwrap();
    let app = build_on_loopback(
        &seed_examples().join("scheduled-jobs-config.yaml"),
        &registry,
    );
    // 23:59:30 on the last day of a month: the next minute is also the next hour and day.
    let clock = manual_clock(&app, Utc.with_ymd_and_hms(2026, 1, 31, 23, 59, 30).unwrap());
    let app = app.start(Duration::from_secs(5)).await.unwrap();
    let services = app.state().services().unwrap();
    let received = |name: &str| services.get::<LoggingHandler>(name).unwrap().received();

    clock.advance(chrono::Duration::seconds(20));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(received("health-check-job"), 0, "fired before its minute");

    // Midnight: every scheduler ticks once; each job forwards to `job-events`, which the
    // status store receives (the example's `producers`).
    clock.advance(chrono::Duration::seconds(10));
    let all_ran = eventually(Duration::from_secs(5), || async {
        [
            "report-generation-job",
            "data-cleanup-job",
            "health-check-job",
            "metrics-collection-job",
        ]
        .iter()
        .all(|job| received(job) == 1)
            && received("job-status-store") == 4
    })
    .await;
    assert!(all_ran, "status store saw {}", received("job-status-store"));

    // One more minute: only the minute scheduler's two jobs run again.
    clock.advance(chrono::Duration::seconds(60));
    let done = eventually(Duration::from_secs(5), || async {
        received("health-check-job") == 2 && received("metrics-collection-job") == 2
    })
    .await;
    assert!(done);
    assert_eq!(received("report-generation-job"), 1);
    assert_eq!(received("data-cleanup-job"), 1);
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_advanced_scheduler_example_runs_each_job_at_its_own_times() {
    let registry = wf_host::registry().unwrap();
    let app = build_on_loopback(
        &seed_examples().join("advanced-scheduler-workflow.yaml"),
        &registry,
    );
    assert_eq!(app.state().schedules().len(), 4);
    let clock = manual_clock(&app, Utc.with_ymd_and_hms(2026, 3, 1, 11, 59, 0).unwrap());
    let app = app.start(Duration::from_secs(5)).await.unwrap();
    let services = app.state().services().unwrap();
    let received = |name: &str| services.get::<LoggingHandler>(name).unwrap().received();
    // Noon: the minutely and hourly jobs run; the daily ones wait for midnight.
    clock.advance(chrono::Duration::minutes(1));
    let done = eventually(Duration::from_secs(5), || async {
        received("system-stats-job") == 1 && received("health-check-job") == 1
    })
    .await;
    assert!(done);
    assert_eq!(received("data-cleanup-job"), 0);
    assert_eq!(received("report-generator-job"), 0);
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

#[derive(Default)]
struct Collect(Mutex<Vec<Value>>);

#[wf_engine::async_trait]
impl MessageHandler for Collect {
    async fn handle(&self, _topic: &str, payload: Bytes) -> anyhow::Result<()> {
        self.0
            .lock()
            .unwrap()
            .push(serde_json::from_slice(&payload).unwrap());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_trigger_starts_its_pipeline_in_the_schedulers_timezone() {
    let yaml = r#"
modules:
  - {name: bus, type: messaging.broker}
  - {name: berlin, type: scheduler.modular, config: {timezone: Europe/Berlin}}
pipelines:
  morning-report:
    trigger: {type: schedule, config: {cron: "0 30 8 * * *", params: {kind: daily}}}
    steps:
      - name: out
        type: step.publish
        config: {topic: reports, payload: {kind: "{{ .kind }}", at: "{{ .scheduled_at }}", job: "{{ .job }}"}}
"#;
    let registry = wf_host::registry().unwrap();
    let validated = validate(load_str("app.yaml", yaml, &example_vars()), &registry)
        .unwrap_or_else(|i| panic!("{}", i.diagnostics.render(&i.config.sources)));
    let app = build(&validated, &registry).unwrap();
    let schedules = app.state().schedules();
    assert_eq!(schedules.len(), 1);
    assert_eq!(schedules[0].timezone, "Europe/Berlin");
    assert_eq!(schedules[0].next_runs.len(), 3);
    // 08:30 in Berlin in winter is 07:30 UTC.
    let clock = manual_clock(&app, Utc.with_ymd_and_hms(2026, 1, 15, 7, 0, 0).unwrap());
    let reports = Arc::new(Collect::default());
    app.services()
        .get::<dyn MessageBroker>("bus")
        .unwrap()
        .subscribe("reports", "test", reports.clone())
        .unwrap();
    let app = app.start(Duration::from_secs(5)).await.unwrap();
    clock.advance(chrono::Duration::minutes(29));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        reports.0.lock().unwrap().is_empty(),
        "ran before 08:30 Berlin time"
    );
    clock.advance(chrono::Duration::minutes(1));
    let ran = eventually(Duration::from_secs(5), || async {
        reports.0.lock().unwrap().len() == 1
    })
    .await;
    assert!(ran);
    let report = reports.0.lock().unwrap()[0].clone();
    assert_eq!(report["kind"], "daily");
    assert_eq!(report["at"], "2026-01-15T08:30:00+01:00");
    assert_eq!(report["job"], "pipeline:morning-report");
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

#[test]
fn bad_schedules_are_located_config_errors() {
    let rendered = invalid_yaml(
        r#"
modules:
  - {name: tz, type: scheduler.modular, config: {cronExpression: "* * * * *", timezone: Mars/Olympus}}
  - {name: no-cron, type: scheduler.modular}
  - {name: job, type: messaging.handler}
workflows:
  scheduler:
    jobs:
      - {scheduler: no-cron, job: job}
triggers:
  schedule:
    jobs:
      - {cron: "61 * * * *", pipeline: p, scheduler: tz}
pipelines:
  p:
    steps: [{name: s, type: step.set, config: {values: {a: 1}}}]
"#,
    );
    assert!(
        rendered.contains("`Mars/Olympus` is not an IANA timezone"),
        "{rendered}"
    );
    assert!(rendered.contains("app.yaml:3:"), "{rendered}");
    assert!(
        rendered.contains("scheduler `no-cron` has no `cronExpression`"),
        "{rendered}"
    );
    assert!(
        rendered.contains("`61 * * * *` is not a cron expression"),
        "{rendered}"
    );
}
