//! One run's side of the journal: what the executor calls as the run goes.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use super::record::{
    JournalWrite, RecordedError, RunEnd, RunStart, RunStatus, StepAttempt, StepStatus,
};
use super::{Journal, JournalError, RestoredStep, RunControl};
use crate::step::{Next, StepError};

/// Records one run. Dropped when the run ends (or its future is dropped), it forgets the
/// run's cancel handle.
pub(crate) struct Recorder {
    pub journal: Arc<Journal>,
    pub run_id: String,
    /// Steps wait until their outcome is committed.
    pub durable: bool,
    pub control: Arc<RunControl>,
    seq: AtomicU32,
    /// Failed attempts that were retried, written with the step's outcome.
    retried: Mutex<Vec<StepAttempt>>,
}

/// A step's identity in a record.
pub(crate) struct StepName<'a> {
    pub name: &'a str,
    pub type_name: &'a str,
    pub compensation: bool,
}

impl Recorder {
    pub fn new(journal: Arc<Journal>, run_id: String, durable: bool, next_seq: u32) -> Recorder {
        let control = journal.control(&run_id);
        Recorder {
            journal,
            run_id,
            durable,
            control,
            seq: AtomicU32::new(next_seq.max(1)),
            retried: Mutex::default(),
        }
    }

    fn next_seq(&self) -> u32 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// The record of one attempt of `step`, numbered next, without output, error or `next`.
    fn attempt_record(
        &self,
        step: &StepName<'_>,
        attempt: u32,
        started_at: i64,
        duration_ms: f64,
        status: StepStatus,
    ) -> StepAttempt {
        StepAttempt {
            run_id: self.run_id.clone(),
            seq: self.next_seq(),
            step: step.name.to_string(),
            step_type: step.type_name.to_string(),
            compensation: step.compensation,
            attempt,
            started_at,
            duration_ms,
            status,
            output: None,
            error: None,
            next: None,
        }
    }

    pub async fn started(&self, start: RunStart, wait: bool) -> Result<(), JournalError> {
        self.journal
            .record(JournalWrite::Start(Box::new(start)), wait)
            .await
    }

    /// A failed attempt about to be retried.
    pub fn retrying(
        &self,
        step: &StepName<'_>,
        attempt: u32,
        started_at: i64,
        duration_ms: f64,
        error: &StepError,
    ) {
        let record = StepAttempt {
            error: Some(recorded(error, None)),
            ..self.attempt_record(step, attempt, started_at, duration_ms, StepStatus::Retried)
        };
        if let Ok(mut retried) = self.retried.lock() {
            retried.push(record);
        }
    }

    /// A step's outcome; a durable run waits until it is committed (with the retried
    /// attempts before it).
    #[allow(clippy::too_many_arguments)]
    pub async fn step(
        &self,
        step: &StepName<'_>,
        attempt: u32,
        started_at: i64,
        duration_ms: f64,
        status: StepStatus,
        output: Option<&Map<String, Value>>,
        error: Option<&StepError>,
        next: Option<&Next>,
    ) -> Result<(), JournalError> {
        let retried = self
            .retried
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        for attempt in retried {
            self.journal
                .record(JournalWrite::Step(Box::new(attempt)), false)
                .await?;
        }
        let record = StepAttempt {
            output: output.map(|o| Value::Object(o.clone())),
            error: error.map(|e| recorded(e, None)),
            next: next.and_then(next_label),
            ..self.attempt_record(step, attempt, started_at, duration_ms, status)
        };
        self.journal
            .record(JournalWrite::Step(Box::new(record)), self.durable)
            .await
    }

    /// A step not run because its output came from the run this one replays.
    pub async fn reused(&self, step: &RestoredStep) -> Result<(), JournalError> {
        let name = StepName {
            name: &step.step,
            type_name: &step.step_type,
            compensation: false,
        };
        let status = match step.output {
            Ok(_) => StepStatus::Reused,
            Err(_) => StepStatus::Skipped,
        };
        let record = StepAttempt {
            output: step.output.as_ref().ok().map(|o| Value::Object(o.clone())),
            error: step.output.as_ref().err().map(|message| RecordedError {
                kind: crate::step::ErrorKind::Internal,
                message: message.clone(),
                step: None,
            }),
            next: step.next.clone(),
            ..self.attempt_record(&name, 1, wf_config::time::unix_millis_now(), 0.0, status)
        };
        self.journal
            .record(JournalWrite::Step(Box::new(record)), self.durable)
            .await
    }

    /// The run's end; waited for when durable (an idempotent answer or a resume depends on it).
    pub async fn ended(
        &self,
        status: RunStatus,
        output: Option<&Map<String, Value>>,
        error: Option<RecordedError>,
        duration_ms: f64,
    ) -> Result<(), JournalError> {
        let end = RunEnd {
            run_id: self.run_id.clone(),
            status,
            output: output.map(|o| Value::Object(o.clone())),
            error,
            finished_at: wf_config::time::unix_millis_now(),
            duration_ms,
        };
        self.journal
            .record(JournalWrite::End(Box::new(end)), self.durable)
            .await
    }

    /// The run's future was dropped before it ended. A durable run stays `running` (its
    /// next host resumes it); any other is recorded as interrupted.
    pub fn dropped(&self) {
        if self.durable {
            return;
        }
        self.journal.record_now(JournalWrite::End(Box::new(RunEnd {
            run_id: self.run_id.clone(),
            status: RunStatus::Interrupted,
            output: None,
            error: Some(RecordedError {
                kind: crate::step::ErrorKind::Internal,
                message: "the run was abandoned before it ended: its caller went away or its deadline passed".into(),
                step: None,
            }),
            finished_at: wf_config::time::unix_millis_now(),
            duration_ms: 0.0,
        })));
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.journal.release(&self.run_id);
    }
}

/// A step error as recorded.
pub(crate) fn recorded(error: &StepError, step: Option<&str>) -> RecordedError {
    RecordedError {
        kind: error.kind,
        message: error.message.clone(),
        step: step.map(str::to_string),
    }
}

/// How `next` is recorded: a jump's target or `stop`; nothing for the following step.
fn next_label(next: &Next) -> Option<String> {
    match next {
        Next::Continue => None,
        Next::Jump(target) => Some(target.clone()),
        Next::Stop => Some(STOP.to_string()),
    }
}

/// What a recorded `next` says.
pub(crate) fn parse_next(label: Option<&str>) -> Next {
    match label {
        None => Next::Continue,
        Some(STOP) => Next::Stop,
        Some(target) => Next::Jump(target.to_string()),
    }
}

/// The recorded `next` of a step that ended the run: not a plain word, since a step may be
/// named `stop`.
pub(crate) const STOP: &str = "(stop)";
