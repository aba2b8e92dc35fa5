//! `step.db_exec`: runs an INSERT, UPDATE, DELETE or DDL statement with bound parameters.
//! Outputs `{affected_rows, last_id}`; with `returning: true` the statement's `RETURNING`
//! rows too (`rows`, and `row` for the first).

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, PipelineContext, Step, StepError,
    StepOutput, StepType, async_trait,
};

use crate::statement::{BoundStatement, StatementConfig, step_error};

/// Configuration of `step.db_exec`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DbExecConfig {
    #[serde(flatten)]
    pub statement: StatementConfig,
    /// The statement ends in `RETURNING ...`: output its rows as `rows` and `row`, and the
    /// first row's `id` as `last_id` (how PostgreSQL reports generated keys).
    #[serde(default)]
    pub returning: bool,
}

pub struct DbExecType;

impl Described for DbExecType {
    const NAME: &'static str = "step.db_exec";
    const CATEGORY: Category = Category::Storage;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str = "Runs an INSERT, UPDATE, DELETE or DDL statement with bound parameters; outputs affected_rows and last_id.";
    type Config = DbExecConfig;
}

impl StepType for DbExecType {
    fn check(config: &DbExecConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = config.statement.check(ctx);
        if config.returning
            && !config
                .statement
                .query
                .to_ascii_lowercase()
                .contains("returning")
        {
            issues.push(
                ConfigIssue::new(
                    "/returning",
                    "`returning: true` but the query has no RETURNING clause",
                )
                .help("end the query with `RETURNING id` (or the columns you need)"),
            );
        }
        issues
    }

    fn build(config: DbExecConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Step>> {
        Ok(Arc::new(DbExec {
            statement: config.statement.build(ctx)?,
            returning: config.returning,
        }))
    }
}

struct DbExec {
    statement: BoundStatement,
    returning: bool,
}

/// An id as the original reported it: text.
fn id_text(value: &Value) -> Value {
    match value {
        Value::Null => Value::Null,
        Value::String(s) => json!(s),
        other => json!(other.to_string()),
    }
}

#[async_trait]
impl Step for DbExec {
    async fn run(&self, ctx: &PipelineContext) -> Result<StepOutput, StepError> {
        let params = self.statement.params(ctx)?;
        let database = &self.statement.database;
        let mut out = Map::new();
        if self.returning {
            let rows = database
                .query(&self.statement.query, &params)
                .await
                .map_err(step_error)?;
            let first = rows.first().cloned().unwrap_or_default();
            out.insert("affected_rows".into(), json!(rows.len()));
            out.insert(
                "last_id".into(),
                id_text(first.get("id").unwrap_or(&Value::Null)),
            );
            out.insert("row".into(), Value::Object(first));
            out.insert(
                "rows".into(),
                Value::Array(rows.into_iter().map(Value::Object).collect()),
            );
        } else {
            let done = database
                .execute(&self.statement.query, &params)
                .await
                .map_err(step_error)?;
            out.insert("affected_rows".into(), json!(done.affected_rows));
            out.insert(
                "last_id".into(),
                done.last_insert_id
                    .map(|id| json!(id.to_string()))
                    .unwrap_or(Value::Null),
            );
        }
        Ok(StepOutput::values(out))
    }
}
