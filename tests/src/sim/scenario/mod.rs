//! Scenario generators: seeded, reproducible clusters with failing workloads that emit
//! Warning events at a configured rate, from a few per minute to tens of thousands per
//! second. Emission is batched per 10 ms tick under one store lock, never a task per event.

mod catalog;
mod plan;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use super::Shared;
use super::cluster::{Result, SimError};

pub(crate) use plan::Generator;

/// A named scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Healthy cluster: Normal events only.
    Quiet,
    /// A Deployment whose pods crash-loop.
    Crashloop,
    /// A Deployment whose pods get OOMKilled.
    Oomkill,
    /// A Deployment with an image that cannot be pulled.
    Imagepull,
    /// A realistic cluster with every kind of failure and Normal events mixed in.
    Mixed,
    /// Many failing pods at a very high rate.
    Storm,
}

impl Scenario {
    /// Every scenario, in `--help` order.
    pub const ALL: [Scenario; 6] = [
        Scenario::Quiet,
        Scenario::Crashloop,
        Scenario::Oomkill,
        Scenario::Imagepull,
        Scenario::Mixed,
        Scenario::Storm,
    ];

    /// The name used on the command line and the control endpoint.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Quiet => "quiet",
            Scenario::Crashloop => "crashloop",
            Scenario::Oomkill => "oomkill",
            Scenario::Imagepull => "imagepull",
            Scenario::Mixed => "mixed",
            Scenario::Storm => "storm",
        }
    }

    /// One line for `--help`.
    pub fn description(self) -> &'static str {
        match self {
            Scenario::Quiet => "healthy workloads, Normal events only (rate counts Normal events)",
            Scenario::Crashloop => "a Deployment crash-looping: restarts with exit codes, BackOff warnings",
            Scenario::Oomkill => "pods OOMKilled (restart, no event) then BackOff warnings",
            Scenario::Imagepull => "bad image tags: Failed/ErrImagePull/ImagePullBackOff warnings",
            Scenario::Mixed => {
                "realistic cluster: crash loops, OOMKills, image pulls, probes, scheduling, mounts, Normal events, a few non-Pod warnings"
            }
            Scenario::Storm => "hundreds of failing pods at a high rate (default 20000 warnings/s)",
        }
    }

    /// Default rate in Warning events per second (Normal events for `quiet`).
    pub fn default_rate(self) -> f64 {
        match self {
            Scenario::Quiet => 0.05,
            Scenario::Crashloop | Scenario::Imagepull => 0.5,
            Scenario::Oomkill => 0.2,
            Scenario::Mixed => 2.0,
            Scenario::Storm => 20_000.0,
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Scenario::ALL.into_iter().find(|sc| sc.name() == s).ok_or_else(|| {
            let names: Vec<_> = Scenario::ALL.iter().map(|s| s.name()).collect();
            format!("unknown scenario {s:?}; one of: {}", names.join(", "))
        })
    }
}

/// Turns a rate into a whole number of events per tick, carrying fractions over, so that
/// after any sequence of ticks exactly `floor(rate * elapsed)` events were scheduled
/// (bounded per tick so a stalled runtime catches up in steps, not one huge batch).
#[derive(Debug, Clone)]
pub struct Pacer {
    /// Events per 10^6 seconds, so integer arithmetic keeps the schedule exact.
    micro_rate: u128,
    scheduled: u64,
    max_per_tick: u64,
}

impl Pacer {
    /// A pacer for `rate` events per second.
    pub fn new(rate: f64) -> Self {
        let rate = rate.max(0.0);
        Self {
            micro_rate: (rate * 1e6).round() as u128,
            scheduled: 0,
            max_per_tick: ((rate * 0.25).ceil() as u64).max(1),
        }
    }

    /// Events due now, `elapsed` after the start.
    pub fn due(&mut self, elapsed: Duration) -> u64 {
        let target = (self.micro_rate * elapsed.as_nanos() / 1_000_000_000_000_000) as u64;
        let due = target.saturating_sub(self.scheduled).min(self.max_per_tick);
        self.scheduled += due;
        due
    }

    /// Events scheduled so far.
    pub fn scheduled(&self) -> u64 {
        self.scheduled
    }
}

/// Progress of a running scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioStats {
    /// Scenario name.
    pub scenario: String,
    /// Target rate.
    pub rate: f64,
    /// Primary events (Warnings; Normals for `quiet`) emitted by the generator.
    pub emitted: u64,
    /// Seconds since start.
    pub elapsed_secs: f64,
}

#[derive(Debug)]
pub(crate) struct Running {
    task: JoinHandle<()>,
    /// Set by [`Running::stop`], read by the generator under the store lock.
    stopped: Arc<AtomicBool>,
    emitted: Arc<AtomicU64>,
    scenario: Scenario,
    rate: f64,
    started: tokio::time::Instant,
}

impl Running {
    /// Stops the generator: once this returns, nothing more is emitted, so what the
    /// store (and its emitted log) holds is final for every reader that comes after.
    ///
    /// Aborting the task alone does not do that: `abort` only asks, and a tick already
    /// planned on another worker (maybe waiting for the store lock) could still be applied
    /// after the caller had read the emitted log: one Event counted one more than the
    /// record a test compared the collector with. The flag is checked under the store
    /// lock, so a tick is applied either before a reader's lock or not at all.
    pub(crate) fn stop(self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.task.abort();
    }

    pub(crate) fn stats(&self) -> ScenarioStats {
        ScenarioStats {
            scenario: self.scenario.name().to_string(),
            rate: self.rate,
            emitted: self.emitted.load(Ordering::Relaxed),
            elapsed_secs: self.started.elapsed().as_secs_f64(),
        }
    }
}

/// Tick length of the generator.
pub(crate) const TICK: Duration = Duration::from_millis(10);

pub(crate) fn start(shared: Arc<Shared>, scenario: Scenario, seed: u64, rate: Option<f64>) -> Result<Running> {
    let rate = rate.unwrap_or_else(|| scenario.default_rate());
    let mut generator = shared
        .store
        .write(|s| Generator::setup(s, scenario, seed))
        .map_err(|e| SimError::Conflict(format!("scenario {scenario}: {e:?}")))?;
    let emitted = Arc::new(AtomicU64::new(0));
    let counter = emitted.clone();
    let stopped = Arc::new(AtomicBool::new(false));
    let stop = stopped.clone();
    let started = tokio::time::Instant::now();
    let task = tokio::spawn(async move {
        let mut pacer = Pacer::new(rate);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let due = pacer.due(started.elapsed());
            if due == 0 {
                continue;
            }
            let actions = generator.plan(due);
            let applied = shared.store.write(|s| {
                // Under the lock: see `Running::stop`.
                let go = !stop.load(Ordering::SeqCst);
                if go {
                    generator.apply(s, &actions);
                }
                go
            });
            if !applied {
                return;
            }
            counter.fetch_add(due, Ordering::Relaxed);
        }
    });
    Ok(Running {
        task,
        stopped,
        emitted,
        scenario,
        rate,
        started,
    })
}

/// Plays `scenario` for `virtual_time` as fast as possible, tick by tick exactly as the
/// live generator would schedule it; returns the primary events emitted per tick.
pub(crate) fn drive(
    shared: &Shared,
    scenario: Scenario,
    seed: u64,
    rate: f64,
    virtual_time: Duration,
) -> Result<Vec<u64>> {
    let mut generator = shared
        .store
        .write(|s| Generator::setup(s, scenario, seed))
        .map_err(|e| SimError::Conflict(format!("scenario {scenario}: {e:?}")))?;
    let mut pacer = Pacer::new(rate);
    let ticks = (virtual_time.as_nanos() / TICK.as_nanos()) as u32;
    let mut per_tick = Vec::with_capacity(ticks as usize);
    for i in 1..=ticks {
        let due = pacer.due(TICK * i);
        let actions = generator.plan(due);
        shared.store.write(|s| generator.apply(s, &actions));
        per_tick.push(due);
    }
    Ok(per_tick)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_schedules_exactly_rate_times_elapsed() {
        let mut p = Pacer::new(20_000.0);
        let per_tick: Vec<u64> = (1..=200).map(|i| p.due(TICK * i)).collect();
        assert!(per_tick.iter().all(|&n| n == 200), "{per_tick:?}");
        assert_eq!(p.scheduled(), 40_000);
    }

    #[test]
    fn pacer_handles_slow_rates_and_catch_up() {
        let mut p = Pacer::new(3.0 / 60.0);
        let total: u64 = (1..=6000).map(|i| p.due(TICK * i)).sum();
        assert_eq!(total, 3, "three events in the first minute");
        let mut fast = Pacer::new(1000.0);
        assert_eq!(fast.due(Duration::from_secs(1)), 250, "a late tick is capped");
        assert_eq!(fast.due(Duration::from_secs(1)), 250);
        assert_eq!(fast.due(Duration::from_millis(1010)), 250);
        assert_eq!(fast.due(Duration::from_millis(1020)), 250);
        assert_eq!(fast.due(Duration::from_millis(1030)), 30);
    }

    /// Once `stop_scenario` has returned, the store does not change any more, even when
    /// the generator had planned a tick and was waiting for the store lock: the fault
    /// matrix reads the emitted log right after stopping and compares the collector with
    /// it (a tick applied after that read shows as one Event stored with a count one
    /// above the record).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_is_emitted_once_stop_returns() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let sim = crate::Simulator::start(crate::SimConfig::default(), listener)
            .await
            .expect("simulator");
        let cluster = sim.cluster();
        cluster
            .start_scenario(Scenario::Mixed, 7, Some(5_000.0))
            .expect("start");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while cluster.warning_occurrences() == 0 {
            assert!(std::time::Instant::now() < deadline, "the generator emitted nothing");
            tokio::time::sleep(TICK).await;
        }
        // Hold the store lock for many ticks, so the generator has planned its next one
        // and waits for the lock; stop it meanwhile, and read what was emitted.
        let at_stop = sim.shared.store.write(|s| {
            std::thread::sleep(TICK * 20);
            cluster.stop_scenario();
            s.emitted.warning_occurrences()
        });
        tokio::time::sleep(TICK * 20).await;
        assert_eq!(
            cluster.warning_occurrences(),
            at_stop,
            "warnings were emitted after stop_scenario returned"
        );
    }

    #[test]
    fn scenario_names_round_trip() {
        for s in Scenario::ALL {
            assert_eq!(s.name().parse::<Scenario>(), Ok(s));
        }
        assert!("nope".parse::<Scenario>().is_err());
    }
}
