//! Agent cost and latency: CPU seconds per 1 000 events and resident memory
//! at 100, 1 000 and 10 000 warning events/s and idle, whether the agent
//! keeps up, and the event-to-queryable latency with default batching, for
//! `podwarn-agent` as its image ships it (the `agent` profile) against the
//! simulator and the release collector.
//!
//! `cargo build --release --bins && cargo build --profile agent -p podwarn-agent && cargo bench -p podwarn-testkit --bench agent`.
//! Writes its section of `docs/BENCHMARKS.md`.

use podwarn_testkit::harness::{self, Agent};
use podwarn_testkit::pipeline::Pipeline;
use podwarn_testkit::{PodRef, Scenario, Simulator, Workload};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

const RATES: [f64; 3] = [100.0, 1_000.0, 10_000.0];
const WINDOW: Duration = Duration::from_secs(20);
const WARM_UP: Duration = Duration::from_secs(3);
/// A rate is kept up with when the agent takes at least this share of what
/// the simulator emitted in the window, and accounts for at least this share
/// of what it took as shipped or folded into a shipped copy (`coalesced`).
const KEPT_UP: f64 = 0.95;
/// Latency probe: this many new warnings, one every `LATENCY_GAP`.
const LATENCY_EVENTS: usize = 300;
const LATENCY_GAP: Duration = Duration::from_millis(50);
/// How often the query API is polled for them.
const POLL: Duration = Duration::from_millis(25);

/// The issue 7 targets.
const TARGET_CPU_PER_1000: f64 = 0.01;
const TARGET_IDLE_MIB: f64 = 12.0;
const TARGET_RSS_10K_MIB: f64 = 40.0;
const TARGET_P50: Duration = Duration::from_secs(1);
const TARGET_P99: Duration = Duration::from_secs(2);

struct Measured {
    rate: f64,
    offered: f64,
    events: f64,
    shipped: f64,
    coalesced: f64,
    cpu: f64,
    peak_rss: u64,
}

impl Measured {
    fn kept_up(&self) -> bool {
        self.events >= KEPT_UP * self.offered && self.shipped >= KEPT_UP * self.events
    }

    fn cpu_per_1000(&self) -> f64 {
        if self.events > 0.0 {
            self.cpu / self.events * 1000.0
        } else {
            f64::NAN
        }
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// `RssFile` (pages of the mapped binary and libraries) and `RssAnon` (heap,
/// stacks) of a process, in bytes: what the idle RSS is made of.
fn rss_split(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (kib("RssFile:"), kib("RssAnon:"))
}

fn emitted(sim: &Simulator) -> f64 {
    sim.cluster().scenario_stats().map_or(0.0, |s| s.emitted as f64)
}

/// One storm rate: CPU, events taken and shipped, peak RSS over `WINDOW`.
async fn measure_rate(sim: &Simulator, agent: &Agent, rate: f64) -> Measured {
    let pid = agent.child.id();
    sim.cluster().start_scenario(Scenario::Storm, 7, Some(rate)).unwrap();
    tokio::time::sleep(WARM_UP).await;
    let cpu0 = harness::cpu_seconds(pid);
    let seen0 = agent.counter("podwarn_agent_events_seen").await;
    let shipped0 = delivered(agent).await;
    let coalesced0 = agent.counter("podwarn_agent_events_coalesced").await;
    let emitted0 = emitted(sim);
    let started = Instant::now();
    let mut peak_rss = 0;
    while started.elapsed() < WINDOW {
        peak_rss = peak_rss.max(harness::rss_bytes(pid).0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cpu = harness::cpu_seconds(pid) - cpu0;
    let events = agent.counter("podwarn_agent_events_seen").await - seen0;
    let shipped = delivered(agent).await - shipped0;
    let coalesced = agent.counter("podwarn_agent_events_coalesced").await - coalesced0;
    let offered = emitted(sim) - emitted0;
    sim.cluster().stop_scenario();
    eprintln!(
        "rate {rate}: {offered} emitted, {events} taken, {shipped} shipped or folded, {cpu:.2} CPU-s, peak RSS {peak_rss}"
    );
    Measured {
        rate,
        offered,
        events,
        shipped,
        coalesced,
        cpu,
        peak_rss,
    }
}

/// Events shipped, and events folded into a newer copy of the same warning
/// in the same batch (the collector stores the same from that one copy).
async fn delivered(agent: &Agent) -> f64 {
    agent.counter("podwarn_agent_events_shipped").await + agent.counter("podwarn_agent_events_coalesced").await
}

/// Waits until the agent has shipped everything it took (at most a minute).
async fn settle(agent: &Agent) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let seen = agent.counter("podwarn_agent_events_seen").await;
        let shipped = delivered(agent).await;
        if shipped >= seen {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Event-to-queryable latency: new warnings created in the simulator at known
/// instants, the collector's `/v1/events` polled until each shows up.
async fn measure_latency(pipeline: &Pipeline) -> Vec<Duration> {
    let cluster = pipeline.sim.cluster();
    let pods: Vec<PodRef> = cluster
        .create(&Workload::deployment("latency", "web").replicas(3))
        .unwrap();
    let admin = pipeline.admin();
    // Let the Pod watch see the new Pods, as it would long before their first warning.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let created: std::sync::Arc<std::sync::Mutex<HashMap<String, Instant>>> = Default::default();
    let emitter = {
        let created = created.clone();
        let cluster = pipeline.sim.cluster();
        tokio::spawn(async move {
            let mut next = tokio::time::Instant::now();
            for i in 0..LATENCY_EVENTS {
                tokio::time::sleep_until(next).await;
                next += LATENCY_GAP;
                let pod = &pods[i % pods.len()];
                let message = format!("Readiness probe failed: HTTP probe failed with statuscode: 503 (probe {i})");
                let event = cluster
                    .emit_warning(pod, "Unhealthy", &message, Some(&pod.containers[0]))
                    .unwrap();
                created.lock().unwrap().insert(event.uid, Instant::now());
            }
        })
    };

    let mut visible: HashMap<String, Instant> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while visible.len() < LATENCY_EVENTS && Instant::now() < deadline {
        let (status, body) = admin.get("/v1/events?namespace=latency&limit=1000").await;
        let now = Instant::now();
        if status == 200 {
            for item in body["items"].as_array().into_iter().flatten() {
                if let Some(uid) = item["uid"].as_str() {
                    visible.entry(uid.to_owned()).or_insert(now);
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
    emitter.await.unwrap();
    let created = created.lock().unwrap();
    let mut latencies: Vec<Duration> = created
        .iter()
        .filter_map(|(uid, at)| Some(visible.get(uid)?.saturating_duration_since(*at)))
        .collect();
    latencies.sort();
    let missing: HashSet<&String> = created.keys().filter(|uid| !visible.contains_key(*uid)).collect();
    assert!(missing.is_empty(), "{} warnings never became queryable", missing.len());
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn verdict(ok: bool, miss: String) -> String {
    if ok {
        "met".to_owned()
    } else {
        format!("**missed** ({miss})")
    }
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("agent: bench");
        return;
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let pinned = tempfile::tempdir().expect("a folder for the binaries");
    harness::pin_binaries_from(
        pinned.path(),
        &[
            ("podwarn-agent", harness::shipped_agent()),
            ("podwarn-collector", harness::binary("podwarn-collector")),
        ],
    );
    // The agent's own defaults (batching, stale bound), not the tests' quick ones.
    let pipeline = Pipeline::start(&["--batch-interval", "500ms", "--stale-watch-after", "10m"]).await;
    let agent = pipeline.agent.as_ref().expect("agent running");
    let pid = agent.child.id();

    tokio::time::sleep(Duration::from_secs(5)).await;
    let (idle_rss, _) = harness::rss_bytes(pid);
    let (idle_file, idle_anon) = rss_split(pid);

    let mut results = Vec::new();
    for rate in RATES {
        results.push(measure_rate(&pipeline.sim, agent, rate).await);
        settle(agent).await;
    }
    let latencies = measure_latency(&pipeline).await;
    let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
    eprintln!("latency: p50 {p50:?}, p99 {p99:?} over {} warnings", latencies.len());

    let mut rows = String::new();
    for m in &results {
        rows.push_str(&format!(
            "| {:.0} | {:.0} | {:.0} | {} | {:.2} | {:.4} | {:.1} MiB |\n",
            m.rate,
            m.offered / WINDOW.as_secs_f64(),
            m.events / WINDOW.as_secs_f64(),
            if m.kept_up() { "yes" } else { "**no**" },
            m.cpu,
            m.cpu_per_1000(),
            mib(m.peak_rss)
        ));
    }
    let top = results.last().expect("rates measured");
    let at_1000 = &results[1];
    let targets = format!(
        "| target | measured | verdict |\n|---|---|---|\n\
         | ≤ {TARGET_CPU_PER_1000} CPU-s per 1 000 events | {:.4} at 10 000/s, {:.4} at 1 000/s | {} |\n\
         | ≤ {TARGET_IDLE_MIB} MiB RSS idle | {:.1} MiB | {} |\n\
         | ≤ {TARGET_RSS_10K_MIB} MiB RSS at 10 000/s, keeping up | {:.1} MiB, {} | {} |\n\
         | latency p50 ≤ 1 s, p99 ≤ 2 s | p50 {:.2} s, p99 {:.2} s | {} |\n",
        top.cpu_per_1000(),
        at_1000.cpu_per_1000(),
        verdict(
            top.cpu_per_1000() <= TARGET_CPU_PER_1000,
            format!(
                "{:.1}× the target at 10 000/s",
                top.cpu_per_1000() / TARGET_CPU_PER_1000
            )
        ),
        mib(idle_rss),
        verdict(
            mib(idle_rss) <= TARGET_IDLE_MIB,
            format!("by {:.1} MiB", mib(idle_rss) - TARGET_IDLE_MIB)
        ),
        mib(top.peak_rss),
        if top.kept_up() { "kept up" } else { "did not keep up" },
        verdict(
            mib(top.peak_rss) <= TARGET_RSS_10K_MIB && top.kept_up(),
            if top.kept_up() {
                format!("by {:.1} MiB", mib(top.peak_rss) - TARGET_RSS_10K_MIB)
            } else {
                "fell behind".to_owned()
            }
        ),
        p50.as_secs_f64(),
        p99.as_secs_f64(),
        verdict(
            p50 <= TARGET_P50 && p99 <= TARGET_P99,
            format!(
                "p50 by {:.2} s, p99 by {:.2} s",
                (p50.as_secs_f64() - 1.0).max(0.0),
                (p99.as_secs_f64() - 2.0).max(0.0)
            )
        ),
    );
    let section = format!(
        "## Agent: CPU, memory and latency\n\n\
         Command: `cargo build --release --bins && cargo build --profile agent -p podwarn-agent && cargo bench -p podwarn-testkit --bench agent`.\n\
         `podwarn-agent` as its image ships it (the `agent` profile: fat LTO, optimised for size) with its default flags (batches of up to 1 000 events or 500 ms) watching the\n\
         simulator's `storm` scenario (256 failing Pods; warning events new and repeated, restarts, crash logs),\n\
         enriching, classifying and shipping to the release collector, all on this machine ({machine}; load\n\
         average at start {load}); each rate runs {window} s after a {warm} s warm-up. An event is one Event\n\
         object the agent takes from its watch (a new Event or a higher count). CPU from `/proc/PID/stat`\n\
         (user + system), memory sampled from `VmRSS` every 200 ms. The simulator and the collector share the\n\
         same 2 cores. Kept up: the agent took ≥ {keep:.0} % of what the simulator emitted in the window, and\n\
         ≥ {keep:.0} % of what it took was shipped or folded into a shipped copy of the same Event with a higher\n\
         count (`podwarn_agent_events_coalesced_total`; {folded:.0} % at 10 000/s). Measured {date}.\n\n\
         | target events/s | emitted events/s | taken events/s | kept up | agent CPU-s | CPU-s per 1 000 events | peak RSS |\n\
         |---|---|---|---|---|---|---|\n{rows}\n\
         Idle RSS (connected, watching, nothing happening): {idle:.1} MiB, of which {file:.1} MiB are file pages\n\
         (the executable's code and data as mapped, libc) and {anon:.1} MiB heap and stacks.\n\n\
         Event-to-queryable latency: {n} new warnings created in the simulator one every {gap} ms (after the\n\
         storms), each timed from its creation to the first `/v1/events` answer that lists it (polled every\n\
         {poll} ms, so each time is up to {poll} ms late): p50 {p50:.2} s, p99 {p99:.2} s, max {max:.2} s.\n\n\
         {targets}",
        machine = harness::machine_description(),
        load = load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        window = WINDOW.as_secs(),
        warm = WARM_UP.as_secs(),
        keep = KEPT_UP * 100.0,
        date = jiff::Timestamp::now().strftime("%Y-%m-%d"),
        folded = 100.0 * top.coalesced / top.events.max(1.0),
        idle = mib(idle_rss),
        file = mib(idle_file),
        anon = mib(idle_anon),
        n = latencies.len(),
        gap = LATENCY_GAP.as_millis(),
        poll = POLL.as_millis(),
        p50 = p50.as_secs_f64(),
        p99 = p99.as_secs_f64(),
        max = latencies.last().copied().unwrap_or_default().as_secs_f64(),
    );
    println!("{section}");
    harness::write_benchmark_section("agent", &section);
    drop(pipeline);
}
