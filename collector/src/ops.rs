//! Operations endpoints and metrics: `/healthz`, `/readyz`, `/metrics`.

use crate::server::AppState;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;

/// Label of an ingest request's outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `stored`, `invalid`, `refused` or `failed` (ingest); see [`Metrics::enrollments`].
    pub outcome: &'static str,
}

/// Label of a query endpoint.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    /// The route.
    pub endpoint: &'static str,
}

/// Every metric the collector exports.
#[derive(Debug)]
pub struct Metrics {
    /// Ingest requests by outcome.
    pub ingest_requests: Family<OutcomeLabel, Counter>,
    /// Events that were new or grew.
    pub events_accepted: Counter,
    /// Events that changed nothing.
    pub events_duplicate: Counter,
    /// Occurrences added.
    pub occurrences: Counter,
    /// Seconds per store commit (one commit serves a group of requests).
    pub commit_seconds: Histogram,
    /// Query requests by endpoint.
    pub queries: Family<EndpointLabel, Counter>,
    /// Bytes of the store file.
    pub store_bytes: Gauge<u64, AtomicU64>,
    /// Enrollment and renewal requests by outcome (`enrolled`, `renewed`,
    /// `refused`, `limited`, `failed`): a rise of `refused` is someone guessing.
    pub enrollments: Family<OutcomeLabel, Counter>,
    registry: Registry,
}

impl Metrics {
    fn new() -> Self {
        let ingest_requests = Family::<OutcomeLabel, Counter>::default();
        // Every outcome is exported from the start, so a rate over it is never "no data".
        for outcome in ["stored", "invalid", "refused", "failed"] {
            drop(ingest_requests.get_or_create(&OutcomeLabel { outcome }));
        }
        let events_accepted = Counter::default();
        let events_duplicate = Counter::default();
        let occurrences = Counter::default();
        let commit_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        let queries = Family::<EndpointLabel, Counter>::default();
        let store_bytes = Gauge::<u64, AtomicU64>::default();
        let enrollments = Family::<OutcomeLabel, Counter>::default();
        for outcome in ["enrolled", "renewed", "refused", "limited", "failed"] {
            drop(enrollments.get_or_create(&OutcomeLabel { outcome }));
        }
        let mut registry = Registry::with_prefix("podwarn");
        registry.register("ingest_requests", "Ingest requests by outcome", ingest_requests.clone());
        registry.register(
            "events_accepted",
            "Events stored new or with a higher count",
            events_accepted.clone(),
        );
        registry.register(
            "events_duplicate",
            "Events received again without change",
            events_duplicate.clone(),
        );
        registry.register("occurrences", "Occurrences added to the store", occurrences.clone());
        registry.register(
            "store_commit_seconds",
            "Duration of durable store commits",
            commit_seconds.clone(),
        );
        registry.register("query_requests", "Query requests by endpoint", queries.clone());
        registry.register("store_bytes", "Size of the store file in bytes", store_bytes.clone());
        registry.register(
            "enroll_requests",
            "Enrollment and renewal requests by outcome",
            enrollments.clone(),
        );
        Self {
            ingest_requests,
            events_accepted,
            events_duplicate,
            occurrences,
            commit_seconds,
            queries,
            store_bytes,
            enrollments,
            registry,
        }
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

/// `GET /healthz`: the process is up.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: the store answers reads.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.store.clusters().await {
        Ok(_) => (StatusCode::OK, "ready\n"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n"),
    }
}

/// `GET /metrics`.
pub async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    let m = metrics();
    m.store_bytes.set(state.store.size_bytes());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
}
