//! `httpclient.modular`: a named outbound HTTP client — base URL, default headers, timeout and
//! retries — that `step.http_call` uses with `client:`, so credentials and addresses live in
//! one place. With a client, a step's `url` is a path under the client's `baseURL`: a step can
//! never send the client's credentials to another host.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use wf_engine::wf_config::duration::{DURATION_PATTERN, parse_duration};
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType, ServiceKind,
};

pub const NAME: &str = "httpclient.modular";

/// Configuration of `httpclient.modular`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpClientConfig {
    /// Every step's `url` is appended to this, e.g. `https://api.crm.example/v1`.
    #[serde(rename = "baseURL")]
    pub base_url: String,
    /// Sent with every request (a step's own headers win); use `${ENV_VAR}` for credentials.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Longest time one request may take, e.g. `10s`.
    #[serde(default = "default_timeout")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub timeout: String,
    /// Attempts after the first for connection errors, timeouts, `429` and `5xx`. Only
    /// idempotent methods (GET, HEAD, PUT, DELETE, OPTIONS) are retried unless
    /// `retryNonIdempotent` is set.
    #[serde(default)]
    #[schemars(range(max = 10))]
    pub retries: u32,
    /// Wait before the first retry; it doubles per retry, with jitter.
    #[serde(default = "default_backoff", rename = "retryBackoff")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub retry_backoff: String,
    /// Retry POST and PATCH too (only when the API de-duplicates them).
    #[serde(default, rename = "retryNonIdempotent")]
    pub retry_non_idempotent: bool,
}

fn default_timeout() -> String {
    "30s".into()
}
fn default_backoff() -> String {
    "200ms".into()
}

pub struct HttpClientType;

impl Described for HttpClientType {
    const NAME: &'static str = NAME;
    const CATEGORY: Category = Category::Integration;
    const PLUGIN: &'static str = "modular-compat";
    const DESCRIPTION: &'static str =
        "A named outbound HTTP client (base URL, headers, timeout, retries) for `step.http_call`.";
    type Config = HttpClientConfig;
}

impl ModuleType for HttpClientType {
    fn check(config: &HttpClientConfig, _: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        match reqwest::Url::parse(&config.base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.query().is_none() => {}
            _ => issues.push(ConfigIssue::new(
                "/baseURL",
                format!(
                    "`{}` is not an http(s) base address without a query",
                    config.base_url
                ),
            )),
        }
        for (key, value) in [
            ("/timeout", &config.timeout),
            ("/retryBackoff", &config.retry_backoff),
        ] {
            if let Err(e) = parse_duration(value) {
                issues.push(ConfigIssue::new(key, e));
            }
        }
        issues.extend(wf_http::config_headers::check(&config.headers));
        issues
    }

    fn build(
        config: HttpClientConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        let timeout = parse_duration(&config.timeout).map_err(anyhow::Error::msg)?;
        let headers = wf_http::config_headers::to_map(&config.headers)?;
        let client = Arc::new(HttpClient {
            base_url: config.base_url.trim_end_matches('/').to_string(),
            headers,
            timeout,
            retries: config.retries,
            backoff: parse_duration(&config.retry_backoff).map_err(anyhow::Error::msg)?,
            retry_non_idempotent: config.retry_non_idempotent,
            client: crate::http_call::client(timeout)?,
        });
        ctx.provide::<HttpClient>(client.clone());
        Ok(client)
    }
}

/// A configured client, as steps use it.
pub struct HttpClient {
    pub base_url: String,
    pub headers: reqwest::header::HeaderMap,
    pub timeout: Duration,
    pub retries: u32,
    pub backoff: Duration,
    pub retry_non_idempotent: bool,
    pub client: reqwest::Client,
}

impl HttpClient {
    /// Whether a request with `method` may be sent again after a failure.
    pub fn retries_for(&self, method: &reqwest::Method) -> u32 {
        let idempotent = matches!(
            *method,
            reqwest::Method::GET
                | reqwest::Method::HEAD
                | reqwest::Method::PUT
                | reqwest::Method::DELETE
                | reqwest::Method::OPTIONS
        );
        if idempotent || self.retry_non_idempotent {
            self.retries
        } else {
            0
        }
    }
}

impl Module for HttpClient {}

impl ServiceKind for HttpClient {
    const LABEL: &'static str = "an `httpclient.modular`";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_idempotent_methods_are_retried_by_default() {
        let mut client = HttpClient {
            base_url: "http://x".into(),
            headers: Default::default(),
            timeout: Duration::from_secs(1),
            retries: 3,
            backoff: Duration::from_millis(1),
            retry_non_idempotent: false,
            client: crate::http_call::client(Duration::from_secs(1)).unwrap(),
        };
        assert_eq!(client.retries_for(&reqwest::Method::GET), 3);
        assert_eq!(client.retries_for(&reqwest::Method::PUT), 3);
        assert_eq!(client.retries_for(&reqwest::Method::POST), 0);
        client.retry_non_idempotent = true;
        assert_eq!(client.retries_for(&reqwest::Method::POST), 3);
    }
}
