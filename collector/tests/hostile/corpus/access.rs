//! Enrollment, renewal and the admin API: `/v1/enroll`, `/v1/renew`,
//! `/v1/admin/*`.

use super::{Case, Context, Expect, case, nested, nested_objects};
use crate::raw::{Request, Who};
use Expect::Error;
use Who::{Admin, Agent, Anonymous};
use serde_json::{Value, json};

pub(super) fn enroll_cases(cx: &Context) -> Vec<Case> {
    let enroll = |body: Value| Request::json("/v1/enroll", serde_json::to_vec(&body).unwrap());
    let token = &cx.token;
    let renew = |body: &str| Request::json("/v1/renew", body.to_owned());
    vec![
        case(
            "enroll: empty body",
            Anonymous,
            Request::json("/v1/enroll", ""),
            Error(400, "invalid_json", "JSON"),
        ),
        case(
            "enroll: 20 000 nested arrays",
            Anonymous,
            Request::json("/v1/enroll", nested(20_000, "[", "]")),
            Error(400, "invalid_body", "invalid type"),
        ),
        case(
            "enroll: 100 000 nested arrays (over the body limit)",
            Anonymous,
            Request::json("/v1/enroll", nested(100_000, "[", "]")),
            Error(413, "payload_too_large", "larger than"),
        ),
        case(
            "enroll: token is a number",
            Anonymous,
            enroll(json!({"token": 1, "csr": "x"})),
            Error(400, "invalid_body", "token"),
        ),
        case(
            "enroll: malformed token",
            Anonymous,
            enroll(json!({"token": "hello", "csr": "x"})),
            Error(400, "token_malformed", "pw1."),
        ),
        case(
            "enroll: unknown token",
            Anonymous,
            enroll(json!({"token": format!("pw1.abcdefgh.{}", "s".repeat(43)), "csr": "x"})),
            Error(401, "token_invalid", "token"),
        ),
        case(
            "enroll: valid token, garbage CSR",
            Anonymous,
            enroll(json!({"token": token, "csr": "garbage"})),
            Error(400, "invalid_csr", "signing request"),
        ),
        case(
            "enroll: valid token, PEM of nonsense",
            Anonymous,
            enroll(
                json!({"token": token, "csr": format!("-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n", "A".repeat(40_000))}),
            ),
            Error(400, "invalid_csr", "signing request"),
        ),
        case(
            "enroll: agent_version of 129 bytes",
            Anonymous,
            enroll(json!({"token": token, "csr": "x", "agent_version": "v".repeat(129)})),
            Error(400, "invalid_body", "agent_version"),
        ),
        case(
            "enroll: body over 64 KiB",
            Anonymous,
            enroll(json!({"token": token, "csr": "c".repeat(70_000)})),
            Error(413, "payload_too_large", "larger than"),
        ),
        case(
            "renew: no client certificate",
            Anonymous,
            renew(r#"{"csr":"x"}"#),
            Error(401, "client_certificate_required", "certificate"),
        ),
        case(
            "renew: garbage CSR",
            Agent,
            renew(r#"{"csr":"garbage"}"#),
            Error(400, "invalid_csr", "signing request"),
        ),
        case(
            "renew: CSR is a number",
            Agent,
            renew(r#"{"csr":5}"#),
            Error(400, "invalid_body", "csr"),
        ),
        case(
            "renew: truncated",
            Agent,
            renew(r#"{"csr":"#),
            Error(400, "invalid_json", "EOF"),
        ),
    ]
}

pub(super) fn admin_cases() -> Vec<Case> {
    let post = |path: &str, body: &str| Request::json(path, body.to_owned());
    let tokens = |body: &str| post("/v1/admin/tokens", body);
    let certs = |body: &str| post("/v1/admin/certs", body);
    vec![
        case(
            "tokens: negative ttl",
            Admin,
            tokens(r#"{"cluster":"c","ttl_seconds":-1}"#),
            Error(400, "invalid_body", "ttl_seconds"),
        ),
        case(
            "tokens: ttl beyond u64",
            Admin,
            tokens(r#"{"cluster":"c","ttl_seconds":18446744073709551616}"#),
            Error(400, "invalid_body", "ttl_seconds"),
        ),
        case(
            "tokens: ttl u64::MAX",
            Admin,
            tokens(r#"{"cluster":"c","ttl_seconds":18446744073709551615}"#),
            Error(400, "invalid_ttl", "lifetime"),
        ),
        case(
            "tokens: ttl 0",
            Admin,
            tokens(r#"{"cluster":"c","ttl_seconds":0}"#),
            Error(400, "invalid_ttl", "lifetime"),
        ),
        case(
            "tokens: ttl NaN string",
            Admin,
            tokens(r#"{"cluster":"c","ttl_seconds":"NaN"}"#),
            Error(400, "invalid_body", "ttl_seconds"),
        ),
        case(
            "tokens: uses 0",
            Admin,
            tokens(r#"{"cluster":"c","ttl_seconds":60,"uses":0}"#),
            Error(400, "invalid_uses", "uses"),
        ),
        case(
            "tokens: uses -1",
            Admin,
            tokens(r#"{"cluster":"c","ttl_seconds":60,"uses":-1}"#),
            Error(400, "invalid_body", "uses"),
        ),
        case(
            "tokens: cluster with dot segments",
            Admin,
            tokens(r#"{"cluster":"../../etc","ttl_seconds":60}"#),
            Error(400, "invalid_name", "cluster"),
        ),
        case(
            "tokens: cluster with NUL",
            Admin,
            tokens(r#"{"cluster":"prod\u0000","ttl_seconds":60}"#),
            Error(400, "invalid_name", "cluster"),
        ),
        case(
            "tokens: unicode cluster",
            Admin,
            tokens(r#"{"cluster":"prød","ttl_seconds":60}"#),
            Error(400, "invalid_name", "cluster"),
        ),
        case(
            "tokens: 300-character cluster",
            Admin,
            tokens(&format!(r#"{{"cluster":"{}","ttl_seconds":60}}"#, "c".repeat(300))),
            Error(400, "invalid_name", "cluster"),
        ),
        case(
            "tokens: empty tenant",
            Admin,
            tokens(r#"{"cluster":"c","tenant":"","ttl_seconds":60}"#),
            Error(400, "invalid_name", "tenant"),
        ),
        case(
            "tokens: 10 000 nested objects",
            Admin,
            tokens(&nested_objects(10_000)),
            Error(400, "invalid_body", "missing field `cluster`"),
        ),
        case(
            "tokens: 60 KB cluster",
            Admin,
            tokens(&format!(r#"{{"cluster":"{}","ttl_seconds":60}}"#, "c".repeat(60_000))),
            Error(400, "invalid_name", "60000 bytes"),
        ),
        case("tokens: no body", Admin, tokens(""), Error(400, "invalid_json", "JSON")),
        case(
            "tokens: no token",
            Anonymous,
            tokens(r#"{"cluster":"c","ttl_seconds":60}"#),
            Error(401, "unauthorized", "Authorization"),
        ),
        case(
            "tokens: PATCH",
            Admin,
            Request::new("PATCH", "/v1/admin/tokens"),
            Error(405, "method_not_allowed", "method"),
        ),
        case(
            "tokens: revoke unknown",
            Admin,
            post("/v1/admin/tokens/zzzzzzzzzzzz/revoke", ""),
            Error(404, "not_found", "zzzzzzzzzzzz"),
        ),
        case(
            "tokens: revoke 8 000-character id",
            Admin,
            post(&format!("/v1/admin/tokens/{}/revoke", "z".repeat(8000)), ""),
            Error(400, "invalid_parameter", "not a token id"),
        ),
        case(
            "agents: revoke id with a slash",
            Admin,
            post("/v1/admin/agents/..%2f..%2fx/revoke", ""),
            Error(400, "invalid_parameter", "not an agent id"),
        ),
        case(
            "apikeys: revoke 8 000-character id",
            Admin,
            post(&format!("/v1/admin/apikeys/{}/revoke", "f".repeat(8000)), ""),
            Error(400, "invalid_parameter", "not an API key id"),
        ),
        case(
            "certs: ttl 30 s",
            Admin,
            certs(r#"{"cluster":"c","csr":"x","ttl_seconds":30}"#),
            Error(400, "invalid_ttl", "lifetime"),
        ),
        case(
            "certs: garbage CSR",
            Admin,
            certs(r#"{"cluster":"c","csr":"x","ttl_seconds":3600}"#),
            Error(400, "invalid_csr", "signing request"),
        ),
        case(
            "certs: cluster `..`",
            Admin,
            certs(r#"{"cluster":"..","csr":"x","ttl_seconds":3600}"#),
            Error(400, "invalid_name", "cluster"),
        ),
        case(
            "certs: csr missing",
            Admin,
            certs(r#"{"cluster":"c","ttl_seconds":3600}"#),
            Error(400, "invalid_body", "csr"),
        ),
        case(
            "agents: revoke unknown",
            Admin,
            post("/v1/admin/agents/0000000000000000/revoke", ""),
            Error(404, "not_found", "0000000000000000"),
        ),
        case(
            "clusters: remove with purge \"yes\"",
            Admin,
            post("/v1/admin/clusters/prod/remove", r#"{"purge":"yes"}"#),
            Error(400, "invalid_body", "purge"),
        ),
        case(
            "clusters: remove `..`",
            Admin,
            post("/v1/admin/clusters/%2e%2e/remove", ""),
            Error(400, "invalid_name", "cluster"),
        ),
        case(
            "clusters: remove unknown",
            Admin,
            post("/v1/admin/clusters/no-such-cluster/remove", ""),
            Error(404, "not_found", "no-such-cluster"),
        ),
        case(
            "apikeys: role root",
            Admin,
            post("/v1/admin/apikeys", r#"{"role":"root"}"#),
            Error(400, "invalid_body", "role"),
        ),
        case(
            "apikeys: empty tenant",
            Admin,
            post("/v1/admin/apikeys", r#"{"role":"read","tenant":""}"#),
            Error(400, "invalid_name", "tenant"),
        ),
        case(
            "apikeys: body is a list",
            Admin,
            post("/v1/admin/apikeys", "[]"),
            Error(400, "invalid_body", "invalid"),
        ),
        case(
            "apikeys: revoke unknown",
            Admin,
            post("/v1/admin/apikeys/000000000000/revoke", ""),
            Error(404, "not_found", "000000000000"),
        ),
    ]
}
