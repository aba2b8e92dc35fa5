//! `secrets.vault`: secrets from HashiCorp Vault's (or OpenBao's) KV version 2 engine, read
//! with a token.
//!
//! A key is `PATH` or `PATH#FIELD`: `GET {address}/v1/{mountPath}/data/{PATH}`, then the field
//! of the secret's data. Without a field the secret must hold one field (its value is
//! returned) or a field named `value`.

use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType, SecretError,
    SecretSourceType, SecretStore, async_trait,
};

/// Configuration of `secrets.vault`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// `remote` (the only mode): a running Vault server at `address`. The original's `dev`
    /// mode, which started `vault server -dev` itself, is not supported: start it yourself
    /// and give its address.
    #[serde(default = "default_mode")]
    pub mode: String,
    /// The server, e.g. `https://vault.internal:8200`; `VAULT_ADDR` from the environment when
    /// omitted.
    #[serde(default)]
    pub address: Option<String>,
    /// The token (use `${VAULT_TOKEN}`); `VAULT_TOKEN` from the environment when omitted.
    #[serde(default)]
    pub token: Option<String>,
    /// Where the KV version 2 engine is mounted.
    #[serde(default = "default_mount", rename = "mountPath")]
    pub mount_path: String,
    /// The Vault Enterprise namespace, sent as `X-Vault-Namespace`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Time limit of one request.
    #[serde(default = "default_timeout", rename = "timeoutSeconds")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: u64,
}

fn default_mode() -> String {
    "remote".into()
}
fn default_mount() -> String {
    "secret".into()
}
fn default_timeout() -> u64 {
    10
}

pub struct VaultSecretsType;

impl Described for VaultSecretsType {
    const NAME: &'static str = "secrets.vault";
    const CATEGORY: Category = Category::Secrets;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "Secrets from HashiCorp Vault's KV v2 engine, for `${secret:PATH#FIELD}` in configs.";
    type Config = VaultConfig;
}

impl ModuleType for VaultSecretsType {
    fn check(config: &VaultConfig, _: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        match config.mode.as_str() {
            "remote" => {}
            "dev" => issues.push(
                ConfigIssue::new(
                    "/mode",
                    "`dev` mode (starting a Vault dev server) is not supported",
                )
                .help("run `vault server -dev` yourself and set `address` and `token`"),
            ),
            other => issues.push(
                ConfigIssue::new("/mode", format!("unknown mode `{other}`"))
                    .help("the mode is `remote`"),
            ),
        }
        if let Some(address) = &config.address {
            issues.extend(ConfigIssue::unless_http_address("/address", address));
        }
        let mount = config.mount_path.trim_matches('/');
        if mount.is_empty() || mount.split('/').any(|s| s.is_empty() || s == "..") {
            issues.push(ConfigIssue::new(
                "/mountPath",
                "the mount path is a path such as `secret` or `kv/team-a`",
            ));
        }
        issues
    }

    fn build(config: VaultConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Module>> {
        Ok(crate::source_module(Self::store(config)?, ctx))
    }
}

impl SecretSourceType for VaultSecretsType {
    const SCHEME: &'static str = "vault";

    fn store(config: VaultConfig) -> anyhow::Result<Arc<dyn SecretStore>> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let address = config
            .address
            .or_else(|| env("VAULT_ADDR"))
            .ok_or_else(|| anyhow::anyhow!("no `address` and no VAULT_ADDR in the environment"))?;
        let token = config
            .token
            .or_else(|| env("VAULT_TOKEN"))
            .ok_or_else(|| anyhow::anyhow!("no `token` and no VAULT_TOKEN in the environment"))?;
        Ok(Arc::new(VaultStore {
            base: reqwest::Url::parse(&address)?,
            token,
            mount: config.mount_path.trim_matches('/').to_string(),
            namespace: config.namespace,
            client: wf_objects::client(Duration::from_secs(config.timeout_seconds))?,
        }))
    }
}

struct VaultStore {
    base: reqwest::Url,
    token: String,
    mount: String,
    namespace: Option<String>,
    client: reqwest::Client,
}

#[async_trait]
impl SecretStore for VaultStore {
    async fn get(&self, key: &str) -> Result<String, SecretError> {
        let (path, field) = crate::split_field(key);
        let path = path.trim_matches('/');
        if path.is_empty()
            || path
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(SecretError::Invalid(format!(
                "`{path}` is not a secret path such as `app/db`"
            )));
        }
        let mut url = self.base.clone();
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|_| SecretError::Invalid("the address cannot hold a path".into()))?;
            segments.pop_if_empty().push("v1");
            segments.extend(self.mount.split('/'));
            segments.push("data");
            segments.extend(path.split('/'));
        }
        let mut request = self.client.get(url).header("X-Vault-Token", &self.token);
        if let Some(namespace) = &self.namespace {
            request = request.header("X-Vault-Namespace", namespace);
        }
        let response = request
            .send()
            .await
            .map_err(|e| SecretError::Unavailable(format!("Vault did not answer: {e}")))?;
        let status = response.status();
        match status.as_u16() {
            200 => {}
            404 => return Err(SecretError::NotFound),
            401 | 403 => {
                return Err(SecretError::Denied(format!(
                    "Vault answered {status}: check the token and its policy"
                )));
            }
            _ => return Err(SecretError::Unavailable(format!("Vault answered {status}"))),
        }
        let body: Value = response
            .json()
            .await
            .map_err(|e| SecretError::Unavailable(format!("Vault's answer is not JSON: {e}")))?;
        // KV v2 wraps the secret's fields: {"data": {"data": {...}, "metadata": {...}}}.
        let Some(Value::Object(data)) = body.pointer("/data/data") else {
            // A deleted (or destroyed) latest version reads as `data: null`.
            return Err(SecretError::NotFound);
        };
        let chosen = match field {
            Some(field) => data.get(field).ok_or_else(|| {
                SecretError::Invalid(format!("the secret has no field `{field}`"))
            })?,
            None if data.len() == 1 => data.values().next().unwrap_or(&Value::Null),
            None => data.get("value").ok_or_else(|| {
                SecretError::Invalid(format!(
                    "the secret has {} fields: name one with `{path}#FIELD`",
                    data.len()
                ))
            })?,
        };
        Ok(match chosen {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }
}
