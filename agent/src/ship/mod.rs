//! Shipping: events → batches (by size or interval) → zstd JSON → `POST
//! /v1/ingest` over mutual TLS, with the disk spool taking over while the
//! collector is away.
//!
//! Three tasks, joined by bounded hand-offs so memory stays flat whatever the
//! event rate or the length of an outage (invariant 6):
//!
//! - the **batcher** (in [`Shipper::run`]) reads the caller's bounded event
//!   channel and cuts a batch at `batch_max_events` or `batch_interval` after
//!   its first event;
//! - the **sender** takes one batch at a time. While the spool is empty it
//!   sends directly, retrying network errors, timeouts, 408, 429 and 5xx for a
//!   short budget (`Retry-After` honoured); then, or whenever the spool is not
//!   empty, the batch goes to the spool;
//! - the **drainer** sends the oldest spooled batches, as many as fit in one
//!   batch (`batch_max_events`; an outage spools many small batches, and one
//!   round trip each would replay slower than warnings arrive), deletes them
//!   on 200, and backs off (jittered, capped, `Retry-After` honoured) on
//!   failures, until shutdown.
//!
//! Only a 200 means stored (PROTOCOL.md). A batch refused with another 4xx is
//! logged, counted and set aside in the spool's `rejected` table; 401/403 are
//! about the certificate, not the batch, so those batches wait in the spool
//! for the operator to fix it. On shutdown everything still in memory goes to
//! the spool, never the network, so SIGTERM is quick and loses nothing.

mod batch;
mod batcher;
mod client;
mod drain;
mod send;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod testserver;
mod tls;

use crate::ops::Readiness;
use crate::spool::{Spool, SpoolError};
use batch::{Held, Pending};
use batcher::Batcher;
pub use batcher::OpenBatch;
use client::{Collector, Timeouts};
use drain::drain_loop;
use podwarn_shared::WarningEvent;
use podwarn_shared::wire::MAX_BATCH_EVENTS;
use send::send_loop;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Where and how the agent ships.
#[derive(Debug, Clone)]
pub struct ShipConfig {
    /// The collector's base URL, `https://HOST:PORT` (`--collector`).
    pub collector: String,
    /// Folder with `tls.crt`, `tls.key` and `ca.crt`, as written by
    /// `podwarn-collector cert issue` (`--cert-dir`).
    pub cert_dir: PathBuf,
    /// Folder of the on-disk spool (`--spool-dir`); created if missing.
    pub spool_dir: PathBuf,
    /// Most bytes of batches the spool holds; beyond, the oldest are dropped and counted.
    pub spool_max_bytes: u64,
    /// Most events in one batch, 1 to [`MAX_BATCH_EVENTS`].
    pub batch_max_events: usize,
    /// Longest a batch waits for more events after its first one.
    pub batch_interval: Duration,
    /// This agent's version, reported to the collector.
    pub agent_version: String,
}

/// Why shipping cannot start, or lost something at shutdown.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    /// `--collector` uses plain HTTP.
    #[error(
        "--collector {url} uses http://, but the collector only accepts HTTPS with a client certificate \
         (mutual TLS): use https://HOST:PORT"
    )]
    PlainHttp {
        /// The URL given.
        url: String,
    },
    /// `--collector` is not a usable URL.
    #[error("--collector {url:?} is not a valid collector URL ({reason}): use https://HOST:PORT")]
    CollectorUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file of `--cert-dir` cannot be read.
    #[error(
        "cannot read {path}: --cert-dir must hold tls.crt, tls.key and ca.crt as written by \
         `podwarn-collector cert issue --out DIR`"
    )]
    CertFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file of `--cert-dir` holds no usable PEM.
    #[error("{path} {what}: write it again with `podwarn-collector cert issue --out DIR` and point --cert-dir there")]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: &'static str,
    },
    /// `tls.key` is not the key of `tls.crt`.
    #[error(
        "{}/tls.key is not the private key of {}/tls.crt: copy both from the same `podwarn-collector cert issue` run",
        dir.display(), dir.display()
    )]
    KeyMismatch {
        /// The `--cert-dir`.
        dir: PathBuf,
    },
    /// rustls refused the certificate, key or CA.
    #[error("the TLS material in {} is unusable: issue it again with `podwarn-collector cert issue`", dir.display())]
    Tls {
        /// The `--cert-dir`.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: rustls::Error,
    },
    /// The HTTP client could not be built.
    #[error("building the HTTPS client")]
    Client(#[source] reqwest::Error),
    /// `batch_max_events` is out of range.
    #[error("--batch-max-events {0} is out of range: use 1 to {MAX_BATCH_EVENTS}")]
    BatchSize(usize),
    /// `batch_interval` is zero.
    #[error("--batch-interval must be longer than zero")]
    BatchInterval,
    /// The spool failed (opening it, or writing at shutdown).
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// A batch could not be serialised to JSON.
    #[error("encoding a batch as JSON")]
    Encode(#[source] serde_json::Error),
    /// A batch could not be compressed or decompressed.
    #[error("compressing a batch")]
    Compress(#[source] std::io::Error),
    /// Events still in memory at shutdown could not be written to the spool.
    #[error("{events} events could not be written to the spool at shutdown and are lost")]
    LostAtShutdown {
        /// How many.
        events: u64,
        /// The last spool error.
        #[source]
        source: SpoolError,
    },
    /// A shipping task panicked.
    #[error("a shipping task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// A refusal of the agent's certificate seen on `/v1/ingest` (401 or 403).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRefusal {
    /// The HTTP status.
    pub status: u16,
    /// The collector's error code (`certificate_expired`, `agent_refused` …), or empty.
    pub code: String,
}

/// Joins the shipper and the identity lifecycle ([`crate::enroll`]): the
/// shipper reports refusals of the certificate; the lifecycle announces a new
/// certificate on disk, which the shipper then presents on fresh connections
/// (pooled ones keep the certificate of their handshake) and retries at once.
#[derive(Debug)]
pub struct IdentityLink {
    generation: AtomicU64,
    changed: Notify,
    refusals: mpsc::Sender<CertRefusal>,
}

impl IdentityLink {
    /// A link, and the receiving end of the refusals the shipper reports.
    pub fn new() -> (Arc<Self>, mpsc::Receiver<CertRefusal>) {
        let (tx, rx) = mpsc::channel(16);
        let link = Self {
            generation: AtomicU64::new(0),
            changed: Notify::new(),
            refusals: tx,
        };
        (Arc::new(link), rx)
    }

    /// Called after a new certificate and key were written to the cert dir.
    pub fn identity_changed(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
        // One waiter (the drainer); a stored permit wakes it even if it was not yet waiting.
        self.changed.notify_one();
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    fn report(&self, status: u16, code: String) {
        // A full channel means the lifecycle already has refusals to act on.
        let _ = self.refusals.try_send(CertRefusal { status, code });
    }
}

/// Knobs that are constants in production and short in tests.
#[derive(Debug, Clone, Copy)]
struct Tuning {
    timeouts: Timeouts,
    /// Retries on the live path before the batch goes to the spool.
    live_retries: usize,
    /// First live retry delay (doubles, jittered).
    live_min_delay: Duration,
    /// Longest the live path tries a batch before it goes to the spool.
    live_budget: Duration,
    /// Longest `Retry-After` the live path waits for; longer goes to the spool.
    live_max_wait: Duration,
    /// First drainer retry delay (doubles, jittered up to twice).
    drain_min_delay: Duration,
    /// Drainer delay cap before jitter (jitter makes it at most twice this).
    drain_max_delay: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            timeouts: Timeouts {
                connect: Duration::from_secs(5),
                request: Duration::from_secs(30),
            },
            // Three attempts within about two seconds (five at most), then the spool.
            live_retries: 2,
            live_min_delay: Duration::from_millis(300),
            live_budget: Duration::from_secs(5),
            live_max_wait: Duration::from_secs(3),
            drain_min_delay: Duration::from_millis(500),
            drain_max_delay: Duration::from_secs(15),
        }
    }
}

/// Ships events to the collector, spooling through outages. Built by
/// [`Shipper::new`], consumed by [`Shipper::run`].
#[derive(Debug)]
pub struct Shipper {
    config: ShipConfig,
    spool: Spool,
    collector: Collector,
    tuning: Tuning,
    held: Arc<Held>,
    open: Arc<OpenBatch>,
}

impl Shipper {
    /// Opens the spool and builds the mTLS client; fails fast on bad
    /// configuration (missing or unreadable certificate files, a key that does
    /// not match, a bad URL, an unwritable spool directory).
    pub fn new(config: ShipConfig) -> Result<Self, ShipError> {
        Self::with_tuning(config, Tuning::default())
    }

    fn with_tuning(config: ShipConfig, tuning: Tuning) -> Result<Self, ShipError> {
        if config.batch_max_events == 0 || config.batch_max_events > MAX_BATCH_EVENTS {
            return Err(ShipError::BatchSize(config.batch_max_events));
        }
        if config.batch_interval.is_zero() {
            return Err(ShipError::BatchInterval);
        }
        let url = client::parse_collector_url(&config.collector)?;
        let identity = tls::load_identity(&config.cert_dir)?;
        if let Some(t) = identity.not_after
            && t < jiff::Timestamp::now()
        {
            // Not fatal: the certificate may be renewed in place; the collector will say no meanwhile.
            warn!(not_after = %t, cert_dir = %config.cert_dir.display(), "the agent's client certificate has expired");
        }
        let collector = Collector::new(&url, identity, tuning.timeouts)?;
        let spool = Spool::open(&config.spool_dir, config.spool_max_bytes)?;
        Ok(Self {
            config,
            spool,
            collector,
            tuning,
            held: Arc::default(),
            open: Arc::default(),
        })
    }

    /// The batch being gathered, for the Event watch to fold repeats into.
    pub fn open_batch(&self) -> Arc<OpenBatch> {
        self.open.clone()
    }

    /// Connects the shipper to the identity lifecycle (see [`IdentityLink`]).
    pub fn with_identity_link(mut self, link: Arc<IdentityLink>) -> Self {
        self.collector.set_link(link);
        self
    }

    /// Ships events from `events` until `shutdown` is cancelled; then drains
    /// whatever is left in `events` (the watches have stopped by then) plus
    /// the pending batch into the spool (not the network: SIGTERM must be fast
    /// and lose nothing), and returns.
    pub async fn run(
        self,
        mut events: mpsc::Receiver<WarningEvent>,
        shutdown: CancellationToken,
        readiness: Arc<Readiness>,
    ) -> Result<(), ShipError> {
        readiness.shipping.store(true, Ordering::Relaxed);
        if !self.spool.is_empty() {
            info!(
                spooled_batches = self.spool.len_batches(),
                spooled_bytes = self.spool.len_bytes(),
                "replaying the spool"
            );
        }
        let shared = Arc::new(Shared {
            spool: self.spool,
            collector: self.collector,
            tuning: self.tuning,
            readiness,
            gate: Gate::default(),
            wake: Notify::new(),
            held: self.held,
            version: self.config.agent_version.clone(),
            // Checked against MAX_BATCH_EVENTS in `with_tuning`.
            replay_max_events: u32::try_from(self.config.batch_max_events).unwrap_or(u32::MAX),
            replay_max_bytes: AtomicUsize::new(REPLAY_MAX_BYTES),
        });
        // Capacity 1: at most one encoded batch waits between batcher and sender.
        let (tx, rx) = mpsc::channel::<Pending>(1);
        let sender = tokio::spawn(send_loop(shared.clone(), rx, shutdown.clone()));
        let drainer = tokio::spawn(drain_loop(shared.clone(), shutdown.clone()));

        let batcher = Batcher {
            shared: &shared,
            max_events: self.config.batch_max_events,
            interval: self.config.batch_interval,
            tx,
            open: self.open,
        };
        batcher.run(&mut events, &shutdown).await;

        let sent = sender.await.map_err(ShipError::Task)?;
        drainer.await.map_err(ShipError::Task)?;
        info!(
            spooled_batches = shared.spool.len_batches(),
            spooled_bytes = shared.spool.len_bytes(),
            "shipper stopped"
        );
        sent
    }
}

/// Ships one probe: see [`probe_collector`].
const PROBE_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(5),
    request: Duration::from_secs(10),
};

/// Probe used by `podwarn-agent check`: connects with the client certificate
/// and posts an empty batch. Returns what was verified (e.g. "collector
/// reachable at … (certificate valid until …)") or the problem with its fix
/// (connection refused → is the collector running, URL, port, NetworkPolicy;
/// unknown issuer → ca.crt is not this collector's CA; expired or revoked
/// certificate → issue or enroll again).
pub async fn probe_collector(collector: &str, cert_dir: &Path) -> Result<String, String> {
    client::probe(collector, cert_dir, PROBE_TIMEOUTS).await
}

/// What the three tasks share.
struct Shared {
    spool: Spool,
    collector: Collector,
    tuning: Tuning,
    readiness: Arc<Readiness>,
    /// Not before this instant: the collector's last `Retry-After`.
    gate: Gate,
    /// Wakes the drainer when a batch enters an empty spool.
    wake: Notify,
    held: Arc<Held>,
    version: String,
    /// Most events in one replay request (`--batch-max-events`).
    replay_max_events: u32,
    /// Most bytes of compressed bodies joined into one replay request: starts at
    /// [`REPLAY_MAX_BYTES`], and halves below any body the collector found too large,
    /// so the halves of a split batch are never joined again.
    replay_max_bytes: AtomicUsize,
}

/// The first cap on the bytes of one replay request (the collector's default body
/// limit is 8 MiB).
const REPLAY_MAX_BYTES: usize = 1 << 20;

impl Shared {
    /// The collector answered 413 to a body of `len` bytes: replay less than that at once.
    fn too_large(&self, len: usize) {
        self.replay_max_bytes.fetch_min(len / 2, Ordering::Relaxed);
    }
}

/// The time before which the collector asked not to be called.
#[derive(Debug, Default)]
struct Gate(Mutex<Option<Instant>>);

impl Gate {
    fn hold_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        if let Ok(mut g) = self.0.lock() {
            *g = Some(g.map_or(until, |t| t.max(until)));
        }
    }

    fn clear(&self) {
        if let Ok(mut g) = self.0.lock() {
            *g = None;
        }
    }

    fn until(&self) -> Option<Instant> {
        self.0.lock().ok().and_then(|g| *g).filter(|t| *t > Instant::now())
    }
}

/// How a refusal is recorded in the `rejected` table: status, code, message.
fn refusal(status: reqwest::StatusCode, code: &str, message: &str) -> String {
    format!("{} {code}: {message}", status.as_u16())
}
