//! The HTTPS server: the router, and an accept loop that terminates TLS and
//! hands each connection's verified client identity to the handlers.

use crate::error::ApiError;
use crate::ratelimit::FailureLimiter;
use crate::store::Store;
use crate::tls::{AgentIdentity, Ca};
use crate::{admin_api, enroll, ingest, ops, query};
use axum::Router;
use axum::http::Request;
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Limits and windows the handlers apply.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest ingest body as sent.
    pub max_body: u64,
    /// Largest ingest body after decompression.
    pub max_decoded_body: u64,
    /// How long an incident stays active after its last occurrence.
    pub active_window: Duration,
    /// Lifetime of certificates issued by enrollment and renewal.
    pub cert_ttl: Duration,
}

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The store.
    pub store: Store,
    /// The CA, for issuing certificates.
    pub ca: Arc<Ca>,
    /// SHA-256 of the admin token.
    pub admin_token_digest: [u8; 32],
    /// Limits.
    pub limits: Arc<Limits>,
    /// Failed enrollment attempts per source address.
    pub limiter: Arc<FailureLimiter>,
}

/// Per-connection facts, set by the accept loop.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The agent identity of a verified client certificate, if one was presented.
    pub identity: Option<AgentIdentity>,
    /// The peer address.
    pub remote: SocketAddr,
    /// When the client certificate expires (µs since the epoch). TLS checks
    /// validity only at the handshake; handlers check it per request so a
    /// long-lived keep-alive connection cannot outlive its certificate.
    pub cert_expires_us: Option<i64>,
}

impl ConnInfo {
    /// The verified agent identity, refused once its certificate has expired.
    pub fn live_identity(&self, path: &str) -> Result<AgentIdentity, ApiError> {
        let Some(identity) = self.identity.clone() else {
            return Err(ApiError::unauthorized(
                "client_certificate_required",
                format!(
                    "{path} needs the agent's client certificate from this collector's CA \
                     (token enrollment, or podwarn-collector cert issue)"
                ),
            ));
        };
        if self.cert_expires_us.is_some_and(|t| t <= crate::store::now_us()) {
            return Err(ApiError::unauthorized(
                "certificate_expired",
                "the client certificate has expired: enroll again with a token",
            ));
        }
        Ok(identity)
    }
}

/// The router. Tests drive it with `oneshot`; [`serve`] puts it behind TLS.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v1/ingest", post(ingest::ingest))
        .route("/v1/events", get(query::events))
        .route("/v1/incidents", get(query::incidents))
        .route("/v1/incidents/{id}", get(query::incident))
        .route("/v1/clusters", get(query::clusters))
        .route("/v1/ca", get(enroll::ca_handler))
        .route("/v1/enroll", post(enroll::enroll_handler))
        .route("/v1/renew", post(enroll::renew_handler))
        .route("/v1/audit", get(admin_api::audit))
        .route("/v1/admin/certs", post(enroll::issue_handler))
        .route(
            "/v1/admin/tokens",
            post(admin_api::create_token).get(admin_api::list_tokens),
        )
        .route("/v1/admin/tokens/{id}/revoke", post(admin_api::revoke_token))
        .route("/v1/admin/agents", get(admin_api::list_agents))
        .route("/v1/admin/agents/{id}/revoke", post(admin_api::revoke_agent))
        .route("/v1/admin/clusters/{name}/remove", post(admin_api::remove_cluster))
        .route(
            "/v1/admin/apikeys",
            post(admin_api::create_apikey).get(admin_api::list_apikeys),
        )
        .route("/v1/admin/apikeys/{id}/revoke", post(admin_api::revoke_apikey))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics_handler))
        .fallback(|| async { ApiError::not_found("no such endpoint; see docs/PROTOCOL.md") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .with_state(state)
}

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` over TLS on `listener` until `shutdown` resolves, then lets
/// open requests finish for at most `drain`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
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
        let acceptor = acceptor.clone();
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let peer = tls.get_ref().1.peer_certificates().and_then(|chain| chain.first());
            let identity = peer.and_then(|cert| AgentIdentity::from_cert_der(cert));
            let cert_expires_us = peer.and_then(|cert| crate::tls::cert_not_after_us(cert));
            let conn_info = ConnInfo {
                identity,
                remote,
                cert_expires_us,
            };
            let service = app.map_request(move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(conn_info.clone());
                req
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), TowerToHyperService::new(service));
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(drain) => tracing::warn!(deadline = ?drain, "drain deadline passed; closing open connections"),
    }
}
