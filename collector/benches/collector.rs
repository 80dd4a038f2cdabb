//! Collector benchmark: durable ingest rate over mTLS, and query latency over
//! a store of N events, measured against the real release binary on loopback.
//!
//! `cargo bench -p podwarn-collector --bench collector` (env `PODWARN_BENCH_EVENTS`
//! sets the store size, default 1 000 000). Writes its section of
//! `docs/BENCHMARKS.md`.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_podwarn-collector");
const BATCH: usize = 1000;
const SENDERS: usize = 8;

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path) -> Server {
    let mut child = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn collector");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("collector exited").unwrap();
        if let Some(url) = line.strip_prefix("podwarn-collector listening on ") {
            break url.to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Server { child, url }
}

fn client(dir: &Path, cert_dir: Option<&Path>) -> reqwest::Client {
    let ca = std::fs::read(dir.join("tls/ca.crt")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut &ca[..]) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match cert_dir {
        None => builder.with_no_client_auth(),
        Some(d) => {
            let chain = rustls_pemfile::certs(&mut &std::fs::read(d.join("tls.crt")).unwrap()[..])
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = rustls_pemfile::private_key(&mut &std::fs::read(d.join("tls.key")).unwrap()[..])
                .unwrap()
                .unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .build()
        .unwrap()
}

/// A deterministic, realistic-looking warning: 40 namespaces, 20 nodes,
/// 400 workloads with hashed pod names, corpus-like reasons and messages.
fn event(n: u64, base_ts: i64) -> Value {
    let x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let ns = format!("team-{}", x % 40);
    let wl = format!("svc-{}", (x >> 8) % 400);
    let pod = format!("{wl}-{:x}-{:05x}", (x >> 16) % 0xfffff, (x >> 32) % 0xfffff);
    let node = format!("ip-10-0-{}-{}.ec2.internal", (x >> 40) % 20, (x >> 44) % 250);
    let (reason, kind, message) = match x % 5 {
        0 => (
            "BackOff",
            "CrashLoopBackOff",
            format!("Back-off restarting failed container app in pod {pod}_{ns}"),
        ),
        1 => (
            "Unhealthy",
            "Unhealthy",
            "Readiness probe failed: HTTP probe failed with statuscode: 503".to_owned(),
        ),
        2 => (
            "Failed",
            "ImagePullBackOff",
            format!(
                "Failed to pull image \"registry.example.com/{wl}:v1.{}\": not found",
                x % 30
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
    let ts = jiff::Timestamp::from_second(base_ts + (n / 50) as i64)
        .unwrap()
        .to_string();
    json!({
        "uid": format!("{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}", x >> 32, (x >> 16) & 0xffff, x & 0xfff, (x >> 4) & 0xfff, n),
        "namespace": ns, "pod": pod, "pod_uid": format!("{:032x}", x), "node": node,
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

/// Sends batches with `SENDERS` concurrent clients; returns events/s.
async fn ingest(client: &reqwest::Client, url: &str, batches: Vec<bytes::Bytes>, events: u64) -> f64 {
    let queue = Arc::new(std::sync::Mutex::new(batches));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..SENDERS {
        let queue = queue.clone();
        let client = client.clone();
        let url = format!("{url}/v1/ingest");
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(body) = queue.lock().unwrap().pop() else {
                    return;
                };
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    events as f64 / started.elapsed().as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn latency(client: &reqwest::Client, url: &str, token: &str, paths: &[String]) -> (Duration, Duration) {
    let mut times = Vec::with_capacity(paths.len());
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
        assert!(body["items"].is_array());
    }
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
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
        .unwrap_or(1_000_000);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = start(&dir);
    let cert_dir: PathBuf = tmp.path().join("agent");
    let ok = Command::new(BIN)
        .args(["cert", "issue", "--data-dir"])
        .arg(&dir)
        .args(["--cluster", "bench", "--out"])
        .arg(&cert_dir)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let agent = client(&dir, Some(&cert_dir));
    let admin = client(&dir, None);
    let token = std::fs::read_to_string(dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    let base_ts = 1_790_000_000;

    // Ingest rate: three rounds of fresh events into a growing store; the median is reported.
    let round = (total / 10).clamp(BATCH as u64 * SENDERS as u64, 200_000);
    let mut rates = Vec::new();
    let mut next = 0;
    for _ in 0..3 {
        let b = batches(next, next + round, base_ts);
        rates.push(ingest(&agent, &server.url, b, round).await);
        next += round;
    }
    let ingest_rate = median(rates.clone());
    eprintln!("ingest rounds (events/s): {rates:?}");

    // Replays (all duplicates) cost a lookup each and no write.
    let replay = ingest(&agent, &server.url, batches(0, round, base_ts), round).await;

    // Fill up to `total`, then measure queries.
    while next < total {
        let to = (next + 200_000).min(total);
        ingest(&agent, &server.url, batches(next, to, base_ts), to - next).await;
        next = to;
    }
    let end_ts = base_ts + (total / 50) as i64;
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
        .map(|i| event(i * 4999 % total, base_ts)["pod"].as_str().unwrap().to_owned())
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
    let bytes = std::fs::metadata(dir.join("podwarn.redb")).unwrap().len();

    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
    let machine = format!(
        "{} cores, {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                .split(':')
                .nth(1)
                .unwrap_or("")
                .trim()
                .to_owned()))
            .unwrap_or_default()
    );
    let section = format!(
        "## Collector: durable ingest and queries\n\n\
         Command: `cargo bench -p podwarn-collector --bench collector` (store size: `PODWARN_BENCH_EVENTS`, default 1000000).\n\
         Release binary on loopback, mTLS, {SENDERS} concurrent senders, batches of {BATCH} uncompressed events,\n\
         every 200 sent after the redb commit (fsync). Machine: {machine}. Measured {date}.\n\n\
         | measure | result |\n|---|---|\n\
         | durable ingest, new events (median of 3 rounds of {round}) | {ingest_rate:.0} events/s |\n\
         | ingest rounds | {rounds} |\n\
         | replayed batch (all duplicates) | {replay:.0} events/s |\n\
         | store size at {total} events | {bytes} bytes ({per_event:.0} bytes/event) |\n\
         | query p50 / p99: namespace + 1 h window, page of 100 | {a} / {b} |\n\
         | query p50 / p99: one pod | {c} / {d} |\n\
         | query p50 / p99: newest 100, no filter | {e} / {f} |\n\
         | query p50 / p99: incidents of a namespace | {g} / {h} |\n\n\
         Query latency includes HTTPS (keep-alive) and JSON; 200 requests each, sequential.\n",
        date = jiff::Timestamp::now().strftime("%Y-%m-%d"),
        rounds = rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", "),
        per_event = bytes as f64 / total as f64,
        a = ms(q_ns.0),
        b = ms(q_ns.1),
        c = ms(q_pod.0),
        d = ms(q_pod.1),
        e = ms(q_latest.0),
        f = ms(q_latest.1),
        g = ms(q_inc.0),
        h = ms(q_inc.1),
    );
    println!("{section}");
    write_section(&section);
    drop(server);
}

/// Replaces this benchmark's section of docs/BENCHMARKS.md (or appends it).
fn write_section(section: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/BENCHMARKS.md");
    let begin = "<!-- bench:collector:begin -->";
    let end = "<!-- bench:collector:end -->";
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|_| "# podwarn benchmarks\n\n".to_owned());
    let block = format!("{begin}\n{section}{end}");
    let doc = match (doc.find(begin), doc.find(end)) {
        (Some(b), Some(e)) if b < e => format!("{}{block}{}", &doc[..b], &doc[e + end.len()..]),
        _ => format!("{}\n{block}\n", doc.trim_end()),
    };
    std::fs::write(&path, doc).unwrap();
}
