//! `${VAR}`, `${VAR:-default}` and `${env:VAR}` in configuration strings.
//!
//! Secret references (`${secret:KEY}`, see [`crate::secret_refs`]) are kept as written: the
//! engine fetches them later, and turns their escapes (`$${secret:…}`) into text then.
//!
//! Differences from the original, on purpose: `:-default` works, an unset variable without a
//! default is an error that names it (the original silently kept the literal text), and values
//! inside lists of maps are expanded too. `$${...}` writes a literal `${...}`.

use std::collections::HashMap;

/// Where variable values come from. The process environment in production; a map in tests.
pub trait Vars {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnv;

impl Vars for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Vars for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

/// Why one `${...}` reference could not be expanded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error("environment variable `{name}` is not set")]
    Missing { name: String },
    #[error("unknown variable provider `{scheme}` in `${{{reference}}}`")]
    UnknownProvider { scheme: String, reference: String },
    #[error("`${{` without a closing `}}`")]
    Unterminated,
    #[error("empty variable reference `${{}}`")]
    Empty,
    #[error("a `${{...}}` inside another is not supported")]
    Nested,
}

impl ExpandError {
    /// What the user should do about it.
    pub fn help(&self) -> String {
        match self {
            ExpandError::Missing { name } => format!(
                "set `{name}` in the environment, or give a default with `${{{name}:-value}}`"
            ),
            ExpandError::UnknownProvider { .. } => {
                "use `${NAME}` or `${env:NAME}` for the environment and `${secret:KEY}` for a \
                 secrets module; write `$${...}` for a literal `${...}`"
                    .to_string()
            }
            ExpandError::Unterminated => {
                "close the reference with `}`, or write `$${` for a literal `${`".to_string()
            }
            ExpandError::Empty => "name a variable: `${NAME}`".to_string(),
            ExpandError::Nested => {
                "use one variable per reference, with a plain default: `${A:-value}`".to_string()
            }
        }
    }
}

/// Expands every reference in `text`. Returns `None` when there is nothing to expand, so
/// callers can avoid allocating; otherwise every failing reference is reported, not just the first.
pub fn expand(text: &str, vars: &dyn Vars) -> Option<Result<String, Vec<ExpandError>>> {
    if !text.contains("${") {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        // `$${` is an escaped literal `${`.
        if start > 0 && rest.as_bytes()[start - 1] == b'$' {
            out.push_str(&rest[..start - 1]);
            // An escaped secret reference stays escaped for the engine's pass.
            let escaped_secret = rest[start + 2..]
                .split_once('}')
                .is_some_and(|(inner, _)| crate::secret_refs::is_secret_reference(inner));
            out.push_str(if escaped_secret { "$${" } else { "${" });
            rest = &rest[start + 2..];
            continue;
        }
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            errors.push(ExpandError::Unterminated);
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        // `${A:-${B}}` would silently leave `${B}` behind: nesting is not supported.
        if after[..end].contains("${") {
            errors.push(ExpandError::Nested);
            rest = &after[end + 1..];
            continue;
        }
        if crate::secret_refs::is_secret_reference(&after[..end]) {
            out.push_str(&rest[start..start + 2 + end + 1]);
            rest = &after[end + 1..];
            continue;
        }
        match resolve(&after[..end], vars) {
            Ok(value) => out.push_str(&value),
            Err(e) => errors.push(e),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    })
}

fn resolve(reference: &str, vars: &dyn Vars) -> Result<String, ExpandError> {
    let (scheme, body) = split_scheme(reference);
    match scheme {
        None | Some("env") => {}
        Some(other) => {
            return Err(ExpandError::UnknownProvider {
                scheme: other.to_string(),
                reference: reference.to_string(),
            });
        }
    }
    let (name, default) = match body.find(":-") {
        Some(i) => (&body[..i], Some(&body[i + 2..])),
        None => (body, None),
    };
    let name = name.trim();
    if name.is_empty() {
        return Err(ExpandError::Empty);
    }
    lookup(name, vars)
        .filter(|v| default.is_none() || !v.is_empty())
        .or_else(|| default.map(str::to_string))
        .ok_or_else(|| ExpandError::Missing {
            name: name.to_string(),
        })
}

/// `env:NAME` → (`env`, `NAME`); `PORT:-8080` has no scheme (the `:` starts a default).
fn split_scheme(reference: &str) -> (Option<&str>, &str) {
    if let Some(i) = reference.find(':') {
        let (scheme, rest) = (&reference[..i], &reference[i + 1..]);
        let is_scheme = !scheme.is_empty()
            && !rest.starts_with('-')
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        if is_scheme {
            return (Some(scheme), rest);
        }
    }
    (None, reference)
}

/// Exact name first, then the original's normalisation (`db.host` → `DB_HOST`).
fn lookup(name: &str, vars: &dyn Vars) -> Option<String> {
    vars.get(name).or_else(|| {
        let normalised = name.to_ascii_uppercase().replace('.', "_");
        (normalised != name)
            .then(|| vars.get(&normalised))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ok(text: &str, v: &HashMap<String, String>) -> String {
        expand(text, v).expect("has references").expect("expands")
    }

    #[test]
    fn plain_default_and_env_scheme() {
        let v = vars(&[("PORT", "9000"), ("HOST", "db")]);
        assert_eq!(ok(":${PORT}", &v), ":9000");
        assert_eq!(ok(":${MISSING:-8080}", &v), ":8080");
        assert_eq!(ok("${env:HOST}:${env:NOPE:-5432}", &v), "db:5432");
        assert_eq!(ok("${MISSING:-}", &v), "");
    }

    #[test]
    fn empty_value_takes_the_default_only_when_one_is_given() {
        let v = vars(&[("EMPTY", "")]);
        assert_eq!(ok("${EMPTY:-x}", &v), "x");
        assert_eq!(ok("[${EMPTY}]", &v), "[]");
    }

    #[test]
    fn original_name_normalisation() {
        let v = vars(&[("DB_HOST", "pg")]);
        assert_eq!(ok("${db.host}", &v), "pg");
    }

    #[test]
    fn no_references_means_no_allocation() {
        assert!(expand("plain text", &vars(&[])).is_none());
    }

    #[test]
    fn escaped_reference_is_literal() {
        assert_eq!(
            ok("$${NOT_A_VAR} ${A}", &vars(&[("A", "1")])),
            "${NOT_A_VAR} 1"
        );
    }

    #[test]
    fn every_missing_variable_is_reported() {
        let errors = expand("${A}/${B}/${C:-c}", &vars(&[]))
            .unwrap()
            .unwrap_err();
        assert_eq!(
            errors,
            vec![
                ExpandError::Missing { name: "A".into() },
                ExpandError::Missing { name: "B".into() }
            ]
        );
        assert!(errors[0].help().contains("${A:-value}"));
    }

    #[test]
    fn secret_references_are_kept_for_the_engine() {
        let v = vars(&[("A", "1")]);
        assert_eq!(
            ok("${A} ${secret:db-password} $${lit}", &v),
            "1 ${secret:db-password} ${lit}"
        );
        // Escaped secret references stay escaped, for the engine to turn into text.
        assert_eq!(ok("$${secret:x}", &v), "$${secret:x}");
        assert_eq!(ok("${vault:kv/app#pw}", &v), "${vault:kv/app#pw}");
        assert_eq!(ok("$${lit} ${A}", &v), "${lit} 1");
    }

    #[test]
    fn unknown_provider_and_malformed_references() {
        let errors = expand("${consul:secret/x#y}", &vars(&[]))
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(&errors[0], ExpandError::UnknownProvider { scheme, .. } if scheme == "consul")
        );
        assert_eq!(
            expand("${A", &vars(&[])).unwrap().unwrap_err(),
            vec![ExpandError::Unterminated]
        );
        assert_eq!(
            expand("${}", &vars(&[])).unwrap().unwrap_err(),
            vec![ExpandError::Empty]
        );
        assert_eq!(
            expand("${A:-${B}}", &vars(&[])).unwrap().unwrap_err()[0],
            ExpandError::Nested
        );
    }
}
