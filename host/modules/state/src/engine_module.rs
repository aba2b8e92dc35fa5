//! `statemachine.engine`: holds the `statemachine` workflow's definitions and their instances.
//! Instances live in the app's database (the one named by `database`, or the app's only
//! database module), so they survive restarts; an app without a database keeps them in memory
//! and says so at start.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType, StartContext,
    async_trait,
};
use wf_storage::{chosen_database, database_of};

use crate::engine::StateMachineEngine;

/// Configuration of `statemachine.engine`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Most instances that may be active (not completed) at once; creating one more is
    /// refused with 409.
    #[serde(default = "default_max_instances", rename = "maxInstances")]
    #[schemars(range(min = 1))]
    pub max_instances: usize,
    /// The database module keeping the instances. Default: the app's only database module;
    /// with none, instances are kept in memory and lost on restart.
    #[serde(default)]
    pub database: Option<String>,
}

fn default_max_instances() -> usize {
    1000
}

pub struct EngineType;

impl Described for EngineType {
    const NAME: &'static str = "statemachine.engine";
    const CATEGORY: Category = Category::StateMachine;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "State machine engine: instances of the `statemachine` workflow's definitions, kept in the app's database and moved by transitions.";
    type Config = EngineConfig;
}

impl ModuleType for EngineType {
    fn check(config: &EngineConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        database_of(config.database.as_deref(), ctx)
            .err()
            .into_iter()
            .collect()
    }

    fn references(config: &EngineConfig, ctx: &CheckContext<'_>) -> Vec<String> {
        database_of(config.database.as_deref(), ctx)
            .ok()
            .flatten()
            .into_iter()
            .collect()
    }

    fn build(config: EngineConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Module>> {
        let database = chosen_database(config.database.as_deref(), ctx)?;
        let engine = Arc::new(StateMachineEngine::new(
            ctx.name,
            database,
            config.max_instances,
        )?);
        ctx.provide::<StateMachineEngine>(engine.clone());
        Ok(Arc::new(EngineModule { engine }))
    }
}

struct EngineModule {
    engine: Arc<StateMachineEngine>,
}

#[async_trait]
impl Module for EngineModule {
    async fn start(&self, ctx: &StartContext) -> anyhow::Result<()> {
        if let Some(journal) = ctx.app.journal() {
            self.engine.set_journal(journal);
        }
        if self.engine.is_ephemeral() {
            tracing::info!(engine = %self.engine.name(), "state machine instances are kept in memory; add a database module to keep them across restarts");
        }
        self.engine.ready().await
    }
}
