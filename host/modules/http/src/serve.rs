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

/// What a connection's watchdog reads, kept up to date by the service and the socket.
#[derive(Default)]
struct Activity {
    /// Requests that arrived.
    requests: AtomicU64,
    /// Requests whose response body is not done yet.
    in_progress: AtomicUsize,
    /// Requests whose handler is still producing the response (bounded by `writeTimeout`).
    handling: AtomicUsize,
    /// Bytes written to the socket.
    written: AtomicU64,
}

impl Activity {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            requests: self.requests.load(Ordering::Relaxed),
            in_progress: self.in_progress.load(Ordering::Relaxed),
            handling: self.handling.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Snapshot {
    requests: u64,
    in_progress: usize,
    handling: usize,
    written: u64,
}

/// Decrements its counter when dropped: a request's response done, a handler finished.
struct Counted(Arc<Activity>, fn(&Activity) -> &AtomicUsize);

impl Counted {
    fn start(activity: &Arc<Activity>, counter: fn(&Activity) -> &AtomicUsize) -> Counted {
        counter(activity).fetch_add(1, Ordering::Relaxed);
        Counted(activity.clone(), counter)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        (self.1)(&self.0).fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted as in progress while it streams.
struct CountedBody {
    inner: Body,
    _in_progress: Counted,
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

/// The connection's socket, counting the bytes written to it: a response whose bytes stop
/// moving (a client that stopped reading, a stream that went silent) is a stalled one.
struct CountingIo {
    inner: tokio::net::TcpStream,
    activity: Arc<Activity>,
}

impl CountingIo {
    fn count(&self, written: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = written {
            self.activity
                .written
                .fetch_add(*n as u64, Ordering::Relaxed);
        }
    }
}

impl tokio::io::AsyncRead for CountingIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CountingIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.count(&written);
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.count(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What the watchdog decides at a look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Keep,
    /// Close now: nothing is lost (no request came, or a response stopped moving).
    Drop(&'static str),
    /// Tell the client to go (`GOAWAY` on HTTP/2), then drop after [`CLOSE_GRACE`].
    Close(&'static str),
}

/// A connection's deadlines, judged from [`Activity`] a few times per deadline.
struct Watchdog {
    limits: ConnectionLimits,
    opened: Instant,
    seen: Snapshot,
    /// Since when no request arrived and none was in progress.
    quiet_since: Instant,
    /// Since when a response in progress (its handler done) wrote nothing.
    stalled_since: Instant,
}

impl Watchdog {
    fn new(limits: ConnectionLimits, opened: Instant) -> Watchdog {
        Watchdog {
            limits,
            opened,
            seen: Snapshot::default(),
            quiet_since: opened,
            stalled_since: opened,
        }
    }

    fn look(&mut self, now: Instant, activity: Snapshot) -> Verdict {
        let busy = activity.in_progress > 0;
        if busy || activity.requests != self.seen.requests {
            self.quiet_since = now;
        }
        // A handler's time is bounded by `writeTimeout`; after it, a response must move.
        if !busy || activity.handling > 0 || activity.written != self.seen.written {
            self.stalled_since = now;
        }
        self.seen = activity;
        if activity.requests == 0 && now - self.opened >= self.limits.read_timeout {
            Verdict::Drop("no request within readTimeout")
        } else if busy && now - self.stalled_since >= self.limits.idle_timeout {
            Verdict::Drop("the response wrote nothing for idleTimeout")
        } else if !busy && now - self.quiet_since >= self.limits.idle_timeout {
            Verdict::Close("idle for idleTimeout")
        } else {
            Verdict::Keep
        }
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
            activity.requests.fetch_add(1, Ordering::Relaxed);
            let in_progress = Counted::start(&activity, |a| &a.in_progress);
            let handling = Counted::start(&activity, |a| &a.handling);
            async move {
                let mut req = req.map(Body::new);
                req.extensions_mut().insert(crate::ClientAddr(peer));
                req.extensions_mut().insert(crate::RequestDeadline {
                    at: Instant::now() + limits.write_timeout,
                    write_timeout: limits.write_timeout,
                });
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
                drop(handling);
                Ok::<_, Infallible>(response.map(|inner| {
                    Body::new(CountedBody {
                        inner,
                        _in_progress: in_progress,
                    })
                }))
            }
        })
    };
    let io = CountingIo {
        inner: stream,
        activity: activity.clone(),
    };
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);

    let mut watchdog = Watchdog::new(limits, Instant::now());
    // The watchdog looks a few times per deadline, so a deadline is kept within a quarter.
    let tick = (limits.read_timeout.min(limits.idle_timeout) / 4).max(Duration::from_millis(5));
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
                let activity = activity.snapshot();
                match (closing, watchdog.look(now, activity)) {
                    (Some(deadline), _) if now >= deadline && activity.in_progress == 0 => {
                        tracing::debug!(%peer, "connection did not close when asked; dropped");
                        return;
                    }
                    (_, Verdict::Drop(why)) => {
                        tracing::debug!(%peer, "{why}; connection closed");
                        return;
                    }
                    (None, Verdict::Close(why)) => {
                        tracing::debug!(%peer, "{why}; closing the connection");
                        connection.as_mut().graceful_shutdown();
                        closing = Some(now + CLOSE_GRACE);
                    }
                    _ => {}
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

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            ..ConnectionLimits::default()
        }
    }

    #[test]
    fn the_watchdog_keeps_working_connections_and_drops_the_rest() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let snapshot = |requests, in_progress, handling, written| Snapshot {
            requests,
            in_progress,
            handling,
            written,
        };

        // Nothing ever arrives.
        let mut dog = Watchdog::new(limits(), start);
        assert_eq!(dog.look(at(9), Snapshot::default()), Verdict::Keep);
        assert!(matches!(
            dog.look(at(10), Snapshot::default()),
            Verdict::Drop(_)
        ));

        // A request, then quiet: asked to close after idleTimeout.
        let mut dog = Watchdog::new(limits(), start);
        assert_eq!(dog.look(at(1), snapshot(1, 0, 0, 100)), Verdict::Keep);
        assert_eq!(dog.look(at(60), snapshot(1, 0, 0, 100)), Verdict::Keep);
        assert!(matches!(
            dog.look(at(61), snapshot(1, 0, 0, 100)),
            Verdict::Close(_)
        ));

        // A slow handler is not stalled (writeTimeout bounds it); a streaming response that
        // keeps writing lives on; one that stops writing is dropped.
        let mut dog = Watchdog::new(limits(), start);
        assert_eq!(dog.look(at(1), snapshot(1, 1, 1, 0)), Verdict::Keep);
        assert_eq!(dog.look(at(100), snapshot(1, 1, 1, 0)), Verdict::Keep);
        for t in 101..300 {
            assert_eq!(dog.look(at(t), snapshot(1, 1, 0, t)), Verdict::Keep);
        }
        assert_eq!(dog.look(at(358), snapshot(1, 1, 0, 299)), Verdict::Keep);
        assert!(matches!(
            dog.look(at(359), snapshot(1, 1, 0, 299)),
            Verdict::Drop(_)
        ));
    }
}
