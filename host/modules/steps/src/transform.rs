//! Data transformation: the operations `extract`, `map`, `filter` and `convert`, the
//! `data.transformer` module holding named transformation pipelines, and `step.transform`.

use std::collections::BTreeMap;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType,
    PipelineContext, ServiceKind, Step, StepError, StepOutput, StepType, async_trait,
};

/// One transformation, as written: `{type: extract, config: {path: order}}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OperationEntry {
    /// `extract` (`config: {path}`), `map` (`config: {mappings: {old: new}}`), `filter`
    /// (`config: {fields: [...]}`) or `convert` (`config: {from: json|string, to: json|string}`).
    #[serde(rename = "type")]
    pub kind: OperationKind,
    /// The operation's settings (see `type`).
    #[serde(default)]
    pub config: Value,
}

/// The kinds of transformation.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OperationKind {
    /// Take the value at a path.
    Extract,
    /// Rename keys.
    Map,
    /// Keep only some keys.
    Filter,
    /// Convert between JSON values and JSON text.
    Convert,
}

/// Parses written operations; an error names the operation's index and what is wrong.
pub fn parse_operations(entries: &[OperationEntry]) -> Result<Vec<Operation>, (usize, String)> {
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let kind = serde_json::to_value(entry.kind).unwrap_or_default();
            serde_json::from_value(serde_json::json!({"type": kind, "config": entry.config}))
                .map_err(|e| {
                    (
                        i,
                        format!(
                            "invalid `{}` settings: {e}",
                            kind.as_str().unwrap_or_default()
                        ),
                    )
                })
        })
        .collect()
}

/// One transformation, checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    tag = "type",
    content = "config",
    rename_all = "lowercase",
    deny_unknown_fields
)]
pub enum Operation {
    /// Takes the value at a dotted `path`.
    Extract {
        /// Dotted path, e.g. `order.items`.
        path: String,
    },
    /// Renames keys: `mappings: {old: new}`; other keys stay.
    Map {
        /// Old key → new key.
        mappings: BTreeMap<String, String>,
    },
    /// Keeps only the listed keys.
    Filter {
        /// Keys to keep.
        fields: Vec<String>,
    },
    /// Converts between JSON values and JSON text: `{from: json, to: string}` or the reverse.
    Convert {
        /// `json` or `string`.
        from: Format,
        /// `json` or `string`.
        to: Format,
    },
}

/// Representations `convert` moves between.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A JSON value.
    Json,
    /// JSON text in a string.
    String,
}

/// Applies `operations` in order.
pub fn apply(operations: &[Operation], mut data: Value) -> Result<Value, String> {
    for op in operations {
        data = match op {
            Operation::Extract { path } => match &data {
                Value::Object(map) => wf_template::Scope::of(map)
                    .lookup(path)
                    .unwrap_or(Value::Null),
                _ => return Err(format!("`extract` needs a map to read `{path}` from")),
            },
            Operation::Map { mappings } => match data {
                Value::Object(map) => Value::Object(
                    map.into_iter()
                        .map(|(k, v)| (mappings.get(&k).cloned().unwrap_or(k), v))
                        .collect(),
                ),
                Value::Array(items) => Value::Array(
                    items
                        .into_iter()
                        .map(|item| apply(std::slice::from_ref(op), item))
                        .collect::<Result<_, _>>()?,
                ),
                other => other,
            },
            Operation::Filter { fields } => match data {
                Value::Object(map) => Value::Object(
                    map.into_iter()
                        .filter(|(k, _)| fields.contains(k))
                        .collect(),
                ),
                Value::Array(items) => Value::Array(
                    items
                        .into_iter()
                        .map(|item| apply(std::slice::from_ref(op), item))
                        .collect::<Result<_, _>>()?,
                ),
                other => other,
            },
            Operation::Convert { from, to } => match (from, to, data) {
                (Format::Json, Format::String, value) => Value::String(value.to_string()),
                (Format::String, Format::Json, Value::String(text)) => serde_json::from_str(&text)
                    .map_err(|e| format!("`convert` from string: not JSON: {e}"))?,
                (Format::String, Format::Json, other) => other,
                (_, _, value) => value,
            },
        };
    }
    Ok(data)
}

/// Named transformation pipelines, offered by a `data.transformer` module.
pub trait Transformer: Send + Sync {
    fn pipeline(&self, name: &str) -> Option<&[Operation]>;
}

impl ServiceKind for dyn Transformer {
    const LABEL: &'static str = "a data transformer";
}

/// Configuration of `data.transformer`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataTransformerConfig {
    /// Named transformation pipelines: name → operations, for `step.transform`'s `pipeline`.
    #[serde(default)]
    pub pipelines: BTreeMap<String, Vec<OperationEntry>>,
}

pub struct DataTransformerType;

impl Described for DataTransformerType {
    const NAME: &'static str = "data.transformer";
    const CATEGORY: Category = Category::Pipeline;
    const PLUGIN: &'static str = "api";
    const DESCRIPTION: &'static str = "Holds named transformation pipelines (extract, map, filter, convert) for `step.transform`.";
    type Config = DataTransformerConfig;
}

struct DataTransformer {
    pipelines: BTreeMap<String, Vec<Operation>>,
}

impl Transformer for DataTransformer {
    fn pipeline(&self, name: &str) -> Option<&[Operation]> {
        self.pipelines.get(name).map(Vec::as_slice)
    }
}

impl Module for DataTransformer {}

impl ModuleType for DataTransformerType {
    fn check(config: &DataTransformerConfig, _: &CheckContext<'_>) -> Vec<ConfigIssue> {
        config
            .pipelines
            .iter()
            .filter_map(|(name, ops)| {
                parse_operations(ops)
                    .err()
                    .map(|(i, e)| ConfigIssue::new(format!("/pipelines/{name}/{i}/config"), e))
            })
            .collect()
    }

    fn build(
        config: DataTransformerConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        let mut pipelines = BTreeMap::new();
        for (name, ops) in config.pipelines {
            let ops = parse_operations(&ops)
                .map_err(|(i, e)| anyhow::anyhow!("pipeline `{name}`, operation {i}: {e}"))?;
            pipelines.insert(name, ops);
        }
        let transformer = Arc::new(DataTransformer { pipelines });
        ctx.provide::<dyn Transformer>(transformer.clone());
        Ok(transformer)
    }
}

/// Configuration of `step.transform`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    /// A `data.transformer` module holding `pipeline`.
    #[serde(default)]
    pub transformer: Option<String>,
    /// Name of a transformation pipeline of `transformer`.
    #[serde(default)]
    pub pipeline: Option<String>,
    /// Operations to apply (instead of a named pipeline).
    #[serde(default)]
    pub operations: Vec<OperationEntry>,
}

pub struct TransformType;

impl Described for TransformType {
    const NAME: &'static str = "step.transform";
    const CATEGORY: Category = Category::Pipeline;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "Transforms the run's data (extract, map, filter, convert) into `data`.";
    type Config = TransformConfig;
}

impl StepType for TransformType {
    fn check(config: &TransformConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues: Vec<ConfigIssue> = parse_operations(&config.operations)
            .err()
            .map(|(i, e)| ConfigIssue::new(format!("/operations/{i}/config"), e))
            .into_iter()
            .collect();
        match (
            &config.transformer,
            &config.pipeline,
            config.operations.is_empty(),
        ) {
            (Some(t), Some(_), true) => {
                issues.extend(ctx.require_module("/transformer", t, "transformer"))
            }
            (None, None, false) => {}
            (Some(_), None, _) | (None, Some(_), _) => issues.push(
                ConfigIssue::new("", "`transformer` and `pipeline` go together")
                    .help("name both, or give `operations`"),
            ),
            (Some(_), Some(_), false) => issues.push(ConfigIssue::new(
                "/operations",
                "give a named `pipeline` or `operations`, not both",
            )),
            (None, None, true) => issues.push(
                ConfigIssue::new("", "nothing to do")
                    .help("add `operations:` or `transformer:` with `pipeline:`"),
            ),
        }
        issues
    }

    fn build(config: TransformConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Step>> {
        let operations = match (&config.transformer, &config.pipeline) {
            (Some(name), Some(pipeline)) => {
                let transformer = ctx.service::<dyn Transformer>(name)?;
                transformer
                    .pipeline(pipeline)
                    .ok_or_else(|| {
                        anyhow::anyhow!("transformer `{name}` has no pipeline `{pipeline}`")
                    })?
                    .to_vec()
            }
            _ => parse_operations(&config.operations)
                .map_err(|(i, e)| anyhow::anyhow!("operation {i}: {e}"))?,
        };
        Ok(Arc::new(Transform { operations }))
    }
}

struct Transform {
    operations: Vec<Operation>,
}

#[async_trait]
impl Step for Transform {
    async fn run(&self, ctx: &PipelineContext) -> Result<StepOutput, StepError> {
        let data = apply(&self.operations, Value::Object(ctx.current.clone()))
            .map_err(StepError::invalid_input)?;
        let mut values = Map::new();
        values.insert("data".into(), data);
        Ok(StepOutput::values(values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ops(value: Value) -> Vec<Operation> {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn operations_apply_in_order() {
        let operations = ops(json!([
            {"type": "extract", "config": {"path": "order"}},
            {"type": "map", "config": {"mappings": {"qty": "quantity"}}},
            {"type": "filter", "config": {"fields": ["id", "quantity"]}}
        ]));
        let input = json!({"order": {"id": 1, "qty": 3, "secret": "x"}});
        assert_eq!(
            apply(&operations, input).unwrap(),
            json!({"id": 1, "quantity": 3})
        );
    }

    #[test]
    fn convert_both_ways_and_reports_bad_json() {
        let to_string =
            ops(json!([{"type": "convert", "config": {"from": "json", "to": "string"}}]));
        assert_eq!(
            apply(&to_string, json!({"a": 1})).unwrap(),
            json!("{\"a\":1}")
        );
        let to_json = ops(json!([{"type": "convert", "config": {"from": "string", "to": "json"}}]));
        assert_eq!(
            apply(&to_json, json!("{\"a\":1}")).unwrap(),
            json!({"a": 1})
        );
        assert!(
            apply(&to_json, json!("{nope"))
                .unwrap_err()
                .contains("not JSON")
        );
    }

    #[test]
    fn map_and_filter_apply_to_each_item_of_a_list() {
        let operations = ops(json!([{"type": "filter", "config": {"fields": ["id"]}}]));
        assert_eq!(
            apply(&operations, json!([{"id": 1, "x": 2}, {"id": 3}])).unwrap(),
            json!([{"id": 1}, {"id": 3}])
        );
    }
}
