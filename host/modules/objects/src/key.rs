//! Object keys: `/`-separated segments, never able to name something outside a store.

/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 1024;

/// Checks a key (after templates rendered it): not empty, no leading `/`, no empty, `.` or `..`
/// segments, no backslash or control characters. The error says what is wrong.
pub fn check(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("the object key is empty".into());
    }
    if key.len() > MAX_KEY_LEN {
        return Err(format!("the object key is longer than {MAX_KEY_LEN} bytes"));
    }
    if key.chars().any(|c| c == '\\' || c.is_control()) {
        return Err(format!(
            "object key `{}` contains a backslash or a control character",
            key.escape_debug()
        ));
    }
    if key
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(format!(
            "object key `{key}` has an empty, `.` or `..` segment (keys are relative paths such as `reports/2026/q1.csv`)"
        ));
    }
    Ok(())
}

/// Checks a listing prefix: like a key, but empty (everything) and a trailing `/` are fine.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    if trimmed.is_empty() {
        return if prefix.is_empty() {
            Ok(())
        } else {
            Err("the prefix `/` names nothing; use an empty prefix".into())
        };
    }
    check(trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_climb_or_start_at_the_root() {
        assert!(check("reports/2026/q1.csv").is_ok());
        assert!(check("a.b/.hidden").is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "..",
            "a//b",
            "a/./b",
            "a\\b",
            "a\0b",
            "a/",
        ] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
        assert!(check_prefix("").is_ok());
        assert!(check_prefix("reports/").is_ok());
        assert!(check_prefix("../").is_err());
    }
}
