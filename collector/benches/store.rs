//! The store alone: durable ingest of decoded batches straight into
//! `Store::ingest`, without TLS, HTTP or JSON, so the collector benchmark's
//! figure can be split into what the store costs and what the rest costs.
//!
//! `cargo bench -p podwarn-collector --bench store` (events: `PODWARN_BENCH_EVENTS`,
//! default 1 000 000). Prints its figures; the collector benchmark publishes.

use podwarn_collector::store::Store;
use podwarn_collector::store::schema::AgentRecord;
use podwarn_collector::tls::AgentIdentity;
use podwarn_shared::wire::{IngestBatch, WarningEvent};
use podwarn_testkit::harness;
use std::time::Instant;

const BATCH: u64 = 1000;
const SENDERS: u64 = 8;

fn batch(from: u64, base_ts: i64) -> IngestBatch {
    let events = (from..from + BATCH)
        .map(|n| {
            let v = collector_bench_event(n, base_ts);
            serde_json::from_value::<WarningEvent>(v).expect("a valid event")
        })
        .collect();
    IngestBatch { agent: None, events }
}

fn collector_bench_event(n: u64, base_ts: i64) -> serde_json::Value {
    let x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let w = (x >> 8) % 400;
    let wl = format!("svc-{w}");
    let tail = xxhash_rust::xxh3::xxh3_64(format!("{wl}/{}/{}", n / 100_000, (x >> 20) % 3).as_bytes());
    let pod = format!("{wl}-{:x}-{:05x}", tail % 0xf_ffff_ffff, tail % 0xf_ffff);
    let ts = jiff::Timestamp::from_second(base_ts + (n / 50) as i64)
        .unwrap()
        .to_string();
    serde_json::json!({
        "uid": format!("{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}", x >> 32, (x >> 16) & 0xffff, x & 0xfff, (x >> 4) & 0xfff, n),
        "namespace": format!("team-{}", w % 40), "pod": pod, "pod_uid": format!("{tail:032x}"),
        "node": format!("ip-10-0-{}-{}.ec2.internal", tail % 5, (tail >> 8) % 10),
        "workload": {"kind": "Deployment", "name": wl}, "container": "app",
        "reason": "BackOff", "message": format!("Back-off restarting failed container app in pod {pod}_team-{}({tail:x})", w % 40),
        "incident_type": "CrashLoopBackOff", "severity": "high",
        "count": 1, "first_seen": ts, "last_seen": ts, "source": "kubelet", "logs": null
    })
}

/// CPU time of the store's writer thread, which every commit waits on.
fn writer_cpu_seconds() -> f64 {
    harness::thread_cpu_seconds(std::process::id(), "podwarn-store-w").expect("the store's writer thread")
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("store: bench");
        return;
    }
    let total: u64 = std::env::var("PODWARN_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.redb")).unwrap();
    store
        .register_agent(AgentRecord {
            agent_id: "a".into(),
            cluster: "bench".into(),
            tenant: "default".into(),
            created_us: 0,
            cert_serial: "01".into(),
            cert_not_after_us: i64::MAX,
            revoked_us: None,
            last_seen_us: None,
            version: None,
            dropped_total: 0,
        })
        .await
        .unwrap();
    let identity = AgentIdentity {
        tenant: "default".into(),
        cluster: "bench".into(),
        agent_id: "a".into(),
    };
    let base_ts = 1_790_000_000;
    let mut next = 0;
    while next < total {
        let round = (total - next).min(100_000);
        // Popped from the end: oldest first, the order agents send in.
        let mut batches: Vec<IngestBatch> = (next..next + round)
            .step_by(BATCH as usize)
            .map(|f| batch(f, base_ts))
            .collect();
        batches.reverse();
        let cpu = harness::cpu_seconds(std::process::id());
        let writer_cpu = writer_cpu_seconds();
        let started = Instant::now();
        let queue = std::sync::Arc::new(std::sync::Mutex::new(batches));
        let mut tasks = Vec::new();
        for _ in 0..SENDERS {
            let (queue, store, identity) = (queue.clone(), store.clone(), identity.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let Some(b) = queue.lock().unwrap().pop() else { return };
                    store.ingest(identity.clone(), b).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        next += round;
        let meta = std::fs::metadata(dir.path().join("s.redb")).unwrap();
        let size = meta.len();
        let on_disk = std::os::unix::fs::MetadataExt::blocks(&meta) * 512;
        println!(
            "store ingest at {next}: {:.0} events/s, {:.4} CPU-s per 1000 events ({:.4} in the writer thread), {} bytes/event (file length), {} on disk",
            round as f64 / secs,
            (harness::cpu_seconds(std::process::id()) - cpu) * 1000.0 / round as f64,
            (writer_cpu_seconds() - writer_cpu) * 1000.0 / round as f64,
            size / next,
            on_disk / next
        );
    }
    print_query_times(&store).await;
    drop(store);
    print_table_sizes(&dir.path().join("s.redb"), total);
}

/// Store-level query latency (no HTTP, no JSON), to tell the store's share
/// of the collector benchmark's query figures.
async fn print_query_times(store: &Store) {
    use podwarn_collector::store::EventQuery;
    let queries = [
        (
            "newest 100",
            EventQuery {
                limit: 100,
                ..Default::default()
            },
        ),
        (
            "namespace, page of 100",
            EventQuery {
                namespace: Some("team-7".into()),
                limit: 100,
                ..Default::default()
            },
        ),
    ];
    for (name, q) in queries {
        let mut times = Vec::new();
        for _ in 0..200 {
            let started = Instant::now();
            let page = store.events(q.clone()).await.unwrap();
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(page.items.len(), 100);
        }
        times.sort_by(f64::total_cmp);
        println!("store query {name}: p50 {:.2} ms, p99 {:.2} ms", times[100], times[197]);
    }
}

/// What each table takes, per stored event: the file grows in large steps,
/// so its size alone says little about the format.
fn print_table_sizes(path: &std::path::Path, events: u64) {
    use redb::{ReadableDatabase, ReadableTableMetadata, TableHandle};
    // The writer thread lets go of the file once its channel closes.
    let db = loop {
        match redb::Database::open(path) {
            Ok(db) => break db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => std::thread::sleep(std::time::Duration::from_millis(50)),
            Err(e) => panic!("reopening the bench store: {e}"),
        }
    };
    let txn = db.begin_read().unwrap();
    let mut total = 0;
    for handle in txn.list_tables().unwrap() {
        let name = handle.name().to_owned();
        let stats = txn.open_untyped_table(handle).unwrap().stats().unwrap();
        let pages = stats.stored_bytes() + stats.metadata_bytes() + stats.fragmented_bytes();
        total += pages;
        println!(
            "table {name}: {:.1} bytes/event in pages ({:.1} stored, {:.1} fragmented)",
            pages as f64 / events as f64,
            stats.stored_bytes() as f64 / events as f64,
            stats.fragmented_bytes() as f64 / events as f64
        );
    }
    println!("all tables: {:.1} bytes/event in pages", total as f64 / events as f64);
}
