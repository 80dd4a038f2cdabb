//! kube-rs 5's `watcher` against the simulator: forced 410s and dropped streams must lose
//! no (uid, count) occurrence and deliver nothing outside the field selector.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{client, eventually, start};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use podwarn_testkit::{ClusterHandle, PodRef, SimConfig, Workload};

#[derive(Default)]
struct Seen {
    occurrences: Mutex<HashSet<(String, i32)>>,
    unexpected: Mutex<Vec<String>>,
    gone: AtomicUsize,
    inits: AtomicUsize,
    applies: AtomicUsize,
}

fn occurrence(e: &Event) -> (String, i32) {
    let count = e.series.as_ref().and_then(|s| s.count).or(e.count).unwrap_or(1);
    (e.metadata.uid.clone().unwrap_or_default(), count)
}

impl Seen {
    fn record(&self, e: &Event) {
        self.applies.fetch_add(1, Ordering::Relaxed);
        if e.type_.as_deref() != Some("Warning") || e.involved_object.kind.as_deref() != Some("Pod") {
            self.unexpected
                .lock()
                .unwrap()
                .push(format!("{:?} {:?} {:?}", e.type_, e.involved_object.kind, e.reason));
        }
        self.occurrences.lock().unwrap().insert(occurrence(e));
    }
}

/// Every (uid, n) for n in 1..=count of every Pod Warning the simulator emitted.
fn expected(c: &ClusterHandle) -> BTreeSet<(String, i32)> {
    c.emitted()
        .into_iter()
        .filter(|r| r.kind == "Pod" && r.type_ == "Warning")
        .flat_map(|r| (1..=r.count as i32).map(move |n| (r.uid.clone(), n)))
        .collect()
}

async fn all_seen(c: &ClusterHandle, seen: &Seen, what: &str) {
    let ok = eventually(Duration::from_secs(30), || {
        let got = seen.occurrences.lock().unwrap();
        expected(c).iter().all(|o| got.contains(o))
    })
    .await;
    if !ok {
        let got = seen.occurrences.lock().unwrap();
        let missing: Vec<_> = expected(c).into_iter().filter(|o| !got.contains(o)).collect();
        panic!("{what}: watcher missed {missing:?}");
    }
}

struct Emitter {
    c: ClusterHandle,
    pods: Vec<PodRef>,
    n: usize,
    uids: Vec<String>,
}

impl Emitter {
    /// A new Pod Warning, plus noise the selector must filter out.
    fn fresh(&mut self, k: usize) {
        for _ in 0..k {
            self.n += 1;
            let pod = &self.pods[self.n % self.pods.len()];
            let ev = self
                .c
                .emit_warning(
                    pod,
                    "BackOff",
                    &format!("Back-off restarting failed container app (attempt {})", self.n),
                    Some("app"),
                )
                .unwrap();
            self.uids.push(ev.uid);
            self.c
                .emit_normal(pod, "Pulled", &format!("pulled {}", self.n), Some("app"))
                .unwrap();
        }
        self.c.emit_object_warning(
            "Node",
            "",
            "node-a",
            "SystemOOM",
            &format!("System OOM encountered, pid: {}", self.n),
        );
    }

    /// Repeats `k` distinct existing Events once each (the newest are left alone).
    fn repeat(&mut self, k: usize) {
        for uid in self.uids.iter().take(k) {
            self.c.repeat_event(uid).unwrap();
        }
        let k = k.min(self.uids.len());
        self.uids.rotate_left(k);
    }
}

async fn survive_faults(streaming: bool) {
    let env = start(SimConfig {
        bookmark_interval: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await;
    let c = env.sim.cluster();
    let f = env.sim.faults();
    c.create_node("node-a");
    let pods = c
        .create(
            &Workload::deployment("shop", "checkout")
                .replicas(3)
                .container("app", "shop/app:1"),
        )
        .unwrap();
    let mut em = Emitter {
        c: c.clone(),
        pods: pods.clone(),
        n: 0,
        uids: Vec::new(),
    };
    em.fresh(3);
    c.emit_series_warning(
        &pods[0],
        "FailedScheduling",
        "0/3 nodes are available: 3 Insufficient cpu.",
    )
    .unwrap();

    let mut cfg = watcher::Config::default().fields("type=Warning,involvedObject.kind=Pod");
    if streaming {
        cfg = cfg.streaming_lists();
    }
    let api = Api::<Event>::all(client(&env).await);
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    let task = tokio::spawn(async move {
        let mut stream = watcher(api, cfg).default_backoff().boxed();
        while let Some(item) = stream.next().await {
            match item {
                Ok(watcher::Event::Apply(e) | watcher::Event::InitApply(e)) => s.record(&e),
                Ok(watcher::Event::Init) => {
                    s.inits.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(watcher::Error::WatchError(st)) if st.code == 410 => {
                    s.gone.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {}
            }
        }
    });

    all_seen(&c, &seen, "initial list").await;
    em.fresh(5);
    em.repeat(2);
    c.emit_series_warning(
        &pods[0],
        "FailedScheduling",
        "0/3 nodes are available: 3 Insufficient cpu.",
    )
    .unwrap();
    all_seen(&c, &seen, "live watch").await;

    // Dropped streams: kube-rs re-watches from its last resourceVersion.
    for _ in 0..3 {
        f.drop_all_watches();
        em.fresh(2);
        em.repeat(1);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    all_seen(&c, &seen, "after dropped streams").await;

    // Cut connections: the stream fails mid-body instead of ending cleanly.
    for _ in 0..2 {
        f.reset_connections();
        em.fresh(2);
        em.repeat(1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // kube-client reads a cut chunked stream as an unexpected EOF and resumes quietly.
    all_seen(&c, &seen, "after reset connections").await;

    // 410 inside an open stream: it falls behind a compaction while stalled.
    f.stall_watches(None);
    em.fresh(4);
    em.repeat(3);
    f.expire_versions();
    f.clear_stall();
    assert!(
        eventually(Duration::from_secs(20), || seen.gone.load(Ordering::Relaxed) >= 1).await,
        "no 410 seen"
    );
    all_seen(&c, &seen, "after in-stream 410").await;

    // 410 at watch start: the stream drops and the resumed watch is too old.
    f.stall_watches(None);
    em.fresh(3);
    em.repeat(2);
    f.expire_versions();
    f.drop_all_watches();
    f.clear_stall();
    assert!(
        eventually(Duration::from_secs(20), || seen.gone.load(Ordering::Relaxed) >= 2).await,
        "no second 410"
    );
    all_seen(&c, &seen, "after 410 on resume").await;

    em.fresh(3);
    em.repeat(3);
    all_seen(&c, &seen, "after recovery").await;

    let unexpected = seen.unexpected.lock().unwrap().clone();
    assert!(unexpected.is_empty(), "outside the selector: {unexpected:?}");
    let got = seen.occurrences.lock().unwrap().clone();
    let want = expected(&c);
    let extra: Vec<_> = got.iter().filter(|o| !want.contains(*o)).collect();
    assert!(extra.is_empty(), "occurrences never emitted: {extra:?}");
    assert!(
        seen.inits.load(Ordering::Relaxed) >= 3,
        "each 410 made the watcher start over"
    );
    task.abort();
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_watcher_survives_410_and_dropped_streams_without_losing_events() {
    survive_faults(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_watcher_streaming_list_survives_410_and_dropped_streams() {
    survive_faults(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_watch_is_410_unless_the_104171_bug_is_switched_on() {
    let env = start(SimConfig::default()).await;
    let c = env.sim.cluster();
    let pod = c.create(&Workload::pod("default", "p")).unwrap().remove(0);
    let old = c.resource_version().to_string();
    c.emit_warning(&pod, "BackOff", "Back-off restarting failed container p", Some("p"))
        .unwrap();
    env.sim.faults().expire_versions();
    let api = Api::<Event>::all(common::client(&env).await);

    let mut stream = api
        .watch(&WatchParams::default().timeout(2), &old)
        .await
        .unwrap()
        .boxed();
    match stream.next().await {
        Some(Ok(WatchEvent::Error(st))) => {
            assert_eq!((st.code, st.reason.as_str()), (410, "Expired"));
            assert!(
                st.message.starts_with(&format!("too old resource version: {old} (")),
                "{}",
                st.message
            );
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }

    env.sim.faults().silent_stale_watch(true);
    let started = tokio::time::Instant::now();
    let mut stream = api
        .watch(&WatchParams::default().timeout(2), &old)
        .await
        .expect("200 OK")
        .boxed();
    assert!(
        stream.next().await.is_none(),
        "silence until timeoutSeconds closes the stream"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    env.sim.shutdown().await;
}

/// The agent's Pod-status path: an unfiltered Pod watcher sees each restart's
/// `lastState.terminated`, even two restarts in a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_watcher_sees_every_container_termination() {
    use k8s_openapi::api::core::v1::Pod;
    use podwarn_testkit::Termination;

    let env = start(SimConfig::default()).await;
    let c = env.sim.cluster();
    let pod = c.create(&Workload::deployment("shop", "api")).unwrap().remove(0);
    let api = Api::<Pod>::all(client(&env).await);
    let seen = Arc::new(Mutex::new(Vec::<(String, i32, String)>::new()));
    let ready = Arc::new(AtomicUsize::new(0));
    let (s, r) = (seen.clone(), ready.clone());
    let task = tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default()).default_backoff().boxed();
        while let Some(item) = stream.next().await {
            match item {
                Ok(watcher::Event::InitDone) => {
                    r.fetch_add(1, Ordering::Relaxed);
                }
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                    for cs in p.status.and_then(|s| s.container_statuses).unwrap_or_default() {
                        if let Some(t) = cs.last_state.and_then(|l| l.terminated) {
                            let id = t.container_id.unwrap_or_default();
                            let entry = (t.reason.unwrap_or_default(), t.exit_code, id);
                            let mut s = s.lock().unwrap();
                            if !s.contains(&entry) {
                                s.push(entry);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    });
    assert!(eventually(Duration::from_secs(10), || ready.load(Ordering::Relaxed) >= 1).await);
    c.restart_container(&pod, "api", Termination::OOMKilled).unwrap();
    c.restart_container(&pod, "api", Termination::Error { exit_code: 3 })
        .unwrap();
    let both = eventually(Duration::from_secs(10), || seen.lock().unwrap().len() == 2).await;
    let got = seen.lock().unwrap().clone();
    assert!(both, "{got:?}");
    assert_eq!((got[0].0.as_str(), got[0].1), ("OOMKilled", 137));
    assert_eq!((got[1].0.as_str(), got[1].1), ("Error", 3));
    assert_ne!(got[0].2, got[1].2, "each run has its own containerID");
    assert_eq!(c.stored_events(), 0, "no Event for either");
    task.abort();
    env.sim.shutdown().await;
}
