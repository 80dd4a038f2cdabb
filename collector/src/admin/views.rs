//! What the admin operations take and answer: request bodies and views of
//! stored records. Views never carry a secret or a secret's digest.

use crate::auth::Role;
use crate::store::schema::{AgentRecord, ApiKeyRecord, AuditRecord, TokenRecord};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

fn ts(us: i64) -> Timestamp {
    Timestamp::from_microsecond(us).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// `POST /v1/admin/tokens` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateTokenRequest {
    /// The cluster agents enrolling with it are bound to.
    pub cluster: String,
    /// The tenant (default `default`, or the caller's own tenant).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Lifetime in seconds (1 s to 366 days).
    pub ttl_seconds: u64,
    /// Enrollments allowed; none for unlimited until expiry.
    #[serde(default)]
    pub uses: Option<u64>,
}

/// A token as lists show it: never the secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenView {
    /// Public id.
    pub id: String,
    /// Cluster bound.
    pub cluster: String,
    /// Tenant bound.
    pub tenant: String,
    /// Created at.
    pub created: Timestamp,
    /// Expires at.
    pub expires: Timestamp,
    /// Enrollments allowed in total; `null` for unlimited.
    pub uses_total: Option<u64>,
    /// Enrollments left; `null` for unlimited.
    pub uses_left: Option<u64>,
    /// Enrollments done.
    pub used: u64,
    /// Last enrollment.
    pub last_used: Option<Timestamp>,
    /// When it was revoked.
    pub revoked: Option<Timestamp>,
    /// `active`, `expired`, `used_up` or `revoked`.
    pub state: String,
}

impl TokenView {
    pub(crate) fn of(t: TokenRecord, now: i64) -> Self {
        let state = if t.revoked_us.is_some() {
            "revoked"
        } else if now >= t.expires_us {
            "expired"
        } else if t.uses_total.is_some_and(|n| t.used >= n) {
            "used_up"
        } else {
            "active"
        };
        Self {
            id: t.id,
            cluster: t.cluster,
            tenant: t.tenant,
            created: ts(t.created_us),
            expires: ts(t.expires_us),
            uses_total: t.uses_total,
            uses_left: t.uses_total.map(|n| n.saturating_sub(t.used)),
            used: t.used,
            last_used: t.last_used_us.map(ts),
            revoked: t.revoked_us.map(ts),
            state: state.into(),
        }
    }
}

/// A new token: the only time its secret is shown. `Debug` hides it.
#[derive(Clone, Serialize, Deserialize)]
pub struct CreatedToken {
    /// `pw1.<id>.<secret>`.
    pub token: String,
    /// The CA pin agents check before sending the token.
    pub ca_pin: String,
    /// The stored token.
    #[serde(flatten)]
    pub view: TokenView,
}

/// An agent as `agent list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentView {
    /// Agent id.
    pub agent_id: String,
    /// Cluster of its certificate.
    pub cluster: String,
    /// Tenant of its certificate.
    pub tenant: String,
    /// Enrolled at.
    pub created: Timestamp,
    /// Last accepted batch.
    pub last_seen: Option<Timestamp>,
    /// Version from its last batch or enrollment.
    pub version: Option<String>,
    /// Current certificate's expiry.
    pub cert_expires: Timestamp,
    /// When it was revoked.
    pub revoked: Option<Timestamp>,
}

impl From<AgentRecord> for AgentView {
    fn from(a: AgentRecord) -> Self {
        Self {
            agent_id: a.agent_id,
            cluster: a.cluster,
            tenant: a.tenant,
            created: ts(a.created_us),
            last_seen: a.last_seen_us.map(ts),
            version: a.version,
            cert_expires: ts(a.cert_not_after_us),
            revoked: a.revoked_us.map(ts),
        }
    }
}

/// `POST /v1/admin/apikeys` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateApiKeyRequest {
    /// The tenant the key is confined to; none for every tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// `read` or `admin`.
    pub role: Role,
}

/// An API key as lists show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiKeyView {
    /// Public id.
    pub id: String,
    /// Tenant it is confined to; `null` for every tenant.
    pub tenant: Option<String>,
    /// `read` or `admin`.
    pub role: Role,
    /// Created at.
    pub created: Timestamp,
    /// When it was revoked.
    pub revoked: Option<Timestamp>,
}

impl From<ApiKeyRecord> for ApiKeyView {
    fn from(k: ApiKeyRecord) -> Self {
        Self {
            id: k.id,
            tenant: k.tenant,
            role: k.role,
            created: ts(k.created_us),
            revoked: k.revoked_us.map(ts),
        }
    }
}

/// A new API key: the only time it is shown. `Debug` hides it.
#[derive(Clone, Serialize, Deserialize)]
pub struct CreatedApiKey {
    /// `pwk_…`: the bearer token.
    pub key: String,
    /// The stored key.
    #[serde(flatten)]
    pub view: ApiKeyView,
}

/// What `cluster remove` did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterRemoved {
    /// The cluster.
    pub cluster: String,
    /// Its tenant.
    pub tenant: String,
    /// Agents revoked now.
    pub agents_revoked: u64,
    /// Tokens revoked now.
    pub tokens_revoked: u64,
    /// Events deleted (with `purge`).
    pub events_deleted: u64,
    /// Incidents deleted (with `purge`).
    pub incidents_deleted: u64,
}

/// An audit log entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditView {
    /// Position in the log (higher is newer).
    pub seq: u64,
    /// When.
    pub time: Timestamp,
    /// Who: `admin-token`, `local-cli`, `apikey:<id>`, `token:<id>`, `agent:<id>`.
    pub actor: String,
    /// What, e.g. `token.create`, `agent.enroll`, `agent.revoke`.
    pub action: String,
    /// Tenant concerned.
    pub tenant: Option<String>,
    /// Cluster concerned.
    pub cluster: Option<String>,
    /// Object acted on.
    pub target: Option<String>,
    /// Network address of the caller, or `local`.
    pub source: String,
    /// A short note.
    pub detail: Option<String>,
}

impl AuditView {
    /// The view of a stored entry.
    pub fn of(seq: u64, r: AuditRecord) -> Self {
        Self {
            seq,
            time: ts(r.time_us),
            actor: r.actor,
            action: r.action,
            tenant: r.tenant,
            cluster: r.cluster,
            target: r.target,
            source: r.source,
            detail: r.detail,
        }
    }
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("token", &"<redacted>")
            .field("ca_pin", &self.ca_pin)
            .field("view", &self.view)
            .finish()
    }
}

impl std::fmt::Debug for CreatedApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedApiKey")
            .field("key", &"<redacted>")
            .field("view", &self.view)
            .finish()
    }
}
