//! The accept loop and each connection's limits.
//!
//! A server that faces the internet must not let clients that send nothing hold its
//! connections: each one costs a file descriptor and a task, and a few hundred of them made the
//! server unreachable. So every connection has a deadline for its first request
//! (`readTimeout`, which also covers the HTTP/2 preface and hyper's protocol detection, where
//! no hyper timeout applies yet), an idle deadline once no request is in progress
//! (`idleTimeout`; HTTP/2 gets a `GOAWAY` first), and the number of open connections is capped
//! (`maxConnections`): past the cap the server stops accepting, so new clients wait in the
//! kernel's backlog instead of failing, and are served as soon as a connection closes.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::StatusCode;
use hyper::body::{Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::{Router, json_response};

/// What one server allows each connection, and how many it keeps open.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// From accepting a connection until its first request's headers have arrived; also
    /// hyper's header timeout for the requests after it on HTTP/1.
    pub read_timeout: Duration,
    /// A handler's time to produce its response.
    pub write_timeout: Duration,
    /// How long a connection may stay open with no request in progress.
    pub idle_timeout: Duration,
    /// Connections open at once; further clients wait to be accepted.
    pub max_connections: usize,
    /// Streams one HTTP/2 connection may have open at once.
    pub max_concurrent_streams: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
            max_concurrent_streams: 256,
        }
    }
}

/// How long a connection told to close (idle, `GOAWAY` sent) may take before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Accept failures (out of file descriptors, ...) are logged at most this often.
const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// Accepts connections until told to stop, then waits for in-flight requests to finish.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Arc<Router>,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams);
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut accept_errors = AcceptErrors::default();
    let mut at_capacity_logged: Option<Instant> = None;
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // A slot first: at the cap the server stops accepting, and clients queue in the backlog.
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if at_capacity_logged.is_none_or(|at| at.elapsed() >= ACCEPT_ERROR_LOG_EVERY) {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection limit reached; new clients wait until a connection closes (`maxConnections`)"
                    );
                    at_capacity_logged = Some(Instant::now());
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                    _ = shutdown.changed() => break,
                }
            }
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => {
                        accept_errors.succeeded();
                        accepted
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        let pause = accept_errors.failed(&e);
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let connection = serve_connection(
                    builder.clone(),
                    stream,
                    peer,
                    router.clone(),
                    limits,
                    shutdown.clone(),
                );
                connections.spawn(async move {
                    connection.await;
                    drop(slot);
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    // Each connection saw the shutdown too and is closing gracefully. Connections that finish
    // are reaped here; if `stop` gives up first, dropping this task drops `connections`, which
    // aborts every connection still open.
    while connections.join_next().await.is_some() {}
}

/// Backs off after accept failures (5 ms doubling to 1 s, as Go's server does) and logs them
/// at most once per [`ACCEPT_ERROR_LOG_EVERY`] with the number left out.
#[derive(Default)]
struct AcceptErrors {
    pause: Option<Duration>,
    logged_at: Option<Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    fn failed(&mut self, error: &io::Error) -> Duration {
        let pause = self.pause.map_or(Duration::from_millis(5), |p| {
            (p * 2).min(Duration::from_secs(1))
        });
        self.pause = Some(pause);
        if self
            .logged_at
            .is_none_or(|at| at.elapsed() >= ACCEPT_ERROR_LOG_EVERY)
        {
            tracing::warn!(error = %error, since_last_report = self.unlogged, "accepting connections failed; retrying");
            self.logged_at = Some(Instant::now());
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
        pause
    }

    fn succeeded(&mut self) {
        self.pause = None;
    }
}

/// What a connection's watchdog reads: requests seen, and requests whose response is not done.
#[derive(Default)]
struct Activity {
    requests: AtomicU64,
    in_progress: AtomicUsize,
}

/// Held from a request's arrival until its response body is done (or dropped).
struct InProgress(Arc<Activity>);

impl InProgress {
    fn start(activity: &Arc<Activity>) -> InProgress {
        activity.requests.fetch_add(1, Ordering::Relaxed);
        activity.in_progress.fetch_add(1, Ordering::Relaxed);
        InProgress(activity.clone())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.in_progress.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted as in progress while it streams.
struct CountedBody {
    inner: Body,
    _in_progress: InProgress,
}

impl hyper::body::Body for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves one connection under its deadlines; returns when it is closed.
async fn serve_connection(
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    router: Arc<Router>,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::default());
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let router = router.clone();
            let in_progress = InProgress::start(&activity);
            async move {
                let mut req = req.map(Body::new);
                req.extensions_mut().insert(crate::ClientAddr(peer));
                let response =
                    match tokio::time::timeout(limits.write_timeout, router.dispatch(req)).await {
                        Ok(response) => response,
                        Err(_) => {
                            tracing::warn!(%peer, "request exceeded the server's writeTimeout");
                            json_response(
                                StatusCode::SERVICE_UNAVAILABLE,
                                &serde_json::json!({"error": "request timed out"}),
                            )
                        }
                    };
                Ok::<_, Infallible>(response.map(|inner| {
                    Body::new(CountedBody {
                        inner,
                        _in_progress: in_progress,
                    })
                }))
            }
        })
    };
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);

    let opened = Instant::now();
    // The watchdog looks a few times per deadline, so a deadline is kept within a quarter.
    let tick = (limits.read_timeout.min(limits.idle_timeout) / 4).max(Duration::from_millis(5));
    let mut seen_requests = 0;
    let mut quiet_since = opened;
    // Set once the connection was told to close: on shutdown (the server's stop bounds the
    // wait) or when idle (dropped after `CLOSE_GRACE` if still open).
    let mut shutting_down = false;
    let mut closing: Option<Instant> = None;
    loop {
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = shutdown.changed(), if !shutting_down && closing.is_none() => {
                connection.as_mut().graceful_shutdown();
                shutting_down = true;
            }
            _ = tokio::time::sleep(tick), if !shutting_down => {
                let now = Instant::now();
                let busy = activity.in_progress.load(Ordering::Relaxed) > 0;
                let requests = activity.requests.load(Ordering::Relaxed);
                if busy || requests != seen_requests {
                    seen_requests = requests;
                    quiet_since = now;
                }
                match closing {
                    Some(deadline) if now >= deadline && !busy => {
                        tracing::debug!(%peer, "connection did not close when asked; dropped");
                        return;
                    }
                    Some(_) => {}
                    None if requests == 0 && now - opened >= limits.read_timeout => {
                        // Nothing to finish: no request ever arrived.
                        tracing::debug!(%peer, "no request within readTimeout; connection closed");
                        return;
                    }
                    None if !busy && now - quiet_since >= limits.idle_timeout => {
                        tracing::debug!(%peer, "idle past idleTimeout; closing the connection");
                        connection.as_mut().graceful_shutdown();
                        closing = Some(now + CLOSE_GRACE);
                    }
                    None => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_back_off_to_a_second() {
        let mut errors = AcceptErrors::default();
        let e = io::Error::other("too many open files");
        let pauses: Vec<_> = (0..10).map(|_| errors.failed(&e)).collect();
        assert_eq!(pauses[0], Duration::from_millis(5));
        assert_eq!(pauses[1], Duration::from_millis(10));
        assert_eq!(pauses[9], Duration::from_secs(1));
        // Only the first of a burst is logged.
        assert_eq!(errors.unlogged, 9);
        errors.succeeded();
        assert_eq!(errors.failed(&e), Duration::from_millis(5));
    }
}
