//! `http.server`: listens on an address and serves one router.
//!
//! Differences from the original, on purpose: a bind failure fails start-up with the module and
//! address named (the original only logged it and carried on), and stopping drains in-flight
//! requests within the grace period.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use axum::body::Body;
use http::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
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

use crate::{Router, json_response};

/// Configuration of `http.server`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfig {
    /// Address to listen on: `host:port`, or `:port` for every IPv4 interface. Port `0` picks a
    /// free port.
    pub address: String,
    /// Longest time an HTTP/1 client may take to send a request's headers, e.g. `10s`.
    #[serde(default = "default_read_timeout", rename = "readTimeout")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub read_timeout: String,
    /// Longest time a request may take to produce its response; past it the client gets `503`.
    #[serde(default = "default_write_timeout", rename = "writeTimeout")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub write_timeout: String,
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
            read_timeout: parse_duration(&config.read_timeout)
                .map_err(|e| anyhow!("`readTimeout`: {e}"))?,
            write_timeout: parse_duration(&config.write_timeout)
                .map_err(|e| anyhow!("`writeTimeout`: {e}"))?,
            configured_router: config.router,
            router: Mutex::default(),
            running: Mutex::default(),
            app: Mutex::default(),
        });
        ctx.provide::<HttpServer>(server.clone());
        Ok(server)
    }
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
    read_timeout: Duration,
    write_timeout: Duration,
    configured_router: Option<String>,
    router: Mutex<Option<Arc<Router>>>,
    running: Mutex<Option<Running>>,
    /// The app that started it, to forget its address when it stops.
    app: Mutex<std::sync::Weak<wf_engine::AppState>>,
}

impl HttpServer {
    /// A server that is not a module of the app but belongs to something else (a webhook
    /// receiver's own port), serving `router` on `address` (`host:port` or `:port`) with the
    /// default timeouts. Start and stop it through [`Module`].
    pub fn standalone(name: &str, address: &str, router: Arc<Router>) -> Result<Self, String> {
        Ok(HttpServer {
            name: name.to_string(),
            address: listen_address(address)?,
            read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
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
        let task = tokio::spawn(serve(
            listener,
            router,
            self.read_timeout,
            self.write_timeout,
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

/// Accepts connections until told to stop, then waits for in-flight requests to finish.
async fn serve(
    listener: TcpListener,
    router: Arc<Router>,
    read_timeout: Duration,
    write_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(read_timeout);
    let graceful = GracefulShutdown::new();
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let router = router.clone();
                let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let router = router.clone();
                    async move {
                        let mut req = req.map(Body::new);
                        req.extensions_mut().insert(crate::ClientAddr(peer));
                        let response = match tokio::time::timeout(write_timeout, router.dispatch(req)).await {
                            Ok(response) => response,
                            Err(_) => {
                                tracing::warn!(%peer, "request exceeded the server's writeTimeout");
                                json_response(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({"error": "request timed out"}))
                            }
                        };
                        Ok::<_, Infallible>(response)
                    }
                });
                let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                let connection = graceful.watch(connection);
                connections.spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
    // Connections that finished are reaped here; if `stop` gives up first, dropping this task
    // drops `connections`, which aborts every connection still open.
    while connections.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

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
