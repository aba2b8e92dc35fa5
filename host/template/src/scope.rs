//! What templates read: a run's `current` keys at the top level, with `steps`, `trigger` and
//! `meta` beside them — viewed in place, without copying the run's data for every render.

use std::sync::OnceLock;

use serde_json::{Map, Value};

/// The data a template sees. `steps`, `trigger` and `meta` win over same-named `current` keys.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    pub current: &'a Map<String, Value>,
    pub steps: &'a Map<String, Value>,
    pub trigger: &'a Map<String, Value>,
    pub meta: &'a Map<String, Value>,
}

fn empty() -> &'static Map<String, Value> {
    static EMPTY: OnceLock<Map<String, Value>> = OnceLock::new();
    EMPTY.get_or_init(Map::new)
}

/// One step of a path: a key or a list index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

enum Node<'a> {
    Map(&'a Map<String, Value>),
    Value(&'a Value),
}

impl<'a> Scope<'a> {
    /// A scope over a plain map (for tests and callers without a run).
    pub fn of(map: &'a Map<String, Value>) -> Self {
        Scope {
            current: map,
            steps: empty(),
            trigger: empty(),
            meta: empty(),
        }
    }

    /// The section `key` names (`steps`, `trigger`, `meta`), when it applies: sections win over
    /// same-named `current` keys, except an empty one (a scope over a plain map, before any
    /// step ran) — then the `current` key is read.
    fn section(&self, key: &str) -> Option<&'a Map<String, Value>> {
        let section = match key {
            "steps" => self.steps,
            "trigger" => self.trigger,
            "meta" => self.meta,
            _ => return None,
        };
        (!section.is_empty() || !self.current.contains_key(key)).then_some(section)
    }

    /// Follows `segments`; `None` when something on the way is missing.
    pub fn get(&self, segments: &[Segment]) -> Option<&'a Value> {
        let (first, rest) = segments.split_first()?;
        let Segment::Key(first) = first else {
            return None;
        };
        let mut node = match self.section(first) {
            Some(map) => Node::Map(map),
            None => Node::Value(self.current.get(first)?),
        };
        for segment in rest {
            node = match (node, segment) {
                (Node::Map(map), Segment::Key(k)) => Node::Value(map.get(k)?),
                (Node::Value(Value::Object(map)), Segment::Key(k)) => Node::Value(map.get(k)?),
                (Node::Value(Value::Array(items)), Segment::Index(i)) => {
                    Node::Value(items.get(*i)?)
                }
                _ => return None,
            };
        }
        match node {
            Node::Value(v) => Some(v),
            // A whole section (`{{ steps }}`) is a map, not a value: see `lookup`.
            Node::Map(_) => None,
        }
    }

    /// A dotted path (`steps.parse-request.body.0`), split on `.` only.
    pub fn lookup(&self, path: &str) -> Option<Value> {
        let segments: Vec<Segment> = path
            .trim()
            .trim_start_matches('.')
            .split('.')
            .map(|s| {
                s.parse::<usize>()
                    .map(Segment::Index)
                    .unwrap_or_else(|_| Segment::Key(s.to_string()))
            })
            .collect();
        if let [Segment::Key(only)] = segments.as_slice()
            && let Some(map) = self.section(only)
        {
            return Some(Value::Object(map.clone()));
        }
        self.get(&segments).cloned()
    }

    /// Everything as one map, for the full template engine.
    pub fn to_map(&self) -> Map<String, Value> {
        let mut data = self.current.clone();
        for key in ["steps", "trigger", "meta"] {
            if let Some(map) = self.section(key) {
                data.insert(key.into(), Value::Object(map.clone()));
            }
        }
        data
    }
}

/// `steps["parse-request"].body[0]` → segments, when the expression is nothing but a path.
pub fn parse_path(expr: &str) -> Option<Vec<Segment>> {
    let chars: Vec<char> = expr.trim().chars().collect();
    let mut i = 0;
    let mut segments = Vec::new();
    let ident = |i: &mut usize| -> Option<String> {
        let start = *i;
        if !chars
            .get(*i)
            .is_some_and(|c| c.is_ascii_alphabetic() || *c == '_')
        {
            return None;
        }
        while chars
            .get(*i)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
        {
            *i += 1;
        }
        Some(chars[start..*i].iter().collect())
    };
    let first = ident(&mut i)?;
    if matches!(
        first.as_str(),
        "true" | "false" | "True" | "False" | "and" | "or" | "not" | "in" | "is" | "loop"
    ) {
        return None;
    }
    segments.push(Segment::Key(first));
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                segments.push(Segment::Key(ident(&mut i)?));
            }
            '[' => {
                i += 1;
                if chars.get(i) == Some(&'"') {
                    i += 1;
                    let start = i;
                    while chars.get(i).is_some_and(|c| *c != '"' && *c != '\\') {
                        i += 1;
                    }
                    if chars.get(i) != Some(&'"') || chars.get(i + 1) != Some(&']') {
                        return None;
                    }
                    segments.push(Segment::Key(chars[start..i].iter().collect()));
                    i += 2;
                } else {
                    let start = i;
                    while chars.get(i).is_some_and(char::is_ascii_digit) {
                        i += 1;
                    }
                    if start == i || chars.get(i) != Some(&']') {
                        return None;
                    }
                    segments.push(Segment::Index(
                        chars[start..i].iter().collect::<String>().parse().ok()?,
                    ));
                    i += 1;
                }
            }
            _ => return None,
        }
    }
    Some(segments)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_parse_or_are_left_to_tera() {
        assert_eq!(
            parse_path("steps[\"parse-request\"].body[0]"),
            Some(vec![
                Segment::Key("steps".into()),
                Segment::Key("parse-request".into()),
                Segment::Key("body".into()),
                Segment::Index(0)
            ])
        );
        assert_eq!(
            parse_path("status"),
            Some(vec![Segment::Key("status".into())])
        );
        assert_eq!(parse_path("name | lower"), None);
        assert_eq!(parse_path("a + b"), None);
        assert_eq!(parse_path("true"), None);
        assert_eq!(parse_path("uuidv4()"), None);
    }

    #[test]
    fn sections_win_over_current_keys() {
        let current = json!({"x": 1, "steps": "shadowed"})
            .as_object()
            .unwrap()
            .clone();
        let steps = json!({"a": {"b": 2}}).as_object().unwrap().clone();
        let scope = Scope {
            current: &current,
            steps: &steps,
            trigger: empty(),
            meta: empty(),
        };
        assert_eq!(scope.lookup("steps.a.b"), Some(json!(2)));
        assert_eq!(scope.lookup("x"), Some(json!(1)));
        assert_eq!(scope.lookup("steps.nope"), None);
    }
}
