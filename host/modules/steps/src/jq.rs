//! `step.jq`: a jq program (the jaq implementation) over the run's data, compiled when the
//! application loads.

use std::sync::Arc;

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Native, Vars, data};
use jaq_json::Val;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, PipelineContext, Step, StepError,
    StepOutput, StepType, async_trait,
};

type Filter = jaq_core::compile::Filter<Native<data::JustLut<Val>>>;

/// jq built-ins a program from configuration may not use.
const DENIED: &[&str] = &[
    "env",
    "halt",
    "halt_error",
    "input",
    "inputs",
    "stderr",
    "stderr_empty",
    "debug",
    "debug_empty",
    "$__loc__",
];

/// Results one run may produce; `repeat` and friends stop here instead of filling memory.
const MAX_RESULTS: usize = 100_000;

/// Configuration of `step.jq`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JqConfig {
    /// The jq program, e.g. `.items | map(select(.price > 10)) | length`.
    pub expression: String,
    /// Dotted path of the input, e.g. `steps.fetch.body`; the run's current data when omitted.
    #[serde(default)]
    pub input_from: Option<String>,
}

pub struct JqType;

impl Described for JqType {
    const NAME: &'static str = "step.jq";
    const CATEGORY: Category = Category::Pipeline;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "Runs a jq program over the run's data; outputs `result` (one value, null, or a list).";
    type Config = JqConfig;
}

fn compile(code: &str) -> Result<Filter, String> {
    let defs = jaq_core::defs()
        .chain(jaq_std::defs().filter(|d| !DENIED.contains(&d.name)))
        .chain(jaq_json::defs());
    // Programs come from configuration and run inside the server: no reading the environment,
    // no stopping the process, no side channels.
    let funs = jaq_core::funs()
        .chain(jaq_std::funs().filter(|f| !DENIED.contains(&f.0)))
        .chain(jaq_json::funs());
    let arena = Arena::default();
    let modules = Loader::new(defs)
        .load(&arena, File { code, path: () })
        .map_err(|errors| describe(code, &format!("{errors:?}")))?;
    Compiler::default()
        .with_funs(funs)
        .compile(modules)
        .map_err(|errors| describe(code, &format!("{errors:?}")))
}

/// jaq reports errors as debug structures; keep the part that names the problem.
fn describe(code: &str, debug: &str) -> String {
    let detail = debug
        .split_once("}, ")
        .map(|(_, rest)| rest.trim_end_matches([']', ')']))
        .unwrap_or(debug);
    format!("`{code}` is not a valid jq program ({detail})")
}

impl StepType for JqType {
    fn check(config: &JqConfig, _: &CheckContext<'_>) -> Vec<ConfigIssue> {
        match compile(&config.expression) {
            Ok(_) => Vec::new(),
            Err(e) => vec![ConfigIssue::new("/expression", e)],
        }
    }

    fn build(config: JqConfig, _: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Step>> {
        Ok(Arc::new(Jq {
            filter: compile(&config.expression).map_err(anyhow::Error::msg)?,
            expression: config.expression,
            input_from: config.input_from,
        }))
    }
}

struct Jq {
    filter: Filter,
    expression: String,
    input_from: Option<String>,
}

impl Jq {
    fn eval(&self, input: &Value) -> Result<Vec<Value>, StepError> {
        // jaq has its own value type; JSON text is the bridge both sides read exactly.
        let text = serde_json::to_vec(input).map_err(|e| StepError::internal(e.to_string()))?;
        let input = jaq_json::read::parse_single(&text)
            .map_err(|e| StepError::internal(format!("{e:?}")))?;
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        let mut out = Vec::new();
        for result in self.filter.id.run((ctx, input)) {
            // Not `unwrap_valr`: jq's `halt` would exit the whole process.
            let value = result.map_err(|exn| match exn.get_err() {
                Ok(e) => StepError::invalid_input(format!("jq `{}` failed: {e}", self.expression)),
                Err(_) => StepError::invalid_input(format!("jq `{}` halted", self.expression)),
            })?;
            let value = serde_json::from_str(&value.to_string()).map_err(|e| {
                StepError::internal(format!(
                    "jq `{}` produced a non-JSON value: {e}",
                    self.expression
                ))
            })?;
            out.push(value);
            if out.len() > MAX_RESULTS {
                return Err(StepError::invalid_input(format!(
                    "jq `{}` produced more than {MAX_RESULTS} results",
                    self.expression
                )));
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Step for Jq {
    async fn run(&self, ctx: &PipelineContext) -> Result<StepOutput, StepError> {
        let input = match &self.input_from {
            Some(path) => crate::resolve_path(ctx, path).unwrap_or(Value::Null),
            None => Value::Object(ctx.current.clone()),
        };
        let mut results = self.eval(&input)?;
        let mut values = Map::new();
        // As the original: one object result also spreads its keys into the output.
        let result = match results.len() {
            0 => Value::Null,
            1 => results.remove(0),
            _ => Value::Array(results),
        };
        if let Value::Object(map) = &result {
            values.extend(map.clone());
        }
        values.insert("result".into(), result);
        Ok(StepOutput::values(values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jq(code: &str) -> Jq {
        Jq {
            filter: compile(code).unwrap(),
            expression: code.into(),
            input_from: None,
        }
    }

    #[test]
    fn evaluates_programs() {
        let data = json!({"items": [{"id": 1, "price": 5}, {"id": 2, "price": 20}]});
        assert_eq!(
            jq(".items | map(select(.price > 10)) | length")
                .eval(&data)
                .unwrap(),
            vec![json!(1)]
        );
        assert_eq!(
            jq(".items[].id").eval(&data).unwrap(),
            vec![json!(1), json!(2)]
        );
        assert_eq!(
            jq("{total: (.items | map(.price) | add)}")
                .eval(&data)
                .unwrap(),
            vec![json!({"total": 25})]
        );
        assert_eq!(jq("empty").eval(&data).unwrap(), Vec::<Value>::new());
    }

    #[test]
    fn compile_and_run_errors_are_clear() {
        assert!(
            compile(".items[")
                .err()
                .unwrap()
                .starts_with("`.items[` is not a valid jq program")
        );
        assert!(compile("nosuchfunction(1)").is_err());
        assert!(compile("env").is_err(), "the environment is not readable");
        assert!(compile("$ENV").is_err() || jq("$ENV").eval(&json!({})).is_err());
        assert!(
            compile("if . then halt_error else . end").is_err(),
            "halt must not end the process"
        );
        assert!(compile("debug").is_err() && compile("input").is_err());
        assert!(
            jq("repeat(1)")
                .eval(&json!(null))
                .unwrap_err()
                .message
                .contains("more than")
        );
        let err = jq(".items.name").eval(&json!({"items": [1]})).unwrap_err();
        assert_eq!(err.kind, wf_engine::ErrorKind::InvalidInput);
        assert!(
            err.message.starts_with("jq `.items.name` failed"),
            "{}",
            err.message
        );
    }
}
