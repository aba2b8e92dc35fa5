//! Secret sources: `secrets.vault` (HashiCorp Vault's KV version 2 engine) and `secrets.aws`
//! (AWS Secrets Manager, or a compatible server). Configs read their values as
//! `${secret:KEY}`; the engine fetches them before validation ([`wf_engine::secrets`]).

use std::sync::Arc;

use wf_engine::{Module, Registry, RegistryError, SecretStore, async_trait};

pub mod secrets_aws;
pub mod secrets_vault;

pub const PLUGIN: &str = "secrets";

/// A secret-source module at run time: its store, offered to modules that read secrets later.
struct SourceModule;

#[async_trait]
impl Module for SourceModule {}

/// Builds the module of a secret source and offers its store as a service.
fn source_module(
    store: Arc<dyn SecretStore>,
    ctx: &mut wf_engine::BuildContext<'_>,
) -> Arc<dyn Module> {
    ctx.provide::<dyn SecretStore>(store);
    Arc::new(SourceModule)
}

/// `path#field` → (`path`, `field`).
fn split_field(key: &str) -> (&str, Option<&str>) {
    match key.rsplit_once('#') {
        Some((path, field)) if !field.is_empty() => (path, Some(field)),
        _ => (key.trim_end_matches('#'), None),
    }
}

pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    registry
        .register_secret_source::<secrets_vault::VaultSecretsType>()?
        .register_secret_source::<secrets_aws::AwsSecretsType>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_at_the_last_hash() {
        assert_eq!(split_field("app/db#password"), ("app/db", Some("password")));
        assert_eq!(split_field("app/db"), ("app/db", None));
        assert_eq!(split_field("app/db#"), ("app/db", None));
    }
}
