//! The accept loop, and the bounds that keep slow, silent or numerous clients
//! from holding the collector's sockets: a cap on open connections, and
//! deadlines for the TLS handshake, the first request, every request head and
//! idle time. Request bodies have their own deadline, applied where handlers
//! read them ([`super::Limits::body_read_timeout`]).

use super::ConnInfo;
use crate::tls::AgentIdentity;
use axum::Router;
use axum::http::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;

/// Connection-level limits of the HTTPS listener (docs/OPERATIONS.md,
/// "Connection limits").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Most connections open at once, TLS handshakes included. Further
    /// clients wait in the kernel's accept queue until one closes.
    pub max_connections: usize,
    /// Time from accept to the end of the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Time a request head (request line and headers) may take to arrive,
    /// counted from the end of the handshake for the first request and from
    /// the end of the previous answer for the next ones on an HTTP/1.1
    /// connection, which is therefore also how long such a connection idles.
    pub header_read_timeout: Duration,
    /// Time a connection that has served a request may stay open with none in
    /// progress (what bounds idle HTTP/2 connections).
    pub idle_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// Largest HTTP/1.1 request head (request line and headers); HTTP/2 keeps
/// hyper's 16 KiB header list limit.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// File descriptors kept free for the store, logs and the listener itself.
const RESERVED_FDS: u64 = 64;

/// Raises the soft open-file limit to the hard one (as Go's runtime does) and
/// lowers `wanted` so that that many connections fit under it. Returns the
/// number of connections to allow and the soft limit in force, if known.
pub fn fit_open_file_limit(wanted: usize) -> (usize, Option<u64>) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            limit = raised;
        }
    }
    match limit.current {
        Some(soft) => {
            let fits = soft.saturating_sub(RESERVED_FDS).max(1);
            (wanted.min(usize::try_from(fits).unwrap_or(usize::MAX)), Some(soft))
        }
        None => (wanted, None),
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves, then lets
/// open requests finish for at most `drain`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
    limits: ConnLimits,
) {
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // Bounds a request head (431 beyond) and so each connection's read buffer.
        .max_buf_size(MAX_HEAD_BYTES);
    let server = Arc::new(Server {
        acceptor: tokio_rustls::TlsAcceptor::from(tls),
        http,
        app,
        limits,
    });
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut warned_full: Option<Instant> = None;
    // Every connection holds a receiver: the sender sees them all gone once drained.
    let (stop, stopped) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = free_slot(&slots, limits.max_connections, &mut warned_full) => slot,
            () = &mut shutdown => break,
        };
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        tokio::spawn(server.clone().connection(tcp, remote, stopped.clone(), slot));
    }
    drop(listener);
    drop(stopped);
    stop.send_replace(());
    tokio::select! {
        () = stop.closed() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(drain) => tracing::warn!(deadline = ?drain, "drain deadline passed; closing open connections"),
    }
}

/// A connection slot; waits (and says so, at most once a minute) when all are taken.
async fn free_slot(slots: &Arc<Semaphore>, max: usize, warned: &mut Option<Instant>) -> OwnedSemaphorePermit {
    if let Ok(slot) = slots.clone().try_acquire_owned() {
        return slot;
    }
    if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
        *warned = Some(Instant::now());
        tracing::warn!(
            max_connections = max,
            "connection limit reached: new clients wait until a connection closes"
        );
    }
    match slots.clone().acquire_owned().await {
        Ok(slot) => slot,
        // The semaphore is never closed.
        Err(_) => std::future::pending().await,
    }
}

struct Server {
    acceptor: tokio_rustls::TlsAcceptor,
    http: auto::Builder<TokioExecutor>,
    app: Router,
    limits: ConnLimits,
}

/// Why the supervisor ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// No complete request head within the header read timeout of the handshake.
    NoRequest,
    /// Nothing in progress for the idle timeout.
    Idle,
    /// The server is shutting down.
    Shutdown,
}

impl Server {
    async fn connection(
        self: Arc<Self>,
        tcp: TcpStream,
        remote: SocketAddr,
        mut stop: watch::Receiver<()>,
        _slot: OwnedSemaphorePermit,
    ) {
        let limits = self.limits;
        let handshake = tokio::time::timeout(limits.tls_handshake_timeout, self.acceptor.accept(tcp));
        let tls = tokio::select! {
            done = handshake => match done {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            },
            _ = stop.changed() => return,
        };
        let peer = tls.get_ref().1.peer_certificates().and_then(|chain| chain.first());
        let conn_info = ConnInfo {
            identity: peer.and_then(|cert| AgentIdentity::from_cert_der(cert)),
            remote,
            cert_expires_us: peer.and_then(|cert| crate::tls::cert_not_after_us(cert)),
        };
        let activity = Arc::new(Activity::new());
        let tracker = activity.clone();
        let service = self
            .app
            .clone()
            .map_request(move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(conn_info.clone());
                req
            })
            .map_future(move |answer| {
                let request = tracker.begin();
                async move {
                    let answer = answer.await;
                    drop(request);
                    answer
                }
            });
        let conn = self
            .http
            .serve_connection_with_upgrades(TokioIo::new(tls), TowerToHyperService::new(service));
        tokio::pin!(conn);
        let close = loop {
            tokio::select! {
                ended = conn.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(%remote, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = stop.changed() => break Close::Shutdown,
                () = activity.changed.notified() => {}
                () = tokio::time::sleep_until(activity.deadline(&limits)) => {
                    if let Some(close) = activity.expired(&limits) {
                        break close;
                    }
                }
            }
        };
        match close {
            // Nothing was asked, so nothing is lost: close at once.
            Close::NoRequest => tracing::debug!(%remote, "no request head within the header read timeout; closed"),
            Close::Idle => {
                tracing::debug!(%remote, "idle connection closed");
                // An answer may still be on its way out to a slow reader.
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(limits.idle_timeout, conn.as_mut()).await;
            }
            // `serve`'s drain deadline bounds this wait.
            Close::Shutdown => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.as_mut().await;
            }
        }
    }
}

/// What a connection is doing, for its supervisor.
#[derive(Debug)]
struct Activity {
    state: Mutex<ActivityState>,
    /// Woken when a request ends, so the idle clock restarts promptly.
    changed: Notify,
}

#[derive(Debug)]
struct ActivityState {
    in_flight: usize,
    served: bool,
    idle_since: Instant,
}

impl ActivityState {
    fn window(&self, limits: &ConnLimits) -> Duration {
        if self.served {
            limits.idle_timeout
        } else {
            limits.header_read_timeout
        }
    }
}

/// A request in progress; its end restarts the idle clock.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.in_flight -= 1;
        state.idle_since = Instant::now();
        drop(state);
        self.0.changed.notify_one();
    }
}

impl Activity {
    fn new() -> Self {
        Self {
            state: Mutex::new(ActivityState {
                in_flight: 0,
                served: false,
                idle_since: Instant::now(),
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        let mut state = self.lock();
        state.in_flight += 1;
        state.served = true;
        InFlight(self.clone())
    }

    /// When the connection can next have been idle too long (a request in
    /// progress is looked at again after a full idle timeout).
    fn deadline(&self, limits: &ConnLimits) -> Instant {
        let state = self.lock();
        if state.in_flight > 0 {
            Instant::now() + limits.idle_timeout
        } else {
            state.idle_since + state.window(limits)
        }
    }

    fn expired(&self, limits: &ConnLimits) -> Option<Close> {
        let state = self.lock();
        let expired = state.in_flight == 0 && Instant::now() >= state.idle_since + state.window(limits);
        match (expired, state.served) {
            (false, _) => None,
            (true, false) => Some(Close::NoRequest),
            (true, true) => Some(Close::Idle),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnLimits {
        ConnLimits {
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            ..ConnLimits::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_with_no_request_in_progress() {
        let limits = limits();
        let activity = Arc::new(Activity::new());
        // Before any request the header read timeout applies.
        assert_eq!(activity.expired(&limits), None);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(activity.expired(&limits), Some(Close::NoRequest));
        // A request in progress is never idle, however long it takes.
        let request = activity.begin();
        tokio::time::advance(Duration::from_secs(600)).await;
        assert_eq!(activity.expired(&limits), None);
        drop(request);
        // After it, the idle timeout runs from its end.
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(activity.expired(&limits), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(activity.expired(&limits), Some(Close::Idle));
    }

    #[test]
    fn connections_fit_under_the_open_file_limit() {
        let (allowed, soft) = fit_open_file_limit(usize::MAX);
        match soft {
            Some(soft) => assert_eq!(allowed as u64, soft.saturating_sub(RESERVED_FDS).max(1)),
            None => assert_eq!(allowed, usize::MAX, "no limit, nothing to fit"),
        }
        assert_eq!(fit_open_file_limit(10).0, 10);
    }
}
