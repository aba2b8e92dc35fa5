//! What `step.db_query` and `step.db_exec` share: the database they use, their SQL and its
//! bound parameters.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use wf_engine::{BuildContext, CheckContext, ConfigIssue, ErrorKind, PipelineContext, StepError};
use wf_template::TemplateValue;

use crate::database::{Database, DbError};

/// The keys both database steps have.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct StatementConfig {
    /// The database module; optional when the application has one.
    #[serde(default)]
    pub database: Option<String>,
    /// The SQL, with `?` (or `$1`, `$2`, ...) where values go. Values are never written into
    /// the SQL: put them in `params`.
    pub query: String,
    /// One value per placeholder, in order; strings may be templates (`{{ .body.id }}`). A
    /// template that is one expression keeps its type: numbers stay numbers, objects become
    /// JSON.
    #[serde(default)]
    pub params: Vec<Value>,
}

impl StatementConfig {
    pub fn check(&self, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if let Err(issue) = ctx.choose(
            self.database.as_deref(),
            "database",
            "database",
            crate::DATABASE_TYPES,
        ) {
            issues.push(issue);
        }
        if self.query.contains("{{") {
            issues.push(
                ConfigIssue::new(
                    "/query",
                    "templates in SQL would let request data rewrite the statement",
                )
                .help("write `?` in the query and put the template in `params`"),
            );
        }
        if self.query.trim().is_empty() {
            issues.push(ConfigIssue::new("/query", "the query is empty"));
        }
        issues
    }

    pub fn build(self, ctx: &BuildContext<'_>) -> anyhow::Result<BoundStatement> {
        let database =
            ctx.named_or_only::<Database>(self.database.as_deref(), "there is no database")?;
        let params = self
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                TemplateValue::compile(p).map_err(|e| anyhow::anyhow!("`params[{i}]`: {e}"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(BoundStatement {
            database,
            query: self.query,
            params,
        })
    }
}

/// A database step's statement, ready to run.
pub struct BoundStatement {
    pub database: Arc<Database>,
    pub query: String,
    params: Vec<TemplateValue>,
}

impl BoundStatement {
    /// The parameter values for this run.
    pub fn params(&self, ctx: &PipelineContext) -> Result<Vec<Value>, StepError> {
        let scope = ctx.scope();
        self.params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                p.render(&scope).map_err(|e| {
                    StepError::invalid_input(format!("params[{i}]: {}", e.for_caller()))
                        .with_detail(format!("params[{i}]: {}", e.message))
                })
            })
            .collect()
    }
}

/// A database error as a step error of the right kind: the caller's data (400-class), the
/// database being away (retryable) or the statement (500-class).
pub fn step_error(error: DbError) -> StepError {
    let kind = match &error {
        DbError::Parameter(_) | DbError::Constraint(_) => ErrorKind::InvalidInput,
        DbError::Unavailable(_) => ErrorKind::Unavailable,
        DbError::Statement(_) | DbError::Column(_) => ErrorKind::Internal,
    };
    StepError::new(kind, error.to_string())
}
