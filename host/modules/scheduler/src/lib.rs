//! Scheduling: `scheduler.modular` (a cron scheduler with a timezone and an overlap policy),
//! the `schedule` trigger that starts pipelines on cron ticks, and the `scheduler` workflow
//! that runs job modules on a scheduler's ticks. The original registered all three but none
//! could run (its scheduler module did not implement the interface they looked for).

use std::sync::Arc;

use serde_json::{Map, Value, json};
use wf_engine::{
    AppState, Dispatch, Extensions, Registry, RegistryError, ScheduleInfo, async_trait,
};
use wf_messaging::MessageHandler;

pub mod clock;
pub mod cron;
pub mod schedule_trigger;
pub mod scheduler_module;
pub mod workflow;

pub use clock::{Clock, ManualClock, SystemClock};
pub use cron::{CronScheduler, Job, JobAction, Overlap, Schedule, Tick};

pub const PLUGIN: &str = "scheduler";

/// How many upcoming fire times `inspect` lists per job.
const UPCOMING: usize = 3;

pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    registry
        .register_module::<scheduler_module::SchedulerModuleType>()?
        .register_workflow::<workflow::SchedulerWorkflow>()?
        .register_trigger::<schedule_trigger::ScheduleTriggerType>()?;
    Ok(())
}

/// Adds `job` to `scheduler` and records it for `wf-host inspect`.
pub(crate) fn add_job(app: &AppState, scheduler: &CronScheduler, job: Arc<Job>, target: String) {
    app.add_schedule(ScheduleInfo {
        scheduler: scheduler.name().to_string(),
        job: job.name.clone(),
        cron: job.schedule.pattern().to_string(),
        timezone: job.schedule.timezone().to_string(),
        overlap: job.overlap.as_str().to_string(),
        target,
        next_runs: job.schedule.upcoming(chrono::Utc::now(), UPCOMING),
    });
    scheduler.add(job);
}

/// A tick starts a pipeline (or fires a state machine transition) with `params` plus `job`
/// and `scheduled_at` as its data.
pub(crate) struct RunPipeline {
    pub dispatch: Dispatch,
    pub params: Map<String, Value>,
}

#[async_trait]
impl JobAction for RunPipeline {
    async fn fire(&self, tick: Tick) -> anyhow::Result<()> {
        let mut data = self.params.clone();
        data.insert("job".into(), json!(tick.job));
        data.insert("scheduler".into(), json!(tick.scheduler));
        data.insert("scheduled_at".into(), json!(tick.scheduled_at));
        self.dispatch
            .start(data, Extensions::default())
            .await
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.dispatch.label()))
    }
}

/// A tick hands a job module (a message handler) the message
/// `{job, scheduler, scheduled_at, config}` on the topic `scheduler.<scheduler>`.
pub(crate) struct NotifyHandler {
    pub handler: Arc<dyn MessageHandler>,
    pub config: Value,
}

#[async_trait]
impl JobAction for NotifyHandler {
    async fn fire(&self, tick: Tick) -> anyhow::Result<()> {
        let message = json!({
            "job": tick.job,
            "scheduler": tick.scheduler,
            "scheduled_at": tick.scheduled_at,
            "config": self.config,
        });
        self.handler
            .handle(
                &format!("scheduler.{}", tick.scheduler),
                bytes::Bytes::from(message.to_string()),
            )
            .await
    }
}
