//! Grouping events into incidents: the fingerprint that says two events are
//! the same problem, and how an incident absorbs a new occurrence.
//!
//! Fingerprint = cluster, namespace, workload (or the pod when it has none),
//! container, incident type, normalised message. Pure code, so the store's
//! writer and the tests share one definition.

use crate::store::schema::{EventRecord, IncidentRecord, MAX_INCIDENT_PODS};
use podwarn_shared::normalize::normalize_message;
use xxhash_rust::xxh3::Xxh3;

/// How long after its last occurrence an incident still counts as active.
pub const DEFAULT_ACTIVE_WINDOW: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// The incident id of an event (never 0), and the normalised message it came from.
pub fn fingerprint(cluster: &str, rec: &EventRecord) -> (u64, String) {
    let pattern = normalize_message(&rec.message);
    // The hash of the parts joined by NUL, fed piece by piece: the same
    // value as hashing the joined string, without building it.
    let mut h = Xxh3::new();
    h.update(cluster.as_bytes());
    h.update(b"\0");
    h.update(rec.namespace.as_bytes());
    h.update(b"\0");
    match &rec.workload {
        Some((kind, name)) => {
            h.update(kind.as_bytes());
            h.update(b"/");
            h.update(name.as_bytes());
        }
        None => {
            h.update(b"Pod/");
            h.update(rec.pod.as_bytes());
        }
    }
    h.update(b"\0");
    h.update(rec.container.as_deref().unwrap_or("").as_bytes());
    h.update(b"\0");
    // The code in decimal, as `to_string` would write it, without allocating.
    h.update(itoa::Buffer::new().format(rec.incident_type).as_bytes());
    h.update(b"\0");
    h.update(pattern.as_bytes());
    (h.digest().max(1), pattern)
}

/// A new incident opened by its first event.
pub fn open(rec: &EventRecord, pattern: String) -> IncidentRecord {
    IncidentRecord {
        cluster: rec.cluster,
        namespace: rec.namespace.clone(),
        workload: rec.workload.clone(),
        pod: rec.workload.is_none().then(|| rec.pod.clone()),
        container: rec.container.clone(),
        incident_type: rec.incident_type,
        severity: rec.severity,
        reason: rec.reason.clone(),
        pattern,
        message: rec.message.clone(),
        first_seen_us: rec.first_seen_us,
        last_seen_us: rec.last_seen_us,
        occurrences: 0,
        events: 0,
        pods: Vec::new(),
        pods_not_listed: 0,
    }
}

/// Adds `occurrences` of `rec` to `incident`; `new_event` is true the first
/// time this event record is counted.
pub fn absorb(incident: &mut IncidentRecord, rec: &EventRecord, occurrences: u64, new_event: bool) {
    incident.occurrences += occurrences;
    if new_event {
        incident.events += 1;
    }
    incident.first_seen_us = incident.first_seen_us.min(rec.first_seen_us);
    if rec.last_seen_us >= incident.last_seen_us {
        incident.last_seen_us = rec.last_seen_us;
        incident.message.clone_from(&rec.message);
        incident.reason.clone_from(&rec.reason);
    }
    incident.severity = incident.severity.max(rec.severity);
    note_pod(incident, &rec.pod);
}

fn note_pod(incident: &mut IncidentRecord, pod: &str) {
    if let Some(pos) = incident.pods.iter().position(|p| p == pod) {
        // Most recent last: move it to the end.
        let name = incident.pods.remove(pos);
        incident.pods.push(name);
        return;
    }
    if incident.pods.len() == MAX_INCIDENT_PODS {
        incident.pods.remove(0);
        incident.pods_not_listed += 1;
    }
    incident.pods.push(pod.to_owned());
}

/// Whether an incident last seen at `last_seen_us` is active at `now_us`.
pub fn is_active(last_seen_us: i64, now_us: i64, window: std::time::Duration) -> bool {
    now_us.saturating_sub(last_seen_us) <= window.as_micros() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(pod: &str, message: &str) -> EventRecord {
        EventRecord {
            cluster: 1,
            uid: "u".into(),
            namespace: "shop".into(),
            pod: pod.into(),
            pod_uid: None,
            node: None,
            workload: Some(("Deployment".into(), "api".into())),
            container: Some("app".into()),
            reason: "BackOff".into(),
            message: message.into(),
            incident_type: 0,
            severity: 2,
            count: 1,
            first_seen_us: 10,
            last_seen_us: 20,
            source: None,
            logs: None,
            incident: 0,
            received_us: 0,
        }
    }

    #[test]
    fn same_workload_and_problem_share_an_incident_other_workloads_do_not() {
        let a = rec(
            "api-7d9f8b6c5-x2k4q",
            "Back-off restarting failed container app in pod api-7d9f8b6c5-x2k4q",
        );
        let b = rec(
            "api-7d9f8b6c5-zzt8w",
            "Back-off restarting failed container app in pod api-7d9f8b6c5-zzt8w",
        );
        assert_eq!(fingerprint("prod", &a).0, fingerprint("prod", &b).0);
        assert_ne!(fingerprint("prod", &a).0, fingerprint("staging", &a).0);
        let mut other = a.clone();
        other.workload = Some(("Deployment".into(), "web".into()));
        assert_ne!(fingerprint("prod", &a).0, fingerprint("prod", &other).0);
    }

    #[test]
    fn the_fingerprint_is_the_hash_of_its_parts_joined_by_nul() {
        // Incident ids are stored: the streamed hash must stay the one of
        // the joined parts that the first stores were written with.
        let a = rec("api-1", "Back-off restarting failed container app in pod api-1");
        let joined = ["prod", "shop", "Deployment/api", "app", "0", &fingerprint("prod", &a).1].join("\u{0}");
        assert_eq!(fingerprint("prod", &a).0, xxhash_rust::xxh3::xxh3_64(joined.as_bytes()));
        let mut bare = a.clone();
        bare.workload = None;
        bare.container = None;
        let joined = ["prod", "shop", "Pod/api-1", "", "0", &fingerprint("prod", &bare).1].join("\u{0}");
        assert_eq!(
            fingerprint("prod", &bare).0,
            xxhash_rust::xxh3::xxh3_64(joined.as_bytes())
        );
        for code in [7u8, 10, 42, 99, 100, 255] {
            let mut other = a.clone();
            other.incident_type = code;
            let pattern = fingerprint("prod", &other).1;
            let joined = ["prod", "shop", "Deployment/api", "app", &code.to_string(), &pattern].join("\u{0}");
            assert_eq!(
                fingerprint("prod", &other).0,
                xxhash_rust::xxh3::xxh3_64(joined.as_bytes()),
                "{code}"
            );
        }
    }

    #[test]
    fn absorb_counts_occurrences_and_keeps_recent_pods_bounded() {
        let first = rec("p0", "m");
        let (_, pattern) = fingerprint("c", &first);
        let mut inc = open(&first, pattern);
        for i in 0..(MAX_INCIDENT_PODS + 5) {
            absorb(&mut inc, &rec(&format!("p{i}"), "m"), 2, true);
        }
        assert_eq!(inc.occurrences, 2 * (MAX_INCIDENT_PODS as u64 + 5));
        assert_eq!(inc.pods.len(), MAX_INCIDENT_PODS);
        assert_eq!(inc.pods.last().unwrap(), &format!("p{}", MAX_INCIDENT_PODS + 4));
        assert_eq!(inc.pods_not_listed, 5);
    }
}
