//! Issuing agent certificates. `cert issue` (offline, or through a running
//! server's admin endpoint) and, later, token enrollment share this one path:
//! validate the names, sign only the CSR's public key, record the agent.

use crate::auth::Caller;
use crate::error::ApiError;
use crate::names::validate_name;
use crate::server::AppState;
use crate::store::schema::AgentRecord;
use crate::store::{Store, now_us};
use crate::tls::{AgentIdentity, Ca};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Longest certificate lifetime the collector signs.
pub const MAX_CERT_TTL: Duration = Duration::from_secs(366 * 86400);

/// A request for an agent certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssueRequest {
    /// The cluster to bind.
    pub cluster: String,
    /// The tenant to bind.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// PEM certificate signing request; only its public key is used.
    pub csr: String,
    /// Lifetime in seconds.
    pub ttl_seconds: u64,
}

fn default_tenant() -> String {
    "default".into()
}

/// A signed agent certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuedAgent {
    /// The new agent's id.
    pub agent_id: String,
    /// The client certificate, PEM.
    pub cert: String,
    /// The collector's CA certificate, PEM.
    pub ca: String,
    /// Expiry, RFC 3339.
    pub not_after: jiff::Timestamp,
}

/// Signs and records an agent certificate.
pub async fn issue(store: &Store, ca: &Ca, req: IssueRequest) -> Result<IssuedAgent, ApiError> {
    validate_name("cluster", &req.cluster).map_err(|e| ApiError::bad_request("invalid_name", e.to_string()))?;
    validate_name("tenant", &req.tenant).map_err(|e| ApiError::bad_request("invalid_name", e.to_string()))?;
    let ttl = Duration::from_secs(req.ttl_seconds);
    if ttl < Duration::from_secs(60) || ttl > MAX_CERT_TTL {
        return Err(ApiError::bad_request(
            "invalid_ttl",
            "certificate lifetime must be between 1 minute and 366 days",
        ));
    }
    let identity = AgentIdentity {
        tenant: req.tenant.clone(),
        cluster: req.cluster.clone(),
        agent_id: hex::encode(rand::random::<[u8; 8]>()),
    };
    let issued = ca.issue_agent_cert(&req.csr, &identity, ttl).map_err(|e| {
        ApiError::bad_request(
            "invalid_csr",
            format!("the certificate signing request is not usable: {e}"),
        )
    })?;
    let record = AgentRecord {
        agent_id: identity.agent_id.clone(),
        cluster: identity.cluster,
        tenant: identity.tenant,
        created_us: now_us(),
        cert_serial: issued.serial,
        cert_not_after_us: issued.not_after.as_microsecond(),
        revoked_us: None,
        last_seen_us: None,
        version: None,
        dropped_total: 0,
    };
    store.register_agent(record).await.map_err(|e| {
        tracing::error!(error = %e, "recording the agent failed");
        ApiError::unavailable("the agent could not be recorded; nothing was issued, retry later")
    })?;
    tracing::info!(agent = %identity.agent_id, cluster = %req.cluster, tenant = %req.tenant, "agent certificate issued");
    Ok(IssuedAgent {
        agent_id: identity.agent_id,
        cert: issued.cert_pem,
        ca: issued.ca_pem,
        not_after: issued.not_after,
    })
}

/// `POST /v1/admin/certs` (admin): what `cert issue` calls while `serve` holds the store.
pub async fn issue_handler(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<IssuedAgent>, ApiError> {
    if caller.tenant.is_some() {
        return Err(ApiError::forbidden(
            "forbidden",
            "issuing certificates needs an admin token",
        ));
    }
    let req: IssueRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("expected {{cluster, tenant, csr, ttl_seconds}}: {e}"),
        )
    })?;
    issue(&state.store, &state.ca, req).await.map(Json)
}
