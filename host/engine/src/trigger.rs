//! Triggers start pipelines from outside events. They start after every module and stop first.

use async_trait::async_trait;

use crate::module::{StartContext, StopContext};

#[async_trait]
pub trait Trigger: Send + Sync + 'static {
    async fn start(&self, ctx: &StartContext) -> anyhow::Result<()>;

    async fn stop(&self, _ctx: &StopContext) -> anyhow::Result<()> {
        Ok(())
    }
}
