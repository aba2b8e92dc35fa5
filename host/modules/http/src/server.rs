//! `http.server`: listens on an address and serves one router.
//!
//! Differences from the original, on purpose: a bind failure fails start-up with the module and
//! address named (the original only logged it and carried on), and stopping drains in-flight
//! requests within the grace period.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, anyhow};
use schemars::JsonSchema;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use wf_engine::wf_config::duration::{DURATION_PATTERN, parse_duration};
use wf_engine::{
    BuildContext, Category, CheckContext, ConfigIssue, Described, Module, ModuleType, StartContext,
    StopContext, async_trait,
};

use crate::Router;
use crate::serve::ConnectionLimits;

/// Configuration of `http.server`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfig {
    /// Address to listen on: `host:port`, or `:port` for every IPv4 interface. Port `0` picks a
    /// free port.
    pub address: String,
    /// Longest time a client may take to send a request's headers, e.g. `10s`: from connecting
    /// (HTTP/1 and HTTP/2 alike) and, on HTTP/1, from the end of the previous response. A
    /// connection that sends no request within it is closed.
    #[serde(default = "default_read_timeout", rename = "readTimeout")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub read_timeout: String,
    /// Longest time a request may take to produce its response; past it the client gets `503`.
    #[serde(default = "default_write_timeout", rename = "writeTimeout")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub write_timeout: String,
    /// A connection with no request in progress for this long is closed (HTTP/2 clients get a
    /// `GOAWAY` first). A response that writes nothing for this long once its handler is done
    /// — a client that stopped reading, a stream gone silent — is dropped: streams should send
    /// something (a comment, a heartbeat) more often.
    #[serde(default = "default_idle_timeout", rename = "idleTimeout")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub idle_timeout: String,
    /// Connections open at once. At the limit the server stops accepting: new clients wait in
    /// the listen backlog and are served as soon as a connection closes, instead of failing.
    #[serde(default = "default_max_connections", rename = "maxConnections")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_connections: u32,
    /// The `http.router` this server serves. Optional: an `http` workflow naming this server
    /// attaches its router, and an application with a single router uses it.
    #[serde(default)]
    pub router: Option<String>,
}

fn default_read_timeout() -> String {
    "30s".to_string()
}

fn default_write_timeout() -> String {
    "30s".to_string()
}

fn default_idle_timeout() -> String {
    "60s".to_string()
}

fn default_max_connections() -> u32 {
    ConnectionLimits::default().max_connections as u32
}

pub struct HttpServerType;

impl Described for HttpServerType {
    const NAME: &'static str = "http.server";
    const CATEGORY: Category = Category::Http;
    const PLUGIN: &'static str = crate::PLUGIN;
    const DESCRIPTION: &'static str =
        "Listens on an address and serves an `http.router`; drains in-flight requests on shutdown.";
    type Config = HttpServerConfig;
}

/// `httpserver.modular`: `http.server` under the name the original's documentation gives it
/// (its code never registered it).
pub struct HttpServerModularType;

impl Described for HttpServerModularType {
    const NAME: &'static str = "httpserver.modular";
    const CATEGORY: Category = Category::Http;
    const PLUGIN: &'static str = "modular-compat";
    const DESCRIPTION: &'static str = "The `http.server` module under the original's modular name.";
    type Config = HttpServerConfig;
}

impl ModuleType for HttpServerModularType {
    fn check(config: &HttpServerConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        HttpServerType::check(config, ctx)
    }

    fn build(
        config: HttpServerConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        HttpServerType::build(config, ctx)
    }
}

impl ModuleType for HttpServerType {
    fn check(config: &HttpServerConfig, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if let Err(e) = listen_address(&config.address) {
            issues.push(
                ConfigIssue::new("/address", e).help("write `host:port` or `:port`, e.g. `:8080`"),
            );
        }
        for (pointer, value) in [
            ("/readTimeout", &config.read_timeout),
            ("/writeTimeout", &config.write_timeout),
            ("/idleTimeout", &config.idle_timeout),
        ] {
            if parse_duration(value).is_ok_and(|d| d.is_zero()) {
                issues.push(
                    ConfigIssue::new(pointer, "a zero timeout would close every connection")
                        .help("give a duration such as `30s`"),
                );
            }
        }
        if let Some(router) = &config.router {
            if let Some(issue) = ctx.require_module("/router", router, "router") {
                issues.push(issue);
            } else if !ctx
                .module_type(router)
                .is_some_and(|t| crate::ROUTER_TYPES.contains(&t))
            {
                issues.push(ConfigIssue::new(
                    "/router",
                    format!("`{router}` is not an `http.router` or `chimux.router` module"),
                ));
            }
        }
        issues
    }

    fn build(
        config: HttpServerConfig,
        ctx: &mut BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Module>> {
        let server = Arc::new(HttpServer {
            name: ctx.name.to_string(),
            address: listen_address(&config.address).map_err(|e| anyhow!(e))?,
            limits: ConnectionLimits {
                read_timeout: parse_duration(&config.read_timeout)
                    .map_err(|e| anyhow!("`readTimeout`: {e}"))?,
                write_timeout: parse_duration(&config.write_timeout)
                    .map_err(|e| anyhow!("`writeTimeout`: {e}"))?,
                idle_timeout: parse_duration(&config.idle_timeout)
                    .map_err(|e| anyhow!("`idleTimeout`: {e}"))?,
                max_connections: config.max_connections as usize,
                ..ConnectionLimits::default()
            },
            configured_router: config.router,
            router: Mutex::default(),
            running: Mutex::default(),
            app: Mutex::default(),
        });
        ctx.provide::<HttpServer>(server.clone());
        Ok(server)
    }
}

/// Whether a listen address (`host:port`) accepts connections from this machine only.
pub fn is_loopback_address(address: &str) -> bool {
    let Ok(address) = listen_address(address) else {
        return false;
    };
    let host = address
        .rsplit_once(':')
        .map_or("", |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `:8080` → `0.0.0.0:8080`; `localhost:80` and `127.0.0.1:0` as written.
fn listen_address(address: &str) -> Result<String, String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("`{address}` has no port"))?;
    port.parse::<u16>()
        .map_err(|_| format!("`{port}` in `{address}` is not a port number"))?;
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    Ok(format!("{host}:{port}"))
}

struct Running {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

pub struct HttpServer {
    name: String,
    address: String,
    limits: ConnectionLimits,
    configured_router: Option<String>,
    router: Mutex<Option<Arc<Router>>>,
    running: Mutex<Option<Running>>,
    /// The app that started it, to forget its address when it stops.
    app: Mutex<std::sync::Weak<wf_engine::AppState>>,
}

impl HttpServer {
    /// A server that is not a module of the app but belongs to something else (a webhook
    /// receiver's own port), serving `router` on `address` (`host:port` or `:port`) with the
    /// default limits. Start and stop it through [`Module`].
    pub fn standalone(name: &str, address: &str, router: Arc<Router>) -> Result<Self, String> {
        Ok(HttpServer {
            name: name.to_string(),
            address: listen_address(address)?,
            limits: ConnectionLimits::default(),
            configured_router: None,
            router: Mutex::new(Some(router)),
            running: Mutex::default(),
            app: Mutex::default(),
        })
    }

    /// Whether `address` is one a server can listen on, and if not, why.
    pub fn check_address(address: &str) -> Result<(), String> {
        listen_address(address).map(|_| ())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Serves `router`. A server serves one router; attaching a second one is an error.
    pub fn attach(&self, router: Arc<Router>) -> Result<(), String> {
        let mut slot = self
            .router
            .lock()
            .map_err(|_| "server lock poisoned".to_string())?;
        if let Some(configured) = self.configured_router.as_deref()
            && configured != router.name()
        {
            return Err(format!(
                "server `{}` is configured with `router: {configured}`, but this workflow routes through `{}`",
                self.name,
                router.name()
            ));
        }
        match slot.as_ref() {
            Some(existing) if existing.name() != router.name() => Err(format!(
                "server `{}` already serves router `{}`; use a second `http.server` for router `{}`",
                self.name,
                existing.name(),
                router.name()
            )),
            _ => {
                *slot = Some(router);
                Ok(())
            }
        }
    }

    /// The router this server serves, once known.
    pub fn router(&self) -> Option<Arc<Router>> {
        self.router.lock().ok().and_then(|r| r.clone())
    }

    /// Where the server is listening, once started (the real port when configured with `:0`).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.running.lock().ok()?.as_ref().map(|r| r.local_addr)
    }

    /// The attached router, else the configured one, else the application's only router.
    fn resolve_router(&self, ctx: &StartContext) -> anyhow::Result<Arc<Router>> {
        if let Some(router) = self.router() {
            return Ok(router);
        }
        let services = ctx
            .app
            .services()
            .ok_or_else(|| anyhow!("application services are not available"))?;
        let router = match &self.configured_router {
            Some(name) => services.get::<Router>(name)?,
            None => {
                // Only the unambiguous case is guessed: one server, one router. Otherwise a
                // server nobody routed serves 404s rather than another server's routes.
                let routers = services.all::<Router>();
                let servers = services.all::<HttpServer>();
                match (routers.as_slice(), servers.len()) {
                    ([(_, only)], 1) => only.clone(),
                    _ => {
                        tracing::warn!(
                            server = %self.name,
                            "no router is attached to this server, so it answers 404 to everything; name it as `server:` in an `http` workflow or set `router:`"
                        );
                        Arc::new(Router::new(&self.name))
                    }
                }
            }
        };
        self.attach(router.clone()).map_err(|e| anyhow!(e))?;
        Ok(router)
    }
}

#[async_trait]
impl Module for HttpServer {
    async fn start(&self, ctx: &StartContext) -> anyhow::Result<()> {
        let router = self.resolve_router(ctx)?;
        let listener = TcpListener::bind(&self.address)
            .await
            .with_context(|| format!("cannot listen on `{}`", self.address))?;
        let local_addr = listener.local_addr()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(crate::serve::serve(
            listener,
            router,
            self.limits,
            shutdown_rx,
        ));
        ctx.app.set_listening(&self.name, local_addr);
        if let Ok(mut app) = self.app.lock() {
            *app = Arc::downgrade(&ctx.app);
        }
        tracing::info!(server = %self.name, address = %local_addr, "listening");
        if let Ok(mut running) = self.running.lock() {
            *running = Some(Running {
                local_addr,
                shutdown,
                task,
            });
        }
        Ok(())
    }

    fn takes_traffic(&self) -> bool {
        true
    }

    async fn stop(&self, ctx: &StopContext) -> anyhow::Result<()> {
        let Some(running) = self.running.lock().ok().and_then(|mut r| r.take()) else {
            return Ok(());
        };
        if let Some(app) = self.app.lock().ok().and_then(|a| a.upgrade()) {
            app.clear_listening(&self.name);
        }
        let _ = running.shutdown.send(true);
        let mut task = running.task;
        match tokio::time::timeout_at(ctx.deadline, &mut task).await {
            Ok(_) => Ok(()),
            Err(_) => {
                task.abort();
                Err(anyhow!(
                    "in-flight requests did not finish within the grace period; connections were closed"
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses() {
        for address in [
            "127.0.0.1:8080",
            "127.0.0.2:1",
            "localhost:80",
            "[::1]:8080",
        ] {
            assert!(is_loopback_address(address), "{address}");
        }
        for address in [
            ":8080",
            "0.0.0.0:8080",
            "[::]:80",
            "10.0.0.1:80",
            "example.com:80",
        ] {
            assert!(!is_loopback_address(address), "{address}");
        }
    }

    #[test]
    fn go_style_addresses() {
        assert_eq!(listen_address(":8080").unwrap(), "0.0.0.0:8080");
        assert_eq!(listen_address("127.0.0.1:0").unwrap(), "127.0.0.1:0");
        assert!(listen_address("8080").unwrap_err().contains("has no port"));
        assert!(
            listen_address(":http")
                .unwrap_err()
                .contains("not a port number")
        );
    }
}
