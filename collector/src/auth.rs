//! Who is calling the query API: bearer tokens.
//!
//! The bootstrap admin token (`DATA_DIR/admin.token`) may do everything and
//! see every tenant. Tokens are compared by SHA-256 digest in constant time,
//! and never logged.

use crate::error::ApiError;
use crate::server::AppState;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use std::path::Path;
use subtle::ConstantTimeEq;

/// An authenticated caller of the query API.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The tenant the caller is confined to; `None` sees every tenant.
    pub tenant: Option<String>,
}

impl Caller {
    /// Whether the caller may see data of `tenant`.
    pub fn may_see(&self, tenant: &str) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == tenant)
    }
}

/// The SHA-256 digest of a token.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized(
                "unauthorized",
                "missing `Authorization: Bearer <token>` header; the admin token is in the collector's DATA_DIR/admin.token",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::unauthorized("unauthorized", "the Authorization header must be `Bearer <token>`")
            })?;
        if bool::from(digest(token).ct_eq(&state.admin_token_digest)) {
            return Ok(Caller { tenant: None });
        }
        Err(ApiError::unauthorized(
            "invalid_token",
            "the bearer token is not valid for this collector",
        ))
    }
}

/// Reads the admin token of a data directory, creating it (0600) on first
/// start. Returns the token and whether it was just created.
pub fn load_or_create_admin_token(data_dir: &Path) -> Result<(String, bool), crate::tls::TlsError> {
    use crate::tls::TlsError;
    let path = data_dir.join("admin.token");
    match std::fs::read_to_string(&path) {
        Ok(token) if token.trim().is_empty() => Err(TlsError::BadPem {
            path,
            what: "the admin token file is empty: delete it and restart to make a new one",
        }),
        Ok(token) => Ok((token.trim().to_owned(), false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = new_secret("pwa_");
            crate::tls::write_secret(&path, format!("{token}\n").as_bytes())?;
            Ok((token, true))
        }
        Err(source) => Err(TlsError::Io { path, source }),
    }
}

/// A random secret of 256 bits, URL-safe, behind `prefix`.
pub fn new_secret(prefix: &str) -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}
