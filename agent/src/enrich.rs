//! Enrichment: what a bare Event does not say. The Pod's node, its workload
//! (owner chain), the state of the container the warning is about (restart
//! count, last termination: this is how OOMKilled is seen), and the last log
//! lines of a crashed container. Then classification.
//!
//! Most warnings are completed from what the agent already holds: the Pod
//! index its Pod watch keeps ([`crate::pods`]), ReplicaSet owners resolved
//! once per Pod, logs fetched once per container instance ([`crate::logs`]).
//! [`run`] completes those inline and hands only the rest — a Pod not in the
//! index, a ReplicaSet not resolved yet, a log not fetched yet — to a bounded
//! set of concurrent lookups, so a lookup never holds up the warnings behind it.
//!
//! Lookups are cached (bounded, with a TTL) and single-flight, and go through
//! the agent's API rate limit, waiting at most [`LOOKUP_WAIT`] for it before
//! the warning goes on without (counted). A missing optional permission
//! degrades with one warning and a metric, never a crash.

use crate::access::RateLimiter;
use crate::logs::{Cached, PreviousLogs};
use crate::ops::{PermissionLabel, RequestLabel, metrics};
use crate::pods::{Owner, PodIndex, PodInfo};
use crate::resources::PodObject;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::api::Api;
use moka::future::Cache;
use podwarn_shared::classify::{Signal, classify};
use podwarn_shared::wire::limits;
use podwarn_shared::{IncidentType, WarningEvent, Workload};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

pub use crate::pods::ContainerInfo;

/// Longest a Pod or ReplicaSet lookup waits for the API rate limit; beyond,
/// the warning goes on without what it would have found.
pub const LOOKUP_WAIT: Duration = Duration::from_secs(1);
/// Until this long after start-up, a lookup first waits for the Pod watches'
/// first list (the index then answers without a request).
const SYNC_WAIT: Duration = Duration::from_secs(30);
/// Warnings waiting for a lookup at once, at most; beyond, [`run`] stops
/// taking new ones (and the watches pause) until some complete.
const LOOKUPS_IN_FLIGHT: usize = 256;

/// A warning on its way through the pipeline.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The event, with the fields the watch could fill.
    pub event: WarningEvent,
    /// The Pod, when the watch already had it (pod-status warnings).
    pub pod: Option<Arc<PodInfo>>,
    /// The termination (reason, exit code) a pod-status warning is about; it
    /// decides the class over whatever the container did since.
    pub termination: Option<(String, i32)>,
}

/// Enrichment settings.
#[derive(Debug, Clone)]
pub struct EnrichConfig {
    /// Log lines to attach to crash-type warnings; 0 disables logs.
    pub log_lines: u32,
    /// Most log bytes to attach.
    pub log_max_bytes: u64,
    /// In DaemonSet mode, this agent's node: warnings of Pods on other nodes are not its to ship.
    pub node: Option<String>,
    /// Whether this agent ships warnings of Pods that have no node yet.
    pub ships_unscheduled: Arc<AtomicBool>,
}

/// The enricher; cheap to clone.
#[derive(Clone)]
pub struct Enricher {
    inner: Arc<Inner>,
}

struct Inner {
    client: kube::Client,
    limiter: Arc<RateLimiter>,
    config: EnrichConfig,
    index: Arc<PodIndex>,
    logs: Arc<PreviousLogs>,
    /// Pods fetched because the index did not have them.
    fetched: Cache<(String, String), Option<Arc<PodInfo>>>,
    /// ReplicaSet → its owner (or the best guess when it cannot be read).
    owners: Cache<(String, String), Workload>,
    replicasets_denied: AtomicBool,
}

impl std::fmt::Debug for Enricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enricher")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Incident types whose previous container's log is worth attaching.
fn wants_logs(t: IncidentType) -> bool {
    matches!(
        t,
        IncidentType::CrashLoopBackOff | IncidentType::OomKilled | IncidentType::ContainerFailed
    )
}

/// A warning that needs a lookup before it can be shipped; see [`Enricher::complete`].
#[derive(Debug)]
pub struct Pending(Box<Stage>);

#[derive(Debug)]
enum Stage {
    /// The Pod or its workload is still to be found.
    Lookup(Candidate),
    /// Classified; only the log lines are missing.
    Logs(Draft),
}

/// A warning with the Pod's facts applied and its class decided.
#[derive(Debug)]
struct Draft {
    event: WarningEvent,
    /// (container, restart count) whose previous log to attach.
    logs_of: Option<(String, i32)>,
}

impl Enricher {
    /// A new enricher reading Pods from `index`, with empty caches.
    pub fn new(client: kube::Client, limiter: Arc<RateLimiter>, index: Arc<PodIndex>, config: EnrichConfig) -> Self {
        let logs = Arc::new(PreviousLogs::new(
            client.clone(),
            limiter.clone(),
            config.log_lines,
            config.log_max_bytes,
        ));
        Self {
            inner: Arc::new(Inner {
                client,
                limiter,
                config,
                index,
                logs,
                // Pod state changes (restarts): a short TTL keeps it fresh, the capacity keeps memory flat.
                fetched: Cache::builder()
                    .max_capacity(4096)
                    .time_to_live(Duration::from_secs(15))
                    .build(),
                owners: Cache::builder()
                    .max_capacity(4096)
                    .time_to_live(Duration::from_secs(600))
                    .build(),
                replicasets_denied: AtomicBool::new(false),
            }),
        }
    }

    /// Completes a candidate from what the agent holds, without waiting:
    /// `Ok(None)` when the warning is not this agent's to ship (DaemonSet
    /// mode: another node's Pod), `Err` when it needs a lookup first.
    pub fn enrich_now(&self, mut candidate: Candidate) -> Result<Option<WarningEvent>, Pending> {
        if self.elsewhere(&candidate.event) {
            return Ok(None);
        }
        let inner = &self.inner;
        if candidate.pod.is_none() {
            let event = &candidate.event;
            candidate.pod = inner.index.get(&event.namespace, &event.pod);
        }
        let unresolved = match &candidate.pod {
            None => true,
            Some(pod) => matches!(pod.owner, Owner::ReplicaSet(_)) && !inner.replicasets_denied.load(Ordering::Relaxed),
        };
        if unresolved {
            return Err(Pending(Box::new(Stage::Lookup(candidate))));
        }
        let Some(mut draft) = self.draft(candidate) else {
            return Ok(None);
        };
        if let Some((container, restarts)) = &draft.logs_of {
            let event = &draft.event;
            match inner.logs.cached(&event.namespace, &event.pod, container, *restarts) {
                Cached::Off => {}
                Cached::Ready(None) => {}
                Cached::Ready(Some(text)) => {
                    if !inner
                        .logs
                        .already_attached(&event.uid, &event.pod, container, *restarts, true)
                    {
                        draft.event.logs = Some(text.to_string());
                    }
                }
                Cached::Wait => return Err(Pending(Box::new(Stage::Logs(draft)))),
            }
        }
        Ok(Some(truncate_fields(draft.event)))
    }

    /// Completes what [`Enricher::enrich_now`] could not, with the lookups it needs.
    pub async fn complete(&self, pending: Pending) -> Option<WarningEvent> {
        let mut draft = match *pending.0 {
            Stage::Logs(draft) => draft,
            Stage::Lookup(mut candidate) => {
                if candidate.pod.is_none() {
                    let event = &candidate.event;
                    candidate.pod = self.pod(&event.namespace, &event.pod).await;
                }
                if let Some(pod) = candidate.pod.as_mut()
                    && let Owner::ReplicaSet(replicaset) = &pod.owner
                {
                    let event = &candidate.event;
                    if let Some(workload) = self.replicaset_owner(&event.namespace, &event.pod, replicaset).await {
                        Arc::make_mut(pod).owner = Owner::Workload(workload);
                    }
                }
                self.draft(candidate)?
            }
        };
        if let Some((container, restarts)) = &draft.logs_of {
            let event = &draft.event;
            let logs = &self.inner.logs;
            if let Some(text) = logs.get(&event.namespace, &event.pod, container, *restarts).await
                && !logs.already_attached(&event.uid, &event.pod, container, *restarts, true)
            {
                draft.event.logs = Some(text.to_string());
            }
        }
        tracing::debug!(uid = %draft.event.uid, incident_type = %draft.event.incident_type, "enriched");
        Some(truncate_fields(draft.event))
    }

    /// Completes a candidate, with whatever lookups it needs. `None` when the
    /// warning is not this agent's to ship (DaemonSet mode: another node's Pod).
    pub async fn enrich(&self, candidate: Candidate) -> Option<WarningEvent> {
        match self.enrich_now(candidate) {
            Ok(done) => done,
            Err(pending) => self.complete(pending).await,
        }
    }

    /// Kubelet events name their node: another node's warning needs no lookup to be skipped.
    fn elsewhere(&self, event: &WarningEvent) -> bool {
        event.node.is_some() && !self.is_mine(event.node.as_deref())
    }

    fn is_mine(&self, node: Option<&str>) -> bool {
        let config = &self.inner.config;
        match (&config.node, node) {
            (None, _) => true,
            (Some(mine), Some(node)) => mine == node,
            (Some(_), None) => config.ships_unscheduled.load(Ordering::Relaxed),
        }
    }

    /// Applies the Pod's facts and classifies; `None` when not this agent's.
    fn draft(&self, candidate: Candidate) -> Option<Draft> {
        let Candidate {
            mut event,
            pod,
            termination,
        } = candidate;
        if let Some(pod) = &pod {
            event.pod_uid = event.pod_uid.or_else(|| pod.uid.clone());
            event.node = pod.node.clone().or(event.node);
            event.workload = match &pod.owner {
                Owner::None => None,
                Owner::Workload(w) => Some(w.clone()),
                Owner::ReplicaSet(rs) => Some(guess_deployment(rs).unwrap_or_else(|| Workload {
                    kind: "ReplicaSet".into(),
                    name: rs.clone(),
                })),
            };
        }
        if !self.is_mine(event.node.as_deref()) {
            return None;
        }
        let container = event
            .container
            .as_deref()
            .and_then(|name| pod.as_ref()?.container(name));
        let (term_reason, term_exit) = match &termination {
            Some((reason, code)) => (Some(reason.as_str()), Some(*code)),
            None => (
                container.and_then(|c| c.last_termination_reason.as_deref()),
                container.and_then(|c| c.last_exit_code),
            ),
        };
        let verdict = classify(&Signal {
            reason: &event.reason,
            message: &event.message,
            last_termination_reason: term_reason,
            last_exit_code: term_exit,
        });
        event.incident_type = verdict.incident_type;
        event.severity = verdict.severity;
        let logs_of = container
            .filter(|c| event.logs.is_none() && wants_logs(event.incident_type) && c.restart_count > 0)
            .filter(|c| {
                !self
                    .inner
                    .logs
                    .already_attached(&event.uid, &event.pod, &c.name, c.restart_count, false)
            })
            .map(|c| (c.name.clone(), c.restart_count));
        Some(Draft { event, logs_of })
    }

    /// The Pod: from the index (once the Pod watches have listed), else one
    /// request shared by all concurrent callers and cached briefly.
    pub async fn pod(&self, namespace: &str, name: &str) -> Option<Arc<PodInfo>> {
        let inner = &self.inner;
        if !inner.index.is_synced() {
            inner.index.wait_synced(SYNC_WAIT).await;
        }
        if let Some(pod) = inner.index.get(namespace, name) {
            return Some(pod);
        }
        // Not watched (another node's Pod in DaemonSet mode), too new for the watch yet, or long gone.
        let key = (namespace.to_owned(), name.to_owned());
        let this = self.clone();
        inner
            .fetched
            .optionally_get_with(key, async move {
                let inner = &this.inner;
                if !inner.limiter.acquire_within(LOOKUP_WAIT).await {
                    metrics().lookups_skipped.get_or_create(&GET_POD).inc();
                    return None;
                }
                metrics().api_requests.get_or_create(&GET_POD).inc();
                let api: Api<PodObject> = Api::namespaced(inner.client.clone(), namespace);
                match api.get_opt(name).await {
                    Ok(Some(pod)) => Some(Some(Arc::new(PodInfo::of(&pod)))),
                    Ok(None) => Some(None),
                    Err(e) => {
                        metrics().enrich_failures.inc();
                        tracing::debug!(namespace, pod = name, error = %e, "pod lookup failed");
                        Some(None)
                    }
                }
            })
            .await
            .flatten()
    }

    /// The owner of ReplicaSet `replicaset` (of Pod `pod`): cached, else one
    /// request; the answer is kept in the Pod index too. `None` when the
    /// lookup was skipped under the rate limit (the name decides for now).
    async fn replicaset_owner(&self, namespace: &str, pod: &str, replicaset: &str) -> Option<Workload> {
        let inner = &self.inner;
        if inner.replicasets_denied.load(Ordering::Relaxed) {
            return None;
        }
        let key = (namespace.to_owned(), replicaset.to_owned());
        let this = self.clone();
        let owner = inner
            .owners
            .optionally_get_with(key, async move {
                let inner = &this.inner;
                let plain = || {
                    guess_deployment(replicaset).unwrap_or_else(|| Workload {
                        kind: "ReplicaSet".into(),
                        name: replicaset.to_owned(),
                    })
                };
                if !inner.limiter.acquire_within(LOOKUP_WAIT).await {
                    metrics().lookups_skipped.get_or_create(&GET_REPLICASET).inc();
                    return None;
                }
                metrics().api_requests.get_or_create(&GET_REPLICASET).inc();
                let api: Api<ReplicaSet> = Api::namespaced(inner.client.clone(), namespace);
                Some(match api.get_opt(replicaset).await {
                    Ok(Some(rs)) => controller_of(&rs.metadata)
                        .map(|(kind, name)| Workload { kind, name })
                        .unwrap_or_else(|| Workload {
                            kind: "ReplicaSet".into(),
                            name: replicaset.to_owned(),
                        }),
                    Ok(None) => plain(),
                    Err(kube::Error::Api(status)) if status.code == 403 => {
                        this.degrade(
                            &inner.replicasets_denied,
                            "get replicasets",
                            "workloads are guessed from ReplicaSet names",
                        );
                        plain()
                    }
                    Err(e) => {
                        metrics().enrich_failures.inc();
                        tracing::debug!(namespace, replicaset, error = %e, "replicaset lookup failed");
                        plain()
                    }
                })
            })
            .await?;
        inner.index.resolve_owner(namespace, pod, replicaset, owner.clone());
        Some(owner)
    }

    fn degrade(&self, flag: &AtomicBool, permission: &'static str, consequence: &str) {
        if !flag.swap(true, Ordering::Relaxed) {
            metrics()
                .permission_missing
                .get_or_create(&PermissionLabel { permission })
                .inc();
            tracing::warn!(
                permission,
                consequence,
                "optional permission missing; `podwarn-agent check` shows the RBAC rule to add"
            );
        }
    }
}

const GET_POD: RequestLabel = RequestLabel { request: "get pod" };
const GET_REPLICASET: RequestLabel = RequestLabel {
    request: "get replicaset",
};

/// Enriches candidates from `candidates` into `events` until `candidates`
/// closes and every lookup has completed (or `events` closes). Warnings the
/// agent can complete from what it holds go straight through; the others
/// wait for their lookups concurrently (at most [`LOOKUPS_IN_FLIGHT`]), so
/// the order of warnings may change, which the collector's dedup absorbs.
pub async fn run(enricher: Enricher, mut candidates: mpsc::Receiver<Candidate>, events: mpsc::Sender<WarningEvent>) {
    let mut lookups = FuturesUnordered::new();
    let mut open = true;
    while open || !lookups.is_empty() {
        let done = tokio::select! {
            biased;
            Some(done) = lookups.next(), if !lookups.is_empty() => done,
            candidate = candidates.recv(), if open && lookups.len() < LOOKUPS_IN_FLIGHT => match candidate {
                None => {
                    open = false;
                    None
                }
                Some(candidate) => match enricher.enrich_now(candidate) {
                    Ok(done) => done,
                    Err(pending) => {
                        let enricher = enricher.clone();
                        lookups.push(async move { enricher.complete(pending).await });
                        None
                    }
                },
            },
        };
        // Closed only when the shipper is gone, i.e. shutting down.
        if let Some(event) = done
            && events.send(event).await.is_err()
        {
            return;
        }
    }
}

/// The controller owner (kind, name) of an object.
fn controller_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<(String, String)> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| (o.kind.clone(), o.name.clone()))
}

/// The Deployment a ReplicaSet name implies (`api-7d9f8b6c5` → `api`), used
/// only when the ReplicaSet cannot be read.
fn guess_deployment(rs_name: &str) -> Option<Workload> {
    let (base, hash) = rs_name.rsplit_once('-')?;
    let looks_generated = (6..=10).contains(&hash.len()) && hash.bytes().all(|b| b.is_ascii_alphanumeric());
    (looks_generated && !base.is_empty()).then(|| Workload {
        kind: "Deployment".into(),
        name: base.to_owned(),
    })
}

/// Cuts every field to the protocol's limits (on character boundaries), so a
/// huge message never makes the collector refuse a whole batch.
pub fn truncate_fields(mut event: WarningEvent) -> WarningEvent {
    fn cut(s: &mut String, max: usize) {
        if s.len() > max {
            let mut end = max;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
        }
    }
    fn cut_tail(s: &mut String, max: usize) {
        // Logs keep their end: the last lines are the ones that explain a crash.
        if s.len() > max {
            let mut start = s.len() - max;
            while !s.is_char_boundary(start) {
                start += 1;
            }
            s.drain(..start);
        }
    }
    cut(&mut event.message, limits::MESSAGE);
    cut(&mut event.reason, limits::REASON);
    if let Some(logs) = event.logs.as_mut() {
        cut_tail(logs, limits::LOGS);
    }
    if let Some(source) = event.source.as_mut() {
        cut(source, limits::REASON);
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{EventObject, PodObject};

    /// An enricher whose client points nowhere: these tests make no request.
    fn enricher(node: Option<&str>, log_lines: u32) -> (Enricher, Arc<PodIndex>) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = kube::Config::new("https://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let index = Arc::new(PodIndex::new(1));
        let enricher = Enricher::new(
            client,
            Arc::new(RateLimiter::new(1.0, 1)),
            index.clone(),
            EnrichConfig {
                log_lines,
                log_max_bytes: 1024,
                node: node.map(str::to_owned),
                ships_unscheduled: Arc::new(AtomicBool::new(false)),
            },
        );
        (enricher, index)
    }

    fn watched(index: &PodIndex, owner_kind: &str, restarts: i32) {
        let pod: PodObject = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "api-0", "namespace": "shop", "uid": "pod-uid",
                         "ownerReferences": [{"kind": owner_kind, "name": "api", "controller": true}]},
            "spec": {"nodeName": "node-a"},
            "status": {"containerStatuses": [{"name": "app", "restartCount": restarts,
                "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}
        }))
        .unwrap();
        let generation = index.relist_started();
        index.apply(&pod, generation);
        index.relist_done(None, generation, true);
    }

    fn back_off() -> Candidate {
        let event: EventObject = serde_json::from_value(serde_json::json!({
            "metadata": {"uid": "ev-1", "namespace": "shop"},
            "involvedObject": {"kind": "Pod", "name": "api-0", "namespace": "shop", "fieldPath": "spec.containers{app}"},
            "type": "Warning", "reason": "BackOff", "message": "Back-off restarting failed container app",
            "count": 3, "firstTimestamp": "2026-11-22T10:00:00Z", "lastTimestamp": "2026-11-22T10:05:00Z"
        }))
        .unwrap();
        crate::watch::candidate(event).unwrap()
    }

    #[tokio::test]
    async fn warnings_of_indexed_pods_are_completed_without_a_request() {
        let (enricher, index) = enricher(None, 0);
        watched(&index, "StatefulSet", 2);
        let event = enricher.enrich_now(back_off()).expect("no lookup needed").unwrap();
        assert_eq!(event.node.as_deref(), Some("node-a"));
        assert_eq!(event.pod_uid.as_deref(), Some("pod-uid"));
        let workload = event.workload.unwrap();
        assert_eq!((workload.kind.as_str(), workload.name.as_str()), ("StatefulSet", "api"));
        // The container's last termination decides the class of a BackOff.
        assert_eq!(event.incident_type, IncidentType::OomKilled);
        assert!(event.logs.is_none(), "logs are off");
    }

    #[tokio::test]
    async fn an_unknown_pod_an_unresolved_replicaset_or_an_unfetched_log_wait_for_a_lookup() {
        let (enricher, index) = enricher(None, 50);
        assert!(enricher.enrich_now(back_off()).is_err(), "pod not in the index");
        watched(&index, "ReplicaSet", 2);
        assert!(
            enricher.enrich_now(back_off()).is_err(),
            "ReplicaSet owner not resolved"
        );
        let deployment = Workload {
            kind: "Deployment".into(),
            name: "api".into(),
        };
        index.resolve_owner("shop", "api-0", "api", deployment.clone());
        assert!(enricher.enrich_now(back_off()).is_err(), "crash log not fetched yet");
        // Once this warning carried the log of this container instance, its updates go without.
        assert!(!enricher.inner.logs.already_attached("ev-1", "api-0", "app", 2, true));
        let event = enricher.enrich_now(back_off()).expect("nothing to look up").unwrap();
        assert_eq!(event.workload, Some(deployment));
        assert!(event.logs.is_none());
    }

    #[tokio::test]
    async fn daemonset_agents_skip_other_nodes_pods_without_a_lookup() {
        let (enricher, index) = enricher(Some("node-b"), 0);
        let mut kubelet = back_off();
        kubelet.event.node = Some("node-a".into());
        assert!(matches!(enricher.enrich_now(kubelet), Ok(None)));
        watched(&index, "StatefulSet", 0);
        assert!(
            matches!(enricher.enrich_now(back_off()), Ok(None)),
            "the index says node-a"
        );
    }

    #[test]
    fn owner_guesses_follow_kubernetes_naming() {
        assert_eq!(
            guess_deployment("api-7d9f8b6c5"),
            Some(Workload {
                kind: "Deployment".into(),
                name: "api".into()
            })
        );
        assert_eq!(guess_deployment("api"), None);
        assert_eq!(
            crate::pods::job_owner("backup-28930140"),
            Workload {
                kind: "CronJob".into(),
                name: "backup".into()
            }
        );
        assert_eq!(
            crate::pods::job_owner("migrate-db"),
            Workload {
                kind: "Job".into(),
                name: "migrate-db".into()
            }
        );
    }

    #[test]
    fn truncation_respects_limits_and_char_boundaries_and_keeps_log_tails() {
        let event = WarningEvent {
            uid: "u".into(),
            namespace: "n".into(),
            pod: "p".into(),
            pod_uid: None,
            node: None,
            workload: None,
            container: None,
            reason: "R".into(),
            message: "é".repeat(limits::MESSAGE),
            incident_type: IncidentType::Other,
            severity: podwarn_shared::Severity::Low,
            count: 1,
            first_seen: jiff::Timestamp::UNIX_EPOCH,
            last_seen: jiff::Timestamp::UNIX_EPOCH,
            source: None,
            logs: Some(format!("{}THE END", "x".repeat(limits::LOGS))),
        };
        let cut = truncate_fields(event);
        assert!(cut.message.len() <= limits::MESSAGE);
        assert!(cut.logs.as_ref().unwrap().ends_with("THE END"));
        assert!(cut.validate().is_ok());
    }
}
