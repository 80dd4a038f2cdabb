//! coordination.k8s.io/v1 Leases: create, replace and patch with resourceVersion
//! optimistic concurrency (409 Conflict on a stale version, as the real server answers).

use axum::http::StatusCode;
use axum::response::Response;
use k8s_openapi::api::coordination::v1::Lease;
use serde_json::Value;

use super::discovery::{ResourceInfo, for_kind};
use super::status::{ApiError, json_bytes};
use super::store::{Kind, State, StoreError};

fn info() -> &'static ResourceInfo {
    for_kind(Kind::Lease)
}

fn decode(body: &[u8]) -> Result<Lease, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding Lease: {e}")))
}

fn respond(lease: &Lease, code: StatusCode) -> Response {
    let mut resp = json_bytes(serde_json::to_vec(lease).unwrap_or_default());
    *resp.status_mut() = code;
    resp
}

fn map_err(e: StoreError, name: &str) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found(info(), name),
        StoreError::AlreadyExists => ApiError::already_exists(info(), name),
        StoreError::Conflict => ApiError::conflict(info(), name),
        StoreError::Expired(f) => ApiError::too_old(0, f),
    }
}

fn precondition(lease: &Lease) -> Result<Option<u64>, ApiError> {
    match lease.metadata.resource_version.as_deref() {
        None | Some("") => Ok(None),
        Some(rv) => rv
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))),
    }
}

pub(crate) fn create(state: &mut State, ns: &str, body: &[u8]) -> Result<Response, ApiError> {
    let mut lease = decode(body)?;
    lease.metadata.namespace = Some(ns.to_string());
    lease.metadata.resource_version = None;
    lease.metadata.uid = None;
    let name = lease.metadata.name.clone().unwrap_or_default();
    if name.is_empty() {
        return Err(ApiError::bad_request(
            "Lease.coordination.k8s.io \"\" is invalid: metadata.name: Required value: name or generateName is required",
        ));
    }
    let lease = state.create(lease).map_err(|e| map_err(e, &name))?;
    Ok(respond(&lease, StatusCode::CREATED))
}

pub(crate) fn replace(state: &mut State, ns: &str, name: &str, body: &[u8]) -> Result<Response, ApiError> {
    let mut lease = decode(body)?;
    if lease.metadata.name.as_deref().is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            lease.metadata.name.as_deref().unwrap_or("")
        )));
    }
    lease.metadata.name = Some(name.to_string());
    lease.metadata.namespace = Some(ns.to_string());
    let expected = precondition(&lease)?;
    let lease = state.update(lease, expected).map_err(|e| map_err(e, name))?;
    Ok(respond(&lease, StatusCode::OK))
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// JSON merge patch, strategic merge patch and server-side apply all behave as a merge
/// for a Lease (it has no lists to merge by key); apply creates a missing Lease.
pub(crate) fn patch(
    state: &mut State,
    ns: &str,
    name: &str,
    content_type: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let patch: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let apply = content_type.starts_with("application/apply-patch");
    let existing = state.get::<Lease>(ns, name).cloned();
    let mut doc = match &existing {
        Some(l) => serde_json::to_value(l).unwrap_or(Value::Null),
        None if apply => serde_json::json!({ "metadata": { "name": name, "namespace": ns } }),
        None => return Err(ApiError::not_found(info(), name)),
    };
    let expected = patch["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|r| r.parse::<u64>().ok());
    merge(&mut doc, &patch);
    let mut lease: Lease =
        serde_json::from_value(doc).map_err(|e| ApiError::bad_request(format!("error decoding patched Lease: {e}")))?;
    lease.metadata.name = Some(name.to_string());
    lease.metadata.namespace = Some(ns.to_string());
    if existing.is_none() {
        lease.metadata.resource_version = None;
        let lease = state.create(lease).map_err(|e| map_err(e, name))?;
        return Ok(respond(&lease, StatusCode::CREATED));
    }
    let lease = state.update(lease, expected).map_err(|e| map_err(e, name))?;
    Ok(respond(&lease, StatusCode::OK))
}
