//! The run journal's store on SQLite (the data directory's `runs.db`, or a `database.*` module)
//! and PostgreSQL: one schema, one set of statements, `?` placeholders on both.
//!
//! Writes come in batches from the journal's writer and go in one transaction: run starts and
//! steps as multi-row inserts, a run's start and end coalesced into one row when they arrive in
//! the same batch (the common case under load). Every query is scoped to the app, so apps
//! sharing a PostgreSQL database never see or resume each other's runs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use wf_engine::async_trait;
use wf_engine::journal::{
    CancelOutcome, IdempotencyRef, JournalBackend, JournalError, JournalStore, JournalTarget,
    JournalWrite, KeyClaim, RecordedError, Retention, RunDetail, RunEnd, RunPage, RunQuery,
    RunStart, RunStatus, RunSummary, RunTrigger, StepAttempt, StepRecord, StepStatus, StoredValue,
    Takeover,
};
use wf_engine::services::Services;

use crate::database::{Database, DbError, PoolSettings, Target, Tx};
use crate::migrate::{Migration, migrate};

/// The migration set of the journal's tables.
const SET: &str = "runs";

/// The newest schema this build knows.
const SCHEMA_VERSION: i64 = 1;

fn migrations() -> Vec<Migration> {
    vec![Migration::new(
        1,
        "run journal",
        "CREATE TABLE wf_runs (
                run_id TEXT PRIMARY KEY,
                app TEXT NOT NULL,
                pipeline TEXT NOT NULL,
                status TEXT NOT NULL,
                durable INTEGER NOT NULL,
                trigger_kind TEXT NOT NULL,
                trigger_source TEXT NOT NULL,
                trigger_request TEXT,
                input TEXT NOT NULL,
                input_restorable INTEGER NOT NULL,
                meta TEXT NOT NULL,
                output TEXT,
                error TEXT,
                started_at BIGINT NOT NULL,
                finished_at BIGINT,
                duration_ms DOUBLE PRECISION,
                replay_of TEXT,
                replay_from TEXT,
                replayed_by TEXT,
                idem_scope TEXT,
                idem_key TEXT,
                owner TEXT,
                cancel_requested INTEGER NOT NULL DEFAULT 0
            );
            CREATE INDEX wf_runs_by_time ON wf_runs (app, started_at, run_id);
            CREATE INDEX wf_runs_by_pipeline ON wf_runs (app, pipeline, started_at);
            CREATE INDEX wf_runs_by_status ON wf_runs (app, status);
            CREATE TABLE wf_run_steps (
                run_id TEXT NOT NULL,
                seq INTEGER NOT NULL,
                step TEXT NOT NULL,
                step_type TEXT NOT NULL,
                compensation INTEGER NOT NULL,
                attempt INTEGER NOT NULL,
                status TEXT NOT NULL,
                started_at BIGINT NOT NULL,
                duration_ms DOUBLE PRECISION NOT NULL,
                output TEXT,
                output_restorable INTEGER NOT NULL,
                error TEXT,
                next TEXT,
                PRIMARY KEY (run_id, seq)
            );
            CREATE TABLE wf_run_owners (
                owner TEXT PRIMARY KEY,
                app TEXT NOT NULL,
                serving INTEGER NOT NULL,
                heartbeat_at BIGINT NOT NULL
            );
            CREATE TABLE wf_idempotency (
                app TEXT NOT NULL,
                scope TEXT NOT NULL,
                idem_key TEXT NOT NULL,
                fingerprint TEXT NOT NULL,
                run_id TEXT NOT NULL,
                answer TEXT,
                claimed_at BIGINT NOT NULL,
                expires_at BIGINT NOT NULL,
                PRIMARY KEY (app, scope, idem_key)
            );
            CREATE INDEX wf_idempotency_expiry ON wf_idempotency (expires_at)",
    )]
}

/// Runs' columns, in the order [`run_params`] gives them.
const RUN_COLUMNS: &str = "run_id, app, pipeline, status, durable, trigger_kind, trigger_source, \
    trigger_request, input, input_restorable, meta, output, error, started_at, finished_at, \
    duration_ms, replay_of, replay_from, idem_scope, idem_key, owner";
const RUN_WIDTH: usize = 21;

const STEP_COLUMNS: &str = "run_id, seq, step, step_type, compensation, attempt, status, \
    started_at, duration_ms, output, output_restorable, error, next";
const STEP_WIDTH: usize = 13;

/// What listing reads of a run.
const SUMMARY_COLUMNS: &str = "run_id, pipeline, status, durable, trigger_kind, trigger_source, \
    started_at, finished_at, duration_ms, error, replay_of, replay_from, replayed_by, \
    cancel_requested";

/// Rows per multi-row insert; a batch is cut into these sizes so few statement texts exist
/// (each is prepared once per connection).
const CHUNKS: [usize; 6] = [64, 32, 16, 8, 4, 1];

/// Most parameter bytes one statement carries. The PostgreSQL driver does not set
/// `TCP_NODELAY`: a statement written in two pieces (over TLS, anything past one 16 KiB record)
/// waits out the server's delayed acknowledgement, about 40 ms, so statements stay below one
/// record with room for the protocol's framing.
const MAX_STATEMENT_BYTES: usize = 12 * 1024;

/// How many rows (of `width` parameters, from row `at` of `total`) the next statement takes:
/// the largest of [`CHUNKS`] that fits in what is left and in [`MAX_STATEMENT_BYTES`].
fn chunk_at(rows: &[Value], width: usize, at: usize, total: usize) -> usize {
    let row_bytes = |row: usize| -> usize {
        rows[row * width..(row + 1) * width]
            .iter()
            .map(|v| match v {
                Value::String(text) => text.len(),
                _ => 8,
            })
            .sum()
    };
    let mut fits = 0;
    let mut bytes = 0;
    while at + fits < total && fits < CHUNKS[0] {
        bytes += row_bytes(at + fits);
        if bytes > MAX_STATEMENT_BYTES {
            break;
        }
        fits += 1;
    }
    CHUNKS.into_iter().find(|c| *c <= fits).unwrap_or(1)
}

/// A claimed idempotency key whose run left no trace for this long is taken over (its host
/// died between claiming the key and recording the run).
const ORPHAN_CLAIM_MS: i64 = 60_000;

/// The journal store on one database.
pub struct SqlJournal {
    db: Database,
    app: String,
    /// The store opened its own database (the data directory's file), and closes it.
    owns_database: bool,
    label: String,
}

impl SqlJournal {
    pub fn new(db: Database, app: &str, owns_database: bool) -> SqlJournal {
        SqlJournal {
            label: format!("runs journal in {}", db.describe()),
            db,
            app: app.to_string(),
            owns_database,
        }
    }

    /// The journal in `dir/runs.db`.
    pub fn in_data_dir(dir: &Path, app: &str) -> anyhow::Result<SqlJournal> {
        let path = dir.join("runs.db");
        let db = Database::new(
            "runs",
            &Target::Sqlite {
                path: path.to_string_lossy().into_owned(),
                wal: true,
            },
            &PoolSettings {
                max_connections: 4,
                min_connections: 1,
                connect_timeout: Duration::from_secs(5),
            },
        )?;
        Ok(SqlJournal::new(db, app, true))
    }

    fn error(&self, e: DbError) -> JournalError {
        match e {
            DbError::Unavailable(message) => JournalError::Unavailable(message),
            other => {
                let message = other.to_string();
                if message.contains("not a database") || message.contains("malformed") {
                    JournalError::Unusable(format!(
                        "the {} is not a readable SQLite database ({message}); move the file aside to start with an empty journal, or restore it from a backup",
                        self.label
                    ))
                } else {
                    JournalError::Other(message)
                }
            }
        }
    }

    async fn begin(&self) -> Result<Tx, JournalError> {
        self.db.begin().await.map_err(|e| self.error(e))
    }

    async fn query(
        &self,
        sql: &str,
        params: &[Value],
    ) -> Result<Vec<Map<String, Value>>, JournalError> {
        self.db.query(sql, params).await.map_err(|e| self.error(e))
    }

    async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, JournalError> {
        self.db
            .execute(sql, params)
            .await
            .map(|r| r.affected_rows)
            .map_err(|e| self.error(e))
    }

    /// Writes `rows` (each `width` values) into `table` with multi-row inserts.
    async fn insert_rows(
        &self,
        tx: &mut Tx,
        table: &str,
        columns: &str,
        width: usize,
        conflict: &str,
        rows: &[Value],
    ) -> Result<(), JournalError> {
        let mut at = 0;
        let total = rows.len() / width;
        while at < total {
            let chunk = chunk_at(rows, width, at, total);
            let one = format!("({})", vec!["?"; width].join(", "));
            let sql = format!(
                "INSERT INTO {table} ({columns}) VALUES {} ON CONFLICT ({conflict}) DO NOTHING",
                vec![one; chunk].join(", ")
            );
            tx.execute(&sql, &rows[at * width..(at + chunk) * width])
                .await
                .map_err(|e| self.error(e))?;
            at += chunk;
        }
        Ok(())
    }

    /// Ends runs whose start an earlier batch wrote, many per statement. Only a run still
    /// going ends: a late record never rewrites a finished one.
    async fn end_runs(
        &self,
        tx: &mut Tx,
        ends: &[&RunEnd],
        max_value_bytes: usize,
    ) -> Result<(), JournalError> {
        const WIDTH: usize = 6;
        // Typed, so PostgreSQL knows each column's type even when a first row holds nulls.
        const ROW: &str = "(CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT), \
                           CAST(? AS BIGINT), CAST(? AS DOUBLE PRECISION))";
        let mut rows = Vec::with_capacity(ends.len() * WIDTH);
        for end in ends {
            let output = end
                .output
                .as_ref()
                .map(|o| StoredValue::new(o, max_value_bytes).json);
            rows.extend([
                json!(end.run_id),
                json!(end.status.as_str()),
                json!(output),
                error_json(end.error.as_ref()),
                json!(end.finished_at),
                json!(end.duration_ms),
            ]);
        }
        let mut at = 0;
        while at < ends.len() {
            let chunk = chunk_at(&rows, WIDTH, at, ends.len());
            let sql = format!(
                "WITH ended (run_id, status, output, error, finished_at, duration_ms) AS (VALUES {}) \
                 UPDATE wf_runs SET status = ended.status, output = ended.output, error = ended.error, \
                 finished_at = ended.finished_at, duration_ms = ended.duration_ms \
                 FROM ended WHERE wf_runs.run_id = ended.run_id AND wf_runs.status IN ('running', 'queued')",
                vec![ROW; chunk].join(", ")
            );
            tx.execute(&sql, &rows[at * WIDTH..(at + chunk) * WIDTH])
                .await
                .map_err(|e| self.error(e))?;
            at += chunk;
        }
        Ok(())
    }

    async fn detail(&self, run: Map<String, Value>) -> Result<RunDetail, JournalError> {
        let run_id = text(&run, "run_id");
        let steps = self
            .query(
                &format!("SELECT {STEP_COLUMNS} FROM wf_run_steps WHERE run_id = ? ORDER BY seq"),
                &[json!(run_id)],
            )
            .await?;
        let mut detail = RunDetail {
            summary: summary(&run),
            input: json_column(run.get("input")),
            meta: json_column(run.get("meta")),
            output: run
                .get("output")
                .filter(|v| !v.is_null())
                .map(|v| json_column(Some(v))),
            steps: steps.iter().map(step_record).collect(),
            idempotency: match (run.get("idem_scope"), run.get("idem_key")) {
                (Some(Value::String(scope)), Some(Value::String(key))) => Some(IdempotencyRef {
                    scope: scope.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
            owner: run.get("owner").and_then(Value::as_str).map(str::to_string),
            input_restorable: flag(&run, "input_restorable"),
        };
        detail.summary.trigger.request = run
            .get("trigger_request")
            .filter(|v| !v.is_null())
            .map(|v| json_column(Some(v)));
        Ok(detail)
    }
}

#[async_trait]
impl JournalStore for SqlJournal {
    fn describe(&self) -> &str {
        &self.label
    }

    async fn open(&self) -> Result<(), JournalError> {
        // A journal written by a newer wf is left alone: its tables may mean other things.
        let ledger = self
            .query(
                "SELECT MAX(version) AS version FROM wf_migrations WHERE set_name = ?",
                &[json!(SET)],
            )
            .await;
        match ledger {
            Ok(rows) => {
                let version = rows
                    .first()
                    .and_then(|r| r.get("version"))
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                if version > SCHEMA_VERSION {
                    return Err(JournalError::Unusable(format!(
                        "the {} was written by a newer wf (journal schema {version}; this wf knows up to {SCHEMA_VERSION}): upgrade wf-host, or start with another data directory (`--data-dir`)",
                        self.label
                    )));
                }
            }
            // No ledger yet: a new database.
            Err(JournalError::Other(_)) => {}
            Err(e) => return Err(e),
        }
        migrate(&self.db, SET, &migrations()).await.map_err(|e| {
            let message = format!("{e:#}");
            if message.contains("not a database") || message.contains("malformed") {
                JournalError::Unusable(format!(
                    "the {} is not a readable SQLite database ({message}); move the file aside to start with an empty journal, or restore it from a backup",
                    self.label
                ))
            } else if message.contains("unavailable") || message.contains("connect") {
                JournalError::Unavailable(message)
            } else {
                JournalError::Unusable(format!("the {} cannot be used: {message}", self.label))
            }
        })?;
        Ok(())
    }

    async fn write(
        &self,
        batch: &[JournalWrite],
        max_value_bytes: usize,
    ) -> Result<(), JournalError> {
        // A run's start and end in the same batch become one row.
        let mut ends: HashMap<&str, &RunEnd> = HashMap::new();
        let mut started: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for write in batch {
            match write {
                JournalWrite::Start(start) => {
                    started.insert(&start.run_id);
                }
                JournalWrite::End(end) => {
                    ends.insert(&end.run_id, end);
                }
                JournalWrite::Step(_) => {}
            }
        }
        let mut run_rows = Vec::new();
        let mut step_rows = Vec::new();
        let mut lone_ends = Vec::new();
        for write in batch {
            match write {
                JournalWrite::Start(start) => {
                    run_params(
                        &mut run_rows,
                        start,
                        ends.get(start.run_id.as_str()).copied(),
                        &self.app,
                        max_value_bytes,
                    );
                }
                JournalWrite::Step(step) => step_params(&mut step_rows, step, max_value_bytes),
                JournalWrite::End(end) if !started.contains(end.run_id.as_str()) => {
                    lone_ends.push(&**end);
                }
                JournalWrite::End(_) => {}
            }
        }
        let mut tx = self.begin().await?;
        self.insert_rows(
            &mut tx,
            "wf_runs",
            RUN_COLUMNS,
            RUN_WIDTH,
            "run_id",
            &run_rows,
        )
        .await?;
        self.insert_rows(
            &mut tx,
            "wf_run_steps",
            STEP_COLUMNS,
            STEP_WIDTH,
            "run_id, seq",
            &step_rows,
        )
        .await?;
        self.end_runs(&mut tx, &lone_ends, max_value_bytes).await?;
        tx.commit().await.map_err(|e| self.error(e))
    }

    async fn list(&self, query: &RunQuery) -> Result<RunPage, JournalError> {
        let limit = query.limit.clamp(1, wf_engine::journal::MAX_PAGE);
        let mut sql = format!("SELECT {SUMMARY_COLUMNS} FROM wf_runs WHERE app = ?");
        let mut params = vec![json!(self.app)];
        if let Some(pipeline) = &query.pipeline {
            sql.push_str(" AND pipeline = ?");
            params.push(json!(pipeline));
        }
        if let Some(status) = query.status {
            sql.push_str(" AND status = ?");
            params.push(json!(status.as_str()));
        }
        if let Some(since) = query.since {
            sql.push_str(" AND started_at >= ?");
            params.push(json!(since));
        }
        if let Some(until) = query.until {
            sql.push_str(" AND started_at < ?");
            params.push(json!(until));
        }
        if query.unreplayed {
            sql.push_str(" AND replayed_by IS NULL");
        }
        if let Some((at, id)) = &query.after {
            sql.push_str(" AND (started_at < ? OR (started_at = ? AND run_id < ?))");
            params.extend([json!(at), json!(at), json!(id)]);
        }
        sql.push_str(" ORDER BY started_at DESC, run_id DESC LIMIT ?");
        params.push(json!(limit));
        let rows = self.query(&sql, &params).await?;
        Ok(RunPage::new(rows.iter().map(summary).collect(), limit))
    }

    async fn get(&self, run_id: &str) -> Result<Option<RunDetail>, JournalError> {
        let rows = self
            .query(
                "SELECT * FROM wf_runs WHERE app = ? AND run_id = ?",
                &[json!(self.app), json!(run_id)],
            )
            .await?;
        match rows.into_iter().next() {
            Some(row) => Ok(Some(self.detail(row).await?)),
            None => Ok(None),
        }
    }

    async fn retire(&self, owner: &str) -> Result<(), JournalError> {
        self.execute("DELETE FROM wf_run_owners WHERE owner = ?", &[json!(owner)])
            .await
            .map(|_| ())
    }

    async fn heartbeat(&self, owner: &str, app: &str, serving: bool) -> Result<(), JournalError> {
        self.execute(
            "INSERT INTO wf_run_owners (owner, app, serving, heartbeat_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (owner) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
            &[
                json!(owner),
                json!(app),
                json!(i64::from(serving)),
                json!(now()),
            ],
        )
        .await?;
        // Hosts gone for a day are forgotten.
        self.execute(
            "DELETE FROM wf_run_owners WHERE app = ? AND heartbeat_at < ?",
            &[json!(app), json!(now() - 86_400_000)],
        )
        .await
        .map(|_| ())
    }

    async fn take_over(&self, takeover: Takeover<'_>) -> Result<Vec<RunDetail>, JournalError> {
        // With the data directory locked, every other serving owner is a dead process's.
        let others_gone = if takeover.others_gone {
            "OR owner IN (SELECT owner FROM wf_run_owners WHERE serving = 1)"
        } else {
            ""
        };
        let candidates = self
            .query(
                &format!(
                    "SELECT run_id, owner FROM wf_runs WHERE app = ? AND status = 'running' \
                     AND (owner IS NULL OR owner <> ?) \
                     AND (owner IS NULL {others_gone} \
                         OR owner NOT IN (SELECT owner FROM wf_run_owners WHERE heartbeat_at >= ?))"
                ),
                &[
                    json!(self.app),
                    json!(takeover.owner),
                    json!(takeover.stale_before),
                ],
            )
            .await?;
        let mut taken = Vec::new();
        for row in candidates {
            let run_id = text(&row, "run_id");
            // Only if nobody took it meanwhile (another host of a shared database).
            let moved = match row.get("owner").and_then(Value::as_str) {
                Some(previous) => {
                    self.execute(
                        "UPDATE wf_runs SET owner = ? WHERE run_id = ? AND status = 'running' \
                         AND owner = ?",
                        &[json!(takeover.owner), json!(run_id), json!(previous)],
                    )
                    .await?
                }
                None => {
                    self.execute(
                        "UPDATE wf_runs SET owner = ? WHERE run_id = ? AND status = 'running' \
                         AND owner IS NULL",
                        &[json!(takeover.owner), json!(run_id)],
                    )
                    .await?
                }
            };
            if moved == 1
                && let Some(detail) = self.get(&run_id).await?
            {
                taken.push(detail);
            }
        }
        Ok(taken)
    }

    async fn claim_queued(
        &self,
        owner: &str,
        limit: usize,
    ) -> Result<Vec<RunDetail>, JournalError> {
        let queued = self
            .query(
                "SELECT run_id FROM wf_runs WHERE app = ? AND status = 'queued' \
                 ORDER BY started_at LIMIT ?",
                &[json!(self.app), json!(limit)],
            )
            .await?;
        let mut claimed = Vec::new();
        for row in queued {
            let run_id = text(&row, "run_id");
            let moved = self
                .execute(
                    "UPDATE wf_runs SET status = 'running', owner = ?, started_at = ? \
                     WHERE run_id = ? AND status = 'queued'",
                    &[json!(owner), json!(now()), json!(run_id)],
                )
                .await?;
            if moved == 1
                && let Some(detail) = self.get(&run_id).await?
            {
                claimed.push(detail);
            }
        }
        Ok(claimed)
    }

    async fn request_cancel(&self, run_id: &str) -> Result<CancelOutcome, JournalError> {
        let rows = self
            .query(
                "SELECT status FROM wf_runs WHERE app = ? AND run_id = ?",
                &[json!(self.app), json!(run_id)],
            )
            .await?;
        let Some(status) = rows
            .first()
            .and_then(|r| r.get("status"))
            .and_then(Value::as_str)
            .and_then(RunStatus::parse)
        else {
            return Ok(CancelOutcome::NotFound);
        };
        match status {
            RunStatus::Queued => {
                let error = RecordedError {
                    kind: wf_engine::ErrorKind::Cancelled,
                    message: "cancelled before it started".into(),
                    step: None,
                };
                let moved = self
                    .execute(
                        "UPDATE wf_runs SET status = 'cancelled', finished_at = ?, error = ? \
                         WHERE run_id = ? AND status = 'queued'",
                        &[json!(now()), error_json(Some(&error)), json!(run_id)],
                    )
                    .await?;
                if moved == 1 {
                    Ok(CancelOutcome::CancelledQueued)
                } else {
                    // It started meanwhile: cancel it running.
                    Box::pin(self.request_cancel(run_id)).await
                }
            }
            RunStatus::Running => {
                self.execute(
                    "UPDATE wf_runs SET cancel_requested = 1 WHERE app = ? AND run_id = ?",
                    &[json!(self.app), json!(run_id)],
                )
                .await?;
                Ok(CancelOutcome::Requested)
            }
            finished => Ok(CancelOutcome::Finished(finished)),
        }
    }

    async fn cancel_requests(&self, owner: &str) -> Result<Vec<String>, JournalError> {
        let rows = self
            .query(
                "SELECT run_id FROM wf_runs WHERE app = ? AND status = 'running' \
                 AND owner = ? AND cancel_requested = 1",
                &[json!(self.app), json!(owner)],
            )
            .await?;
        Ok(rows.iter().map(|r| text(r, "run_id")).collect())
    }

    async fn mark_replayed(&self, original: &str, replay: &str) -> Result<(), JournalError> {
        self.execute(
            "UPDATE wf_runs SET replayed_by = ? WHERE app = ? AND run_id = ?",
            &[json!(replay), json!(self.app), json!(original)],
        )
        .await
        .map(|_| ())
    }

    async fn prune(
        &self,
        pipeline: &str,
        retention: Retention,
        now: i64,
        batch: usize,
    ) -> Result<u64, JournalError> {
        let finished = "status NOT IN ('running', 'queued')";
        let mut doomed: Vec<String> = Vec::new();
        if let Some(max_age) = retention.max_age_ms {
            let rows = self
                .query(
                    &format!(
                        "SELECT run_id FROM wf_runs WHERE app = ? AND pipeline = ? AND {finished} \
                         AND started_at < ? ORDER BY started_at LIMIT ?"
                    ),
                    &[
                        json!(self.app),
                        json!(pipeline),
                        json!(now - max_age),
                        json!(batch),
                    ],
                )
                .await?;
            doomed.extend(rows.iter().map(|r| text(r, "run_id")));
        }
        if let Some(max_runs) = retention.max_runs
            && doomed.len() < batch
        {
            let rows = self
                .query(
                    &format!(
                        "SELECT run_id FROM wf_runs WHERE app = ? AND pipeline = ? AND {finished} \
                         ORDER BY started_at DESC, run_id DESC LIMIT ? OFFSET ?"
                    ),
                    &[
                        json!(self.app),
                        json!(pipeline),
                        json!(batch - doomed.len()),
                        json!(max_runs),
                    ],
                )
                .await?;
            doomed.extend(rows.iter().map(|r| text(r, "run_id")));
        }
        doomed.sort_unstable();
        doomed.dedup();
        if doomed.is_empty() {
            return Ok(0);
        }
        let mut removed = 0;
        for chunk in doomed.chunks(100) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let ids: Vec<Value> = chunk.iter().map(|id| json!(id)).collect();
            let mut tx = self.begin().await?;
            tx.execute(
                &format!("DELETE FROM wf_run_steps WHERE run_id IN ({marks})"),
                &ids,
            )
            .await
            .map_err(|e| self.error(e))?;
            removed += tx
                .execute(
                    &format!("DELETE FROM wf_runs WHERE run_id IN ({marks})"),
                    &ids,
                )
                .await
                .map_err(|e| self.error(e))?
                .affected_rows;
            tx.commit().await.map_err(|e| self.error(e))?;
        }
        Ok(removed)
    }

    async fn pipelines(&self) -> Result<Vec<String>, JournalError> {
        let rows = self
            .query(
                "SELECT DISTINCT pipeline FROM wf_runs WHERE app = ?",
                &[json!(self.app)],
            )
            .await?;
        Ok(rows.iter().map(|r| text(r, "pipeline")).collect())
    }

    async fn claim_key(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        run_id: &str,
        expires_at: i64,
    ) -> Result<KeyClaim, JournalError> {
        let now = now();
        let inserted = self
            .execute(
                "INSERT INTO wf_idempotency (app, scope, idem_key, fingerprint, run_id, answer, claimed_at, expires_at) \
                 VALUES (?, ?, ?, ?, ?, NULL, ?, ?) ON CONFLICT (app, scope, idem_key) DO NOTHING",
                &[
                    json!(self.app),
                    json!(scope),
                    json!(key),
                    json!(fingerprint),
                    json!(run_id),
                    json!(now),
                    json!(expires_at),
                ],
            )
            .await?;
        if inserted == 1 {
            return Ok(KeyClaim::Claimed);
        }
        let rows = self
            .query(
                "SELECT k.fingerprint, k.run_id, k.answer, k.claimed_at, k.expires_at, r.status \
                 FROM wf_idempotency k LEFT JOIN wf_runs r ON r.run_id = k.run_id \
                 WHERE k.app = ? AND k.scope = ? AND k.idem_key = ?",
                &[json!(self.app), json!(scope), json!(key)],
            )
            .await?;
        let Some(row) = rows.first() else {
            // Released meanwhile: try again once.
            return Box::pin(self.claim_key(scope, key, fingerprint, run_id, expires_at)).await;
        };
        let holder = text(row, "run_id");
        let expired = row.get("expires_at").and_then(Value::as_i64).unwrap_or(0) < now;
        let answered = row.get("answer").is_some_and(|a| !a.is_null());
        let take = if expired {
            true
        } else if text(row, "fingerprint") != fingerprint {
            return Ok(KeyClaim::Mismatch);
        } else if answered {
            return Ok(KeyClaim::Done {
                answer: json_column(row.get("answer")),
            });
        } else {
            match row
                .get("status")
                .and_then(Value::as_str)
                .and_then(RunStatus::parse)
            {
                Some(status) if !status.is_finished() => false,
                // Its run ended without an answer (its host died): this request runs.
                Some(_) => true,
                None => {
                    row.get("claimed_at").and_then(Value::as_i64).unwrap_or(0)
                        < now - ORPHAN_CLAIM_MS
                }
            }
        };
        if !take {
            return Ok(KeyClaim::Running { run_id: holder });
        }
        let moved = self
            .execute(
                "UPDATE wf_idempotency SET fingerprint = ?, run_id = ?, answer = NULL, claimed_at = ?, expires_at = ? \
                 WHERE app = ? AND scope = ? AND idem_key = ? AND run_id = ?",
                &[
                    json!(fingerprint),
                    json!(run_id),
                    json!(now),
                    json!(expires_at),
                    json!(self.app),
                    json!(scope),
                    json!(key),
                    json!(holder),
                ],
            )
            .await?;
        Ok(if moved == 1 {
            KeyClaim::Claimed
        } else {
            KeyClaim::Running { run_id: holder }
        })
    }

    async fn complete_key(
        &self,
        scope: &str,
        key: &str,
        answer: &Value,
    ) -> Result<(), JournalError> {
        self.execute(
            "UPDATE wf_idempotency SET answer = ? WHERE app = ? AND scope = ? AND idem_key = ?",
            &[
                json!(answer.to_string()),
                json!(self.app),
                json!(scope),
                json!(key),
            ],
        )
        .await
        .map(|_| ())
    }

    async fn release_key(&self, scope: &str, key: &str) -> Result<(), JournalError> {
        self.execute(
            "DELETE FROM wf_idempotency WHERE app = ? AND scope = ? AND idem_key = ?",
            &[json!(self.app), json!(scope), json!(key)],
        )
        .await
        .map(|_| ())
    }

    async fn prune_keys(&self, now: i64, batch: usize) -> Result<u64, JournalError> {
        self.execute(
            "DELETE FROM wf_idempotency WHERE app = ? AND expires_at < ? AND idem_key IN \
             (SELECT idem_key FROM wf_idempotency WHERE app = ? AND expires_at < ? LIMIT ?)",
            &[
                json!(self.app),
                json!(now),
                json!(self.app),
                json!(now),
                json!(batch),
            ],
        )
        .await
    }

    async fn close(&self) {
        if self.owns_database {
            self.db.close().await;
        }
    }
}

/// Appends a run row: its start, with its end when the batch holds it.
fn run_params(
    rows: &mut Vec<Value>,
    start: &RunStart,
    end: Option<&RunEnd>,
    app: &str,
    max_value_bytes: usize,
) {
    let input = StoredValue::new(&start.input, max_value_bytes);
    let meta = StoredValue::new(&start.meta, max_value_bytes);
    let request = start
        .trigger
        .request
        .as_ref()
        .map(|r| StoredValue::new(r, max_value_bytes));
    let output = end
        .and_then(|e| e.output.as_ref())
        .map(|o| StoredValue::new(o, max_value_bytes).json);
    let status = end.map_or(start.status, |e| e.status);
    rows.extend([
        json!(start.run_id),
        json!(app),
        json!(start.pipeline),
        json!(status.as_str()),
        json!(i64::from(start.durable)),
        json!(start.trigger.kind),
        json!(start.trigger.source),
        json!(request.as_ref().map(|r| &r.json)),
        json!(input.json),
        json!(i64::from(
            input.restorable && meta.restorable && request.as_ref().is_none_or(|r| r.restorable)
        )),
        json!(meta.json),
        json!(output),
        error_json(end.and_then(|e| e.error.as_ref())),
        json!(start.started_at),
        json!(end.map(|e| e.finished_at)),
        json!(end.map(|e| e.duration_ms)),
        json!(start.replay_of),
        json!(start.replay_from),
        json!(start.idempotency.as_ref().map(|i| &i.scope)),
        json!(start.idempotency.as_ref().map(|i| &i.key)),
        json!(start.owner),
    ]);
}

fn step_params(rows: &mut Vec<Value>, step: &StepAttempt, max_value_bytes: usize) {
    let output = step
        .output
        .as_ref()
        .map(|o| StoredValue::new(o, max_value_bytes));
    rows.extend([
        json!(step.run_id),
        json!(step.seq),
        json!(step.step),
        json!(step.step_type),
        json!(i64::from(step.compensation)),
        json!(step.attempt),
        json!(step.status.as_str()),
        json!(step.started_at),
        json!(step.duration_ms),
        json!(output.as_ref().map(|o| &o.json)),
        json!(i64::from(output.as_ref().is_none_or(|o| o.restorable))),
        error_json(step.error.as_ref()),
        json!(step.next),
    ]);
}

fn error_json(error: Option<&RecordedError>) -> Value {
    match error {
        Some(e) => Value::String(serde_json::to_string(e).unwrap_or_default()),
        None => Value::Null,
    }
}

fn now() -> i64 {
    wf_engine::wf_config::time::unix_millis_now()
}

fn text(row: &Map<String, Value>, key: &str) -> String {
    row.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn flag(row: &Map<String, Value>, key: &str) -> bool {
    row.get(key).and_then(Value::as_i64).unwrap_or(0) != 0
}

/// A JSON text column as JSON (SQLite hands back objects already parsed; PostgreSQL text).
fn json_column(value: Option<&Value>) -> Value {
    match value {
        Some(Value::String(text)) => {
            serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone()))
        }
        Some(other) => other.clone(),
        None => Value::Null,
    }
}

fn recorded_error(value: Option<&Value>) -> Option<RecordedError> {
    match json_column(value) {
        Value::Null => None,
        other => serde_json::from_value(other).ok(),
    }
}

fn millis(row: &Map<String, Value>, key: &str) -> Option<i64> {
    row.get(key).and_then(Value::as_i64)
}

fn summary(row: &Map<String, Value>) -> RunSummary {
    let started = millis(row, "started_at").unwrap_or(0);
    RunSummary {
        run_id: text(row, "run_id"),
        pipeline: text(row, "pipeline"),
        status: RunStatus::parse(&text(row, "status")).unwrap_or(RunStatus::Failed),
        durable: flag(row, "durable"),
        trigger: RunTrigger {
            kind: text(row, "trigger_kind"),
            source: text(row, "trigger_source"),
            request: None,
        },
        started_at: wf_engine::wf_config::time::rfc3339_millis(started),
        finished_at: millis(row, "finished_at").map(wf_engine::wf_config::time::rfc3339_millis),
        duration_ms: row.get("duration_ms").and_then(Value::as_f64),
        error: recorded_error(row.get("error")),
        replay_of: row
            .get("replay_of")
            .and_then(Value::as_str)
            .map(str::to_string),
        replay_from: row
            .get("replay_from")
            .and_then(Value::as_str)
            .map(str::to_string),
        replayed_by: row
            .get("replayed_by")
            .and_then(Value::as_str)
            .map(str::to_string),
        cancel_requested: flag(row, "cancel_requested"),
        started_at_ms: started,
    }
}

fn step_record(row: &Map<String, Value>) -> StepRecord {
    StepRecord {
        seq: row.get("seq").and_then(Value::as_u64).unwrap_or(0) as u32,
        step: text(row, "step"),
        step_type: text(row, "step_type"),
        compensation: flag(row, "compensation"),
        attempt: row.get("attempt").and_then(Value::as_u64).unwrap_or(1) as u32,
        status: StepStatus::parse(&text(row, "status")).unwrap_or(StepStatus::Failed),
        started_at: wf_engine::wf_config::time::rfc3339_millis(
            millis(row, "started_at").unwrap_or(0),
        ),
        duration_ms: row
            .get("duration_ms")
            .and_then(Value::as_f64)
            .unwrap_or(0.0),
        output: row
            .get("output")
            .filter(|v| !v.is_null())
            .map(|v| json_column(Some(v))),
        error: recorded_error(row.get("error")),
        next: row.get("next").and_then(Value::as_str).map(str::to_string),
        restorable: flag(row, "output_restorable"),
    }
}

/// Makes journal stores for the engine: registered by `wf-host`.
pub struct SqlJournalBackend;

impl JournalBackend for SqlJournalBackend {
    fn store(
        &self,
        target: &JournalTarget,
        services: &Services,
        app: &str,
    ) -> anyhow::Result<Arc<dyn JournalStore>> {
        Ok(match target {
            JournalTarget::DataDir(dir) => Arc::new(SqlJournal::in_data_dir(dir, app)?),
            JournalTarget::Database(name) => {
                let db = services
                    .get::<Database>(name)
                    .map_err(|e| anyhow::anyhow!("`runs.database`: {e}"))?;
                Arc::new(SqlJournal::new((*db).clone(), app, false))
            }
            JournalTarget::Memory => {
                Arc::new(SqlJournal::new(Database::in_memory("runs")?, app, true))
            }
        })
    }
}
