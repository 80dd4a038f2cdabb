//! Bearer-token authentication and the simulated RBAC (SelfSubjectAccessReview answers and
//! 403s on denied requests agree, as they do on a real server).

use axum::http::{HeaderMap, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::Shared;
use super::status::{ApiError, json_body};

/// Result of checking the Authorization header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Authn {
    /// Valid token, or no token configured.
    User,
    /// No credentials presented.
    Anonymous,
    /// Wrong credentials (always 401).
    Rejected,
}

pub(crate) fn authenticate(expected: Option<&str>, headers: &HeaderMap) -> Authn {
    let Some(expected) = expected else {
        return Authn::User;
    };
    match headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        None => Authn::Anonymous,
        Some(v) => match v.strip_prefix("Bearer ") {
            Some(t) if t.trim() == expected => Authn::User,
            _ => Authn::Rejected,
        },
    }
}

/// Answers a SelfSubjectAccessReview from the configured denials.
pub(crate) fn self_subject_access_review(sh: &Shared, body: &[u8]) -> Result<Response, ApiError> {
    // kubectl sends this one as protobuf.
    let mut review: Value = if super::proto::is_protobuf(body) {
        super::proto::self_subject_access_review(body)
            .ok_or_else(|| ApiError::bad_request("error decoding SelfSubjectAccessReview protobuf"))?
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding SelfSubjectAccessReview: {e}")))?
    };
    let attrs = &review["spec"]["resourceAttributes"];
    let status = if attrs.is_object() {
        let verb = attrs["verb"].as_str().unwrap_or("");
        let resource = attrs["resource"].as_str().unwrap_or("");
        let sub = attrs["subresource"].as_str().unwrap_or("");
        let full = if sub.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}/{sub}")
        };
        let name = attrs["name"].as_str().filter(|n| !n.is_empty());
        if sh.faults.is_denied(verb, &full, name) {
            json!({ "allowed": false, "reason": "denied by podwarn-sim fault switch" })
        } else {
            json!({ "allowed": true, "reason": "RBAC: allowed by podwarn-sim" })
        }
    } else {
        // Non-resource URLs (/healthz, /version) are always allowed.
        json!({ "allowed": true })
    };
    review["status"] = status;
    review["metadata"] = json!({ "creationTimestamp": null });
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["kind"] = json!("SelfSubjectAccessReview");
    let mut resp = json_body(&review);
    *resp.status_mut() = axum::http::StatusCode::CREATED;
    Ok(resp)
}
