//! The real `podwarn-collector` binary on loopback, driven by real HTTPS
//! clients: mTLS ingest, refusals, dedup, durability across `kill -9`, and
//! queries.

mod common;

use common::{Collector, warning};
use podwarn_testkit::harness::poll;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn invariant_5_ingest_over_mtls_is_stored_under_the_certificate_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    // Issued before the server runs (the store is opened directly) …
    let offline = common::issue_cert(&dir, "prod-eu");
    let collector = Collector::start(&dir, &[]);
    // … and while it runs (the command goes through the server's admin API).
    let online = collector.issue_cert("staging");

    let eu = collector.agent(&offline);
    let (status, body) = eu
        .send(&[warning("e1").json(), warning("e2").pod("api-7d9f8b6c5-zzt8w").json()])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["duplicate"].as_u64()),
        (Some(2), Some(0))
    );
    // A payload naming another cluster changes nothing: the field is ignored.
    let staging = collector.agent(&online);
    let (status, _) = staging
        .send(&[warning("s1").raw("cluster", "prod-eu".into()).json()])
        .await;
    assert_eq!(status, 200);

    let admin = collector.admin();
    let eu_events = admin.all_events("&cluster=prod-eu").await;
    let uids: HashSet<&str> = eu_events.iter().map(|e| e["uid"].as_str().unwrap()).collect();
    assert_eq!(uids, HashSet::from(["e1", "e2"]));
    assert!(eu_events.iter().all(|e| e["cluster"] == "prod-eu"));
    let st = admin.all_events("&cluster=staging").await;
    assert_eq!(st.len(), 1);
    assert_eq!(st[0]["cluster"], "staging");

    // Two pods of one Deployment with the same problem are one incident.
    let (status, incidents) = admin.get("/v1/incidents?cluster=prod-eu").await;
    assert_eq!(status, 200, "{incidents}");
    let items = incidents["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{incidents}");
    assert_eq!(items[0]["occurrences"], 2);
    assert_eq!(items[0]["pods"].as_array().unwrap().len(), 2);
    let id = items[0]["id"].as_str().unwrap();
    let (status, detail) = admin.get(&format!("/v1/incidents/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(detail["recent_events"].as_array().unwrap().len(), 2);

    let (status, clusters) = admin.get("/v1/clusters").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = clusters["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cluster"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["prod-eu", "staging"]);
    let eu_cluster = &clusters["items"][0];
    assert_eq!(eu_cluster["events_stored"], 2);
    assert_eq!(eu_cluster["agents"][0]["version"], "test");
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_without_a_valid_client_certificate_is_refused_and_stores_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let collector = Collector::start(&tmp.path().join("data"), &[]);
    let batch = serde_json::json!({"events": [warning("x1").json()]});

    // No client certificate: a clear 401.
    let anonymous = common::client(&collector.ca_pem, None);
    let r = anonymous
        .post(format!("{}/v1/ingest", collector.url))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "client_certificate_required");

    // A certificate from another collector's CA: the TLS handshake fails.
    let foreign_dir = tmp.path().join("foreign");
    let foreign_cert = common::issue_cert(&foreign_dir, "prod-eu");
    let foreign = common::agent_client(&collector.ca_pem, &foreign_cert);
    let refused = foreign
        .post(format!("{}/v1/ingest", collector.url))
        .json(&batch)
        .send()
        .await;
    assert!(
        refused.is_err() || refused.unwrap().status() != 200,
        "a foreign certificate must not be accepted"
    );

    // The bearer token is not a way in for ingest either.
    let r = anonymous
        .post(format!("{}/v1/ingest", collector.url))
        .bearer_auth(&collector.admin_token)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    assert!(collector.admin().all_events("").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn invariant_4_replays_change_nothing_and_count_increases_add_the_difference() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let collector = Collector::start(&dir, &[]);
    let agent = collector.agent(&collector.issue_cert("prod"));
    let admin = collector.admin();

    let batch = [warning("u1").json(), warning("u2").count(2).json()];
    let (_, first) = agent.send(&batch).await;
    assert_eq!(
        (first["accepted"].as_u64(), first["occurrences"].as_u64()),
        (Some(2), Some(3)),
        "{first}"
    );
    let (_, replay) = agent.send(&batch).await;
    assert_eq!(
        (replay["accepted"].as_u64(), replay["duplicate"].as_u64()),
        (Some(0), Some(2)),
        "{replay}"
    );

    // The kubelet bumps u1's count to 5: only 4 new occurrences.
    let grown = warning("u1").count(5).last_seen("2026-11-22T10:05:00Z").json();
    let (_, bump) = agent.send(std::slice::from_ref(&grown)).await;
    assert_eq!(
        (bump["accepted"].as_u64(), bump["occurrences"].as_u64()),
        (Some(1), Some(4)),
        "{bump}"
    );
    // A stale copy with a lower count, and the same bump again (a retry), change nothing.
    let (_, stale) = agent.send(&[warning("u1").count(3).json(), grown]).await;
    assert_eq!(
        (stale["accepted"].as_u64(), stale["duplicate"].as_u64()),
        (Some(0), Some(2)),
        "{stale}"
    );
    // Within one batch the same uid twice counts once.
    let (_, twice) = agent.send(&[warning("u3").json(), warning("u3").json()]).await;
    assert_eq!(
        (twice["accepted"].as_u64(), twice["duplicate"].as_u64()),
        (Some(1), Some(1)),
        "{twice}"
    );

    let events = admin.all_events("").await;
    assert_eq!(events.len(), 3);
    let u1 = events.iter().find(|e| e["uid"] == "u1").unwrap();
    assert_eq!(u1["count"], 5);
    assert_eq!(u1["last_seen"], "2026-11-22T10:05:00Z");
    // Newest activity first.
    assert_eq!(events[0]["uid"], "u1");
    let (_, incidents) = admin.get("/v1/incidents").await;
    assert_eq!(incidents["items"][0]["occurrences"], 5 + 2 + 1);

    // The same uid from another cluster is another event.
    let other = collector.agent(&collector.issue_cert("other"));
    let (_, theirs) = other.send(&[warning("u1").json()]).await;
    assert_eq!(theirs["accepted"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn invariant_2_kill_9_during_ingest_loses_no_acknowledged_event() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let collector = Collector::start(&dir, &[]);
    let cert = collector.issue_cert("prod");
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let mut senders = Vec::new();
    for sender in 0..4 {
        let agent = collector.agent(&cert);
        let acked = acked.clone();
        let stop = stop.clone();
        senders.push(tokio::spawn(async move {
            let mut batch_no = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let uids: Vec<String> = (0..50).map(|i| format!("s{sender}-b{batch_no}-e{i}")).collect();
                let events: Vec<Value> = uids.iter().map(|u| warning(u).json()).collect();
                batch_no += 1;
                let posted = agent
                    .client
                    .post(format!("{}/v1/ingest", agent.url))
                    .json(&serde_json::json!({ "events": events }))
                    .send()
                    .await;
                match posted {
                    Ok(r) if r.status() == 200 => acked.lock().unwrap().extend(uids),
                    Ok(_) | Err(_) => break,
                }
            }
        }));
    }
    // Let a stream of ingests flow, then kill -9 mid-stream.
    while acked.lock().unwrap().len() < 2000 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    collector.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    // The store reopens cleanly and holds every acknowledged event.
    let collector = Collector::start(&dir, &[]);
    let stored = collector.admin().all_events("&cluster=prod").await;
    let stored: HashSet<String> = stored.iter().map(|e| e["uid"].as_str().unwrap().to_owned()).collect();
    let lost: Vec<&String> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        lost.len(),
        lost.first()
    );
    // And it keeps working after the crash.
    let agent = collector.agent(&cert);
    let (status, _) = agent.send(&[warning("after-crash").json()]).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn query_filters_and_cursors_walk_the_store_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let collector = Collector::start(&tmp.path().join("data"), &[]);
    let agent = collector.agent(&collector.issue_cert("prod"));
    let admin = collector.admin();
    let mut events = Vec::new();
    for i in 0..250 {
        let ns = if i % 2 == 0 { "shop" } else { "billing" };
        let node = format!("node-{}", i % 3);
        let ts = format!("2026-11-22T10:{:02}:{:02}Z", i / 60, i % 60);
        let mut w = warning(&format!("q{i}"))
            .namespace(ns)
            .node(&node)
            .last_seen(&ts)
            .pod(&format!("web-{i}"));
        if i % 5 == 0 {
            w = w
                .reason("FailedScheduling")
                .incident_type("FailedScheduling")
                .workload("Deployment", "web");
        }
        events.push(w.json());
    }
    let (status, _) = agent.send(&events).await;
    assert_eq!(status, 200);

    // Paging with limit=7 visits every event exactly once, newest first.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = admin.get(&format!("/v1/events?limit=7{cursor}")).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["uid"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    let expected: Vec<String> = (0..250).rev().map(|i| format!("q{i}")).collect();
    assert_eq!(seen, expected);

    let count = |q: &'static str| {
        let admin = &admin;
        async move { admin.all_events(q).await.len() }
    };
    assert_eq!(count("&namespace=shop").await, 125);
    assert_eq!(
        count("&namespace=shop&node=node-0").await,
        (0..250).filter(|i| i % 2 == 0 && i % 3 == 0).count()
    );
    assert_eq!(count("&pod=web-17").await, 1);
    assert_eq!(count("&workload=Deployment/web").await, 50);
    assert_eq!(count("&workload=web&reason=FailedScheduling").await, 50);
    assert_eq!(count("&incident_type=FailedScheduling&namespace=billing").await, 25);
    assert_eq!(count("&since=2026-11-22T10:04:00Z").await, 10);
    assert_eq!(count("&until=2026-11-22T10:00:09Z").await, 10);
    assert_eq!(count("&cluster=nope").await, 0);
    assert_eq!(count("&pod=never-seen").await, 0);

    // A cursor is bound to its filters.
    let (_, page) = admin.get("/v1/events?limit=5&namespace=shop").await;
    let c = page["next_cursor"].as_str().unwrap();
    let (status, body) = admin
        .get(&format!("/v1/events?limit=5&namespace=billing&cursor={c}"))
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_cursor")));
}

/// SIGTERM stops the collector gracefully (exit 0, said in its log), never
/// kills it: the handlers are installed before the store opens.
#[test]
fn sigterm_stops_the_collector_gracefully() {
    let tmp = tempfile::tempdir().unwrap();
    let mut collector = Collector::start_logging(&tmp.path().join("data"), &[], "info");
    let pid = collector.child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let status =
        poll(Duration::from_secs(20), || collector.child.try_wait().unwrap()).expect("an exit within 20 s of SIGTERM");
    assert!(status.success(), "collector exit status {status}");
    // Its log is read by another thread: wait for that to catch up.
    let log = || collector.output.lock().unwrap()[0].stderr.clone();
    if poll(Duration::from_secs(5), || {
        log().contains("shutdown signal received").then_some(())
    })
    .is_none()
    {
        panic!("no shutdown line in the log: {}", log());
    }
}
