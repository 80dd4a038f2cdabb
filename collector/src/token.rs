//! Enrollment tokens, `pw1.<id>.<secret>`: the id is public (it names the
//! token in lists, logs and the audit log); the secret is 256 random bits,
//! shown once and stored only as its SHA-256.

use sha2::{Digest, Sha256};

/// The token format version prefix.
pub const PREFIX: &str = "pw1";

/// A token that is not of the form `pw1.<id>.<secret>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the enrollment token is malformed: {0} (expected pw1.<id>.<secret>, as printed by `podwarn-collector token create`)"
)]
pub struct MalformedToken(&'static str);

/// A parsed enrollment token. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollToken {
    /// The public id: 8–16 characters of `a-z0-9`.
    pub id: String,
    secret: String,
}

impl std::fmt::Debug for EnrollToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollToken")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl EnrollToken {
    /// A fresh token: a 12-hex-digit id and a 256-bit secret.
    pub fn generate() -> Self {
        use base64::Engine;
        let secret: [u8; 32] = rand::random();
        Self {
            id: hex::encode(rand::random::<[u8; 6]>()),
            secret: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
        }
    }

    /// Parses the text form. The error never repeats the input.
    pub fn parse(text: &str) -> Result<Self, MalformedToken> {
        let mut parts = text.trim().split('.');
        let (Some(prefix), Some(id), Some(secret), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(MalformedToken("it must have exactly three parts separated by '.'"));
        };
        if prefix != PREFIX {
            return Err(MalformedToken("it must start with `pw1.`"));
        }
        if !(8..=16).contains(&id.len()) || !id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
            return Err(MalformedToken("the id must be 8 to 16 characters of a-z and 0-9"));
        }
        if !(22..=128).contains(&secret.len())
            || !secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(MalformedToken("the secret must be 22 to 128 base64url characters"));
        }
        Ok(Self {
            id: id.into(),
            secret: secret.into(),
        })
    }

    /// SHA-256 of the secret: what the store keeps and compares.
    pub fn secret_sha256(&self) -> [u8; 32] {
        Sha256::digest(self.secret.as_bytes()).into()
    }

    /// The text form, to show once to the operator.
    pub fn reveal(&self) -> String {
        format!("{PREFIX}.{}.{}", self.id, self.secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_malformed_text_without_echoing_it() {
        let token = EnrollToken::generate();
        let text = token.reveal();
        assert_eq!(EnrollToken::parse(&text).unwrap(), token);
        assert!(!format!("{token:?}").contains(&token.secret));
        for bad in [
            "",
            "pw1.abc",
            "pw2.abcdefgh.AAAAAAAAAAAAAAAAAAAAAAAA",
            "pw1.ABCDEFGH.AAAAAAAAAAAAAAAAAAAAAAAA",
            "pw1.abcdefgh.short",
            "pw1.abcdefgh.AAAAAAAAAAAAAAAAAAAAAAAA.x",
            "pw1.abcdefgh.AAAAAAAAAAAAAAAAAAAA$AAA",
        ] {
            let err = EnrollToken::parse(bad).unwrap_err().to_string();
            assert!(bad.is_empty() || !err.contains(bad), "{err}");
        }
        assert_ne!(EnrollToken::generate().secret_sha256(), token.secret_sha256());
    }
}
