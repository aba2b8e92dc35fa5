//! Starting and stopping a built application.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, timeout_at};

use crate::build::{App, BuiltModule, BuiltTrigger};
use crate::module::{StartContext, StopContext};
use crate::state::AppState;

/// A module or trigger that failed to start. Everything started before it has been stopped.
#[derive(Debug, thiserror::Error)]
#[error("{what} failed to start: {source:#}")]
pub struct StartError {
    /// "module `api-server` (`http.server`)" or "trigger `http`".
    pub what: String,
    pub source: anyhow::Error,
}

/// A running application.
pub struct RunningApp {
    state: Arc<AppState>,
    modules: Vec<BuiltModule>,
    triggers: Vec<BuiltTrigger>,
}

impl std::fmt::Debug for RunningApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningApp")
            .field("modules", &self.modules.len())
            .finish_non_exhaustive()
    }
}

impl App {
    /// Starts modules in order (those taking traffic after the rest and the run journal),
    /// then triggers; marks the app ready. On the first failure, stops
    /// what already started (in reverse) and reports which module failed and why.
    pub async fn start(self, grace: Duration) -> Result<RunningApp, StartError> {
        self.start_with(grace, true).await
    }

    /// Starts only what does not take traffic, and no triggers: brokers, databases and
    /// components are ready, but no server binds and nothing starts runs on its own. For running
    /// one pipeline from the command line (`wf-host run-pipeline`) beside a running app.
    pub async fn start_offline(self, grace: Duration) -> Result<RunningApp, StartError> {
        self.start_with(grace, false).await
    }

    async fn start_with(self, grace: Duration, serve: bool) -> Result<RunningApp, StartError> {
        let ctx = StartContext {
            app: self.state.clone(),
            serving: serve,
        };
        let mut running = RunningApp {
            state: self.state,
            modules: Vec::new(),
            triggers: Vec::new(),
        };
        // Modules that take traffic start last, after the journal, so no run begins before
        // it can be recorded; each group keeps its declared order.
        let (traffic, quiet): (Vec<_>, Vec<_>) = self
            .modules
            .into_iter()
            .partition(|built| built.module.takes_traffic());
        for built in quiet {
            if let Err(e) = running.start_module(built, &ctx).await {
                running.stop(grace).await;
                return Err(e);
            }
        }
        // The journal after its database (a module) and before anything starts runs.
        if let Some(journal) = running.state.journal()
            && let Err(e) = journal.start(&running.state, serve).await
        {
            let what = format!("the run journal ({})", journal.store().describe());
            running.stop(grace).await;
            return Err(StartError {
                what,
                source: anyhow::Error::new(e),
            });
        }
        for built in traffic.into_iter().filter(|_| serve) {
            if let Err(e) = running.start_module(built, &ctx).await {
                running.stop(grace).await;
                return Err(e);
            }
        }
        for built in self.triggers.into_iter().filter(|_| serve) {
            if let Err(source) = built.trigger.start(&ctx).await {
                let what = format!("trigger `{}`", built.label);
                running.stop(grace).await;
                return Err(StartError { what, source });
            }
            running.triggers.push(built);
        }
        running.state.set_ready(true);
        Ok(running)
    }
}

impl RunningApp {
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Starts one module; kept for stopping once started.
    async fn start_module(
        &mut self,
        built: BuiltModule,
        ctx: &StartContext,
    ) -> Result<(), StartError> {
        tracing::debug!(module = %built.name, r#type = %built.type_name, "starting module");
        if let Err(source) = built.module.start(ctx).await {
            let what = format!("module `{}` (`{}`)", built.name, built.type_name);
            return Err(StartError { what, source });
        }
        self.modules.push(built);
        Ok(())
    }

    /// Stops triggers, then modules in reverse start order, giving each what is left of `grace`.
    /// Problems are logged, and stopping goes on: a failing module must not keep others running.
    /// Returns how many modules or triggers did not stop cleanly.
    pub async fn stop(mut self, grace: Duration) -> usize {
        self.state.set_ready(false);
        let deadline = Instant::now() + grace;
        let ctx = StopContext { deadline };
        let mut failures = 0;
        while let Some(built) = self.triggers.pop() {
            match timeout_at(deadline, built.trigger.stop(&ctx)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    failures += 1;
                    tracing::error!(trigger = %built.label, error = %format!("{e:#}"), "trigger failed to stop");
                }
                Err(_) => {
                    failures += 1;
                    tracing::error!(trigger = %built.label, "trigger did not stop within the grace period");
                }
            }
        }
        // Runs started by triggers are done or abandoned: the journal writes what it holds
        // before the modules (its database among them) stop.
        if let Some(journal) = self.state.journal() {
            journal
                .stop(deadline.max(Instant::now() + Duration::from_millis(500)))
                .await;
        }
        while let Some(built) = self.modules.pop() {
            // A module whose turn comes after the deadline still gets a moment to close.
            let deadline = deadline.max(Instant::now() + Duration::from_millis(100));
            match timeout_at(deadline, built.module.stop(&StopContext { deadline })).await {
                Ok(Ok(())) => tracing::debug!(module = %built.name, "stopped"),
                Ok(Err(e)) => {
                    failures += 1;
                    tracing::error!(module = %built.name, error = %format!("{e:#}"), "module failed to stop");
                }
                Err(_) => {
                    failures += 1;
                    tracing::error!(module = %built.name, "module did not stop within the grace period");
                }
            }
        }
        self.state.set_services(None);
        self.state.set_journal(None);
        self.state.run_events().clear();
        failures
    }
}
