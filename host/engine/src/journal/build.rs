//! Making an app's journal from its `runs:` section while the app is built.

use std::sync::Arc;

use serde_json::Value;
use wf_config::Diagnostic;
use wf_config::{AppConfig, DocId, Origin};

use super::store::JournalTarget;
use super::{Journal, JournalSettings};
use crate::registry::{ConfigIssue, Registry};
use crate::services::Services;
use crate::state::AppState;
use crate::validate::issue_diagnostic;

/// Makes the app's journal, when it has one, and gives it to `state`. The app's modules are
/// built (a `runs.database` is one of them); nothing connects yet.
pub(crate) fn journal(
    config: &AppConfig,
    registry: &Registry,
    services: &Services,
    state: &Arc<AppState>,
) -> Result<(), Box<Diagnostic>> {
    let (section, origin) = match config.sections.iter().find(|(key, _, _)| key == "runs") {
        Some((_, value, origin)) => (Some(value), origin.clone()),
        None => (
            None,
            Origin {
                doc: DocId(0),
                pointer: String::new(),
            },
        ),
    };
    let asks = |key: &str| {
        config
            .pipelines
            .iter()
            .any(|p| p.value.get(key).and_then(Value::as_bool) == Some(true))
    };
    let pipelines_ask = asks("durable") || asks("journal");
    let located = |issue: ConfigIssue| Box::new(issue_diagnostic(config, issue, &origin, None));
    let settings =
        JournalSettings::from_section(section, state.data_dir(), pipelines_ask).map_err(located)?;
    let Some(settings) = settings else {
        return Ok(());
    };
    let Some(backend) = registry.journal_backend() else {
        return Err(located(ConfigIssue::new(
            "",
            "this build of wf has no run journal store; the app's `runs` settings cannot be met",
        )));
    };
    let name = config.name.clone().unwrap_or_default();
    let store = backend
        .store(&settings.target, services, &name)
        .map_err(|e| {
            let pointer = match settings.target {
                JournalTarget::Database(_) => "/database",
                _ => "",
            };
            located(ConfigIssue::new(pointer, format!("{e:#}")))
        })?;
    let journal = Journal::new(store, settings, &name, state.run_events().clone());
    state.set_journal(Some(Arc::new(journal)));
    Ok(())
}
