//! `api.query`: a read handler whose routes run their steps with the original's query data
//! (`{method, path, queryName, query}`), else go to a delegate module, else answer 404.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use wf_engine::{BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType};

use crate::HttpHandler;
use crate::cqrs::{CqrsHandler, RoutePipelineHandler, check_delegate};
use crate::exchange::TriggerShape;

/// Configuration of `api.query` (and of `api.command`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CqrsConfig {
    /// A module that serves HTTP and answers this handler's routes that have no steps.
    #[serde(default)]
    pub delegate: Option<String>,
    /// Another name routes may use for this handler (the original registered handlers under
    /// `service_name`).
    #[serde(default)]
    pub service_name: Option<String>,
}

pub struct ApiQueryType;

impl Described for ApiQueryType {
    const NAME: &'static str = "api.query";
    const CATEGORY: Category = Category::Api;
    const PLUGIN: &'static str = "api";
    const DESCRIPTION: &'static str = "Read handler: its routes run their steps (query data: method, path, queryName, query), else a delegate, else 404.";
    type Config = CqrsConfig;
}

impl ModuleType for ApiQueryType {
    fn check(config: &CqrsConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        check_delegate(config.delegate.as_deref(), ctx)
    }

    fn references(config: &CqrsConfig, _: &CheckContext<'_>) -> Vec<String> {
        config.delegate.iter().cloned().collect()
    }

    fn build(config: CqrsConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Module>> {
        build_cqrs(config, ctx, TriggerShape::Query, "query")
    }
}

pub(crate) fn build_cqrs(
    config: CqrsConfig,
    ctx: &mut BuildContext<'_>,
    shape: TriggerShape,
    noun: &'static str,
) -> anyhow::Result<Arc<dyn Module>> {
    let delegate = config
        .delegate
        .as_deref()
        .map(|d| ctx.service::<dyn HttpHandler>(d))
        .transpose()?;
    let handler = Arc::new(CqrsHandler {
        shape,
        noun,
        delegate,
    });
    ctx.provide::<dyn HttpHandler>(handler.clone());
    ctx.provide::<dyn RoutePipelineHandler>(handler.clone());
    if let Some(alias) = config.service_name.as_deref().filter(|a| *a != ctx.name) {
        ctx.provide_as::<dyn HttpHandler>(alias, handler.clone());
        ctx.provide_as::<dyn RoutePipelineHandler>(alias, handler.clone());
    }
    Ok(handler)
}
