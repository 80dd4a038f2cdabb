//! Collector benchmark: durable ingest rate over mTLS against redb's own raw
//! batched write rate on the same disk, storage per event, and query latency
//! over a store of N events, measured against the real release binary on
//! loopback.
//!
//! `cargo bench -p podwarn-collector --bench collector` (env
//! `PODWARN_BENCH_EVENTS` sets the store size, default 10 000 000). Writes its
//! section of `docs/BENCHMARKS.md`.

use podwarn_testkit::harness::{self, Collector};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use xxhash_rust::xxh3::xxh3_64;

const BIN: &str = env!("CARGO_BIN_EXE_podwarn-collector");
const BATCH: usize = 1000;
const SENDERS: usize = 16;
/// Events per second of event time: 10M events span about 55 hours.
const EVENTS_PER_SECOND: u64 = 50;

/// A deterministic, realistic warning: 400 workloads in 40 namespaces, three
/// pods each that are replaced every 100 000 events (rollouts), 50 nodes, and
/// the corpus's commonest reasons with their real message shapes.
fn event(n: u64, base_ts: i64) -> Value {
    let x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let w = (x >> 8) % 400;
    let ns = format!("team-{}", w % 40);
    let wl = format!("svc-{w}");
    let generation = n / 100_000;
    let replica = (x >> 20) % 3;
    let rs = xxh3_64(format!("{wl}/{generation}").as_bytes());
    let tail = xxh3_64(format!("{wl}/{generation}/{replica}").as_bytes());
    let pod = format!("{wl}-{:x}-{:05x}", rs % 0xf_ffff_ffff, tail % 0xf_ffff);
    let node = format!("ip-10-0-{}-{}.ec2.internal", tail % 5, (tail >> 8) % 10);
    let (reason, kind, message) = match x % 5 {
        0 => (
            "BackOff",
            "CrashLoopBackOff",
            format!(
                "Back-off restarting failed container app in pod {pod}_{ns}({:032x})",
                tail
            ),
        ),
        1 => (
            "Unhealthy",
            "Unhealthy",
            format!(
                "Readiness probe failed: Get \"http://10.1.{}.{}:8080/healthz\": dial tcp: connect: connection refused",
                tail % 250,
                (tail >> 8) % 250
            ),
        ),
        2 => (
            "Failed",
            "ImagePullBackOff",
            format!(
                "Failed to pull image \"registry.example.com/{wl}:v1.{}\": not found",
                generation % 30
            ),
        ),
        3 => (
            "FailedScheduling",
            "FailedScheduling",
            "0/12 nodes are available: 3 Insufficient cpu, 9 node(s) didn't match Pod's node affinity/selector."
                .to_owned(),
        ),
        _ => (
            "FailedMount",
            "FailedMount",
            format!("MountVolume.SetUp failed for volume \"config\" : configmap \"{wl}-config\" not found"),
        ),
    };
    let ts = jiff::Timestamp::from_second(base_ts + (n / EVENTS_PER_SECOND) as i64)
        .unwrap()
        .to_string();
    json!({
        "uid": format!("{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}", x >> 32, (x >> 16) & 0xffff, x & 0xfff, (x >> 4) & 0xfff, n),
        "namespace": ns, "pod": pod, "pod_uid": format!("{:016x}{:016x}", rs, tail), "node": node,
        "workload": {"kind": "Deployment", "name": wl}, "container": "app",
        "reason": reason, "message": message, "incident_type": kind, "severity": "high",
        "count": 1, "first_seen": ts, "last_seen": ts, "source": "kubelet", "logs": null
    })
}

/// Pre-encoded batches, so the clients measure the collector, not JSON encoding.
fn batches(from: u64, to: u64, base_ts: i64) -> Vec<bytes::Bytes> {
    (from..to)
        .step_by(BATCH)
        .map(|start| {
            let events: Vec<Value> = (start..(start + BATCH as u64).min(to))
                .map(|n| event(n, base_ts))
                .collect();
            serde_json::to_vec(&json!({ "events": events })).unwrap().into()
        })
        .collect()
}

/// Sends batches with `SENDERS` concurrent clients; returns events/s and the
/// sorted request latencies.
async fn ingest(
    client: &reqwest::Client,
    url: &str,
    mut batches: Vec<bytes::Bytes>,
    events: u64,
) -> (f64, Vec<Duration>) {
    // Popped from the end: oldest first, the order agents send in.
    batches.reverse();
    let queue = Arc::new(std::sync::Mutex::new(batches));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..SENDERS {
        let queue = queue.clone();
        let client = client.clone();
        let url = format!("{url}/v1/ingest");
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            loop {
                let Some(body) = queue.lock().unwrap().pop() else {
                    return times;
                };
                let sent = Instant::now();
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
                times.push(sent.elapsed());
            }
        }));
    }
    let mut times = Vec::new();
    for t in tasks {
        times.extend(t.await.unwrap());
    }
    times.sort();
    (events as f64 / started.elapsed().as_secs_f64(), times)
}

/// redb's own rate on this disk: the same request bodies written as opaque
/// values, `SENDERS` of them per durable transaction (what one group commit
/// of the collector holds), into a fresh file. Returns events/s.
fn raw_redb_rate(dir: &Path, batches: &[bytes::Bytes], events: u64) -> f64 {
    const RAW: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("raw");
    let path = dir.join("raw.redb");
    let db = redb::Database::create(&path).unwrap();
    let started = Instant::now();
    for (i, group) in batches.chunks(SENDERS).enumerate() {
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(RAW).unwrap();
            for (j, body) in group.iter().enumerate() {
                table.insert((i * SENDERS + j) as u64, body.as_ref()).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    drop(db);
    std::fs::remove_file(path).unwrap();
    rate
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn latency(client: &reqwest::Client, url: &str, token: &str, paths: &[String]) -> (Duration, Duration, usize) {
    let mut times = Vec::with_capacity(paths.len());
    let mut items = 0;
    for path in paths {
        let started = Instant::now();
        let r = client
            .get(format!("{url}{path}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        times.push(started.elapsed());
        items += body["items"].as_array().map_or(0, Vec::len);
    }
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99), items / paths.len())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("collector: bench");
        return;
    }
    let total: u64 = std::env::var("PODWARN_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    // The events' times are fixed (September 2026), so the default 30-day
    // retention would start deleting them during the run, shrinking the store
    // and competing with ingest: keep them.
    let server = Collector::start(Path::new(BIN), &dir, &["--retention", "3650d"]);
    let cert_dir = server.issue_cert("bench");
    let agent = harness::agent_https_client(&server.ca_pem, &cert_dir);
    let admin = harness::https_client(&server.ca_pem, None);
    let token = server.admin_token.clone();
    let base_ts = 1_790_000_000;

    // Ingest: rounds of fresh events into a growing store, each followed by
    // redb's raw rate for the same bodies on the same disk; the medians and
    // the median of the per-round ratios are reported.
    let round = (total / 20).clamp(BATCH as u64 * SENDERS as u64, 250_000);
    let (mut rates, mut raws, mut ratios, mut p50s, mut p99s) = (vec![], vec![], vec![], vec![], vec![]);
    let mut cpu_per_1000 = vec![];
    let mut next = 0;
    for _ in 0..3 {
        let b = batches(next, next + round, base_ts);
        let cpu_before = harness::cpu_seconds(server.child.id());
        let (rate, times) = ingest(&agent, &server.url, b.clone(), round).await;
        cpu_per_1000.push((harness::cpu_seconds(server.child.id()) - cpu_before) * 1000.0 / round as f64);
        let raw = raw_redb_rate(tmp.path(), &b, round);
        rates.push(rate);
        raws.push(raw);
        ratios.push(rate / raw);
        p50s.push(percentile(&times, 0.5).as_secs_f64());
        p99s.push(percentile(&times, 0.99).as_secs_f64());
        next += round;
        eprintln!("round: ingest {rate:.0} events/s, raw redb {raw:.0} events/s");
    }

    // Replays (all duplicates) cost one lookup each and no write.
    let (replay, _) = ingest(&agent, &server.url, batches(0, round, base_ts), round).await;

    // Fill up to `total`, then measure queries and size.
    let filling = Instant::now();
    while next < total {
        let to = (next + 200_000).min(total);
        ingest(&agent, &server.url, batches(next, to, base_ts), to - next).await;
        next = to;
        if next % 1_000_000 == 0 {
            eprintln!("filled {next} events in {:.0} s", filling.elapsed().as_secs_f64());
        }
    }
    let late = batches(total - round.min(total), total, base_ts + 3_600_000);
    let end_ts = base_ts + (total / EVENTS_PER_SECOND) as i64;
    let window = |i: u64| {
        let until = end_ts - (i as i64 * 997) % (end_ts - base_ts);
        let since = until - 3600;
        (
            jiff::Timestamp::from_second(since).unwrap(),
            jiff::Timestamp::from_second(until).unwrap(),
        )
    };
    let ns_window: Vec<String> = (0..200)
        .map(|i| {
            let (since, until) = window(i);
            format!(
                "/v1/events?namespace=team-{}&since={since}&until={until}&limit=100",
                i % 40
            )
        })
        .collect();
    let pods: Vec<String> = (0..200)
        .map(|i| event(i * 49_999 % total, base_ts)["pod"].as_str().unwrap().to_owned())
        .map(|pod| format!("/v1/events?pod={pod}&limit=100"))
        .collect();
    let latest: Vec<String> = (0..200).map(|_| "/v1/events?limit=100".to_owned()).collect();
    let incidents: Vec<String> = (0..200)
        .map(|i| format!("/v1/incidents?namespace=team-{}&limit=100", i % 40))
        .collect();
    let q_ns = latency(&admin, &server.url, &token, &ns_window).await;
    let q_pod = latency(&admin, &server.url, &token, &pods).await;
    let q_latest = latency(&admin, &server.url, &token, &latest).await;
    let q_inc = latency(&admin, &server.url, &token, &incidents).await;
    let file = std::fs::metadata(dir.join("podwarn.redb")).unwrap();
    // redb grows its file in large steps and leaves the tail unwritten (a
    // hole): the blocks allocated are the disk it takes.
    let (length, bytes) = (file.len(), std::os::unix::fs::MetadataExt::blocks(&file) * 512);
    let (rss, peak) = harness::rss_bytes(server.child.id());
    // A last round into the full store: ingest must not slow down with size.
    let (late_rate, _) = ingest(&agent, &server.url, late, round.min(total)).await;

    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
    let section = format!(
        "## Collector: durable ingest, storage and queries\n\n\
         Command: `cargo bench -p podwarn-collector --bench collector` (store size: `PODWARN_BENCH_EVENTS`, default 10000000).\n\
         Release binary on loopback, mTLS, {SENDERS} concurrent senders on the same machine, batches of {BATCH}\n\
         uncompressed events (about {body} bytes of JSON each), every 200 sent after the redb commit (fsync).\n\
         The raw redb rate writes the same request bodies as opaque values, {SENDERS} per durable transaction,\n\
         into a fresh file on the same disk, right after each round. Machine: {machine}. Measured {date}.\n\n\
         | measure | result |\n|---|---|\n\
         | durable ingest, new events (median of 3 rounds of {round}) | **{ingest_rate:.0} events/s** |\n\
         | redb raw batched write of the same bytes (median) | {raw:.0} events/s |\n\
         | ingest / raw redb (median of per-round ratios) | **{ratio:.2}** |\n\
         | collector CPU per 1 000 events ingested (user + system, median) | {cpu:.4} CPU-s |\n\
         | ingest rounds | {rounds} |\n\
         | ingest request p50 / p99 (batch of {BATCH}, {SENDERS} in flight) | {lat50} / {lat99} |\n\
         | ingest into the full store ({total} events), one more round | {late_rate:.0} events/s |\n\
         | replayed batch (all duplicates) | {replay:.0} events/s |\n\
         | disk taken by the store at {total} events (allocated blocks; file length {length} bytes) | {bytes} bytes (**{per_event:.0} bytes/event**) |\n\
         | collector RSS after the queries (peak) | {rss} ({peak}) |\n\
         | query p50 / p99: namespace + 1 h window, page of 100 | {a} / **{b}** (avg {an} items) |\n\
         | query p50 / p99: one pod | {c} / {d} (avg {cn} items) |\n\
         | query p50 / p99: newest 100, no filter | {e} / {f} |\n\
         | query p50 / p99: incidents of a namespace | {g} / {h} |\n\n\
         Query latency includes HTTPS (keep-alive) and JSON; 200 requests each, sequential.\n",
        body = batches(0, BATCH as u64, base_ts)[0].len(),
        machine = harness::machine_description(),
        date = jiff::Timestamp::now().strftime("%Y-%m-%d"),
        ingest_rate = median(rates.clone()),
        raw = median(raws),
        ratio = median(ratios),
        cpu = median(cpu_per_1000),
        rounds = rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", "),
        lat50 = ms(Duration::from_secs_f64(median(p50s))),
        lat99 = ms(Duration::from_secs_f64(median(p99s))),
        per_event = bytes as f64 / total as f64,
        rss = mib(rss),
        peak = mib(peak),
        a = ms(q_ns.0),
        b = ms(q_ns.1),
        an = q_ns.2,
        c = ms(q_pod.0),
        d = ms(q_pod.1),
        cn = q_pod.2,
        e = ms(q_latest.0),
        f = ms(q_latest.1),
        g = ms(q_inc.0),
        h = ms(q_inc.1),
    );
    println!("{section}");
    harness::write_benchmark_section("collector", &section);
    drop(server);
}
