//! `storage.gcs`: objects in a Google Cloud Storage bucket over its JSON API, at Google or any
//! server speaking it (an emulator, a proxy) through `endpoint`.
//!
//! Authentication is a service-account key file (`credentialsFile`, see [`crate::gcs_auth`]),
//! or an OAuth2 access token (`token`, e.g. `${GCS_ACCESS_TOKEN}` from `gcloud auth
//! print-access-token` or a workload-identity sidecar); without either, requests are anonymous
//! (public buckets, emulators).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType, StartContext,
    async_trait,
};

use crate::sigv4::uri_encode;
use crate::{ObjectInfo, ObjectStore};

/// Configuration of `storage.gcs`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GcsConfig {
    /// The bucket.
    pub bucket: String,
    /// The project, needed only to create the bucket (`createBucket`).
    #[serde(default)]
    pub project: Option<String>,
    /// The JSON API's address; Google's when omitted.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// An OAuth2 access token (use `${ENV_VAR}`); requests are anonymous without one.
    #[serde(default)]
    pub token: Option<String>,
    /// A service-account key file (JSON, relative to this config file): access tokens are
    /// obtained with it and renewed before they expire. Instead of `token`.
    #[serde(default, rename = "credentialsFile")]
    pub credentials_file: Option<String>,
    /// Put before every key, e.g. `tenant-a/`, so apps can share a bucket.
    #[serde(default)]
    pub prefix: String,
    /// Create the bucket at start when it does not exist (needs `project`).
    #[serde(default, rename = "createBucket")]
    pub create_bucket: bool,
    /// Time limit of one request, in seconds.
    #[serde(default = "default_timeout", rename = "timeoutSeconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: u64,
}

fn default_endpoint() -> String {
    "https://storage.googleapis.com".into()
}
fn default_timeout() -> u64 {
    30
}

pub struct GcsStorageType;

impl Described for GcsStorageType {
    const NAME: &'static str = "storage.gcs";
    const CATEGORY: Category = Category::Storage;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "An object store in a Google Cloud Storage bucket (JSON API, configurable endpoint).";
    type Config = GcsConfig;
}

impl ModuleType for GcsStorageType {
    fn check(config: &GcsConfig, _: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        let valid = (3..=222).contains(&config.bucket.len())
            && config.bucket.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
            });
        if !valid {
            issues.push(ConfigIssue::new(
                "/bucket",
                format!(
                    "`{}` is not a bucket name (lowercase letters, digits, `.`, `-`, `_`)",
                    config.bucket
                ),
            ));
        }
        issues.extend(ConfigIssue::unless_http_address(
            "/endpoint",
            &config.endpoint,
        ));
        if config.credentials_file.is_some() && config.token.is_some() {
            issues.push(ConfigIssue::new(
                "/credentialsFile",
                "give `credentialsFile` or `token`, not both",
            ));
        }
        if config.create_bucket && config.project.is_none() {
            issues.push(ConfigIssue::new(
                "/project",
                "`createBucket` needs the `project` to create it in",
            ));
        }
        if !config.prefix.is_empty() && crate::key::check_prefix(&config.prefix).is_err() {
            issues.push(ConfigIssue::new(
                "/prefix",
                "the prefix is a relative path such as `tenant-a/`",
            ));
        }
        issues
    }

    fn build(config: GcsConfig, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Module>> {
        let store = Arc::new(GcsStore {
            name: ctx.name.to_string(),
            endpoint: config.endpoint.trim_end_matches('/').to_string(),
            bucket: config.bucket,
            project: config.project,
            auth: match (
                &config.credentials_file,
                config.token.filter(|t| !t.is_empty()),
            ) {
                (Some(file), _) => Auth::ServiceAccount(
                    crate::gcs_auth::ServiceAccount::from_file(&ctx.base_dir.join(file))?,
                ),
                (None, Some(token)) => Auth::Token(token),
                (None, None) => Auth::Anonymous,
            },
            prefix: config.prefix,
            create_bucket: config.create_bucket,
            client: crate::client(Duration::from_secs(config.timeout_seconds))?,
        });
        ctx.provide::<dyn ObjectStore>(store.clone());
        Ok(store)
    }
}

pub struct GcsStore {
    name: String,
    endpoint: String,
    bucket: String,
    project: Option<String>,
    auth: Auth,
    prefix: String,
    create_bucket: bool,
    client: reqwest::Client,
}

/// How requests are authorised.
enum Auth {
    Anonymous,
    Token(String),
    ServiceAccount(crate::gcs_auth::ServiceAccount),
}

impl GcsStore {
    async fn request(
        &self,
        method: reqwest::Method,
        url: String,
    ) -> anyhow::Result<reqwest::RequestBuilder> {
        let request = self.client.request(method, url);
        Ok(match &self.auth {
            Auth::Anonymous => request,
            Auth::Token(token) => request.bearer_auth(token),
            Auth::ServiceAccount(account) => {
                let token = account
                    .token(&self.client)
                    .await
                    .map_err(|e| anyhow::anyhow!("GCS store `{}`: {e:#}", self.name))?;
                request.bearer_auth(token)
            }
        })
    }

    /// `…/b/<bucket>/o/<key, fully encoded>`.
    fn object_url(&self, key: &str) -> String {
        format!(
            "{}/storage/v1/b/{}/o/{}",
            self.endpoint,
            uri_encode(&self.bucket, false),
            uri_encode(&format!("{}{key}", self.prefix), false)
        )
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        request
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("GCS store `{}`: {}", self.name, e.without_url()))
    }

    /// A failed answer as an error: the status and GCS's message, never the token.
    async fn failure(&self, what: &str, response: reqwest::Response) -> anyhow::Error {
        let status = response.status();
        let detail = response
            .json::<Value>()
            .await
            .ok()
            .and_then(|v| {
                v.pointer("/error/message")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_default();
        anyhow::anyhow!(
            "GCS store `{}`: {what} failed with {status} {detail}",
            self.name
        )
    }
}

#[async_trait]
impl Module for GcsStore {
    async fn start(&self, _: &StartContext) -> anyhow::Result<()> {
        let url = format!(
            "{}/storage/v1/b/{}",
            self.endpoint,
            uri_encode(&self.bucket, false)
        );
        let response = self
            .send(self.request(reqwest::Method::GET, url).await?)
            .await?;
        match response.status() {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND if self.create_bucket => {
                let url = format!(
                    "{}/storage/v1/b?project={}",
                    self.endpoint,
                    uri_encode(self.project.as_deref().unwrap_or_default(), false)
                );
                let created = self
                    .send(
                        self.request(reqwest::Method::POST, url)
                            .await?
                            .json(&json!({"name": self.bucket})),
                    )
                    .await?;
                if created.status().is_success() {
                    tracing::info!(store = %self.name, "bucket created");
                    Ok(())
                } else {
                    Err(self.failure("creating the bucket", created).await)
                }
            }
            StatusCode::NOT_FOUND => Err(anyhow::anyhow!(
                "GCS store `{}`: the bucket does not exist (set `createBucket: true` and `project` to create it)",
                self.name
            )),
            _ => Err(self.failure("checking the bucket", response).await),
        }
    }
}

#[async_trait]
impl ObjectStore for GcsStore {
    async fn put(&self, key: &str, body: Bytes) -> anyhow::Result<()> {
        let url = format!(
            "{}/upload/storage/v1/b/{}/o?uploadType=media&name={}",
            self.endpoint,
            uri_encode(&self.bucket, false),
            uri_encode(&format!("{}{key}", self.prefix), false)
        );
        let response = self
            .send(
                self.request(reqwest::Method::POST, url)
                    .await?
                    .header("content-type", "application/octet-stream")
                    .body(body),
            )
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(self.failure("storing", response).await)
        }
    }

    async fn get(&self, key: &str, max_bytes: u64) -> anyhow::Result<Option<Bytes>> {
        let url = format!("{}?alt=media", self.object_url(key));
        let response = self
            .send(self.request(reqwest::Method::GET, url).await?)
            .await?;
        match response.status() {
            s if s.is_success() => crate::read_bounded(response, key, max_bytes)
                .await
                .map(Some),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.failure("reading", response).await),
        }
    }

    async fn list(&self, prefix: &str, limit: usize) -> anyhow::Result<Vec<ObjectInfo>> {
        let mut found = Vec::new();
        let mut page: Option<String> = None;
        while found.len() < limit {
            let mut url = format!(
                "{}/storage/v1/b/{}/o?prefix={}&maxResults={}",
                self.endpoint,
                uri_encode(&self.bucket, false),
                uri_encode(&format!("{}{prefix}", self.prefix), false),
                (limit - found.len()).min(1000)
            );
            if let Some(token) = &page {
                url.push_str(&format!("&pageToken={}", uri_encode(token, false)));
            }
            let response = self
                .send(self.request(reqwest::Method::GET, url).await?)
                .await?;
            if !response.status().is_success() {
                return Err(self.failure("listing", response).await);
            }
            let listing: Value = response.json().await?;
            for item in listing["items"].as_array().into_iter().flatten() {
                let Some(name) = item["name"].as_str() else {
                    continue;
                };
                let size = item["size"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .or_else(|| item["size"].as_u64())
                    .unwrap_or(0);
                if let Some(key) = name.strip_prefix(self.prefix.as_str()) {
                    found.push(ObjectInfo {
                        key: key.to_string(),
                        size,
                    });
                }
            }
            page = listing["nextPageToken"].as_str().map(str::to_string);
            if page.is_none() {
                break;
            }
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        found.truncate(limit);
        Ok(found)
    }

    async fn delete(&self, key: &str) -> anyhow::Result<bool> {
        let response = self
            .send(
                self.request(reqwest::Method::DELETE, self.object_url(key))
                    .await?,
            )
            .await?;
        match response.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.failure("deleting", response).await),
        }
    }
}
