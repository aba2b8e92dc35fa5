//! Forwarding one request to a backend, shared by `reverseproxy` / `http.proxy` and
//! `http.simple_proxy`: the body streams both ways, hop-by-hop headers are dropped,
//! `X-Forwarded-*` are set, redirects are passed back rather than followed, and a backend that
//! cannot be reached or is too slow is `502` / `504` to the client (details in the log).

use std::time::Duration;

use axum::body::Body;
use futures::TryStreamExt as _;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde_json::json;

use crate::{ClientAddr, Request, Response, json_response};

/// Headers that describe one connection, not the message: never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers about the body itself, forwarded even with an allow-list (`forward_headers`).
const BODY_HEADERS: &[&str] = &[
    "content-type",
    "content-encoding",
    "accept",
    "accept-encoding",
];

/// How requests are forwarded.
#[derive(Clone, Debug)]
pub struct ForwardRules {
    /// When set, only these request headers (plus [`BODY_HEADERS`]) reach the backend.
    pub allow_headers: Option<Vec<HeaderName>>,
    /// Keep the `X-Forwarded-For` a client sent (append to it) instead of replacing it: only
    /// behind a proxy that sets it, or clients could claim any address.
    pub trust_forwarded: bool,
    /// Time limit for the backend's response headers.
    pub timeout: Duration,
    /// Headers set on the forwarded request.
    pub set_headers: Vec<(HeaderName, HeaderValue)>,
    /// Headers removed from the forwarded request.
    pub remove_headers: Vec<HeaderName>,
    /// Headers set on the response.
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
}

impl Default for ForwardRules {
    fn default() -> Self {
        ForwardRules {
            allow_headers: None,
            trust_forwarded: false,
            timeout: Duration::from_secs(30),
            set_headers: Vec::new(),
            remove_headers: Vec::new(),
            response_headers: Vec::new(),
        }
    }
}

/// The client proxies share: pooled connections, no redirects followed (the client gets them),
/// no overall timeout (bodies may stream for long; the header wait is bounded per request).
pub fn client() -> anyhow::Result<reqwest::Client> {
    // reqwest is built without a default TLS backend; ring is ours. Installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(90))
        .build()?)
}

/// Whether `url` is a backend address proxies can use: absolute `http` or `https`, with a host,
/// without a query or fragment.
pub fn check_backend(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|_| format!("`{url}` is not an absolute URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("`{url}` is not an `http://` or `https://` address"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!(
            "`{url}` has a query or fragment; a backend is a base address"
        ));
    }
    Ok(())
}

/// Headers a client could use to claim another address or origin; replaced (or dropped)
/// unless the proxy in front is trusted.
const CLIENT_ADDRESS_HEADERS: &[&str] = &["forwarded", "x-real-ip", "true-client-ip"];

/// The refusal of a request path with a `.` or `..` segment, raw or percent-encoded: the backend's URL
/// parser would resolve it and reach a path outside the routed prefix.
pub fn refuse_path(path: &str) -> Option<Response> {
    let climbs = path.split('/').any(|segment| {
        let lower = segment.to_ascii_lowercase();
        let decoded = lower.replace("%2e", ".");
        decoded == "." || decoded == ".." || lower.contains("%2f") || lower.contains("%5c")
    });
    climbs.then(|| {
        refuse(
            StatusCode::BAD_REQUEST,
            "the path has a `.` or `..` segment or an encoded separator",
        )
    })
}

/// Where a request goes: `base` joined with `path` (still percent-encoded, as received) and
/// the request's query.
pub fn target_url(base: &str, path: &str, query: Option<&str>) -> String {
    let mut url = base.trim_end_matches('/').to_string();
    if !path.starts_with('/') {
        url.push('/');
    }
    url.push_str(path);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

fn is_hop_by_hop(name: &HeaderName, connection: &[String]) -> bool {
    HOP_BY_HOP.contains(&name.as_str()) || connection.iter().any(|c| c == name.as_str())
}

/// Header names listed in `Connection`, which are hop-by-hop too.
fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

fn refuse(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({ "error": message }))
}

/// Forwards `req` to `url`. `label` names the proxy in logs.
pub async fn forward(
    client: &reqwest::Client,
    rules: &ForwardRules,
    label: &str,
    url: String,
    req: Request,
) -> Result<Response, Response> {
    let (parts, body) = req.into_parts();
    let connection = connection_tokens(&parts.headers);
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if is_hop_by_hop(name, &connection) || name == header::HOST {
            continue;
        }
        let allowed = rules
            .allow_headers
            .as_ref()
            .is_none_or(|allow| allow.contains(name) || BODY_HEADERS.contains(&name.as_str()))
            || name == header::CONTENT_LENGTH;
        let forwarding = name.as_str().starts_with("x-forwarded-")
            || CLIENT_ADDRESS_HEADERS.contains(&name.as_str());
        if allowed && (!forwarding || rules.trust_forwarded) && name != "x-forwarded-for" {
            headers.append(name.clone(), value.clone());
        }
    }
    // X-Forwarded-For: the peer, after what an upstream proxy said when that proxy is trusted.
    if let Some(ClientAddr(peer)) = parts.extensions.get::<ClientAddr>() {
        // Every `X-Forwarded-For` line, in order, when the upstream proxy is trusted.
        let prior: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter(|_| rules.trust_forwarded)
            .collect();
        let value = if prior.is_empty() {
            peer.ip().to_string()
        } else {
            format!("{}, {}", prior.join(", "), peer.ip())
        };
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert("x-forwarded-for", value);
        }
    }
    // A trusted proxy's own X-Forwarded-Host/-Proto (kept above) say what the client used.
    if !headers.contains_key("x-forwarded-host")
        && let Some(host) = parts.headers.get(header::HOST)
    {
        headers.insert("x-forwarded-host", host.clone());
    }
    if !headers.contains_key("x-forwarded-proto") {
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
    for name in &rules.remove_headers {
        headers.remove(name);
    }
    for (name, value) in &rules.set_headers {
        headers.insert(name.clone(), value.clone());
    }

    let method = parts.method.clone();
    let mut request = client.request(method.clone(), &url).headers(headers);
    // A request without a body goes without one (not as an empty chunked stream, which some
    // servers refuse for GET).
    if axum::body::HttpBody::size_hint(&body).exact() != Some(0) {
        request = request.body(reqwest::Body::wrap_stream(body.into_data_stream()));
    }
    let response = match tokio::time::timeout(rules.timeout, request.send()).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) if crate::exchange::over_limit(&e) => {
            // The body was cut off by `http.middleware.bodylimit`: the client's mistake.
            return Err(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is too large",
            ));
        }
        Ok(Err(e)) => {
            tracing::warn!(proxy = %label, %method, url = %redact(&url), error = %e, "backend unreachable");
            return Err(refuse(StatusCode::BAD_GATEWAY, "bad gateway"));
        }
        Err(_) => {
            tracing::warn!(proxy = %label, %method, url = %redact(&url), timeout = ?rules.timeout, "backend timed out");
            return Err(refuse(StatusCode::GATEWAY_TIMEOUT, "gateway timeout"));
        }
    };

    let status = response.status();
    let connection = connection_tokens(response.headers());
    let mut out = http::Response::builder().status(status);
    if let Some(out_headers) = out.headers_mut() {
        for (name, value) in response.headers() {
            if !is_hop_by_hop(name, &connection) {
                out_headers.append(name.clone(), value.clone());
            }
        }
        for (name, value) in &rules.response_headers {
            out_headers.insert(name.clone(), value.clone());
        }
    }
    let stream = response.bytes_stream().map_err(std::io::Error::other);
    out.body(Body::from_stream(stream)).map_err(|e| {
        tracing::error!(proxy = %label, error = %e, "could not build the proxied response");
        refuse(StatusCode::BAD_GATEWAY, "bad gateway")
    })
}

/// A URL for logs: without user info, which may be a credential.
fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        Err(_) => "<invalid url>".into(),
    }
}

/// Header pairs from config, or the first one that is not a valid header.
pub fn header_pairs<'a>(
    pairs: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    pairs
        .into_iter()
        .map(|(k, v)| {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("`{k}` is not a header name"))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| format!("the value of `{k}` is not a valid header value"))?;
            Ok((name, value))
        })
        .collect()
}

/// Header names from config, or the first one that is not valid.
pub fn header_names<'a>(
    names: impl IntoIterator<Item = &'a String>,
) -> Result<Vec<HeaderName>, String> {
    names
        .into_iter()
        .map(|k| {
            HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("`{k}` is not a header name"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_keep_the_encoded_path_and_query() {
        assert_eq!(
            target_url("http://b:8080/v1/", "/users/a%2Fb", Some("q=1")),
            "http://b:8080/v1/users/a%2Fb?q=1"
        );
        assert_eq!(target_url("http://b", "", None), "http://b/");
    }

    #[test]
    fn backends_are_http_base_addresses() {
        assert!(check_backend("http://users:8080").is_ok());
        assert!(check_backend("https://api.example.com/v2").is_ok());
        assert!(check_backend("ftp://x").is_err());
        assert!(check_backend("users:8080").is_err());
        assert!(check_backend("http://x/?a=1").is_err());
    }

    #[test]
    fn connection_names_more_hop_by_hop_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, X-Secret"),
        );
        let tokens = connection_tokens(&headers);
        assert!(is_hop_by_hop(&HeaderName::from_static("x-secret"), &tokens));
        assert!(is_hop_by_hop(&header::TRANSFER_ENCODING, &tokens));
        assert!(!is_hop_by_hop(&header::AUTHORIZATION, &tokens));
    }
}
