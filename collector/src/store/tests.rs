//! Store tests through its public API: dedup, retention, incident indexes.

use super::schema::AgentRecord;
use super::*;
use crate::tls::AgentIdentity;
use podwarn_shared::wire::AgentInfo;
use podwarn_shared::{IncidentType, Severity, WarningEvent, Workload};

pub(super) fn identity() -> AgentIdentity {
    AgentIdentity {
        tenant: "default".into(),
        cluster: "prod".into(),
        agent_id: "a1".into(),
    }
}

pub(super) async fn store_with_agent() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.redb")).unwrap();
    store
        .register_agent(AgentRecord {
            agent_id: "a1".into(),
            cluster: "prod".into(),
            tenant: "default".into(),
            created_us: 0,
            cert_serial: "01".into(),
            cert_not_after_us: i64::MAX,
            revoked_us: None,
            last_seen_us: None,
            version: None,
            dropped_total: 0,
        })
        .await
        .unwrap();
    (dir, store)
}

pub(super) fn event(uid: &str, namespace: &str, workload: &str, last_seen_s: i64) -> WarningEvent {
    let ts = jiff::Timestamp::from_second(last_seen_s).unwrap();
    WarningEvent {
        uid: uid.into(),
        namespace: namespace.into(),
        pod: format!("{workload}-pod"),
        pod_uid: None,
        node: Some("n1".into()),
        workload: Some(Workload {
            kind: "Deployment".into(),
            name: workload.into(),
        }),
        container: Some("app".into()),
        reason: "BackOff".into(),
        message: "Back-off restarting failed container".into(),
        incident_type: IncidentType::CrashLoopBackOff,
        severity: Severity::High,
        count: 1,
        first_seen: ts,
        last_seen: ts,
        source: None,
        logs: None,
    }
}

pub(super) fn batch(events: Vec<WarningEvent>) -> IngestBatch {
    IngestBatch {
        agent: Some(AgentInfo {
            version: "t".into(),
            dropped_total: 0,
        }),
        events,
    }
}

#[tokio::test]
async fn retention_deletes_old_events_and_incidents_and_keeps_recent_ones() {
    let (_dir, store) = store_with_agent().await;
    let old: Vec<_> = (0..2500)
        .map(|i| event(&format!("old{i}"), "shop", "api", 1_000 + i))
        .collect();
    store.ingest(identity(), batch(old)).await.unwrap();
    store
        .ingest(identity(), batch(vec![event("new", "shop", "web", 1_000_000)]))
        .await
        .unwrap();

    // More than one transaction's budget: apply_retention loops until done.
    let done = store.apply_retention(500_000 * 1_000_000).await.unwrap();
    assert_eq!((done.events, done.incidents), (2500, 1));
    let page = store
        .events(EventQuery {
            limit: 1000,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.items.iter().map(|e| e.event.uid.as_str()).collect::<Vec<_>>(),
        ["new"]
    );
    let incidents = store
        .incidents(IncidentQuery {
            limit: 10,
            ..IncidentQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(incidents.items.len(), 1);
    assert_eq!(store.clusters().await.unwrap()[0].events_stored, 1);
    // A deleted event that comes again is stored again (it is new to the store).
    let again = store
        .ingest(identity(), batch(vec![event("old7", "shop", "api", 1_007)]))
        .await
        .unwrap();
    assert_eq!(again.accepted, 1);
}

#[tokio::test]
async fn incidents_are_found_by_namespace_and_workload_indexes() {
    let (_dir, store) = store_with_agent().await;
    let mut events = Vec::new();
    for i in 0..300 {
        events.push(event(
            &format!("e{i}"),
            &format!("ns{}", i % 30),
            &format!("w{}", i % 60),
            10_000 + i,
        ));
    }
    store.ingest(identity(), batch(events)).await.unwrap();
    let q = |namespace: Option<&str>, workload: Option<&str>| IncidentQuery {
        namespace: namespace.map(str::to_owned),
        workload: workload.map(|w| (None, w.to_owned())),
        limit: 100,
        ..IncidentQuery::default()
    };
    let by_ns = store.incidents(q(Some("ns3"), None)).await.unwrap();
    assert_eq!(by_ns.items.len(), 2, "w3 and w33 live in ns3");
    assert!(by_ns.items.iter().all(|i| i.namespace == "ns3"));
    let by_wl = store.incidents(q(None, Some("w33"))).await.unwrap();
    assert_eq!(by_wl.items.len(), 1);
    assert_eq!(by_wl.items[0].occurrences, 5);
    // An incident seen again moves in the index: the old entry is gone.
    store
        .ingest(identity(), batch(vec![event("late", "ns3", "w33", 99_999)]))
        .await
        .unwrap();
    let again = store.incidents(q(Some("ns3"), None)).await.unwrap();
    assert_eq!(again.items.len(), 2);
    assert_eq!(again.items[0].occurrences, 6);
}

#[tokio::test]
async fn unknown_and_revoked_agents_are_refused_without_writing() {
    let (_dir, store) = store_with_agent().await;
    let stranger = AgentIdentity {
        agent_id: "nobody".into(),
        ..identity()
    };
    let err = store
        .ingest(stranger, batch(vec![event("x", "a", "b", 1)]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AgentRefused(_)), "{err}");
    let other_cluster = AgentIdentity {
        cluster: "elsewhere".into(),
        ..identity()
    };
    assert!(
        store
            .ingest(other_cluster, batch(vec![event("x", "a", "b", 1)]))
            .await
            .is_err()
    );
    let page = store
        .events(EventQuery {
            limit: 10,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert!(page.items.is_empty());
}
