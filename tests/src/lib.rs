//! Helpers shared by the end-to-end suites.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use wf_config::load_str;
use wf_engine::{App, Registry, RunningApp, build, validate};
use wf_http::HttpServer;

/// The original's example configurations, beside the repository (`../shared/seed/examples`), or
/// where `WF_SEED_EXAMPLES` points.
pub fn seed_examples() -> PathBuf {
    if let Ok(dir) = std::env::var("WF_SEED_EXAMPLES") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/seed/examples")
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Variables the original's examples reference, with test values.
pub fn example_vars() -> HashMap<String, String> {
    [
        ("JWT_SECRET", "conformance-test-secret-of-at-least-32-bytes"),
        ("INTEGRATION_CRM_TOKEN", "crm-token"),
        ("INTEGRATION_PAYMENT_USER", "payments"),
        ("INTEGRATION_PAYMENT_PASSWORD", "payments-password"),
        ("INTEGRATION_EMAIL_TOKEN", "email-token"),
        ("INTEGRATION_INVENTORY_TOKEN", "inventory-token"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Builds an app from YAML text after moving every `http.server` to a free loopback port
/// (tests never bind fixed ports or other interfaces).
pub fn build_on_loopback(path: &Path, registry: &Registry) -> App {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let text = loopback(&text);
    let loaded = load_str(path, &text, &example_vars());
    let validated = validate(loaded, registry).unwrap_or_else(|invalid| {
        panic!(
            "{} is invalid:\n{}",
            path.display(),
            invalid.diagnostics.render(&invalid.config.sources)
        )
    });
    build(&validated, registry)
        .unwrap_or_else(|d| panic!("{} does not build: {d:?}", path.display()))
}

/// `address: ":8080"` → `address: "127.0.0.1:0"`, for every listen address.
pub fn loopback(text: &str) -> String {
    text.lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.starts_with("address:") {
                let indent = &line[..line.len() - trimmed.len()];
                format!("{indent}address: \"127.0.0.1:0\"")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where the server module `name` listens.
pub fn server_addr(app: &RunningApp, name: &str) -> SocketAddr {
    let services = app.state().services().expect("services while running");
    let server = services.get::<HttpServer>(name).expect("server module");
    server.local_addr().expect("server is listening")
}

pub fn client() -> reqwest::Client {
    // reqwest is built without a default TLS backend (wf uses rustls with ring).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .expect("http client")
}
