//! Application-wide state shared with modules: readiness, the routes the app serves, and the
//! registered types (for the module-schemas endpoint).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::events::RunEvents;
use crate::journal::Journal;
use crate::pipeline::Pipelines;
use crate::registry::TypeInfo;
use crate::services::Services;
use crate::trigger::ActionTarget;

/// One HTTP route the application serves, for `wf-host inspect`, logs and the OpenAPI document.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RouteInfo {
    /// `None` for endpoint modules, which know their router but not which server serves it.
    pub server: Option<String>,
    pub router: String,
    pub method: String,
    pub path: String,
    pub handler: String,
    pub middlewares: Vec<String>,
    /// The JSON Schema the route's pipeline checks request data against, for API documents.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_schema: Option<serde_json::Value>,
    /// The status a successful request gets, when the pipeline fixes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_status: Option<u16>,
}

/// One scheduled job, for `wf-host inspect` and logs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ScheduleInfo {
    pub scheduler: String,
    pub job: String,
    pub cron: String,
    pub timezone: String,
    pub overlap: String,
    /// What a tick starts: `pipeline:<name>` or a module.
    pub target: String,
    /// The next few fire times (RFC 3339, in the job's timezone) as of when the app was built.
    pub next_runs: Vec<String>,
}

/// Shared by every module of one application.
#[derive(Debug)]
pub struct AppState {
    name: Option<String>,
    ready: AtomicBool,
    types: Arc<[TypeInfo]>,
    routes: Mutex<Vec<RouteInfo>>,
    schedules: Mutex<Vec<ScheduleInfo>>,
    /// Set once the app is built; cleared when it stops (modules hold this state, so keeping
    /// their services here would otherwise form a cycle).
    services: Mutex<Option<Arc<Services>>>,
    pipelines: Mutex<Arc<Pipelines>>,
    run_events: Arc<RunEvents>,
    action_targets: Mutex<HashMap<String, Arc<dyn ActionTarget>>>,
    /// Where each of the app's listeners (servers, webhook receivers) is bound, by name.
    listening: Mutex<HashMap<String, std::net::SocketAddr>>,
    /// Where the app keeps what must survive a restart (see [`crate::build::BuildOptions`]).
    data_dir: Option<PathBuf>,
    data_dir_exclusive: bool,
    /// The run journal, when the app records runs.
    journal: Mutex<Option<Arc<Journal>>>,
}

impl AppState {
    pub fn new(name: Option<String>, types: Arc<[TypeInfo]>) -> Self {
        AppState {
            name,
            ready: AtomicBool::new(false),
            types,
            routes: Mutex::default(),
            schedules: Mutex::default(),
            services: Mutex::default(),
            pipelines: Mutex::default(),
            run_events: Arc::default(),
            action_targets: Mutex::default(),
            listening: Mutex::default(),
            data_dir: None,
            data_dir_exclusive: false,
            journal: Mutex::default(),
        }
    }

    pub(crate) fn set_data_dir(self: &mut Arc<Self>, dir: Option<PathBuf>, exclusive: bool) {
        if let Some(state) = Arc::get_mut(self) {
            state.data_dir = dir;
            state.data_dir_exclusive = exclusive;
        }
    }

    /// Where the app keeps what must survive a restart when it declares no database (`None`
    /// when the host gave it nowhere: such state is kept in memory).
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }

    /// Whether this process holds the data directory's lock.
    pub fn data_dir_exclusive(&self) -> bool {
        self.data_dir_exclusive
    }

    /// The run journal, when the app records runs.
    pub fn journal(&self) -> Option<Arc<Journal>> {
        self.journal.lock().ok()?.clone()
    }

    pub(crate) fn set_journal(&self, journal: Option<Arc<Journal>>) {
        if let Ok(mut slot) = self.journal.lock() {
            *slot = journal;
        }
    }

    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// True once every module and trigger has started, false again when stopping begins.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Every type registered in this build.
    pub fn types(&self) -> &[TypeInfo] {
        &self.types
    }

    /// Every service of the app, for modules that resolve peers when they start.
    pub fn services(&self) -> Option<Arc<Services>> {
        self.services.lock().ok().and_then(|s| s.clone())
    }

    pub(crate) fn set_services(&self, services: Option<Arc<Services>>) {
        if let Ok(mut slot) = self.services.lock() {
            *slot = services;
        }
    }

    /// The application's named pipelines.
    pub fn pipelines(&self) -> Arc<Pipelines> {
        self.pipelines.lock().map(|p| p.clone()).unwrap_or_default()
    }

    pub(crate) fn set_pipelines(&self, pipelines: Arc<Pipelines>) {
        if let Ok(mut slot) = self.pipelines.lock() {
            *slot = pipelines;
        }
    }

    /// Where the app's pipelines send their lifecycle events (an event bus installs itself).
    pub fn run_events(&self) -> &Arc<RunEvents> {
        &self.run_events
    }

    pub fn routes(&self) -> Vec<RouteInfo> {
        self.routes.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn schedules(&self) -> Vec<ScheduleInfo> {
        self.schedules.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn add_schedule(&self, schedule: ScheduleInfo) {
        if let Ok(mut schedules) = self.schedules.lock() {
            schedules.push(schedule);
        }
    }

    /// Makes a workflow (a state machine definition, ...) startable by triggers under `name`.
    pub fn add_action_target(&self, name: &str, target: Arc<dyn ActionTarget>) {
        if let Ok(mut targets) = self.action_targets.lock() {
            targets.insert(name.to_string(), target);
        }
    }

    pub fn action_target(&self, name: &str) -> Option<Arc<dyn ActionTarget>> {
        self.action_targets.lock().ok()?.get(name).cloned()
    }

    /// Records where the listener `name` is bound (the real port when configured with `:0`).
    pub fn set_listening(&self, name: &str, address: std::net::SocketAddr) {
        if let Ok(mut listening) = self.listening.lock() {
            listening.insert(name.to_string(), address);
        }
    }

    /// Forgets where the listener `name` was bound (it stopped).
    pub fn clear_listening(&self, name: &str) {
        if let Ok(mut listening) = self.listening.lock() {
            listening.remove(name);
        }
    }

    /// Where the listener `name` (an `http.server` module, `webhook:<connector>`) is bound.
    pub fn listening(&self, name: &str) -> Option<std::net::SocketAddr> {
        self.listening.lock().ok()?.get(name).copied()
    }

    pub fn add_route(&self, route: RouteInfo) {
        if let Ok(mut routes) = self.routes.lock() {
            routes.push(route);
        }
    }
}
