//! Access tokens for `storage.gcs` from a service-account key file: a JWT signed with the
//! account's key (RS256) is exchanged at the key's `token_uri` for an OAuth2 access token
//! (RFC 7523), which is kept until a minute before it expires.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

/// The parts of a Google service-account key file used here.
#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: String,
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default = "default_token_uri")]
    token_uri: String,
}

fn default_token_uri() -> String {
    "https://oauth2.googleapis.com/token".into()
}

/// Read and write access to objects, nothing more.
const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";

/// Signs assertions for one service account and caches the access token they buy.
pub struct ServiceAccount {
    email: String,
    key: jsonwebtoken::EncodingKey,
    key_id: Option<String>,
    token_uri: String,
    cached: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key never reaches logs or errors.
        f.debug_struct("ServiceAccount")
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

impl ServiceAccount {
    /// Reads a key file (`gcloud iam service-accounts keys create`'s JSON).
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read `{}`: {e}", path.display()))?;
        let file: KeyFile = serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "`{}` is not a service-account key file: {e}",
                path.display()
            )
        })?;
        if file.kind != "service_account" {
            anyhow::bail!(
                "`{}` is a `{}` credential, not a service-account key",
                path.display(),
                file.kind
            );
        }
        let key =
            jsonwebtoken::EncodingKey::from_rsa_pem(file.private_key.as_bytes()).map_err(|_| {
                anyhow::anyhow!(
                    "the private key in `{}` is not an RSA key in PEM",
                    path.display()
                )
            })?;
        Ok(ServiceAccount {
            email: file.client_email,
            key,
            key_id: file.private_key_id,
            token_uri: file.token_uri,
            cached: tokio::sync::Mutex::new(None),
        })
    }

    /// A current access token: the cached one, or a new one from the token endpoint. Callers
    /// wait for one exchange at a time rather than each starting their own.
    pub async fn token(&self, client: &reqwest::Client) -> anyhow::Result<String> {
        let mut cached = self.cached.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = self.key_id.clone();
        let claims = serde_json::json!({
            "iss": self.email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + 3600,
        });
        let assertion = jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| anyhow::anyhow!("cannot sign the token request: {e}"))?;
        let body = format!(
            "grant_type={}&assertion={assertion}",
            crate::sigv4::uri_encode("urn:ietf:params:oauth:grant-type:jwt-bearer", false)
        );
        let response = client
            .post(&self.token_uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!("the token endpoint did not answer: {}", e.without_url())
            })?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            // OAuth errors say what is wrong in `error` and `error_description`; no secrets.
            let reason = answer
                .get("error_description")
                .or_else(|| answer.get("error"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            anyhow::bail!(
                "the token endpoint refused service account `{}`: {status} {reason}",
                self.email
            );
        }
        let token = answer
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow::anyhow!("the token endpoint's answer has no access_token"))?
            .to_string();
        let lifetime = answer
            .get("expires_in")
            .and_then(Value::as_u64)
            .unwrap_or(3600);
        let until = Instant::now() + Duration::from_secs(lifetime.saturating_sub(60));
        *cached = Some((token.clone(), until));
        Ok(token)
    }
}
