//! Invariant 7 under fire: every bad input gets a clear answer and harms
//! nothing. A corpus of hostile requests for every endpoint runs against the
//! real `podwarn-collector` binary on loopback; each must get its precise
//! status and the JSON error shape naming the problem, the collector must
//! stay healthy after each, and nothing may be stored. The connection-level
//! attacks (slow loris, thousands of idle connections) are in `connections`.

#[path = "../common/mod.rs"]
mod common;
mod connections;
mod corpus;
mod raw;

use common::{Admin, Collector, warning};
use corpus::{Case, Context, Expect};
use raw::{Dialer, Request, Who};
use serde_json::{Value, json};
use std::io::Write;
use std::time::{Duration, Instant};

/// Longest error message the corpus accepts: messages may quote the input
/// that was wrong, but never echo it whole.
const MAX_MESSAGE: usize = 512;

/// Prints past the test harness's capture, so the count shows in every run.
pub fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Checks one answer against what its case expects.
fn check(expect: Expect, reply: &raw::Reply) -> Result<(), String> {
    let body = String::from_utf8_lossy(&reply.body);
    match expect {
        Expect::Bare(status) => {
            if reply.status != status {
                return Err(format!("status {} (expected {status}): {body}", reply.status));
            }
            if !reply.body.is_empty() {
                return Err(format!("expected an empty body, got {body}"));
            }
        }
        Expect::Stored(accepted) => {
            let json = reply.json().unwrap_or_default();
            if reply.status != 200 || json["accepted"] != accepted {
                return Err(format!(
                    "expected 200 with {accepted} accepted, got {} {body}",
                    reply.status
                ));
            }
        }
        Expect::Error(status, code, names) => {
            if reply.status != status {
                return Err(format!("status {} (expected {status}): {body}", reply.status));
            }
            if !reply
                .header("content-type")
                .is_some_and(|t| t.starts_with("application/json"))
            {
                return Err(format!("content-type {:?} is not JSON", reply.header("content-type")));
            }
            let json = reply.json().ok_or_else(|| format!("body is not JSON: {body}"))?;
            let shape_ok = json.as_object().is_some_and(|o| o.len() == 1)
                && json["error"].as_object().is_some_and(|o| o.len() == 2)
                && json["error"]["code"].is_string()
                && json["error"]["message"].is_string();
            if !shape_ok {
                return Err(format!("not the shape {{\"error\":{{\"code\",\"message\"}}}}: {json}"));
            }
            if json["error"]["code"] != code {
                return Err(format!("code {} (expected {code}): {json}", json["error"]["code"]));
            }
            let message = json["error"]["message"].as_str().unwrap_or_default();
            if !message.to_lowercase().contains(&names.to_lowercase()) {
                return Err(format!("message does not name {names:?}: {message}"));
            }
            if message.len() > MAX_MESSAGE {
                return Err(format!("message of {} bytes echoes too much", message.len()));
            }
        }
    }
    Ok(())
}

/// `/healthz` on a fresh connection.
async fn healthy(dialer: &Dialer) -> Result<(), String> {
    let reply = dialer.exchange(Who::Anonymous, Request::get("/healthz")).await?;
    if reply.status == 200 && reply.body == b"ok\n" {
        Ok(())
    } else {
        Err(format!(
            "/healthz answered {} {:?}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        ))
    }
}

/// Removes `keys` from every object inside `value`.
fn forget(value: &mut Value, keys: &[&str]) {
    match value {
        Value::Object(map) => {
            for key in keys {
                map.remove(*key);
            }
            map.values_mut().for_each(|v| forget(v, keys));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| forget(v, keys)),
        _ => {}
    }
}

/// Everything stored, as the API shows it, but for when agents were last
/// heard from: the harmless cases (an empty batch) are contact too.
async fn snapshot(admin: &Admin) -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    out.push(("events", Value::Array(admin.all_events("").await)));
    for path in [
        "/v1/incidents?limit=1000",
        "/v1/clusters",
        "/v1/admin/tokens",
        "/v1/admin/agents",
        "/v1/admin/apikeys",
        "/v1/audit?limit=1000",
    ] {
        let (status, body) = admin.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(body["next_cursor"].is_null(), "{path}: one page holds it all");
        let mut items = body["items"].clone();
        if path == "/v1/clusters" || path == "/v1/admin/agents" {
            forget(&mut items, &["last_seen", "last_ingest"]);
        }
        out.push((path, items));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn invariant_7_hostile_input_is_refused_precisely_and_stores_nothing() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let body_timeout = Duration::from_secs(3);
    let collector = Collector::start(
        &tmp.path().join("data"),
        &[
            "--max-body",
            "1MiB",
            "--max-decoded-body",
            "4MiB",
            "--body-read-timeout",
            "3s",
            "--enroll-failures-per-minute",
            "100000",
        ],
    );
    let cert = collector.issue_cert("prod");
    let agent = collector.agent(&cert);
    let admin = collector.admin();

    // Something to protect: events, an incident, a single-use token, cursors.
    let seed: Vec<Value> = (0..3)
        .map(|i| {
            warning(&format!("seed-{i}"))
                .last_seen(&format!("2026-11-22T10:00:0{i}Z"))
                .json()
        })
        .collect();
    let (status, body) = agent.send(&seed).await;
    assert_eq!((status, body["accepted"].as_u64()), (200, Some(3)), "{body}");
    let (status, created) = admin
        .post(
            "/v1/admin/tokens",
            json!({"cluster": "hostile", "ttl_seconds": 3600, "uses": 1}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let cursor = |query: &'static str| {
        let admin = &admin;
        async move {
            let (status, page) = admin.get(query).await;
            assert_eq!(status, 200, "{page}");
            page["next_cursor"].as_str().expect("a next page").to_owned()
        }
    };
    let cx = Context {
        max_decoded: 4 << 20,
        body_timeout,
        token: created["token"].as_str().unwrap().to_owned(),
        events_cursor: cursor("/v1/events?limit=1").await,
        shop_cursor: cursor("/v1/events?limit=1&namespace=shop").await,
    };
    let mut before = snapshot(&admin).await;
    let seeded = before.clone();

    let dialer = Dialer::new(&collector.url, &collector.ca_pem, &cert, &admin.token);
    let cases: Vec<Case> = corpus::corpus(&cx);
    let total = cases.len();
    let mut failures = Vec::new();
    for case in cases {
        let outcome = match dialer.exchange(case.who, case.request).await {
            Ok(reply) => check(case.expect, &reply),
            Err(e) => Err(e),
        };
        let outcome = outcome.and(healthy(&dialer).await.map_err(|e| format!("unhealthy afterwards: {e}")));
        // Nothing stored, checked after each case so a failure names its case.
        let after = snapshot(&admin).await;
        let outcome = outcome.and(if after == before {
            Ok(())
        } else {
            Err("it changed what is stored".to_owned())
        });
        before = after;
        if let Err(why) = outcome {
            failures.push(format!("{}: {why}", case.name));
        }
    }
    report(&format!(
        "hostile input: {} passed, {} failed ({:.0?})",
        total - failures.len(),
        failures.len(),
        started.elapsed()
    ));
    for failure in &failures {
        report(&format!("  FAILED {failure}"));
    }
    assert!(
        failures.is_empty(),
        "{} of {total} hostile cases failed",
        failures.len()
    );

    // Nothing of it was stored, and no refusal spent the single-use token.
    assert_eq!(
        snapshot(&admin).await,
        seeded,
        "a refused request changed what is stored"
    );
    let (status, body, _) = collector.enroll(&cx.token).await;
    assert_eq!(status, 200, "the token survived the refused enrollments: {body}");
    // And the collector still does its job.
    let (status, body) = agent.send(&[warning("after").json()]).await;
    assert_eq!((status, body["accepted"].as_u64()), (200, Some(1)), "{body}");
}
