//! `api.command`: a write handler whose routes run their steps with the original's command data
//! (`{method, path, commandName, body}`), else go to a delegate module, else answer 404.

use std::sync::Arc;

use wf_engine::{BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType};

use crate::api_query::{CqrsConfig, build_cqrs};
use crate::cqrs::check_delegate;
use crate::exchange::TriggerShape;

pub struct ApiCommandType;

impl Described for ApiCommandType {
    const NAME: &'static str = "api.command";
    const CATEGORY: Category = Category::Api;
    const PLUGIN: &'static str = "api";
    const DESCRIPTION: &'static str = "Write handler: its routes run their steps (command data: method, path, commandName, body), else a delegate, else 404.";
    type Config = CqrsConfig;
}

impl ModuleType for ApiCommandType {
    fn check(config: &CqrsConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        check_delegate(config.delegate.as_deref(), ctx)
    }

    fn references(config: &CqrsConfig, _: &CheckContext<'_>) -> Vec<String> {
        config.delegate.iter().cloned().collect()
    }

    fn build(config: CqrsConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Module>> {
        build_cqrs(config, ctx, TriggerShape::Command, "command")
    }
}
