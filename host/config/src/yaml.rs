//! YAML → JSON value, remembering where every node and every mapping key came from.
//!
//! Everything after loading works on `serde_json::Value` (the JSON Schema validator, typed
//! deserialization, templates); the [`SpanIndex`] maps JSON pointers back to file:line:column so
//! that any later stage can point at the YAML that caused a problem.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_saphyr::Spanned;

use crate::source::{Location, SourceId};

/// Where one node of a document was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeSpan {
    /// The value itself.
    pub value: Location,
    /// The mapping key that introduced the value, when there was one.
    pub key: Option<Location>,
}

/// JSON pointer (`/modules/0/config/address`) → location, for one document.
#[derive(Debug, Default, Clone)]
pub struct SpanIndex {
    spans: HashMap<String, NodeSpan>,
    /// Pointers whose strings came from `${...}` expansion (possibly secrets).
    expanded: std::collections::HashSet<String>,
}

impl SpanIndex {
    pub fn get(&self, pointer: &str) -> Option<NodeSpan> {
        self.spans.get(pointer).copied()
    }

    /// The closest recorded location at or above `pointer` (the parent object for a missing key).
    pub fn nearest(&self, pointer: &str) -> Option<NodeSpan> {
        let mut p = pointer;
        loop {
            if let Some(span) = self.spans.get(p) {
                return Some(*span);
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return None,
            }
        }
    }

    pub fn mark_expanded(&mut self, pointer: &str) {
        self.expanded.insert(pointer.to_string());
    }

    /// Whether the value at `pointer` came from an environment variable.
    pub fn is_expanded(&self, pointer: &str) -> bool {
        self.expanded.contains(pointer)
    }

    fn insert(&mut self, pointer: String, span: NodeSpan) {
        self.spans.insert(pointer, span);
    }
}

/// Escapes one JSON pointer segment (RFC 6901).
pub fn escape_pointer_segment(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// A YAML syntax (or structure) error with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub message: String,
    pub location: Option<Location>,
}

/// Parses one YAML document into a JSON value and its span index.
///
/// An empty document is `null`.
pub fn parse(text: &str, source: SourceId) -> Result<(Value, SpanIndex), YamlError> {
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    // YAML 1.2 booleans only, as the original (yaml.v3) read them: `yes`, `on`, `no` stay strings.
    options.strict_booleans = true;
    let raw: Option<RawNode> =
        serde_saphyr::from_str_with_options(text, options).map_err(|err| {
            let location = err.location().and_then(|l| to_location(source, l));
            let inner = err.without_snippet();
            YamlError {
                message: clean_message(&inner.to_string()),
                location,
            }
        })?;
    let mut index = SpanIndex::default();
    let value = match raw {
        Some(raw) => lower(raw, source, String::new(), None, &mut index),
        None => Value::Null,
    };
    Ok((value, index))
}

/// serde-saphyr appends its own "at line X column Y"; we print locations ourselves.
fn clean_message(message: &str) -> String {
    let message = message.lines().next().unwrap_or(message).trim();
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

fn to_location(source: SourceId, l: serde_saphyr::Location) -> Option<Location> {
    if l.line() == 0 {
        return None;
    }
    Some(Location {
        source,
        line: u32::try_from(l.line()).unwrap_or(u32::MAX),
        column: u32::try_from(l.column()).unwrap_or(u32::MAX),
    })
}

fn lower(
    raw: RawNode,
    source: SourceId,
    pointer: String,
    key: Option<Location>,
    index: &mut SpanIndex,
) -> Value {
    let here = to_location(source, raw.0.referenced).unwrap_or(Location {
        source,
        line: 1,
        column: 1,
    });
    let value = match raw.0.value {
        RawKind::Null => Value::Null,
        RawKind::Bool(b) => Value::Bool(b),
        RawKind::Int(i) => Value::Number(i.into()),
        RawKind::UInt(u) => Value::Number(u.into()),
        RawKind::Float(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        RawKind::Str(s) => Value::String(s),
        RawKind::Seq(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| lower(item, source, format!("{pointer}/{i}"), None, index))
                .collect(),
        ),
        RawKind::Map(entries) => {
            let mut map = Map::with_capacity(entries.len());
            for (k, v) in entries {
                let key_loc = to_location(source, k.referenced);
                let child = format!("{pointer}/{}", escape_pointer_segment(&k.value.0));
                let v = lower(v, source, child, key_loc, index);
                map.insert(k.value.0, v);
            }
            Value::Object(map)
        }
    };
    index.insert(pointer, NodeSpan { value: here, key });
    value
}

struct RawNode(Spanned<RawKind>);

impl<'de> Deserialize<'de> for RawNode {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Spanned::<RawKind>::deserialize(d).map(RawNode)
    }
}

enum RawKind {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<RawNode>),
    Map(Vec<(Spanned<KeyText>, RawNode)>),
}

impl<'de> Deserialize<'de> for RawKind {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawKindVisitor)
    }
}

struct RawKindVisitor;

impl<'de> Visitor<'de> for RawKindVisitor {
    type Value = RawKind;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<RawKind, E> {
        Ok(RawKind::Null)
    }
    fn visit_none<E>(self) -> Result<RawKind, E> {
        Ok(RawKind::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<RawKind, D::Error> {
        RawKind::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<RawKind, E> {
        Ok(RawKind::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<RawKind, E> {
        Ok(RawKind::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<RawKind, E> {
        Ok(RawKind::UInt(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<RawKind, E> {
        Ok(RawKind::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<RawKind, E> {
        Ok(RawKind::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<RawKind, E> {
        Ok(RawKind::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawKind, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element::<RawNode>()? {
            items.push(item);
        }
        Ok(RawKind::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawKind, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some((k, v)) = map.next_entry::<Spanned<KeyText>, RawNode>()? {
            entries.push((k, v));
        }
        Ok(RawKind::Map(entries))
    }
}

/// A mapping key as text: YAML allows `200:` or `true:` as keys, JSON objects need strings.
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a scalar mapping key")
            }
            fn visit_str<E>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<KeyText, E> {
                Ok(KeyText(v))
            }
            fn visit_bool<E>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<KeyText, E> {
                Ok(KeyText("null".to_string()))
            }
        }
        d.deserialize_any(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: u32, column: u32) -> Location {
        Location {
            source: SourceId(0),
            line,
            column,
        }
    }

    #[test]
    fn records_value_and_key_locations() {
        let text =
            "modules:\n  - name: api\n    type: http.server\n    config:\n      port: 8080\n";
        let (value, index) = parse(text, SourceId(0)).unwrap();
        assert_eq!(value["modules"][0]["config"]["port"], 8080);
        let span = index.get("/modules/0/type").unwrap();
        assert_eq!(span.value, at(3, 11));
        assert_eq!(span.key, Some(at(3, 5)));
        assert_eq!(
            index.get("/modules/0/config/port").unwrap().value,
            at(5, 13)
        );
    }

    #[test]
    fn non_string_keys_become_text() {
        let (value, _) = parse("codes:\n  200: ok\n  true: yes\n", SourceId(0)).unwrap();
        assert_eq!(value["codes"]["200"], "ok");
        assert_eq!(value["codes"]["true"], "yes");
    }

    #[test]
    fn syntax_errors_have_locations() {
        let err = parse("modules:\n  - name: [unclosed\n", SourceId(0)).unwrap_err();
        assert!(err.location.is_some(), "{err:?}");
        assert!(!err.message.is_empty());
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let err = parse("a: 1\na: 2\n", SourceId(0)).unwrap_err();
        assert_eq!(err.location.map(|l| l.line), Some(2), "{err:?}");
    }

    #[test]
    fn empty_document_is_null() {
        let (value, _) = parse("# nothing\n", SourceId(0)).unwrap();
        assert_eq!(value, Value::Null);
    }

    #[test]
    fn nearest_walks_up_to_a_known_parent() {
        let (_, index) = parse("a:\n  b: 1\n", SourceId(0)).unwrap();
        assert_eq!(index.nearest("/a/missing").unwrap().value, at(2, 3));
    }

    #[test]
    fn pointer_segments_are_escaped() {
        let (_, index) = parse("routes:\n  /api/x: 1\n", SourceId(0)).unwrap();
        assert!(index.get("/routes/~1api~1x").is_some());
    }
}
