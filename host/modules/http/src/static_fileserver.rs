//! `static.fileserver`: files under `root` at `GET <prefix>{path...}`, with single-page-app
//! fallback, cache headers, ETag and Last-Modified revalidation, byte ranges, and no way out
//! of `root` (`..` is `403`; symbolic links that lead outside and hidden files are `404`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use schemars::JsonSchema;
use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType, StartContext,
    async_trait,
};

use crate::endpoint::{add_guarded_endpoint, check_routing, started_router};
use crate::router::MatchedRoute;
use crate::{Request, Response, route_fn, text_response};

/// Configuration of `static.fileserver`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StaticFileServerConfig {
    /// The directory served, relative to this config file.
    pub root: String,
    /// The path the files are served under, e.g. `/` or `/assets`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Answer paths that are not files with the root's `index.html` (for single-page apps that
    /// route in the browser); otherwise `404`. Default `true`.
    #[serde(default, rename = "spaFallback")]
    pub spa_fallback: Option<bool>,
    /// `spaFallback` under the name some of the original's examples use.
    #[serde(default)]
    pub spa: Option<bool>,
    /// `Cache-Control: public, max-age=<seconds>` for files other than HTML (default 3600);
    /// HTML is `no-cache` (revalidated each time), so a new release is picked up at once.
    #[serde(default, rename = "cacheMaxAge")]
    pub cache_max_age: Option<u64>,
    /// `cacheMaxAge` under the name some of the original's examples use.
    #[serde(default, rename = "cache_max_age")]
    pub cache_max_age_seconds: Option<u64>,
    /// Also send `X-Frame-Options: DENY` and `Referrer-Policy: strict-origin-when-cross-origin`
    /// (`X-Content-Type-Options: nosniff` is always sent).
    #[serde(default)]
    pub security_headers: bool,
    /// Serve files and directories whose name starts with `.` (`.env`, `.git`); off by default.
    #[serde(default, rename = "serveHidden")]
    pub serve_hidden: bool,
    /// Middlewares in front of this module's routes (e.g. an `http.middleware.auth`),
    /// outermost first.
    #[serde(default)]
    pub middlewares: Vec<String>,
    /// The `http.router` to serve on; optional when the app has one.
    #[serde(default)]
    pub router: Option<String>,
}

fn default_prefix() -> String {
    "/".into()
}

pub struct StaticFileServerType;

impl Described for StaticFileServerType {
    const NAME: &'static str = "static.fileserver";
    const CATEGORY: Category = Category::Http;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "Serves a directory: SPA fallback, cache headers, ETag, byte ranges, confined to its root.";
    type Config = StaticFileServerConfig;
}

impl ModuleType for StaticFileServerType {
    fn check(config: &StaticFileServerConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if config.root.trim().is_empty() {
            issues.push(ConfigIssue::new("/root", "`root` must name a directory"));
        }
        if !config.prefix.starts_with('/') || config.prefix.contains(['{', '}', '*', ':']) {
            issues.push(ConfigIssue::new(
                "/prefix",
                format!(
                    "`{}` is not a path prefix (a literal path starting with `/`)",
                    config.prefix
                ),
            ));
        }
        issues.extend(check_routing(
            config.router.as_deref(),
            &config.middlewares,
            ctx,
        ));
        issues
    }

    // No `references`: the routes are added at start (see `started_router`), so servers may
    // depend on this module without a cycle through the router.

    fn build(
        config: StaticFileServerConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        let root = ctx.base_dir.join(&config.root);
        let prefix = config.prefix.trim_end_matches('/').to_string();
        let server = Arc::new(FileServer {
            root,
            spa_fallback: config.spa_fallback.or(config.spa).unwrap_or(true),
            cache_max_age: config
                .cache_max_age
                .or(config.cache_max_age_seconds)
                .unwrap_or(3600),
            security_headers: config.security_headers,
            serve_hidden: config.serve_hidden,
        });
        // A pattern ending in `/` covers everything below it; `<prefix>` itself too.
        let patterns = if prefix.is_empty() {
            vec!["/".to_string()]
        } else {
            vec![prefix.clone(), format!("{prefix}/")]
        };
        Ok(Arc::new(StaticFiles {
            name: ctx.name.to_string(),
            router: config.router,
            middlewares: config.middlewares,
            server,
            patterns,
        }))
    }
}

struct StaticFiles {
    name: String,
    router: Option<String>,
    middlewares: Vec<String>,
    server: Arc<FileServer>,
    patterns: Vec<String>,
}

#[async_trait]
impl Module for StaticFiles {
    async fn start(&self, ctx: &StartContext) -> anyhow::Result<()> {
        let router = started_router(self.router.as_deref(), ctx)?;
        for pattern in &self.patterns {
            let server = self.server.clone();
            let service = route_fn(move |req: Request| {
                let server = server.clone();
                async move { server.serve(req).await }
            });
            add_guarded_endpoint(
                &router,
                &ctx.app,
                &self.name,
                Method::GET,
                pattern,
                service,
                &self.middlewares,
            )?;
        }
        Ok(())
    }
}

struct FileServer {
    root: PathBuf,
    spa_fallback: bool,
    cache_max_age: u64,
    serve_hidden: bool,
    security_headers: bool,
}

/// Why a path is not served.
enum Refusal {
    /// `..`, a backslash or a NUL: an attempt to leave the root.
    Forbidden,
    NotFound,
}

impl FileServer {
    async fn serve(&self, req: Request) -> Response {
        let path = req.uri().path();
        // Below the matched route, which carries our prefix and the router's.
        let relative = match req.extensions().get::<MatchedRoute>() {
            Some(route) => route.rest_of(path),
            None => path,
        };
        let file = match self.resolve(relative).await {
            Ok(file) => Some(file),
            Err(Refusal::Forbidden) => {
                return text_response(StatusCode::FORBIDDEN, "403 forbidden");
            }
            Err(Refusal::NotFound) => None,
        };
        let file = match file {
            Some(file) => file,
            None if self.spa_fallback => match self.resolve("/index.html").await {
                Ok(index) => index,
                Err(_) => return text_response(StatusCode::NOT_FOUND, "404 page not found"),
            },
            None => return text_response(StatusCode::NOT_FOUND, "404 page not found"),
        };
        match self.respond(&file, req.method(), req.headers()).await {
            Ok(response) => response,
            Err(e) => {
                tracing::error!(file = %file.display(), error = %e, "static file could not be read");
                text_response(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }

    /// The file a request path names, confined to the root.
    async fn resolve(&self, relative: &str) -> Result<PathBuf, Refusal> {
        let decoded = percent_decode(relative).ok_or(Refusal::NotFound)?;
        let mut path = self.root.clone();
        for segment in decoded.split('/') {
            match segment {
                "" | "." => {}
                ".." => return Err(Refusal::Forbidden),
                s if s.contains(['\\', '\0']) => return Err(Refusal::Forbidden),
                s if s.starts_with('.') && !self.serve_hidden => return Err(Refusal::NotFound),
                s => path.push(s),
            }
        }
        let mut candidate = path;
        if tokio::fs::metadata(&candidate)
            .await
            .map_err(|_| Refusal::NotFound)?
            .is_dir()
        {
            candidate.push("index.html");
        }
        // Symbolic links may point anywhere: the real path must still be under the real root.
        let real = tokio::fs::canonicalize(&candidate)
            .await
            .map_err(|_| Refusal::NotFound)?;
        let real_root = tokio::fs::canonicalize(&self.root)
            .await
            .map_err(|_| Refusal::NotFound)?;
        let metadata = tokio::fs::metadata(&real)
            .await
            .map_err(|_| Refusal::NotFound)?;
        if !metadata.is_file() {
            return Err(Refusal::NotFound);
        }
        // Judge the file reached, not the path asked for: a link inside the root may lead to a
        // hidden file (`page -> .env`) or out of the root.
        let Ok(inside) = real.strip_prefix(&real_root) else {
            return Err(Refusal::NotFound);
        };
        let hidden = inside
            .components()
            .any(|c| c.as_os_str().to_str().is_none_or(|s| s.starts_with('.')));
        if hidden && !self.serve_hidden {
            return Err(Refusal::NotFound);
        }
        Ok(real)
    }

    async fn respond(
        &self,
        path: &Path,
        method: &Method,
        request: &HeaderMap,
    ) -> std::io::Result<Response> {
        let metadata = tokio::fs::metadata(path).await?;
        let len = metadata.len();
        let modified = metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let nanos = modified
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let etag = format!("W/\"{len:x}-{nanos:x}\"");
        let last_modified = httpdate::fmt_http_date(modified);
        let html = path.extension().is_some_and(|e| e == "html" || e == "htm");

        let mut headers = HeaderMap::new();
        let mut set = |name: header::HeaderName, value: &str| {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(name, value);
            }
        };
        set(header::CONTENT_TYPE, content_type(path));
        set(header::ETAG, &etag);
        set(header::LAST_MODIFIED, &last_modified);
        set(header::ACCEPT_RANGES, "bytes");
        set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
        if self.security_headers {
            set(header::X_FRAME_OPTIONS, "DENY");
            set(header::REFERRER_POLICY, "strict-origin-when-cross-origin");
        }
        let cache = if html {
            "no-cache".to_string()
        } else {
            format!("public, max-age={}", self.cache_max_age)
        };
        set(header::CACHE_CONTROL, &cache);

        if not_modified(request, &etag, modified) {
            return Ok(build(StatusCode::NOT_MODIFIED, headers, Body::empty()));
        }
        // A range applies only while the client's copy is current (`If-Range`).
        let if_range_ok = request
            .get(header::IF_RANGE)
            .and_then(|v| v.to_str().ok())
            // Our ETags are weak, which If-Range may not use (RFC 9110 §13.1.5): only the date.
            .is_none_or(|v| v == last_modified);
        let range = match request.get(header::RANGE).and_then(|v| v.to_str().ok()) {
            Some(spec) if if_range_ok => match parse_range(spec, len) {
                Ok(range) => range,
                Err(()) => {
                    headers.insert(
                        header::CONTENT_RANGE,
                        HeaderValue::from_str(&format!("bytes */{len}"))
                            .unwrap_or(HeaderValue::from_static("bytes */0")),
                    );
                    return Ok(build(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        headers,
                        Body::empty(),
                    ));
                }
            },
            _ => None,
        };
        let (status, start, count) = match range {
            Some((start, end)) => {
                if let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
                    headers.insert(header::CONTENT_RANGE, value);
                }
                (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
            }
            None => (StatusCode::OK, 0, len),
        };
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
        if method == Method::HEAD {
            return Ok(build(status, headers, Body::empty()));
        }
        let mut file = tokio::fs::File::open(path).await?;
        if start > 0 {
            file.seek(std::io::SeekFrom::Start(start)).await?;
        }
        let stream = tokio_util::io::ReaderStream::new(file.take(count));
        Ok(build(status, headers, Body::from_stream(stream)))
    }
}

fn build(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut response = http::Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// `If-None-Match` (when sent, it decides), else `If-Modified-Since`.
fn not_modified(request: &HeaderMap, etag: &str, modified: SystemTime) -> bool {
    if let Some(tags) = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        // Weak comparison, as RFC 9110 asks for `If-None-Match`.
        let bare = etag.trim_start_matches("W/");
        return tags
            .split(',')
            .map(str::trim)
            .any(|t| t == "*" || t.trim_start_matches("W/") == bare);
    }
    request
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .is_some_and(|since| {
            // HTTP dates have whole seconds.
            let modified_secs = modified
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let since_secs = since
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            modified_secs <= since_secs
        })
}

/// The one byte range a `Range` header asks for. `Ok(None)`: nothing to honour — no `bytes=`,
/// several ranges, or invalid syntax, which RFC 9110 (§14.2) says to ignore, serving the whole
/// file. `Err(())`: a valid range the file cannot satisfy (416).
fn parse_range(spec: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(ranges) = spec.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if ranges.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = ranges.trim().split_once('-') else {
        return Ok(None);
    };
    let number = |text: &str| text.parse::<u64>().ok();
    let (start, end) = match (first.trim(), last.trim()) {
        ("", suffix) => {
            let Some(n) = number(suffix) else {
                return Ok(None);
            };
            if n == 0 || len == 0 {
                return Err(());
            }
            (len.saturating_sub(n), len - 1)
        }
        (start, "") => {
            let Some(start) = number(start) else {
                return Ok(None);
            };
            (start, len.saturating_sub(1))
        }
        (start, end) => match (number(start), number(end)) {
            (Some(start), Some(end)) if start <= end => (start, end.min(len.saturating_sub(1))),
            _ => return Ok(None),
        },
    };
    if start >= len {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// `%xx` decoded; `None` for invalid escapes or text that is not UTF-8.
fn percent_decode(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = path.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "xml" => "application/xml",
        "yaml" | "yml" => "application/yaml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]
        // Fuzzing the request-parsing helpers (#16): never a panic, and a range is always
        // inside the file.
        #[test]
        fn ranges_stay_inside_the_file(spec in "(bytes=)?([0-9]{0,20}|-|,|\\PC){0,8}", len in 0u64..10_000) {
            if let Ok(Some((start, end))) = parse_range(&spec, len) {
                prop_assert!(start <= end && end < len, "{spec} {len}: {start}-{end}");
            }
        }

        #[test]
        fn request_paths_decode_without_panicking(path in "(%[0-9a-fA-F]{0,2}|/|\\.|\\PC){0,32}") {
            if let Some(decoded) = percent_decode(&path) {
                prop_assert!(decoded.len() <= path.len());
            }
        }
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=50-500", 100), Ok(Some((50, 99))));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        // Invalid syntax is ignored (the whole file, 200), not refused.
        assert_eq!(parse_range("bytes=9-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=x-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=5", 100), Ok(None));
        assert_eq!(parse_range("bytes=-x", 100), Ok(None));
        assert_eq!(parse_range("bytes=-0", 100), Err(()));
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("/a%20b").as_deref(), Some("/a b"));
        assert_eq!(percent_decode("/%2e%2e/x").as_deref(), Some("/../x"));
        assert_eq!(percent_decode("/%zz"), None);
        assert_eq!(percent_decode("/%ff"), None);
    }
}
