//! Names the collector binds into certificates and keys: clusters, tenants,
//! agent ids. They must be valid Kubernetes label values of the strict kind
//! (RFC 1123 labels), so they are safe in URIs, keys, logs and paths.

/// A name that cannot be used, with a suggested fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} name {} is not valid: {why}{}", crate::error::quote(.name), suggestion_text(.suggestion))]
pub struct InvalidName {
    /// What kind of name it is (`cluster`, `tenant` …).
    pub what: &'static str,
    /// The name as given.
    pub name: String,
    /// Why it is refused.
    pub why: &'static str,
    /// A sanitized name that would be accepted, when one can be made.
    pub suggestion: Option<String>,
}

fn suggestion_text(suggestion: &Option<String>) -> String {
    suggestion.as_ref().map(|s| format!(" (try {s:?})")).unwrap_or_default()
}

/// Longest accepted name (a Kubernetes label value).
pub const MAX_LEN: usize = 63;

/// Checks that `name` is 1–63 characters of `a-z`, `0-9` and `-`, starting
/// and ending with a letter or digit.
pub fn validate_name(what: &'static str, name: &str) -> Result<(), InvalidName> {
    let why = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_LEN {
        "it is longer than 63 characters"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        "only lowercase letters, digits and '-' are allowed"
    } else if name.starts_with('-') || name.ends_with('-') {
        "it must start and end with a letter or digit"
    } else {
        return Ok(());
    };
    let suggestion = Some(sanitize_name(name)).filter(|s| !s.is_empty() && s != name);
    Err(InvalidName {
        what,
        name: name.into(),
        why,
        suggestion,
    })
}

/// Turns any text into a valid name: lowercase, runs of other characters
/// become one `-`, trimmed to 63. May return an empty string.
pub fn sanitize_name(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_LEN));
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(MAX_LEN);
    out.trim_matches('-').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_label_values_and_suggests_fixes() {
        assert!(validate_name("cluster", "prod-eu-1").is_ok());
        let err = validate_name("cluster", "Prod EU").unwrap_err();
        assert_eq!(err.suggestion.as_deref(), Some("prod-eu"));
        assert!(err.to_string().contains("try \"prod-eu\""), "{err}");
        assert!(validate_name("cluster", "").is_err());
        assert!(validate_name("cluster", "-a").is_err());
        assert!(validate_name("cluster", &"a".repeat(64)).is_err());
        assert_eq!(sanitize_name("--Hello__World!!"), "hello-world");
    }
}
