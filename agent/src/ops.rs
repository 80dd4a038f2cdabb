//! Operations: metrics, readiness, and the small HTTP server for
//! `/healthz`, `/readyz` and `/metrics`.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// Label naming a watch (`events`, `pods`) and, for namespaced watches, its namespace.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabel {
    /// `events` or `pods`.
    pub watch: &'static str,
}

/// Label naming an optional permission that is missing.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PermissionLabel {
    /// e.g. `get pods/log`.
    pub permission: &'static str,
}

/// Label naming a kind of Kubernetes API request made for enrichment.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabel {
    /// `get pod`, `get replicaset` or `get pods/log`.
    pub request: &'static str,
}

/// Every metric the agent exports.
#[derive(Debug)]
pub struct Metrics {
    /// Pod warnings taken from the watches (events and pod-status signals).
    pub events_seen: Counter,
    /// Events acknowledged by the collector.
    pub events_shipped: Counter,
    /// Events folded into the copy of the same warning in the batch being
    /// gathered, which keeps the highest count: the collector stores the same
    /// from the one copy.
    pub events_coalesced: Counter,
    /// Events written to the disk spool.
    pub events_spooled: Counter,
    /// Events dropped because the spool was full (oldest first).
    pub events_dropped: Counter,
    /// Events the collector refused with a 4xx other than 408/429, kept aside.
    pub events_rejected: Counter,
    /// Watch (re)starts, by watch.
    pub watch_restarts: Family<WatchLabel, Counter>,
    /// Watches declared stale after a silence and relisted, by watch.
    pub stale_watches: Family<WatchLabel, Counter>,
    /// Seconds from a batch's first event to the collector's acknowledgement.
    pub batch_latency: Histogram,
    /// Bytes in the disk spool.
    pub spool_bytes: Gauge<u64, AtomicU64>,
    /// Optional permissions found missing (enrichment degraded).
    pub permission_missing: Family<PermissionLabel, Counter>,
    /// Kubernetes API lookups for enrichment that failed.
    pub enrich_failures: Counter,
    /// Kubernetes API requests made for enrichment, by request.
    pub api_requests: Family<RequestLabel, Counter>,
    /// Enrichment lookups given up because the API rate limit would have
    /// held the warning too long (the warning is shipped without them).
    pub lookups_skipped: Family<RequestLabel, Counter>,
    /// Crash warnings shipped without log lines because the API rate limit
    /// would have held them too long.
    pub logs_skipped: Counter,
    /// 1 while this agent leads (or ships without an election), else 0.
    pub leader: Gauge,
    registry: Registry,
}

impl Metrics {
    fn new() -> Self {
        let m = Self {
            events_seen: Counter::default(),
            events_shipped: Counter::default(),
            events_coalesced: Counter::default(),
            events_spooled: Counter::default(),
            events_dropped: Counter::default(),
            events_rejected: Counter::default(),
            watch_restarts: Family::default(),
            stale_watches: Family::default(),
            batch_latency: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            spool_bytes: Gauge::default(),
            permission_missing: Family::default(),
            enrich_failures: Counter::default(),
            api_requests: Family::default(),
            lookups_skipped: Family::default(),
            logs_skipped: Counter::default(),
            leader: Gauge::default(),
            registry: Registry::with_prefix("podwarn_agent"),
        };
        let mut registry = Registry::with_prefix("podwarn_agent");
        registry.register(
            "events_seen",
            "Pod warnings taken from the watches",
            m.events_seen.clone(),
        );
        registry.register(
            "events_shipped",
            "Events acknowledged by the collector",
            m.events_shipped.clone(),
        );
        registry.register(
            "events_coalesced",
            "Events folded into the copy of the same warning in the batch being gathered",
            m.events_coalesced.clone(),
        );
        registry.register(
            "events_spooled",
            "Events written to the disk spool",
            m.events_spooled.clone(),
        );
        registry.register(
            "events_dropped",
            "Events dropped because the spool was full",
            m.events_dropped.clone(),
        );
        registry.register(
            "events_rejected",
            "Events refused by the collector and kept aside",
            m.events_rejected.clone(),
        );
        registry.register("watch_restarts", "Watch (re)starts", m.watch_restarts.clone());
        registry.register(
            "stale_watches",
            "Watches relisted after a silence",
            m.stale_watches.clone(),
        );
        registry.register(
            "batch_latency_seconds",
            "First event of a batch to acknowledgement",
            m.batch_latency.clone(),
        );
        registry.register("spool_bytes", "Bytes in the disk spool", m.spool_bytes.clone());
        registry.register(
            "permission_missing",
            "Optional permissions found missing",
            m.permission_missing.clone(),
        );
        registry.register(
            "enrich_failures",
            "Failed enrichment lookups",
            m.enrich_failures.clone(),
        );
        registry.register(
            "api_requests",
            "Kubernetes API requests made for enrichment",
            m.api_requests.clone(),
        );
        registry.register(
            "lookups_skipped",
            "Enrichment lookups given up under the API rate limit",
            m.lookups_skipped.clone(),
        );
        registry.register(
            "logs_skipped",
            "Crash warnings shipped without log lines under the API rate limit",
            m.logs_skipped.clone(),
        );
        registry.register(
            "leader",
            "1 while this agent leads the lease election",
            m.leader.clone(),
        );
        Self { registry, ..m }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// What `/readyz` reports: ready when the watches are running and events can
/// be shipped or spooled.
#[derive(Debug, Default)]
pub struct Readiness {
    /// The watches completed their first list.
    pub watching: AtomicBool,
    /// The shipper can deliver or spool.
    pub shipping: AtomicBool,
}

impl Readiness {
    /// Whether both hold.
    pub fn ready(&self) -> bool {
        self.watching.load(Ordering::Relaxed) && self.shipping.load(Ordering::Relaxed)
    }
}

/// The ops router.
pub fn router(readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|| async {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics().render(),
                )
            }),
        )
        .with_state(readiness)
}

async fn readyz(State(readiness): State<Arc<Readiness>>) -> impl IntoResponse {
    if readiness.ready() {
        (StatusCode::OK, "ready\n")
    } else {
        let watching = readiness.watching.load(Ordering::Relaxed);
        let shipping = readiness.shipping.load(Ordering::Relaxed);
        (
            StatusCode::SERVICE_UNAVAILABLE,
            if !watching && !shipping {
                "not watching yet; shipper not ready\n"
            } else if !watching {
                "not watching yet\n"
            } else {
                "shipper not ready\n"
            },
        )
    }
}
