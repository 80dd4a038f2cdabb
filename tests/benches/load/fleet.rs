//! The simulated fleet: node agents (a DaemonSet's pods) in many clusters, each
//! with the pods of its own node, generating Pod warnings and shipping them the
//! way `podwarn-agent` does: batches of at most [`MAX_BATCH`] events every
//! [`BATCH_INTERVAL`], zstd-compressed JSON over its own mTLS connection, retried
//! with backoff until the collector answers 200.
//!
//! Every agent remembers each event it created (uid, `first_seen`, highest
//! count), so the run can be checked against what the collector stored.

use crate::measure::Shared;
use crate::warnings::{Body, Kind, Occurrence, Pod, Wire, mix64, uuid};
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Most events in one batch.
pub const MAX_BATCH: usize = 500;
/// How long events wait to be batched (the agent's default).
pub const BATCH_INTERVAL: Duration = Duration::from_millis(500);
/// The agent's zstd level.
const ZSTD_LEVEL: i32 = 3;
/// Pods on each node.
const PODS_PER_NODE: usize = 40;
/// On average, each agent relists (and so replays its recent events) this often.
const RELIST_EVERY: Duration = Duration::from_secs(90);

/// One event an agent created, as it stands now.
#[derive(Debug, Clone, Copy)]
struct Tracked {
    seq: u32,
    pod: u16,
    kind: Kind,
    first_seen: i64,
    last_seen: i64,
    count: u32,
}

/// An event waiting to be shipped: which one, with the count and time it had then.
#[derive(Debug, Clone, Copy)]
struct Pending {
    event: u32,
    count: u32,
    last_seen: i64,
}

/// What the generator produced, by kind of record.
#[derive(Debug, Default, Clone, Copy)]
pub struct Mix {
    /// Events with a uid not sent before.
    pub new: u64,
    /// Re-sends of a uid with a higher count.
    pub updates: u64,
    /// Re-sends with an equal or lower count (double delivery, relists).
    pub replays: u64,
}

/// A simulated node agent.
#[derive(Debug)]
pub struct Agent {
    /// Its number in the fleet.
    pub index: usize,
    /// The cluster its certificate names.
    pub cluster: String,
    /// Its share of the fleet's event rate.
    pub share: f64,
    /// The pods on its node.
    pub pods: Vec<Pod>,
    node: String,
    events: Vec<Tracked>,
    pending: VecDeque<Pending>,
    rng: SmallRng,
    due: f64,
    /// What it generated so far.
    pub mix: Mix,
}

impl Agent {
    /// The agent `index` of cluster `cluster` (number `cluster_index`), with
    /// `share` of the fleet's rate; everything it does follows from `index`.
    pub fn new(index: usize, cluster_index: usize, cluster: String, share: f64) -> Agent {
        let mut rng = SmallRng::seed_from_u64(mix64(index as u64));
        let node = format!(
            "ip-10-{}-{}-{}.ec2.internal",
            cluster_index,
            index % 64,
            rng.random_range(2..250)
        );
        let pods = (0..PODS_PER_NODE)
            .map(|p| Pod::on_node(cluster_index, index, p, &mut rng))
            .collect();
        Agent {
            index,
            cluster,
            share,
            pods,
            node,
            events: Vec::new(),
            pending: VecDeque::new(),
            rng,
            due: 0.0,
            mix: Mix::default(),
        }
    }

    /// Events waiting to be shipped.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Generates about `expected` event records (bursty: the amount per call
    /// varies exponentially around it) for the time `elapsed` ending at unix
    /// second `now`: new events (55 %), count updates of recent ones (35 %),
    /// replays (10 %), and now and then a relist that replays recent events.
    /// Returns how many records it queued.
    pub fn generate(&mut self, expected: f64, elapsed: Duration, now: i64) -> u64 {
        let before = self.pending.len();
        let burst: f64 = -(1.0 - self.rng.random::<f64>()).ln();
        self.due += expected * burst;
        if !self.events.is_empty()
            && self
                .rng
                .random_bool((elapsed.as_secs_f64() / RELIST_EVERY.as_secs_f64()).min(1.0))
        {
            // A watch that expired relists: the recent events come again, unchanged.
            let n = self.rng.random_range(50..=300).min(self.events.len());
            for e in self.events.len() - n..self.events.len() {
                let t = self.events[e];
                self.queue(e, t.count, t.last_seen);
            }
            self.mix.replays += n as u64;
            self.due -= n as f64;
        }
        while self.due >= 1.0 {
            self.due -= 1.0;
            let r: f64 = self.rng.random();
            if self.events.is_empty() || r < 0.55 {
                self.create(now);
            } else if r < 0.90 {
                // The kubelet's correlator bumps the count of a recent event.
                let recent = self.events.len().min(300);
                let e = self.events.len() - 1 - self.rng.random_range(0..recent);
                let bump = self.rng.random_range(1..=3);
                let t = &mut self.events[e];
                t.count += bump;
                t.last_seen = t.last_seen.max(now);
                let (count, last_seen) = (t.count, t.last_seen);
                self.queue(e, count, last_seen);
                self.mix.updates += 1;
            } else {
                // Double delivery or a retry: an equal or older count.
                let e = self.rng.random_range(0..self.events.len());
                let t = self.events[e];
                let count = if self.rng.random_bool(0.5) {
                    t.count
                } else {
                    self.rng.random_range(1..=t.count)
                };
                self.queue(e, count, t.last_seen);
                self.mix.replays += 1;
            }
        }
        (self.pending.len() - before) as u64
    }

    fn create(&mut self, now: i64) {
        // A few bad pods make most of the noise.
        let r: f64 = self.rng.random();
        let pod = ((r * r * r) * self.pods.len() as f64) as u16;
        let seq = u32::try_from(self.events.len()).expect("fewer than 2^32 events per agent");
        self.events.push(Tracked {
            seq,
            pod,
            kind: Kind::pick(&mut self.rng),
            first_seen: now,
            last_seen: now,
            count: 1,
        });
        self.queue(seq as usize, 1, now);
        self.mix.new += 1;
    }

    fn queue(&mut self, event: usize, count: u32, last_seen: i64) {
        self.pending.push_back(Pending {
            event: event as u32,
            count,
            last_seen,
        });
    }

    /// Takes up to `max` pending events and encodes them as an ingest body.
    /// Returns the body and how many events it holds.
    pub fn next_batch(&mut self, max: usize) -> (Bytes, usize) {
        let n = self.pending.len().min(max);
        let events: Vec<Wire<'_>> = self.pending.iter().take(n).map(|p| self.wire(p)).collect();
        let json = serde_json::to_vec(&Body::new(events)).expect("encode a batch");
        self.pending.drain(..n);
        let body = zstd::bulk::compress(&json, ZSTD_LEVEL).expect("zstd");
        (Bytes::from(body), n)
    }

    /// The uid of event `e`.
    fn uid(&self, t: &Tracked) -> String {
        let low = ((self.index as u64) << 32) | u64::from(t.seq);
        match t.kind {
            // Warnings derived from Pod status carry a stable synthetic id.
            Kind::OomKilled => format!("podstatus-{:016x}", low),
            _ => uuid(mix64(low), low),
        }
    }

    fn wire<'a>(&'a self, p: &Pending) -> Wire<'a> {
        let t = &self.events[p.event as usize];
        t.kind.wire(Occurrence {
            pod: &self.pods[t.pod as usize],
            node: &self.node,
            uid: self.uid(t),
            h: mix64(u64::from(t.seq) ^ ((self.index as u64) << 40)),
            count: p.count,
            first_seen: t.first_seen,
            last_seen: p.last_seen,
        })
    }

    /// Distinct events created so far.
    pub fn distinct(&self) -> u64 {
        self.events.len() as u64
    }

    /// Occurrences: the sum of every event's highest count.
    pub fn occurrences(&self) -> u64 {
        self.events.iter().map(|t| u64::from(t.count)).sum()
    }

    /// Every event created, as (uid, highest count).
    pub fn expected(&self) -> impl Iterator<Item = (String, u32)> + '_ {
        self.events.iter().map(|t| (self.uid(t), t.count))
    }
}

/// Runs one agent until the fleet is told to finish and it has shipped
/// everything it generated; returns it for the final checks.
pub async fn run(mut agent: Agent, client: reqwest::Client, url: String, shared: Arc<Shared>) -> Agent {
    let url = format!("{url}/v1/ingest");
    // Agents start at different moments, as real ones do.
    let phase = BATCH_INTERVAL.mul_f64(agent.rng.random::<f64>());
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, BATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    loop {
        tick.tick().await;
        let now = Instant::now();
        let elapsed = now - last;
        last = now;
        if shared.generating.load(Ordering::Relaxed) {
            let rate = shared.rate.load(Ordering::Relaxed) as f64 * agent.share;
            let queued = agent.generate(
                rate * elapsed.as_secs_f64(),
                elapsed,
                jiff::Timestamp::now().as_second(),
            );
            shared.generated.fetch_add(queued, Ordering::Relaxed);
        }
        while agent.pending() > 0 {
            let (body, events) = agent.next_batch(MAX_BATCH);
            send(&client, &url, body, events, agent.index, &shared).await;
        }
        if shared.finish.load(Ordering::Relaxed) {
            return agent;
        }
    }
}

/// POSTs one batch until it is stored, backing off (with jitter) on network
/// errors, 408, 429 and 5xx, as the agent does; any other answer is counted as
/// rejected.
async fn send(client: &reqwest::Client, url: &str, body: Bytes, events: usize, agent: usize, shared: &Shared) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let started = Instant::now();
        let answer = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::CONTENT_ENCODING, "zstd")
            .body(body.clone())
            .send()
            .await;
        let problem = match answer {
            Ok(r) if r.status() == reqwest::StatusCode::OK => match r.bytes().await {
                Ok(_) => {
                    shared.stored(started, events);
                    return;
                }
                Err(e) => format!("reading the answer: {e}"),
            },
            Ok(r) if matches!(r.status().as_u16(), 408 | 429 | 500..=599) => format!("HTTP {}", r.status()),
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                eprintln!("load: agent {agent}: batch of {events} refused: {status} {text}");
                shared.refused(events);
                return;
            }
            Err(e) => format!("{e}"),
        };
        if shared.retries.fetch_add(1, Ordering::Relaxed) < 20 {
            eprintln!("load: agent {agent}: retrying a batch of {events}: {problem}");
        }
        let jitter = rand::rng().random_range(0.5..1.5);
        tokio::time::sleep(backoff.mul_f64(jitter)).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
