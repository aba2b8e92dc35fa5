//! Headers a module sends with every outbound request (`headers:` of `httpclient.modular`,
//! `openapi.consumer`, `observability.otel`): checked when the config is validated, turned into
//! a header map when the module is built.

use std::collections::BTreeMap;

use wf_engine::ConfigIssue;

/// Names that cannot be sent as headers, as issues at `/headers/<name>`.
pub fn check(headers: &BTreeMap<String, String>) -> Vec<ConfigIssue> {
    headers
        .keys()
        .filter(|name| reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err())
        .map(|name| {
            ConfigIssue::new(
                format!("/headers/{name}"),
                format!("`{name}` is not a header name"),
            )
        })
        .collect()
}

/// The headers as a map. The error names the header, never its value (often a credential).
pub fn to_map(headers: &BTreeMap<String, String>) -> anyhow::Result<reqwest::header::HeaderMap> {
    let mut map = reqwest::header::HeaderMap::new();
    for (name, value) in headers {
        // `append`: two spellings of one name are both sent, as written.
        map.append(
            reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| anyhow::anyhow!("`{name}` is not a header name"))?,
            reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| anyhow::anyhow!("header `{name}` has a value that cannot be sent"))?,
        );
    }
    Ok(map)
}
