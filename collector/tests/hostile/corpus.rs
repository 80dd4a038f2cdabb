//! The corpus: bad requests for every endpoint, each with the precise answer
//! it must get. `collector/tests/bad_input.rs` holds the first, simpler set
//! (malformed JSON, wrong types, a gzip bomb, bad limits and filters); this
//! one goes where an attacker or a broken client goes next: framing, nesting,
//! number and time extremes, zstd, paths, cursors, every admin body.

use super::common::warning;
use super::raw::{Request, Who};
use serde_json::{Value, json};
use std::time::Duration;

/// What a case must get back.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// The JSON error shape with this status and code, and a message that
    /// contains the given words (case-insensitive): it names the problem.
    Error(u16, &'static str, &'static str),
    /// Refused by the HTTP layer before any handler ran (malformed framing):
    /// this status and an empty body.
    Bare(u16),
    /// Harmless after all (an unknown field, however deep): 200 with this
    /// many events accepted.
    Stored(u64),
}

/// One hostile request.
pub struct Case {
    pub name: String,
    pub who: Who,
    pub request: Request,
    pub expect: Expect,
}

/// What the corpus needs from the running collector.
pub struct Context {
    /// The ingest limit after decompression (the collector runs with 4 MiB).
    pub max_decoded: usize,
    /// How long the collector waits for a body (it runs with 3 s).
    pub body_timeout: Duration,
    /// A valid, single-use enrollment token.
    pub token: String,
    /// `next_cursor` of `/v1/events?limit=1`.
    pub events_cursor: String,
    /// `next_cursor` of `/v1/events?limit=1&namespace=shop`.
    pub shop_cursor: String,
}

fn case(name: &str, who: Who, request: Request, expect: Expect) -> Case {
    Case {
        name: name.to_owned(),
        who,
        request,
        expect,
    }
}

use Expect::{Bare, Error, Stored};
use Who::{Admin, Agent, Anonymous};

fn batch(events: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({ "events": events })).unwrap()
}

/// A batch of one good event with `key` replaced by raw JSON text (to write
/// what serde_json would not: huge numbers, `NaN`, duplicate keys).
fn with_raw(key: &str, raw_value: &str) -> Vec<u8> {
    let mut ev = warning("hostile").json();
    ev[key] = json!("__RAW__");
    let text = serde_json::to_string(&json!({ "events": [ev] })).unwrap();
    text.replace("\"__RAW__\"", raw_value).into_bytes()
}

fn with(key: &str, value: Value) -> Vec<u8> {
    let mut ev = warning("hostile").json();
    ev[key] = value;
    batch(vec![ev])
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 19).unwrap()
}

fn ingest(body: impl Into<Vec<u8>>) -> Request {
    Request::json("/v1/ingest", body)
}

fn nested(depth: usize, open: &str, close: &str) -> String {
    format!("{}{}", open.repeat(depth), close.repeat(depth))
}

/// `{"a":{"a":…0…}}`, `depth` objects deep.
fn nested_objects(depth: usize) -> String {
    format!("{}0{}", "{\"a\":".repeat(depth), "}".repeat(depth))
}

/// Every case, grouped by endpoint.
pub fn corpus(cx: &Context) -> Vec<Case> {
    let mut cases = ingest_cases(cx);
    cases.extend(query_cases(cx));
    cases.extend(path_cases());
    cases.extend(enroll_cases(cx));
    cases.extend(admin_cases());
    cases.extend(http_cases());
    cases
}

fn ingest_cases(cx: &Context) -> Vec<Case> {
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

fn query_cases(cx: &Context) -> Vec<Case> {
    let get = |target: String| Request::get(target);
    let many_unknown = format!("/v1/events?{}", "x=1&".repeat(5000));
    let long_name = format!("/v1/events?{}=1", "n".repeat(60_000));
    let events = &cx.events_cursor;
    let shop = &cx.shop_cursor;
    vec![
        case(
            "events: limit beyond u64",
            Admin,
            get("/v1/events?limit=99999999999999999999".into()),
            Error(400, "invalid_parameter", "limit"),
        ),
        case(
            "events: limit -1",
            Admin,
            get("/v1/events?limit=-1".into()),
            Error(400, "invalid_parameter", "limit"),
        ),
        case(
            "events: limit 1e3",
            Admin,
            get("/v1/events?limit=1e3".into()),
            Error(400, "invalid_parameter", "limit"),
        ),
        case(
            "events: limit NUL",
            Admin,
            get("/v1/events?limit=%00".into()),
            Error(400, "invalid_parameter", "limit"),
        ),
        case(
            "events: limit twice",
            Admin,
            get("/v1/events?limit=1&limit=2".into()),
            Error(400, "invalid_parameter", "more than once"),
        ),
        case(
            "events: cursor twice",
            Admin,
            get(format!("/v1/events?cursor={events}&cursor={events}")),
            Error(400, "invalid_parameter", "more than once"),
        ),
        case(
            "events: value over 1 KiB",
            Admin,
            get(format!("/v1/events?pod={}", "p".repeat(1025))),
            Error(400, "invalid_parameter", "1024"),
        ),
        case(
            "events: pod name over 253",
            Admin,
            get(format!("/v1/events?pod={}", "p".repeat(254))),
            Error(400, "invalid_parameter", "pod"),
        ),
        case(
            "events: 5 000 unknown parameters",
            Admin,
            get(many_unknown),
            Error(400, "unknown_parameter", "\"x\""),
        ),
        case(
            "events: 60 KB parameter name",
            Admin,
            get(long_name),
            Error(400, "unknown_parameter", "60000 bytes"),
        ),
        case(
            "events: 100 KB query (a head over 64 KiB)",
            Admin,
            get(format!("/v1/events?pod={}", "p".repeat(100_000))),
            Bare(431),
        ),
        case(
            "events: unicode parameter name",
            Admin,
            get("/v1/events?n%C3%A4me=1".into()),
            Error(400, "unknown_parameter", "näme"),
        ),
        case(
            "events: invalid UTF-8 in a value",
            Admin,
            get("/v1/events?incident_type=%FF%FE".into()),
            Error(400, "invalid_parameter", "incident_type"),
        ),
        case(
            "events: since year 99999",
            Admin,
            get("/v1/events?since=99999-01-01T00:00:00Z".into()),
            Error(400, "invalid_parameter", "since"),
        ),
        case(
            "events: since NaN",
            Admin,
            get("/v1/events?since=NaN".into()),
            Error(400, "invalid_parameter", "since"),
        ),
        case(
            "events: until negative",
            Admin,
            get("/v1/events?until=-5m".into()),
            Error(400, "invalid_parameter", "until"),
        ),
        case(
            "events: incident id with a sign",
            Admin,
            get("/v1/events?incident=%2B00000000000000f".into()),
            Error(400, "invalid_parameter", "incident id"),
        ),
        case(
            "events: cursor of another filter",
            Admin,
            get(format!("/v1/events?namespace=other&cursor={shop}")),
            Error(400, "invalid_cursor", "these filters"),
        ),
        case(
            "events: cursor of a filter, without it",
            Admin,
            get(format!("/v1/events?cursor={shop}")),
            Error(400, "invalid_cursor", "these filters"),
        ),
        case(
            "events: cursor with padding",
            Admin,
            get(format!("/v1/events?cursor={events}%3D")),
            Error(400, "invalid_cursor", "cursor"),
        ),
        case(
            "events: cursor cut short",
            Admin,
            get(format!("/v1/events?cursor={}", &events[..events.len() - 2])),
            Error(400, "invalid_cursor", "cursor"),
        ),
        case(
            "events: unicode cursor",
            Admin,
            get("/v1/events?cursor=%C3%A9%C3%A9%C3%A9".into()),
            Error(400, "invalid_cursor", "cursor"),
        ),
        case(
            "events: empty cursor",
            Admin,
            get("/v1/events?cursor=".into()),
            Error(400, "invalid_cursor", "cursor"),
        ),
        case(
            "incidents: cursor of /v1/events",
            Admin,
            get(format!("/v1/incidents?cursor={events}")),
            Error(400, "invalid_cursor", "cursor"),
        ),
        case(
            "incidents: active TRUE",
            Admin,
            get("/v1/incidents?active=TRUE".into()),
            Error(400, "invalid_parameter", "active"),
        ),
        case(
            "incidents: limit in hex",
            Admin,
            get("/v1/incidents?limit=0x10".into()),
            Error(400, "invalid_parameter", "limit"),
        ),
        case(
            "audit: cursor of /v1/events",
            Admin,
            get(format!("/v1/audit?cursor={events}")),
            Error(400, "invalid_cursor", "cursor"),
        ),
        case(
            "audit: filter it does not take",
            Admin,
            get("/v1/audit?since=1h".into()),
            Error(400, "unknown_parameter", "since"),
        ),
        case(
            "audit: limit 0",
            Admin,
            get("/v1/audit?limit=0".into()),
            Error(400, "invalid_parameter", "limit"),
        ),
        case(
            "clusters: limit",
            Admin,
            get("/v1/clusters?limit=5".into()),
            Error(400, "unknown_parameter", "limit"),
        ),
        case(
            "clusters: POST",
            Admin,
            Request::post("/v1/clusters"),
            Error(405, "method_not_allowed", "method"),
        ),
        case(
            "events: no token",
            Anonymous,
            get("/v1/events".into()),
            Error(401, "unauthorized", "Authorization"),
        ),
        case(
            "events: bearer token of 10 KB",
            Anonymous,
            get("/v1/events".into()).header("authorization", format!("Bearer pwk_{}", "k".repeat(10_000))),
            Error(401, "invalid_token", "not valid"),
        ),
        case(
            "events: basic auth",
            Anonymous,
            get("/v1/events".into()).header("authorization", "Basic YWRtaW46YWRtaW4="),
            Error(401, "unauthorized", "Bearer"),
        ),
        case(
            "events: authorization not text",
            Anonymous,
            get("/v1/events".into()).header("authorization", b"Bearer \xff\xfe".to_vec()),
            Error(401, "unauthorized", "Bearer"),
        ),
    ]
}

fn path_cases() -> Vec<Case> {
    let get = |target: &[u8]| Request::get(target.to_vec());
    let long_id = format!("/v1/incidents/{}", "a".repeat(8000));
    vec![
        case(
            "path: dot segments to admin",
            Admin,
            get(b"/v1/incidents/../admin/agents"),
            Error(404, "not_found", "no such endpoint"),
        ),
        case(
            "path: encoded dot segments to admin",
            Admin,
            get(b"/v1/incidents/%2e%2e/admin/agents"),
            Error(404, "not_found", "no such endpoint"),
        ),
        case(
            "path: encoded dot-dot as the id",
            Admin,
            get(b"/v1/incidents/%2e%2e"),
            Error(400, "invalid_parameter", "incident id"),
        ),
        case(
            "path: encoded slash in the id",
            Admin,
            get(b"/v1/incidents/..%2fadmin%2fagents"),
            Error(400, "invalid_parameter", "incident id"),
        ),
        case(
            "path: encoded NUL as the id",
            Admin,
            get(b"/v1/incidents/%00"),
            Error(400, "invalid_parameter", "incident id"),
        ),
        case("path: raw NUL", Admin, get(b"/v1/incidents/\0"), Bare(400)),
        case("path: raw space", Admin, get(b"/v1/incidents/a b"), Bare(400)),
        case(
            "path: 8 000-character id",
            Admin,
            get(long_id.as_bytes()),
            Error(400, "invalid_parameter", "8000 bytes"),
        ),
        case(
            "path: id with a sign",
            Admin,
            get(b"/v1/incidents/+00000000000000f"),
            Error(400, "invalid_parameter", "incident id"),
        ),
        case(
            "path: emoji id",
            Admin,
            get("/v1/incidents/%F0%9F%92%A5".as_bytes()),
            Error(400, "invalid_parameter", "incident id"),
        ),
        case(
            "path: unknown id",
            Admin,
            get(b"/v1/incidents/ffffffffffffffff"),
            Error(404, "not_found", "ffffffffffffffff"),
        ),
        case(
            "path: query on one incident",
            Admin,
            get(b"/v1/incidents/ffffffffffffffff?x=1"),
            Error(400, "unknown_parameter", "\"x\""),
        ),
        case(
            "path: double slash",
            Admin,
            get(b"//v1/events"),
            Error(404, "not_found", "no such endpoint"),
        ),
        case(
            "path: admin behind dot segments of healthz",
            Anonymous,
            get(b"/healthz/../v1/admin/agents"),
            Error(404, "not_found", "no such endpoint"),
        ),
        case(
            "path: 60 KB path",
            Anonymous,
            get(format!("/{}", "x".repeat(60_000)).as_bytes()),
            Error(404, "not_found", "no such endpoint"),
        ),
        case(
            "healthz: POST",
            Anonymous,
            Request::post("/healthz"),
            Error(405, "method_not_allowed", "method"),
        ),
        case(
            "readyz: DELETE",
            Anonymous,
            Request::new("DELETE", "/readyz"),
            Error(405, "method_not_allowed", "method"),
        ),
        case(
            "metrics: PUT",
            Anonymous,
            Request::new("PUT", "/metrics").body("x"),
            Error(405, "method_not_allowed", "method"),
        ),
        case(
            "events: unknown method",
            Admin,
            Request::new("BREW", "/v1/events"),
            Error(405, "method_not_allowed", "method"),
        ),
    ]
}

fn enroll_cases(cx: &Context) -> Vec<Case> {
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

fn admin_cases() -> Vec<Case> {
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

fn http_cases() -> Vec<Case> {
    vec![
        case(
            "http: TLS record bytes as a request",
            Anonymous,
            Request::new("\x16\x03\x01\x00", "/"),
            Bare(400),
        ),
        case(
            "http: method with a space",
            Anonymous,
            Request::new("GE T", "/healthz"),
            Bare(400),
        ),
        case(
            "http: 500 KB header",
            Anonymous,
            Request::get("/healthz").header("x-big", "b".repeat(500_000)),
            Bare(431),
        ),
        case(
            "http: 200 headers",
            Anonymous,
            (0..200).fold(Request::get("/healthz"), |r, i| r.header(&format!("x-h{i}"), "1")),
            Bare(431),
        ),
        case(
            "http: 1 MB query",
            Admin,
            Request::get(format!("/v1/events?pod={}", "p".repeat(1 << 20))),
            Bare(431),
        ),
    ]
}
