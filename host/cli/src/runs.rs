//! `wf-host runs`: the run journal from the command line — list, show, replay, cancel. It reads
//! and writes the same store the running app does; a replay is queued there and the running
//! app starts it, a cancel is asked there and the app's host stops the run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use wf_config::ProcessEnv;
use wf_engine::journal::{
    Journal, JournalTarget, RunDetail, RunPage, RunQuery, RunRequestError, RunStatus, RunSummary,
};
use wf_engine::{BuildOptions, Registry};

use crate::commands::{EXIT_FAILURE, EXIT_INVALID, EXIT_OK, prepare_with};

/// What `wf-host runs` does.
pub enum RunsAction {
    List {
        filter: RunFilter,
        json: bool,
    },
    Show {
        run_id: String,
        json: bool,
    },
    Replay {
        run_id: String,
        from: Option<String>,
        /// Wait up to this long for the replay to end.
        wait: Option<Duration>,
    },
    /// Replays every failed run the filter selects that no run replays yet.
    ReplayFailed {
        filter: RunFilter,
    },
    Cancel {
        run_id: String,
    },
}

/// Which runs: by pipeline, status and age, a page at a time.
#[derive(Clone, Debug, Default)]
pub struct RunFilter {
    pub pipeline: Option<String>,
    pub status: Option<String>,
    /// Runs started within this long.
    pub since: Option<Duration>,
    pub limit: usize,
    pub cursor: Option<String>,
}

impl RunFilter {
    fn query(&self) -> Result<RunQuery, String> {
        let status = match &self.status {
            Some(text) => Some(RunStatus::parse(text).ok_or_else(|| {
                let all: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
                format!("`{text}` is not a run status ({})", all.join(", "))
            })?),
            None => None,
        };
        let after = match &self.cursor {
            Some(text) => Some(
                RunPage::parse_cursor(text)
                    .ok_or_else(|| format!("`{text}` is not a cursor from `runs list`"))?,
            ),
            None => None,
        };
        Ok(RunQuery {
            pipeline: self.pipeline.clone(),
            status,
            since: self.since.map(|d| {
                wf_config::time::unix_millis_now() - i64::try_from(d.as_millis()).unwrap_or(0)
            }),
            until: None,
            unreplayed: false,
            limit: self.limit.clamp(1, wf_engine::journal::MAX_PAGE),
            after,
        })
    }
}

type Output = (u8, String, String);

fn refused(code: u8, message: impl std::fmt::Display) -> Output {
    (code, String::new(), format!("error: {message}\n"))
}

/// Runs `action` on the journal of the app in `files`. (exit code, stdout, stderr).
pub async fn runs_command(
    files: &[PathBuf],
    data_dir: Option<&Path>,
    action: RunsAction,
    registry: &Registry,
) -> Output {
    let options = BuildOptions {
        data_dir: Some(crate::data_dir::resolve(data_dir, files)),
        exclusive: false,
    };
    let built = match prepare_with(files, registry, &ProcessEnv, &options).await {
        Ok(built) => built,
        Err(rejected) => return (EXIT_INVALID, String::new(), rejected.render()),
    };
    let Some(journal) = built.app.state().journal() else {
        return refused(
            EXIT_INVALID,
            "this app records no runs (its `runs.journal` is off)",
        );
    };
    if let JournalTarget::DataDir(dir) = &journal.settings().target
        && !dir.join("runs.db").exists()
    {
        let message = format!(
            "no runs recorded yet: there is no journal in {} (runs are recorded while `wf-host run` runs the app)",
            dir.display()
        );
        return match action {
            RunsAction::List { json: true, .. } => {
                (EXIT_OK, "{\"runs\": []}\n".to_string(), String::new())
            }
            RunsAction::List { .. } => (EXIT_OK, format!("{message}\n"), String::new()),
            _ => refused(EXIT_INVALID, message),
        };
    }
    if let Err(e) = journal.store().open().await {
        return refused(EXIT_FAILURE, e);
    }
    let out = act(&journal, action).await;
    journal.store().close().await;
    out
}

async fn act(journal: &Arc<Journal>, action: RunsAction) -> Output {
    let store = journal.store();
    match action {
        RunsAction::List { filter, json } => {
            let query = match filter.query() {
                Ok(q) => q,
                Err(e) => return refused(EXIT_INVALID, e),
            };
            match store.list(&query).await {
                Err(e) => refused(EXIT_FAILURE, e),
                Ok(page) if json => (EXIT_OK, pretty(&page), String::new()),
                Ok(page) => (EXIT_OK, list_text(&page), String::new()),
            }
        }
        RunsAction::Show { run_id, json } => match store.get(&run_id).await {
            Err(e) => refused(EXIT_FAILURE, e),
            Ok(None) => refused(EXIT_INVALID, format!("no run `{run_id}`")),
            Ok(Some(run)) if json => (EXIT_OK, pretty(&run), String::new()),
            Ok(Some(run)) => (EXIT_OK, show_text(&run), String::new()),
        },
        RunsAction::Replay { run_id, from, wait } => {
            match journal.replay(&run_id, from.as_deref()).await {
                Err(e) => request_refused(e),
                Ok(new_id) => match wait {
                    None => (
                        EXIT_OK,
                        format!(
                            "queued run {new_id} (a replay of {run_id}); the running app starts it\n"
                        ),
                        String::new(),
                    ),
                    Some(wait) => wait_for(journal, &new_id, wait).await,
                },
            }
        }
        RunsAction::ReplayFailed { filter } => {
            let mut query = match filter.query() {
                Ok(q) => q,
                Err(e) => return refused(EXIT_INVALID, e),
            };
            query.status = Some(RunStatus::Failed);
            query.unreplayed = true;
            let page = match store.list(&query).await {
                Ok(page) => page,
                Err(e) => return refused(EXIT_FAILURE, e),
            };
            let mut out = String::new();
            let mut err = String::new();
            for run in &page.runs {
                match journal.replay(&run.run_id, None).await {
                    Ok(new_id) => {
                        let _ = writeln!(out, "queued run {new_id} (a replay of {})", run.run_id);
                    }
                    Err(e) => {
                        let _ = writeln!(err, "error: {}: {e}", run.run_id);
                    }
                }
            }
            if page.runs.is_empty() {
                out.push_str("no failed runs to replay\n");
            }
            let code = if err.is_empty() {
                EXIT_OK
            } else {
                EXIT_FAILURE
            };
            (code, out, err)
        }
        RunsAction::Cancel { run_id } => match journal.cancel(&run_id).await {
            Err(e) => request_refused(e),
            Ok(RunStatus::Cancelled) => (
                EXIT_OK,
                format!("run {run_id} was queued; it is cancelled and will not start\n"),
                String::new(),
            ),
            Ok(_) => (
                EXIT_OK,
                format!(
                    "cancel requested: the running app stops run {run_id} at its current step\n"
                ),
                String::new(),
            ),
        },
    }
}

fn request_refused(e: RunRequestError) -> Output {
    match e {
        RunRequestError::NotFound(_) => refused(EXIT_INVALID, e),
        RunRequestError::Conflict(_) | RunRequestError::Journal(_) => refused(EXIT_FAILURE, e),
    }
}

/// Waits for run `run_id` to end, printing how it ended.
async fn wait_for(journal: &Journal, run_id: &str, wait: Duration) -> Output {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match journal.store().get(run_id).await {
            Ok(Some(run)) if run.summary.status.is_finished() => {
                let code = if run.summary.status == RunStatus::Succeeded {
                    EXIT_OK
                } else {
                    EXIT_FAILURE
                };
                return (code, show_text(&run), String::new());
            }
            Ok(_) => {}
            Err(e) => return refused(EXIT_FAILURE, e),
        }
        if tokio::time::Instant::now() >= deadline {
            return refused(
                EXIT_FAILURE,
                format!(
                    "run {run_id} did not end within {wait:?} (is the app running? it starts queued runs)"
                ),
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn pretty(value: &impl serde::Serialize) -> String {
    format!(
        "{}\n",
        serde_json::to_string_pretty(value).unwrap_or_default()
    )
}

fn duration(ms: Option<f64>) -> String {
    match ms {
        Some(ms) if ms >= 1000.0 => format!("{:.2}s", ms / 1000.0),
        Some(ms) => format!("{ms:.1}ms"),
        None => "-".to_string(),
    }
}

fn trigger_text(run: &RunSummary) -> String {
    match run.trigger.source.as_str() {
        "" => run.trigger.kind.clone(),
        source => format!("{} {source}", run.trigger.kind),
    }
}

fn list_text(page: &RunPage) -> String {
    let mut out = String::new();
    if page.runs.is_empty() {
        out.push_str("no runs\n");
        return out;
    }
    let width = page
        .runs
        .iter()
        .map(|r| r.pipeline.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let _ = writeln!(
        out,
        "{:<36}  {:<width$}  {:<11}  {:<24}  {:>9}  TRIGGER",
        "RUN", "PIPELINE", "STATUS", "STARTED", "DURATION"
    );
    for run in &page.runs {
        let _ = writeln!(
            out,
            "{:<36}  {:<width$}  {:<11}  {:<24}  {:>9}  {}",
            run.run_id,
            run.pipeline,
            run.status.as_str(),
            run.started_at,
            duration(run.duration_ms),
            trigger_text(run)
        );
    }
    if let Some(next) = &page.next {
        let _ = writeln!(out, "more: --cursor {next}");
    }
    out
}

fn show_text(run: &RunDetail) -> String {
    let s = &run.summary;
    let mut out = String::new();
    let durable = if s.durable { "  durable" } else { "" };
    let _ = writeln!(
        out,
        "run {}  {}  {}{durable}",
        s.run_id,
        s.pipeline,
        s.status.as_str()
    );
    let _ = writeln!(out, "trigger   {}", trigger_text(s));
    let _ = writeln!(
        out,
        "started   {}{}",
        s.started_at,
        match (&s.finished_at, s.duration_ms) {
            (Some(end), ms) => format!("  ended {end} ({})", duration(ms)),
            _ => String::new(),
        }
    );
    if let Some(original) = &s.replay_of {
        let from = s
            .replay_from
            .as_ref()
            .map(|f| format!(" from step `{f}`"))
            .unwrap_or_default();
        let _ = writeln!(out, "replays   {original}{from}");
    }
    if let Some(by) = &s.replayed_by {
        let _ = writeln!(out, "replayed  by {by}");
    }
    let _ = writeln!(out, "input     {}", compact(&run.input));
    if !run.steps.is_empty() {
        let _ = writeln!(out, "steps");
        let width = run.steps.iter().map(|s| s.step.len()).max().unwrap_or(4);
        for step in &run.steps {
            let attempt = if step.attempt > 1 {
                format!(" (attempt {})", step.attempt)
            } else {
                String::new()
            };
            let compensation = if step.compensation {
                "compensation "
            } else {
                ""
            };
            let what = match (&step.error, &step.output, &step.next) {
                (Some(e), _, _) => format!("{}: {}", kebab(&e.kind), e.message),
                (None, _, Some(next)) => format!("→ {next}"),
                (None, Some(output), None) => compact(output),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "  {:>3}  {:<width$}  {compensation}{:<9}{attempt}  {:>9}  {what}",
                step.seq,
                step.step,
                step.status.as_str(),
                duration(Some(step.duration_ms)),
            );
        }
    }
    if let Some(output) = &run.output {
        let _ = writeln!(out, "output    {}", compact(output));
    }
    if let Some(error) = &s.error {
        let at = error
            .step
            .as_ref()
            .map(|s| format!(" (step `{s}`)"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "error     {}{at}: {}",
            kebab(&error.kind),
            error.message
        );
    }
    out
}

fn kebab(kind: &wf_engine::ErrorKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A value on one line, cut to 200 characters.
fn compact(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}
