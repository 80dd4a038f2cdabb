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
    store_with_agent_cached(DEFAULT_CACHE).await
}

async fn store_with_agent_cached(cache_bytes: usize) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with_cache(&dir.path().join("s.redb"), cache_bytes).unwrap();
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

/// The store against a plain model: random new events, re-sends with higher
/// and lower counts, and replays, over many index segments; then every
/// filter, walked page by page, must list exactly the model's events newest
/// first; and again after retention and after reopening the file.
#[tokio::test]
async fn every_filter_lists_exactly_what_a_model_holds_across_segments_updates_and_retention() {
    lists_exactly_what_a_model_holds(DEFAULT_CACHE).await;
}

/// The same with a page cache so small that the writer remembers only a
/// couple of dedup keys and keeps forgetting the older half: every dedup
/// answer then comes from memory and disk by turns (invariant 4).
#[tokio::test]
async fn every_filter_lists_exactly_what_a_model_holds_while_dedup_keys_are_forgotten() {
    lists_exactly_what_a_model_holds(2 * 8 * 64).await;
}

async fn lists_exactly_what_a_model_holds(cache_bytes: usize) {
    use std::collections::BTreeMap;
    let (dir, store) = store_with_agent_cached(cache_bytes).await;
    // uid → (namespace, pod, node, last_seen_s, count)
    type Row = (String, String, String, i64, u32);
    type Keep = Box<dyn Fn(&Row) -> bool>;
    let mut model: BTreeMap<String, Row> = BTreeMap::new();
    // uid → first_seen_s: fixed for an Event object, part of its identity.
    let mut first_seen: BTreeMap<String, i64> = BTreeMap::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let base = 1_790_000_000;
    for round in 0..30 {
        let mut events = Vec::new();
        for _ in 0..20 {
            let existing = (!model.is_empty() && rand(3) == 0).then(|| {
                let i = rand(model.len() as u64) as usize;
                model.keys().nth(i).cloned().unwrap_or_default()
            });
            let mut ev = match existing {
                Some(uid) => {
                    let (ns, pod, node, last, count) = model[&uid].clone();
                    let mut ev = event(&uid, &ns, "w", last);
                    ev.pod = pod;
                    ev.node = Some(node);
                    // Higher, equal or lower count; later or earlier sighting.
                    ev.count = (count + rand(3) as u32).saturating_sub(1).max(1);
                    ev.first_seen = jiff::Timestamp::from_second(first_seen[&uid]).unwrap();
                    ev.last_seen = jiff::Timestamp::from_second(last + rand(200) as i64 - 50).unwrap();
                    ev
                }
                None => {
                    let uid = format!("u{}", model.len());
                    let ns = format!("ns{}", rand(4));
                    let last = base + round * 100 + rand(100) as i64;
                    let mut ev = event(&uid, &ns, &format!("w{}", rand(3)), last);
                    ev.pod = format!("pod{}", rand(10));
                    ev.node = Some(format!("node{}", rand(3)));
                    ev.first_seen = jiff::Timestamp::from_second(base + round).unwrap();
                    ev.count = 1 + rand(3) as u32;
                    ev
                }
            };
            ev.message = format!("Back-off {} restarting failed container", rand(1000));
            let uid = ev.uid.clone();
            first_seen.entry(uid.clone()).or_insert(ev.first_seen.as_second());
            let entry = model.entry(uid).or_insert((
                ev.namespace.clone(),
                ev.pod.clone(),
                ev.node.clone().unwrap_or_default(),
                i64::MIN,
                0,
            ));
            if ev.count > entry.4 {
                entry.3 = entry.3.max(ev.last_seen.as_second()).max(ev.first_seen.as_second());
                entry.4 = ev.count;
            }
            events.push(ev);
        }
        // One batch per round; the same uid may appear twice in it.
        store.ingest(identity(), batch(events)).await.unwrap();
    }

    async fn check(store: &Store, model: &BTreeMap<String, Row>, what: &str) {
        let filters: Vec<(String, Keep)> = vec![
            ("all".into(), Box::new(|_| true)),
            ("ns1".into(), Box::new(|e| e.0 == "ns1")),
            ("pod3".into(), Box::new(|e| e.1 == "pod3")),
            ("node2".into(), Box::new(|e| e.2 == "node2")),
            (
                "window".into(),
                Box::new(|e| (1_790_000_500..=1_790_001_500).contains(&e.3)),
            ),
        ];
        for (name, keep) in filters {
            let mut q = EventQuery {
                limit: 7,
                ..Default::default()
            };
            match name.as_str() {
                "ns1" => q.namespace = Some("ns1".into()),
                "pod3" => q.pod = Some("pod3".into()),
                "node2" => q.node = Some("node2".into()),
                "window" => {
                    q.since_us = Some(1_790_000_500_000_000);
                    q.until_us = Some(1_790_001_500_000_000);
                }
                _ => {}
            }
            let mut got: Vec<(String, i64, u32)> = Vec::new();
            loop {
                let page = store.events(q.clone()).await.unwrap();
                got.extend(
                    page.items
                        .iter()
                        .map(|e| (e.event.uid.clone(), e.event.last_seen.as_second(), e.event.count)),
                );
                match page.next {
                    Some(next) => q.after = Some(next),
                    None => break,
                }
            }
            assert!(
                got.windows(2).all(|w| w[0].1 >= w[1].1),
                "{what}/{name}: not newest first"
            );
            let mut got_sorted = got.clone();
            got_sorted.sort();
            let want: Vec<(String, i64, u32)> = model
                .iter()
                .filter(|(_, e)| keep(e))
                .map(|(uid, e)| (uid.clone(), e.3, e.4))
                .collect();
            assert_eq!(got_sorted, want, "{what}/{name}");
        }
    }
    check(&store, &model, "after ingest").await;

    let cutoff_s = 1_790_001_000;
    store.apply_retention(cutoff_s * 1_000_000).await.unwrap();
    model.retain(|_, e| e.3 >= cutoff_s);
    check(&store, &model, "after retention").await;

    drop(store);
    // The writer thread lets go of the file once it sees the channel closed.
    let mut reopened = None;
    for _ in 0..100 {
        match Store::open_with_cache(&dir.path().join("s.redb"), cache_bytes) {
            Ok(store) => {
                reopened = Some(store);
                break;
            }
            Err(StoreError::Locked(_)) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            Err(e) => panic!("reopening: {e}"),
        }
    }
    let store = reopened.expect("the store is released within 5 s");
    check(&store, &model, "after reopening").await;
    let clusters = store.clusters().await.unwrap();
    assert_eq!(clusters[0].events_stored, model.len() as u64);
}

#[test]
fn a_store_of_an_older_schema_is_refused_by_name_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    {
        // A schema-2 file: dedup keys were byte arrays then.
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(schema::META)
            .unwrap()
            .insert(schema::META_SCHEMA, 2)
            .unwrap();
        let old_dedup: redb::TableDefinition<[u8; 28], [u8; 16]> = redb::TableDefinition::new("event_dedup");
        txn.open_table(old_dedup).unwrap().insert([7; 28], [1; 16]).unwrap();
        txn.commit().unwrap();
    }
    let err = Store::open(&path).expect_err("an older schema is refused").to_string();
    assert!(err.contains("schema 2") && err.contains("--data-dir"), "{err}");
    // What it held is still there, as it was.
    let db = redb::Database::create(&path).unwrap();
    let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
    let meta = txn.open_table(schema::META).unwrap();
    assert_eq!(meta.get(schema::META_SCHEMA).unwrap().map(|v| v.value()), Some(2));
    let old_dedup: redb::TableDefinition<[u8; 28], [u8; 16]> = redb::TableDefinition::new("event_dedup");
    let dedup = txn.open_table(old_dedup).unwrap();
    assert_eq!(dedup.get([7; 28]).unwrap().map(|v| v.value()), Some([1; 16]));
}

/// Incidents are indexed by the hour of their last occurrence, and a page
/// orders each hour by the exact times: whatever the page size and window,
/// walking the pages gives every matching incident once, newest first.
#[tokio::test]
async fn incident_pages_are_newest_first_across_hour_buckets() {
    let (_dir, store) = store_with_agent().await;
    let hour = 3600;
    // 40 workloads in 4 namespaces, first seen over 6 hours; then half of
    // them seen again later, some within their hour, some hours later, so
    // their index entries move (or stay) between commits.
    let mut last_seen = std::collections::HashMap::new();
    let mut first = Vec::new();
    for w in 0..40i64 {
        let at = 100 * hour + (w * 7919) % (6 * hour);
        first.push(event(&format!("a{w}"), &format!("ns{}", w % 4), &format!("w{w}"), at));
        last_seen.insert(w, at);
    }
    store.ingest(identity(), batch(first)).await.unwrap();
    for (round, w) in (0..40i64).filter(|w| w % 2 == 0).enumerate() {
        let at = last_seen[&w]
            + if round % 3 == 0 {
                60
            } else {
                (round as i64 % 5) * hour + 17
            };
        let again = event(&format!("b{w}"), &format!("ns{}", w % 4), &format!("w{w}"), at);
        store.ingest(identity(), batch(vec![again])).await.unwrap();
        last_seen.insert(w, at);
    }
    // (namespace, since, until, page size)
    type Case = (Option<&'static str>, Option<i64>, Option<i64>, usize);
    let cases: [Case; 5] = [
        (None, None, None, 7),
        (None, None, None, 1),
        (Some("ns2"), None, None, 3),
        (None, Some(102 * hour + 5), Some(105 * hour), 4),
        (Some("ns1"), Some(101 * hour), None, 100),
    ];
    for (namespace, since, until, limit) in cases {
        let mut want: Vec<(i64, String)> = last_seen
            .iter()
            .filter(|(w, _)| namespace.is_none_or(|ns| ns == format!("ns{}", *w % 4)))
            .filter(|(_, at)| since.is_none_or(|s| **at >= s) && until.is_none_or(|u| **at <= u))
            .map(|(w, at)| (*at, format!("w{w}")))
            .collect();
        want.sort_by(|a, b| b.cmp(a));
        let mut got = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .incidents(IncidentQuery {
                    namespace: namespace.map(str::to_owned),
                    since_us: since.map(|s| s * 1_000_000),
                    until_us: until.map(|u| u * 1_000_000),
                    limit,
                    after,
                    ..IncidentQuery::default()
                })
                .await
                .unwrap();
            assert!(page.items.len() <= limit);
            got.extend(page.items.iter().map(|i| {
                let name = i.workload.as_ref().map(|w| w.name.clone()).unwrap_or_default();
                (i.last_seen.as_second(), name)
            }));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let want_names: Vec<&str> = want.iter().map(|(_, w)| w.as_str()).collect();
        let got_names: Vec<&str> = got.iter().map(|(_, w)| w.as_str()).collect();
        assert_eq!(
            got_names, want_names,
            "namespace {namespace:?} since {since:?} until {until:?} limit {limit}"
        );
        assert_eq!(got, want);
    }
}

/// Retention deletes an incident whose last occurrence is older than the
/// cutoff, and keeps one seen later in the same hour bucket.
#[tokio::test]
async fn retention_splits_an_hour_bucket_at_the_cutoff() {
    let (_dir, store) = store_with_agent().await;
    let hour = 3600;
    let events = vec![
        event("early", "shop", "early", 10 * hour + 60),
        event("late", "shop", "late", 10 * hour + 3000),
        event("older", "shop", "older", 9 * hour),
    ];
    store.ingest(identity(), batch(events)).await.unwrap();
    let done = store.apply_retention((10 * hour + 1800) * 1_000_000).await.unwrap();
    assert_eq!((done.events, done.incidents), (2, 2));
    let left = store
        .incidents(IncidentQuery {
            limit: 10,
            ..IncidentQuery::default()
        })
        .await
        .unwrap();
    let names: Vec<_> = left
        .items
        .iter()
        .map(|i| i.workload.as_ref().unwrap().name.as_str())
        .collect();
    assert_eq!(names, ["late"]);
    // The kept incident's index entries are intact: it moves on when seen again.
    store
        .ingest(identity(), batch(vec![event("later", "shop", "late", 12 * hour)]))
        .await
        .unwrap();
    let moved = store
        .incidents(IncidentQuery {
            since_us: Some(11 * hour * 1_000_000),
            limit: 10,
            ..IncidentQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(moved.items.len(), 1);
    assert_eq!(moved.items[0].occurrences, 2);
}

/// A group that fails part-way leaves no trace in what the writer keeps
/// between commits: the dedup keys, incident counts and index changes its
/// first events made in memory are forgotten with it, so sending the batch
/// again stores the new event once and counts it once, and queries list each
/// event once (invariants 2 and 4).
#[tokio::test]
async fn a_failed_commit_leaves_nothing_in_the_writers_memory() {
    let (dir, store) = store_with_agent().await;
    let path = dir.path().join("s.redb");
    // Sequence numbers 1..=63: the whole first event block.
    let first: Vec<_> = (0..63)
        .map(|i| event(&format!("old{i}"), "shop", "api", 5_000 + i))
        .collect();
    store.ingest(identity(), batch(first)).await.unwrap();
    drop(store);
    // Damage that block, so that updating one of its events fails.
    let db = loop {
        match redb::Database::open(&path) {
            Ok(db) => break db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            Err(e) => panic!("reopening the store: {e}"),
        }
    };
    let txn = db.begin_write().unwrap();
    txn.open_table(blocks::EVENT_BLOCKS)
        .unwrap()
        .insert(0, [9u8, 9, 9].as_slice())
        .unwrap();
    txn.commit().unwrap();
    drop(db);

    let store = Store::open(&path).unwrap();
    let occurrences = |store: Store| async move {
        let page = store
            .incidents(IncidentQuery {
                namespace: Some("shop".into()),
                limit: 10,
                ..IncidentQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(page.items.len(), 1);
        page.items[0].occurrences
    };
    assert_eq!(occurrences(store.clone()).await, 63);
    // A new event of the same incident first, then an update that fails.
    let mut update = event("old5", "shop", "api", 5_005);
    update.count = 2;
    let fresh = event("fresh", "shop", "api", 9_000);
    let failed = store.ingest(identity(), batch(vec![fresh.clone(), update])).await;
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(occurrences(store.clone()).await, 63);
    // Another event takes the sequence number the failed one had: the index
    // entries the failed group made must be gone with it, or queries list
    // this event twice (under its own time and the failed event's).
    // (Only events after the damaged first block can be listed.)
    let other = store
        .ingest(identity(), batch(vec![event("other", "ops", "web", 9_001)]))
        .await
        .unwrap();
    assert_eq!(other.accepted, 1);
    let listed = |namespace: Option<&str>| {
        let store = store.clone();
        let query = EventQuery {
            namespace: namespace.map(Into::into),
            since_us: Some(8_000_000_000),
            limit: 1000,
            ..EventQuery::default()
        };
        async move {
            let page = store.events(query).await.unwrap();
            page.items.into_iter().map(|e| e.event.uid).collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(None).await, ["other"]);
    assert_eq!(listed(Some("ops")).await, ["other"]);
    assert_eq!(listed(Some("shop")).await, Vec::<String>::new());
    // Sent again alone: new to the store, and counted once.
    let again = store.ingest(identity(), batch(vec![fresh])).await.unwrap();
    assert_eq!((again.accepted, again.duplicate), (1, 0));
    assert_eq!(occurrences(store.clone()).await, 64);
    assert_eq!(listed(Some("shop")).await, ["fresh"]);
}
