//! The journal's settings: the app's `runs:` section and each pipeline's own keys.

use std::path::Path;

use serde_json::Value;
use wf_config::parse_duration;
use wf_config::schema::{PipelineEntry, RetentionEntry, RunsSection};

use super::record::Retention;
use super::store::JournalTarget;
use crate::registry::ConfigIssue;

pub use wf_config::schema::RunsSection as RunsSettings;

/// Finished runs kept per pipeline by default.
pub const DEFAULT_MAX_RUNS: u64 = 1000;
/// How long finished runs are kept by default: a week.
pub const DEFAULT_MAX_AGE_MS: i64 = 7 * 24 * 3600 * 1000;
/// Largest recorded value by default.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 64 * 1024;
/// Durable runs going at once by default.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 10_000;
/// How long a silent host keeps its runs by default.
pub const DEFAULT_TAKEOVER_AFTER: std::time::Duration = std::time::Duration::from_secs(30);
/// Records waiting for the writer at most; beyond, runs wait for room.
pub const QUEUE_CAPACITY: usize = 16_384;

/// What the app's `runs:` section says, with defaults filled in.
#[derive(Clone, Debug)]
pub struct JournalSettings {
    /// Pipelines are journaled unless they say otherwise.
    pub journal: bool,
    /// Pipelines are durable unless they say otherwise.
    pub durable: bool,
    pub target: JournalTarget,
    pub retention: Retention,
    pub max_value_bytes: usize,
    pub max_in_flight: usize,
    pub queue_capacity: usize,
    /// How long a host may go unheard before its unfinished runs are taken over.
    pub takeover_after: std::time::Duration,
}

impl JournalSettings {
    /// The settings of an app whose `runs:` section is `section`, keeping its journal in
    /// `data_dir` unless it names a database. `None` when the app has nowhere to keep one and
    /// nothing asks for one (`pipelines_ask`: a pipeline says `journal` or `durable`).
    /// Problems are issues at pointers under `/runs`.
    pub fn from_section(
        section: Option<&Value>,
        data_dir: Option<&Path>,
        pipelines_ask: bool,
    ) -> Result<Option<JournalSettings>, ConfigIssue> {
        let runs: RunsSection = match section {
            None => RunsSection::default(),
            Some(value) => serde_json::from_value(value.clone())
                .map_err(|e| ConfigIssue::new("", e.to_string()))?,
        };
        let target = match (&runs.database, data_dir) {
            (Some(database), _) => JournalTarget::Database(database.clone()),
            (None, Some(dir)) => JournalTarget::DataDir(dir.to_path_buf()),
            (None, None) => JournalTarget::Memory,
        };
        // Checked even when no journal is kept, so a mistake is not found only later.
        let retention =
            retention(runs.retention.as_ref(), None).map_err(|(pointer, message)| {
                ConfigIssue::new(format!("/retention{pointer}"), message)
            })?;
        let takeover_after = match &runs.takeover_after {
            Some(text) => parse_duration(text)
                .ok()
                .filter(|d| *d >= std::time::Duration::from_secs(1))
                .ok_or_else(|| {
                    ConfigIssue::new(
                        "/takeover_after",
                        format!("`{text}` is not a duration of at least 1s, e.g. `30s`"),
                    )
                })?,
            None => DEFAULT_TAKEOVER_AFTER,
        };
        let has_home = !matches!(target, JournalTarget::Memory);
        let durable = runs.durable == Some(true);
        if !has_home && runs.journal != Some(true) && !durable && !pipelines_ask {
            return Ok(None);
        }
        Ok(Some(JournalSettings {
            journal: runs.journal.unwrap_or(has_home || durable),
            durable,
            target,
            retention,
            max_value_bytes: runs
                .max_value_bytes
                .map_or(DEFAULT_MAX_VALUE_BYTES, |b| b as usize),
            max_in_flight: runs
                .max_in_flight
                .map_or(DEFAULT_MAX_IN_FLIGHT, |n| n as usize),
            queue_capacity: QUEUE_CAPACITY,
            takeover_after,
        }))
    }
}

/// A pipeline's retention: its own entry over the app's `base` (the built-in defaults when
/// `base` is `None`). Errors: (pointer under the entry, message).
fn retention(
    entry: Option<&RetentionEntry>,
    base: Option<Retention>,
) -> Result<Retention, (String, String)> {
    let base = base.unwrap_or(Retention {
        max_runs: Some(DEFAULT_MAX_RUNS),
        max_age_ms: Some(DEFAULT_MAX_AGE_MS),
    });
    let Some(entry) = entry else {
        return Ok(base);
    };
    let max_age_ms = match &entry.max_age {
        Some(text) => Some(
            parse_duration(text)
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                .map_err(|e| ("/max_age".to_string(), e))?,
        ),
        None => base.max_age_ms,
    };
    Ok(Retention {
        max_runs: entry.max_runs.or(base.max_runs),
        max_age_ms,
    })
}

/// The retention of a pipeline declared as `entry` in an app whose default is `base`.
pub fn pipeline_retention(
    entry: &PipelineEntry,
    base: Retention,
) -> Result<Retention, ConfigIssue> {
    retention(entry.retention.as_ref(), Some(base))
        .map_err(|(pointer, message)| ConfigIssue::new(format!("/retention{pointer}"), message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_follow_where_the_journal_can_live() {
        // Nowhere to keep it and not asked for: off.
        assert!(
            JournalSettings::from_section(None, None, false)
                .unwrap()
                .is_none()
        );
        // A data directory: on, kept there, with the default retention.
        let settings = JournalSettings::from_section(None, Some(Path::new("/data")), false)
            .unwrap()
            .unwrap();
        assert!(settings.journal && !settings.durable);
        assert_eq!(settings.target, JournalTarget::DataDir("/data".into()));
        assert_eq!(settings.retention.max_runs, Some(DEFAULT_MAX_RUNS));
        // A pipeline asks, without a home: in memory, off for the others.
        let settings = JournalSettings::from_section(None, None, true)
            .unwrap()
            .unwrap();
        assert_eq!(settings.target, JournalTarget::Memory);
        assert!(!settings.journal);
        // Asked for without a home: in memory.
        let section = json!({"durable": true, "retention": {"max_runs": 5, "max_age": "1h"}});
        let settings = JournalSettings::from_section(Some(&section), None, false)
            .unwrap()
            .unwrap();
        assert_eq!(settings.target, JournalTarget::Memory);
        assert_eq!(
            settings.retention,
            Retention {
                max_runs: Some(5),
                max_age_ms: Some(3_600_000)
            }
        );
        // A database named: there.
        let section = json!({"database": "db"});
        let settings = JournalSettings::from_section(Some(&section), None, false)
            .unwrap()
            .unwrap();
        assert_eq!(settings.target, JournalTarget::Database("db".into()));
        // Switched off with a data directory: settings, journal off.
        let section = json!({"journal": false});
        let settings = JournalSettings::from_section(Some(&section), Some(Path::new("/d")), false)
            .unwrap()
            .unwrap();
        assert!(!settings.journal);
    }

    #[test]
    fn a_bad_retention_is_located() {
        let section = json!({"retention": {"max_age": "soon"}});
        let issue = JournalSettings::from_section(Some(&section), None, false).unwrap_err();
        assert_eq!(issue.pointer, "/retention/max_age");
    }
}
