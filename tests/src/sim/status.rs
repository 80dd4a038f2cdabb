//! `metav1.Status` failures exactly as the real API server words them.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::discovery::ResourceInfo;

/// An API failure answered as a Status object.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
    pub(crate) message: String,
    pub(crate) details: Value,
    pub(crate) retry_after: Option<u64>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: Value::Null,
            retry_after: None,
        }
    }

    fn with_details(mut self, info: &ResourceInfo, name: &str) -> Self {
        let mut d = json!({ "kind": info.plural });
        if !name.is_empty() {
            d["name"] = json!(name);
        }
        if !info.group.is_empty() {
            d["group"] = json!(info.group);
        }
        self.details = d;
        self
    }

    pub(crate) fn not_found(info: &ResourceInfo, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} \"{name}\" not found", info.qualified())).with_details(info, name)
    }

    pub(crate) fn no_route() -> Self {
        let mut e = Self::new(404, "NotFound", "the server could not find the requested resource");
        e.details = json!({});
        e
    }

    pub(crate) fn already_exists(info: &ResourceInfo, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", info.qualified()),
        )
        .with_details(info, name)
    }

    pub(crate) fn conflict(info: &ResourceInfo, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                info.qualified()
            ),
        )
        .with_details(info, name)
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub(crate) fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// The RBAC denial text, e.g. `events is forbidden: User "u" cannot watch resource
    /// "events" in API group "" at the cluster scope`.
    pub(crate) fn forbidden(
        user: &str,
        verb: &str,
        info: &ResourceInfo,
        sub: Option<&str>,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Self {
        let resource = match sub {
            Some(s) => format!("{}/{s}", info.plural),
            None => info.plural.to_string(),
        };
        let subject = match name {
            Some(n) => format!("{} \"{n}\"", info.qualified()),
            None => info.qualified(),
        };
        let scope = match namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_string(),
        };
        Self::new(
            403,
            "Forbidden",
            format!(
                "{subject} is forbidden: User \"{user}\" cannot {verb} resource \"{resource}\" \
                 in API group \"{}\" {scope}",
                info.group
            ),
        )
        .with_details(info, name.unwrap_or(""))
    }

    /// 410 for a resourceVersion older than the kept window.
    pub(crate) fn too_old(requested: u64, floor: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({floor})"),
        )
    }

    pub(crate) fn continue_expired() -> Self {
        Self::new(
            410,
            "Expired",
            "The provided continue parameter is too old to display a consistent list result. \
             You can start a new list without the continue parameter, or use the continue token \
             in this response to retrieve the remainder of the results. Continuing with the \
             provided token results in an inconsistent list - objects that were created, \
             modified, or deleted between the time the first chunk was returned and now may \
             show up in the list.",
        )
    }

    /// Injected failure with the reason the real server uses for that code.
    pub(crate) fn injected(code: u16, retry_after: Option<u64>) -> Self {
        let (reason, message) = match code {
            429 => ("TooManyRequests", "Too many requests, please try again later."),
            503 => (
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
            ),
            504 => (
                "Timeout",
                "the server was unable to return a response in the time allotted",
            ),
            _ => (
                "InternalError",
                "Internal error occurred: injected failure (podwarn-sim fault)",
            ),
        };
        let mut e = Self::new(code, reason, message);
        if let Some(secs) = retry_after {
            e.details = json!({ "retryAfterSeconds": secs });
            e.retry_after = Some(secs);
        }
        e
    }

    /// The Status object as JSON.
    pub(crate) fn to_json(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if !self.details.is_null() {
            v["details"] = self.details.clone();
        }
        v
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (code, json_body(&self.to_json())).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

/// A JSON response body with the content type the API server uses.
pub(crate) fn json_body(v: &Value) -> Response {
    json_bytes(serde_json::to_vec(v).unwrap_or_default())
}

pub(crate) fn json_bytes(body: impl Into<axum::body::Body>) -> Response {
    let mut resp = Response::new(body.into());
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
