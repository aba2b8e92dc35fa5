//! `Database`: one connection pool on SQLite or PostgreSQL, with JSON in and JSON out.
//!
//! Parameters are always bound, never spliced into SQL. On PostgreSQL each statement is
//! prepared first so the server says what type every parameter has, and a JSON value is
//! converted to exactly that type (`"42"` into an `INT4` column is the number 42; an object into
//! a `JSONB` column is JSON). Rows come back as JSON objects: numbers stay numbers, JSON
//! columns stay JSON (the original returned them as strings of JSON).

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Number, Value};
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgRow, PgTypeInfo};
use sqlx::query::Query;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::types::Decimal;
use sqlx::{
    AssertSqlSafe, Column, Either, Executor, Postgres, Row, Sqlite, Statement, TypeInfo, ValueRef,
};
use wf_engine::services::ServiceKind;

/// Which database a pool talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Where and how to connect; built from a module's config without any I/O.
#[derive(Clone, Debug)]
pub enum Target {
    /// A database file (created when missing) or `:memory:`.
    Sqlite { path: String, wal: bool },
    /// A `postgres://` URL.
    Postgres { url: String },
}

/// Pool settings shared by every database module type.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub min_connections: u32,
    pub connect_timeout: Duration,
}

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A database module's pool. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

struct Inner {
    /// The module's name, for errors and logs.
    name: String,
    /// What errors and logs call the database: a file path, or host and database without
    /// credentials.
    display: String,
    /// ``database `name` (display)``, made once: every error names it.
    label: String,
    options: Options,
    settings: PoolSettings,
    pool: std::sync::OnceLock<Pool>,
    connect_timeout: Duration,
}

#[derive(Clone)]
enum Options {
    /// With the most connections (1 for `:memory:`).
    Sqlite(SqliteConnectOptions, u32),
    Postgres(PgConnectOptions),
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("name", &self.inner.name)
            .field("at", &self.inner.display)
            .finish()
    }
}

impl ServiceKind for Database {
    const LABEL: &'static str = "a database";
}

/// A failed database call. Messages never contain the DSN or its credentials.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The caller's values do not fit the statement (wrong count, not convertible to a
    /// parameter's type).
    #[error("{0}")]
    Parameter(String),
    /// The database refused the statement (syntax, missing table, ...).
    #[error("{0}")]
    Statement(String),
    /// The values break a constraint (unique, foreign key, not null, check): the caller's
    /// data is wrong.
    #[error("{0}")]
    Constraint(String),
    /// The database could not be reached or the pool is closed.
    #[error("{0}")]
    Unavailable(String),
    /// A column of a type wf cannot return as JSON.
    #[error("{0}")]
    Column(String),
}

impl DbError {
    fn from_sqlx(db: &str, error: sqlx::Error) -> DbError {
        match error {
            sqlx::Error::Database(e)
                if e.kind() != sqlx::error::ErrorKind::Other
                    || is_constraint_code(e.code().as_deref()) =>
            {
                // The caller sees this one (a 400): the data it broke, not where the
                // database lives.
                DbError::Constraint(e.message().to_string())
            }
            sqlx::Error::Database(e)
                if is_transient_code(
                    e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                        .is_some(),
                    e.code().as_deref(),
                ) =>
            {
                DbError::Unavailable(format!("{db}: {}", e.message()))
            }
            sqlx::Error::Database(e) => DbError::Statement(format!("{db}: {}", e.message())),
            sqlx::Error::PoolTimedOut => DbError::Unavailable(format!(
                "{db}: no connection free within the pool's acquire timeout"
            )),
            sqlx::Error::PoolClosed => DbError::Unavailable(format!("{db}: the pool is closed")),
            sqlx::Error::Io(e) => DbError::Unavailable(format!("{db}: {e}")),
            sqlx::Error::Tls(e) => DbError::Unavailable(format!("{db}: TLS: {e}")),
            sqlx::Error::Protocol(e) => DbError::Unavailable(format!("{db}: protocol: {e}")),
            other => DbError::Statement(format!("{db}: {other}")),
        }
    }
}

/// What a statement that returns no rows did.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecResult {
    pub affected_rows: u64,
    /// SQLite's `last_insert_rowid()`; PostgreSQL has none (use `RETURNING id`).
    pub last_insert_id: Option<i64>,
}

impl Database {
    /// A pool that connects on first use; [`Database::check`] connects at start. Nothing is
    /// opened here (a Tokio runtime may not exist yet: `wf-host validate` builds apps too).
    pub fn new(name: &str, target: &Target, settings: &PoolSettings) -> anyhow::Result<Database> {
        let (options, display) = match target {
            Target::Sqlite { path, wal } => {
                let options = if path == ":memory:" {
                    // Every connection of a pool must see the same in-memory database.
                    SqliteConnectOptions::from_str("sqlite::memory:")?
                } else {
                    SqliteConnectOptions::new()
                        .filename(path)
                        .create_if_missing(true)
                };
                let options = options
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(5))
                    .journal_mode(if *wal {
                        SqliteJournalMode::Wal
                    } else {
                        SqliteJournalMode::Delete
                    })
                    .synchronous(if *wal {
                        SqliteSynchronous::Normal
                    } else {
                        SqliteSynchronous::Full
                    });
                // One in-memory database cannot be shared by several connections safely.
                let max = if path == ":memory:" {
                    1
                } else {
                    settings.max_connections
                };
                (Options::Sqlite(options, max), format!("sqlite:{path}"))
            }
            Target::Postgres { url } => {
                let options = PgConnectOptions::from_str(url).map_err(|e| {
                    anyhow::anyhow!(
                        "the PostgreSQL URL does not parse: {}",
                        redact(&e.to_string(), url)
                    )
                })?;
                let display = format!(
                    "postgres://{}:{}/{}",
                    options.get_host(),
                    options.get_port(),
                    options.get_database().unwrap_or("")
                );
                (Options::Postgres(options), display)
            }
        };
        Ok(Database {
            inner: Arc::new(Inner {
                name: name.to_string(),
                label: format!("database `{name}` ({display})"),
                display,
                options,
                settings: settings.clone(),
                pool: std::sync::OnceLock::new(),
                connect_timeout: settings.connect_timeout,
            }),
        })
    }

    /// A private in-memory SQLite database, for parts that keep state without a configured
    /// database (gone when the app stops).
    pub fn in_memory(name: &str) -> anyhow::Result<Database> {
        Database::new(
            &format!("{name} (in memory)"),
            &Target::Sqlite {
                path: ":memory:".into(),
                wal: false,
            },
            &PoolSettings {
                max_connections: 1,
                min_connections: 1,
                connect_timeout: Duration::from_secs(5),
            },
        )
    }

    /// The pool, made on first use (inside the runtime).
    fn pool(&self) -> &Pool {
        let inner = &self.inner;
        inner.pool.get_or_init(|| match &inner.options {
            Options::Sqlite(options, max) => Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(*max)
                    .min_connections(inner.settings.min_connections.min(*max))
                    .acquire_timeout(inner.connect_timeout)
                    .connect_lazy_with(options.clone()),
            ),
            Options::Postgres(options) => Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(inner.settings.max_connections)
                    .min_connections(
                        inner
                            .settings
                            .min_connections
                            .min(inner.settings.max_connections),
                    )
                    .acquire_timeout(inner.connect_timeout)
                    .connect_lazy_with(options.clone()),
            ),
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn backend(&self) -> Backend {
        match self.inner.options {
            Options::Sqlite(..) => Backend::Sqlite,
            Options::Postgres(_) => Backend::Postgres,
        }
    }

    /// `database `orders-db` (postgres://127.0.0.1:5432/test)`: how errors name it.
    pub fn describe(&self) -> &str {
        &self.inner.label
    }

    /// Connects once, so an unreachable database fails the app's start with a clear error.
    pub async fn check(&self) -> anyhow::Result<()> {
        let ping = self.query("SELECT 1", &[]);
        match tokio::time::timeout(self.inner.connect_timeout, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(anyhow::anyhow!("cannot use {}: {e}", self.describe())),
            Err(_) => Err(anyhow::anyhow!(
                "{} did not answer within {:?}",
                self.describe(),
                self.inner.connect_timeout
            )),
        }
    }

    pub async fn close(&self) {
        match self.inner.pool.get() {
            Some(Pool::Sqlite(p)) => p.close().await,
            Some(Pool::Postgres(p)) => p.close().await,
            None => {}
        }
    }

    /// Runs a statement that returns rows; each row is a JSON object keyed by column name.
    pub async fn query(
        &self,
        sql: &str,
        params: &[Value],
    ) -> Result<Vec<Map<String, Value>>, DbError> {
        let db = self.describe();
        match self.pool() {
            Pool::Sqlite(pool) => {
                let mut conn = pool
                    .acquire()
                    .await
                    .map_err(|e| DbError::from_sqlx(db, e))?;
                sqlite_query(db, &mut conn, sql, params).await
            }
            Pool::Postgres(pool) => {
                let mut conn = pool
                    .acquire()
                    .await
                    .map_err(|e| DbError::from_sqlx(db, e))?;
                pg_query(db, &mut conn, sql, params).await
            }
        }
    }

    /// Runs a statement for its effect.
    pub async fn execute(&self, sql: &str, params: &[Value]) -> Result<ExecResult, DbError> {
        let db = self.describe();
        match self.pool() {
            Pool::Sqlite(pool) => {
                let mut conn = pool
                    .acquire()
                    .await
                    .map_err(|e| DbError::from_sqlx(db, e))?;
                sqlite_execute(db, &mut conn, sql, params).await
            }
            Pool::Postgres(pool) => {
                let mut conn = pool
                    .acquire()
                    .await
                    .map_err(|e| DbError::from_sqlx(db, e))?;
                pg_execute(db, &mut conn, sql, params).await
            }
        }
    }

    /// Starts a transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`), so
    /// read-then-write transactions never deadlock each other.
    pub async fn begin(&self) -> Result<Tx, DbError> {
        Ok(match self.pool() {
            Pool::Sqlite(pool) => Tx {
                database: self.clone(),
                inner: TxInner::Sqlite(
                    pool.begin_with("BEGIN IMMEDIATE")
                        .await
                        .map_err(|e| DbError::from_sqlx(self.describe(), e))?,
                ),
            },
            Pool::Postgres(pool) => Tx {
                database: self.clone(),
                inner: TxInner::Postgres(
                    pool.begin()
                        .await
                        .map_err(|e| DbError::from_sqlx(self.describe(), e))?,
                ),
            },
        })
    }
}

/// An open transaction; dropped without [`Tx::commit`] it rolls back.
pub struct Tx {
    /// For errors, which name it.
    database: Database,
    inner: TxInner,
}

enum TxInner {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

impl Tx {
    pub async fn query(
        &mut self,
        sql: &str,
        params: &[Value],
    ) -> Result<Vec<Map<String, Value>>, DbError> {
        match &mut self.inner {
            TxInner::Sqlite(tx) => sqlite_query(self.database.describe(), tx, sql, params).await,
            TxInner::Postgres(tx) => pg_query(self.database.describe(), tx, sql, params).await,
        }
    }

    pub async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<ExecResult, DbError> {
        match &mut self.inner {
            TxInner::Sqlite(tx) => sqlite_execute(self.database.describe(), tx, sql, params).await,
            TxInner::Postgres(tx) => pg_execute(self.database.describe(), tx, sql, params).await,
        }
    }

    /// Holds `key` until the transaction ends, across every host sharing the database:
    /// a PostgreSQL transaction-scoped advisory lock. SQLite transactions already hold the
    /// database's write lock.
    pub async fn lock(&mut self, key: &str) -> Result<(), DbError> {
        match &mut self.inner {
            TxInner::Sqlite(_) => Ok(()),
            TxInner::Postgres(tx) => sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(lock_key(key))
                .execute(&mut **tx)
                .await
                .map(|_| ())
                .map_err(|e| DbError::from_sqlx(self.database.describe(), e)),
        }
    }

    pub async fn commit(self) -> Result<(), DbError> {
        match self.inner {
            TxInner::Sqlite(tx) => tx.commit().await,
            TxInner::Postgres(tx) => tx.commit().await,
        }
        .map_err(|e| DbError::from_sqlx(self.database.describe(), e))
    }
}

/// Constraint failures sqlx does not classify: SQLite's whole `SQLITE_CONSTRAINT` family
/// (a STRICT table's datatype check, ...) and PostgreSQL's class 23 (integrity) and 22
/// (data exception: a value out of range, bad input syntax).
fn is_constraint_code(code: Option<&str>) -> bool {
    match code {
        Some(code) if code.starts_with("23") || code.starts_with("22") => true,
        Some(code) => code.parse::<u32>().is_ok_and(|c| c & 0xff == 19),
        None => false,
    }
}

/// Errors that say the database cannot do the work now, not that the statement is wrong: a
/// full disk, an I/O error, a busy or locked file, a server shutting down or out of
/// resources, a serialization conflict. Retrying later may succeed (`unavailable`, 503).
fn is_transient_code(postgres: bool, code: Option<&str>) -> bool {
    let Some(code) = code else {
        return false;
    };
    if postgres {
        // SQLSTATE: connection exceptions, insufficient resources (disk full, out of memory,
        // too many connections), operator intervention (shutdown), serialization failure and
        // deadlock.
        ["08", "53", "57P"].iter().any(|c| code.starts_with(c))
            || code == "40001"
            || code == "40P01"
    } else {
        // SQLite result codes (the primary code is the low byte): BUSY, LOCKED, IOERR, FULL,
        // CANTOPEN.
        code.parse::<u32>()
            .is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 10 | 13 | 14))
    }
}

/// A stable 64-bit key for an advisory lock name (the first 8 bytes of its SHA-256).
fn lock_key(name: &str) -> i64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(name.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

/// Removes a URL's password from a message that may quote it.
fn redact(message: &str, url: &str) -> String {
    match url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
    {
        Some((userinfo, _)) => match userinfo.split_once(':') {
            Some((_, password)) if !password.is_empty() => message.replace(password, "***"),
            _ => message.to_string(),
        },
        None => message.to_string(),
    }
}

fn sql_text(sql: &str) -> sqlx::SqlStr {
    // Statements come from the application's configuration; values are always bound.
    sqlx::SqlSafeStr::into_sql_str(AssertSqlSafe(sql.to_string()))
}

// ---- SQLite ----

fn sqlite_bind<'q>(
    mut query: Query<'q, Sqlite, SqliteArguments>,
    params: &[Value],
) -> Query<'q, Sqlite, SqliteArguments> {
    for value in params {
        query = match value {
            Value::Null => query.bind(None::<String>),
            Value::Bool(b) => query.bind(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => query.bind(i),
                None => query.bind(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => query.bind(s.clone()),
            other => query.bind(other.to_string()),
        };
    }
    query
}

async fn sqlite_query(
    db: &str,
    conn: &mut sqlx::SqliteConnection,
    sql: &str,
    params: &[Value],
) -> Result<Vec<Map<String, Value>>, DbError> {
    let query = sqlite_bind(sqlx::query(sql_text(sql)), params);
    let rows = query
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| DbError::from_sqlx(db, e))?;
    rows.iter().map(|row| sqlite_row(db, row)).collect()
}

async fn sqlite_execute(
    db: &str,
    conn: &mut sqlx::SqliteConnection,
    sql: &str,
    params: &[Value],
) -> Result<ExecResult, DbError> {
    let done = sqlite_bind(sqlx::query(sql_text(sql)), params)
        .execute(&mut *conn)
        .await
        .map_err(|e| DbError::from_sqlx(db, e))?;
    Ok(ExecResult {
        affected_rows: done.rows_affected(),
        last_insert_id: Some(done.last_insert_rowid()),
    })
}

fn sqlite_row(db: &str, row: &SqliteRow) -> Result<Map<String, Value>, DbError> {
    let mut out = Map::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let raw = row.try_get_raw(i).map_err(|e| DbError::from_sqlx(db, e))?;
        let value = if raw.is_null() {
            Value::Null
        } else {
            let kind = raw.type_info().name().to_string();
            let get =
                |e: sqlx::Error| DbError::Column(format!("{db}: column `{}`: {e}", column.name()));
            match kind.as_str() {
                "INTEGER" | "INT4" => Value::from(row.try_get_unchecked::<i64, _>(i).map_err(get)?),
                "BOOLEAN" => Value::Bool(row.try_get_unchecked::<bool, _>(i).map_err(get)?),
                "REAL" => Number::from_f64(row.try_get_unchecked::<f64, _>(i).map_err(get)?)
                    .map(Value::Number)
                    .unwrap_or(Value::Null),
                "BLOB" => Value::String(
                    String::from_utf8_lossy(&row.try_get_unchecked::<Vec<u8>, _>(i).map_err(get)?)
                        .into_owned(),
                ),
                _ => text_value(row.try_get_unchecked::<String, _>(i).map_err(get)?),
            }
        };
        out.insert(column.name().to_string(), value);
    }
    Ok(out)
}

/// SQLite has no JSON type: text holding a JSON object or array comes back as that object or
/// array, so what was stored as JSON reads back as JSON.
fn text_value(text: String) -> Value {
    let trimmed = text.trim_start();
    if (trimmed.starts_with('{') || trimmed.starts_with('['))
        && let Ok(value @ (Value::Object(_) | Value::Array(_))) = serde_json::from_str(&text)
    {
        return value;
    }
    Value::String(text)
}

// ---- PostgreSQL ----

/// `?` placeholders become `$1, $2, ...` so one statement text works on both databases.
/// Statements that already use `$n` are left alone (write `$n` to use the jsonb `?` operators).
pub fn postgres_placeholders(sql: &str) -> Cow<'_, str> {
    let bytes = sql.as_bytes();
    if !bytes.contains(&b'?') || has_dollar_params(sql) {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    let mut chars = sql.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                for (_, d) in chars.by_ref() {
                    out.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if matches!(chars.peek(), Some((_, '-'))) => {
                out.push(c);
                for (_, d) in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '?' => {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn has_dollar_params(sql: &str) -> bool {
    let bytes = sql.as_bytes();
    bytes
        .windows(2)
        .any(|w| w[0] == b'$' && w[1].is_ascii_digit())
}

async fn pg_prepare(
    db: &str,
    conn: &mut sqlx::PgConnection,
    sql: &str,
) -> Result<Vec<PgTypeInfo>, DbError> {
    // The statement is cached on this connection; the query that follows reuses it.
    let statement = (&mut *conn)
        .prepare(sql_text(sql))
        .await
        .map_err(|e| DbError::from_sqlx(db, e))?;
    Ok(match statement.parameters() {
        Some(Either::Left(types)) => types.to_vec(),
        _ => Vec::new(),
    })
}

fn pg_bind<'q>(
    types: &[PgTypeInfo],
    sql: &'q str,
    params: &[Value],
) -> Result<Query<'q, Postgres, PgArguments>, DbError> {
    if types.len() != params.len() {
        return Err(DbError::Parameter(format!(
            "the statement has {} parameter(s) but {} value(s) were given",
            types.len(),
            params.len()
        )));
    }
    let mut query = sqlx::query(sql_text(sql));
    for (i, (value, ty)) in params.iter().zip(types).enumerate() {
        query = bind_typed(query, value, ty.name()).map_err(|reason| {
            DbError::Parameter(format!("parameter ${} ({}): {reason}", i + 1, ty.name()))
        })?;
    }
    Ok(query)
}

fn bind_typed<'q>(
    query: Query<'q, Postgres, PgArguments>,
    value: &Value,
    ty: &str,
) -> Result<Query<'q, Postgres, PgArguments>, String> {
    let null = value.is_null();
    Ok(match ty {
        "BOOL" => query.bind((!null).then(|| as_bool(value)).transpose()?),
        "INT2" => query.bind(
            (!null)
                .then(|| as_i64(value).and_then(|i| i16::try_from(i).map_err(|_| out_of_range(i))))
                .transpose()?,
        ),
        "INT4" => query.bind(
            (!null)
                .then(|| as_i64(value).and_then(|i| i32::try_from(i).map_err(|_| out_of_range(i))))
                .transpose()?,
        ),
        "INT8" => query.bind((!null).then(|| as_i64(value)).transpose()?),
        "FLOAT4" => query.bind(
            (!null)
                .then(|| as_f64(value).map(|f| f as f32))
                .transpose()?,
        ),
        "FLOAT8" => query.bind((!null).then(|| as_f64(value)).transpose()?),
        "NUMERIC" => query.bind(
            (!null)
                .then(|| {
                    Decimal::from_str(&plain_text(value))
                        .or_else(|_| Decimal::from_scientific(&plain_text(value)))
                        .map_err(|_| format!("`{}` is not a number", plain_text(value)))
                })
                .transpose()?,
        ),
        "JSON" | "JSONB" => query.bind((!null).then(|| sqlx::types::Json(value.clone()))),
        "UUID" => query.bind(
            (!null)
                .then(|| {
                    sqlx::types::Uuid::parse_str(&plain_text(value))
                        .map_err(|_| format!("`{}` is not a UUID", plain_text(value)))
                })
                .transpose()?,
        ),
        "TIMESTAMPTZ" => query.bind(
            (!null)
                .then(|| {
                    chrono::DateTime::parse_from_rfc3339(&plain_text(value))
                        .map(|t| t.with_timezone(&chrono::Utc))
                        .map_err(|_| format!("`{}` is not an RFC 3339 time", plain_text(value)))
                })
                .transpose()?,
        ),
        "TIMESTAMP" => query.bind(
            (!null)
                .then(|| {
                    let text = plain_text(value);
                    chrono::NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f")
                        .or_else(|_| {
                            chrono::NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S%.f")
                        })
                        .map_err(|_| {
                            format!("`{text}` is not a date and time (2026-01-31T12:00:00)")
                        })
                })
                .transpose()?,
        ),
        "DATE" => query.bind(
            (!null)
                .then(|| {
                    let text = plain_text(value);
                    chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d")
                        .map_err(|_| format!("`{text}` is not a date (2026-01-31)"))
                })
                .transpose()?,
        ),
        "BYTEA" => query.bind((!null).then(|| plain_text(value).into_bytes())),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CITEXT" | "UNKNOWN" | "CHAR" => {
            query.bind((!null).then(|| plain_text(value)))
        }
        other => {
            return Err(format!(
                "values of type {other} cannot be bound yet; cast the parameter in SQL, e.g. `$1::text::{}`",
                other.to_ascii_lowercase()
            ));
        }
    })
}

fn out_of_range(i: i64) -> String {
    format!("{i} is out of range for this column")
}

/// A value's text: strings as they are, everything else as JSON.
fn plain_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn as_i64(value: &Value) -> Result<i64, String> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                    .map(|f| f as i64)
            })
            .ok_or_else(|| format!("{n} is not an integer")),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an integer")),
        Value::Bool(b) => Ok(i64::from(*b)),
        other => Err(format!("{other} is not an integer")),
    }
}

fn as_f64(value: &Value) -> Result<f64, String> {
    match value {
        Value::Number(n) => n.as_f64().ok_or_else(|| format!("{n} is not a number")),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a number")),
        other => Err(format!("{other} is not a number")),
    }
}

fn as_bool(value: &Value) -> Result<bool, String> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::Number(n) if n.as_i64() == Some(0) => Ok(false),
        Value::Number(n) if n.as_i64() == Some(1) => Ok(true),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "t" | "1" | "yes" => Ok(true),
            "false" | "f" | "0" | "no" => Ok(false),
            _ => Err(format!("`{s}` is not a boolean")),
        },
        other => Err(format!("{other} is not a boolean")),
    }
}

async fn pg_query(
    db: &str,
    conn: &mut sqlx::PgConnection,
    sql: &str,
    params: &[Value],
) -> Result<Vec<Map<String, Value>>, DbError> {
    let sql = postgres_placeholders(sql);
    let types = pg_prepare(db, conn, &sql).await?;
    let rows = pg_bind(&types, &sql, params)?
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| DbError::from_sqlx(db, e))?;
    rows.iter().map(|row| pg_row(db, row)).collect()
}

async fn pg_execute(
    db: &str,
    conn: &mut sqlx::PgConnection,
    sql: &str,
    params: &[Value],
) -> Result<ExecResult, DbError> {
    let sql = postgres_placeholders(sql);
    let types = pg_prepare(db, conn, &sql).await?;
    let done = pg_bind(&types, &sql, params)?
        .execute(&mut *conn)
        .await
        .map_err(|e| DbError::from_sqlx(db, e))?;
    Ok(ExecResult {
        affected_rows: done.rows_affected(),
        last_insert_id: None,
    })
}

fn pg_row(db: &str, row: &PgRow) -> Result<Map<String, Value>, DbError> {
    let mut out = Map::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let raw = row.try_get_raw(i).map_err(|e| DbError::from_sqlx(db, e))?;
        let value = if raw.is_null() {
            Value::Null
        } else {
            let get =
                |e: sqlx::Error| DbError::Column(format!("{db}: column `{}`: {e}", column.name()));
            match column.type_info().name() {
                "BOOL" => Value::Bool(row.try_get_unchecked::<bool, _>(i).map_err(get)?),
                "INT2" => Value::from(row.try_get_unchecked::<i16, _>(i).map_err(get)?),
                "INT4" => Value::from(row.try_get_unchecked::<i32, _>(i).map_err(get)?),
                "INT8" => Value::from(row.try_get_unchecked::<i64, _>(i).map_err(get)?),
                "OID" => Value::from(
                    row.try_get_unchecked::<sqlx::postgres::types::Oid, _>(i)
                        .map_err(get)?
                        .0,
                ),
                "FLOAT4" => float(f64::from(row.try_get_unchecked::<f32, _>(i).map_err(get)?)),
                "FLOAT8" => float(row.try_get_unchecked::<f64, _>(i).map_err(get)?),
                "NUMERIC" => decimal(row.try_get_unchecked::<Decimal, _>(i).map_err(get)?),
                "JSON" | "JSONB" => {
                    row.try_get_unchecked::<sqlx::types::Json<Value>, _>(i)
                        .map_err(get)?
                        .0
                }
                "UUID" => Value::String(
                    row.try_get_unchecked::<sqlx::types::Uuid, _>(i)
                        .map_err(get)?
                        .to_string(),
                ),
                "TIMESTAMPTZ" => Value::String(
                    row.try_get_unchecked::<chrono::DateTime<chrono::Utc>, _>(i)
                        .map_err(get)?
                        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                ),
                "TIMESTAMP" => Value::String(
                    row.try_get_unchecked::<chrono::NaiveDateTime, _>(i)
                        .map_err(get)?
                        .format("%Y-%m-%dT%H:%M:%S%.f")
                        .to_string(),
                ),
                "DATE" => Value::String(
                    row.try_get_unchecked::<chrono::NaiveDate, _>(i)
                        .map_err(get)?
                        .to_string(),
                ),
                "BYTEA" => Value::String(
                    String::from_utf8_lossy(&row.try_get_unchecked::<Vec<u8>, _>(i).map_err(get)?)
                        .into_owned(),
                ),
                "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CITEXT" | "UNKNOWN" | "CHAR" => {
                    Value::String(row.try_get_unchecked::<String, _>(i).map_err(get)?)
                }
                "TEXT[]" | "VARCHAR[]" => {
                    Value::from(row.try_get_unchecked::<Vec<String>, _>(i).map_err(get)?)
                }
                "INT4[]" => Value::from(row.try_get_unchecked::<Vec<i32>, _>(i).map_err(get)?),
                "INT8[]" => Value::from(row.try_get_unchecked::<Vec<i64>, _>(i).map_err(get)?),
                other => {
                    return Err(DbError::Column(format!(
                        "{db}: column `{}` has type {other}, which cannot be returned as JSON yet; cast it in SQL (`{}::text`)",
                        column.name(),
                        column.name()
                    )));
                }
            }
        };
        out.insert(column.name().to_string(), value);
    }
    Ok(out)
}

fn float(f: f64) -> Value {
    Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// A NUMERIC as a JSON number when that loses nothing (sums, counts, money with few digits),
/// else as its exact text.
fn decimal(d: Decimal) -> Value {
    let d = d.normalize();
    let text = d.to_string();
    if d.scale() == 0 {
        if let Ok(i) = text.parse::<i64>() {
            return Value::from(i);
        }
    } else if let Ok(f) = text.parse::<f64>()
        && Decimal::from_str(&f.to_string()).ok() == Some(d)
    {
        return float(f);
    }
    Value::String(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_marks_become_numbered_outside_quotes_and_comments() {
        assert_eq!(
            postgres_placeholders(
                "SELECT * FROM t WHERE a = ? AND b = '?' AND c = ? -- ?\n AND d = ?"
            ),
            "SELECT * FROM t WHERE a = $1 AND b = '?' AND c = $2 -- ?\n AND d = $3"
        );
        assert_eq!(
            postgres_placeholders("SELECT data ? 'k' FROM t WHERE id = $1"),
            "SELECT data ? 'k' FROM t WHERE id = $1"
        );
        assert!(matches!(
            postgres_placeholders("SELECT 1"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn numerics_are_numbers_when_exact() {
        assert_eq!(decimal(Decimal::from_str("42").unwrap()), Value::from(42));
        assert_eq!(
            decimal(Decimal::from_str("42.50").unwrap()),
            serde_json::json!(42.5)
        );
        assert_eq!(
            decimal(Decimal::from_str("12345678901234567890123.1").unwrap()),
            Value::String("12345678901234567890123.1".into())
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact(
                "bad url postgres://u:s3cret@h/db",
                "postgres://u:s3cret@h/db"
            ),
            "bad url postgres://u:***@h/db"
        );
    }

    #[test]
    fn lock_keys_are_stable() {
        assert_eq!(lock_key("a"), lock_key("a"));
        assert_ne!(lock_key("a"), lock_key("b"));
    }
}
