//! `step.db_query`: runs a SELECT with bound parameters. `mode: list` (the default) outputs
//! `{rows: [...], count}`; `mode: single` outputs `{row: {...}, found}` (`row` is `{}` when
//! nothing matched).

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, PipelineContext, Step, StepError,
    StepOutput, StepType, async_trait,
};

use crate::statement::{BoundStatement, StatementConfig, step_error};

/// Configuration of `step.db_query`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DbQueryConfig {
    #[serde(flatten)]
    pub statement: StatementConfig,
    /// `list`: every row, as `rows` and `count`. `single`: the first row, as `row` and `found`.
    #[serde(default)]
    pub mode: QueryMode,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum QueryMode {
    #[default]
    List,
    Single,
}

pub struct DbQueryType;

impl Described for DbQueryType {
    const NAME: &'static str = "step.db_query";
    const CATEGORY: Category = Category::Storage;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "Runs a SQL query with bound parameters; outputs the rows (or one row) as JSON.";
    type Config = DbQueryConfig;
}

impl StepType for DbQueryType {
    fn check(config: &DbQueryConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        config.statement.check(ctx)
    }

    fn build(config: DbQueryConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Step>> {
        Ok(Arc::new(DbQuery {
            statement: config.statement.build(ctx)?,
            mode: config.mode,
        }))
    }
}

struct DbQuery {
    statement: BoundStatement,
    mode: QueryMode,
}

#[async_trait]
impl Step for DbQuery {
    async fn run(&self, ctx: &PipelineContext) -> Result<StepOutput, StepError> {
        let params = self.statement.params(ctx)?;
        let rows = self
            .statement
            .database
            .query(&self.statement.query, &params)
            .await
            .map_err(step_error)?;
        let mut out = Map::new();
        match self.mode {
            QueryMode::List => {
                out.insert("count".into(), json!(rows.len()));
                out.insert(
                    "rows".into(),
                    Value::Array(rows.into_iter().map(Value::Object).collect()),
                );
            }
            QueryMode::Single => {
                let row = rows.into_iter().next();
                out.insert("found".into(), json!(row.is_some()));
                out.insert("row".into(), Value::Object(row.unwrap_or_default()));
            }
        }
        Ok(StepOutput::values(out))
    }
}
