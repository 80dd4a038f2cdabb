//! Query parameters, cursors and paths: `/v1/events`, `/v1/incidents`,
//! `/v1/incidents/{id}`, `/v1/clusters`, `/v1/audit`, the ops endpoints.

use super::{Case, Context, Expect, case};
use crate::raw::{Request, Who};
use Expect::{Bare, Error};
use Who::{Admin, Anonymous};

pub(super) fn query_cases(cx: &Context) -> Vec<Case> {
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

pub(super) fn path_cases() -> Vec<Case> {
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
