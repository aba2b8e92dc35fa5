//! `storage.s3`: objects in an S3 bucket, on AWS or any S3-compatible server (MinIO, Ceph,
//! moto), signed with AWS Signature Version 4 (see [`crate::sigv4`]).
//!
//! With an `endpoint`, requests are path-style (`<endpoint>/<bucket>/<key>`), which
//! compatible servers expect; on AWS they are virtual-hosted
//! (`https://<bucket>.s3.<region>.amazonaws.com/<key>`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use schemars::JsonSchema;
use serde::Deserialize;
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType, StartContext,
    async_trait,
};

use crate::sigv4::{self, Credentials};
use crate::{ObjectInfo, ObjectStore};

/// Configuration of `storage.s3`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// The bucket's region.
    #[serde(default = "default_region")]
    pub region: String,
    /// An S3-compatible server, e.g. `http://127.0.0.1:9000`; AWS when omitted.
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
    /// Put before every key, e.g. `tenant-a/`, so apps can share a bucket.
    #[serde(default)]
    pub prefix: String,
    /// Create the bucket at start when it does not exist (otherwise a missing bucket fails the
    /// start).
    #[serde(default, rename = "createBucket")]
    pub create_bucket: bool,
    /// Time limit of one request.
    #[serde(default = "default_timeout", rename = "timeoutSeconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: u64,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_timeout() -> u64 {
    30
}

pub struct S3StorageType;

impl Described for S3StorageType {
    const NAME: &'static str = "storage.s3";
    const CATEGORY: Category = Category::Storage;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "An object store in an S3 bucket (AWS or any S3-compatible endpoint).";
    type Config = S3Config;
}

/// Bucket names as S3 accepts them (3-63 lowercase letters, digits, `.` and `-`).
fn valid_bucket(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && !name.starts_with(['.', '-'])
        && !name.ends_with(['.', '-'])
}

impl ModuleType for S3StorageType {
    fn check(config: &S3Config, _: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if !valid_bucket(&config.bucket) {
            issues.push(ConfigIssue::new(
                "/bucket",
                format!(
                    "`{}` is not a bucket name (3-63 lowercase letters, digits, `.`, `-`)",
                    config.bucket
                ),
            ));
        }
        if let Some(endpoint) = &config.endpoint {
            issues.extend(ConfigIssue::unless_http_address("/endpoint", endpoint));
        }
        if !config.prefix.is_empty() && crate::key::check_prefix(&config.prefix).is_err() {
            issues.push(ConfigIssue::new(
                "/prefix",
                "the prefix is a relative path such as `tenant-a/`",
            ));
        }
        issues
    }

    fn build(config: S3Config, ctx: &mut BuildContext<'_>) -> anyhow::Result<Arc<dyn Module>> {
        let credentials = Credentials::from_config_or_env(
            config.access_key_id.clone(),
            config.secret_access_key.clone(),
            config.session_token.clone(),
        )?;
        let base = match &config.endpoint {
            Some(endpoint) => format!("{}/{}", endpoint.trim_end_matches('/'), config.bucket),
            // A dotted bucket name breaks the wildcard certificate of virtual-hosted names.
            None if config.bucket.contains('.') => format!(
                "https://s3.{}.amazonaws.com/{}",
                config.region, config.bucket
            ),
            None => format!(
                "https://{}.s3.{}.amazonaws.com",
                config.bucket, config.region
            ),
        };
        let store = Arc::new(S3Store {
            name: ctx.name.to_string(),
            base: reqwest::Url::parse(&base)?,
            region: config.region,
            prefix: config.prefix,
            create_bucket: config.create_bucket,
            credentials,
            client: crate::client(Duration::from_secs(config.timeout_seconds))?,
        });
        ctx.provide::<dyn ObjectStore>(store.clone());
        Ok(store)
    }
}

pub struct S3Store {
    name: String,
    /// The bucket's address: `<endpoint>/<bucket>` or `https://<bucket>.s3.<region>…`.
    base: reqwest::Url,
    region: String,
    prefix: String,
    create_bucket: bool,
    credentials: Credentials,
    client: reqwest::Client,
}

impl S3Store {
    /// One signed request; `key` is the full object key (`None`: the bucket itself).
    async fn send(
        &self,
        method: reqwest::Method,
        key: Option<&str>,
        query: &[(String, String)],
        body: Bytes,
    ) -> anyhow::Result<reqwest::Response> {
        let mut path = self.base.path().trim_end_matches('/').to_string();
        if let Some(key) = key {
            path.push('/');
            path.push_str(&sigv4::uri_encode(key, true));
        }
        if path.is_empty() {
            path.push('/');
        }
        let host = sigv4::host(&self.base);
        let payload = sigv4::sha256_hex(&body);
        let headers = sigv4::sign(
            &self.credentials,
            &self.region,
            "s3",
            method.as_str(),
            &host,
            &path,
            query,
            &payload,
            chrono::Utc::now(),
        );
        let mut url = self.base.clone();
        url.set_path(&path);
        let encoded: Vec<String> = query
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    sigv4::uri_encode(k, false),
                    sigv4::uri_encode(v, false)
                )
            })
            .collect();
        url.set_query((!encoded.is_empty()).then(|| encoded.join("&")).as_deref());
        let mut request = self.client.request(method, url).body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("S3 store `{}`: {}", self.name, e.without_url()))
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// A failed answer as an error: the status and S3's error code, never the URL.
    async fn failure(&self, what: &str, response: reqwest::Response) -> anyhow::Error {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let code = xml_values(&text, "Code")
            .into_iter()
            .next()
            .unwrap_or_default();
        anyhow::anyhow!(
            "S3 store `{}`: {what} failed with {status} {code}",
            self.name
        )
    }
}

#[async_trait]
impl Module for S3Store {
    /// Checks the bucket is there (and reachable with these credentials), creating it when
    /// asked to.
    async fn start(&self, _: &StartContext) -> anyhow::Result<()> {
        let head = self
            .send(reqwest::Method::HEAD, None, &[], Bytes::new())
            .await?;
        match head.status() {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND if self.create_bucket => {
                let body = if self.region == "us-east-1" {
                    Bytes::new()
                } else {
                    Bytes::from(format!(
                        "<CreateBucketConfiguration><LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                        self.region
                    ))
                };
                let created = self.send(reqwest::Method::PUT, None, &[], body).await?;
                if created.status().is_success() {
                    tracing::info!(store = %self.name, "bucket created");
                    Ok(())
                } else {
                    Err(self.failure("creating the bucket", created).await)
                }
            }
            StatusCode::NOT_FOUND => Err(anyhow::anyhow!(
                "S3 store `{}`: the bucket does not exist (set `createBucket: true` to create it)",
                self.name
            )),
            status => Err(anyhow::anyhow!(
                "S3 store `{}`: the bucket answered {status} (check the credentials and region)",
                self.name
            )),
        }
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, body: Bytes) -> anyhow::Result<()> {
        let response = self
            .send(reqwest::Method::PUT, Some(&self.full_key(key)), &[], body)
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(self.failure("storing", response).await)
        }
    }

    async fn get(&self, key: &str, max_bytes: u64) -> anyhow::Result<Option<Bytes>> {
        let response = self
            .send(
                reqwest::Method::GET,
                Some(&self.full_key(key)),
                &[],
                Bytes::new(),
            )
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
        let mut token: Option<String> = None;
        while found.len() < limit {
            let mut query = vec![
                ("list-type".to_string(), "2".to_string()),
                (
                    "max-keys".to_string(),
                    (limit - found.len()).min(1000).to_string(),
                ),
                ("prefix".to_string(), self.full_key(prefix)),
            ];
            if let Some(token) = &token {
                query.push(("continuation-token".into(), token.clone()));
            }
            let response = self
                .send(reqwest::Method::GET, None, &query, Bytes::new())
                .await?;
            if !response.status().is_success() {
                return Err(self.failure("listing", response).await);
            }
            let text = response.text().await?;
            for contents in xml_values(&text, "Contents") {
                let key = xml_values(&contents, "Key")
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                let size = xml_values(&contents, "Size")
                    .into_iter()
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                if let Some(key) = key.strip_prefix(self.prefix.as_str()) {
                    found.push(ObjectInfo {
                        key: key.to_string(),
                        size,
                    });
                }
            }
            token = xml_values(&text, "NextContinuationToken")
                .into_iter()
                .next();
            if token.is_none()
                || xml_values(&text, "IsTruncated").first().map(String::as_str) != Some("true")
            {
                break;
            }
        }
        found.truncate(limit);
        Ok(found)
    }

    async fn delete(&self, key: &str) -> anyhow::Result<bool> {
        let full = self.full_key(key);
        // S3 answers 204 whether or not the object was there: ask first.
        let head = self
            .send(reqwest::Method::HEAD, Some(&full), &[], Bytes::new())
            .await?;
        match head.status() {
            StatusCode::NOT_FOUND => return Ok(false),
            s if s.is_success() => {}
            _ => return Err(self.failure("checking", head).await),
        }
        let response = self
            .send(reqwest::Method::DELETE, Some(&full), &[], Bytes::new())
            .await?;
        if response.status().is_success() {
            Ok(true)
        } else {
            Err(self.failure("deleting", response).await)
        }
    }
}

/// The text of every `<tag>…</tag>` in `xml` (S3's answers are flat enough for this), with
/// XML's five entities decoded.
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(
            after[..end]
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&"),
        );
        rest = &after[end + close.len()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_parse() {
        let xml = "<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>a&amp;b.txt</Key><Size>3</Size></Contents><Contents><Key>c</Key><Size>10</Size></Contents></ListBucketResult>";
        let contents = xml_values(xml, "Contents");
        assert_eq!(contents.len(), 2);
        assert_eq!(xml_values(&contents[0], "Key"), ["a&b.txt"]);
        assert_eq!(xml_values(&contents[1], "Size"), ["10"]);
    }

    #[test]
    fn bucket_names() {
        assert!(valid_bucket("my-bucket.2026"));
        assert!(!valid_bucket("My_Bucket"));
        assert!(!valid_bucket("ab"));
    }
}
