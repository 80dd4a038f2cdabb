//! Invariant 6 for the collector: its memory is bounded by its page cache
//! (`--cache-size`) and its connections, never by how much it has stored.

mod common;

use common::{Collector, warning};
use podwarn_testkit::harness;
use serde_json::Value;

const BATCH: u64 = 1000;
const SENDERS: usize = 4;

/// Event `n`: a distinct uid, pod, node and message, spread over namespaces
/// and workloads, so the store holds what a real one does.
fn event(n: u64) -> Value {
    let workload = format!("svc-{}", n % 97);
    let pod = format!("{workload}-{:x}-{:05x}", n / 7 + 0x5000_0000, n % 0xf_ffff);
    let second = 1_790_000_000 + n / 20;
    let ts = jiff::Timestamp::from_second(second as i64).unwrap().to_string();
    warning(&format!("6f1c1c7e-{:04x}-4000-8000-{n:012x}", n % 0xffff))
        .namespace(&format!("team-{}", n % 13))
        .pod(&pod)
        .node(&format!("ip-10-0-{}-{}.ec2.internal", n % 5, n % 11))
        .workload("Deployment", &workload)
        .message(&format!(
            "Back-off restarting failed container app in pod {pod}_team({n:x})"
        ))
        .raw("first_seen", ts.clone().into())
        .last_seen(&ts)
        .json()
}

/// Stores events `from..to`, `SENDERS` batches at a time: the server's
/// tasks and threads allocate and free concurrently, as with many agents.
async fn store(agent: &common::Agent, from: u64, to: u64) {
    let starts: Vec<u64> = (from..to).step_by(BATCH as usize).collect();
    for group in starts.chunks(SENDERS) {
        let sends = group.iter().map(|&start| async move {
            let events: Vec<Value> = (start..(start + BATCH).min(to)).map(event).collect();
            agent.send(&events).await
        });
        for (status, body) in futures::future::join_all(sends).await {
            assert_eq!(status, 200, "{body}");
        }
    }
}

/// Steady-state RSS: the largest of a few samples after some queries, so a
/// sample caught between two frees does not pass for a lower plateau.
async fn rss_after_queries(collector: &Collector) -> u64 {
    let admin = collector.admin();
    let mut peak = 0;
    for i in 0..5 {
        for query in [
            format!("/v1/events?namespace=team-{i}&limit=100"),
            "/v1/events?limit=100".to_owned(),
            format!("/v1/incidents?namespace=team-{i}&limit=100"),
        ] {
            let (status, body) = admin.get(&query).await;
            assert_eq!(status, 200, "{query}: {body}");
        }
        peak = peak.max(harness::rss_bytes(collector.child.id()).0);
    }
    peak
}

#[tokio::test(flavor = "multi_thread")]
async fn invariant_6_collector_memory_does_not_grow_with_the_events_it_stores() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let collector = Collector::start(&dir, &["--cache-size", "8MiB"]);
    let cert = collector.issue_cert("prod");
    let agent = collector.agent(&cert);
    let file = dir.join("podwarn.redb");

    // RSS moves by several MiB between samples as the allocator takes and
    // returns memory, so each phase reports the highest of its samples.
    // Warm-up: the cache fills, the dictionary learns the names.
    let mut rss_warm = 0;
    for upto in [10_000, 20_000, 30_000] {
        store(&agent, upto - 10_000, upto).await;
        rss_warm = rss_warm.max(rss_after_queries(&collector).await);
    }
    let bytes_warm = std::fs::metadata(&file).unwrap().len();
    // Then almost four times as many events again.
    let mut rss_full = 0;
    for upto in (40_000..=110_000).step_by(10_000) {
        store(&agent, upto - 10_000, upto).await;
        if upto >= 90_000 {
            rss_full = rss_full.max(rss_after_queries(&collector).await);
        }
    }
    let bytes_full = std::fs::metadata(&file).unwrap().len();

    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let grown = bytes_full - bytes_warm;
    eprintln!(
        "RSS peak {:.1} MiB up to 30 000 events ({:.1} MiB stored), {:.1} MiB from 90 000 to 110 000 ({:.1} MiB stored)",
        mib(rss_warm),
        mib(bytes_warm),
        mib(rss_full),
        mib(bytes_full)
    );
    // The test means something only if the store grew far beyond the margin.
    assert!(grown > 32 << 20, "the store grew by only {:.1} MiB", mib(grown));
    // A per-event cost of 200 bytes (an in-memory index entry, a leaked
    // record) would add 16 MiB over the 80 000 events.
    assert!(
        rss_full <= rss_warm + (16 << 20),
        "collector RSS grew from {:.1} to {:.1} MiB while the store grew by {:.1} MiB",
        mib(rss_warm),
        mib(rss_full),
        mib(grown)
    );
}
