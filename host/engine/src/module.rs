//! The runtime contract every module instance implements.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::state::AppState;

/// What a module gets when the application starts it.
#[derive(Clone)]
pub struct StartContext {
    pub app: Arc<AppState>,
    /// False for `wf-host run-pipeline` (see [`crate::App::start_offline`]): modules may
    /// connect (to publish, query, ...) but must not consume work on their own — no broker
    /// consumers, no scheduler ticks — or the command would take an app's messages or fire
    /// its jobs.
    pub serving: bool,
}

/// What a module gets when the application stops it.
#[derive(Clone, Copy, Debug)]
pub struct StopContext {
    /// In-flight work should be finished (or abandoned) by then; the engine moves on after it.
    pub deadline: Instant,
}

/// A running part of an application.
///
/// Lifecycle: built (by its type's factory, no I/O) → `start` (bind, connect; in `dependsOn`
/// order, after the modules it depends on) → `stop` (reverse order, within the deadline).
/// `stop` is only called on modules whose `start` succeeded.
#[async_trait]
pub trait Module: Send + Sync + 'static {
    async fn start(&self, _ctx: &StartContext) -> anyhow::Result<()> {
        Ok(())
    }

    async fn stop(&self, _ctx: &StopContext) -> anyhow::Result<()> {
        Ok(())
    }

    /// Whether the module takes traffic from outside (a server). Such modules start after every
    /// other module and stop before them, so nothing is served by a half-started or
    /// half-stopped application.
    fn takes_traffic(&self) -> bool {
        false
    }
}
