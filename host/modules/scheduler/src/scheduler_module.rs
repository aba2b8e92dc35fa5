//! `scheduler.modular`: a cron scheduler. Its `cronExpression` is the schedule of the jobs the
//! `scheduler` workflow gives it; `schedule` trigger jobs may bring their own.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType, StartContext,
    StopContext, async_trait,
};

use crate::cron::{CronScheduler, Overlap, Schedule};

/// Configuration of `scheduler.modular`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    /// When this scheduler's jobs run: 5 fields (`0 * * * *`: hourly) or 6 with seconds first
    /// (`*/10 * * * * *`). Jobs of a `schedule` trigger may set their own.
    #[serde(default, rename = "cronExpression")]
    pub cron_expression: Option<String>,
    /// The IANA timezone the expressions are read in (`Europe/Berlin`); daylight-saving
    /// changes are followed.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// A tick that comes while the job's previous run is still going: `skip` (default),
    /// `allow` (run beside it) or `queue` (run after it).
    #[serde(default)]
    pub overlap: Overlap,
    /// A description, as documentation.
    #[serde(default)]
    pub description: Option<String>,
}

fn default_timezone() -> String {
    "UTC".to_string()
}

impl SchedulerConfig {
    /// This scheduler's own schedule, when it has one.
    pub fn schedule(&self) -> Result<Option<Schedule>, String> {
        self.cron_expression
            .as_deref()
            .map(|c| Schedule::parse(c, &self.timezone))
            .transpose()
    }
}

pub struct SchedulerModuleType;

impl Described for SchedulerModuleType {
    const NAME: &'static str = "scheduler.modular";
    const CATEGORY: Category = Category::Scheduling;
    // The original's plugin group for its `modular` compatibility types.
    const PLUGIN: &'static str = "modular-compat";
    const DESCRIPTION: &'static str = "Cron scheduler (seconds optional) with a timezone and an overlap policy; runs the jobs of `scheduler` workflows and `schedule` triggers.";
    type Config = SchedulerConfig;
}

impl ModuleType for SchedulerModuleType {
    fn check(config: &SchedulerConfig, _ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        match config.schedule() {
            Ok(_) => Vec::new(),
            Err(e) => {
                let pointer = if e.contains("timezone") {
                    "/timezone"
                } else {
                    "/cronExpression"
                };
                vec![ConfigIssue::new(pointer, e)]
            }
        }
    }

    fn build(
        config: SchedulerConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        let module = Arc::new(SchedulerModule {
            scheduler: CronScheduler::new(ctx.name),
            settings: config,
        });
        ctx.provide::<SchedulerModule>(module.clone());
        Ok(module)
    }
}

pub struct SchedulerModule {
    pub scheduler: Arc<CronScheduler>,
    pub settings: SchedulerConfig,
}

impl wf_engine::ServiceKind for SchedulerModule {
    const LABEL: &'static str = "a `scheduler.modular`";
}

#[async_trait]
impl Module for SchedulerModule {
    async fn start(&self, ctx: &StartContext) -> anyhow::Result<()> {
        // Offline (`wf-host run-pipeline`) nothing ticks: the command must not fire the jobs.
        if ctx.serving {
            self.scheduler.start();
        }
        Ok(())
    }

    async fn stop(&self, ctx: &StopContext) -> anyhow::Result<()> {
        self.scheduler.stop(ctx.deadline).await
    }
}
