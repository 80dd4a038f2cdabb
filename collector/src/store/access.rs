//! Writes of the access-control state: enrollment tokens, agent certificates,
//! revocation, cluster removal and API keys.
//!
//! Each change is one [`AccessJob`] applied by the single writer inside its
//! group transaction, and appends its audit entry in that same transaction:
//! an action is recorded if and only if it happened. Every refusal is decided
//! before anything is written, so a refused job never aborts its group.

use super::cluster::{cluster_is_free, purge_step, remove_cluster};
use super::schema::*;
use super::writer::{State, Tables, Work, check_agent};
use super::{Result, StoreError, now_us};
use crate::tls::AgentIdentity;
use redb::{ReadableTable, Table};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

/// Why an access change was refused. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No token has this id, or its secret does not match (indistinguishable on purpose).
    #[error("the enrollment token is not valid for this collector")]
    TokenInvalid,
    /// The token's lifetime is over.
    #[error("the enrollment token has expired: create a new one with `podwarn-collector token create`")]
    TokenExpired,
    /// Every enrollment the token allowed has been used.
    #[error("the enrollment token has no uses left: create a new one with `podwarn-collector token create`")]
    TokenUsedUp,
    /// An operator revoked the token.
    #[error("the enrollment token was revoked: ask the operator for a new one")]
    TokenRevoked,
    /// No such object, or one outside the caller's tenant.
    #[error("no {what} {id:?}")]
    NotFound {
        /// What kind of object.
        what: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The change contradicts what is stored (e.g. a cluster name owned by another tenant).
    #[error("{0}")]
    Conflict(String),
}

/// A change to the access state, with who asked for it.
#[derive(Debug, Clone)]
pub struct AccessJob {
    /// The change.
    pub op: AccessOp,
    /// Who acts: `admin-token`, `local-cli`, `apikey:<id>`, `token:<id>`, `agent:<id>`.
    pub actor: String,
    /// The caller's network address, or `local`.
    pub source: String,
}

/// The changes the access state knows. `tenant` fields confine an operator
/// to one tenant: objects of other tenants read as not found.
#[derive(Debug, Clone)]
pub enum AccessOp {
    /// Store a new enrollment token.
    CreateToken(TokenRecord),
    /// Revoke a token.
    RevokeToken {
        /// Token id.
        id: String,
        /// The caller's tenant scope.
        tenant: Option<String>,
    },
    /// Spend one use of a token and register the agent it enrolls, atomically.
    Enroll {
        /// Token id.
        token_id: String,
        /// SHA-256 of the presented secret.
        secret_sha256: [u8; 32],
        /// The agent to register; cluster and tenant were taken from the token.
        agent: AgentRecord,
    },
    /// Register an agent certificate issued by an operator (`cert issue`).
    IssueCert(AgentRecord),
    /// Record a renewed certificate of a live agent.
    Renew {
        /// The identity of the certificate that asked.
        identity: AgentIdentity,
        /// The new certificate's serial, hex.
        cert_serial: String,
        /// The new certificate's expiry.
        cert_not_after_us: i64,
    },
    /// Revoke an agent: refused from its next request on.
    RevokeAgent {
        /// Agent id.
        agent_id: String,
        /// The caller's tenant scope.
        tenant: Option<String>,
    },
    /// Revoke every agent and token of a cluster.
    RemoveCluster {
        /// Cluster name.
        cluster: String,
        /// The caller's tenant scope.
        tenant: Option<String>,
    },
    /// Delete a bounded share of a removed cluster's events, incidents and dedup keys.
    PurgeStep {
        /// Cluster name.
        cluster: String,
    },
    /// Store a new API key.
    CreateApiKey(ApiKeyRecord),
    /// Revoke an API key.
    RevokeApiKey {
        /// Key id.
        id: String,
        /// The caller's tenant scope.
        tenant: Option<String>,
    },
}

impl AccessOp {
    /// The cluster whose record this change may create, if any.
    pub fn registers_cluster(&self) -> Option<&str> {
        match self {
            AccessOp::Enroll { agent, .. } | AccessOp::IssueCert(agent) => Some(&agent.cluster),
            _ => None,
        }
    }
}

/// What an access change produced.
#[derive(Debug, Clone)]
pub enum AccessOutcome {
    /// The token as stored now.
    Token(TokenRecord),
    /// The agent as stored now.
    Agent(AgentRecord),
    /// The key as stored now.
    ApiKey(ApiKeyRecord),
    /// A cluster's agents and tokens were revoked.
    ClusterRemoved {
        /// The cluster's tenant.
        tenant: String,
        /// Agents newly revoked.
        agents: u64,
        /// Tokens newly revoked.
        tokens: u64,
    },
    /// One purge step.
    Purged(PurgeOutcome),
}

/// What one purge step deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeOutcome {
    /// Events deleted.
    pub events: u64,
    /// Incidents deleted.
    pub incidents: u64,
    /// Whether more remains.
    pub more: bool,
}

/// Checks a presented token secret against its record, in constant time.
/// A wrong secret and an unknown id give the same answer.
pub fn check_token(rec: Option<&TokenRecord>, secret_sha256: &[u8; 32], now: i64) -> Result<(), Refusal> {
    // Compare against something even for an unknown id, so timing tells nothing.
    const NONE: [u8; 32] = [0; 32];
    let stored = rec.map_or(&NONE, |r| &r.secret_sha256);
    let matches = bool::from(stored.ct_eq(secret_sha256));
    let Some(rec) = rec.filter(|_| matches) else {
        return Err(Refusal::TokenInvalid);
    };
    if rec.revoked_us.is_some() {
        Err(Refusal::TokenRevoked)
    } else if now >= rec.expires_us {
        Err(Refusal::TokenExpired)
    } else if rec.uses_total.is_some_and(|n| rec.used >= n) {
        Err(Refusal::TokenUsedUp)
    } else {
        Ok(())
    }
}

/// Applies one job inside the writer's transaction.
pub(super) fn apply(t: &mut Tables<'_>, state: &mut State, w: &mut Work<'_>, job: AccessJob) -> Result<AccessOutcome> {
    let now = now_us();
    let mut log = Audit {
        actor: job.actor,
        source: job.source,
        now,
    };
    match job.op {
        AccessOp::CreateToken(token) => {
            if t.tokens.get(token.id.as_str())?.is_some() {
                return Err(Refusal::Conflict(format!("token id {} exists already; try again", token.id)).into());
            }
            cluster_is_free(t, state, &token.cluster, &token.tenant)?;
            put(&mut t.tokens, &token.id, &token)?;
            let uses = token.uses_total.map_or("unlimited".into(), |n| n.to_string());
            let detail = format!("uses {uses}, expires {}", ts(token.expires_us));
            log.write(
                t,
                state,
                "token.create",
                &token.tenant,
                Some(&token.cluster),
                &token.id,
                Some(detail),
            )?;
            Ok(AccessOutcome::Token(token))
        }
        AccessOp::RevokeToken { id, tenant } => {
            let mut token: TokenRecord = get_visible(&t.tokens, "token", &id, &tenant, |r: &TokenRecord| &r.tenant)?;
            if token.revoked_us.is_none() {
                token.revoked_us = Some(now);
                put(&mut t.tokens, &id, &token)?;
                log.write(t, state, "token.revoke", &token.tenant, Some(&token.cluster), &id, None)?;
            }
            Ok(AccessOutcome::Token(token))
        }
        AccessOp::Enroll {
            token_id,
            secret_sha256,
            agent,
        } => {
            let token: Option<TokenRecord> = get(&t.tokens, &token_id)?;
            check_token(token.as_ref(), &secret_sha256, now)?;
            let Some(mut token) = token else {
                return Err(Refusal::TokenInvalid.into());
            };
            if token.cluster != agent.cluster || token.tenant != agent.tenant {
                return Err(Refusal::Conflict("the agent does not match its token".into()).into());
            }
            register(t, state, &agent)?;
            token.used += 1;
            token.last_used_us = Some(now);
            put(&mut t.tokens, &token_id, &token)?;
            let uses = token.uses_total.map_or("unlimited".into(), |n| n.to_string());
            log.write(
                t,
                state,
                "agent.enroll",
                &agent.tenant,
                Some(&agent.cluster),
                &agent.agent_id,
                Some(format!("token {token_id} use {}/{uses}", token.used)),
            )?;
            Ok(AccessOutcome::Agent(agent))
        }
        AccessOp::IssueCert(agent) => {
            register(t, state, &agent)?;
            log.write(
                t,
                state,
                "cert.issue",
                &agent.tenant,
                Some(&agent.cluster),
                &agent.agent_id,
                None,
            )?;
            Ok(AccessOutcome::Agent(agent))
        }
        AccessOp::Renew {
            identity,
            cert_serial,
            cert_not_after_us,
        } => {
            let mut agent = check_agent(t, &identity)?;
            agent.cert_serial = cert_serial;
            agent.cert_not_after_us = cert_not_after_us;
            put(&mut t.agents, &agent.agent_id, &agent)?;
            let detail = format!("serial {}, expires {}", agent.cert_serial, ts(cert_not_after_us));
            log.write(
                t,
                state,
                "agent.renew",
                &agent.tenant,
                Some(&agent.cluster),
                &agent.agent_id,
                Some(detail),
            )?;
            Ok(AccessOutcome::Agent(agent))
        }
        AccessOp::RevokeAgent { agent_id, tenant } => {
            let mut agent: AgentRecord =
                get_visible(&t.agents, "agent", &agent_id, &tenant, |r: &AgentRecord| &r.tenant)?;
            if agent.revoked_us.is_none() {
                agent.revoked_us = Some(now);
                put(&mut t.agents, &agent_id, &agent)?;
                log.write(
                    t,
                    state,
                    "agent.revoke",
                    &agent.tenant,
                    Some(&agent.cluster),
                    &agent_id,
                    None,
                )?;
            }
            Ok(AccessOutcome::Agent(agent))
        }
        AccessOp::RemoveCluster { cluster, tenant } => remove_cluster(t, state, &mut log, &cluster, &tenant),
        AccessOp::PurgeStep { cluster } => {
            let tenant = state.clusters.get(&cluster).map(|(_, c)| c.tenant.clone());
            let out = purge_step(t, state, w, &cluster)?;
            if let Some(tenant) = tenant.filter(|_| !out.more) {
                log.write(t, state, "cluster.purge", &tenant, Some(&cluster), &cluster, None)?;
            }
            Ok(AccessOutcome::Purged(out))
        }
        AccessOp::CreateApiKey(key) => {
            if t.api_keys.get(key.id.as_str())?.is_some() {
                return Err(Refusal::Conflict("an API key with this id exists already; try again".into()).into());
            }
            put(&mut t.api_keys, &key.id, &key)?;
            let detail = format!("role {:?}", key.role).to_lowercase();
            let tenant = key.tenant.as_deref().unwrap_or("");
            log.write(t, state, "apikey.create", tenant, None, &key.id, Some(detail))?;
            Ok(AccessOutcome::ApiKey(key))
        }
        AccessOp::RevokeApiKey { id, tenant } => {
            let mut key: ApiKeyRecord = get(&t.api_keys, &id)?
                .filter(|k: &ApiKeyRecord| tenant.is_none() || k.tenant == tenant)
                .ok_or_else(|| not_found("API key", &id))?;
            if key.revoked_us.is_none() {
                key.revoked_us = Some(now);
                put(&mut t.api_keys, &id, &key)?;
                let scope = key.tenant.clone().unwrap_or_default();
                log.write(t, state, "apikey.revoke", &scope, None, &id, None)?;
            }
            Ok(AccessOutcome::ApiKey(key))
        }
    }
}

/// Who and where, for the audit entries of one job.
pub(super) struct Audit {
    actor: String,
    source: String,
    pub(super) now: i64,
}

impl Audit {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn write(
        &mut self,
        t: &mut Tables<'_>,
        state: &mut State,
        action: &str,
        tenant: &str,
        cluster: Option<&str>,
        target: &str,
        detail: Option<String>,
    ) -> Result<()> {
        let rec = AuditRecord {
            time_us: self.now,
            actor: self.actor.clone(),
            action: action.into(),
            tenant: Some(tenant.to_owned()).filter(|t| !t.is_empty()),
            cluster: cluster.map(str::to_owned),
            target: Some(target.to_owned()),
            source: self.source.clone(),
            detail,
        };
        t.audit.insert(state.next_audit, encode(&rec).as_slice())?;
        state.next_audit += 1;
        Ok(())
    }
}

fn ts(us: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_microsecond(us).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

pub(super) fn not_found(what: &'static str, id: &str) -> StoreError {
    Refusal::NotFound { what, id: id.into() }.into()
}

pub(super) type KvTable<'t> = Table<'t, &'static str, &'static [u8]>;

fn get<T: DeserializeOwned>(table: &KvTable<'_>, key: &str) -> Result<Option<T>> {
    match table.get(key)? {
        Some(bytes) => Ok(Some(decode(bytes.value())?)),
        None => Ok(None),
    }
}

/// Loads a record the caller's tenant may act on; anything else is not found.
fn get_visible<T: DeserializeOwned>(
    table: &KvTable<'_>,
    what: &'static str,
    key: &str,
    scope: &Option<String>,
    tenant_of: impl Fn(&T) -> &String,
) -> Result<T> {
    get::<T>(table, key)?
        .filter(|r| scope.as_ref().is_none_or(|s| s == tenant_of(r)))
        .ok_or_else(|| not_found(what, key))
}

pub(super) fn put<T: serde::Serialize>(table: &mut KvTable<'_>, key: &str, rec: &T) -> Result<()> {
    table.insert(key, encode(rec).as_slice())?;
    Ok(())
}

fn register(t: &mut Tables<'_>, state: &mut State, agent: &AgentRecord) -> Result<()> {
    cluster_is_free(t, state, &agent.cluster, &agent.tenant)?;
    if t.agents.get(agent.agent_id.as_str())?.is_some() {
        return Err(Refusal::Conflict("agent id collision; try again".into()).into());
    }
    state.cluster_id(&agent.cluster, &agent.tenant);
    put(&mut t.agents, &agent.agent_id, agent)
}
