//! Bad bodies, encodings and framing for `POST /v1/ingest` (mutual TLS).

use super::{
    Case, Context, Expect, batch, case, gzip, ingest_request as ingest, nested, nested_objects, with, with_raw, zstd,
};
use crate::common::warning;
use crate::raw::{Request, Who};
use Expect::{Bare, Error, Stored};
use Who::{Admin, Agent, Anonymous};
use serde_json::{Value, json};

pub(super) fn cases(cx: &Context) -> Vec<Case> {
    let deep_arrays = format!("{{\"events\": {}}}", nested(100_000, "[", "]"));
    let deep_objects = format!("{{\"events\": [], \"x\": {}}}", nested_objects(100_000));
    let deep_unknown = format!("{{\"events\": [], \"x\": {}}}", nested(100_000, "[", "]"));
    let zbomb = zstd(&vec![b' '; cx.max_decoded * 4]);
    let gbomb = gzip(&vec![b' '; cx.max_decoded * 4]);
    assert!(zbomb.len() < 64 << 10 && gbomb.len() < 64 << 10, "bombs are small");
    let good = batch(vec![warning("hostile").json()]);
    // Only the required fields, so 10 001 of them stay under the decoded limit.
    let many: Vec<Value> = (0..10_001)
        .map(|i| {
            json!({"uid": format!("m{i}"), "namespace": "n", "pod": "p", "reason": "r",
                "incident_type": "Other", "severity": "low", "count": 1,
                "first_seen": "2026-11-22T10:00:00Z", "last_seen": "2026-11-22T10:00:00Z"})
        })
        .collect();
    let many = gzip(&batch(many));
    let mut truncated_gzip = gzip(&good);
    truncated_gzip.truncate(truncated_gzip.len() / 2);
    let dup = String::from_utf8(good.clone()).unwrap().replacen(
        "\"uid\":\"hostile\"",
        "\"uid\":\"hostile\",\"uid\":\"again\"",
        1,
    );
    vec![
        case(
            "ingest: truncated inside a string",
            Agent,
            ingest(r#"{"events":[{"uid":"ab"#),
            Error(400, "invalid_json", "EOF"),
        ),
        case(
            "ingest: empty body",
            Agent,
            ingest(""),
            Error(400, "invalid_json", "JSON"),
        ),
        case(
            "ingest: body `null`",
            Agent,
            ingest("null"),
            Error(400, "invalid_body", "invalid type"),
        ),
        case(
            "ingest: UTF-8 byte order mark",
            Agent,
            ingest([b"\xef\xbb\xbf".as_slice(), &good].concat()),
            Error(400, "invalid_json", "JSON"),
        ),
        // Typed fields stop at the first level that has the wrong type.
        case(
            "ingest: 100 000 nested arrays",
            Agent,
            ingest(deep_arrays.clone()),
            Error(400, "invalid_body", "events[0][0]: invalid type"),
        ),
        case(
            "ingest: 100 000 nested arrays, gzip",
            Agent,
            ingest(gzip(deep_arrays.as_bytes())).header("content-encoding", "gzip"),
            Error(400, "invalid_body", "events[0][0]: invalid type"),
        ),
        // Unknown fields are skipped without recursion (a newer agent may
        // send anything there), so depth cannot exhaust the stack; the empty
        // batch stores nothing.
        case(
            "ingest: 100 000 nested objects in an unknown field",
            Agent,
            ingest(deep_objects),
            Stored(0),
        ),
        case(
            "ingest: 100 000 nested arrays in an unknown field",
            Agent,
            ingest(deep_unknown),
            Stored(0),
        ),
        case(
            "ingest: events is an object",
            Agent,
            ingest(r#"{"events":{"uid":"a"}}"#),
            Error(400, "invalid_body", "events"),
        ),
        case(
            "ingest: duplicate field",
            Agent,
            ingest(dup),
            Error(400, "invalid_body", "duplicate field `uid`"),
        ),
        case(
            "ingest: count above u32",
            Agent,
            ingest(with("count", json!(4_294_967_296u64))),
            Error(400, "invalid_body", "count"),
        ),
        case(
            "ingest: count beyond u64",
            Agent,
            ingest(with_raw("count", "18446744073709551616")),
            Error(400, "invalid_body", "count"),
        ),
        case(
            "ingest: count 1e999",
            Agent,
            ingest(with_raw("count", "1e999")),
            Error(400, "invalid_json", "number out of range"),
        ),
        case(
            "ingest: fractional count",
            Agent,
            ingest(with("count", json!(1.5))),
            Error(400, "invalid_body", "count"),
        ),
        case(
            "ingest: count NaN (not JSON)",
            Agent,
            ingest(with_raw("count", "NaN")),
            Error(400, "invalid_json", "JSON"),
        ),
        case(
            "ingest: count \"NaN\"",
            Agent,
            ingest(with("count", json!("NaN"))),
            Error(400, "invalid_body", "count"),
        ),
        case(
            "ingest: negative dropped_total",
            Agent,
            ingest(r#"{"agent":{"dropped_total":-1},"events":[]}"#),
            Error(400, "invalid_body", "agent.dropped_total"),
        ),
        case(
            "ingest: year 99999",
            Agent,
            ingest(with("first_seen", json!("99999-01-01T00:00:00Z"))),
            Error(400, "invalid_body", "first_seen"),
        ),
        case(
            "ingest: year +010000",
            Agent,
            ingest(with("last_seen", json!("+010000-01-01T00:00:00Z"))),
            Error(400, "invalid_body", "last_seen"),
        ),
        case(
            "ingest: timestamp as a number",
            Agent,
            ingest(with("last_seen", json!(1_795_000_000))),
            Error(400, "invalid_body", "last_seen"),
        ),
        case(
            "ingest: workload is a string",
            Agent,
            ingest(with("workload", json!("api"))),
            Error(400, "invalid_body", "workload"),
        ),
        case(
            "ingest: lone surrogate",
            Agent,
            ingest(with_raw("reason", r#""\ud800""#)),
            Error(400, "invalid_json", "hex escape"),
        ),
        case(
            "ingest: uid over the field limit",
            Agent,
            ingest(with("uid", json!("u".repeat(129)))),
            Error(400, "invalid_event", "uid"),
        ),
        case(
            "ingest: logs over 64 KiB",
            Agent,
            ingest(with("logs", json!("l".repeat(65 * 1024)))),
            Error(400, "invalid_event", "logs"),
        ),
        case(
            "ingest: 10 001 events (gzip)",
            Agent,
            ingest(many).header("content-encoding", "gzip"),
            Error(413, "payload_too_large", "10000"),
        ),
        case(
            "ingest: zstd bomb",
            Agent,
            ingest(zbomb).header("content-encoding", "zstd"),
            Error(413, "payload_too_large", "inflates"),
        ),
        case(
            "ingest: gzip bomb, chunked (no Content-Length)",
            Agent,
            ingest(chunked(&gbomb, 4096))
                .header("transfer-encoding", "chunked")
                .header("content-encoding", "gzip"),
            Error(413, "payload_too_large", "inflates"),
        ),
        case(
            "ingest: truncated gzip",
            Agent,
            ingest(truncated_gzip).header("content-encoding", "gzip"),
            Error(400, "invalid_encoding", "gzip"),
        ),
        case(
            "ingest: not zstd",
            Agent,
            ingest(good.clone()).header("content-encoding", "zstd"),
            Error(400, "invalid_encoding", "zstd"),
        ),
        case(
            "ingest: zstd labelled gzip",
            Agent,
            ingest(zstd(&good)).header("content-encoding", "gzip"),
            Error(400, "invalid_encoding", "gzip"),
        ),
        case(
            "ingest: gzip sent as identity",
            Agent,
            ingest(gzip(&good)),
            Error(400, "invalid_json", "JSON"),
        ),
        case(
            "ingest: stacked encodings",
            Agent,
            ingest(gzip(&gzip(&good))).header("content-encoding", "gzip, gzip"),
            Error(415, "unsupported_encoding", "Content-Encoding"),
        ),
        case(
            "ingest: encoding `compress`",
            Agent,
            ingest(good.clone()).header("content-encoding", "compress"),
            Error(415, "unsupported_encoding", "compress"),
        ),
        case(
            "ingest: encoding not text",
            Agent,
            ingest(good.clone()).header("content-encoding", b"gz\xffip".to_vec()),
            Error(415, "unsupported_encoding", "Content-Encoding"),
        ),
        case(
            "ingest: form content type",
            Agent,
            Request::post("/v1/ingest")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(good.clone()),
            Error(415, "unsupported_media_type", "application/json"),
        ),
        case(
            "ingest: two content types",
            Agent,
            ingest(good.clone()).header("content-type", "text/plain"),
            Error(415, "unsupported_media_type", "more than one content-type"),
        ),
        case(
            "ingest: two Content-Encoding headers",
            Agent,
            ingest(gzip(&zstd(&good)))
                .header("content-encoding", "zstd")
                .header("content-encoding", "gzip"),
            Error(415, "unsupported_encoding", "more than one content-encoding"),
        ),
        case(
            "ingest: 60 KB Content-Encoding",
            Agent,
            ingest(good.clone()).header("content-encoding", "x".repeat(60_000)),
            Error(415, "unsupported_encoding", "60000 bytes"),
        ),
        // Read up to the limit or the body deadline, whichever comes first.
        case(
            "ingest: Content-Length of 10 GB",
            Agent,
            ingest(&good[..10])
                .header("content-length", "10000000000")
                .hold_open(cx.body_timeout * 3),
            Error(408, "request_timeout", "did not arrive"),
        ),
        case(
            "ingest: Content-Length of 10 GB, 2 MiB sent",
            Agent,
            ingest(vec![b' '; 2 << 20])
                .header("content-length", "10000000000")
                .hold_open(cx.body_timeout * 3),
            Error(413, "payload_too_large", "larger than"),
        ),
        case(
            "ingest: Content-Length of 10 GB with Expect: 100-continue",
            Agent,
            ingest("")
                .header("content-length", "10000000000")
                .header("expect", "100-continue")
                .hold_open(cx.body_timeout * 2),
            Error(413, "payload_too_large", "larger than"),
        ),
        case(
            "ingest: Content-Length promises more than is sent",
            Agent,
            ingest(good.clone())
                .header("content-length", (good.len() + 100).to_string())
                .hold_open(cx.body_timeout * 3),
            Error(408, "request_timeout", "did not arrive"),
        ),
        case(
            "ingest: Content-Length promises less than is sent",
            Agent,
            ingest(good.clone()).header("content-length", "10"),
            Error(400, "invalid_json", "JSON"),
        ),
        case(
            "ingest: Content-Length not a number",
            Agent,
            ingest(good.clone()).header("content-length", "12abc"),
            Bare(400),
        ),
        case(
            "ingest: two different Content-Lengths",
            Agent,
            ingest(good.clone())
                .header("content-length", good.len().to_string())
                .header("content-length", "5"),
            Bare(400),
        ),
        case(
            "ingest: broken chunk size",
            Agent,
            ingest("zz\r\n{}\r\n0\r\n\r\n").header("transfer-encoding", "chunked"),
            Error(400, "body_read_failed", "could not be read"),
        ),
        case(
            "ingest: GET",
            Agent,
            Request::get("/v1/ingest"),
            Error(405, "method_not_allowed", "method"),
        ),
        case(
            "ingest: no client certificate",
            Anonymous,
            ingest(good.clone()),
            Error(401, "client_certificate_required", "certificate"),
        ),
        case(
            "ingest: admin token instead of a certificate",
            Admin,
            ingest(good),
            Error(401, "client_certificate_required", "certificate"),
        ),
    ]
}

/// `body` in chunks of `size`, with the terminating chunk.
fn chunked(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in body.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}
