//! Administration of access: enrollment tokens, agents, cluster removal and
//! API keys. Each operation is one function used both by its HTTP endpoint
//! (`/v1/admin/…`, admin role) and by the CLI when it opens the store itself.
//!
//! A tenant-scoped admin key administers only its tenant: objects of other
//! tenants read as not found, and it cannot create anything outside it.

use crate::auth::{Caller, api_key_id, digest, new_secret};
use crate::names::validate_name;
use crate::store::schema::{ApiKeyRecord, TokenRecord};
use crate::store::{AccessJob, AccessOp, AccessOutcome, Store, now_us};
use crate::token::EnrollToken;
use crate::{error::ApiError, names::InvalidName};
use std::time::Duration;

mod views;
pub use views::*;

/// Longest token lifetime.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(366 * 86400);

fn bad_name(e: InvalidName) -> ApiError {
    ApiError::bad_request("invalid_name", e.to_string())
}

/// Refuses, before any lookup, an id no `kind` can have (`shape` says what ids look like).
fn check_id(kind: &str, id: &str, valid: bool, shape: &str) -> Result<(), ApiError> {
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_parameter",
            format!("{} is not {kind} id ({shape})", crate::error::quote(id)),
        ))
    }
}

fn is_lower_hex(id: &str, len: usize) -> bool {
    id.len() == len && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn job(caller: &Caller, source: &str, op: AccessOp) -> AccessJob {
    AccessJob {
        op,
        actor: caller.actor.clone(),
        source: source.into(),
    }
}

/// Creates an enrollment token.
pub async fn create_token(
    store: &Store,
    caller: &Caller,
    source: &str,
    req: CreateTokenRequest,
    ca_pin: String,
) -> Result<CreatedToken, ApiError> {
    caller.require_admin()?;
    let tenant = caller.tenant_for(req.tenant)?.unwrap_or_else(|| "default".into());
    validate_name("cluster", &req.cluster).map_err(bad_name)?;
    validate_name("tenant", &tenant).map_err(bad_name)?;
    let ttl = Duration::from_secs(req.ttl_seconds);
    if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
        return Err(ApiError::bad_request(
            "invalid_ttl",
            "token lifetime must be between 1 second and 366 days",
        ));
    }
    if req.uses == Some(0) {
        return Err(ApiError::bad_request("invalid_uses", "`uses` must be at least 1"));
    }
    let token = EnrollToken::generate();
    let now = now_us();
    let record = TokenRecord {
        id: token.id.clone(),
        secret_sha256: token.secret_sha256(),
        cluster: req.cluster,
        tenant,
        created_us: now,
        expires_us: now.saturating_add(ttl.as_micros() as i64),
        uses_total: req.uses,
        used: 0,
        revoked_us: None,
        last_used_us: None,
    };
    let AccessOutcome::Token(stored) = store.access(job(caller, source, AccessOp::CreateToken(record))).await? else {
        return Err(ApiError::internal());
    };
    tracing::info!(token = %stored.id, cluster = %stored.cluster, tenant = %stored.tenant, "enrollment token created");
    Ok(CreatedToken {
        token: token.reveal(),
        ca_pin,
        view: TokenView::of(stored, now),
    })
}

/// Every token the caller may administer, newest first.
pub async fn list_tokens(store: &Store, caller: &Caller) -> Result<Vec<TokenView>, ApiError> {
    caller.require_admin()?;
    let now = now_us();
    let mut tokens: Vec<TokenRecord> = store.tokens().await?;
    tokens.retain(|t| caller.may_see(&t.tenant));
    tokens.sort_by_key(|t| std::cmp::Reverse(t.created_us));
    Ok(tokens.into_iter().map(|t| TokenView::of(t, now)).collect())
}

/// Revokes a token.
pub async fn revoke_token(store: &Store, caller: &Caller, source: &str, id: String) -> Result<TokenView, ApiError> {
    caller.require_admin()?;
    let valid = (8..=16).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    check_id("a token", &id, valid, "8 to 16 characters of a-z and 0-9")?;
    let op = AccessOp::RevokeToken {
        id,
        tenant: caller.tenant.clone(),
    };
    match store.access(job(caller, source, op)).await? {
        AccessOutcome::Token(t) => Ok(TokenView::of(t, now_us())),
        _ => Err(ApiError::internal()),
    }
}

/// Every agent the caller may administer, by cluster then enrollment time.
pub async fn list_agents(store: &Store, caller: &Caller) -> Result<Vec<AgentView>, ApiError> {
    caller.require_admin()?;
    let mut agents = store.agents().await?;
    agents.retain(|a| caller.may_see(&a.tenant));
    agents.sort_by(|a, b| (&a.cluster, a.created_us).cmp(&(&b.cluster, b.created_us)));
    Ok(agents.into_iter().map(AgentView::from).collect())
}

/// Revokes an agent: refused from its next request on.
pub async fn revoke_agent(store: &Store, caller: &Caller, source: &str, id: String) -> Result<AgentView, ApiError> {
    caller.require_admin()?;
    check_id("an agent", &id, is_lower_hex(&id, 16), "16 hex digits")?;
    let op = AccessOp::RevokeAgent {
        agent_id: id,
        tenant: caller.tenant.clone(),
    };
    match store.access(job(caller, source, op)).await? {
        AccessOutcome::Agent(a) => {
            tracing::info!(agent = %a.agent_id, cluster = %a.cluster, "agent revoked");
            Ok(a.into())
        }
        _ => Err(ApiError::internal()),
    }
}

/// Revokes every agent and token of a cluster; with `purge`, deletes its data.
pub async fn remove_cluster(
    store: &Store,
    caller: &Caller,
    source: &str,
    cluster: String,
    purge: bool,
) -> Result<ClusterRemoved, ApiError> {
    caller.require_admin()?;
    validate_name("cluster", &cluster).map_err(bad_name)?;
    let op = AccessOp::RemoveCluster {
        cluster: cluster.clone(),
        tenant: caller.tenant.clone(),
    };
    let (removed, purged) = store.remove_cluster(job(caller, source, op), purge).await?;
    let AccessOutcome::ClusterRemoved { tenant, agents, tokens } = removed else {
        return Err(ApiError::internal());
    };
    tracing::info!(%cluster, %tenant, agents, tokens, purge, events = purged.events, "cluster removed");
    Ok(ClusterRemoved {
        cluster,
        tenant,
        agents_revoked: agents,
        tokens_revoked: tokens,
        events_deleted: purged.events,
        incidents_deleted: purged.incidents,
    })
}

/// Creates an API key.
pub async fn create_apikey(
    store: &Store,
    caller: &Caller,
    source: &str,
    req: CreateApiKeyRequest,
) -> Result<CreatedApiKey, ApiError> {
    caller.require_admin()?;
    let tenant = caller.tenant_for(req.tenant)?;
    if let Some(t) = &tenant {
        validate_name("tenant", t).map_err(bad_name)?;
    }
    let key = new_secret("pwk_");
    let key_sha256 = digest(&key);
    let record = ApiKeyRecord {
        id: api_key_id(&key_sha256),
        key_sha256,
        tenant,
        role: req.role,
        created_us: now_us(),
        revoked_us: None,
    };
    match store
        .access(job(caller, source, AccessOp::CreateApiKey(record)))
        .await?
    {
        AccessOutcome::ApiKey(k) => Ok(CreatedApiKey { key, view: k.into() }),
        _ => Err(ApiError::internal()),
    }
}

/// Every API key the caller may administer.
pub async fn list_apikeys(store: &Store, caller: &Caller) -> Result<Vec<ApiKeyView>, ApiError> {
    caller.require_admin()?;
    let mut keys = store.api_keys().await?;
    keys.retain(|k| caller.tenant.is_none() || k.tenant == caller.tenant);
    keys.sort_by_key(|k| std::cmp::Reverse(k.created_us));
    Ok(keys.into_iter().map(ApiKeyView::from).collect())
}

/// Revokes an API key: refused from its next request on.
pub async fn revoke_apikey(store: &Store, caller: &Caller, source: &str, id: String) -> Result<ApiKeyView, ApiError> {
    caller.require_admin()?;
    check_id("an API key", &id, is_lower_hex(&id, 12), "12 hex digits")?;
    let op = AccessOp::RevokeApiKey {
        id,
        tenant: caller.tenant.clone(),
    };
    match store.access(job(caller, source, op)).await? {
        AccessOutcome::ApiKey(k) => Ok(k.into()),
        _ => Err(ApiError::internal()),
    }
}
