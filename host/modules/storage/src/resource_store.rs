//! `ResourceStore`: JSON resources by type and id (`orders/42`), with a state and timestamps,
//! in a database. What `api.handler` keeps its resources in.

use serde_json::{Map, Value, json};
use tokio::sync::OnceCell;

use crate::database::{Database, DbError};
use crate::migrate::{self, Migration};

/// One stored resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    pub id: String,
    pub data: Map<String, Value>,
    pub state: String,
    pub created_at: String,
    pub updated_at: String,
}

/// Resources of every type, in one table of one database.
pub struct ResourceStore {
    database: Database,
    schema: OnceCell<()>,
}

impl std::fmt::Debug for ResourceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceStore")
            .field("database", &self.database)
            .finish()
    }
}

impl wf_engine::ServiceKind for ResourceStore {
    const LABEL: &'static str = "a resource store";
}

fn migrations() -> Vec<Migration> {
    vec![
        Migration::new(
            1,
            "resources",
            "CREATE TABLE IF NOT EXISTS wf_resources (
                resource_type TEXT NOT NULL,
                id TEXT NOT NULL,
                data TEXT NOT NULL,
                state TEXT NOT NULL,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                PRIMARY KEY (resource_type, id)
            )",
        )
        .postgres(
            "CREATE TABLE IF NOT EXISTS wf_resources (
                resource_type TEXT NOT NULL,
                id TEXT NOT NULL,
                data JSONB NOT NULL,
                state TEXT NOT NULL,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                PRIMARY KEY (resource_type, id)
            )",
        ),
    ]
}

const COLUMNS: &str = "id, data, state, created_at, updated_at";

fn row_to_resource(mut row: Map<String, Value>) -> Resource {
    let mut text = |key: &str| match row.remove(key) {
        Some(Value::String(s)) => s,
        _ => String::new(),
    };
    let (id, state, created_at, updated_at) = (
        text("id"),
        text("state"),
        text("created_at"),
        text("updated_at"),
    );
    let data = match row.remove("data") {
        Some(Value::Object(map)) => map,
        // SQLite keeps `{}` as text that reads back as an object; anything else is not ours.
        _ => Map::new(),
    };
    Resource {
        id,
        data,
        state,
        created_at,
        updated_at,
    }
}

impl ResourceStore {
    pub fn new(database: Database) -> ResourceStore {
        ResourceStore {
            database,
            schema: OnceCell::new(),
        }
    }

    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Creates the table when missing; every method calls it, the first call does the work.
    pub async fn ready(&self) -> anyhow::Result<()> {
        self.schema
            .get_or_try_init(|| async {
                migrate::migrate(&self.database, "resources", &migrations())
                    .await
                    .map(|_| ())
            })
            .await
            .map(|_| ())
    }

    async fn ensure(&self) -> Result<(), DbError> {
        self.ready()
            .await
            .map_err(|e| DbError::Unavailable(format!("{e:#}")))
    }

    /// Every resource of a type, oldest first.
    pub async fn list(&self, resource_type: &str) -> Result<Vec<Resource>, DbError> {
        self.ensure().await?;
        let rows = self
            .database
            .query(
                &format!("SELECT {COLUMNS} FROM wf_resources WHERE resource_type = ? ORDER BY created_at, id"),
                &[json!(resource_type)],
            )
            .await?;
        Ok(rows.into_iter().map(row_to_resource).collect())
    }

    pub async fn get(&self, resource_type: &str, id: &str) -> Result<Option<Resource>, DbError> {
        self.ensure().await?;
        let rows = self
            .database
            .query(
                &format!("SELECT {COLUMNS} FROM wf_resources WHERE resource_type = ? AND id = ?"),
                &[json!(resource_type), json!(id)],
            )
            .await?;
        Ok(rows.into_iter().next().map(row_to_resource))
    }

    /// Stores a new resource; `None` when one with that id exists already.
    pub async fn create(
        &self,
        resource_type: &str,
        id: &str,
        data: &Map<String, Value>,
        state: &str,
    ) -> Result<Option<Resource>, DbError> {
        self.ensure().await?;
        let now = now();
        let done = self
            .database
            .execute(
                "INSERT INTO wf_resources (resource_type, id, data, state, created_at, updated_at)
                 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (resource_type, id) DO NOTHING",
                &[
                    json!(resource_type),
                    json!(id),
                    Value::Object(data.clone()),
                    json!(state),
                    json!(now),
                    json!(now),
                ],
            )
            .await?;
        Ok((done.affected_rows == 1).then(|| Resource {
            id: id.to_string(),
            data: data.clone(),
            state: state.to_string(),
            created_at: now.clone(),
            updated_at: now,
        }))
    }

    /// Replaces a resource's data (and state, when given); `None` when there is no such
    /// resource.
    pub async fn update(
        &self,
        resource_type: &str,
        id: &str,
        data: &Map<String, Value>,
        state: Option<&str>,
    ) -> Result<Option<Resource>, DbError> {
        self.ensure().await?;
        let now = now();
        let rows = self
            .database
            .query(
                &format!(
                    "UPDATE wf_resources SET data = ?, state = COALESCE(?, state), updated_at = ?
                     WHERE resource_type = ? AND id = ? RETURNING {COLUMNS}"
                ),
                &[
                    Value::Object(data.clone()),
                    json!(state),
                    json!(now),
                    json!(resource_type),
                    json!(id),
                ],
            )
            .await?;
        Ok(rows.into_iter().next().map(row_to_resource))
    }

    /// Sets a resource's state; `false` when there is no such resource.
    pub async fn set_state(
        &self,
        resource_type: &str,
        id: &str,
        state: &str,
    ) -> Result<bool, DbError> {
        self.ensure().await?;
        let done = self
            .database
            .execute(
                "UPDATE wf_resources SET state = ?, updated_at = ? WHERE resource_type = ? AND id = ?",
                &[json!(state), json!(now()), json!(resource_type), json!(id)],
            )
            .await?;
        Ok(done.affected_rows == 1)
    }

    /// `false` when there was no such resource.
    pub async fn delete(&self, resource_type: &str, id: &str) -> Result<bool, DbError> {
        self.ensure().await?;
        let done = self
            .database
            .execute(
                "DELETE FROM wf_resources WHERE resource_type = ? AND id = ?",
                &[json!(resource_type), json!(id)],
            )
            .await?;
        Ok(done.affected_rows == 1)
    }
}

/// RFC 3339 in UTC with milliseconds: sorts as text in time order.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
