//! HTTP endpoints of [`crate::admin`] and the audit log: thin handlers that
//! authenticate, parse and call the shared operation.

use crate::admin::{self, AuditView, CreateApiKeyRequest, CreateTokenRequest};
use crate::auth::Caller;
use crate::error::{ApiError, json_body};
use crate::ingest::read_limited;
use crate::query::{PageBody, Params};
use crate::server::{AppState, ConnInfo};
use crate::store::AuditQuery;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::{Extension, Json};
use serde::Deserialize;

/// Largest admin request body.
const MAX_BODY: u64 = 64 * 1024;

/// A list answer (`{"items": [...], "next_cursor": null}`).
type List<T> = Json<PageBody<T>>;

fn list<T>(items: Vec<T>) -> List<T> {
    Json(PageBody {
        items,
        next_cursor: None,
    })
}

fn source(conn: &Option<Extension<ConnInfo>>) -> String {
    conn.as_ref().map_or_else(|| "unknown".into(), |c| c.remote.to_string())
}

async fn body<T: serde::de::DeserializeOwned>(state: &AppState, body: Body) -> Result<T, ApiError> {
    json_body(&read_limited(body, MAX_BODY, state.limits.body_read_timeout).await?)
}

/// `POST /v1/admin/tokens`.
pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    conn: Option<Extension<ConnInfo>>,
    raw: Body,
) -> Result<Json<admin::CreatedToken>, ApiError> {
    caller.require_admin()?;
    let req: CreateTokenRequest = body(&state, raw).await?;
    admin::create_token(&state.store, &caller, &source(&conn), req, state.ca.pin())
        .await
        .map(Json)
}

/// `GET /v1/admin/tokens`.
pub async fn list_tokens(State(state): State<AppState>, caller: Caller) -> Result<List<admin::TokenView>, ApiError> {
    admin::list_tokens(&state.store, &caller).await.map(list)
}

/// `POST /v1/admin/tokens/{id}/revoke`.
pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    conn: Option<Extension<ConnInfo>>,
    Path(id): Path<String>,
) -> Result<Json<admin::TokenView>, ApiError> {
    admin::revoke_token(&state.store, &caller, &source(&conn), id)
        .await
        .map(Json)
}

/// `GET /v1/admin/agents`.
pub async fn list_agents(State(state): State<AppState>, caller: Caller) -> Result<List<admin::AgentView>, ApiError> {
    admin::list_agents(&state.store, &caller).await.map(list)
}

/// `POST /v1/admin/agents/{id}/revoke`.
pub async fn revoke_agent(
    State(state): State<AppState>,
    caller: Caller,
    conn: Option<Extension<ConnInfo>>,
    Path(id): Path<String>,
) -> Result<Json<admin::AgentView>, ApiError> {
    admin::revoke_agent(&state.store, &caller, &source(&conn), id)
        .await
        .map(Json)
}

/// `POST /v1/admin/clusters/{name}/remove` body.
#[derive(Debug, Default, Deserialize)]
pub struct RemoveClusterRequest {
    /// Also delete the cluster's events, incidents and dedup keys.
    #[serde(default)]
    pub purge: bool,
}

/// `POST /v1/admin/clusters/{name}/remove`.
pub async fn remove_cluster(
    State(state): State<AppState>,
    caller: Caller,
    conn: Option<Extension<ConnInfo>>,
    Path(name): Path<String>,
    raw: Body,
) -> Result<Json<admin::ClusterRemoved>, ApiError> {
    caller.require_admin()?;
    let bytes = read_limited(raw, MAX_BODY, state.limits.body_read_timeout).await?;
    let req: RemoveClusterRequest = if bytes.is_empty() {
        RemoveClusterRequest::default()
    } else {
        json_body(&bytes)?
    };
    admin::remove_cluster(&state.store, &caller, &source(&conn), name, req.purge)
        .await
        .map(Json)
}

/// `POST /v1/admin/apikeys`.
pub async fn create_apikey(
    State(state): State<AppState>,
    caller: Caller,
    conn: Option<Extension<ConnInfo>>,
    raw: Body,
) -> Result<Json<admin::CreatedApiKey>, ApiError> {
    caller.require_admin()?;
    let req: CreateApiKeyRequest = body(&state, raw).await?;
    admin::create_apikey(&state.store, &caller, &source(&conn), req)
        .await
        .map(Json)
}

/// `GET /v1/admin/apikeys`.
pub async fn list_apikeys(State(state): State<AppState>, caller: Caller) -> Result<List<admin::ApiKeyView>, ApiError> {
    admin::list_apikeys(&state.store, &caller).await.map(list)
}

/// `POST /v1/admin/apikeys/{id}/revoke`.
pub async fn revoke_apikey(
    State(state): State<AppState>,
    caller: Caller,
    conn: Option<Extension<ConnInfo>>,
    Path(id): Path<String>,
) -> Result<Json<admin::ApiKeyView>, ApiError> {
    admin::revoke_apikey(&state.store, &caller, &source(&conn), id)
        .await
        .map(Json)
}

/// `GET /v1/audit` (admin): newest first, cursor paging; a tenant admin sees its tenant's entries.
pub async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<List<AuditView>, ApiError> {
    caller.require_admin()?;
    let p = Params::parse(raw, &["limit", "cursor"])?;
    let query = AuditQuery {
        tenant: caller.tenant.clone(),
        limit: p.limit()?,
        after: p.cursor()?,
    };
    let page = state.store.audit(query).await?;
    Ok(Json(PageBody {
        items: page.items.into_iter().map(|(seq, r)| AuditView::of(seq, r)).collect(),
        next_cursor: p.encode_cursor(page.next),
    }))
}
