//! The `schedule` trigger: pipelines started on cron ticks.
//!
//! ```yaml
//! triggers:
//!   schedule:
//!     jobs:
//!       - {cron: "0 */15 * * * *", pipeline: sync, params: {full: false}}
//! pipelines:
//!   nightly:
//!     trigger: {type: schedule, config: {cron: "0 2 * * *", timezone: Europe/Berlin}}
//! ```
//!
//! A job uses the named (or the app's only) `scheduler.modular` — its timezone, overlap policy
//! and, when the job has no `cron`, its `cronExpression`. An app without one gets a scheduler
//! owned by the trigger (UTC, overlap `skip`, unless the job says otherwise).

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use wf_engine::{
    Category, CheckContext, ConfigIssue, Described, StartContext, StopContext, Trigger,
    TriggerType, WireContext, async_trait,
};

use crate::cron::{CronScheduler, Job, Overlap, Schedule};
use crate::scheduler_module::SchedulerModule;
use crate::{RunPipeline, add_job};

/// Configuration of the `schedule` trigger.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleTriggerConfig {
    /// Jobs, each starting a pipeline on its schedule.
    pub jobs: Vec<ScheduleJob>,
}

/// One scheduled pipeline.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleJob {
    /// When it runs: 5 fields, or 6 with seconds first. Defaults to the scheduler's
    /// `cronExpression`.
    #[serde(default)]
    pub cron: Option<String>,
    /// IANA timezone for `cron`; defaults to the scheduler's (else `UTC`).
    #[serde(default)]
    pub timezone: Option<String>,
    /// Overlap policy; defaults to the scheduler's (else `skip`).
    #[serde(default)]
    pub overlap: Option<Overlap>,
    /// The `scheduler.modular` to run on; optional when the app has at most one.
    #[serde(default)]
    pub scheduler: Option<String>,
    /// What the entry starts: `pipeline` (or the original's `workflow`, `action`) and `params`.
    #[serde(flatten)]
    pub target: wf_engine::TriggerTarget,
    /// The job's name in logs and `inspect`; defaults to `pipeline:<pipeline>`.
    #[serde(default)]
    pub name: Option<String>,
}

pub struct ScheduleTriggerType;

impl Described for ScheduleTriggerType {
    const NAME: &'static str = "schedule";
    const CATEGORY: Category = Category::Scheduling;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "Starts pipelines on cron schedules (seconds, timezones, overlap policies).";
    type Config = ScheduleTriggerConfig;
}

/// The scheduler a job uses: the named one, else the app's only one, else none (the trigger's
/// own).
fn scheduler_of(job: &ScheduleJob, ctx: &CheckContext<'_>) -> Result<Option<String>, ConfigIssue> {
    if job.scheduler.is_none() && ctx.modules_of_type(&["scheduler.modular"]).is_empty() {
        return Ok(None);
    }
    ctx.choose(
        job.scheduler.as_deref(),
        "scheduler",
        "scheduler",
        &["scheduler.modular"],
    )
    .map(Some)
}

impl TriggerType for ScheduleTriggerType {
    fn check(config: &ScheduleTriggerConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        for (i, job) in config.jobs.iter().enumerate() {
            let at = |suffix: &str| format!("/jobs/{i}{suffix}");
            issues.extend(job.target.check(ctx, &at("")));
            let scheduler = match scheduler_of(job, ctx) {
                Ok(s) => s,
                Err(mut issue) => {
                    issue.pointer = at(&issue.pointer);
                    issues.push(issue);
                    continue;
                }
            };
            let declared = |key: &str| {
                scheduler
                    .as_deref()
                    .and_then(|s| ctx.config.module(s))
                    .and_then(|m| m.config.get(key))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            let Some(cron) = job.cron.clone().or_else(|| declared("cronExpression")) else {
                issues.push(
                    ConfigIssue::new(
                        at(""),
                        "the job has no `cron`, and no scheduler gives it one",
                    )
                    .help("add `cron: \"0 * * * *\"` (5 fields, or 6 with seconds first)"),
                );
                continue;
            };
            let timezone = job
                .timezone
                .clone()
                .or_else(|| declared("timezone"))
                .unwrap_or_else(|| "UTC".into());
            if let Err(e) = Schedule::parse(&cron, &timezone) {
                let key = if e.contains("timezone") {
                    "/timezone"
                } else {
                    "/cron"
                };
                issues.push(ConfigIssue::new(at(key), e));
            }
        }
        issues
    }

    fn configure(
        config: ScheduleTriggerConfig,
        ctx: &mut WireContext<'_>,
    ) -> anyhow::Result<Arc<dyn Trigger>> {
        let own = CronScheduler::new("schedule-trigger");
        let mut uses_own = false;
        for (i, entry) in config.jobs.into_iter().enumerate() {
            let Some(dispatch) = entry.target.resolve(ctx.app) else {
                ctx.issue(ConfigIssue::new(
                    format!("/jobs/{i}"),
                    "the job names no pipeline or workflow",
                ));
                continue;
            };
            let target = dispatch.label();
            let module = match scheduler_of(&entry, &ctx.check())
                .map_err(|issue| anyhow::anyhow!(issue.message))?
            {
                Some(name) => Some(ctx.service::<SchedulerModule>(&name)?),
                None => None,
            };
            let settings = module.as_ref().map(|m| &m.settings);
            let cron = entry
                .cron
                .clone()
                .or_else(|| settings.and_then(|s| s.cron_expression.clone()))
                .ok_or_else(|| anyhow::anyhow!("job {i} has no cron expression"))?;
            let timezone = entry
                .timezone
                .clone()
                .or_else(|| settings.map(|s| s.timezone.clone()))
                .unwrap_or_else(|| "UTC".to_string());
            let schedule = Schedule::parse(&cron, &timezone).map_err(anyhow::Error::msg)?;
            let overlap = entry
                .overlap
                .or(settings.map(|s| s.overlap))
                .unwrap_or_default();
            let name = entry.name.clone().unwrap_or_else(|| target.clone());
            let job = Job::new(
                name,
                schedule,
                overlap,
                Arc::new(RunPipeline {
                    dispatch,
                    params: entry.target.params,
                }),
            );
            let scheduler = match &module {
                Some(module) => module.scheduler.clone(),
                None => {
                    uses_own = true;
                    own.clone()
                }
            };
            add_job(ctx.app, &scheduler, job, target);
        }
        Ok(Arc::new(ScheduleTrigger {
            own: uses_own.then_some(own),
        }))
    }

    /// `trigger: {type: schedule, config: {cron, timezone, overlap, params}}` → one job.
    fn inline(pipeline: &str, config: Value) -> Value {
        let mut job = match config {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        job.insert("pipeline".into(), Value::String(pipeline.to_string()));
        Value::Object(Map::from_iter([(
            "jobs".to_string(),
            Value::Array(vec![Value::Object(job)]),
        )]))
    }
}

/// Jobs on `scheduler.modular` modules tick with their module; the trigger runs its own
/// scheduler only for apps without one.
struct ScheduleTrigger {
    own: Option<Arc<CronScheduler>>,
}

#[async_trait]
impl Trigger for ScheduleTrigger {
    async fn start(&self, _: &StartContext) -> anyhow::Result<()> {
        if let Some(own) = &self.own {
            own.start();
        }
        Ok(())
    }

    async fn stop(&self, ctx: &StopContext) -> anyhow::Result<()> {
        match &self.own {
            Some(own) => own.stop(ctx.deadline).await,
            None => Ok(()),
        }
    }
}
