//! The run's findings: the collector's memory over the hold, and the section
//! of `docs/BENCHMARKS.md` that presents them.

use crate::fleet::{self, Agent};
use crate::measure::{self, Samples, Shared, percentile, slope};
use crate::{BACKLOG_SECONDS, HOLD_SHARE, KEEPS_UP, PROBE_START, Step, verify};
use podwarn_testkit::harness;
use std::path::Path;
use std::time::Duration;

/// Memory counts as flat when the mean RSS of the hold's last third is at most
/// this factor of its first third's, plus [`FLAT_SLACK`].
pub const FLAT_FACTOR: f64 = 1.10;
/// See [`FLAT_FACTOR`].
pub const FLAT_SLACK: u64 = 16 << 20;
/// Timeline rows of the hold.
const ROWS: usize = 6;

/// The collector's memory over the hold.
pub struct Memory {
    /// RSS of the first sample, bytes.
    pub first: u64,
    /// RSS of the last sample.
    pub last: u64,
    /// Highest RSS sampled.
    pub max: u64,
    /// Mean RSS over the first third.
    pub first_third: u64,
    /// Mean RSS over the last third.
    pub last_third: u64,
    /// MiB per minute.
    pub slope: f64,
    /// Events stored at the first sample.
    pub stored_first: u64,
    /// Events stored at the last sample.
    pub stored_last: u64,
    /// Whether the last third stayed within [`FLAT_FACTOR`] and [`FLAT_SLACK`] of the first.
    pub flat: bool,
}

impl Memory {
    /// Sums up the samples of a hold that lasted `hold_secs`.
    pub fn of(samples: &[measure::Sample], hold_secs: f64) -> Memory {
        let start = samples.first().map_or(0.0, |s| s.at);
        let third = |k: f64| -> u64 {
            let from = start + hold_secs * k / 3.0;
            let to = from + hold_secs / 3.0;
            let part: Vec<u64> = samples
                .iter()
                .filter(|s| s.at >= from && s.at <= to)
                .map(|s| s.rss)
                .collect();
            part.iter().sum::<u64>() / (part.len().max(1) as u64)
        };
        let (first_third, last_third) = (third(0.0), third(2.0));
        let points: Vec<(f64, f64)> = samples
            .iter()
            .map(|s| (s.at / 60.0, s.rss as f64 / f64::from(1 << 20)))
            .collect();
        Memory {
            first: samples.first().map_or(0, |s| s.rss),
            last: samples.last().map_or(0, |s| s.rss),
            max: samples.iter().map(|s| s.rss).max().unwrap_or(0),
            first_third,
            last_third,
            slope: slope(&points),
            stored_first: samples.first().map_or(0, |s| s.stored),
            stored_last: samples.last().map_or(0, |s| s.stored),
            flat: samples.len() >= 3 && last_third as f64 <= first_third as f64 * FLAT_FACTOR + FLAT_SLACK as f64,
        }
    }
}

/// `bytes` in MiB, for people.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// The one-minute load average.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// The type of the file system holding `path`, from `/proc/self/mounts`.
fn filesystem(path: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, point, kind) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(point).then(|| (point.len(), kind.to_owned()))
        })
        .max()
        .map_or_else(|| "an unknown file system".into(), |(_, kind)| kind)
}

/// Which collector ran: the binary's build time and the commit of the tree it came from.
fn build(binary: &Path) -> String {
    let built = std::fs::metadata(binary)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| jiff::Timestamp::try_from(t).ok())
        .map_or_else(|| "?".into(), |t| t.strftime("%Y-%m-%d %H:%M UTC").to_string());
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "?".into());
    format!("built {built} from the working tree at {commit}")
}

/// Bytes of the files under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => dir_bytes(&e.path()),
                    _ => e.metadata().map_or(0, |m| m.len()),
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Everything the section of `docs/BENCHMARKS.md` says.
pub struct Report<'a> {
    /// Agents in the fleet.
    pub n_agents: usize,
    /// Clusters they belong to.
    pub n_clusters: usize,
    /// How long the hold lasted.
    pub hold_secs: f64,
    /// Length of a probe step.
    pub step: Duration,
    /// The probe, step by step.
    pub probe_steps: Vec<Step>,
    /// Highest acknowledged rate of a probe step.
    pub capacity: f64,
    /// The rate `PODWARN_LOAD_RATE` fixed, if any.
    pub fixed_rate: Option<u64>,
    /// The hold's first offer.
    pub first_rate: u64,
    /// Cuts of the offer: (seconds into the hold, new rate, backlog then).
    pub cuts: Vec<(f64, u64, u64)>,
    /// Records acknowledged during the hold.
    pub acked_hold: u64,
    /// Records generated during the hold.
    pub generated_hold: u64,
    /// Records waiting when the hold ended.
    pub backlog_end: u64,
    /// Collector CPU seconds over the hold.
    pub cpu: f64,
    /// This process's CPU seconds over the hold.
    pub own_cpu: f64,
    /// The collector's `--cache-size`.
    pub cache: String,
    /// Bytes of the data directory when the hold began.
    pub store_at_hold: u64,
    /// The collector binary.
    pub binary: &'a Path,
    /// The collector's memory over the hold.
    pub memory: Memory,
    /// Collector RSS after the drain.
    pub rss_end: u64,
    /// Collector peak RSS (`VmHWM`).
    pub rss_peak: u64,
    /// How long the final drain took.
    pub drain_secs: f64,
    /// The fleet after the run.
    pub agents: &'a [Agent],
    /// The collector's data directory.
    pub data: &'a Path,
    /// Load average before the run.
    pub load_before: String,
    /// Load average after it.
    pub load_after: String,
    /// Wall time of the whole run.
    pub run_secs: f64,
    /// Outcomes of the checks.
    pub checks: &'a verify::Checks,
}

impl Report<'_> {
    /// The section, with the ingest and query logs of `shared` and the `samples` of the hold `[hold_start, hold_end]`.
    pub fn render(&self, shared: &Shared, samples: &Samples, hold_start: f64, hold_end: f64) -> String {
        let ms = |v: f64| format!("{v:.1} ms");
        let sustained = self.acked_hold as f64 / self.hold_secs;
        let (mut lat, _) = shared.ingest_between(hold_start, hold_end);
        let (p50, p99) = (percentile(&mut lat, 0.5), percentile(&mut lat, 0.99));
        let (_, mut all_sizes) = shared.ingest_between(0.0, f64::MAX);
        let batches = all_sizes.len();
        let mean_size = all_sizes.iter().sum::<f64>() / batches.max(1) as f64;
        let size_p50 = percentile(&mut all_sizes, 0.5);
        let (size_min, size_max) = (
            all_sizes.first().copied().unwrap_or(0.0),
            all_sizes.last().copied().unwrap_or(0.0),
        );
        let full = all_sizes.iter().filter(|s| **s >= fleet::MAX_BATCH as f64).count();
        let mix = self.agents.iter().fold(fleet::Mix::default(), |m, a| fleet::Mix {
            new: m.new + a.mix.new,
            updates: m.updates + a.mix.updates,
            replays: m.replays + a.mix.replays,
        });
        let records = (mix.new + mix.updates + mix.replays).max(1) as f64;
        let distinct: u64 = self.agents.iter().map(Agent::distinct).sum();
        let occurrences: u64 = self.agents.iter().map(Agent::occurrences).sum();
        let new_share = mix.new as f64 / records;

        let mut queries = String::new();
        for (k, name) in measure::QUERY_KINDS.iter().enumerate() {
            let mut q = shared.queries_between(Some(k), hold_start, hold_end);
            queries.push_str(&format!(
                "| query p50 / p99 during ingest: {name} | {} / {} ({} queries) |\n",
                ms(percentile(&mut q, 0.5)),
                ms(percentile(&mut q, 0.99)),
                q.len()
            ));
        }
        let mut all_q = shared.queries_between(None, hold_start, hold_end);
        let q99 = percentile(&mut all_q, 0.99);

        let offer = match (self.fixed_rate, self.cuts.is_empty()) {
            (Some(r), true) => format!("{r} records/s (fixed by `PODWARN_LOAD_RATE`)"),
            (None, true) => format!(
                "{} records/s ({:.0} % of the probed capacity), never cut",
                self.first_rate,
                HOLD_SHARE * 100.0
            ),
            (_, false) => format!(
                "{} records/s at first, cut to {} (backlog over {BACKLOG_SECONDS:.0} s: {})",
                self.first_rate,
                self.cuts.last().map_or(0, |c| c.1),
                self.cuts
                    .iter()
                    .map(|(t, r, b)| format!("at {t:.0} s to {r}/s with {b} waiting"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let m = &self.memory;
        let grew = m.stored_last.saturating_sub(m.stored_first);
        let mut out = format!(
            "## Load: {agents} agents, one collector\n\n\
             Command: `cargo build --release --bins && cargo bench -p podwarn-testkit --bench load` (hold length\n\
             `PODWARN_LOAD_SECONDS`, default 180; see the header of `tests/benches/load.rs` for the other knobs).\n\
             {agents} simulated node agents in {clusters} clusters, each with its own client certificate (`cert issue`) and its\n\
             own HTTPS connection, ship zstd-compressed JSON batches (at most {max} events, every {interval} ms, as the agent\n\
             does) to the release collector on loopback; each batch is retried with backoff until it is acknowledged. Agents'\n\
             rates spread log-uniformly over 1–200×, so batches range from single events to full ones. Records: {new:.0} % new\n\
             events, {upd:.0} % count updates of recent events, {rep:.0} % replays (double delivery and relists after a watch\n\
             expiry); ten kinds of Pod warnings with real-looking names, messages and crash logs. Meanwhile one query client\n\
             asks, one query at a time with 100 ms pauses, for the four queries below. The probe doubles the offered load\n\
             from {start} records/s every {step} s until the acknowledged rate falls under {keep:.0} % of it; the hold offers\n\
             {share:.0} % of the best acknowledged rate for {hold:.0} s, cutting the offer by 15 % whenever the backlog exceeds\n\
             {backlog:.0} s of it. Machine: {machine} (load average {lb} before, {la} after: the test's own\n\
             processes raise it; a busy machine lowers the numbers). Data directory on {fs}; the collector runs with\n\
             `--cache-size {cache}` (its store file was {store_hold} MiB when the hold began), otherwise defaults; binary\n\
             {build}. Measured {date}; the whole run took {run:.0} s.\n\n\
             | measure | result |\n|---|---|\n\
             | sustained ingest over the hold, acknowledged | **{sustained:.0} event records/s** ({acked} in {hold:.0} s; {new_rate:.0} new events/s) |\n\
             | offered | {offer}; generated {generated:.0} records/s on average |\n\
             | backlog at the end of the hold | {backlog_end} records ({backlog_secs:.1} s of the offer), shipped in {drain:.1} s |\n\
             | ingest p50 / p99 per batch (answer after commit) | {p50} / {p99} |\n\
             | batch sizes over the run | {batches} batches, {size_min:.0}–{size_max:.0} events, median {size_p50:.0}, mean {mean_size:.0}, {full} full |\n\
             {queries}\
             | query p99 during ingest, all kinds | {q99} |\n\
             | collector RSS over the hold: first / last / max | {rss_first} / {rss_last} / {rss_max} (peak of the run {rss_peak}) |\n\
             | collector RSS slope over the hold | {slope:+.2} MiB/min, while the store grew by {grew} events ({stored_first} → {stored_last}) |\n\
             | collector CPU over the hold | {cpu:.1} CPU-s, {cpu_per:.3} CPU-s per 1 000 records (load generator: {own_cpu:.1} CPU-s) |\n\
             | stored at the end | {distinct} distinct events, {occurrences} occurrences, {store} MiB on disk |\n\
             | checks | {passed} passed, {failed} failed |\n\n",
            agents = self.n_agents,
            clusters = self.n_clusters,
            max = fleet::MAX_BATCH,
            interval = fleet::BATCH_INTERVAL.as_millis(),
            new = new_share * 100.0,
            upd = mix.updates as f64 / records * 100.0,
            rep = mix.replays as f64 / records * 100.0,
            start = PROBE_START,
            step = self.step.as_secs(),
            keep = KEEPS_UP * 100.0,
            share = HOLD_SHARE * 100.0,
            hold = self.hold_secs,
            backlog = BACKLOG_SECONDS,
            machine = harness::machine_description(),
            lb = self.load_before,
            la = self.load_after,
            date = jiff::Timestamp::now().strftime("%Y-%m-%d"),
            run = self.run_secs,
            acked = self.acked_hold,
            new_rate = sustained * new_share,
            generated = self.generated_hold as f64 / self.hold_secs,
            backlog_end = self.backlog_end,
            backlog_secs = self.backlog_end as f64 / self.cuts.last().map_or(self.first_rate, |c| c.1).max(1) as f64,
            drain = self.drain_secs,
            p50 = ms(p50),
            p99 = ms(p99),
            q99 = ms(q99),
            rss_first = mib(m.first),
            rss_last = mib(m.last),
            rss_max = mib(m.max),
            rss_peak = mib(self.rss_peak.max(self.rss_end)),
            slope = m.slope,
            stored_first = m.stored_first,
            stored_last = m.stored_last,
            cpu = self.cpu,
            own_cpu = self.own_cpu,
            fs = filesystem(self.data),
            cache = self.cache,
            store_hold = self.store_at_hold >> 20,
            build = build(self.binary),
            cpu_per = self.cpu / (self.acked_hold.max(1) as f64) * 1000.0,
            store = dir_bytes(self.data) >> 20,
            passed = self.checks.passed(),
            failed = self.checks.failed(),
        );

        if !self.probe_steps.is_empty() {
            out.push_str(&format!(
                "Probe (capacity {:.0} records/s):\n\n\
                 | offered records/s | acknowledged records/s | backlog after the step | ingest p99 |\n|---|---|---|---|\n",
                self.capacity
            ));
            for s in &self.probe_steps {
                out.push_str(&format!(
                    "| {} | {:.0} | {} | {} |\n",
                    s.offered,
                    s.acked,
                    s.backlog,
                    ms(s.p99)
                ));
            }
            out.push('\n');
        }

        out.push_str(
            "Hold, in sixths:\n\n\
             | from s | offered /s | acknowledged /s | backlog | ingest p50 / p99 | query p99 | RSS | events stored |\n\
             |---|---|---|---|---|---|---|---|\n",
        );
        let len = (hold_end - hold_start) / ROWS as f64;
        for r in 0..ROWS {
            let from = hold_start + len * r as f64;
            let to = from + len;
            let (mut lat, events) = shared.ingest_between(from, to);
            let mut q = shared.queries_between(None, from, to);
            let end = samples.at(to);
            out.push_str(&format!(
                "| {:.0} | {} | {:.0} | {} | {} / {} | {} | {} | {} |\n",
                from - hold_start,
                end.map_or(0, |s| s.rate),
                events.iter().sum::<f64>() / len,
                end.map_or(0, |s| s.generated.saturating_sub(s.acked)),
                ms(percentile(&mut lat, 0.5)),
                ms(percentile(&mut lat, 0.99)),
                ms(percentile(&mut q, 0.99)),
                end.map_or_else(|| "?".into(), |s| mib(s.rss)),
                end.map_or(0, |s| s.stored),
            ));
        }
        out.push_str("\nChecks:\n\n");
        for (ok, what) in &self.checks.list {
            out.push_str(&format!("- {} {what}\n", if *ok { "ok:" } else { "**FAILED**:" }));
        }
        out
    }
}
