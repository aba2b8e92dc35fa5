//! `step.validate`: checks the run's data for required fields or against a full JSON Schema,
//! reporting every violation with its JSON path. Failure is invalid input (an HTTP caller gets 400).

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, PipelineContext, Step, StepError,
    StepOutput, StepType, async_trait,
};

use crate::jsonschema_module::{JsonSchemas, NAME as SCHEMAS, compile, declared_names};

/// Configuration of `step.validate`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateConfig {
    /// `required_fields` (each listed key must be present) or `json_schema` (the data must match
    /// `schema` or `schema_ref`). Defaults to `json_schema` when either is given.
    #[serde(default)]
    pub strategy: Option<Strategy>,
    /// Keys that must be present (any value).
    #[serde(default)]
    pub required_fields: Vec<String>,
    /// A JSON Schema the data must match; every violation is reported.
    #[serde(default)]
    pub schema: Option<Value>,
    /// The name of a schema in a `jsonschema.modular` module, instead of `schema`.
    #[serde(default)]
    pub schema_ref: Option<String>,
    /// The `jsonschema.modular` module holding `schema_ref`; optional when the app has one.
    #[serde(default)]
    pub schemas: Option<String>,
    /// What to validate: a dotted path such as `steps.parse.body`; the run's current data when
    /// omitted.
    #[serde(default)]
    pub source: Option<String>,
}

/// How `step.validate` checks.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Every key in `required_fields` must be present.
    RequiredFields,
    /// The data must match `schema`.
    JsonSchema,
}

pub struct ValidateType;

impl Described for ValidateType {
    const NAME: &'static str = "step.validate";
    const CATEGORY: Category = Category::Pipeline;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "Checks data for required fields or against a JSON Schema; fails with every violation.";
    type Config = ValidateConfig;
}

fn strategy(config: &ValidateConfig) -> Strategy {
    config
        .strategy
        .unwrap_or(if config.schema.is_some() || config.schema_ref.is_some() {
            Strategy::JsonSchema
        } else {
            Strategy::RequiredFields
        })
}

impl StepType for ValidateType {
    fn check(config: &ValidateConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        match strategy(config) {
            Strategy::RequiredFields if config.required_fields.is_empty() => {
                vec![
                    ConfigIssue::new("/required_fields", "`required_fields` is empty")
                        .help("list the keys that must be present"),
                ]
            }
            Strategy::JsonSchema => match (&config.schema, &config.schema_ref) {
                (None, None) => vec![ConfigIssue::new(
                    "/schema",
                    "the `json_schema` strategy needs a `schema` or a `schema_ref`",
                )],
                (Some(_), Some(_)) => vec![ConfigIssue::new(
                    "/schema_ref",
                    "give either `schema` or `schema_ref`, not both",
                )],
                (Some(schema), None) => match compile(schema) {
                    Ok(_) => Vec::new(),
                    Err(e) => vec![ConfigIssue::new("/schema", format!("`schema` is {e}"))],
                },
                (None, Some(name)) => check_ref(config.schemas.as_deref(), name, ctx),
            },
            _ => Vec::new(),
        }
    }

    fn build(config: ValidateConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Step>> {
        let (check, documented) = match strategy(&config) {
            Strategy::RequiredFields => {
                let documented = json!({"type": "object", "required": config.required_fields});
                (Check::Required(config.required_fields), documented)
            }
            Strategy::JsonSchema => match (&config.schema_ref, config.schema) {
                (Some(name), _) => {
                    let (validator, source) = ctx
                        .named_or_only::<JsonSchemas>(
                            config.schemas.as_deref(),
                            "there is no `jsonschema.modular` module",
                        )?
                        .get(name)
                        .ok_or_else(|| anyhow::anyhow!("no schema named `{name}`"))?;
                    (Check::Schema(validator), source)
                }
                (None, schema) => {
                    let schema = schema.unwrap_or(Value::Bool(true));
                    let validator =
                        compile(&schema).map_err(|e| anyhow::anyhow!("`schema` is {e}"))?;
                    (Check::Schema(Arc::new(validator)), schema)
                }
            },
        };
        // Only a check of the whole data describes a request.
        let documented = config.source.is_none().then_some(documented);
        Ok(Arc::new(Validate {
            name: ctx.name.rsplit('.').next().unwrap_or(ctx.name).to_string(),
            check,
            source: config.source,
            documented,
        }))
    }
}

enum Check {
    Required(Vec<String>),
    Schema(Arc<jsonschema::Validator>),
}

/// A `schema_ref` must name a schema of the chosen `jsonschema.modular` module.
fn check_ref(module: Option<&str>, name: &str, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
    let chosen = match ctx.choose(module, "schemas", "JSON Schema collection", &[SCHEMAS]) {
        Ok(chosen) => chosen,
        Err(issue) => return vec![issue],
    };
    let declared = declared_names(ctx, &chosen);
    if declared.iter().any(|d| d == name) {
        return Vec::new();
    }
    let issue = ConfigIssue::new(
        "/schema_ref",
        format!("`{chosen}` has no schema named `{name}`"),
    );
    vec![
        match wf_engine::wf_config::did_you_mean(name, declared.iter().map(String::as_str)) {
            Some(s) => issue.help(format!("did you mean `{s}`?")),
            None => issue.help(format!("declare it under `{chosen}`'s `schemas`")),
        },
    ]
}

struct Validate {
    name: String,
    check: Check,
    source: Option<String>,
    documented: Option<Value>,
}

#[async_trait]
impl Step for Validate {
    fn documented_input(&self) -> Option<Value> {
        self.documented.clone()
    }

    async fn run(&self, ctx: &PipelineContext) -> Result<StepOutput, StepError> {
        let data = match &self.source {
            None => Value::Object(ctx.current.clone()),
            Some(path) => crate::resolve_path(ctx, path).ok_or_else(|| {
                StepError::invalid_input(format!(
                    "validate step \"{}\": source \"{path}\" resolved to nothing",
                    self.name
                ))
            })?,
        };
        let problems: Vec<String> = match &self.check {
            Check::Required(fields) => {
                let missing: Vec<&str> = fields
                    .iter()
                    .filter(|f| data.as_object().is_none_or(|o| !o.contains_key(f.as_str())))
                    .map(String::as_str)
                    .collect();
                if missing.is_empty() {
                    Vec::new()
                } else {
                    vec![format!("missing required fields: {}", missing.join(", "))]
                }
            }
            Check::Schema(validator) => validator
                .iter_errors(&data)
                .map(|e| {
                    let path = e.instance_path().as_str();
                    format!("{}: {e}", if path.is_empty() { "/" } else { path })
                })
                .collect(),
        };
        if problems.is_empty() {
            Ok(StepOutput::values(Map::new()))
        } else {
            Err(StepError::invalid_input(format!(
                "validate step \"{}\": {}",
                self.name,
                problems.join("; ")
            )))
        }
    }
}
