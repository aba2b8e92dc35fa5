//! The `transform` of an integration step: a JSON-like object whose values read the run's
//! data and earlier steps' responses, as the original's examples write it:
//!
//! ```text
//! {
//!   "amount": data.totalAmount,
//!   "customerId": check-customer.id,
//!   "locationId": data.locationId || check-inventory.preferredLocation,
//!   "currency": data.currency ?? "EUR"
//! }
//! ```
//!
//! Values are literals (strings, numbers, `true`, `false`, `null`, objects, arrays) or paths:
//! `data.<path>` reads the run's data and `<step>.<path>` that step's response body (names may
//! contain `-`, so there is no arithmetic). `a || b` is `b` when `a` is missing, `null`,
//! `false`, `0` or `""`; `a ?? b` only when `a` is missing or `null`. A missing path is `null`.
//! Parsed once when the app loads; evaluating it cannot fail.

use serde_json::{Map, Value};

/// A parsed transform.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Literal(Value),
    Object(Vec<(String, Expr)>),
    Array(Vec<Expr>),
    /// `root.seg[0].seg`: `root` is `data` or a step name.
    Path(String, Vec<PathSegment>),
    /// `a || b`.
    Or(Box<Expr>, Box<Expr>),
    /// `a ?? b`.
    Coalesce(Box<Expr>, Box<Expr>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum PathSegment {
    Key(String),
    Index(usize),
}

/// A syntax error, with the 1-based line and column in the transform text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}, column {} of the transform: {}",
            self.line, self.column, self.message
        )
    }
}

/// Nesting deeper than this is refused: the parser recurses, and configs are not that deep.
const MAX_DEPTH: usize = 64;

pub fn parse(text: &str) -> Result<Expr, ParseError> {
    let mut parser = Parser {
        text,
        pos: 0,
        depth: 0,
    };
    let expr = parser.expr()?;
    parser.skip_space();
    if parser.pos < text.len() {
        return Err(parser.error("unexpected text after the end of the transform"));
    }
    Ok(expr)
}

impl Expr {
    /// The roots of every path (`data` and step names), to check they exist.
    pub fn roots(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_roots(&mut out);
        out
    }

    fn collect_roots<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Expr::Literal(_) => {}
            Expr::Object(entries) => entries.iter().for_each(|(_, e)| e.collect_roots(out)),
            Expr::Array(items) => items.iter().for_each(|e| e.collect_roots(out)),
            Expr::Path(root, _) => out.push(root),
            Expr::Or(a, b) | Expr::Coalesce(a, b) => {
                a.collect_roots(out);
                b.collect_roots(out);
            }
        }
    }

    /// Evaluates against the run's data and the response bodies of earlier steps.
    pub fn eval(&self, data: &Map<String, Value>, bodies: &dyn Fn(&str) -> Option<Value>) -> Value {
        self.lookup(data, bodies).unwrap_or(Value::Null)
    }

    /// `None` is a missing value.
    fn lookup(
        &self,
        data: &Map<String, Value>,
        bodies: &dyn Fn(&str) -> Option<Value>,
    ) -> Option<Value> {
        match self {
            Expr::Literal(v) => Some(v.clone()),
            Expr::Object(entries) => Some(Value::Object(
                entries
                    .iter()
                    .map(|(k, e)| (k.clone(), e.eval(data, bodies)))
                    .collect(),
            )),
            Expr::Array(items) => Some(Value::Array(
                items.iter().map(|e| e.eval(data, bodies)).collect(),
            )),
            Expr::Path(root, segments) => {
                let start = if root == "data" {
                    Value::Object(data.clone())
                } else {
                    bodies(root)?
                };
                segments
                    .iter()
                    .try_fold(start, |value, segment| match (segment, value) {
                        (PathSegment::Key(k), Value::Object(mut map)) => map.remove(k),
                        (PathSegment::Index(i), Value::Array(mut items)) if *i < items.len() => {
                            Some(items.swap_remove(*i))
                        }
                        _ => None,
                    })
            }
            Expr::Or(a, b) => match a.lookup(data, bodies) {
                Some(v) if truthy(&v) => Some(v),
                _ => b.lookup(data, bodies),
            },
            Expr::Coalesce(a, b) => match a.lookup(data, bodies) {
                Some(v) if !v.is_null() => Some(v),
                _ => b.lookup(data, bodies),
            },
        }
    }
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => false,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn error(&self, message: impl Into<String>) -> ParseError {
        let before = &self.text[..self.pos];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ParseError {
            line,
            column,
            message: message.into(),
        }
    }

    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn skip_space(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.text.len() - trimmed.len();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: &str, what: &str) -> Result<(), ParseError> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(self.error(format!("expected `{token}` {what}")))
        }
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(format!("nested more than {MAX_DEPTH} levels deep")));
        }
        let mut left = self.primary()?;
        loop {
            if self.eat("||") {
                left = Expr::Or(Box::new(left), Box::new(self.primary()?));
            } else if self.eat("??") {
                left = Expr::Coalesce(Box::new(left), Box::new(self.primary()?));
            } else {
                break;
            }
        }
        self.depth -= 1;
        Ok(left)
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        self.skip_space();
        match self.peek() {
            None => Err(self.error("expected a value, found the end of the transform")),
            Some('{') => self.object(),
            Some('[') => self.array(),
            Some('(') => {
                self.pos += 1;
                let inner = self.expr()?;
                self.expect(")", "to close `(`")?;
                Ok(inner)
            }
            Some('"' | '\'') => Ok(Expr::Literal(Value::String(self.string()?))),
            Some(c) if c == '-' || c.is_ascii_digit() => self.number(),
            Some(c) if is_name_start(c) => self.path_or_keyword(),
            Some(c) => Err(self.error(format!("`{c}` cannot start a value"))),
        }
    }

    fn object(&mut self) -> Result<Expr, ParseError> {
        self.pos += 1; // `{`
        let mut entries: Vec<(String, Expr)> = Vec::new();
        loop {
            if self.eat("}") {
                return Ok(Expr::Object(entries));
            }
            self.skip_space();
            let at = self.pos;
            let key = match self.peek() {
                Some('"' | '\'') => self.string()?,
                Some(c) if is_name_start(c) => self.name(),
                _ => return Err(self.error("expected a key (a string or a name) or `}`")),
            };
            if entries.iter().any(|(k, _)| *k == key) {
                self.pos = at;
                return Err(self.error(format!("key `{key}` appears twice")));
            }
            self.expect(":", "after the key")?;
            entries.push((key, self.expr()?));
            if !self.eat(",") {
                self.expect("}", "or `,` after a value")?;
                return Ok(Expr::Object(entries));
            }
        }
    }

    fn array(&mut self) -> Result<Expr, ParseError> {
        self.pos += 1; // `[`
        let mut items = Vec::new();
        loop {
            if self.eat("]") {
                return Ok(Expr::Array(items));
            }
            items.push(self.expr()?);
            if !self.eat(",") {
                self.expect("]", "or `,` after a value")?;
                return Ok(Expr::Array(items));
            }
        }
    }

    /// A JSON string, or the same in single quotes.
    fn string(&mut self) -> Result<String, ParseError> {
        let quote = self.peek().unwrap_or('"');
        let start = self.pos;
        let mut out = String::new();
        let mut chars = self.rest().char_indices().skip(1);
        while let Some((i, c)) = chars.next() {
            match c {
                c if c == quote => {
                    self.pos = start + i + c.len_utf8();
                    return Ok(out);
                }
                '\\' => {
                    let Some((_, escaped)) = chars.next() else {
                        break;
                    };
                    match escaped {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        other => out.push(other),
                    }
                }
                '\n' => break,
                c => out.push(c),
            }
        }
        Err(self.error("this string is not closed on its line"))
    }

    fn number(&mut self) -> Result<Expr, ParseError> {
        let len = self
            .rest()
            .char_indices()
            .find(|&(i, c)| {
                !(c.is_ascii_digit()
                    || matches!(c, '.' | 'e' | 'E' | '+')
                    || (c == '-' && (i == 0 || self.rest()[..i].ends_with(['e', 'E']))))
            })
            .map_or(self.rest().len(), |(i, _)| i);
        let text = &self.rest()[..len];
        match serde_json::from_str::<serde_json::Number>(text) {
            Ok(n) => {
                self.pos += len;
                Ok(Expr::Literal(Value::Number(n)))
            }
            Err(_) => Err(self.error(format!("`{text}` is not a number"))),
        }
    }

    /// A name: letters, digits, `_`, `$` and `-` (step names have hyphens).
    fn name(&mut self) -> String {
        let len = self
            .rest()
            .char_indices()
            .find(|&(_, c)| !(is_name_start(c) || c.is_ascii_digit() || c == '-'))
            .map_or(self.rest().len(), |(i, _)| i);
        let name = self.rest()[..len].to_string();
        self.pos += len;
        name
    }

    fn path_or_keyword(&mut self) -> Result<Expr, ParseError> {
        let root = self.name();
        match root.as_str() {
            "true" => return Ok(Expr::Literal(Value::Bool(true))),
            "false" => return Ok(Expr::Literal(Value::Bool(false))),
            "null" | "undefined" => return Ok(Expr::Literal(Value::Null)),
            _ => {}
        }
        let mut segments = Vec::new();
        loop {
            // No space inside a path: `a . b` is not one.
            if self.rest().starts_with('.') {
                self.pos += 1;
                match self.peek() {
                    Some(c) if is_name_start(c) || c.is_ascii_digit() => {
                        segments.push(PathSegment::Key(self.name()))
                    }
                    _ => return Err(self.error("expected a field name after `.`")),
                }
            } else if self.rest().starts_with('[') {
                self.pos += 1;
                self.skip_space();
                let segment = match self.peek() {
                    Some('"' | '\'') => PathSegment::Key(self.string()?),
                    Some(c) if c.is_ascii_digit() => {
                        let digits: String = self
                            .rest()
                            .chars()
                            .take_while(char::is_ascii_digit)
                            .collect();
                        self.pos += digits.len();
                        PathSegment::Index(
                            digits
                                .parse()
                                .map_err(|_| self.error("this index is too large"))?,
                        )
                    }
                    _ => return Err(self.error("expected an index or a quoted key after `[`")),
                };
                self.expect("]", "to close `[`")?;
                segments.push(segment);
            } else {
                return Ok(Expr::Path(root, segments));
            }
        }
    }
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == '$'
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(text: &str, data: Value, steps: Value) -> Value {
        let expr = parse(text).unwrap();
        let data = data.as_object().cloned().unwrap();
        expr.eval(&data, &|name| steps.get(name).cloned())
    }

    #[test]
    fn the_original_examples_evaluate() {
        let text = r#"{
            "amount": data.totalAmount,
            "currency": data.currency,
            "customerId": check-customer.id,
            "paymentMethodId": data.paymentMethod.id,
            "locationId": data.locationId || check-inventory.preferredLocation
          }"#;
        let out = run(
            text,
            json!({"totalAmount": 42.5, "currency": "EUR", "paymentMethod": {"id": "pm_1"}}),
            json!({"check-customer": {"id": "c-7"}, "check-inventory": {"preferredLocation": "WH-2"}}),
        );
        assert_eq!(
            out,
            json!({"amount": 42.5, "currency": "EUR", "customerId": "c-7",
                   "paymentMethodId": "pm_1", "locationId": "WH-2"})
        );
    }

    #[test]
    fn or_and_coalesce_differ_on_falsy_values() {
        let data = json!({"zero": 0, "empty": "", "none": null});
        assert_eq!(run("data.zero || 5", data.clone(), json!({})), json!(5));
        assert_eq!(run("data.zero ?? 5", data.clone(), json!({})), json!(0));
        assert_eq!(
            run("data.empty || 'x'", data.clone(), json!({})),
            json!("x")
        );
        assert_eq!(
            run(
                "data.none ?? data.missing ?? [1, 2]",
                data.clone(),
                json!({})
            ),
            json!([1, 2])
        );
        assert_eq!(run("data.missing", data, json!({})), Value::Null);
    }

    #[test]
    fn indexes_quoted_keys_and_literals() {
        let out = run(
            r#"{items: data.lines[1]["sku-id"], flag: true, n: -1.5e2, s: 'it\'s', nested: {a: [null]}}"#,
            json!({"lines": [{"sku-id": "a"}, {"sku-id": "b"}]}),
            json!({}),
        );
        assert_eq!(
            out,
            json!({"items": "b", "flag": true, "n": -150.0, "s": "it's", "nested": {"a": [null]}})
        );
    }

    #[test]
    fn roots_name_data_and_steps() {
        let expr = parse("{a: data.x || lookup.y, b: [other.z]}").unwrap();
        assert_eq!(expr.roots(), vec!["data", "lookup", "other"]);
    }

    #[test]
    fn syntax_errors_say_where() {
        let e = parse("{\n  \"a\": data.x,\n  \"b\" data.y\n}").unwrap_err();
        assert_eq!((e.line, e.column), (3, 7));
        assert!(e.message.contains("expected `:`"), "{e}");
        assert!(parse("{a: 1, a: 2}").unwrap_err().message.contains("twice"));
        assert!(
            parse("{a: 'open}")
                .unwrap_err()
                .message
                .contains("not closed")
        );
        assert!(
            parse("{a: 1} extra")
                .unwrap_err()
                .message
                .contains("after the end")
        );
        assert!(parse("data.").unwrap_err().message.contains("field name"));
        assert!(
            parse(&"[".repeat(100))
                .unwrap_err()
                .message
                .contains("deep")
        );
        assert!(parse("{a: data.x + 1}").is_err());
    }
}
