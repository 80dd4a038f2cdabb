//! Agent cost: CPU seconds per 1 000 events and resident memory at 100,
//! 1 000 and 10 000 warning events/s, and idle, for the release
//! `podwarn-agent` against the simulator and the release collector.
//!
//! `cargo build --release --bins && cargo bench -p podwarn-testkit --bench agent`.
//! Writes its section of `docs/BENCHMARKS.md`.

use podwarn_testkit::Scenario;
use podwarn_testkit::harness;
use podwarn_testkit::pipeline::Pipeline;
use std::time::{Duration, Instant};

const RATES: [f64; 3] = [100.0, 1_000.0, 10_000.0];
const WINDOW: Duration = Duration::from_secs(20);
const WARM_UP: Duration = Duration::from_secs(3);

struct Measured {
    rate: f64,
    events: f64,
    cpu: f64,
    peak_rss: u64,
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("agent: bench");
        return;
    }
    // The agent's own defaults (batching, stale bound), not the tests' quick ones.
    let pipeline = Pipeline::start(&["--batch-interval", "500ms", "--stale-watch-after", "10m"]).await;
    let agent = pipeline.agent.as_ref().expect("agent running");
    let sim = &pipeline.sim;
    let pid = agent.child.id();

    tokio::time::sleep(Duration::from_secs(5)).await;
    let (idle_rss, _) = harness::rss_bytes(pid);

    let mut results = Vec::new();
    for rate in RATES {
        sim.cluster().start_scenario(Scenario::Storm, 7, Some(rate)).unwrap();
        tokio::time::sleep(WARM_UP).await;
        let cpu0 = harness::cpu_seconds(pid);
        let seen0 = agent.counter("podwarn_agent_events_seen").await;
        let started = Instant::now();
        let mut peak_rss = 0;
        while started.elapsed() < WINDOW {
            peak_rss = peak_rss.max(harness::rss_bytes(pid).0);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let cpu = harness::cpu_seconds(pid) - cpu0;
        let events = agent.counter("podwarn_agent_events_seen").await - seen0;
        sim.cluster().stop_scenario();
        eprintln!("rate {rate}: {events} events, {cpu:.2} CPU-s, peak RSS {peak_rss}");
        results.push(Measured {
            rate,
            events,
            cpu,
            peak_rss,
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
    }

    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0));
    let mut rows = String::new();
    for m in &results {
        let observed = m.events / WINDOW.as_secs_f64();
        rows.push_str(&format!(
            "| {:.0} | {:.0} | {:.2} | {:.4} | {} |\n",
            m.rate,
            observed,
            m.cpu,
            if m.events > 0.0 {
                m.cpu / m.events * 1000.0
            } else {
                f64::NAN
            },
            mib(m.peak_rss)
        ));
    }
    let section = format!(
        "## Agent: CPU and memory per event rate\n\n\
         Command: `cargo build --release --bins && cargo bench -p podwarn-testkit --bench agent`.\n\
         Release `podwarn-agent` watching the simulator's `storm` scenario (warning events, new and repeated),\n\
         enriching, classifying and shipping to the release collector, all on this machine ({machine}); each rate\n\
         runs {window} s after a {warm} s warm-up. CPU from `/proc/PID/stat` (user + system), memory sampled from\n\
         `VmRSS` every 200 ms. The simulator and the collector share the same 2 cores. Measured {date}.\n\n\
         | target events/s | observed events/s | agent CPU-s | CPU-s per 1 000 events | peak RSS |\n\
         |---|---|---|---|---|\n{rows}\n\
         Idle RSS (connected, watching, nothing happening): {idle}.\n",
        machine = harness::machine_description(),
        window = WINDOW.as_secs(),
        warm = WARM_UP.as_secs(),
        date = jiff::Timestamp::now().strftime("%Y-%m-%d"),
        idle = mib(idle_rss),
    );
    println!("{section}");
    harness::write_benchmark_section("agent", &section);
    drop(pipeline);
}
