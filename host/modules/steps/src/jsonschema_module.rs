//! `jsonschema.modular`: named JSON Schemas, written inline or read from files, compiled once
//! at build and shared by every `step.validate` that names them (`schema_ref`).
//!
//! ```yaml
//! - name: schemas
//!   type: jsonschema.modular
//!   config:
//!     schemas:
//!       order: {type: object, required: [id, items]}
//!       customer: ./schemas/customer.json      # JSON or YAML, relative to this config file
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType, ServiceKind,
};

pub const NAME: &str = "jsonschema.modular";

/// Configuration of `jsonschema.modular`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonSchemasConfig {
    /// Schemas by name: each an inline JSON Schema, or the path of a JSON or YAML file
    /// holding one (relative to this config file).
    pub schemas: BTreeMap<String, Value>,
}

pub struct JsonSchemasType;

impl Described for JsonSchemasType {
    const NAME: &'static str = NAME;
    const CATEGORY: Category = Category::Pipeline;
    const PLUGIN: &'static str = "modular-compat";
    const DESCRIPTION: &'static str =
        "Named JSON Schemas (inline or from files) that `step.validate` checks data against.";
    type Config = JsonSchemasConfig;
}

/// Compiles a schema the way `step.validate` runs it (formats checked).
pub fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .map_err(|e| format!("not a valid JSON Schema: {e}"))
}

impl ModuleType for JsonSchemasType {
    fn check(config: &JsonSchemasConfig, _: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if config.schemas.is_empty() {
            issues.push(ConfigIssue::new("/schemas", "`schemas` is empty"));
        }
        for (name, schema) in &config.schemas {
            let at = format!(
                "/schemas/{}",
                wf_engine::wf_config::yaml::escape_pointer_segment(name)
            );
            match schema {
                // Files are read when the app is built.
                Value::String(path) if path.trim().is_empty() => {
                    issues.push(ConfigIssue::new(at, "the file path is empty"));
                }
                Value::String(_) => {}
                Value::Object(_) | Value::Bool(_) => {
                    if let Err(e) = compile(schema) {
                        issues.push(ConfigIssue::new(at, e));
                    }
                }
                _ => issues.push(ConfigIssue::new(
                    at,
                    "a schema is an object (inline) or a file path",
                )),
            }
        }
        issues
    }

    fn build(
        config: JsonSchemasConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        let mut validators = BTreeMap::new();
        for (name, schema) in config.schemas {
            let schema = match schema {
                Value::String(path) => {
                    let full = ctx.base_dir.join(&path);
                    let text = std::fs::read_to_string(&full).map_err(|e| {
                        anyhow::anyhow!("schema `{name}`: cannot read `{}`: {e}", full.display())
                    })?;
                    serde_saphyr::from_str::<Value>(&text).map_err(|e| {
                        anyhow::anyhow!(
                            "schema `{name}`: `{}` is not JSON or YAML: {e}",
                            full.display()
                        )
                    })?
                }
                inline => inline,
            };
            let validator =
                compile(&schema).map_err(|e| anyhow::anyhow!("schema `{name}`: {e}"))?;
            validators.insert(name, (Arc::new(validator), schema));
        }
        let schemas = Arc::new(JsonSchemas { validators });
        ctx.provide::<JsonSchemas>(schemas.clone());
        Ok(schemas)
    }
}

/// The compiled schemas of one module.
pub struct JsonSchemas {
    /// Each compiled schema with the schema itself (for API documents).
    validators: BTreeMap<String, (Arc<jsonschema::Validator>, Value)>,
}

impl JsonSchemas {
    /// The compiled schema `name`, with the schema itself.
    pub fn get(&self, name: &str) -> Option<(Arc<jsonschema::Validator>, Value)> {
        self.validators.get(name).cloned()
    }
}

impl Module for JsonSchemas {}

impl ServiceKind for JsonSchemas {
    const LABEL: &'static str = "a `jsonschema.modular`";
}

/// The schema names a `jsonschema.modular` module declares, read from the config (for
/// validation of `schema_ref`s).
pub fn declared_names(ctx: &CheckContext<'_>, module: &str) -> Vec<String> {
    ctx.config
        .module(module)
        .and_then(|m| m.config.get("schemas"))
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}
