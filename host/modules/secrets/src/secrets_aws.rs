//! `secrets.aws`: secrets from AWS Secrets Manager (or a compatible server, such as moto or
//! LocalStack), signed with AWS Signature Version 4.
//!
//! A key is `NAME` (or an ARN) or `NAME#FIELD`: the secret's string, or one field of it when it
//! holds a JSON object (as the AWS console stores key/value secrets). Binary secrets are
//! returned base64-encoded.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType, SecretError,
    SecretSourceType, SecretStore, async_trait,
};
use wf_objects::sigv4::{self, Credentials};

/// Configuration of `secrets.aws`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsSecretsConfig {
    /// The region the secrets are in.
    #[serde(default = "default_region")]
    pub region: String,
    /// A compatible server, e.g. `http://127.0.0.1:5000`; AWS's regional endpoint when
    /// omitted.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The access key id; `AWS_ACCESS_KEY_ID` from the environment when omitted.
    #[serde(default, rename = "accessKeyId")]
    pub access_key_id: Option<String>,
    /// The secret access key (use `${ENV_VAR}`); `AWS_SECRET_ACCESS_KEY` when omitted.
    #[serde(default, rename = "secretAccessKey")]
    pub secret_access_key: Option<String>,
    /// A session token for temporary credentials; `AWS_SESSION_TOKEN` when omitted.
    #[serde(default, rename = "sessionToken")]
    pub session_token: Option<String>,
    /// The version stage to read.
    #[serde(default = "default_stage", rename = "versionStage")]
    pub version_stage: String,
    /// Time limit of one request.
    #[serde(default = "default_timeout", rename = "timeoutSeconds")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: u64,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_stage() -> String {
    "AWSCURRENT".into()
}
fn default_timeout() -> u64 {
    10
}

pub struct AwsSecretsType;

impl Described for AwsSecretsType {
    const NAME: &'static str = "secrets.aws";
    const CATEGORY: Category = Category::Secrets;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "Secrets from AWS Secrets Manager, for `${secret:NAME#FIELD}` in configs.";
    type Config = AwsSecretsConfig;
}

impl ModuleType for AwsSecretsType {
    fn check(config: &AwsSecretsConfig, _: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if let Some(endpoint) = &config.endpoint {
            issues.extend(ConfigIssue::unless_http_address("/endpoint", endpoint));
        }
        if config.region.is_empty()
            || !config
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            issues.push(ConfigIssue::new(
                "/region",
                format!("`{}` is not a region such as `eu-west-1`", config.region),
            ));
        }
        issues
    }

    fn build(
        config: AwsSecretsConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        Ok(crate::source_module(Self::store(config)?, ctx))
    }
}

impl SecretSourceType for AwsSecretsType {
    const SCHEME: &'static str = "aws-sm";

    fn store(config: AwsSecretsConfig) -> anyhow::Result<Arc<dyn SecretStore>> {
        let credentials = Credentials::from_config_or_env(
            config.access_key_id,
            config.secret_access_key,
            config.session_token,
        )?;
        let endpoint = config
            .endpoint
            .unwrap_or_else(|| format!("https://secretsmanager.{}.amazonaws.com", config.region));
        Ok(Arc::new(AwsStore {
            endpoint: reqwest::Url::parse(&endpoint)?,
            region: config.region,
            stage: config.version_stage,
            credentials,
            client: wf_objects::client(Duration::from_secs(config.timeout_seconds))?,
        }))
    }
}

struct AwsStore {
    endpoint: reqwest::Url,
    region: String,
    stage: String,
    credentials: Credentials,
    client: reqwest::Client,
}

#[async_trait]
impl SecretStore for AwsStore {
    async fn get(&self, key: &str) -> Result<String, SecretError> {
        let (name, field) = crate::split_field(key);
        if name.is_empty() {
            return Err(SecretError::Invalid("no secret name".into()));
        }
        let body = json!({"SecretId": name, "VersionStage": self.stage}).to_string();
        let host = sigv4::host(&self.endpoint);
        let path = match self.endpoint.path() {
            "" => "/",
            path => path,
        };
        let headers = sigv4::sign(
            &self.credentials,
            &self.region,
            "secretsmanager",
            "POST",
            &host,
            path,
            &[],
            &sigv4::sha256_hex(body.as_bytes()),
            chrono::Utc::now(),
        );
        let mut request = self
            .client
            .post(self.endpoint.clone())
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", "secretsmanager.GetSecretValue")
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(|e| {
            SecretError::Unavailable(format!("Secrets Manager did not answer: {e}"))
        })?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            // Errors name their kind in `__type`, e.g. `…#ResourceNotFoundException`.
            let kind = answer
                .get("__type")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let kind = kind.rsplit('#').next().unwrap_or(kind);
            return Err(match kind {
                "ResourceNotFoundException" => SecretError::NotFound,
                "AccessDeniedException"
                | "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "ExpiredTokenException" => SecretError::Denied(format!(
                    "Secrets Manager answered {status} {kind}: check the credentials and their policy"
                )),
                "" => SecretError::Unavailable(format!("Secrets Manager answered {status}")),
                other => {
                    SecretError::Unavailable(format!("Secrets Manager answered {status} {other}"))
                }
            });
        }
        let document = match (answer.get("SecretString"), answer.get("SecretBinary")) {
            (Some(Value::String(text)), _) => text.clone(),
            (_, Some(Value::String(binary))) if field.is_none() => binary.clone(),
            (_, Some(Value::String(binary))) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(binary)
                    .map_err(|_| SecretError::Invalid("the binary secret is not base64".into()))?;
                String::from_utf8(bytes)
                    .map_err(|_| SecretError::Invalid("the binary secret is not text".into()))?
            }
            _ => return Err(SecretError::Invalid("the answer holds no secret".into())),
        };
        pick_field(&document, field)
    }
}

/// A secret value from a JSON document: the whole text, or with `#field` one field of the
/// object (strings as they are, other values as JSON).
fn pick_field(document: &str, field: Option<&str>) -> Result<String, SecretError> {
    let Some(field) = field else {
        return Ok(document.to_string());
    };
    let value: serde_json::Value = serde_json::from_str(document).map_err(|_| {
        SecretError::Invalid(format!("`#{field}` asked for, but the secret is not JSON"))
    })?;
    match value.get(field) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(other) => Ok(other.to_string()),
        None => Err(SecretError::Invalid(format!(
            "the secret has no field `{field}`"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_json_secrets() {
        let doc = r#"{"password":"pw-1","port":5432}"#;
        assert_eq!(pick_field(doc, Some("password")).unwrap(), "pw-1");
        assert_eq!(pick_field(doc, Some("port")).unwrap(), "5432");
        assert_eq!(pick_field(doc, None).unwrap(), doc);
        assert!(pick_field(doc, Some("user")).is_err());
        assert!(pick_field("plain", Some("x")).is_err());
    }
}
