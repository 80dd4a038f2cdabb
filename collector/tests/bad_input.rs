//! Invariant 7: every bad input gets a precise 4xx with the JSON error shape,
//! and nothing of it is stored.

mod common;

use common::{Collector, warning};
use serde_json::{Value, json};

struct Case {
    name: &'static str,
    body: Vec<u8>,
    headers: Vec<(&'static str, &'static str)>,
    status: u16,
    code: &'static str,
}

fn batch(events: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({ "events": events })).unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn invariant_7_bad_ingest_bodies_are_refused_precisely_and_store_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let collector = Collector::start(
        &tmp.path().join("data"),
        &["--max-body", "64KiB", "--max-decoded-body", "256KiB"],
    );
    let agent = collector.agent(&collector.issue_cert("prod"));
    let good = warning("good").json();
    let with = |key: &str, value: Value| {
        let mut ev = warning("bad").json();
        ev[key] = value;
        ev
    };
    let huge_message = "x".repeat(70 * 1024);
    let cases = vec![
        Case {
            name: "malformed JSON",
            body: b"{\"events\": [".to_vec(),
            headers: vec![],
            status: 400,
            code: "invalid_json",
        },
        Case {
            name: "not an object",
            body: b"[1,2,3]".to_vec(),
            headers: vec![],
            status: 400,
            code: "invalid_body",
        },
        Case {
            name: "missing events",
            body: b"{}".to_vec(),
            headers: vec![],
            status: 400,
            code: "invalid_body",
        },
        Case {
            name: "count is a string",
            body: batch(vec![good.clone(), with("count", "five".into())]),
            headers: vec![],
            status: 400,
            code: "invalid_body",
        },
        Case {
            name: "negative count",
            body: batch(vec![with("count", (-1).into())]),
            headers: vec![],
            status: 400,
            code: "invalid_body",
        },
        Case {
            name: "absurd count",
            body: batch(vec![with("count", 1e30.into())]),
            headers: vec![],
            status: 400,
            code: "invalid_body",
        },
        Case {
            name: "zero count",
            body: batch(vec![good.clone(), with("count", 0.into())]),
            headers: vec![],
            status: 400,
            code: "invalid_event",
        },
        Case {
            name: "bad timestamp",
            body: batch(vec![good.clone(), with("last_seen", "2026-13-45T99:00:00Z".into())]),
            headers: vec![],
            status: 400,
            code: "invalid_body",
        },
        Case {
            name: "timestamp without zone",
            body: batch(vec![with("first_seen", "2026-11-22T10:00:00".into())]),
            headers: vec![],
            status: 400,
            code: "invalid_body",
        },
        Case {
            name: "empty uid",
            body: batch(vec![good.clone(), with("uid", "".into())]),
            headers: vec![],
            status: 400,
            code: "invalid_event",
        },
        Case {
            name: "missing reason",
            body: batch(vec![{
                let mut e = good.clone();
                e.as_object_mut().unwrap().remove("reason");
                e
            }]),
            headers: vec![],
            status: 400,
            code: "invalid_body",
        },
        Case {
            name: "message over the field limit",
            body: batch(vec![with("message", "m".repeat(5000).into())]),
            headers: vec![],
            status: 400,
            code: "invalid_event",
        },
        Case {
            name: "body over the limit",
            body: batch(vec![with("logs", huge_message.into())]),
            headers: vec![],
            status: 413,
            code: "payload_too_large",
        },
        Case {
            name: "unsupported encoding",
            body: batch(vec![good.clone()]),
            headers: vec![("content-encoding", "br")],
            status: 415,
            code: "unsupported_encoding",
        },
        Case {
            name: "not gzip",
            body: batch(vec![good.clone()]),
            headers: vec![("content-encoding", "gzip")],
            status: 400,
            code: "invalid_encoding",
        },
        Case {
            name: "gzip bomb",
            body: gzip(&vec![b' '; 8 << 20]),
            headers: vec![("content-encoding", "gzip")],
            status: 413,
            code: "payload_too_large",
        },
        Case {
            name: "wrong content type",
            body: batch(vec![good.clone()]),
            headers: vec![("content-type", "text/plain")],
            status: 415,
            code: "unsupported_media_type",
        },
        Case {
            name: "invalid UTF-8",
            body: b"{\"events\": [{\"uid\": \"\xff\xfe\"}]}".to_vec(),
            headers: vec![],
            status: 400,
            code: "invalid_json",
        },
        Case {
            name: "trailing garbage",
            body: [batch(vec![good.clone()]), b"{}".to_vec()].concat(),
            headers: vec![],
            status: 400,
            code: "invalid_json",
        },
    ];
    for case in cases {
        let mut req = agent.client.post(format!("{}/v1/ingest", agent.url)).body(case.body);
        if !case.headers.iter().any(|(k, _)| *k == "content-type") {
            req = req.header("content-type", "application/json");
        }
        for (k, v) in &case.headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, case.status, "{}: {body}", case.name);
        assert_eq!(body["error"]["code"], case.code, "{}: {body}", case.name);
        assert!(
            !body["error"]["message"].as_str().unwrap_or("").is_empty(),
            "{}: no message",
            case.name
        );
    }
    // No partial write: batches that held a good event before the bad one stored nothing.
    assert!(collector.admin().all_events("").await.is_empty());
    // And the collector still works.
    let (status, _) = agent.send(&[good]).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn invariant_7_bad_queries_and_credentials_are_refused_precisely() {
    let tmp = tempfile::tempdir().unwrap();
    let collector = Collector::start(&tmp.path().join("data"), &[]);
    let admin = collector.admin();
    let cases: &[(&str, u16, &str)] = &[
        ("/v1/events?limit=0", 400, "invalid_parameter"),
        ("/v1/events?limit=-5", 400, "invalid_parameter"),
        ("/v1/events?limit=100000", 400, "invalid_parameter"),
        ("/v1/events?limit=ten", 400, "invalid_parameter"),
        ("/v1/events?cursor=garbage", 400, "invalid_cursor"),
        (
            "/v1/events?cursor=AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            400,
            "invalid_cursor",
        ),
        ("/v1/events?colour=red", 400, "unknown_parameter"),
        ("/v1/events?incident_type=Meltdown", 400, "invalid_parameter"),
        ("/v1/events?since=last%20tuesday", 400, "invalid_parameter"),
        (
            "/v1/events?since=2026-11-22T10:00:00Z&until=2026-11-21T10:00:00Z",
            400,
            "invalid_parameter",
        ),
        ("/v1/events?namespace=", 400, "invalid_parameter"),
        ("/v1/events?namespace=a&namespace=b", 400, "invalid_parameter"),
        ("/v1/events?incident=xyz", 400, "invalid_parameter"),
        ("/v1/incidents?active=maybe", 400, "invalid_parameter"),
        ("/v1/incidents/not-an-id", 400, "invalid_parameter"),
        ("/v1/incidents/00000000000000ff", 404, "not_found"),
        ("/v1/clusters?x=1", 400, "unknown_parameter"),
        ("/v1/nothing-here", 404, "not_found"),
    ];
    for (path, status, code) in cases {
        let (got, body) = admin.get(path).await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (*status, Some(*code)),
            "{path}: {body}"
        );
    }
    let client = &admin.client;
    let r = client.get(format!("{}/v1/events", admin.url)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "unauthorized");
    let r = client
        .get(format!("{}/v1/events", admin.url))
        .bearer_auth("pwa_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "invalid_token");
    let r = client
        .delete(format!("{}/v1/events", admin.url))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "method_not_allowed");
    // Health and metrics need no token.
    let r = client.get(format!("{}/metrics", admin.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("podwarn_ingest_requests"));
}
