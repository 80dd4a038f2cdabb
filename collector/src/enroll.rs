//! Issuing agent certificates: `cert issue` (offline, or through a running
//! server's admin endpoint), token enrollment (`POST /v1/enroll`) and renewal
//! over mutual TLS (`POST /v1/renew`) share one path: validate the names, sign
//! only the CSR's public key for an identity the collector chose, record the
//! agent (with its audit entry) in one transaction.

use crate::auth::Caller;
use crate::error::{ApiError, json_body};
use crate::ingest::read_limited;
use crate::names::validate_name;
use crate::server::{AppState, ConnInfo};
use crate::store::schema::AgentRecord;
use crate::store::{AccessJob, AccessOp, Store, StoreError, check_token, now_us};
use crate::tls::{AgentIdentity, Ca};
use crate::token::EnrollToken;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Longest certificate lifetime the collector signs.
pub const MAX_CERT_TTL: Duration = Duration::from_secs(366 * 86400);
/// Shortest certificate lifetime the admin API signs.
pub const MIN_CERT_TTL: Duration = Duration::from_secs(60);
/// Largest enrollment or renewal body (a token and a CSR are a few KiB).
const MAX_BODY: u64 = 64 * 1024;

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

/// A signed agent certificate: the answer of `/v1/enroll`, `/v1/renew` and `/v1/admin/certs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuedAgent {
    /// The agent's id.
    pub agent_id: String,
    /// The tenant bound in the certificate.
    #[serde(default)]
    pub tenant: String,
    /// The cluster bound in the certificate.
    #[serde(default)]
    pub cluster: String,
    /// The client certificate, PEM.
    pub cert: String,
    /// The collector's CA certificate, PEM.
    pub ca: String,
    /// Expiry, RFC 3339.
    pub not_after: jiff::Timestamp,
}

/// `POST /v1/enroll` body. `Debug` never shows the token.
#[derive(Clone, Deserialize)]
pub struct EnrollRequest {
    /// `pw1.<id>.<secret>`.
    pub token: String,
    /// PEM certificate signing request of the agent's own key.
    pub csr: String,
    /// The agent's version, recorded with the agent.
    #[serde(default)]
    pub agent_version: Option<String>,
}

impl std::fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollRequest").finish_non_exhaustive()
    }
}

/// `POST /v1/renew` body.
#[derive(Debug, Clone, Deserialize)]
pub struct RenewRequest {
    /// PEM certificate signing request of the agent's new key.
    pub csr: String,
}

/// Signs a certificate for `identity` and builds its agent record.
fn sign(ca: &Ca, csr: &str, identity: &AgentIdentity, ttl: Duration) -> Result<(IssuedAgent, AgentRecord), ApiError> {
    let issued = ca.issue_agent_cert(csr, identity, ttl).map_err(|e| {
        ApiError::bad_request(
            "invalid_csr",
            format!("the certificate signing request is not usable: {e}"),
        )
    })?;
    let record = AgentRecord {
        agent_id: identity.agent_id.clone(),
        cluster: identity.cluster.clone(),
        tenant: identity.tenant.clone(),
        created_us: now_us(),
        cert_serial: issued.serial,
        cert_not_after_us: issued.not_after.as_microsecond(),
        revoked_us: None,
        last_seen_us: None,
        version: None,
        dropped_total: 0,
    };
    let agent = IssuedAgent {
        agent_id: identity.agent_id.clone(),
        tenant: identity.tenant.clone(),
        cluster: identity.cluster.clone(),
        cert: issued.cert_pem,
        ca: issued.ca_pem,
        not_after: issued.not_after,
    };
    Ok((agent, record))
}

fn count(outcome: &'static str) {
    crate::ops::metrics()
        .enrollments
        .get_or_create(&crate::ops::OutcomeLabel { outcome })
        .inc();
}

fn outcome<T>(result: &Result<T, ApiError>, ok: &'static str) -> &'static str {
    match result {
        Ok(_) => ok,
        Err(e) if e.status.is_client_error() => "refused",
        Err(_) => "failed",
    }
}

fn new_agent_id() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

/// Signs and records an operator-issued agent certificate. `min_ttl` is
/// [`MIN_CERT_TTL`] except for the offline command's test-only escape hatch.
pub async fn issue(
    store: &Store,
    ca: &Ca,
    req: IssueRequest,
    min_ttl: Duration,
    actor: &str,
    source: &str,
) -> Result<IssuedAgent, ApiError> {
    validate_name("cluster", &req.cluster).map_err(|e| ApiError::bad_request("invalid_name", e.to_string()))?;
    validate_name("tenant", &req.tenant).map_err(|e| ApiError::bad_request("invalid_name", e.to_string()))?;
    let ttl = Duration::from_secs(req.ttl_seconds);
    if ttl < min_ttl || ttl > MAX_CERT_TTL {
        return Err(ApiError::bad_request(
            "invalid_ttl",
            "certificate lifetime must be between 1 minute and 366 days",
        ));
    }
    let identity = AgentIdentity {
        tenant: req.tenant,
        cluster: req.cluster,
        agent_id: new_agent_id(),
    };
    let (issued, record) = sign(ca, &req.csr, &identity, ttl)?;
    let job = AccessJob {
        op: AccessOp::IssueCert(record),
        actor: actor.into(),
        source: source.into(),
    };
    store.access(job).await?;
    tracing::info!(agent = %identity.agent_id, cluster = %identity.cluster, tenant = %identity.tenant, "agent certificate issued");
    Ok(issued)
}

fn source_of(conn: &Option<Extension<ConnInfo>>) -> String {
    conn.as_ref().map_or_else(|| "unknown".into(), |c| c.remote.to_string())
}

/// `POST /v1/admin/certs` (admin): what `cert issue` calls while `serve` holds the store.
pub async fn issue_handler(
    State(state): State<AppState>,
    caller: Caller,
    conn: Option<Extension<ConnInfo>>,
    body: Body,
) -> Result<Json<IssuedAgent>, ApiError> {
    caller.require_admin()?;
    let raw = read_limited(body, MAX_BODY, state.limits.body_read_timeout).await?;
    let mut req: IssueRequest = json_body(&raw)?;
    if let Some(tenant) = caller.tenant_for(Some(req.tenant.clone()))? {
        req.tenant = tenant;
    }
    let source = source_of(&conn);
    issue(&state.store, &state.ca, req, MIN_CERT_TTL, &caller.actor, &source)
        .await
        .map(Json)
}

/// `GET /v1/ca`: the CA certificate (public). Agents check it against their
/// pin before they send anything secret.
pub async fn ca_handler(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        state.ca.cert_pem().to_owned(),
    )
}

/// `POST /v1/enroll`: token + CSR → a client certificate for the token's
/// cluster. Failed attempts count against the source address.
pub async fn enroll_handler(
    State(state): State<AppState>,
    conn: Option<Extension<ConnInfo>>,
    body: Body,
) -> Result<Json<IssuedAgent>, ApiError> {
    let ip = conn.as_ref().map(|c| c.remote.ip());
    if let Some(ip) = ip
        && let Err(wait) = state.limiter.check(ip)
    {
        tracing::info!(remote = %ip, "enrollment refused: too many failed attempts");
        count("limited");
        return Err(ApiError::too_many(
            "too many failed enrollment attempts from this address: wait and retry with a valid token",
            wait.as_secs() + 1,
        ));
    }
    let source = source_of(&conn);
    let result = enroll(&state, &source, body).await;
    count(outcome(&result, "enrolled"));
    if let Err(e) = &result {
        tracing::info!(status = e.status.as_u16(), code = e.code, remote = %source, "enrollment refused");
        if e.status.is_client_error()
            && let Some(ip) = ip
        {
            state.limiter.record_failure(ip);
        }
    }
    result.map(Json)
}

async fn enroll(state: &AppState, source: &str, body: Body) -> Result<IssuedAgent, ApiError> {
    let raw = read_limited(body, MAX_BODY, state.limits.body_read_timeout).await?;
    let req: EnrollRequest = json_body(&raw)?;
    let token = EnrollToken::parse(&req.token).map_err(|e| ApiError::bad_request("token_malformed", e.to_string()))?;
    if req.agent_version.as_ref().is_some_and(|v| v.len() > 128) {
        return Err(ApiError::bad_request(
            "invalid_body",
            "agent_version: longer than 128 bytes",
        ));
    }
    let secret_sha256 = token.secret_sha256();
    // Check before signing so a bad token costs no signature; the write
    // below checks again, atomically with spending the use.
    let record = state.store.token(token.id.clone()).await?;
    check_token(record.as_ref(), &secret_sha256, now_us()).map_err(StoreError::from)?;
    let Some(record) = record else {
        return Err(StoreError::from(crate::store::Refusal::TokenInvalid).into());
    };
    let identity = AgentIdentity {
        tenant: record.tenant,
        cluster: record.cluster,
        agent_id: new_agent_id(),
    };
    let (issued, mut agent) = sign(&state.ca, &req.csr, &identity, state.limits.cert_ttl)?;
    agent.version = req.agent_version.filter(|v| !v.is_empty());
    let job = AccessJob {
        op: AccessOp::Enroll {
            token_id: token.id.clone(),
            secret_sha256,
            agent,
        },
        actor: format!("token:{}", token.id),
        source: source.into(),
    };
    state.store.access(job).await?;
    tracing::info!(agent = %identity.agent_id, cluster = %identity.cluster, tenant = %identity.tenant, token = %token.id, "agent enrolled");
    Ok(issued)
}

/// `POST /v1/renew` (client certificate required): a new certificate for the
/// same identity and a new key, with a fresh lifetime. Refused for revoked or
/// unknown agents.
pub async fn renew_handler(
    State(state): State<AppState>,
    conn: Option<Extension<ConnInfo>>,
    body: Body,
) -> Result<Json<IssuedAgent>, ApiError> {
    let Some(Extension(info)) = &conn else {
        return Err(ApiError::unauthorized(
            "client_certificate_required",
            "POST /v1/renew needs the agent's current client certificate; enroll with a token if it expired",
        ));
    };
    let identity = info.live_identity("POST /v1/renew")?;
    let raw = read_limited(body, MAX_BODY, state.limits.body_read_timeout).await?;
    let req: RenewRequest = json_body(&raw)?;
    let (issued, record) = sign(&state.ca, &req.csr, &identity, state.limits.cert_ttl)?;
    let job = AccessJob {
        op: AccessOp::Renew {
            identity: identity.clone(),
            cert_serial: record.cert_serial,
            cert_not_after_us: record.cert_not_after_us,
        },
        actor: format!("agent:{}", identity.agent_id),
        source: source_of(&conn),
    };
    let result = state.store.access(job).await.map_err(ApiError::from);
    count(outcome(&result, "renewed"));
    if let Err(e) = &result {
        tracing::info!(agent = %identity.agent_id, code = e.code, "renewal refused");
    } else {
        tracing::info!(agent = %identity.agent_id, cluster = %identity.cluster, "agent certificate renewed");
    }
    result.map(|_| Json(issued))
}
