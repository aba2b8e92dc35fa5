//! Configuration diagnostics: what is wrong, where (file:line:column and YAML path), which module,
//! and what to change.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::source::{Location, SourceMap};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One problem found in a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// A stable, kebab-case identifier (`unknown-type`, `missing-variable`, ...) for tools and docs.
    pub code: &'static str,
    /// What is wrong, lowercase, identifiers in backticks.
    pub message: String,
    pub location: Option<Location>,
    /// The YAML path, e.g. `modules[2].config.address`.
    pub path: Option<String>,
    /// The module the problem belongs to, when there is one.
    pub module: Option<String>,
    /// What to change.
    pub help: Option<String>,
}

impl Diagnostic {
    /// Messages and help never show a resolved secret (see [`crate::redact`]): a type's
    /// rule may quote a setting's value.
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: crate::redact::redact(&message.into()).into_owned(),
            location: None,
            path: None,
            module: None,
            help: None,
        }
    }

    pub fn warning(code: &'static str, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, message)
        }
    }

    pub fn at(mut self, location: Option<Location>) -> Self {
        self.location = location;
        self
    }

    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    pub fn module(mut self, module: impl Into<String>) -> Self {
        self.module = Some(module.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(crate::redact::redact(&help.into()).into_owned());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Human rendering with a quoted source line and a caret, in the style of rustc.
    pub fn render(&self, sources: &SourceMap) -> String {
        let mut out = format!(
            "{}[{}]: {}\n",
            self.severity.as_str(),
            self.code,
            bounded(&self.message)
        );
        // The gutter is as wide as the line number (at least two), as in rustc's output.
        let width = self.location.map_or(2, |l| l.line.to_string().len().max(2));
        let gutter = " ".repeat(width);
        if let Some(loc) = self.location {
            let _ = writeln!(out, "{gutter}--> {}", sources.display(loc));
            if let Some(line) = sources.get(loc.source).and_then(|f| f.line(loc.line)) {
                let (line, column) = excerpt(line, loc.column);
                let line = line.as_str();
                let caret_pad: String = line
                    .chars()
                    .take(column.saturating_sub(1) as usize)
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                let carets = "^".repeat(token_width(line, column));
                let _ = writeln!(out, "{gutter} |");
                let _ = writeln!(out, "{:>width$} | {line}", loc.line);
                let _ = writeln!(out, "{gutter} | {caret_pad}{carets}");
            }
        }
        if let Some(path) = &self.path {
            let _ = match &self.module {
                Some(module) => writeln!(out, "{gutter} = at: {path} (module `{module}`)"),
                None => writeln!(out, "{gutter} = at: {path}"),
            };
        } else if let Some(module) = &self.module {
            let _ = writeln!(out, "{gutter} = module: `{module}`");
        }
        if let Some(help) = &self.help {
            let _ = writeln!(out, "{gutter} = help: {help}");
        }
        out
    }

    pub fn to_json(&self, sources: &SourceMap) -> Value {
        let location = self.location.map(|l| {
            json!({
                "file": sources.path(l.source).display().to_string(),
                "line": l.line,
                "column": l.column,
            })
        });
        json!({
            "severity": self.severity.as_str(),
            "code": self.code,
            "message": bounded(&self.message),
            "location": location,
            "path": self.path,
            "module": self.module,
            "help": self.help,
        })
    }
}

/// Longest source line quoted whole; longer ones are quoted around the column.
const MAX_QUOTED_CHARS: usize = 160;

/// Longest message shown: a message quoting a huge value (a multi-megabyte key, say) is cut.
const MAX_MESSAGE_CHARS: usize = 2000;

fn bounded(message: &str) -> std::borrow::Cow<'_, str> {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}… (message cut)", &message[..cut]).into(),
        None => message.into(),
    }
}

/// `line`, or the part of it around `column` when it is too long to quote, with the column
/// in what is returned.
fn excerpt(line: &str, column: u32) -> (String, u32) {
    let count = line.chars().count();
    if count <= MAX_QUOTED_CHARS {
        return (line.to_string(), column);
    }
    let at = column.saturating_sub(1) as usize;
    let start = at
        .saturating_sub(MAX_QUOTED_CHARS / 3)
        .min(count - MAX_QUOTED_CHARS);
    let mut shown: String = line.chars().skip(start).take(MAX_QUOTED_CHARS).collect();
    let mut column = (at - start.min(at)) as u32 + 1;
    if start > 0 {
        shown.insert(0, '…');
        column += 1;
    }
    if start + MAX_QUOTED_CHARS < count {
        shown.push('…');
    }
    (shown, column)
}

/// Width of the scalar or key starting at `column` (at least 1), for the caret line.
fn token_width(line: &str, column: u32) -> usize {
    let rest: String = line
        .chars()
        .skip(column.saturating_sub(1) as usize)
        .collect();
    let rest = rest.trim_end();
    let width = match rest.chars().next() {
        Some(q @ ('"' | '\'')) => rest[1..]
            .find(q)
            .map_or(rest.chars().count(), |end| end + 2),
        Some('[' | '{') => 1,
        _ => {
            // A plain scalar ends at a key separator, a comment or flow punctuation.
            let end = [": ", " #", ", ", ",", "]", "}"]
                .iter()
                .filter_map(|stop| rest.find(stop))
                .min()
                .unwrap_or(rest.len());
            rest[..end].trim_end_matches(':').chars().count()
        }
    };
    width.max(1)
}

/// All diagnostics of one validation run.
#[derive(Clone, Debug, Default)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.items.push(diagnostic);
    }

    pub fn extend(&mut self, other: impl IntoIterator<Item = Diagnostic>) {
        self.items.extend(other);
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }

    pub fn error_count(&self) -> usize {
        self.items.iter().filter(|d| d.is_error()).count()
    }

    pub fn warning_count(&self) -> usize {
        self.items.len() - self.error_count()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter()
    }

    /// Source order, errors before warnings at the same place; exact duplicates removed.
    pub fn sorted(mut self) -> Self {
        self.items.sort_by(|a, b| {
            (a.location, a.severity, &a.message).cmp(&(b.location, b.severity, &b.message))
        });
        self.items.dedup();
        self
    }

    pub fn render(&self, sources: &SourceMap) -> String {
        let mut out = String::new();
        for d in &self.items {
            out.push_str(&d.render(sources));
            out.push('\n');
        }
        let errors = self.error_count();
        let warnings = self.warning_count();
        let _ = writeln!(
            out,
            "{} error{}, {} warning{}",
            errors,
            if errors == 1 { "" } else { "s" },
            warnings,
            if warnings == 1 { "" } else { "s" }
        );
        out
    }

    pub fn to_json(&self, sources: &SourceMap) -> Value {
        Value::Array(self.items.iter().map(|d| d.to_json(sources)).collect())
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

/// `/modules/2/config/address` → `modules[2].config.address`.
pub fn pointer_to_path(pointer: &str) -> String {
    let mut out = String::new();
    for raw in pointer.split('/').skip(1) {
        let segment = raw.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            let _ = write!(out, "[{segment}]");
        } else if !segment.is_empty()
            && segment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&segment);
        } else {
            let _ = write!(out, "[{segment:?}]");
        }
    }
    if out.is_empty() {
        out.push_str("(document root)");
    }
    out
}

/// The closest candidate to `wanted` by edit distance, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    wanted: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(wanted, c), c))
        .filter(|(distance, c)| *distance <= (wanted.len().max(c.len()) / 3).max(2))
        .min_by_key(|(distance, c)| (*distance, *c))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_paths_read_like_yaml() {
        assert_eq!(
            pointer_to_path("/modules/2/config/address"),
            "modules[2].config.address"
        );
        assert_eq!(pointer_to_path("/targets/~1api"), r#"targets["/api"]"#);
        assert_eq!(pointer_to_path(""), "(document root)");
    }

    #[test]
    fn suggestions_only_for_near_misses() {
        let types = ["http.server", "http.router", "http.handler"];
        assert_eq!(did_you_mean("http.sever", types), Some("http.server"));
        assert_eq!(did_you_mean("htp.router", types), Some("http.router"));
        assert_eq!(did_you_mean("database.workflow", types), None);
    }

    #[test]
    fn huge_lines_and_messages_are_quoted_in_part() {
        let mut sources = SourceMap::default();
        let line = format!("key: {}bad{}", "a".repeat(3_000_000), "b".repeat(3_000_000));
        let id = sources.add("big.yaml".into(), line);
        let column = 5 + 3_000_000 + 1;
        let d = Diagnostic::error("yaml-syntax", format!("bad `{}`", "x".repeat(1_000_000))).at(
            Some(Location {
                source: id,
                line: 1,
                column,
            }),
        );
        let out = d.render(&sources);
        assert!(out.len() < 10_000, "{} bytes", out.len());
        let quoted = out.lines().find(|l| l.starts_with(" 1 | ")).unwrap();
        let caret = out.lines().find(|l| l.contains('^')).unwrap();
        // The caret still points at `bad` in the excerpt.
        let at = caret.chars().position(|c| c == '^').unwrap();
        let pointed: String = quoted.chars().skip(at).take(3).collect();
        assert_eq!(pointed, "bad", "{quoted}\n{caret}");
        assert!(quoted.contains('…'));
        assert!(out.contains("(message cut)"));
    }

    #[test]
    fn render_quotes_the_line_with_a_caret() {
        let mut sources = SourceMap::default();
        let id = sources.add(
            "app.yaml".into(),
            "modules:\n  - name: a\n    type: http.sever\n".into(),
        );
        let d = Diagnostic::error("unknown-type", "unknown module type `http.sever`")
            .at(Some(Location {
                source: id,
                line: 3,
                column: 11,
            }))
            .path("modules[0].type")
            .module("a")
            .help("did you mean `http.server`?");
        let text = d.render(&sources);
        let expected = "error[unknown-type]: unknown module type `http.sever`
  --> app.yaml:3:11
   |
 3 |     type: http.sever
   |           ^^^^^^^^^^
   = at: modules[0].type (module `a`)
   = help: did you mean `http.server`?
";
        assert_eq!(text, expected);
    }
}
