//! Everything about an incoming event that needs no store: the record, the
//! dedup hash, the incident fingerprint, the stored form's dictionary-free
//! parts. The requesting task computes it, in parallel with other requests,
//! so the one writer thread (which every commit waits on) only looks up and
//! writes.

use super::compact::Split;
use super::schema::{EventRecord, uid_hash};
use crate::incidents;
use foldhash::HashMap;
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
    /// In the order sent.
    pub events: Vec<PreparedEvent>,
    /// The order the writer takes (numbers and stores) `events` in: indexes
    /// into it, each once. An order rather than the events moved into it:
    /// moving every event through new vectors cost more than the grouping.
    pub order: Vec<u32>,
}

impl PreparedBatch {
    /// Prepares `batch`, sent by an agent of `cluster`.
    ///
    /// `order` groups the events by namespace and, within one, by workload:
    /// the writer numbers and stores them in that order, so a namespace's
    /// events of one batch land side by side in a few blocks instead of one
    /// in every block, and a page of one namespace reads a few blocks rather
    /// than one per event (issue 7; bytes per event measured unchanged).
    /// Nothing else moves: the events of one workload keep the order they
    /// were sent in (an incident's latest message and most recent pods are
    /// still the last ones sent), and so do the occurrences of one event,
    /// placed by its first occurrence, whatever the later ones say (the
    /// agent may learn a pod's workload between two).
    pub fn of(cluster: &str, batch: IngestBatch) -> Self {
        let events: Vec<PreparedEvent> = batch.events.into_iter().map(|ev| event(cluster, ev)).collect();
        // Each event's place: its first occurrence's group, then the order sent.
        let mut first = HashMap::with_capacity_and_hasher(events.len(), Default::default());
        let mut places: Vec<((u64, u64), u32)> = (events.iter().enumerate())
            .map(|(i, e)| {
                let group = *first
                    .entry((e.uid_hash, e.rec.first_seen_us))
                    .or_insert_with(|| group_of(&e.rec));
                // A batch in memory holds far fewer than 2^32 events.
                (group, i as u32)
            })
            .collect();
        places.sort_unstable();
        Self {
            agent: batch.agent,
            order: places.into_iter().map(|(_, i)| i).collect(),
            events,
        }
    }
}

/// What the events of a batch are stored together by: their namespace, then
/// their workload, as hashes (which group comes first does not matter, and
/// sorting hashes is cheaper than sorting names).
fn group_of(rec: &EventRecord) -> (u64, u64) {
    use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};
    let workload = rec.workload.as_ref().map_or(0, |(kind, name)| {
        xxh3_64_with_seed(name.as_bytes(), xxh3_64(kind.as_bytes()))
    });
    (xxh3_64(rec.namespace.as_bytes()), workload)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn warning(uid: &str, namespace: &str, workload: &str, pod: &str, count: u32) -> WarningEvent {
        let mut ev = crate::store::tests::event(uid, namespace, workload, 1_790_000_000);
        ev.pod = pod.to_owned();
        ev.count = count;
        ev
    }

    #[test]
    fn a_batch_is_laid_out_by_namespace_and_workload_keeping_the_order_sent_within_one() {
        let sent = vec![
            warning("a", "team-b", "web", "web-1", 1),
            warning("b", "team-a", "web", "web-2", 1),
            warning("c", "team-b", "api", "api-9", 1),
            warning("d", "team-b", "web", "web-0", 1),
            warning("a", "team-b", "web", "web-1", 3),
            warning("e", "team-a", "web", "web-1", 1),
            warning("a", "team-b", "web", "web-1", 2),
            // The agent learnt the pod's workload: still placed by its first occurrence.
            warning("a", "team-b", "api", "web-1", 4),
        ];
        let prepared = PreparedBatch::of("prod", crate::store::tests::batch(sent));
        let order: Vec<(&str, u32)> = (prepared.order.iter())
            .map(|&i| &prepared.events[i as usize])
            .map(|e| (e.rec.uid.as_str(), e.rec.count))
            .collect();
        // Each workload together, those of a namespace side by side (in
        // whichever order), each in the order sent.
        let groups: [&[(&str, u32)]; 3] = [
            &[("b", 1), ("e", 1)],
            &[("c", 1)],
            &[("a", 1), ("d", 1), ("a", 3), ("a", 2), ("a", 4)],
        ];
        let orders = [[0, 1, 2], [0, 2, 1], [1, 2, 0], [2, 1, 0]];
        assert!(
            orders.iter().any(|o| o
                .iter()
                .flat_map(|&g| groups[g].iter().copied())
                .eq(order.iter().copied())),
            "{order:?}"
        );
    }
}
