//! The users and sign-in sessions of one store, in a database (`wf_auth_users`,
//! `wf_auth_sessions`, `wf_auth_refresh_tokens`; several stores can share the tables).
//!
//! A session is one sign-in. Its refresh tokens form a chain: each refresh uses up the token
//! it was given and adds the next. A token used twice means it was copied, so the whole session
//! is revoked — the thief and the user both have to sign in again (OAuth 2.0 Security BCP §4.14).

use serde_json::{Map, Value, json};
use tokio::sync::OnceCell;
use wf_engine::ServiceKind;
use wf_storage::{Database, DbError, Migration};

/// A user as stored. `metadata` holds everything but the sign-in fields: `role`, ...
#[derive(Clone, Debug, PartialEq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub metadata: Map<String, Value>,
    pub created_at: String,
}

impl User {
    /// The user as clients see it: the original's `{id, email, name, createdAt}` with the
    /// metadata fields beside them, never the password hash.
    pub fn public_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("id".into(), json!(self.id));
        out.insert("email".into(), json!(self.email));
        out.insert("name".into(), json!(self.name));
        out.insert("createdAt".into(), json!(self.created_at));
        for (k, v) in &self.metadata {
            out.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Value::Object(out)
    }

    pub fn role(&self) -> Option<&str> {
        self.metadata.get("role").and_then(Value::as_str)
    }

    /// Admin by `role` or by `roles` — the same claims the tokens carry.
    pub fn is_admin(&self) -> bool {
        let claims = Value::Object(self.metadata.clone());
        wf_http::jwt::roles_of(&claims).any(|r| r == "admin")
    }
}

/// A user to create.
#[derive(Clone, Debug, Default)]
pub struct NewUser {
    /// Kept when given (seed users); a UUID otherwise.
    pub id: Option<String>,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub metadata: Map<String, Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("email already registered")]
    EmailTaken,
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("{0}")]
    Schema(String),
}

/// What presenting a refresh token did.
#[derive(Debug, PartialEq)]
pub enum Rotation {
    /// The token was current: it is used up and `next` continues the session.
    Rotated { session: String, user_id: String },
    /// The token was already used: the session is now revoked.
    Reused { session: String },
    /// The session was revoked (signed out) or the token is not one of ours.
    Refused,
}

/// Emails are compared without case and surrounding spaces.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

fn migrations() -> Vec<Migration> {
    vec![
        Migration::new(
            1,
            "users and sessions",
            "CREATE TABLE IF NOT EXISTS wf_auth_users (
            store TEXT NOT NULL,
            id TEXT NOT NULL,
            email TEXT NOT NULL,
            name TEXT NOT NULL,
            password_hash TEXT NOT NULL,
            metadata TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (store, id),
            UNIQUE (store, email)
        );
        CREATE TABLE IF NOT EXISTS wf_auth_sessions (
            store TEXT NOT NULL,
            id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            expires_at BIGINT NOT NULL,
            revoked_at BIGINT,
            PRIMARY KEY (store, id)
        );
        CREATE INDEX IF NOT EXISTS wf_auth_sessions_revoked ON wf_auth_sessions (store, revoked_at);
        CREATE INDEX IF NOT EXISTS wf_auth_sessions_user ON wf_auth_sessions (store, user_id);
        CREATE TABLE IF NOT EXISTS wf_auth_refresh_tokens (
            store TEXT NOT NULL,
            jti TEXT NOT NULL,
            session_id TEXT NOT NULL,
            expires_at BIGINT NOT NULL,
            used_at BIGINT,
            PRIMARY KEY (store, jti)
        )",
        ),
        // Every poll reads the sessions opened or extended since the last one, by expiry.
        Migration::new(
            2,
            "sessions by expiry",
            "CREATE INDEX IF NOT EXISTS wf_auth_sessions_expires ON wf_auth_sessions (store, expires_at)",
        ),
    ]
}

/// `(id, expires_at)` of session rows.
fn session_expiries(rows: Vec<Map<String, Value>>) -> Vec<(String, i64)> {
    rows.into_iter()
        .map(|mut r| {
            let expires = r.get("expires_at").and_then(Value::as_i64).unwrap_or(0);
            (text(&mut r, "id"), expires)
        })
        .collect()
}

const USER_COLUMNS: &str = "id, email, name, password_hash, metadata, created_at";

fn text(row: &mut Map<String, Value>, key: &str) -> String {
    match row.remove(key) {
        Some(Value::String(s)) => s,
        Some(Value::Null) | None => String::new(),
        // SQLite hands back JSON-looking text as JSON; the column still held text.
        Some(other) => other.to_string(),
    }
}

fn row_to_user(mut row: Map<String, Value>) -> User {
    let metadata = match row.remove("metadata") {
        Some(Value::Object(map)) => map,
        Some(Value::String(s)) => serde_json::from_str(&s).unwrap_or_default(),
        _ => Map::new(),
    };
    User {
        id: text(&mut row, "id"),
        email: text(&mut row, "email"),
        name: text(&mut row, "name"),
        password_hash: text(&mut row, "password_hash"),
        created_at: text(&mut row, "created_at"),
        metadata,
    }
}

pub(crate) fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The users and sessions of one store.
pub struct UserStore {
    name: String,
    database: Database,
    ephemeral: bool,
    schema: OnceCell<()>,
}

impl ServiceKind for UserStore {
    const LABEL: &'static str = "a user store";
}

impl UserStore {
    /// A store in `database`, or in a private in-memory database (users are lost when the app
    /// stops) when there is none.
    pub fn new(name: &str, database: Option<Database>) -> anyhow::Result<UserStore> {
        let ephemeral = database.is_none();
        let database = match database {
            Some(db) => db,
            None => Database::in_memory(name)?,
        };
        Ok(UserStore {
            name: name.to_string(),
            database,
            ephemeral,
            schema: OnceCell::new(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Creates the tables when missing (every call waits for the first).
    pub async fn ready(&self) -> anyhow::Result<()> {
        self.schema
            .get_or_try_init(|| async {
                wf_storage::migrate(&self.database, "auth", &migrations())
                    .await
                    .map(|_| ())
            })
            .await
            .map(|_| ())
    }

    async fn ensure(&self) -> Result<(), StoreError> {
        self.ready()
            .await
            .map_err(|e| StoreError::Schema(format!("{e:#}")))
    }

    pub async fn count(&self) -> Result<i64, StoreError> {
        self.ensure().await?;
        let rows = self
            .database
            .query(
                "SELECT COUNT(*) AS n FROM wf_auth_users WHERE store = ?",
                &[json!(self.name)],
            )
            .await?;
        Ok(rows
            .first()
            .and_then(|r| r.get("n"))
            .and_then(Value::as_i64)
            .unwrap_or(0))
    }

    pub async fn by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        self.ensure().await?;
        let sql = format!("SELECT {USER_COLUMNS} FROM wf_auth_users WHERE store = ? AND email = ?");
        let rows = self
            .database
            .query(&sql, &[json!(self.name), json!(normalize_email(email))])
            .await?;
        Ok(rows.into_iter().next().map(row_to_user))
    }

    pub async fn by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
        self.ensure().await?;
        let sql = format!("SELECT {USER_COLUMNS} FROM wf_auth_users WHERE store = ? AND id = ?");
        let rows = self
            .database
            .query(&sql, &[json!(self.name), json!(id)])
            .await?;
        Ok(rows.into_iter().next().map(row_to_user))
    }

    /// Every user, oldest first.
    pub async fn list(&self) -> Result<Vec<User>, StoreError> {
        self.ensure().await?;
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM wf_auth_users WHERE store = ? ORDER BY created_at, id"
        );
        let rows = self.database.query(&sql, &[json!(self.name)]).await?;
        Ok(rows.into_iter().map(row_to_user).collect())
    }

    pub async fn create(&self, new: NewUser) -> Result<User, StoreError> {
        self.ensure().await?;
        let now = wf_storage::resource_store::now();
        let user = User {
            id: new.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            email: normalize_email(&new.email),
            name: new.name,
            password_hash: new.password_hash,
            metadata: new.metadata,
            created_at: now.clone(),
        };
        let result = self
            .database
            .execute(
                "INSERT INTO wf_auth_users (store, id, email, name, password_hash, metadata, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                &[
                    json!(self.name),
                    json!(user.id),
                    json!(user.email),
                    json!(user.name),
                    json!(user.password_hash),
                    json!(Value::Object(user.metadata.clone()).to_string()),
                    json!(now),
                    json!(now),
                ],
            )
            .await;
        match result {
            Ok(_) => Ok(user),
            // The email (or a seed's id) exists: the only constraints on this table.
            Err(DbError::Constraint(_)) => Err(StoreError::EmailTaken),
            Err(e) => Err(e.into()),
        }
    }

    /// Sets one column of a user (only this module's constant column names). Each change
    /// writes only its own column, so concurrent changes of a user's name, password and role
    /// never undo one another. With `expected`, the write happens only while the column still
    /// holds that value.
    async fn set_column(
        &self,
        id: &str,
        column: &str,
        value: Value,
        expected: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.ensure().await?;
        let mut params = vec![
            value,
            json!(wf_storage::resource_store::now()),
            json!(self.name),
            json!(id),
        ];
        let mut sql = format!(
            "UPDATE wf_auth_users SET {column} = ?, updated_at = ? WHERE store = ? AND id = ?"
        );
        if let Some(expected) = expected {
            sql.push_str(&format!(" AND {column} = ?"));
            params.push(json!(expected));
        }
        let result = self.database.execute(&sql, &params).await?;
        Ok(result.affected_rows > 0)
    }

    pub async fn set_name(&self, id: &str, name: &str) -> Result<bool, StoreError> {
        self.set_column(id, "name", json!(name), None).await
    }

    /// Replaces the password hash; with `previous`, only if it is still that one (an upgrade
    /// of an old hash must not undo a password change made meanwhile).
    pub async fn set_password_hash(
        &self,
        id: &str,
        hash: &str,
        previous: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.set_column(id, "password_hash", json!(hash), previous)
            .await
    }

    pub async fn set_metadata(
        &self,
        id: &str,
        metadata: &Map<String, Value>,
    ) -> Result<bool, StoreError> {
        let text = Value::Object(metadata.clone()).to_string();
        self.set_column(id, "metadata", json!(text), None).await
    }

    /// Deletes a user and revokes their sessions; the revoked session ids are returned.
    pub async fn delete(&self, id: &str) -> Result<Option<Vec<String>>, StoreError> {
        self.ensure().await?;
        let mut tx = self.database.begin().await?;
        let deleted = tx
            .execute(
                "DELETE FROM wf_auth_users WHERE store = ? AND id = ?",
                &[json!(self.name), json!(id)],
            )
            .await?;
        if deleted.affected_rows == 0 {
            return Ok(None);
        }
        let sessions = revoke_where(&mut tx, &self.name, "user_id", id).await?;
        tx.commit().await?;
        Ok(Some(sessions))
    }

    /// Starts a session for `user_id` whose first refresh token is `jti`.
    pub async fn open_session(
        &self,
        session: &str,
        user_id: &str,
        jti: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.ensure().await?;
        let mut tx = self.database.begin().await?;
        tx.execute(
            "INSERT INTO wf_auth_sessions (store, id, user_id, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
            &[json!(self.name), json!(session), json!(user_id), json!(unix_now()), json!(expires_at)],
        )
        .await?;
        insert_token(&mut tx, &self.name, jti, session, expires_at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Uses up refresh token `jti` and, when it was current, records `next_jti` as the
    /// session's next one.
    pub async fn rotate(
        &self,
        jti: &str,
        next_jti: &str,
        next_expires_at: i64,
    ) -> Result<Rotation, StoreError> {
        self.ensure().await?;
        let now = unix_now();
        let mut tx = self.database.begin().await?;
        // Write first: on SQLite the transaction then holds the write lock before it reads,
        // and of two concurrent uses of one token exactly one finds it unused.
        let marked = tx
            .execute(
                "UPDATE wf_auth_refresh_tokens SET used_at = ? WHERE store = ? AND jti = ? AND used_at IS NULL",
                &[json!(now), json!(self.name), json!(jti)],
            )
            .await?
            .affected_rows;
        let rows = tx
            .query(
                "SELECT s.id, s.user_id, s.revoked_at FROM wf_auth_refresh_tokens t JOIN wf_auth_sessions s ON s.store = t.store AND s.id = t.session_id WHERE t.store = ? AND t.jti = ?",
                &[json!(self.name), json!(jti)],
            )
            .await?;
        let Some(mut row) = rows.into_iter().next() else {
            return Ok(Rotation::Refused);
        };
        let session = text(&mut row, "id");
        let user_id = text(&mut row, "user_id");
        let revoked = !matches!(row.get("revoked_at"), None | Some(Value::Null));
        let outcome = if revoked {
            Rotation::Refused
        } else if marked == 0 {
            tx.execute(
                "UPDATE wf_auth_sessions SET revoked_at = ? WHERE store = ? AND id = ?",
                &[json!(now), json!(self.name), json!(session)],
            )
            .await?;
            Rotation::Reused { session }
        } else {
            insert_token(&mut tx, &self.name, next_jti, &session, next_expires_at).await?;
            tx.execute(
                "UPDATE wf_auth_sessions SET expires_at = ? WHERE store = ? AND id = ?",
                &[json!(next_expires_at), json!(self.name), json!(session)],
            )
            .await?;
            Rotation::Rotated { session, user_id }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Revokes one session (signing out). `false` when it is unknown.
    pub async fn revoke_session(&self, session: &str) -> Result<bool, StoreError> {
        self.ensure().await?;
        let result = self
            .database
            .execute(
                "UPDATE wf_auth_sessions SET revoked_at = ? WHERE store = ? AND id = ? AND revoked_at IS NULL",
                &[json!(unix_now()), json!(self.name), json!(session)],
            )
            .await?;
        Ok(result.affected_rows > 0)
    }

    /// Revokes every session of a user; their ids are returned.
    pub async fn revoke_user_sessions(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        self.ensure().await?;
        let mut tx = self.database.begin().await?;
        let sessions = revoke_where(&mut tx, &self.name, "user_id", user_id).await?;
        tx.commit().await?;
        Ok(sessions)
    }

    /// Sessions revoked at or after `since` (unix seconds) that have not expired by `alive_at`:
    /// `(id, expires_at)`.
    pub async fn revoked_sessions(
        &self,
        since: i64,
        alive_at: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        self.ensure().await?;
        let rows = self
            .database
            .query(
                "SELECT id, expires_at FROM wf_auth_sessions WHERE store = ? AND revoked_at >= ? AND expires_at > ?",
                &[json!(self.name), json!(since), json!(alive_at)],
            )
            .await?;
        Ok(session_expiries(rows))
    }

    /// The sessions not revoked whose refresh tokens expire after `expiring_after` (unix
    /// seconds), with that expiry.
    pub async fn live_sessions(
        &self,
        expiring_after: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        self.ensure().await?;
        let rows = self
            .database
            .query(
                "SELECT id, expires_at FROM wf_auth_sessions WHERE store = ? AND expires_at > ? AND revoked_at IS NULL",
                &[json!(self.name), json!(expiring_after)],
            )
            .await?;
        Ok(session_expiries(rows))
    }

    /// Forgets refresh tokens and sessions that expired before `before` (unix seconds).
    pub async fn prune(&self, before: i64) -> Result<(), StoreError> {
        self.ensure().await?;
        for table in ["wf_auth_refresh_tokens", "wf_auth_sessions"] {
            self.database
                .execute(
                    &format!("DELETE FROM {table} WHERE store = ? AND expires_at < ?"),
                    &[json!(self.name), json!(before)],
                )
                .await?;
        }
        Ok(())
    }
}

async fn insert_token(
    tx: &mut wf_storage::Tx,
    store: &str,
    jti: &str,
    session: &str,
    expires_at: i64,
) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO wf_auth_refresh_tokens (store, jti, session_id, expires_at) VALUES (?, ?, ?, ?)",
        &[json!(store), json!(jti), json!(session), json!(expires_at)],
    )
    .await
    .map(|_| ())
}

/// Revokes the live sessions whose `column` is `value`, returning their ids.
async fn revoke_where(
    tx: &mut wf_storage::Tx,
    store: &str,
    column: &str,
    value: &str,
) -> Result<Vec<String>, DbError> {
    let rows = tx
        .query(
            &format!("UPDATE wf_auth_sessions SET revoked_at = ? WHERE store = ? AND {column} = ? AND revoked_at IS NULL RETURNING id"),
            &[json!(unix_now()), json!(store), json!(value)],
        )
        .await?;
    Ok(rows.into_iter().map(|mut r| text(&mut r, "id")).collect())
}
