//! What the run measures while it goes: the fleet's counters and control
//! knobs, every ingest request's latency, the query client's latencies, and
//! samples of the collector's memory and store.

use crate::warnings::NAMESPACES;
use podwarn_testkit::harness;
use serde_json::Value;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the sampler looks at the collector.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Pause between two queries of the query client: a few dashboards and CLI users.
const QUERY_PAUSE: Duration = Duration::from_millis(100);

/// Shared by the fleet, the query client, the sampler and the conductor.
#[derive(Debug)]
pub struct Shared {
    /// Offered load of the whole fleet, event records per second.
    pub rate: AtomicU64,
    /// Whether agents generate new records.
    pub generating: AtomicBool,
    /// Agents return once they have shipped what they hold.
    pub finish: AtomicBool,
    /// Whether the query client runs.
    pub querying: AtomicBool,
    /// Event records generated.
    pub generated: AtomicU64,
    /// Event records acknowledged (200).
    pub acked: AtomicU64,
    /// Event records in refused batches.
    pub refused_events: AtomicU64,
    /// Batches refused with a non-retryable status.
    pub refused_batches: AtomicU64,
    /// Attempts that failed and were retried.
    pub retries: AtomicU64,
    /// When the run began.
    pub started: Instant,
    /// Every acknowledged ingest request.
    pub ingest: Mutex<Vec<Timed>>,
    /// Every query.
    pub queries: Mutex<Vec<QueryTimed>>,
}

/// One acknowledged ingest request.
#[derive(Debug, Clone, Copy)]
pub struct Timed {
    /// Seconds since the start of the run, at the answer.
    pub at: f64,
    /// Milliseconds from sending to the whole answer.
    pub ms: f64,
    /// Events in the batch.
    pub events: u16,
}

/// One query.
#[derive(Debug, Clone, Copy)]
pub struct QueryTimed {
    /// Seconds since the start of the run, at the answer.
    pub at: f64,
    /// Index into [`QUERY_KINDS`].
    pub kind: usize,
    /// Milliseconds.
    pub ms: f64,
    /// 200 with a list of items.
    pub ok: bool,
}

/// The queries the query client cycles through.
pub const QUERY_KINDS: [&str; 4] = [
    "namespace + last 10 min, page of 100",
    "newest 100, no filter",
    "one pod",
    "incidents of a namespace",
];

impl Shared {
    /// A fresh set of counters, with the clock starting now.
    pub fn new() -> Shared {
        Shared {
            rate: AtomicU64::new(0),
            generating: AtomicBool::new(false),
            finish: AtomicBool::new(false),
            querying: AtomicBool::new(true),
            generated: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            refused_events: AtomicU64::new(0),
            refused_batches: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            started: Instant::now(),
            ingest: Mutex::new(Vec::new()),
            queries: Mutex::new(Vec::new()),
        }
    }

    /// Seconds since the start of the run.
    pub fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Records a batch the collector stored.
    pub fn stored(&self, sent: Instant, events: usize) {
        let ms = sent.elapsed().as_secs_f64() * 1000.0;
        self.acked.fetch_add(events as u64, Ordering::Relaxed);
        let at = self.now();
        self.ingest.lock().expect("ingest log").push(Timed {
            at,
            ms,
            events: u16::try_from(events).unwrap_or(u16::MAX),
        });
    }

    /// Records a batch the collector refused for good.
    pub fn refused(&self, events: usize) {
        self.refused_batches.fetch_add(1, Ordering::Relaxed);
        self.refused_events.fetch_add(events as u64, Ordering::Relaxed);
    }

    /// Event records generated but neither acknowledged nor refused yet.
    pub fn backlog(&self) -> u64 {
        let done = self.acked.load(Ordering::Relaxed) + self.refused_events.load(Ordering::Relaxed);
        self.generated.load(Ordering::Relaxed).saturating_sub(done)
    }

    /// Ingest latencies (ms) of requests answered in `[from, to)`, and the events they carried.
    pub fn ingest_between(&self, from: f64, to: f64) -> (Vec<f64>, Vec<f64>) {
        let log = self.ingest.lock().expect("ingest log");
        log.iter()
            .filter(|t| t.at >= from && t.at < to)
            .map(|t| (t.ms, f64::from(t.events)))
            .unzip()
    }

    /// Query latencies (ms) of kind `kind` (all kinds when `None`) answered in `[from, to)`.
    pub fn queries_between(&self, kind: Option<usize>, from: f64, to: f64) -> Vec<f64> {
        let log = self.queries.lock().expect("query log");
        log.iter()
            .filter(|q| q.at >= from && q.at < to && kind.is_none_or(|k| q.kind == k))
            .map(|q| q.ms)
            .collect()
    }
}

/// The `p` quantile (0–1) of `values` (sorted here), `NaN` when empty.
pub fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * p).round() as usize]
}

/// One look at the collector.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Seconds since the start of the run.
    pub at: f64,
    /// Resident memory, bytes.
    pub rss: u64,
    /// Event records generated so far.
    pub generated: u64,
    /// Event records acknowledged so far.
    pub acked: u64,
    /// Offered rate at the time.
    pub rate: u64,
    /// Distinct events stored (from `/v1/clusters`; the latest known value).
    pub stored: u64,
}

/// The sampler's findings.
#[derive(Debug, Default)]
pub struct Samples {
    /// In time order.
    pub list: Mutex<Vec<Sample>>,
}

impl Samples {
    /// Samples taken in `[from, to]`.
    pub fn between(&self, from: f64, to: f64) -> Vec<Sample> {
        let list = self.list.lock().expect("samples");
        list.iter().filter(|s| s.at >= from && s.at <= to).copied().collect()
    }

    /// The last sample taken at or before `at`.
    pub fn at(&self, at: f64) -> Option<Sample> {
        let list = self.list.lock().expect("samples");
        list.iter().take_while(|s| s.at <= at).last().copied()
    }
}

/// Samples the collector (pid `pid`) every [`SAMPLE_EVERY`] until `shared.finish`.
/// The store size comes from `/v1/clusters` every fifth sample.
pub async fn sample(pid: u32, admin: harness::Admin, shared: &Shared, samples: &Samples) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    let mut stored = 0;
    let mut n = 0u64;
    while !shared.finish.load(Ordering::Relaxed) {
        tick.tick().await;
        if n.is_multiple_of(5)
            && let Some(total) = events_stored(&admin).await
        {
            stored = total;
        }
        n += 1;
        let sample = Sample {
            at: shared.now(),
            rss: harness::rss_bytes(pid).0,
            generated: shared.generated.load(Ordering::Relaxed),
            acked: shared.acked.load(Ordering::Relaxed),
            rate: shared.rate.load(Ordering::Relaxed),
            stored,
        };
        samples.list.lock().expect("samples").push(sample);
    }
}

/// Distinct events stored over all clusters, from `/v1/clusters`.
pub async fn events_stored(admin: &harness::Admin) -> Option<u64> {
    let r = admin
        .client
        .get(format!("{}/v1/clusters", admin.url))
        .bearer_auth(&admin.token)
        .send()
        .await
        .ok()?;
    let body: Value = r.json().await.ok()?;
    Some(
        body["items"]
            .as_array()?
            .iter()
            .filter_map(|c| c["events_stored"].as_u64())
            .sum(),
    )
}

/// Issues queries one after the other (with a short pause) while
/// `shared.querying`, cycling through [`QUERY_KINDS`]; `pods` are
/// (cluster, pod) pairs to ask about.
pub async fn query(admin: harness::Admin, pods: Vec<(String, String)>, shared: &Shared) {
    let mut i = 0usize;
    while shared.querying.load(Ordering::Relaxed) {
        let kind = i % QUERY_KINDS.len();
        let ns = NAMESPACES[(i / QUERY_KINDS.len()) % NAMESPACES.len()];
        let path = match kind {
            0 => {
                let now = jiff::Timestamp::now().as_second();
                let at = |s: i64| jiff::Timestamp::from_second(s).expect("a valid time");
                format!(
                    "/v1/events?namespace={ns}&since={}&until={}&limit=100",
                    at(now - 600),
                    at(now)
                )
            }
            1 => "/v1/events?limit=100".to_owned(),
            2 => {
                let (cluster, pod) = &pods[(i * 7919) % pods.len()];
                format!("/v1/events?cluster={cluster}&pod={pod}&limit=100")
            }
            _ => format!("/v1/incidents?namespace={ns}&limit=100"),
        };
        let started = Instant::now();
        let answer = admin
            .client
            .get(format!("{}{path}", admin.url))
            .bearer_auth(&admin.token)
            .send()
            .await;
        let ok = match answer {
            Ok(r) if r.status() == reqwest::StatusCode::OK => {
                r.json::<Value>().await.is_ok_and(|body| body["items"].is_array())
            }
            Ok(r) => {
                eprintln!("load: query {path}: {}", r.status());
                false
            }
            Err(e) => {
                eprintln!("load: query {path}: {e}");
                false
            }
        };
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let at = shared.now();
        shared
            .queries
            .lock()
            .expect("query log")
            .push(QueryTimed { at, kind, ms, ok });
        i += 1;
        tokio::time::sleep(QUERY_PAUSE).await;
    }
}

/// Least-squares slope of `y` over `x`.
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}
