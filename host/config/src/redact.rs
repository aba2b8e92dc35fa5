//! Secret values the process must not print. Secrets resolved from configuration are added
//! here; the log outputs pass every line through [`redact`].
//!
//! Values shorter than [`MIN_LEN`] bytes are not hidden: masking every `a` or `42` in the logs
//! would make them unreadable, and such values are not secrets anyone should rely on.

use std::borrow::Cow;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// The shortest value that is hidden.
pub const MIN_LEN: usize = 4;

/// What a hidden value is replaced with.
pub const MASK: &str = "[redacted]";

static ANY: AtomicBool = AtomicBool::new(false);
static VALUES: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Hides `value` from now on.
///
/// Its escaped forms are hidden too: a JSON log line writes `p"w` as `p\"w`, and a `Debug`
/// field as the same with other escapes, so the value itself would not be found there.
pub fn add(value: &str) {
    if value.len() < MIN_LEN {
        return;
    }
    let json = serde_json::to_string(value).unwrap_or_default();
    let debug = format!("{value:?}");
    let forms = [
        value.to_string(),
        json.trim_matches('"').to_string(),
        debug.trim_matches('"').to_string(),
        // A JSON line holding a Debug-formatted field escapes twice.
        serde_json::to_string(debug.trim_matches('"'))
            .unwrap_or_default()
            .trim_matches('"')
            .to_string(),
    ];
    let mut values = VALUES.write().unwrap_or_else(|e| e.into_inner());
    for form in forms {
        if !values.contains(&form) {
            values.push(form);
        }
    }
    // Longest first, so a secret containing another is masked whole.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    ANY.store(true, Ordering::Release);
}

/// `text` with every hidden value replaced by [`MASK`]; borrowed when nothing matched.
pub fn redact(text: &str) -> Cow<'_, str> {
    if !ANY.load(Ordering::Acquire) {
        return Cow::Borrowed(text);
    }
    let values = VALUES.read().unwrap_or_else(|e| e.into_inner());
    let mut out = Cow::Borrowed(text);
    for value in values.iter() {
        if out.contains(value.as_str()) {
            out = Cow::Owned(out.replace(value.as_str(), MASK));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_registered_values_longest_first() {
        add("tok-123456");
        add("tok-123456-extended");
        add("ab");
        assert_eq!(
            redact("a=tok-123456-extended b=tok-123456 c=ab"),
            "a=[redacted] b=[redacted] c=ab"
        );
        assert!(matches!(redact("nothing here"), Cow::Borrowed(_)));
        // As a JSON log line or a Debug field writes it.
        add("p\"w\\d-9");
        assert_eq!(
            redact(r#"{"url":"x?k=p\"w\\d-9"}"#),
            r#"{"url":"x?k=[redacted]"}"#
        );
        assert_eq!(redact(&format!("{:?}", "p\"w\\d-9")), "\"[redacted]\"");
    }
}
