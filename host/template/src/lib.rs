//! Templates in configuration values.
//!
//! - The engine is tera. The original's Go-template dialect (`{{ .steps.x.y }}`,
//!   `{{ index .steps "a-b" "c" }}`, `uuidv4`, `now`, `lower`, `default`, `json`) is translated to
//!   tera when the template is compiled, so the original's configs run unmodified.
//! - A string that is exactly one `{{ expression }}` renders to the expression's JSON value
//!   (numbers stay numbers, maps stay maps); mixed text renders to a string.
//! - Templates compile once, at load: a syntax error is a configuration error.
//! - A missing variable fails the render with the variable named (the original printed
//!   `<no value>`). `default` supplies values for missing ones.

mod go;
mod scope;

pub use scope::{Scope, Segment};

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;
use tera::{Context, Tera};

/// A template that failed to compile or to render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    /// The whole story, template text included: for the app's author (logs, the CLI).
    pub message: String,
    /// What a caller of the app may be told when rendering fails: what the data lacked, never
    /// the template's text. `None` for compile errors, which only the author sees.
    pub caller: Option<String>,
}

impl TemplateError {
    fn new(message: impl Into<String>) -> Self {
        TemplateError {
            message: message.into(),
            caller: None,
        }
    }

    fn at_run(message: impl Into<String>, caller: impl Into<String>) -> Self {
        TemplateError {
            message: message.into(),
            caller: Some(caller.into()),
        }
    }

    /// The message for a caller of the app (see [`TemplateError::caller`]).
    pub fn for_caller(&self) -> &str {
        self.caller.as_deref().unwrap_or(&self.message)
    }
}

/// The caller's view of a missing value.
fn missing_from_data(path: &str) -> String {
    format!("`{path}` is missing from the data")
}

const NAME: &str = "t";

/// One compiled template string.
#[derive(Clone)]
pub struct Template {
    source: Arc<str>,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    /// No `{{` or `{%`: the text itself.
    Literal,
    /// Exactly one expression that is only a path (`{{ .steps.parse.body.id }}`), by far the
    /// most common template: read in place, without the template engine or copying the data.
    Path(Vec<Segment>, String),
    /// Text whose expressions are all paths (`order-{{ .id }}`).
    Parts(Vec<Part>),
    /// Exactly one expression: renders to its JSON value.
    Value(Arc<Tera>),
    /// Text with expressions: renders to a string.
    Text(Arc<Tera>),
}

#[derive(Clone)]
enum Part {
    Text(String),
    Path(Vec<Segment>, String),
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Template({:?})", self.source)
    }
}

impl Template {
    pub fn compile(source: &str) -> Result<Template, TemplateError> {
        let kind = if !source.contains("{{") && !source.contains("{%") {
            Kind::Literal
        } else {
            let translated = translate(source)?;
            // One template per string: nothing to include, extend or import, and no macros
            // (a macro calling itself would overflow the stack).
            for word in ["include", "extends", "import", "macro"] {
                if translated.contains(&format!("{{% {word}"))
                    || translated.contains(&format!("{{%- {word}"))
                {
                    return Err(TemplateError::new(format!(
                        "invalid template `{source}`: `{word}` is not available in wf templates"
                    )));
                }
            }
            let single = single_expression(&translated);
            if let Some(kind) = fast_path(&translated, single.as_deref()) {
                return Ok(Template {
                    source: source.into(),
                    kind,
                });
            }
            let tera_source = match &single {
                // `set` evaluates the whole expression, filters and operators included.
                Some(expr) => {
                    format!("{{% set wf_value = {expr} %}}{{{{ wf_value | json_encode() }}}}")
                }
                None => translated,
            };
            let mut tera = engine();
            tera.add_raw_template(NAME, &tera_source).map_err(|e| {
                TemplateError::new(format!("invalid template `{source}`: {}", error_chain(&e)))
            })?;
            if single.is_some() {
                Kind::Value(Arc::new(tera))
            } else {
                Kind::Text(Arc::new(tera))
            }
        };
        Ok(Template {
            source: source.into(),
            kind,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether rendering can give something other than the source text.
    pub fn is_dynamic(&self) -> bool {
        !matches!(self.kind, Kind::Literal)
    }

    /// Renders against `scope`.
    pub fn render(&self, scope: &Scope<'_>) -> Result<Value, TemplateError> {
        match &self.kind {
            Kind::Literal => Ok(Value::String(self.source.to_string())),
            Kind::Path(path, text) => match scope.get(path) {
                Some(value) => Ok(value.clone()),
                // A whole section (`{{ .trigger }}`) is a map of its own, not a value in place.
                None => match path.as_slice() {
                    [Segment::Key(section)] => {
                        scope.lookup(section).ok_or_else(|| self.missing(text))
                    }
                    _ => Err(self.missing(text)),
                },
            },
            Kind::Parts(parts) => {
                let mut out = String::new();
                for part in parts {
                    match part {
                        Part::Text(t) => out.push_str(t),
                        Part::Path(path, text) => {
                            match scope.get(path).ok_or_else(|| self.missing(text))? {
                                Value::String(s) => out.push_str(s),
                                other => out.push_str(&other.to_string()),
                            }
                        }
                    }
                }
                Ok(Value::String(out))
            }
            Kind::Value(tera) => {
                let text = self.render_text(tera, scope)?;
                serde_json::from_str(&text).map_err(|e| {
                    TemplateError::at_run(
                        format!("template `{}` produced invalid JSON: {e}", self.source),
                        "a value computed from the data is not valid JSON",
                    )
                })
            }
            Kind::Text(tera) => self.render_text(tera, scope).map(Value::String),
        }
    }

    /// Renders to text: a value result is written as JSON unless it is a string.
    pub fn render_string(&self, scope: &Scope<'_>) -> Result<String, TemplateError> {
        Ok(match self.render(scope)? {
            Value::String(s) => s,
            other => other.to_string(),
        })
    }

    fn missing(&self, path: &str) -> TemplateError {
        TemplateError::at_run(
            format!(
                "template `{}` failed: Variable `{path}` not found in context",
                self.source
            ),
            missing_from_data(path),
        )
    }

    fn render_text(&self, tera: &Tera, scope: &Scope<'_>) -> Result<String, TemplateError> {
        let context = Context::from_value(Value::Object(scope.to_map())).map_err(|e| {
            TemplateError::at_run(
                format!("template `{}`: {e}", self.source),
                "a value could not be computed from the data",
            )
        })?;
        tera.render(NAME, &context).map_err(|e| {
            let chain = error_chain(&e);
            // tera's render errors name the template `t`, never its text: the chain says
            // what in the data was wrong (a filter's refusal, a type mismatch).
            let caller = match chain
                .split_once("Variable `")
                .and_then(|(_, rest)| rest.split_once("` not found in context"))
            {
                Some((path, _)) => missing_from_data(path),
                None => chain.clone(),
            };
            TemplateError::at_run(
                format!("template `{}` failed: {chain}", self.source),
                caller,
            )
        })
    }
}

/// A JSON value whose strings may be templates, compiled once.
#[derive(Clone, Debug)]
pub enum TemplateValue {
    Static(Value),
    Template(Template),
    Array(Vec<TemplateValue>),
    Object(Vec<(String, TemplateValue)>),
}

impl TemplateValue {
    /// Compiles every string in `value`. Errors name the JSON pointer of the bad string.
    pub fn compile(value: &Value) -> Result<TemplateValue, TemplateError> {
        Self::compile_at(value, "")
    }

    fn compile_at(value: &Value, pointer: &str) -> Result<TemplateValue, TemplateError> {
        Ok(match value {
            Value::String(s) => {
                let t = Template::compile(s).map_err(|e| {
                    if pointer.is_empty() {
                        e
                    } else {
                        TemplateError {
                            message: format!("at `{pointer}`: {}", e.message),
                            ..e
                        }
                    }
                })?;
                if t.is_dynamic() {
                    TemplateValue::Template(t)
                } else {
                    TemplateValue::Static(value.clone())
                }
            }
            Value::Array(items) => TemplateValue::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Self::compile_at(v, &format!("{pointer}/{i}")))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => TemplateValue::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), Self::compile_at(v, &format!("{pointer}/{k}"))?)))
                    .collect::<Result<_, TemplateError>>()?,
            ),
            other => TemplateValue::Static(other.clone()),
        })
    }

    pub fn render(&self, scope: &Scope<'_>) -> Result<Value, TemplateError> {
        Ok(match self {
            TemplateValue::Static(v) => v.clone(),
            TemplateValue::Template(t) => t.render(scope)?,
            TemplateValue::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| i.render(scope))
                    .collect::<Result<_, _>>()?,
            ),
            TemplateValue::Object(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), v.render(scope)?)))
                    .collect::<Result<_, TemplateError>>()?,
            ),
        })
    }
}

/// Path-only templates skip the template engine.
fn fast_path(translated: &str, single: Option<&str>) -> Option<Kind> {
    if let Some(expr) = single {
        return scope::parse_path(expr).map(|path| Kind::Path(path, expr.to_string()));
    }
    if translated.contains("{%") || translated.contains("{#") {
        return None;
    }
    let mut parts = Vec::new();
    let mut rest = translated;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_string()));
        }
        let close = rest[open..].find("}}")? + open;
        let expr = rest[open + 2..close].trim();
        if expr.starts_with('-') || expr.ends_with('-') {
            return None; // whitespace control: leave it to the engine
        }
        parts.push(Part::Path(scope::parse_path(expr)?, expr.to_string()));
        rest = &rest[close + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    Some(Kind::Parts(parts))
}

/// If the translated source is exactly one `{{ expression }}`, that expression.
fn single_expression(source: &str) -> Option<String> {
    let trimmed = source.trim();
    let inner = trimmed.strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || trimmed.contains("{%") {
        return None;
    }
    let inner = inner.trim_start_matches('-').trim_end_matches('-').trim();
    (!inner.is_empty()).then(|| inner.to_string())
}

/// Translates every Go-dialect `{{ … }}` action to tera; tera actions pass through.
fn translate(source: &str) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(source.len());
    let mut blocks = Vec::new();
    let mut rest = source;
    while let Some(open) = rest.find("{{") {
        out.push_str(&statements_with_hyphenated_steps(&rest[..open]));
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or_else(|| {
            TemplateError::new(format!(
                "invalid template `{source}`: `{{{{` without `}}}}`"
            ))
        })?;
        // `{{- x -}}` trims whitespace around the action, in both dialects.
        let mut action = &after[..close];
        let trim_left = action.starts_with('-');
        let trim_right = action.ends_with('-') && action.len() > 1;
        action = action.strip_prefix('-').unwrap_or(action);
        if trim_right {
            action = action.strip_suffix('-').unwrap_or(action);
        }
        let (l, r) = (
            if trim_left { "-" } else { "" },
            if trim_right { "-" } else { "" },
        );
        if go::is_go_action(action) {
            match go::translate_action(action, &mut blocks)
                .map_err(|e| TemplateError::new(format!("invalid template `{source}`: {e}")))?
            {
                go::Translated::Expression(e) => out.push_str(&format!("{{{{{l} {e} {r}}}}}")),
                go::Translated::Statement(s) => {
                    // `{% if x %}` → `{%- if x -%}` when the Go action trimmed.
                    let s = s.replacen("{%", &format!("{{%{l}"), 1);
                    let s = match s.rfind("%}") {
                        Some(i) => format!("{}{r}%}}", &s[..i]),
                        None => s,
                    };
                    out.push_str(&s);
                }
            }
        } else {
            out.push_str(&format!("{{{{{l}{}{r}}}}}", hyphenated_steps(action)));
        }
        rest = &after[close + 2..];
    }
    out.push_str(&statements_with_hyphenated_steps(rest));
    if let Some(block) = blocks.last() {
        return Err(TemplateError::new(format!(
            "invalid template `{source}`: `{block}` without `end`"
        )));
    }
    Ok(out)
}

/// Applies [`hyphenated_steps`] inside tera statements (`{% if steps.a-b.ok %}`) in `text`.
fn statements_with_hyphenated_steps(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let (Some(open), Some(close)) = (rest.find("{%"), rest.find("%}")) {
        if close < open {
            break;
        }
        out.push_str(&rest[..open]);
        out.push_str(&hyphenated_steps(&rest[open..close + 2]));
        rest = &rest[close + 2..];
    }
    out.push_str(rest);
    out
}

/// In tera syntax, `steps.parse-request.body` would be a subtraction; step names may contain
/// hyphens, so `steps.<name>` is rewritten to `steps["<name>"]`.
fn hyphenated_steps(action: &str) -> String {
    let mut out = String::with_capacity(action.len());
    let mut rest = action;
    while let Some(i) = rest.find("steps.") {
        let boundary =
            i == 0 || !rest[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '.');
        out.push_str(&rest[..i]);
        let after = &rest[i + "steps.".len()..];
        let name_len = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(after.len());
        let name = &after[..name_len];
        if boundary && name.contains('-') {
            out.push_str(&format!("steps[\"{name}\"]"));
        } else {
            out.push_str(&rest[i..i + "steps.".len() + name_len]);
        }
        rest = &after[name_len..];
    }
    out.push_str(rest);
    out
}

fn engine() -> Tera {
    let mut tera = Tera::default();
    tera.autoescape_on(Vec::new());
    // `range` builds its whole list: cap it so a value from a request cannot exhaust memory.
    tera.register_function("range", capped_range);
    // Templates come from configuration and must not read the process environment (secrets).
    tera.register_function("get_env", |_: &HashMap<String, Value>| {
        Err(tera::Error::msg(
            "get_env is not available in wf templates; use ${VAR} in module config",
        ))
    });
    tera.register_function("uuidv4", |_: &HashMap<String, Value>| {
        Ok(Value::String(uuid::Uuid::new_v4().to_string()))
    });
    tera.register_function("now", now);
    // tera's own URL filters come with a feature we build without; this is the strict one.
    tera.register_filter(
        "urlencode_strict",
        |value: &Value, _: &HashMap<String, Value>| {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Ok(Value::String(percent_encode(&text)))
        },
    );
    // One URL path segment: percent-encoded, and never empty, `.` or `..`, which would change
    // which path is called.
    tera.register_filter(
        "path_segment",
        |value: &Value, _: &HashMap<String, Value>| {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            if text.is_empty() || text == "." || text == ".." {
                return Err(tera::Error::msg(format!(
                    "`{text}` cannot be a path segment (empty, `.` and `..` would change the path)"
                )));
            }
            Ok(Value::String(percent_encode(&text)))
        },
    );
    tera.register_filter(
        "wf_default",
        |value: &Value, args: &HashMap<String, Value>| {
            let empty = value.is_null() || value.as_str().is_some_and(str::is_empty);
            Ok(if empty {
                args.get("value").cloned().unwrap_or(Value::Null)
            } else {
                value.clone()
            })
        },
    );
    tera
}

/// Every byte but the RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`) as `%XX`, so a
/// value is always one path segment or query value.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `now()`: the current time, RFC 3339 UTC to the second; `now(format="%Y-%m-%d")` with a strftime format.
fn now(args: &HashMap<String, Value>) -> tera::Result<Value> {
    let stamp = wf_config::time::rfc3339_now();
    match args.get("format").and_then(Value::as_str) {
        None => Ok(Value::String(stamp)),
        Some(format) => Ok(Value::String(strftime(format, &stamp))),
    }
}

/// A small strftime over an RFC 3339 stamp: `%Y %m %d %H %M %S %%`.
fn strftime(format: &str, stamp: &str) -> String {
    let (date, time) = stamp.split_once('T').unwrap_or((stamp, "00:00:00Z"));
    let d: Vec<&str> = date.split('-').collect();
    let t: Vec<&str> = time.trim_end_matches('Z').split(':').collect();
    let part = |v: &Vec<&str>, i: usize| v.get(i).copied().unwrap_or("00").to_string();
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&part(&d, 0)),
            Some('m') => out.push_str(&part(&d, 1)),
            Some('d') => out.push_str(&part(&d, 2)),
            Some('H') => out.push_str(&part(&t, 0)),
            Some('M') => out.push_str(&part(&t, 1)),
            Some('S') => out.push_str(&part(&t, 2)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// tera nests the useful message (the missing variable) in its error's sources.
fn error_chain(e: &tera::Error) -> String {
    use std::error::Error as _;
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    let text = parts
        .into_iter()
        .filter(|p| !p.starts_with("Failed to render") && !p.starts_with("Failed to parse"))
        .collect::<Vec<_>>()
        .join(": ");
    text.replace(" while rendering 't'", "")
        .replace("'t'", "the template")
}

/// The longest list `range` may build.
const MAX_RANGE: i64 = 10_000;

/// tera's `range(end, start=0, step_by=1)`, refusing lists longer than [`MAX_RANGE`].
fn capped_range(args: &HashMap<String, Value>) -> tera::Result<Value> {
    let int = |key: &str, default: i64| -> tera::Result<i64> {
        match args.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_i64()
                .ok_or_else(|| tera::Error::msg(format!("`range`: `{key}` must be an integer"))),
        }
    };
    let end = args
        .get("end")
        .and_then(Value::as_i64)
        .ok_or_else(|| tera::Error::msg("`range` needs an integer `end`"))?;
    let start = int("start", 0)?;
    let step = int("step_by", 1)?;
    if step <= 0 {
        return Err(tera::Error::msg("`range`: `step_by` must be positive"));
    }
    let len = (end.saturating_sub(start).max(0) + step - 1) / step;
    if len > MAX_RANGE {
        return Err(tera::Error::msg(format!(
            "`range` would build {len} items; the limit is {MAX_RANGE}"
        )));
    }
    Ok(Value::Array(
        (0..len).map(|i| Value::from(start + i * step)).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, json};

    fn data() -> Map<String, Value> {
        json!({
            "count": 5,
            "name": "Ada",
            "status": "",
            "items": [1, 2],
            "steps": {"parse-request": {"body": {"id": 42, "name": "x"}}, "parse": {"body": {"id": 7}}},
            "trigger": {"type": "order.created"},
            "meta": {"pipeline": "p"}
        })
        .as_object()
        .unwrap()
        .clone()
    }

    fn render(source: &str) -> Value {
        Template::compile(source)
            .unwrap()
            .render(&Scope::of(&data()))
            .unwrap()
    }

    #[test]
    fn single_expressions_keep_their_json_type_in_both_dialects() {
        assert_eq!(render("{{ count }}"), json!(5));
        assert_eq!(render("{{ .count }}"), json!(5));
        assert_eq!(render("{{ steps.parse.body }}"), json!({"id": 7}));
        assert_eq!(render("{{ .steps.parse.body.id }}"), json!(7));
        assert_eq!(render("{{ items }}"), json!([1, 2]));
        assert_eq!(render("{{ count > 3 }}"), json!(true));
    }

    #[test]
    fn mixed_text_renders_a_string() {
        assert_eq!(render("n={{ count }} {{ .name }}"), json!("n=5 Ada"));
        assert_eq!(render("plain"), json!("plain"));
    }

    #[test]
    fn hyphenated_step_names_work_in_both_dialects() {
        assert_eq!(
            render("{{ index .steps \"parse-request\" \"body\" \"id\" }}"),
            json!(42)
        );
        assert_eq!(render("{{ .steps.parse-request.body.id }}"), json!(42));
        assert_eq!(render("{{ steps.parse-request.body.id }}"), json!(42));
    }

    #[test]
    fn functions_of_the_original() {
        assert_eq!(render("{{ lower .name }}"), json!("ada"));
        assert_eq!(render("{{ .name | upper }}"), json!("ADA"));
        assert_eq!(render("{{ name | lower }}"), json!("ada"));
        assert_eq!(
            render("{{ default \"pending\" .status }}"),
            json!("pending")
        );
        assert_eq!(render("{{ default \"none\" .missing }}"), json!("none"));
        assert_eq!(render("{{ json .items }}"), json!("[1,2]"));
        let id = render("{{ uuidv4 }}");
        assert_eq!(id.as_str().unwrap().len(), 36);
        let now = render("{{ now }}");
        assert!(
            now.as_str().unwrap().ends_with('Z') && now.as_str().unwrap().len() == 20,
            "{now}"
        );
        assert_eq!(
            render("{{ now(format=\"%Y\") }}").as_str().unwrap().len(),
            4
        );
        assert_eq!(
            render("{{ if eq .name \"Ada\" }}yes{{ else }}no{{ end }}"),
            json!("yes")
        );
    }

    #[test]
    fn syntax_errors_at_compile_time() {
        assert!(
            Template::compile("{{ .name | }}")
                .unwrap_err()
                .message
                .contains("invalid template")
        );
        assert!(
            Template::compile("{{ name ")
                .unwrap_err()
                .message
                .contains("without")
        );
        assert!(
            Template::compile("{{ if .x }}open")
                .unwrap_err()
                .message
                .contains("without `end`")
        );
        assert!(Template::compile("{{ foo( }}").is_err());
    }

    #[test]
    fn missing_variables_name_themselves() {
        let err = Template::compile("{{ .nope.x }}")
            .unwrap()
            .render(&Scope::of(&data()))
            .unwrap_err();
        assert!(err.message.contains("nope"), "{err}");
        assert!(err.message.contains("{{ .nope.x }}"), "{err}");
    }

    #[test]
    fn template_values_compile_nested_strings() {
        let v = TemplateValue::compile(
            &json!({"id": "{{ .count }}", "list": ["{{ name }}", 3], "fixed": true}),
        )
        .unwrap();
        assert_eq!(
            v.render(&Scope::of(&data())).unwrap(),
            json!({"id": 5, "list": ["Ada", 3], "fixed": true})
        );
        let err = TemplateValue::compile(&json!({"a": {"b": "{{ .x | }}"}})).unwrap_err();
        assert!(err.message.starts_with("at `/a/b`"), "{err}");
    }

    #[test]
    fn fast_paths_and_the_engine_agree() {
        let compiled = Template::compile("{{ .steps.parse.body.id }}").unwrap();
        assert!(matches!(compiled.kind, Kind::Path(..)));
        assert_eq!(render("{{ .steps.parse.body.id }}"), json!(7));
        assert!(matches!(
            Template::compile("n={{ count }} {{ .name }}").unwrap().kind,
            Kind::Parts(..)
        ));
        assert!(matches!(
            Template::compile("{{ count + 1 }}").unwrap().kind,
            Kind::Value(..)
        ));
        assert_eq!(render("{{ count + 1 }}"), json!(6));
        let err = Template::compile("x {{ .nope }}")
            .unwrap()
            .render(&Scope::of(&data()))
            .unwrap_err();
        assert_eq!(
            err.message,
            "template `x {{ .nope }}` failed: Variable `nope` not found in context"
        );
        // A caller is told what the data lacked, never the template's text.
        assert_eq!(err.for_caller(), "`nope` is missing from the data");
        let err = Template::compile("{{ count + nope }}")
            .unwrap()
            .render(&Scope::of(&data()))
            .unwrap_err();
        assert_eq!(err.for_caller(), "`nope` is missing from the data");
        assert!(
            err.message.contains("{{ count + nope }}"),
            "{}",
            err.message
        );
        let err = Template::compile("{{ name | round }}")
            .unwrap()
            .render(&Scope::of(&data()))
            .unwrap_err();
        assert!(!err.for_caller().contains("{{"), "{}", err.for_caller());
    }

    #[test]
    fn go_dialect_nesting_pipes_and_trim_markers_render() {
        assert_eq!(render("{{ not (eq .name \"Bob\") }}"), json!(true));
        assert_eq!(
            render("{{ and (eq .count 5) (eq .name \"Ada\") }}"),
            json!(true)
        );
        assert_eq!(render("{{ eq (len .items) 2 }}"), json!(true));
        assert_eq!(render("{{ .name | lower | upper }}"), json!("ADA"));
        assert_eq!(render("{{ default \"x\" .status | upper }}"), json!("X"));
        assert_eq!(
            render("{{ if eq (len .items) 2 }}two{{ end }}"),
            json!("two")
        );
        assert_eq!(render("{{ if not (eq .count 2) }}y{{ end }}"), json!("y"));
        assert_eq!(render("a  {{- .name -}}  b"), json!("aAdab"));
        assert_eq!(
            render("{% if steps.parse-request.body.id %}yes{% endif %}"),
            json!("yes")
        );
        let err = Template::compile("{{ range .items }}x{{ end }}").unwrap_err();
        assert!(err.message.contains("`range` is not supported"), "{err}");
        let err = Template::compile("{{ get_env(name=\"HOME\") }}")
            .unwrap()
            .render(&Scope::of(&data()))
            .unwrap_err();
        assert!(err.message.contains("get_env is not available"), "{err}");
    }

    #[test]
    fn list_indices_and_unsupported_negations() {
        assert_eq!(render("{{ .items.0 }}"), json!(1));
        let err = Template::compile("{{ not (and .a .b) }}").unwrap_err();
        assert!(err.message.contains("negate each comparison"), "{err}");
    }

    #[test]
    fn no_includes_macros_or_huge_ranges() {
        assert!(
            Template::compile("{% include \"t\" %}")
                .unwrap_err()
                .message
                .contains("`include` is not available")
        );
        assert!(Template::compile("{% macro m() %}x{% endmacro %}").is_err());
        assert_eq!(render("{{ range(end=3) }}"), json!([0, 1, 2]));
        let err = Template::compile("{{ range(end=count * 100000) }}")
            .unwrap()
            .render(&Scope::of(&data()))
            .unwrap_err();
        assert!(err.message.contains("limit is 10000"), "{err}");
    }

    #[test]
    fn whole_sections_render() {
        let current = Map::new();
        let trigger = json!({"a": 1}).as_object().unwrap().clone();
        let empty = Map::new();
        let scope = Scope {
            current: &current,
            steps: &empty,
            trigger: &trigger,
            meta: &empty,
        };
        assert_eq!(
            Template::compile("{{ .trigger }}")
                .unwrap()
                .render(&scope)
                .unwrap(),
            json!({"a": 1})
        );
    }
}
