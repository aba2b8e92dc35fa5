//! References to secrets in configuration strings: `${secret:KEY}`, `${secret:SOURCE:KEY}`,
//! and the original's `${vault:PATH#FIELD}` and `${aws-sm:NAME}`.
//!
//! Loading keeps them verbatim (a secret is fetched over the network, which loading never
//! does); the engine resolves them before validation (`wf_engine::secrets`). Unlike `${VAR}`,
//! they are found anywhere in a file, pipeline steps included, since nothing else uses these
//! schemes.

use std::collections::HashMap;

use serde_json::Value;

use crate::model::{AppConfig, DocId};
use crate::yaml::escape_pointer_segment;

/// Schemes whose references are secrets, resolved by the engine rather than the loader.
pub const SCHEMES: &[&str] = &["secret", "vault", "aws-sm"];

/// One `${scheme:body}` reference to a secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretRef {
    /// `secret`, `vault` or `aws-sm`.
    pub scheme: String,
    /// Everything after `scheme:` (`KEY`, or `SOURCE:KEY` for `secret`).
    pub body: String,
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "${{{}:{}}}", self.scheme, self.body)
    }
}

/// `(scheme, body)` of `reference` (the text inside `${…}`) when it names a secret.
fn parse(reference: &str) -> Option<(&str, &str)> {
    reference
        .split_once(':')
        .filter(|(scheme, _)| SCHEMES.contains(scheme))
}

/// Whether `reference` (the text inside `${…}`) names a secret.
pub fn is_secret_reference(reference: &str) -> bool {
    parse(reference).is_some()
}

/// Whether `text` holds a secret reference (without collecting them).
fn has_references(text: &str) -> bool {
    let mut found = false;
    if text.contains("${") {
        scan(text, |_, inner| found |= is_secret_reference(inner));
    }
    found
}

/// Walks the `${…}` references of `text`, skipping escaped `$${…}`. Calls `each` with the byte
/// range of the whole reference and its inner text.
fn scan(text: &str, mut each: impl FnMut(std::ops::Range<usize>, &str)) {
    let mut from = 0;
    while let Some(found) = text[from..].find("${") {
        let start = from + found;
        if start > 0 && text.as_bytes()[start - 1] == b'$' {
            from = start + 2;
            continue;
        }
        let Some(len) = text[start + 2..].find('}') else {
            return;
        };
        let end = start + 2 + len + 1;
        each(start..end, &text[start + 2..end - 1]);
        from = end;
    }
}

/// The secret references in `text`.
pub fn references(text: &str) -> Vec<SecretRef> {
    let mut out = Vec::new();
    if text.contains("${") {
        scan(text, |_, inner| {
            if let Some((scheme, body)) = parse(inner) {
                out.push(SecretRef {
                    scheme: scheme.to_string(),
                    body: body.to_string(),
                });
            }
        });
    }
    out
}

/// `text` with every secret reference replaced by its value from `values`, and escaped secret
/// references (`$${secret:…}`) written as text (`${secret:…}`). References without a value are
/// left as they are.
pub fn substitute(text: &str, values: &HashMap<SecretRef, String>) -> String {
    substitute_cow(text, values).into_owned()
}

fn substitute_cow<'t>(
    text: &'t str,
    values: &HashMap<SecretRef, String>,
) -> std::borrow::Cow<'t, str> {
    if !has_references(text) {
        return unescape(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    scan(text, |range, inner| {
        let value = parse(inner).and_then(|(scheme, body)| {
            values.get(&SecretRef {
                scheme: scheme.to_string(),
                body: body.to_string(),
            })
        });
        if let Some(value) = value {
            out.push_str(&unescape(&text[last..range.start]));
            out.push_str(value);
            last = range.end;
        }
    });
    out.push_str(&unescape(&text[last..]));
    out.into()
}

/// `$${secret:…}` → `${secret:…}` (other `$${` are not this pass's to touch).
fn unescape(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("$${") {
        return text.into();
    }
    let mut out = text.to_string();
    for scheme in SCHEMES {
        out = out.replace(&format!("$${{{scheme}:"), &format!("${{{scheme}:"));
    }
    out.into()
}

/// Whether any string in `value` holds a secret reference.
pub fn holds_reference(value: &Value) -> bool {
    match value {
        Value::String(s) => has_references(s),
        Value::Array(items) => items.iter().any(holds_reference),
        Value::Object(map) => map.values().any(holds_reference),
        _ => false,
    }
}

/// Where a string holding secret references is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Occurrence {
    pub doc: DocId,
    /// JSON pointer of the string in its document.
    pub pointer: String,
    pub references: Vec<SecretRef>,
}

/// Every string of the application's files that holds secret references.
pub fn occurrences(config: &AppConfig) -> Vec<Occurrence> {
    fn walk(value: &Value, doc: DocId, pointer: &mut String, out: &mut Vec<Occurrence>) {
        match value {
            Value::String(s) => {
                let references = references(s);
                if !references.is_empty() {
                    out.push(Occurrence {
                        doc,
                        pointer: pointer.clone(),
                        references,
                    });
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let len = pointer.len();
                    pointer.push_str(&format!("/{i}"));
                    walk(item, doc, pointer, out);
                    pointer.truncate(len);
                }
            }
            Value::Object(map) => {
                for (key, item) in map {
                    let len = pointer.len();
                    pointer.push('/');
                    pointer.push_str(&escape_pointer_segment(key));
                    walk(item, doc, pointer, out);
                    pointer.truncate(len);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (i, document) in config.documents.iter().enumerate() {
        walk(&document.value, DocId(i), &mut String::new(), &mut out);
    }
    out
}

/// Whether any of the application's files references a secret.
pub fn any(config: &AppConfig) -> bool {
    config.documents.iter().any(|d| holds_reference(&d.value))
}

/// Puts the resolved values into the files and into every declaration taken from them (and
/// escaped references as text), and marks the strings where they were written (`occurrences`)
/// so diagnostics never quote them.
pub fn substitute_all(
    config: &mut AppConfig,
    occurrences: &[Occurrence],
    values: &HashMap<SecretRef, String>,
) {
    fn walk(value: &mut Value, values: &HashMap<SecretRef, String>) {
        match value {
            Value::String(s) if s.contains("${") => {
                if let std::borrow::Cow::Owned(changed) = substitute_cow(s, values) {
                    *s = changed;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| walk(v, values)),
            Value::Object(map) => map.values_mut().for_each(|v| walk(v, values)),
            _ => {}
        }
    }
    for occurrence in occurrences {
        if let Some(document) = config.documents.get_mut(occurrence.doc.0) {
            document.spans.mark_expanded(&occurrence.pointer);
        }
    }
    for document in &mut config.documents {
        walk(&mut document.value, values);
    }
    for module in &mut config.modules {
        walk(&mut module.config, values);
    }
    for section in config.workflows.iter_mut().chain(&mut config.triggers) {
        walk(&mut section.config, values);
    }
    for pipeline in &mut config.pipelines {
        walk(&mut pipeline.value, values);
    }
    for (_, value, _) in &mut config.sections {
        walk(value, values);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(scheme: &str, body: &str) -> SecretRef {
        SecretRef {
            scheme: scheme.into(),
            body: body.into(),
        }
    }

    #[test]
    fn finds_secret_references_only() {
        assert_eq!(
            references("Bearer ${secret:api-token} ${HOME} ${vault:kv/app#pw} $${secret:not}"),
            vec![r("secret", "api-token"), r("vault", "kv/app#pw")]
        );
        assert!(references("${env:X}").is_empty());
        assert!(is_secret_reference("aws-sm:prod/db"));
        assert!(!is_secret_reference("PORT:-80"));
    }

    #[test]
    fn substitutes_values_and_unescapes_literals() {
        let values: HashMap<_, _> = [(r("secret", "t"), "s3cr3t".to_string())].into();
        assert_eq!(
            substitute(
                "a ${secret:t} b $${secret:lit} $${HOME} ${secret:t}",
                &values
            ),
            "a s3cr3t b ${secret:lit} $${HOME} s3cr3t"
        );
        assert_eq!(substitute("only $${vault:x}", &values), "only ${vault:x}");
        // A reference without a value is left for the caller to report.
        assert_eq!(substitute("${secret:other}", &values), "${secret:other}");
    }

    #[test]
    fn holds_reference_looks_everywhere() {
        let value = serde_json::json!({"steps": [{"config": {"headers": {"x": "${secret:k}"}}}]});
        assert!(holds_reference(&value));
        assert!(!holds_reference(&serde_json::json!({"a": "${A}", "b": 1})));
    }
}
