//! Who is calling the query and admin API: bearer tokens.
//!
//! The bootstrap admin token (`DATA_DIR/admin.token`) may do everything and
//! see every tenant. API keys (`pwk_…`, `apikey create`) carry a role (read or
//! admin) and optionally a tenant they are confined to. Tokens and keys are
//! compared by SHA-256 digest in constant time, and never logged.

use crate::error::ApiError;
use crate::server::AppState;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use std::path::Path;
use subtle::ConstantTimeEq;

pub use crate::store::schema::KeyRole as Role;

/// An authenticated caller of the query and admin API.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The tenant the caller is confined to; `None` sees every tenant.
    pub tenant: Option<String>,
    /// What the caller may do.
    pub role: Role,
    /// Who it is, for the audit log: `admin-token`, `apikey:<id>`, `local-cli`.
    pub actor: String,
}

impl Caller {
    /// The operator at the collector's console (holds the data directory).
    pub fn local() -> Self {
        Self {
            tenant: None,
            role: Role::Admin,
            actor: "local-cli".into(),
        }
    }

    /// Whether the caller may see data of `tenant`.
    pub fn may_see(&self, tenant: &str) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == tenant)
    }

    /// 403 `forbidden` unless the caller holds an admin role.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Read => Err(ApiError::forbidden(
                "forbidden",
                "this endpoint needs an admin key; the bearer key has the read role",
            )),
        }
    }

    /// The tenant an admin action applies to: the one asked for, which a
    /// tenant-scoped caller may only ask for its own (its tenant by default).
    pub fn tenant_for(&self, requested: Option<String>) -> Result<Option<String>, ApiError> {
        match (&self.tenant, requested) {
            (None, requested) => Ok(requested),
            (Some(own), None) => Ok(Some(own.clone())),
            (Some(own), Some(asked)) if *own == asked => Ok(Some(asked)),
            (Some(_), Some(_)) => Err(ApiError::forbidden(
                "forbidden",
                "this key administers only its own tenant",
            )),
        }
    }
}

/// Length of an API key id (hex digits of the key's SHA-256).
const API_KEY_ID_LEN: usize = 12;

/// The public id of an API key: the first hex digits of its SHA-256.
pub fn api_key_id(digest: &[u8; 32]) -> String {
    hex::encode(digest)[..API_KEY_ID_LEN].to_owned()
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
        let presented = digest(token);
        if bool::from(presented.ct_eq(&state.admin_token_digest)) {
            return Ok(Caller {
                tenant: None,
                role: Role::Admin,
                actor: "admin-token".into(),
            });
        }
        let invalid = || {
            ApiError::unauthorized(
                "invalid_token",
                "the bearer token is not valid for this collector (unknown or revoked)",
            )
        };
        if !token.starts_with("pwk_") {
            return Err(invalid());
        }
        let id = api_key_id(&presented);
        // Read per request, so a revoked key stops working at once.
        let key = state.store.api_key(id.clone()).await.map_err(ApiError::from)?;
        match key {
            Some(key) if bool::from(key.key_sha256.ct_eq(&presented)) && key.revoked_us.is_none() => Ok(Caller {
                tenant: key.tenant,
                role: key.role,
                actor: format!("apikey:{id}"),
            }),
            _ => Err(invalid()),
        }
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
