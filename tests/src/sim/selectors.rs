//! Field and label selectors with the grammar and error messages of the real API server.

use std::collections::BTreeMap;

use super::store::Kind;

/// Why a selector was refused; the message is what the real server puts in its 400 Status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SelectorError(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldOp {
    Eq,
    NotEq,
}

/// A parsed `fieldSelector`: every term must hold.
#[derive(Debug, Clone, Default)]
pub(crate) struct FieldSelector {
    terms: Vec<(String, FieldOp, String)>,
}

impl FieldSelector {
    /// Parses `a=b,c!=d` (with `\,` `\=` `\\` escapes) and checks each field is selectable on `kind`.
    pub(crate) fn parse(input: &str, kind: Kind) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for raw in split_unescaped(input, ',') {
            if raw.is_empty() {
                continue;
            }
            let (field, op, value) = split_term(&raw)
                .ok_or_else(|| SelectorError(format!("invalid selector: '{input}'; can't understand '{raw}'")))?;
            check_field(kind, &field)?;
            terms.push((field, op, unescape(&value)));
        }
        Ok(Self { terms })
    }

    /// Whether an object with these selectable fields matches.
    pub(crate) fn matches(&self, fields: &[(&'static str, String)]) -> bool {
        self.terms.iter().all(|(name, op, value)| {
            let actual = fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or("");
            match op {
                FieldOp::Eq => actual == value,
                FieldOp::NotEq => actual != value,
            }
        })
    }
}

/// Field labels the real server accepts per resource (its field label conversion functions).
fn check_field(kind: Kind, field: &str) -> Result<(), SelectorError> {
    let specific: &[&str] = match kind {
        Kind::Event => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        Kind::Pod => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        ],
        Kind::Namespace => &["status.phase"],
        Kind::Node => &["spec.unschedulable"],
        Kind::ReplicaSet => &["status.replicas"],
        Kind::Job => &["status.successful"],
        _ => &[],
    };
    if field == "metadata.name" || field == "metadata.namespace" || specific.contains(&field) {
        return Ok(());
    }
    Err(match kind {
        // These kinds register a custom conversion function whose error is this one.
        Kind::Event | Kind::Pod | Kind::Namespace | Kind::Node | Kind::ReplicaSet | Kind::Job => {
            SelectorError(format!("field label not supported: {field}"))
        }
        _ => SelectorError(format!(
            "\"{field}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        )),
    })
}

fn split_term(term: &str) -> Option<(String, FieldOp, String)> {
    // The first operator occurrence wins, `!=` and `==` before `=` at the same position.
    let bytes = term.as_bytes();
    for i in 0..bytes.len() {
        if bytes[i] == b'\\' {
            continue;
        }
        if i > 0 && bytes[i - 1] == b'\\' {
            continue;
        }
        if term[i..].starts_with("!=") {
            return Some((term[..i].to_string(), FieldOp::NotEq, term[i + 2..].to_string()));
        }
        if term[i..].starts_with("==") {
            return Some((term[..i].to_string(), FieldOp::Eq, term[i + 2..].to_string()));
        }
        if bytes[i] == b'=' {
            return Some((term[..i].to_string(), FieldOp::Eq, term[i + 1..].to_string()));
        }
    }
    None
}

fn split_unescaped(input: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in input.chars() {
        if escaped {
            cur.push('\\');
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if escaped {
        cur.push('\\');
    }
    out.push(cur);
    out
}

fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[derive(Debug, Clone)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed `labelSelector` (equality and set-based requirements).
#[derive(Debug, Clone, Default)]
pub(crate) struct LabelSelector {
    reqs: Vec<LabelReq>,
}

impl LabelSelector {
    pub(crate) fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        let mut depth = 0usize;
        let mut cur = String::new();
        let mut parts = Vec::new();
        for c in input.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                ',' if depth == 0 => {
                    parts.push(std::mem::take(&mut cur));
                    continue;
                }
                _ => {}
            }
            cur.push(c);
        }
        parts.push(cur);
        for part in parts {
            let p = part.trim();
            if p.is_empty() {
                continue;
            }
            reqs.push(
                parse_label_req(p).ok_or_else(|| SelectorError(format!("unable to parse requirement: found '{p}'")))?,
            );
        }
        Ok(Self { reqs })
    }

    pub(crate) fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.reqs.iter().all(|r| match r {
            LabelReq::Eq(k, v) => labels.get(k) == Some(v),
            LabelReq::NotEq(k, v) => labels.get(k) != Some(v),
            LabelReq::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            LabelReq::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            LabelReq::Exists(k) => labels.contains_key(k),
            LabelReq::NotExists(k) => !labels.contains_key(k),
        })
    }
}

fn parse_label_req(p: &str) -> Option<LabelReq> {
    if let Some(key) = p.strip_prefix('!') {
        return valid_key(key.trim()).then(|| LabelReq::NotExists(key.trim().to_string()));
    }
    for (word, notin) in [(" notin ", true), (" in ", false)] {
        if let Some(pos) = p.find(word) {
            let key = p[..pos].trim();
            let rest = p[pos + word.len()..].trim();
            let inner = rest.strip_prefix('(')?.strip_suffix(')')?;
            let values = inner.split(',').map(|v| v.trim().to_string()).collect();
            if !valid_key(key) {
                return None;
            }
            return Some(if notin {
                LabelReq::NotIn(key.to_string(), values)
            } else {
                LabelReq::In(key.to_string(), values)
            });
        }
    }
    for (op, neg) in [("!=", true), ("==", false), ("=", false)] {
        if let Some(pos) = p.find(op) {
            let key = p[..pos].trim().to_string();
            let value = p[pos + op.len()..].trim().to_string();
            if !valid_key(&key) {
                return None;
            }
            return Some(if neg {
                LabelReq::NotEq(key, value)
            } else {
                LabelReq::Eq(key, value)
            });
        }
    }
    valid_key(p).then(|| LabelReq::Exists(p.to_string()))
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    #[test]
    fn field_selector_matches_like_the_api_server() {
        let sel = FieldSelector::parse("type=Warning,involvedObject.kind==Pod", Kind::Event).unwrap();
        assert!(sel.matches(&f(&[("type", "Warning"), ("involvedObject.kind", "Pod")])));
        assert!(!sel.matches(&f(&[("type", "Normal"), ("involvedObject.kind", "Pod")])));
        let neg = FieldSelector::parse("reason!=BackOff", Kind::Event).unwrap();
        assert!(neg.matches(&f(&[("reason", "Failed")])));
        assert!(!neg.matches(&f(&[("reason", "BackOff")])));
        let esc = FieldSelector::parse(r"metadata.name=a\,b", Kind::Event).unwrap();
        assert!(esc.matches(&f(&[("metadata.name", "a,b")])));
    }

    #[test]
    fn unsupported_field_is_rejected_with_the_real_message() {
        let err = FieldSelector::parse("spec.foo=bar", Kind::Event).unwrap_err();
        assert_eq!(err.0, "field label not supported: spec.foo");
        let err = FieldSelector::parse("spec.holder=x", Kind::Lease).unwrap_err();
        assert!(err.0.contains("is not a known field selector"));
        assert!(FieldSelector::parse("nonsense", Kind::Pod).is_err());
    }

    #[test]
    fn label_selector_supports_equality_and_sets() {
        let labels: BTreeMap<String, String> = [("app", "api"), ("tier", "web")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let ok = |s: &str| LabelSelector::parse(s).unwrap().matches(&labels);
        assert!(ok("app=api"));
        assert!(ok("app==api,tier"));
        assert!(!ok("app!=api"));
        assert!(ok("tier in (web, db)"));
        assert!(!ok("tier notin (web)"));
        assert!(ok("!missing"));
        assert!(!ok("missing"));
    }
}
