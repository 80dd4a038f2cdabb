//! What the agent knows of each Pod in scope: node, uid, workload and
//! container states, kept current by the agent's own Pod watch (an informer
//! reduced to these facts), so enriching a warning is a map lookup instead of
//! an API request. A burst of warnings about hundreds of Pods then costs no
//! request at all, where one lookup per Pod under the agent's rate limit
//! (`--api-qps`) used to hold the whole pipeline back.
//!
//! Memory: one small entry per Pod in scope (about 300 bytes: names, uid,
//! node, owner, one line per container), plus the last [`TOMBSTONES`] deleted
//! Pods, whose warnings keep arriving (and are replayed by relists) after
//! they are gone.

use crate::resources::PodObject;
use podwarn_shared::Workload;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Deleted Pods remembered, so their late warnings still get their workload and node.
pub const TOMBSTONES: usize = 4096;

/// What the agent knows about one container of a Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Container name.
    pub name: String,
    /// Restarts so far.
    pub restart_count: i32,
    /// Reason of the last termination (`OOMKilled`, `Error` …).
    pub last_termination_reason: Option<String>,
    /// Exit code of the last termination.
    pub last_exit_code: Option<i32>,
}

/// A Pod's owning workload, as far as it is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// No controller: a bare Pod.
    None,
    /// The workload.
    Workload(Workload),
    /// A ReplicaSet whose own owner (usually a Deployment) is not looked up yet.
    ReplicaSet(String),
}

/// What the agent keeps of a Pod: a few fields, never the whole object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    /// The Pod's uid.
    pub uid: Option<String>,
    /// Its node, once scheduled.
    pub node: Option<String>,
    /// Its owning workload.
    pub owner: Owner,
    /// Its containers (init containers included).
    pub containers: Vec<ContainerInfo>,
}

impl PodInfo {
    /// The facts of a watched or fetched Pod.
    pub fn of(pod: &PodObject) -> Self {
        Self {
            uid: pod.metadata.uid.clone(),
            node: pod.node_name.clone(),
            owner: owner_of(pod.controller.as_ref()),
            containers: pod
                .containers
                .iter()
                .map(|s| {
                    let terminated = s.last_state.as_ref().and_then(|l| l.terminated.as_ref());
                    ContainerInfo {
                        name: s.name.clone(),
                        restart_count: s.restart_count,
                        last_termination_reason: terminated.and_then(|t| t.reason.clone()),
                        last_exit_code: terminated.map(|t| t.exit_code),
                    }
                })
                .collect(),
        }
    }

    /// The container named `name`.
    pub fn container(&self, name: &str) -> Option<&ContainerInfo> {
        self.containers.iter().find(|c| c.name == name)
    }
}

/// The workload a controller reference names, as far as it can be told
/// without a request: a ReplicaSet needs one (its owner is the Deployment).
fn owner_of(controller: Option<&(String, String)>) -> Owner {
    match controller {
        None => Owner::None,
        Some((kind, name)) if kind == "ReplicaSet" => Owner::ReplicaSet(name.clone()),
        Some((kind, name)) if kind == "Job" => Owner::Workload(job_owner(name)),
        Some((kind, name)) => Owner::Workload(Workload {
            kind: kind.clone(),
            name: name.clone(),
        }),
    }
}

/// A CronJob names its Jobs `<cronjob>-<scheduled minute since the epoch>`.
/// The agent may not read Jobs (least privilege), so the name decides.
pub fn job_owner(job: &str) -> Workload {
    match job.rsplit_once('-') {
        Some((base, stamp)) if stamp.len() >= 8 && stamp.bytes().all(|b| b.is_ascii_digit()) && !base.is_empty() => {
            Workload {
                kind: "CronJob".into(),
                name: base.to_owned(),
            }
        }
        _ => Workload {
            kind: "Job".into(),
            name: job.to_owned(),
        },
    }
}

#[derive(Debug)]
struct Entry {
    /// Shared with the warnings being enriched: handing it out is a reference count.
    info: Arc<PodInfo>,
    /// The controller reference the owner was derived from: an update that
    /// keeps it keeps a resolved owner.
    controller: Option<(String, String)>,
    /// The list generation that last saw it (see [`PodIndex::relist_done`]).
    listed: u64,
    deleted: bool,
}

#[derive(Debug, Default)]
struct Pods {
    /// namespace → name → entry: two levels, so lookups by `&str` allocate nothing.
    by_namespace: HashMap<String, HashMap<String, Entry>>,
    /// Deleted Pods still in `by_namespace`, oldest first.
    tombstones: VecDeque<(String, String)>,
}

impl Pods {
    fn get(&self, namespace: &str, name: &str) -> Option<&Entry> {
        self.by_namespace.get(namespace)?.get(name)
    }

    fn get_mut(&mut self, namespace: &str, name: &str) -> Option<&mut Entry> {
        self.by_namespace.get_mut(namespace)?.get_mut(name)
    }

    fn bury(&mut self, namespace: &str, name: &str) {
        let Some(entry) = self.get_mut(namespace, name) else {
            return;
        };
        if entry.deleted {
            return;
        }
        entry.deleted = true;
        self.tombstones.push_back((namespace.to_owned(), name.to_owned()));
        while self.tombstones.len() > TOMBSTONES {
            let Some((ns, pod)) = self.tombstones.pop_front() else {
                break;
            };
            // Only if still deleted: a Pod of the same name may have been created since.
            if self.get(&ns, &pod).is_some_and(|e| e.deleted)
                && let Some(pods) = self.by_namespace.get_mut(&ns)
            {
                pods.remove(&pod);
                if pods.is_empty() {
                    self.by_namespace.remove(&ns);
                }
            }
        }
    }
}

/// The Pods in scope, fed by the Pod watches; shared by the watches (writers)
/// and enrichment (readers). Lookups are a short lock and two hash probes.
#[derive(Debug)]
pub struct PodIndex {
    pods: Mutex<Pods>,
    generation: AtomicU64,
    /// Watches that have not finished their first list yet.
    unlisted: AtomicUsize,
    synced: watch::Sender<bool>,
    created: Instant,
}

impl PodIndex {
    /// An empty index fed by `watches` Pod watches; it is synced once each has listed.
    pub fn new(watches: usize) -> Self {
        Self {
            pods: Mutex::default(),
            generation: AtomicU64::new(0),
            unlisted: AtomicUsize::new(watches),
            synced: watch::Sender::new(watches == 0),
            created: Instant::now(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pods> {
        self.pods.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A watch starts a (re)list: the generation its objects are marked with
    /// until the next one.
    pub fn relist_started(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Records a Pod seen by a watch in list `generation`; returns its facts.
    pub fn apply(&self, pod: &PodObject, generation: u64) -> Arc<PodInfo> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let mut info = PodInfo::of(pod);
        let mut pods = self.lock();
        if let Some(entry) = pods.get_mut(namespace, name) {
            let same_pod = entry.info.uid == info.uid;
            if same_pod && entry.controller == pod.controller {
                info.owner = entry.info.owner.clone();
            }
            let info = Arc::new(info);
            entry.info = info.clone();
            entry.controller = pod.controller.clone();
            entry.listed = generation;
            entry.deleted = false;
            return info;
        }
        let info = Arc::new(info);
        pods.by_namespace.entry(namespace.to_owned()).or_default().insert(
            name.to_owned(),
            Entry {
                info: info.clone(),
                controller: pod.controller.clone(),
                listed: generation,
                deleted: false,
            },
        );
        info
    }

    /// A watch saw the Pod deleted: it is kept as a tombstone for a while.
    pub fn delete(&self, pod: &PodObject) {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        self.lock().bury(namespace, name);
    }

    /// A watch over `namespace` (`None`: all) finished the list of
    /// `generation`: Pods it did not list were deleted meanwhile. `first`
    /// is true for the watch's first list; once every watch has had one the
    /// index is synced.
    pub fn relist_done(&self, namespace: Option<&str>, generation: u64, first: bool) {
        {
            let mut pods = self.lock();
            let gone: Vec<(String, String)> = pods
                .by_namespace
                .iter()
                .filter(|(ns, _)| namespace.is_none_or(|n| n == ns.as_str()))
                .flat_map(|(ns, entries)| {
                    entries
                        .iter()
                        .filter(|(_, e)| !e.deleted && e.listed < generation)
                        .map(move |(name, _)| (ns.clone(), name.clone()))
                })
                .collect();
            for (ns, name) in gone {
                pods.bury(&ns, &name);
            }
        }
        if first && self.unlisted.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.synced.send_replace(true);
        }
    }

    /// Whether every watch has listed once.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until every watch has listed once, but not past `within` after
    /// the index was made; returns whether it has. Once that moment is past
    /// it returns at once: a Pod watch that cannot list (no permission, say)
    /// costs each lookup nothing more.
    pub async fn wait_synced(&self, within: Duration) -> bool {
        let mut synced = self.synced.subscribe();
        let deadline = self.created + within;
        tokio::time::timeout_at(deadline, synced.wait_for(|s| *s)).await.is_ok()
    }

    /// The facts of a Pod (deleted ones included, for a while).
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<PodInfo>> {
        self.lock().get(namespace, name).map(|e| e.info.clone())
    }

    /// Records the workload found for a Pod owned by ReplicaSet `replicaset`,
    /// unless the Pod has changed owner since.
    pub fn resolve_owner(&self, namespace: &str, name: &str, replicaset: &str, workload: Workload) {
        if let Some(entry) = self.lock().get_mut(namespace, name)
            && matches!(&entry.info.owner, Owner::ReplicaSet(rs) if rs == replicaset)
        {
            Arc::make_mut(&mut entry.info).owner = Owner::Workload(workload);
        }
    }

    /// Pods known, deleted ones included.
    pub fn len(&self) -> usize {
        self.lock().by_namespace.values().map(HashMap::len).sum()
    }

    /// Whether no Pod is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, uid: &str, restarts: i32) -> PodObject {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns, "uid": uid,
                         "ownerReferences": [{"kind": "ReplicaSet", "name": "api-7d9f8b6c5", "controller": true}]},
            "spec": {"nodeName": "node-a"},
            "status": {"containerStatuses": [{"name": "app", "restartCount": restarts,
                "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}
        }))
        .unwrap()
    }

    fn restarts(index: &PodIndex, ns: &str, name: &str) -> Option<i32> {
        index.get(ns, name)?.container("app").map(|c| c.restart_count)
    }

    #[test]
    fn watched_pods_are_found_updated_and_keep_a_resolved_owner() {
        let index = PodIndex::new(1);
        let generation = index.relist_started();
        let info = index.apply(&pod("shop", "api-1", "u1", 1), generation);
        assert_eq!(info.owner, Owner::ReplicaSet("api-7d9f8b6c5".into()));
        assert_eq!(info.node.as_deref(), Some("node-a"));
        let c = info.container("app").unwrap();
        assert_eq!(
            (c.last_termination_reason.as_deref(), c.last_exit_code),
            (Some("OOMKilled"), Some(137))
        );
        assert!(!index.is_synced());
        index.relist_done(None, generation, true);
        assert!(index.is_synced());

        let deployment = Workload {
            kind: "Deployment".into(),
            name: "api".into(),
        };
        index.resolve_owner("shop", "api-1", "api-7d9f8b6c5", deployment.clone());
        // A status update keeps the resolved owner and brings the new restart count.
        let info = index.apply(&pod("shop", "api-1", "u1", 2), generation);
        assert_eq!(info.owner, Owner::Workload(deployment));
        assert_eq!(restarts(&index, "shop", "api-1"), Some(2));
        // A new Pod of the same name (another uid) starts over.
        let info = index.apply(&pod("shop", "api-1", "u2", 0), generation);
        assert_eq!(info.owner, Owner::ReplicaSet("api-7d9f8b6c5".into()));
        assert_eq!(index.get("shop", "nope"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn lookups_wait_for_the_first_list_only_until_the_deadline() {
        let index = PodIndex::new(1);
        let start = Instant::now();
        assert!(!index.wait_synced(Duration::from_secs(30)).await, "never listed");
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        assert!(!index.wait_synced(Duration::from_secs(30)).await);
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(30),
            "the deadline passed: no second wait"
        );
        let generation = index.relist_started();
        index.relist_done(None, generation, true);
        assert!(index.wait_synced(Duration::from_secs(30)).await);
    }

    #[test]
    fn a_relist_buries_pods_it_no_longer_lists_and_tombstones_are_bounded() {
        let index = PodIndex::new(2);
        let first = index.relist_started();
        index.apply(&pod("a", "p1", "u1", 0), first);
        index.apply(&pod("a", "p2", "u2", 0), first);
        index.apply(&pod("b", "p3", "u3", 0), first);
        index.relist_done(Some("a"), first, true);
        assert!(!index.is_synced(), "one of two watches listed");
        index.relist_done(Some("b"), first, true);
        assert!(index.is_synced());

        // Namespace a relists without p2; namespace b's pods are not its business.
        let second = index.relist_started();
        index.apply(&pod("a", "p1", "u1", 4), second);
        index.relist_done(Some("a"), second, false);
        assert_eq!(restarts(&index, "a", "p1"), Some(4));
        assert_eq!(restarts(&index, "a", "p2"), Some(0), "a tombstone still answers");
        assert_eq!(restarts(&index, "b", "p3"), Some(0));
        assert_eq!(index.lock().tombstones.len(), 1);

        for i in 0..TOMBSTONES + 10 {
            let p = pod("c", &format!("gone-{i}"), &format!("g{i}"), 0);
            index.apply(&p, second);
            index.delete(&p);
        }
        assert_eq!(index.lock().tombstones.len(), TOMBSTONES);
        assert_eq!(
            index.len(),
            TOMBSTONES + 2,
            "p1 and p3 live, the newest tombstones kept"
        );
        assert!(index.get("c", "gone-0").is_none());
        assert!(index.get("c", &format!("gone-{}", TOMBSTONES + 9)).is_some());
    }
}
