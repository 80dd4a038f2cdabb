//! The one error type every HTTP endpoint answers with: a status and the JSON
//! shape `{"error": {"code", "message"}}`. Internal causes are logged, never
//! sent.

use crate::store::{Refusal, StoreError};
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use podwarn_shared::wire::{ErrorBody, ErrorDetail};

/// An error answered to an HTTP client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable machine-readable code.
    pub code: &'static str,
    /// What is wrong and what to do.
    pub message: String,
    /// Seconds to send in `Retry-After` (503 and 429 answers default to 2).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    /// 429: too many failed attempts from this source; retry after `seconds`.
    pub fn too_many(message: impl Into<String>, seconds: u64) -> Self {
        Self {
            retry_after: Some(seconds.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", message)
        }
    }
    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    /// 401: no or wrong credentials.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }
    /// 403: known caller, not allowed.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// 503: the store cannot take writes or reads right now; retry later.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", message)
    }
    /// 500 without details (they go to the log).
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the collector's log has the details",
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.into(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE || self.status == StatusCode::TOO_MANY_REQUESTS {
            let seconds = HeaderValue::from(self.retry_after.unwrap_or(2));
            response.headers_mut().insert(header::RETRY_AFTER, seconds);
        }
        response
    }
}

impl From<StoreError> for ApiError {
    /// Maps store refusals to their documented answers; storage failures are
    /// logged and answered without details.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Refused(refusal) => {
                let message = refusal.to_string();
                match refusal {
                    Refusal::TokenInvalid => Self::unauthorized("token_invalid", message),
                    Refusal::TokenExpired => Self::forbidden("token_expired", message),
                    Refusal::TokenUsedUp => Self::forbidden("token_used_up", message),
                    Refusal::TokenRevoked => Self::forbidden("token_revoked", message),
                    Refusal::NotFound { .. } => Self::not_found(message),
                    Refusal::Conflict(_) => Self::new(StatusCode::CONFLICT, "conflict", message),
                }
            }
            StoreError::AgentRefused(message) => Self::forbidden("agent_refused", message),
            StoreError::Corrupt(e) => {
                tracing::error!(error = %e, "store record unreadable");
                Self::internal()
            }
            e => {
                tracing::warn!(error = %e, "store request failed");
                Self::unavailable("the store cannot take this request right now and nothing was changed; retry later")
            }
        }
    }
}

/// Quotes client input for an error message, cut to a readable length: a
/// message names what was wrong without echoing a megabyte of it back.
pub fn quote(text: &str) -> String {
    const MAX: usize = 64;
    if text.len() <= MAX {
        return format!("{text:?}");
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &text[..end], text.len())
}

/// Parses a JSON request body: `invalid_json` for bad syntax, `invalid_body`
/// (starting with the field path) for the wrong shape.
pub fn json_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {inner}"))
            }
            _ => ApiError::bad_request("invalid_body", format!("{path}: {inner}")),
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request("invalid_json", format!("trailing data after the JSON body: {e}")))?;
    Ok(value)
}
