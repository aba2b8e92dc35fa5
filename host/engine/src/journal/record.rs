//! What the journal records of a run, and what readers get back.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::step::ErrorKind;

/// Where a run is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Asked for (a replay from the command line) and waiting for the app to start it.
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// The host stopped while the run was going and the run was not durable: it will not
    /// finish.
    Interrupted,
}

impl RunStatus {
    pub const ALL: [RunStatus; 6] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Interrupted => "interrupted",
        }
    }

    pub fn parse(text: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether the run has ended (nothing more will be recorded of it).
    pub fn is_finished(self) -> bool {
        !matches!(self, RunStatus::Queued | RunStatus::Running)
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one attempt of a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    Succeeded,
    /// Failed, and the step was tried again.
    Retried,
    /// Failed, and the run went on (`on_error: skip`).
    Skipped,
    Failed,
    /// Not run: its output was taken from the run this one replays.
    Reused,
    /// Stopped because the run was cancelled.
    Cancelled,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Succeeded => "succeeded",
            StepStatus::Retried => "retried",
            StepStatus::Skipped => "skipped",
            StepStatus::Failed => "failed",
            StepStatus::Reused => "reused",
            StepStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<StepStatus> {
        [
            StepStatus::Succeeded,
            StepStatus::Retried,
            StepStatus::Skipped,
            StepStatus::Failed,
            StepStatus::Reused,
            StepStatus::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// What started a run: the trigger's type, where it fired (`POST /orders`, a topic, a job),
/// and what a replay or a resumed run needs to rebuild the trigger's view for steps (the
/// request of an HTTP run, without its credentials).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunTrigger {
    /// `http`, `event`, `schedule`, `statemachine`, `replay`, `cli`, ... (`direct` when a run
    /// was started by code without saying).
    pub kind: String,
    /// Where it fired, e.g. `POST /orders/{id}` or `orders.created`.
    pub source: String,
    /// What the trigger's restorer needs (see [`crate::journal::TriggerRestorer`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Value>,
}

/// A recorded error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedError {
    pub kind: ErrorKind,
    pub message: String,
    /// The step that failed, for a run's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

/// The idempotency key a run answers, so that a resumed run can store its answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRef {
    pub scope: String,
    pub key: String,
}

/// The start of a run.
#[derive(Clone, Debug)]
pub struct RunStart {
    pub run_id: String,
    pub pipeline: String,
    pub trigger: RunTrigger,
    /// The run's trigger data.
    pub input: Map<String, Value>,
    /// What the trigger added to `meta` (the caller's claims, the request id).
    pub meta: Map<String, Value>,
    pub durable: bool,
    /// Milliseconds since the Unix epoch.
    pub started_at: i64,
    /// The run this one replays.
    pub replay_of: Option<String>,
    /// The step a replay starts from (earlier steps reuse the replayed run's outputs).
    pub replay_from: Option<String>,
    pub idempotency: Option<IdempotencyRef>,
    /// The host running it; `None` while queued.
    pub owner: Option<String>,
    pub status: RunStatus,
}

/// One attempt of one step.
#[derive(Clone, Debug)]
pub struct StepAttempt {
    pub run_id: String,
    /// Order within the run, from 1.
    pub seq: u32,
    pub step: String,
    pub step_type: String,
    /// A compensation step (run after a failure or a cancel).
    pub compensation: bool,
    /// From 1.
    pub attempt: u32,
    pub started_at: i64,
    pub duration_ms: f64,
    pub status: StepStatus,
    pub output: Option<Value>,
    pub error: Option<RecordedError>,
    /// Where the run went next when the step chose (`step.conditional`): a step's name, or
    /// `stop`.
    pub next: Option<String>,
}

/// The end of a run.
#[derive(Clone, Debug)]
pub struct RunEnd {
    pub run_id: String,
    pub status: RunStatus,
    pub output: Option<Value>,
    pub error: Option<RecordedError>,
    pub finished_at: i64,
    pub duration_ms: f64,
}

/// One write to the journal.
#[derive(Clone, Debug)]
pub enum JournalWrite {
    Start(Box<RunStart>),
    Step(Box<StepAttempt>),
    End(Box<RunEnd>),
}

impl JournalWrite {
    pub fn run_id(&self) -> &str {
        match self {
            JournalWrite::Start(r) => &r.run_id,
            JournalWrite::Step(s) => &s.run_id,
            JournalWrite::End(e) => &e.run_id,
        }
    }
}

/// A value as stored: JSON text, cut to the journal's limit and with secrets masked.
/// `restorable` is false when either happened, so a resumed run does not take it for the real
/// value.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredValue {
    pub json: String,
    pub restorable: bool,
}

impl StoredValue {
    /// `value` as stored under a limit of `max_bytes`.
    pub fn new<T: Serialize + ?Sized>(value: &T, max_bytes: usize) -> StoredValue {
        let json = serde_json::to_string(value).unwrap_or_else(|_| "null".to_string());
        let redacted = crate::redact::redact(&json);
        let masked = matches!(redacted, std::borrow::Cow::Owned(_));
        let json = redacted.into_owned();
        if json.len() > max_bytes {
            let marker = serde_json::json!({
                "_truncated": true,
                "_bytes": json.len(),
                "_note": format!("larger than the journal's limit of {max_bytes} bytes (`runs.max_value_bytes`)"),
            });
            return StoredValue {
                json: marker.to_string(),
                restorable: false,
            };
        }
        StoredValue {
            json,
            restorable: !masked,
        }
    }
}

/// A run as listed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub pipeline: String,
    pub status: RunStatus,
    pub durable: bool,
    pub trigger: RunTrigger,
    /// RFC 3339.
    pub started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<RecordedError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay_from: Option<String>,
    /// The latest run that replays this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replayed_by: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cancel_requested: bool,
    /// Milliseconds since the Unix epoch, for paging.
    #[serde(skip)]
    pub started_at_ms: i64,
}

/// One recorded step attempt.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepRecord {
    pub seq: u32,
    pub step: String,
    pub step_type: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub compensation: bool,
    pub attempt: u32,
    pub status: StepStatus,
    pub started_at: String,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<RecordedError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Whether `output` is the step's whole output (not cut, no secret masked).
    #[serde(skip)]
    pub restorable: bool,
}

/// A run with everything recorded of it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunDetail {
    #[serde(flatten)]
    pub summary: RunSummary,
    pub input: Value,
    pub meta: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    pub steps: Vec<StepRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<IdempotencyRef>,
    /// The host running it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Whether `input` is the whole trigger data (not cut, no secret masked).
    #[serde(skip)]
    pub input_restorable: bool,
}

/// Which runs to list: newest first, `limit` at most, before `before` (a cursor from the
/// previous page).
#[derive(Clone, Debug, Default)]
pub struct RunQuery {
    pub pipeline: Option<String>,
    pub status: Option<RunStatus>,
    /// Started at or after (ms since the epoch).
    pub since: Option<i64>,
    /// Started before (ms since the epoch).
    pub until: Option<i64>,
    /// Failed runs no later run replays (the dead-letter view).
    pub unreplayed: bool,
    pub limit: usize,
    /// `(started_at_ms, run_id)` of the last run of the previous page.
    pub after: Option<(i64, String)>,
}

/// The most runs one page lists.
pub const MAX_PAGE: usize = 500;

/// A page of runs and the cursor of the next one.
#[derive(Clone, Debug, Serialize)]
pub struct RunPage {
    pub runs: Vec<RunSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

impl RunPage {
    /// The cursor text for the page after `runs` (when it was full).
    pub fn new(runs: Vec<RunSummary>, limit: usize) -> RunPage {
        let next = (runs.len() == limit && limit > 0)
            .then(|| {
                runs.last()
                    .map(|r| format!("{}.{}", r.started_at_ms, r.run_id))
            })
            .flatten();
        RunPage { runs, next }
    }

    /// Reads a cursor made by [`RunPage::new`].
    pub fn parse_cursor(text: &str) -> Option<(i64, String)> {
        let (ms, id) = text.split_once('.')?;
        Some((ms.parse().ok()?, id.to_string()))
    }
}

/// What asking to cancel a run found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was running: its host stops it at its next step.
    Requested,
    /// It was queued: it is cancelled and will not start.
    CancelledQueued,
    /// It had already ended with this status.
    Finished(RunStatus),
    NotFound,
}

/// An idempotency key's state, as a route found it.
#[derive(Clone, Debug, PartialEq)]
pub enum KeyClaim {
    /// New (or expired, or left by a run that died): this request runs.
    Claimed,
    /// A run with this key is still going.
    Running { run_id: String },
    /// Answered before: the stored answer.
    Done { answer: Value },
    /// Used before with a different request.
    Mismatch,
}

/// Per-pipeline retention: keep at most `max_runs` finished runs and none older than
/// `max_age_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub max_runs: Option<u64>,
    pub max_age_ms: Option<i64>,
}
