//! `http.simple_proxy`: a handler that forwards each request to the backend whose prefix is the
//! longest match of the path, the path unchanged (the original's behaviour). Route requests to
//! it from an `http` workflow; a path no prefix matches gets `502`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use wf_engine::{BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType};

use crate::proxy::{self, ForwardRules};
use crate::{HttpHandler, Request, RouteService, json_response, route_fn};

/// Configuration of `http.simple_proxy`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SimpleProxyConfig {
    /// Path prefix → backend base address, e.g. `{"/api": "http://api:8080"}`; the longest
    /// matching prefix wins.
    #[schemars(length(min = 1))]
    pub targets: BTreeMap<String, String>,
    /// Seconds a backend may take to send its response headers (default 30); then `504`.
    #[serde(default)]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout: Option<u64>,
}

pub struct SimpleProxyType;

impl Described for SimpleProxyType {
    const NAME: &'static str = "http.simple_proxy";
    const CATEGORY: Category = Category::Http;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "Forwards requests to the backend of the longest matching path prefix.";
    type Config = SimpleProxyConfig;
}

impl ModuleType for SimpleProxyType {
    fn check(config: &SimpleProxyConfig, _: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if config.targets.is_empty() {
            issues.push(ConfigIssue::new("/targets", "`targets` must not be empty"));
        }
        for (prefix, url) in &config.targets {
            let at = format!(
                "/targets/{}",
                wf_engine::wf_config::yaml::escape_pointer_segment(prefix)
            );
            if !prefix.starts_with('/') {
                issues.push(ConfigIssue::new(
                    &at,
                    format!("`{prefix}` is not a path prefix (it must start with `/`)"),
                ));
            }
            if let Err(e) = proxy::check_backend(url) {
                issues.push(ConfigIssue::new(&at, e));
            }
        }
        issues
    }

    fn build(
        config: SimpleProxyConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        // Longest prefixes first, so the first match is the longest.
        let mut targets: Vec<(String, String)> = config.targets.into_iter().collect();
        targets.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        let handler = Arc::new(SimpleProxy {
            name: ctx.name.to_string(),
            targets,
            client: proxy::client()?,
            rules: ForwardRules {
                timeout: Duration::from_secs(config.timeout.unwrap_or(30)),
                ..ForwardRules::default()
            },
        });
        ctx.provide::<dyn HttpHandler>(handler.clone());
        Ok(handler)
    }
}

pub struct SimpleProxy {
    name: String,
    targets: Vec<(String, String)>,
    client: reqwest::Client,
    rules: ForwardRules,
}

impl Module for SimpleProxy {}

impl HttpHandler for SimpleProxy {
    fn service(self: Arc<Self>) -> RouteService {
        route_fn(move |req: Request| {
            let me = self.clone();
            async move {
                let path = req.uri().path();
                if let Some(refused) = proxy::refuse_path(path) {
                    return refused;
                }
                let Some((_, backend)) = me
                    .targets
                    .iter()
                    .find(|(prefix, _)| on_prefix(path, prefix))
                else {
                    return json_response(
                        StatusCode::BAD_GATEWAY,
                        &json!({"error": "no backend configured for path"}),
                    );
                };
                let url = proxy::target_url(backend, path, req.uri().query());
                match proxy::forward(&me.client, &me.rules, &me.name, url, req).await {
                    Ok(response) | Err(response) => response,
                }
            }
        })
    }
}

/// Whether `path` is `prefix` or below it (`/api` covers `/api` and `/api/x`, not `/apiary`).
fn on_prefix(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}
