//! Secrets in configuration: `${secret:KEY}` resolved from the app's secret sources
//! (`secrets.vault`, `secrets.aws`) after loading and before validation.
//!
//! ```text
//! Loaded ──resolve_secrets──▶ Loaded (values in place) ──validate──▶ …
//! ```
//!
//! A reference names its source when the app has several (`${secret:vault:app/db#password}`,
//! by module name); the original's `${vault:…}` and `${aws-sm:…}` name the one source of that
//! kind. Each distinct secret is fetched once, all of them concurrently. Values never appear in
//! diagnostics (their strings are marked as expanded) and are added to [`crate::redact`] so the
//! log output hides them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use wf_config::secret_refs::{self, SecretRef};
use wf_config::{Diagnostic, Loaded, ModuleDecl, Origin};

use crate::registry::Registry;
use crate::{async_trait, redact};

/// How long one secret may take to arrive before the start fails.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a secret could not be read. Messages never hold a secret value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("not found")]
    NotFound,
    #[error("access denied: {0}")]
    Denied(String),
    #[error("{0}")]
    Invalid(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// A place secrets are read from, built from a secret-source module's config.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// The secret under `key`, in the source's own key syntax.
    async fn get(&self, key: &str) -> Result<String, SecretError>;
}

impl crate::ServiceKind for dyn SecretStore {
    const LABEL: &'static str = "a secret source";
}

/// Turns a secret-source module's (validated) config into a store.
pub type ConnectFn =
    Box<dyn Fn(&serde_json::Value) -> anyhow::Result<Arc<dyn SecretStore>> + Send + Sync>;

/// A registered kind of secret source.
pub struct SecretSource {
    /// The original's scheme naming this kind (`vault`, `aws-sm`).
    pub scheme: &'static str,
    pub connect: ConnectFn,
}

/// A module type that is a secret source (see [`Registry::register_secret_source`]).
pub trait SecretSourceType: crate::ModuleType {
    /// The original's scheme for the one source of this type: `${vault:…}`.
    const SCHEME: &'static str;

    fn store(config: Self::Config) -> anyhow::Result<Arc<dyn SecretStore>>;
}

/// Fetches every secret `loaded` references and puts the values in place. Problems (no source,
/// a missing secret, an unreachable server) are added to the diagnostics, located at the
/// reference, so validation reports them with everything else. Does nothing (and no I/O)
/// when the files reference no secret or already have errors.
pub async fn resolve_secrets(mut loaded: Loaded, registry: &Registry) -> Loaded {
    if loaded.diagnostics.has_errors() {
        return loaded;
    }
    let occurrences = secret_refs::occurrences(&loaded.config);
    if occurrences.is_empty() {
        // Escaped references (`$${secret:…}`) still become text.
        secret_refs::substitute_all(&mut loaded.config, &[], &HashMap::new());
        return loaded;
    }
    // The sources' own configs must be right before anything is fetched with them; the rest
    // is validated once, after the values are in place.
    let is_source = |m: &ModuleDecl| registry.secret_source(&m.type_name).is_some();
    let found = crate::validate::check_modules(&loaded.config, registry, &is_source);
    if found.iter().any(Diagnostic::is_error) {
        return loaded;
    }
    let config = &loaded.config;
    let sources: Vec<&ModuleDecl> = config.modules.iter().filter(|m| is_source(m)).collect();

    let mut diagnostics = Vec::new();
    // Each (source, key) once, with the references that name it: `${secret:app/db}` and
    // `${vault:app/db}` are one secret. Problems are reported where they are written.
    let mut wanted: BTreeMap<(&str, String), (&ModuleDecl, Vec<&SecretRef>)> = BTreeMap::new();
    let mut seen: HashSet<&SecretRef> = HashSet::new();
    for occurrence in &occurrences {
        let origin = Origin {
            doc: occurrence.doc,
            pointer: occurrence.pointer.clone(),
        };
        if let Some(source) = sources.iter().find(|m| origin_within(&origin, m)) {
            diagnostics.push(
                config.diagnostic_at(
                    Diagnostic::error(
                        "secret-in-secret-source",
                        "a secret source's own config cannot reference secrets",
                    )
                    .module(&source.name)
                    .help("give its credentials with `${ENV_VAR}` from the environment"),
                    &origin,
                ),
            );
            continue;
        }
        for reference in &occurrence.references {
            if !seen.insert(reference) {
                continue;
            }
            match choose_source(reference, &sources, registry) {
                Ok((module, key)) => {
                    wanted
                        .entry((module.name.as_str(), key))
                        .or_insert_with(|| (module, Vec::new()))
                        .1
                        .push(reference);
                }
                Err((message, help)) => {
                    diagnostics.push(config.diagnostic_at(
                        Diagnostic::error("unresolved-secret", message).help(help),
                        &origin,
                    ));
                }
            }
        }
    }

    let mut stores: HashMap<&str, Arc<dyn SecretStore>> = HashMap::new();
    for (module, _) in wanted.values() {
        if stores.contains_key(module.name.as_str()) {
            continue;
        }
        let connect = registry
            .secret_source(&module.type_name)
            .map(|s| (s.connect)(&module.config));
        match connect {
            Some(Ok(store)) => {
                stores.insert(&module.name, store);
            }
            Some(Err(e)) => diagnostics.push(
                config.diagnostic_at(
                    Diagnostic::error(
                        "secret-source-failed",
                        format!("secret source `{}` cannot be used: {e:#}", module.name),
                    )
                    .module(&module.name),
                    &module.config_origin,
                ),
            ),
            None => {}
        }
    }

    let fetches = wanted
        .iter()
        .filter_map(|((name, key), (module, references))| {
            let store = stores.get(name)?.clone();
            Some(async move {
                let result = match tokio::time::timeout(FETCH_TIMEOUT, store.get(key)).await {
                    Ok(result) => result,
                    Err(_) => Err(SecretError::Unavailable(format!(
                        "no answer within {}s",
                        FETCH_TIMEOUT.as_secs()
                    ))),
                };
                (module, key, references, result)
            })
        });
    let mut values = HashMap::new();
    for (module, key, references, result) in futures::future::join_all(fetches).await {
        match result {
            Ok(value) => {
                redact::add(&value);
                for reference in references {
                    values.insert((*reference).clone(), value.clone());
                }
            }
            Err(e) => {
                let message = format!(
                    "secret `{key}` from `{}` ({}): {e}",
                    module.name, module.type_name
                );
                let written_at = occurrences
                    .iter()
                    .filter(|o| o.references.iter().any(|r| references.contains(&r)));
                for occurrence in written_at {
                    let origin = Origin {
                        doc: occurrence.doc,
                        pointer: occurrence.pointer.clone(),
                    };
                    diagnostics.push(config.diagnostic_at(
                        Diagnostic::error("unresolved-secret", message.clone()).help(
                            "check the key and the source's permissions; secrets are read at every start",
                        ),
                        &origin,
                    ));
                }
            }
        }
    }

    let read = wanted.len();
    if diagnostics.is_empty() {
        secret_refs::substitute_all(&mut loaded.config, &occurrences, &values);
        tracing::info!(secrets = read, "secrets resolved");
    }
    loaded.diagnostics.extend(diagnostics);
    loaded
}

fn origin_within(origin: &Origin, module: &ModuleDecl) -> bool {
    origin.doc == module.origin.doc
        && (origin.pointer == module.origin.pointer
            || origin
                .pointer
                .starts_with(&format!("{}/", module.origin.pointer)))
}

/// The source module and the key within it that `reference` names.
fn choose_source<'c>(
    reference: &SecretRef,
    sources: &[&'c ModuleDecl],
    registry: &Registry,
) -> Result<(&'c ModuleDecl, String), (String, String)> {
    let body = reference.body.trim();
    if body.contains(":-") {
        return Err((
            format!("`{reference}`: secrets take no default"),
            "a missing secret fails the start; use `${ENV:-default}` for optional settings"
                .to_string(),
        ));
    }
    if body.is_empty() {
        return Err((
            format!("`{reference}` names no secret"),
            "write `${secret:KEY}`".to_string(),
        ));
    }
    let names = || {
        sources
            .iter()
            .map(|m| format!("`{}`", m.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if reference.scheme == "secret" {
        // `${secret:SOURCE:KEY}` when SOURCE is a declared source; otherwise the only one.
        if let Some((name, key)) = body.split_once(':')
            && let Some(source) = sources.iter().find(|m| m.name == name)
        {
            return Ok((source, key.to_string()));
        }
        return match sources {
            [only] => Ok((only, body.to_string())),
            [] => Err((
                format!("`{reference}` needs a secrets module, and the app has none"),
                "declare a `secrets.vault` or `secrets.aws` module".to_string(),
            )),
            _ => Err((
                format!("`{reference}` does not say which secrets module to read"),
                format!(
                    "name one: `${{secret:MODULE:{body}}}`, where MODULE is one of {}",
                    names()
                ),
            )),
        };
    }
    let of_scheme: Vec<&&ModuleDecl> = sources
        .iter()
        .filter(|m| {
            registry
                .secret_source(&m.type_name)
                .is_some_and(|s| s.scheme == reference.scheme)
        })
        .collect();
    match of_scheme.as_slice() {
        [only] => Ok((only, body.to_string())),
        [] => Err((
            format!(
                "`{reference}` needs a `{}` module, and the app has none",
                match reference.scheme.as_str() {
                    "vault" => "secrets.vault",
                    _ => "secrets.aws",
                }
            ),
            "declare one, or write `${secret:KEY}` for the app's secrets module".to_string(),
        )),
        _ => Err((
            format!("`{reference}` could be read from several modules"),
            format!(
                "name one: `${{secret:MODULE:{body}}}` with MODULE one of {}",
                names()
            ),
        )),
    }
}
