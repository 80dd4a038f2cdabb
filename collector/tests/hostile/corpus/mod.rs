//! The corpus: bad requests for every endpoint, each with the precise answer
//! it must get. `collector/tests/bad_input.rs` holds the first, simpler set
//! (malformed JSON, wrong types, a gzip bomb, bad limits and filters); this
//! one goes where an attacker or a broken client goes next: framing, nesting,
//! number and time extremes, zstd, paths, cursors, every admin body.

use super::common::warning;
use super::raw::{Request, Who};
use serde_json::{Value, json};
use std::time::Duration;

mod access;
mod ingest;
mod queries;

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

pub(super) fn case(name: &str, who: Who, request: Request, expect: Expect) -> Case {
    Case {
        name: name.to_owned(),
        who,
        request,
        expect,
    }
}

use Expect::Bare;
use Who::{Admin, Anonymous};

pub(super) fn batch(events: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({ "events": events })).unwrap()
}

/// A batch of one good event with `key` replaced by raw JSON text (to write
/// what serde_json would not: huge numbers, `NaN`, duplicate keys).
pub(super) fn with_raw(key: &str, raw_value: &str) -> Vec<u8> {
    let mut ev = warning("hostile").json();
    ev[key] = json!("__RAW__");
    let text = serde_json::to_string(&json!({ "events": [ev] })).unwrap();
    text.replace("\"__RAW__\"", raw_value).into_bytes()
}

pub(super) fn with(key: &str, value: Value) -> Vec<u8> {
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

pub(super) fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 19).unwrap()
}

pub(super) fn ingest_request(body: impl Into<Vec<u8>>) -> Request {
    Request::json("/v1/ingest", body)
}

pub(super) fn nested(depth: usize, open: &str, close: &str) -> String {
    format!("{}{}", open.repeat(depth), close.repeat(depth))
}

/// `{"a":{"a":…0…}}`, `depth` objects deep.
pub(super) fn nested_objects(depth: usize) -> String {
    format!("{}0{}", "{\"a\":".repeat(depth), "}".repeat(depth))
}

/// Every case, grouped by endpoint./// Every case, grouped by endpoint.
pub fn corpus(cx: &Context) -> Vec<Case> {
    let mut cases = ingest::cases(cx);
    cases.extend(queries::query_cases(cx));
    cases.extend(queries::path_cases());
    cases.extend(access::enroll_cases(cx));
    cases.extend(access::admin_cases());
    cases.extend(http_cases());
    cases
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
