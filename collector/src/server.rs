//! The HTTPS server: the router, and an accept loop ([`serve`]) that
//! terminates TLS and hands each connection's verified client identity to the
//! handlers.

use crate::error::ApiError;
use crate::ratelimit::FailureLimiter;
use crate::store::Store;
use crate::tls::{AgentIdentity, Ca};
use crate::{admin_api, enroll, ingest, ops, query};
use axum::Router;
use axum::routing::{get, post};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

mod listener;
pub use listener::{ConnLimits, fit_open_file_limit, serve};

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
    /// How long a request body may take to arrive in full.
    pub body_read_timeout: Duration,
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
