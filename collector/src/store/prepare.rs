//! Everything about an incoming event that needs no store: the record, the
//! dedup hash, the incident fingerprint, the stored form's dictionary-free
//! parts. The requesting task computes it, in parallel with other requests,
//! so the one writer thread (which every commit waits on) only looks up and
//! writes.

use super::compact::Split;
use super::schema::{EventRecord, uid_hash};
use crate::incidents;
use podwarn_shared::wire::AgentInfo;
use podwarn_shared::{IngestBatch, Severity, WarningEvent};

/// One event, ready for the writer.
#[derive(Debug)]
pub struct PreparedEvent {
    /// The record; `cluster` and `received_us` are the writer's to set.
    pub rec: EventRecord,
    /// The uid's part of the dedup key.
    pub uid_hash: u128,
    /// The normalised message the incident fingerprint (`rec.incident`) was taken from.
    pub pattern: String,
    pub split: Split,
}

/// A batch ready for the writer.
#[derive(Debug)]
pub struct PreparedBatch {
    pub agent: Option<AgentInfo>,
    pub events: Vec<PreparedEvent>,
}

impl PreparedBatch {
    /// Prepares `batch`, sent by an agent of `cluster`.
    pub fn of(cluster: &str, batch: IngestBatch) -> Self {
        Self {
            agent: batch.agent,
            events: batch.events.into_iter().map(|ev| event(cluster, ev)).collect(),
        }
    }
}

fn event(cluster: &str, ev: WarningEvent) -> PreparedEvent {
    let uid_hash = uid_hash(&ev.uid);
    let mut rec = record_of(ev);
    let (incident, pattern) = incidents::fingerprint(cluster, &rec);
    rec.incident = incident;
    let split = Split::of(&rec);
    PreparedEvent {
        rec,
        uid_hash,
        pattern,
        split,
    }
}

fn record_of(ev: WarningEvent) -> EventRecord {
    let first = ev.first_seen.as_microsecond();
    let last = ev.last_seen.as_microsecond();
    EventRecord {
        cluster: 0,
        uid: ev.uid,
        namespace: ev.namespace,
        pod: ev.pod,
        pod_uid: ev.pod_uid,
        node: ev.node,
        workload: ev.workload.map(|w| (w.kind, w.name)),
        container: ev.container,
        reason: ev.reason,
        message: ev.message,
        incident_type: ev.incident_type.code(),
        severity: Severity::ALL.iter().position(|s| *s == ev.severity).unwrap_or(1) as u8,
        count: ev.count,
        // first_seen is identity (the dedup key) and kept as sent. Clocks
        // disagree in real clusters; never store an inverted interval.
        first_seen_us: first,
        last_seen_us: last.max(first),
        source: ev.source,
        logs: ev.logs,
        incident: 0,
        received_us: 0,
    }
}
