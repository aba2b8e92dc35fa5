//! The state machine engine: instances of definitions, kept in a database, moved by
//! transitions.
//!
//! A transition on one instance runs alone: within a host behind a per-instance lock, and on
//! PostgreSQL also across hosts behind a transaction-scoped advisory lock held from reading
//! the instance to committing its new state. Every write also checks the instance's version,
//! so even two hosts sharing a SQLite file cannot both commit from the same state. Hooks run
//! before the commit and can veto it; listeners (the state tracker) hear about it after.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::OnceCell;
use wf_engine::journal::{
    Journal, JournalWrite, RecordedError, RunEnd, RunStart, RunStatus, RunTrigger, StepAttempt,
    StepStatus,
};
use wf_engine::wf_config::schema::ErrorKind;
use wf_engine::{ActionError, ActionTarget, Extensions, Pipeline, async_trait};
use wf_messaging::MessageHandler;
use wf_storage::{Database, DbError, Migration, Tx};

use crate::definition::Definition;

/// Auto-transitions chained from one request at most; a longer chain is a loop.
const MAX_AUTO_TRANSITIONS: usize = 32;

/// One instance of a definition, in the original's JSON shape.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    pub id: String,
    pub workflow_type: String,
    pub current_state: String,
    pub previous_state: String,
    pub data: Map<String, Value>,
    pub start_time: String,
    pub last_updated: String,
    pub completed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Transitions so far; every write checks it.
    #[serde(skip)]
    pub version: i64,
}

impl Instance {
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Why an engine call failed; the HTTP status that goes with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmError {
    pub status: u16,
    pub message: String,
}

impl SmError {
    fn not_found(message: String) -> SmError {
        SmError {
            status: 404,
            message,
        }
    }
    fn not_allowed(message: String) -> SmError {
        SmError {
            status: 400,
            message,
        }
    }
    fn conflict(message: String) -> SmError {
        SmError {
            status: 409,
            message,
        }
    }
    fn storage(e: DbError) -> SmError {
        SmError {
            status: 500,
            message: e.to_string(),
        }
    }
}

impl std::fmt::Display for SmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SmError {}

impl From<SmError> for ActionError {
    fn from(e: SmError) -> ActionError {
        ActionError {
            status: e.status,
            message: e.message,
        }
    }
}

/// What a hook runs before a transition commits; an error vetoes the transition.
#[derive(Clone)]
pub enum HookAction {
    /// A module receiving `{workflowId, instanceId, transition, fromState, toState, data}`.
    Handler(Arc<dyn MessageHandler>),
    /// A pipeline run with the same data.
    Pipeline(Arc<Pipeline>),
    /// A module doing the transition's work and naming the transition that follows.
    Processor(Arc<dyn TransitionProcessor>),
}

/// A transition to fire on the same instance right after the current one commits.
#[derive(Clone, Debug, PartialEq)]
pub struct FollowUp {
    pub transition: String,
    /// Merged into the instance's data.
    pub data: Map<String, Value>,
}

/// A hook that does a transition's work (`processing.step`): it runs before the transition
/// commits (an error vetoes it), and the follow-up it returns fires as soon as the transition
/// has committed, under the same instance lock, before any auto-transition.
#[async_trait]
pub trait TransitionProcessor: Send + Sync {
    async fn process(&self, event: &Map<String, Value>) -> Result<Option<FollowUp>, String>;
}

impl wf_engine::ServiceKind for dyn TransitionProcessor {
    const LABEL: &'static str = "a transition processor";
}

/// A hook and the transitions it applies to (empty filters match everything).
#[derive(Clone)]
pub struct Hook {
    pub name: String,
    pub workflow_type: Option<String>,
    pub transitions: Vec<String>,
    pub from_states: Vec<String>,
    pub to_states: Vec<String>,
    pub action: HookAction,
}

impl Hook {
    fn applies(&self, workflow_type: &str, transition: &str, from: &str, to: &str) -> bool {
        let matches =
            |filter: &[String], value: &str| filter.is_empty() || filter.iter().any(|f| f == value);
        self.workflow_type
            .as_deref()
            .is_none_or(|w| w == workflow_type)
            && matches(&self.transitions, transition)
            && matches(&self.from_states, from)
            && matches(&self.to_states, to)
    }
}

/// Told about every committed transition (and every new instance).
pub trait TransitionListener: Send + Sync {
    fn on_change(&self, engine: &str, instance: &Instance);
}

/// A `statemachine.engine`: definitions, hooks and the instances of one application.
pub struct StateMachineEngine {
    name: String,
    database: Database,
    /// True when the engine keeps instances in a private in-memory database.
    ephemeral: bool,
    max_instances: usize,
    definitions: RwLock<HashMap<String, Arc<Definition>>>,
    hooks: RwLock<Vec<Hook>>,
    listeners: RwLock<Vec<Arc<dyn TransitionListener>>>,
    local_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    schema: OnceCell<()>,
    /// Where a follow-up that failed for good is recorded (the app's run journal, when kept).
    journal: std::sync::OnceLock<Arc<Journal>>,
}

impl std::fmt::Debug for StateMachineEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachineEngine")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl wf_engine::ServiceKind for StateMachineEngine {
    const LABEL: &'static str = "a state machine engine";
}

fn migrations() -> Vec<Migration> {
    let instances = |data: &str| {
        format!(
            "CREATE TABLE IF NOT EXISTS wf_state_instances (
                engine TEXT NOT NULL,
                id TEXT NOT NULL,
                workflow_type TEXT NOT NULL,
                current_state TEXT NOT NULL,
                previous_state TEXT NOT NULL,
                data {data} NOT NULL,
                completed INTEGER NOT NULL,
                error TEXT,
                started_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                version BIGINT NOT NULL,
                PRIMARY KEY (engine, id)
            );
            CREATE TABLE IF NOT EXISTS wf_state_history (
                engine TEXT NOT NULL,
                id TEXT NOT NULL,
                version BIGINT NOT NULL,
                transition TEXT NOT NULL,
                from_state TEXT NOT NULL,
                to_state TEXT NOT NULL,
                at TEXT NOT NULL,
                PRIMARY KEY (engine, id, version)
            )"
        )
    };
    vec![
        Migration::new(1, "instances", &instances("TEXT")).postgres(&instances("JSONB")),
        // `create` counts an engine's active instances against `maxInstances`.
        Migration::new(
            2,
            "active instances index",
            "CREATE INDEX IF NOT EXISTS wf_state_instances_active ON wf_state_instances (engine, completed)",
        ),
        // A transition leases its instance while its hooks run, instead of holding a lock
        // and a connection through them.
        Migration::new(
            3,
            "instance leases",
            "ALTER TABLE wf_state_instances ADD COLUMN lease_owner TEXT;
             ALTER TABLE wf_state_instances ADD COLUMN lease_until BIGINT",
        ),
    ]
}

/// How long a transition's lease on its instance lasts without renewal: a host that dies
/// mid-transition blocks that instance at most this long.
const LEASE_MS: i64 = 30_000;
/// How often a running transition renews its lease.
const LEASE_RENEW: std::time::Duration = std::time::Duration::from_secs(10);
/// Pauses before the retries of a follow-up transition that failed on wf's side (a hook or
/// the store).
const FOLLOW_UP_RETRIES: [std::time::Duration; 3] = [
    std::time::Duration::from_millis(100),
    std::time::Duration::from_millis(500),
    std::time::Duration::from_secs(2),
];
/// The trigger kind of a failed follow-up's journal record.
const FOLLOW_UP_TRIGGER: &str = "statemachine";
/// How long a transition waits for another's lease on its instance before answering 409.
const LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

const COLUMNS: &str = "id, workflow_type, current_state, previous_state, data, completed, error, started_at, updated_at, version";

fn row_to_instance(mut row: Map<String, Value>) -> Instance {
    let mut text = |key: &str| match row.remove(key) {
        Some(Value::String(s)) => s,
        _ => String::new(),
    };
    let (id, workflow_type, current_state, previous_state, start_time, last_updated) = (
        text("id"),
        text("workflow_type"),
        text("current_state"),
        text("previous_state"),
        text("started_at"),
        text("updated_at"),
    );
    Instance {
        id,
        workflow_type,
        current_state,
        previous_state,
        start_time,
        last_updated,
        data: match row.remove("data") {
            Some(Value::Object(map)) => map,
            _ => Map::new(),
        },
        completed: row.get("completed").and_then(Value::as_i64) == Some(1),
        error: row.get("error").and_then(Value::as_str).map(str::to_string),
        version: row
            .get("version")
            .and_then(Value::as_i64)
            .unwrap_or_default(),
    }
}

/// Runs on the transaction when there is one, else on the pool.
async fn query(
    db: &Database,
    tx: Option<&mut Tx>,
    sql: &str,
    params: &[Value],
) -> Result<Vec<Map<String, Value>>, DbError> {
    match tx {
        Some(tx) => tx.query(sql, params).await,
        None => db.query(sql, params).await,
    }
}

async fn execute(
    db: &Database,
    tx: Option<&mut Tx>,
    sql: &str,
    params: &[Value],
) -> Result<u64, DbError> {
    match tx {
        Some(tx) => tx.execute(sql, params).await.map(|r| r.affected_rows),
        None => db.execute(sql, params).await.map(|r| r.affected_rows),
    }
}

fn now() -> String {
    wf_storage::resource_store::now()
}

impl StateMachineEngine {
    /// An engine keeping its instances in `database`, or in a private in-memory SQLite
    /// database (gone when the app stops) when there is none.
    pub fn new(
        name: &str,
        database: Option<Database>,
        max_instances: usize,
    ) -> anyhow::Result<StateMachineEngine> {
        let ephemeral = database.is_none();
        let database = match database {
            Some(db) => db,
            None => Database::in_memory(name)?,
        };
        Ok(StateMachineEngine {
            name: name.to_string(),
            database,
            ephemeral,
            max_instances,
            definitions: RwLock::default(),
            hooks: RwLock::default(),
            listeners: RwLock::default(),
            local_locks: Mutex::default(),
            schema: OnceCell::new(),
            journal: std::sync::OnceLock::new(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// Creates the tables when missing (every call waits for the first).
    pub async fn ready(&self) -> anyhow::Result<()> {
        self.schema
            .get_or_try_init(|| async {
                wf_storage::migrate(&self.database, "statemachine", &migrations())
                    .await
                    .map(|_| ())
            })
            .await
            .map(|_| ())
    }

    async fn ensure(&self) -> Result<(), SmError> {
        self.ready().await.map_err(|e| SmError {
            status: 500,
            message: format!("{e:#}"),
        })
    }

    pub fn add_definition(&self, definition: Definition) -> anyhow::Result<()> {
        let definition = definition.compiled()?;
        if let Ok(mut definitions) = self.definitions.write() {
            definitions.insert(definition.name.clone(), Arc::new(definition));
        }
        Ok(())
    }

    pub fn definition(&self, workflow_type: &str) -> Option<Arc<Definition>> {
        self.definitions.read().ok()?.get(workflow_type).cloned()
    }

    pub fn add_hook(&self, hook: Hook) {
        if let Ok(mut hooks) = self.hooks.write() {
            hooks.push(hook);
        }
    }

    pub fn add_listener(&self, listener: Arc<dyn TransitionListener>) {
        if let Ok(mut listeners) = self.listeners.write() {
            listeners.push(listener);
        }
    }

    fn notify(&self, instance: &Instance) {
        let listeners = self.listeners.read().map(|l| l.clone()).unwrap_or_default();
        for listener in listeners {
            listener.on_change(&self.name, instance);
        }
    }

    fn local_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.local_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(id.to_string()).or_default().clone()
    }

    fn release_local_lock(&self, id: &str) {
        let mut locks = self.local_locks.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map holds it: nobody is waiting.
        if locks.get(id).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(id);
        }
    }

    pub async fn get(&self, id: &str) -> Result<Option<Instance>, SmError> {
        self.ensure().await?;
        self.load(None, id).await
    }

    async fn load(&self, tx: Option<&mut Tx>, id: &str) -> Result<Option<Instance>, SmError> {
        let rows = query(
            &self.database,
            tx,
            &format!("SELECT {COLUMNS} FROM wf_state_instances WHERE engine = ? AND id = ?"),
            &[json!(self.name), json!(id)],
        )
        .await
        .map_err(SmError::storage)?;
        Ok(rows.into_iter().next().map(row_to_instance))
    }

    /// Instances of one definition (or all), oldest first.
    pub async fn list(&self, workflow_type: Option<&str>) -> Result<Vec<Instance>, SmError> {
        self.ensure().await?;
        let rows = match workflow_type {
            Some(t) => {
                self.database
                    .query(
                        &format!("SELECT {COLUMNS} FROM wf_state_instances WHERE engine = ? AND workflow_type = ? ORDER BY started_at, id"),
                        &[json!(self.name), json!(t)],
                    )
                    .await
            }
            None => {
                self.database
                    .query(
                        &format!("SELECT {COLUMNS} FROM wf_state_instances WHERE engine = ? ORDER BY started_at, id"),
                        &[json!(self.name)],
                    )
                    .await
            }
        }
        .map_err(SmError::storage)?;
        Ok(rows.into_iter().map(row_to_instance).collect())
    }

    /// A new instance of `workflow_type` in its initial state (auto-transitions from there
    /// fire at once). `id` defaults to a fresh UUID.
    pub async fn create(
        &self,
        workflow_type: &str,
        id: Option<&str>,
        data: Map<String, Value>,
    ) -> Result<Instance, SmError> {
        self.ensure().await?;
        let definition = self.definition(workflow_type).ok_or_else(|| {
            SmError::not_found(format!("workflow definition '{workflow_type}' not found"))
        })?;
        let active = self
            .database
            .query(
                "SELECT COUNT(*) AS n FROM wf_state_instances WHERE engine = ? AND completed = 0",
                &[json!(self.name)],
            )
            .await
            .map_err(SmError::storage)?
            .first()
            .and_then(|r| r.get("n").and_then(Value::as_i64))
            .unwrap_or_default();
        if active as usize >= self.max_instances {
            return Err(SmError::conflict(format!(
                "maximum number of active instances ({}) reached",
                self.max_instances
            )));
        }
        let id = id
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let state = definition
            .states
            .get(&definition.initial_state)
            .cloned()
            .unwrap_or_default();
        let mut data = data;
        data.extend(state.data.clone());
        let now = now();
        let instance = Instance {
            id: id.clone(),
            workflow_type: workflow_type.to_string(),
            current_state: definition.initial_state.clone(),
            previous_state: String::new(),
            data,
            start_time: now.clone(),
            last_updated: now.clone(),
            completed: state.is_final,
            error: (state.is_final && state.is_error)
                .then(|| "Workflow ended in error state".to_string()),
            version: 0,
        };
        let inserted = self
            .database
            .execute(
                "INSERT INTO wf_state_instances (engine, id, workflow_type, current_state, previous_state, data, completed, error, started_at, updated_at, version)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0) ON CONFLICT (engine, id) DO NOTHING",
                &[
                    json!(self.name),
                    json!(id),
                    json!(workflow_type),
                    json!(instance.current_state),
                    json!(""),
                    Value::Object(instance.data.clone()),
                    json!(i64::from(instance.completed)),
                    json!(instance.error),
                    json!(now),
                    json!(now),
                ],
            )
            .await
            .map_err(SmError::storage)?;
        if inserted.affected_rows == 0 {
            return Err(SmError::conflict(format!(
                "workflow instance '{id}' already exists"
            )));
        }
        self.notify(&instance);
        let lock = self.local_lock(&id);
        let guard = lock.lock().await;
        let result = self.run_follow_ups(instance, None).await;
        drop(guard);
        drop(lock);
        self.release_local_lock(&id);
        Ok(result)
    }

    /// Fires `transition` on instance `id` with `data` merged into the instance's data, then
    /// any auto-transitions from the state it reached.
    pub async fn trigger(
        &self,
        id: &str,
        transition: &str,
        data: Map<String, Value>,
    ) -> Result<Instance, SmError> {
        self.ensure().await?;
        let lock = self.local_lock(id);
        let guard = lock.lock().await;
        let result = match self.fire(id, transition, data).await {
            Ok((instance, follow_up)) => Ok(self.run_follow_ups(instance, follow_up).await),
            Err(e) => Err(e),
        };
        drop(guard);
        drop(lock);
        self.release_local_lock(id);
        result
    }

    /// Fires the follow-up a processor asked for, then auto-transitions, as long as each
    /// step leads to another (at most [`MAX_AUTO_TRANSITIONS`] in a row).
    async fn run_follow_ups(
        &self,
        mut instance: Instance,
        mut pending: Option<FollowUp>,
    ) -> Instance {
        for _ in 0..MAX_AUTO_TRANSITIONS {
            let (next, data) = match pending.take() {
                Some(follow_up) => (follow_up.transition, follow_up.data),
                None => match self.auto_transition(&instance) {
                    Some(next) => (next, Map::new()),
                    None => return instance,
                },
            };
            match self.fire_follow_up(&instance, &next, data).await {
                Some((moved, follow_up)) => {
                    instance = moved;
                    pending = follow_up;
                }
                None => return instance,
            }
        }
        tracing::warn!(engine = %self.name, instance = %instance.id, "stopped after {MAX_AUTO_TRANSITIONS} chained auto-transitions; the definition loops");
        instance
    }

    /// Records follow-ups that fail for good in `journal`.
    pub fn set_journal(&self, journal: Arc<Journal>) {
        let _ = self.journal.set(journal);
    }

    /// Fires a follow-up (a processor's or an auto-transition), retrying what may pass
    /// (a busy instance, a failed hook or store) a few times; one that still fails is recorded
    /// in the run journal as a failed run, with every attempt. `None` when it did not fire.
    async fn fire_follow_up(
        &self,
        instance: &Instance,
        transition: &str,
        data: Map<String, Value>,
    ) -> Option<(Instance, Option<FollowUp>)> {
        let started = wf_engine::wf_config::time::unix_millis_now();
        let mut failures = Vec::new();
        for pause in std::iter::once(None).chain(FOLLOW_UP_RETRIES.iter().map(Some)) {
            if let Some(pause) = pause {
                tokio::time::sleep(*pause).await;
            }
            let at = wf_engine::wf_config::time::unix_millis_now();
            let clock = std::time::Instant::now();
            match self.fire(&instance.id, transition, data.clone()).await {
                Ok(fired) => return Some(fired),
                Err(e) => {
                    // A busy instance (409) was already waited for, up to `LEASE_WAIT`.
                    let retry = e.status >= 500;
                    failures.push((e, at, clock.elapsed()));
                    if !retry {
                        break;
                    }
                }
            }
        }
        let last = failures
            .last()
            .map(|(e, _, _)| e.to_string())
            .unwrap_or_default();
        tracing::warn!(engine = %self.name, instance = %instance.id, transition, attempts = failures.len(), error = %last, "follow-up transition did not fire");
        self.record_failed_follow_up(instance, transition, &data, started, &failures)
            .await;
        None
    }

    async fn record_failed_follow_up(
        &self,
        instance: &Instance,
        transition: &str,
        data: &Map<String, Value>,
        started: i64,
        failures: &[(SmError, i64, std::time::Duration)],
    ) {
        let Some(journal) = self.journal.get().filter(|j| j.is_recording()) else {
            return;
        };
        let run_id = wf_engine::journal::RunId::fresh().0;
        let recorded = |e: &SmError| RecordedError {
            kind: match e.status {
                409 | 500.. => ErrorKind::Unavailable,
                _ => ErrorKind::InvalidInput,
            },
            message: e.message.clone(),
            step: Some(transition.to_string()),
        };
        let mut input = Map::new();
        input.insert("instanceId".into(), json!(instance.id));
        input.insert("workflowType".into(), json!(instance.workflow_type));
        input.insert("fromState".into(), json!(instance.current_state));
        input.insert("transition".into(), json!(transition));
        input.insert("data".into(), Value::Object(data.clone()));
        let mut writes = vec![JournalWrite::Start(Box::new(RunStart {
            run_id: run_id.clone(),
            pipeline: format!("statemachine.{}", self.name),
            trigger: RunTrigger {
                kind: FOLLOW_UP_TRIGGER.into(),
                source: format!("{} {} {transition}", self.name, instance.id),
                request: None,
            },
            input,
            meta: Map::new(),
            durable: false,
            started_at: started,
            replay_of: None,
            replay_from: None,
            idempotency: None,
            owner: Some(journal.owner().to_string()),
            status: RunStatus::Running,
        }))];
        for (i, (error, at, took)) in failures.iter().enumerate() {
            writes.push(JournalWrite::Step(Box::new(StepAttempt {
                run_id: run_id.clone(),
                seq: u32::try_from(i + 1).unwrap_or(u32::MAX),
                step: transition.to_string(),
                step_type: "statemachine.transition".into(),
                compensation: false,
                attempt: u32::try_from(i + 1).unwrap_or(u32::MAX),
                started_at: *at,
                duration_ms: took.as_secs_f64() * 1000.0,
                status: StepStatus::Failed,
                output: None,
                error: Some(recorded(error)),
                next: None,
            })));
        }
        let finished_at = wf_engine::wf_config::time::unix_millis_now();
        writes.push(JournalWrite::End(Box::new(RunEnd {
            run_id,
            status: RunStatus::Failed,
            output: None,
            error: failures.last().map(|(e, _, _)| recorded(e)),
            finished_at,
            duration_ms: (finished_at - started) as f64,
        })));
        journal.record_outside(writes).await;
    }

    /// The first auto-transition (by name) leaving the instance's state whose guard holds.
    fn auto_transition(&self, instance: &Instance) -> Option<String> {
        if instance.completed {
            return None;
        }
        let definition = self.definition(&instance.workflow_type)?;
        definition
            .transitions
            .iter()
            .find(|(_, t)| {
                t.auto_transform
                    && t.from_state == instance.current_state
                    && t.allows(&instance.data)
            })
            .map(|(name, _)| name.clone())
    }

    /// One transition, holding the instance's lease; with the follow-up a processor asked
    /// for. Hosts sharing a database queue on the lease, and no connection is held while the
    /// transition's hooks run.
    async fn fire(
        &self,
        id: &str,
        transition: &str,
        data: Map<String, Value>,
    ) -> Result<(Instance, Option<FollowUp>), SmError> {
        let lease = uuid::Uuid::new_v4().to_string();
        self.take_lease(id, &lease).await?;
        let fired = self.fire_leased(id, transition, data, &lease).await;
        if fired.is_err() {
            // Committed transitions clear the lease themselves.
            if let Err(e) = self.release_lease(id, &lease).await {
                tracing::warn!(engine = %self.name, instance = %id, error = %e, "a transition's lease was not released; it lapses by itself");
            }
        }
        fired
    }

    /// Waits (at most [`LEASE_WAIT`]) until this call holds instance `id`'s lease.
    async fn take_lease(&self, id: &str, lease: &str) -> Result<(), SmError> {
        let deadline = tokio::time::Instant::now() + LEASE_WAIT;
        let mut pause = std::time::Duration::from_millis(5);
        loop {
            let now = wf_engine::wf_config::time::unix_millis_now();
            let taken = self
                .database
                .execute(
                    "UPDATE wf_state_instances SET lease_owner = ?, lease_until = ?
                     WHERE engine = ? AND id = ? AND (lease_owner IS NULL OR lease_until < ?)",
                    &[
                        json!(lease),
                        json!(now + LEASE_MS),
                        json!(self.name),
                        json!(id),
                        json!(now),
                    ],
                )
                .await
                .map_err(SmError::storage)?;
            if taken.affected_rows == 1 {
                return Ok(());
            }
            if self.load(None, id).await?.is_none() {
                return Err(SmError::not_found(format!(
                    "workflow instance '{id}' not found"
                )));
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Err(SmError::conflict(format!(
                    "workflow instance '{id}' is busy with another transition; try again"
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(200));
        }
    }

    async fn release_lease(&self, id: &str, lease: &str) -> Result<(), DbError> {
        self.database
            .execute(
                "UPDATE wf_state_instances SET lease_owner = NULL, lease_until = NULL
                 WHERE engine = ? AND id = ? AND lease_owner = ?",
                &[json!(self.name), json!(id), json!(lease)],
            )
            .await
            .map(|_| ())
    }

    /// Runs `work`, renewing lease `lease` on instance `id` while it goes.
    async fn renewing<T>(&self, id: &str, lease: &str, work: impl Future<Output = T>) -> T {
        let renew = async {
            loop {
                tokio::time::sleep(LEASE_RENEW).await;
                let until = wf_engine::wf_config::time::unix_millis_now() + LEASE_MS;
                let renewed = self
                    .database
                    .execute(
                        "UPDATE wf_state_instances SET lease_until = ? WHERE engine = ? AND id = ? AND lease_owner = ?",
                        &[json!(until), json!(self.name), json!(id), json!(lease)],
                    )
                    .await;
                if let Err(e) = renewed {
                    tracing::warn!(engine = %self.name, instance = %id, error = %e, "a transition's lease was not renewed");
                }
            }
        };
        tokio::select! {
            out = work => out,
            never = renew => never,
        }
    }

    async fn fire_leased(
        &self,
        id: &str,
        transition: &str,
        data: Map<String, Value>,
        lease: &str,
    ) -> Result<(Instance, Option<FollowUp>), SmError> {
        let db = &self.database;
        let instance = self
            .load(None, id)
            .await?
            .ok_or_else(|| SmError::not_found(format!("workflow instance '{id}' not found")))?;
        let definition = self.definition(&instance.workflow_type).ok_or_else(|| {
            SmError::not_found(format!(
                "workflow definition '{}' not found",
                instance.workflow_type
            ))
        })?;
        let spec = definition.transitions.get(transition).ok_or_else(|| {
            SmError::not_allowed(format!(
                "transition '{transition}' not found in workflow '{}'",
                instance.workflow_type
            ))
        })?;
        if instance.completed {
            return Err(SmError::not_allowed(format!(
                "cannot trigger transition '{transition}': workflow instance '{id}' is complete (state '{}')",
                instance.current_state
            )));
        }
        if instance.current_state != spec.from_state {
            return Err(SmError::not_allowed(format!(
                "cannot trigger transition '{transition}' from state '{}', expected '{}'",
                instance.current_state, spec.from_state
            )));
        }
        let mut merged = instance.data.clone();
        merged.extend(data);
        merged.extend(spec.data.clone());
        if !spec.allows(&merged) {
            return Err(SmError::not_allowed(format!(
                "transition '{transition}' is not allowed: its condition `{}` does not hold",
                spec.condition.as_deref().unwrap_or_default()
            )));
        }
        let follow_up = self
            .renewing(
                id,
                lease,
                self.run_hooks(&instance, transition, &spec.to_state, &merged),
            )
            .await?;

        let target = definition
            .states
            .get(&spec.to_state)
            .cloned()
            .unwrap_or_default();
        merged.extend(target.data.clone());
        let now = now();
        let next = Instance {
            previous_state: instance.current_state.clone(),
            current_state: spec.to_state.clone(),
            data: merged,
            last_updated: now.clone(),
            completed: target.is_final,
            error: (target.is_final && target.is_error)
                .then(|| "Workflow ended in error state".to_string()),
            version: instance.version + 1,
            ..instance.clone()
        };
        // The new state and its history line commit together, and the lease ends with them;
        // a connection is taken only now, after the hooks ran.
        let mut tx = db.begin().await.map_err(SmError::storage)?;
        let updated = execute(
            db,
            Some(&mut tx),
            "UPDATE wf_state_instances SET current_state = ?, previous_state = ?, data = ?, completed = ?, error = ?, updated_at = ?, version = ?,
                 lease_owner = NULL, lease_until = NULL
             WHERE engine = ? AND id = ? AND version = ? AND lease_owner = ?",
            &[
                json!(next.current_state),
                json!(next.previous_state),
                Value::Object(next.data.clone()),
                json!(i64::from(next.completed)),
                json!(next.error),
                json!(now),
                json!(next.version),
                json!(self.name),
                json!(id),
                json!(instance.version),
                json!(lease),
            ],
        )
        .await
        .map_err(SmError::storage)?;
        if updated == 0 {
            return Err(SmError::conflict(format!(
                "workflow instance '{id}' was changed by another transition at the same time; try again"
            )));
        }
        execute(
            db,
            Some(&mut tx),
            "INSERT INTO wf_state_history (engine, id, version, transition, from_state, to_state, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            &[
                json!(self.name),
                json!(id),
                json!(next.version),
                json!(transition),
                json!(next.previous_state),
                json!(next.current_state),
                json!(now),
            ],
        )
        .await
        .map_err(SmError::storage)?;
        tx.commit().await.map_err(SmError::storage)?;
        tracing::debug!(engine = %self.name, instance = %id, transition, from = %next.previous_state, to = %next.current_state, "transition");
        self.notify(&next);
        Ok((next, follow_up))
    }

    async fn run_hooks(
        &self,
        instance: &Instance,
        transition: &str,
        to: &str,
        data: &Map<String, Value>,
    ) -> Result<Option<FollowUp>, SmError> {
        let hooks: Vec<Hook> = self
            .hooks
            .read()
            .map(|h| {
                h.iter()
                    .filter(|h| {
                        h.applies(
                            &instance.workflow_type,
                            transition,
                            &instance.current_state,
                            to,
                        )
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if hooks.is_empty() {
            return Ok(None);
        }
        let mut event = Map::new();
        event.insert("workflowId".into(), json!(instance.workflow_type));
        event.insert("workflowType".into(), json!(instance.workflow_type));
        event.insert("instanceId".into(), json!(instance.id));
        event.insert("transition".into(), json!(transition));
        event.insert("fromState".into(), json!(instance.current_state));
        event.insert("toState".into(), json!(to));
        event.insert("data".into(), Value::Object(data.clone()));
        let mut follow_up = None;
        for hook in hooks {
            let outcome = match &hook.action {
                HookAction::Handler(handler) => handler
                    .handle(
                        &format!("statemachine.{}", self.name),
                        bytes::Bytes::from(Value::Object(event.clone()).to_string()),
                    )
                    .await
                    .map(|_| None)
                    .map_err(|e| format!("{e:#}")),
                // A run that failed on wf's side (a called service down) is not a veto of the
                // caller's request: a 502 with details in the log, and a follow-up retries it.
                HookAction::Pipeline(pipeline) => {
                    match pipeline.run(event.clone(), Extensions::default()).await {
                        Ok(_) => Ok(None),
                        Err(e) if e.kind.is_server_side() => {
                            tracing::error!(engine = %self.name, instance = %instance.id, transition, hook = %hook.name, error = %e, "transition hook failed");
                            return Err(SmError {
                                status: 502,
                                message: format!("transition handler failed: {}", hook.name),
                            });
                        }
                        Err(e) => Err(e.to_string()),
                    }
                }
                // The work of the transition failed (a component trap, a timeout): wf's
                // failure, not the caller's — details go to the log.
                HookAction::Processor(processor) => match processor.process(&event).await {
                    Ok(next) => Ok(next),
                    Err(e) => {
                        tracing::error!(engine = %self.name, instance = %instance.id, transition, hook = %hook.name, error = %e, "transition processing failed");
                        return Err(SmError {
                            status: 502,
                            message: format!("transition processing failed: {}", hook.name),
                        });
                    }
                },
            };
            match outcome {
                // The last processor to name a follow-up wins.
                Ok(next) => follow_up = next.or(follow_up),
                // The caller sees why; a handler's own error may quote a secret (a URL).
                Err(e) => {
                    return Err(SmError::not_allowed(format!(
                        "transition handler failed: {}: {}",
                        hook.name,
                        wf_engine::redact::redact(&e)
                    )));
                }
            }
        }
        Ok(follow_up)
    }
}

/// A definition as a trigger target: `workflow: <definition>`, `action: <transition>`. The
/// instance is the data's `id` (or `instanceId`); a transition leaving the initial state
/// creates the instance when it does not exist yet.
#[derive(Debug)]
pub struct DefinitionTarget {
    pub engine: Arc<StateMachineEngine>,
    pub workflow_type: String,
}

#[async_trait]
impl ActionTarget for DefinitionTarget {
    async fn run_action(
        &self,
        action: &str,
        data: Map<String, Value>,
    ) -> Result<Value, ActionError> {
        let id = data
            .get("id")
            .or_else(|| data.get("instanceId"))
            .and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            });
        let definition =
            self.engine
                .definition(&self.workflow_type)
                .ok_or_else(|| ActionError {
                    status: 404,
                    message: format!("workflow definition '{}' not found", self.workflow_type),
                })?;
        let exists = match &id {
            Some(id) => self.engine.get(id).await?.is_some(),
            None => false,
        };
        if !exists {
            let starts = definition
                .transitions
                .get(action)
                .is_some_and(|t| t.from_state == definition.initial_state);
            if !starts {
                return Err(match id {
                    Some(id) => ActionError {
                        status: 404,
                        message: format!("workflow instance '{id}' not found"),
                    },
                    None => ActionError {
                        status: 400,
                        message: format!(
                            "transition '{action}' needs the `id` of an existing instance"
                        ),
                    },
                });
            }
            let created = self
                .engine
                .create(&self.workflow_type, id.as_deref(), data.clone())
                .await?;
            return Ok(self
                .engine
                .trigger(&created.id, action, Map::new())
                .await?
                .to_json());
        }
        let id = id.unwrap_or_default();
        Ok(self.engine.trigger(&id, action, data).await?.to_json())
    }
}
