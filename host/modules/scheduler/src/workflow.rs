//! The `scheduler` workflow: job modules run on a scheduler's ticks.
//!
//! ```yaml
//! workflows:
//!   scheduler:
//!     jobs:
//!       - {scheduler: hourly, job: cleanup-job, config: {olderThan: 30d}}
//!       - {scheduler: hourly, pipeline: report}
//! ```
//!
//! A `job` module (e.g. a `messaging.handler`) receives `{job, scheduler, scheduled_at, config}`
//! on the topic `scheduler.<scheduler>`; a `pipeline` gets `config`'s fields plus `job`,
//! `scheduler` and `scheduled_at` as its data.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use wf_engine::{Category, CheckContext, ConfigIssue, Described, WireContext, WorkflowType};
use wf_messaging::MessageHandler;

use crate::cron::Job;
use crate::scheduler_module::SchedulerModule;
use crate::{NotifyHandler, RunPipeline, add_job};

/// Configuration of the `scheduler` workflow.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SchedulerWorkflowConfig {
    /// Which job runs on which scheduler.
    pub jobs: Vec<SchedulerJob>,
}

/// One job on one scheduler.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SchedulerJob {
    /// The `scheduler.modular` whose `cronExpression` times this job.
    pub scheduler: String,
    /// A module that receives each tick as a message (a `messaging.handler`, ...).
    #[serde(default)]
    pub job: Option<String>,
    /// A pipeline to run on each tick instead of a module.
    #[serde(default)]
    pub pipeline: Option<String>,
    /// Settings handed to the job with every tick.
    #[serde(default)]
    pub config: Map<String, Value>,
}

pub struct SchedulerWorkflow;

impl Described for SchedulerWorkflow {
    const NAME: &'static str = "scheduler";
    const CATEGORY: Category = Category::Scheduling;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "Runs job modules or pipelines on the ticks of `scheduler.modular` modules.";
    type Config = SchedulerWorkflowConfig;
}

impl WorkflowType for SchedulerWorkflow {
    fn check(config: &SchedulerWorkflowConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        for (i, job) in config.jobs.iter().enumerate() {
            let at = |suffix: &str| format!("/jobs/{i}{suffix}");
            match ctx.module_type(&job.scheduler) {
                Some("scheduler.modular") => {
                    let has_cron = ctx
                        .config
                        .module(&job.scheduler)
                        .is_some_and(|m| m.config.get("cronExpression").is_some());
                    if !has_cron {
                        issues.push(
                            ConfigIssue::new(
                                at("/scheduler"),
                                format!("scheduler `{}` has no `cronExpression`, so this job would never run", job.scheduler),
                            )
                            .help("give the scheduler a `cronExpression`, or use a `schedule` trigger with its own `cron`"),
                        );
                    }
                }
                Some(other) => issues.push(ConfigIssue::new(
                    at("/scheduler"),
                    format!(
                        "`{}` is a `{other}` module, not a `scheduler.modular`",
                        job.scheduler
                    ),
                )),
                None => issues.extend(ctx.require_module(
                    &at("/scheduler"),
                    &job.scheduler,
                    "scheduler",
                )),
            }
            match (&job.job, &job.pipeline) {
                (Some(module), None) => {
                    issues.extend(ctx.require_module(&at("/job"), module, "job"))
                }
                (None, Some(pipeline)) => {
                    issues.extend(ctx.require_pipeline(&at("/pipeline"), pipeline))
                }
                _ => issues.push(
                    ConfigIssue::new(
                        at(""),
                        "a job names either a module (`job`) or a `pipeline`",
                    )
                    .help("add `job: <module>` or `pipeline: <name>`"),
                ),
            }
        }
        issues
    }

    fn configure(config: SchedulerWorkflowConfig, ctx: &mut WireContext<'_>) -> anyhow::Result<()> {
        for (i, entry) in config.jobs.into_iter().enumerate() {
            let module = ctx.service::<SchedulerModule>(&entry.scheduler)?;
            let schedule = match module.settings.schedule() {
                Ok(Some(schedule)) => schedule,
                Ok(None) => continue, // reported by `check`
                Err(e) => anyhow::bail!("scheduler `{}`: {e}", entry.scheduler),
            };
            let (name, target, action): (String, String, Arc<dyn crate::JobAction>) =
                match (&entry.job, &entry.pipeline) {
                    (Some(job), _) => {
                        let handler = match ctx.service::<dyn MessageHandler>(job) {
                            Ok(handler) => handler,
                            Err(e) => {
                                ctx.issue(ConfigIssue::new(
                                    format!("/jobs/{i}/job"),
                                    e.to_string(),
                                ));
                                continue;
                            }
                        };
                        let action = Arc::new(NotifyHandler {
                            handler,
                            config: Value::Object(entry.config),
                        });
                        (job.clone(), job.clone(), action)
                    }
                    (None, Some(name)) => {
                        let Some(pipeline) = ctx.pipeline(name) else {
                            ctx.issue(ConfigIssue::new(
                                format!("/jobs/{i}/pipeline"),
                                format!("no pipeline named `{name}`"),
                            ));
                            continue;
                        };
                        let action = Arc::new(RunPipeline {
                            dispatch: wf_engine::Dispatch::Pipeline(pipeline),
                            params: entry.config,
                        });
                        (
                            format!("pipeline:{name}"),
                            format!("pipeline:{name}"),
                            action,
                        )
                    }
                    (None, None) => continue,
                };
            let job = Job::new(name, schedule, module.settings.overlap, action);
            add_job(ctx.app, &module.scheduler, job, target);
        }
        Ok(())
    }
}
