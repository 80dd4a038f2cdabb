//! Load: a fleet of simulated node agents, each with its own mTLS client
//! certificate and connection, pushing realistic warning batches to one
//! release `podwarn-collector` while a query client reads from it.
//!
//! `cargo build --release --bins && cargo bench -p podwarn-testkit --bench load`
//!
//! 1. **Probe**: the fleet's offered load doubles every step (from 1 000 event
//!    records/s) until the collector stops keeping up; its capacity is the
//!    highest acknowledged rate of a step.
//! 2. **Hold**: after the backlog drained, the fleet offers 80 % of that
//!    capacity for `PODWARN_LOAD_SECONDS`; when the backlog grows past ten
//!    seconds' worth, the offer is cut by 15 %, so the rate it settles at is the
//!    one the collector holds as its store grows.
//! 3. **Check**: the agents ship what they still hold, then the collector's
//!    counts are compared with what was sent (see `load/verify.rs`).
//!
//! Environment: `PODWARN_LOAD_SECONDS` (hold, default 180), `PODWARN_LOAD_AGENTS`
//! (200), `PODWARN_LOAD_CLUSTERS` (20), `PODWARN_LOAD_STEP_SECONDS` (probe step,
//! 12), `PODWARN_LOAD_RATE` (skip the probe and offer this many records/s),
//! `PODWARN_LOAD_CACHE_SIZE` (the collector's `--cache-size`, default 64MiB: a
//! page cache that is full before the hold starts, so a memory that still grows
//! during the hold grows with the stored events, not by filling the cache).
//! A smoke run: `PODWARN_LOAD_SECONDS=20 PODWARN_LOAD_STEP_SECONDS=6`.
//! Writes its section of `docs/BENCHMARKS.md` and exits non-zero when a
//! check fails.

// The crate root's modules live beside it; these sit in `load/` to keep `benches/` one file per bench.
#[path = "load/fleet.rs"]
mod fleet;
#[path = "load/measure.rs"]
mod measure;
#[path = "load/report.rs"]
mod report;
#[path = "load/verify.rs"]
mod verify;
#[path = "load/warnings.rs"]
mod warnings;

use fleet::Agent;
use measure::{Samples, Shared, percentile};
use podwarn_testkit::harness;
use rand::{Rng, SeedableRng};
use report::{FLAT_FACTOR, FLAT_SLACK, Memory, Report, dir_bytes, loadavg, mib};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// First offered rate of the probe, event records/s.
const PROBE_START: u64 = 1_000;
/// The probe stops after this many steps even if the collector keeps up.
const PROBE_STEPS: usize = 7;
/// A step the collector acknowledges less than this share of is saturated.
const KEEPS_UP: f64 = 0.85;
/// The hold offers this share of the probed capacity.
const HOLD_SHARE: f64 = 0.8;
/// How often the hold looks at the backlog.
const CONTROL_EVERY: Duration = Duration::from_secs(10);
/// A backlog of more than this many seconds of offered load cuts the offer.
const BACKLOG_SECONDS: f64 = 10.0;
/// Longest wait for the fleet to ship what it holds.
const DRAIN_LIMIT: Duration = Duration::from_secs(300);

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

/// One step of the probe.
struct Step {
    /// Records/s offered.
    offered: u64,
    /// Records/s acknowledged.
    acked: f64,
    /// Records waiting at its end.
    backlog: u64,
    /// Ingest p99, ms.
    p99: f64,
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("load: bench");
        return;
    }
    let hold = Duration::from_secs(env_u64("PODWARN_LOAD_SECONDS", 180));
    let n_agents = env_u64("PODWARN_LOAD_AGENTS", 200) as usize;
    let n_clusters = (env_u64("PODWARN_LOAD_CLUSTERS", 20) as usize).clamp(1, n_agents);
    let step = Duration::from_secs(env_u64("PODWARN_LOAD_STEP_SECONDS", 12).max(4));
    let fixed_rate = std::env::var("PODWARN_LOAD_RATE")
        .ok()
        .map(|_| env_u64("PODWARN_LOAD_RATE", 0));
    let load_before = loadavg();
    let run_started = Instant::now();

    let tmp = tempfile::tempdir().expect("temporary directory");
    let data = tmp.path().join("data");
    let binary = harness::binary("podwarn-collector");
    let cache = std::env::var("PODWARN_LOAD_CACHE_SIZE").unwrap_or_else(|_| "64MiB".into());
    let collector = harness::Collector::start(&binary, &data, &["--cache-size", &cache]);
    let pid = collector.child.id();

    let issued = Instant::now();
    let clusters: Vec<String> = (0..n_clusters).map(warnings::cluster_name).collect();
    let cert_dirs = issue_certs(&binary, &data, &clusters, n_agents);
    eprintln!(
        "load: {n_agents} certificates for {n_clusters} clusters in {:.1} s",
        issued.elapsed().as_secs_f64()
    );

    // Busy and quiet nodes: weights spread log-uniformly over 1–200, so batch
    // sizes range from single events to full batches.
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let weights: Vec<f64> = (0..n_agents)
        .map(|_| rng.random_range(0.0..200f64.ln()).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let agents: Vec<Agent> = (0..n_agents)
        .map(|i| Agent::new(i, i % n_clusters, clusters[i % n_clusters].clone(), weights[i] / total))
        .collect();
    let pods: Vec<(String, String)> = agents
        .iter()
        .flat_map(|a| a.pods.iter().take(3).map(|p| (a.cluster.clone(), p.name.clone())))
        .collect();

    let shared = Arc::new(Shared::new());
    let samples = Arc::new(Samples::default());
    let mut fleet = Vec::new();
    for (agent, dir) in agents.into_iter().zip(&cert_dirs) {
        let client = harness::agent_https_client(&collector.ca_pem, dir);
        fleet.push(tokio::spawn(fleet::run(
            agent,
            client,
            collector.url.clone(),
            shared.clone(),
        )));
    }
    let sampler = {
        let (shared, samples, admin) = (shared.clone(), samples.clone(), collector.admin());
        tokio::spawn(async move { measure::sample(pid, admin, &shared, &samples).await })
    };
    let querier = {
        let (shared, admin) = (shared.clone(), collector.admin());
        tokio::spawn(async move { measure::query(admin, pods, &shared).await })
    };

    let probe_steps = match fixed_rate {
        Some(_) => Vec::new(),
        None => probe(&shared, step).await,
    };
    let capacity = probe_steps.iter().map(|s| s.acked).fold(0.0, f64::max);
    let probe_drained = drain(&shared).await;

    // Hold.
    let mut rate = fixed_rate.unwrap_or(((capacity * HOLD_SHARE / 100.0).round() as u64).max(1) * 100);
    let first_rate = rate;
    let mut cuts = Vec::new();
    shared.rate.store(rate, Ordering::Relaxed);
    let hold_start = shared.now();
    let store_at_hold = dir_bytes(&data);
    let own_cpu0 = harness::cpu_seconds(std::process::id());
    let (cpu0, acked0, generated0) = (
        harness::cpu_seconds(pid),
        shared.acked.load(Ordering::Relaxed),
        shared.generated.load(Ordering::Relaxed),
    );
    shared.generating.store(true, Ordering::Relaxed);
    let hold_until = Instant::now() + hold;
    while Instant::now() < hold_until {
        tokio::time::sleep(CONTROL_EVERY.min(hold_until - Instant::now())).await;
        if Instant::now() < hold_until && shared.backlog() as f64 > BACKLOG_SECONDS * rate as f64 {
            rate = ((rate as f64 * 0.85) as u64).max(100);
            shared.rate.store(rate, Ordering::Relaxed);
            cuts.push((shared.now() - hold_start, rate, shared.backlog()));
            eprintln!("load: backlog {} events: offering {rate}/s", shared.backlog());
        }
    }
    let hold_end = shared.now();
    let hold_secs = hold_end - hold_start;
    let cpu = harness::cpu_seconds(pid) - cpu0;
    let own_cpu = harness::cpu_seconds(std::process::id()) - own_cpu0;
    let acked_hold = shared.acked.load(Ordering::Relaxed) - acked0;
    let generated_hold = shared.generated.load(Ordering::Relaxed) - generated0;
    let backlog_end = shared.backlog();

    // Ship what is left, then stop.
    shared.generating.store(false, Ordering::Relaxed);
    shared.querying.store(false, Ordering::Relaxed);
    shared.finish.store(true, Ordering::Relaxed);
    let drain_started = Instant::now();
    let joined = tokio::time::timeout(DRAIN_LIMIT, futures::future::join_all(fleet)).await;
    let drain_secs = drain_started.elapsed().as_secs_f64();
    querier.await.expect("query client");
    sampler.await.expect("sampler");
    let Ok(joined) = joined else {
        println!(
            "load: FAILED: the fleet did not ship its backlog of {} events within {} s",
            shared.backlog(),
            DRAIN_LIMIT.as_secs()
        );
        println!("load: 0 passed, 1 failed");
        std::process::exit(1);
    };
    let agents: Vec<Agent> = joined.into_iter().map(|r| r.expect("agent task")).collect();
    let (rss_end, rss_peak) = harness::rss_bytes(pid);

    let mut checks = verify::Checks::default();
    checks.check(
        probe_drained && shared.backlog() == 0 && shared.refused_batches.load(Ordering::Relaxed) == 0,
        format!(
            "every batch stored: {} batches acknowledged, {} refused, {} retried attempts",
            shared.ingest.lock().expect("ingest log").len(),
            shared.refused_batches.load(Ordering::Relaxed),
            shared.retries.load(Ordering::Relaxed)
        ),
    );
    let admin = collector.admin();
    verify::stored(&admin, &agents, &mut checks).await;
    let queries = shared.queries.lock().expect("query log").clone();
    let failed_queries = queries.iter().filter(|q| !q.ok).count();
    checks.check(
        failed_queries == 0 && !queries.is_empty(),
        format!(
            "queries during ingest: {} answered, {failed_queries} failed",
            queries.len()
        ),
    );
    let memory = Memory::of(&samples.between(hold_start, hold_end), hold_secs);
    checks.check(
        memory.flat,
        format!(
            "memory flat: mean RSS {} in the hold's first third, {} in its last (limit {:.0} % + {} MiB)",
            mib(memory.first_third),
            mib(memory.last_third),
            (FLAT_FACTOR - 1.0) * 100.0,
            FLAT_SLACK >> 20
        ),
    );

    let report = Report {
        n_agents,
        n_clusters,
        hold_secs,
        step,
        probe_steps,
        capacity,
        fixed_rate,
        first_rate,
        cuts,
        acked_hold,
        generated_hold,
        backlog_end,
        cpu,
        own_cpu,
        cache,
        store_at_hold,
        binary: &binary,
        memory,
        rss_end,
        rss_peak,
        drain_secs,
        agents: &agents,
        data: &data,
        load_before,
        load_after: loadavg(),
        run_secs: run_started.elapsed().as_secs_f64(),
        checks: &checks,
    };
    let section = report.render(&shared, &samples, hold_start, hold_end);
    println!("{section}");
    harness::write_benchmark_section("load", &section);
    println!("load: {} passed, {} failed", checks.passed(), checks.failed());
    drop(collector);
    if checks.failed() > 0 {
        std::process::exit(1);
    }
}

/// Issues `n` agent certificates, agent `i` for cluster `i % clusters.len()`,
/// a few `cert issue` processes at a time.
fn issue_certs(binary: &Path, data: &Path, clusters: &[String], n: usize) -> Vec<PathBuf> {
    const PARALLEL: usize = 4;
    let mut dirs: Vec<Option<PathBuf>> = vec![None; n];
    std::thread::scope(|s| {
        for (lane, chunk) in dirs.chunks_mut(n.div_ceil(PARALLEL).max(1)).enumerate() {
            let first = lane * n.div_ceil(PARALLEL).max(1);
            s.spawn(move || {
                for (k, slot) in chunk.iter_mut().enumerate() {
                    let cluster = &clusters[(first + k) % clusters.len()];
                    *slot = Some(harness::issue_cert(binary, data, cluster));
                }
            });
        }
    });
    dirs.into_iter().map(|d| d.expect("certificate issued")).collect()
}

/// Doubles the offered load every `step` until the acknowledged rate falls
/// behind; each step is measured after a short warm-up.
async fn probe(shared: &Shared, step: Duration) -> Vec<Step> {
    let warm = step / 6;
    let mut steps = Vec::new();
    let mut rate = PROBE_START;
    shared.rate.store(rate, Ordering::Relaxed);
    shared.generating.store(true, Ordering::Relaxed);
    for _ in 0..PROBE_STEPS {
        shared.rate.store(rate, Ordering::Relaxed);
        tokio::time::sleep(warm).await;
        let (from, acked0) = (shared.now(), shared.acked.load(Ordering::Relaxed));
        tokio::time::sleep(step - warm).await;
        let to = shared.now();
        let acked = (shared.acked.load(Ordering::Relaxed) - acked0) as f64 / (to - from);
        let (mut latencies, _) = shared.ingest_between(from, to);
        let s = Step {
            offered: rate,
            acked,
            backlog: shared.backlog(),
            p99: percentile(&mut latencies, 0.99),
        };
        eprintln!(
            "load: probe {} records/s offered, {:.0}/s acknowledged, backlog {}, ingest p99 {:.0} ms",
            s.offered, s.acked, s.backlog, s.p99
        );
        let saturated = s.acked < KEEPS_UP * rate as f64 || s.backlog as f64 > 2.0 * rate as f64;
        steps.push(s);
        if saturated {
            break;
        }
        rate *= 2;
    }
    shared.generating.store(false, Ordering::Relaxed);
    steps
}

/// Waits until everything generated is acknowledged; false if it takes longer than [`DRAIN_LIMIT`].
async fn drain(shared: &Shared) -> bool {
    let deadline = Instant::now() + DRAIN_LIMIT;
    while shared.backlog() > 0 {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    true
}
