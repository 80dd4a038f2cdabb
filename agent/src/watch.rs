//! Watching core/v1 Events: server-side filtered to Pod warnings, one watch
//! per selected namespace (or one for all), through kube-runtime's watcher
//! (relist on 410, reconnect with backoff), plus a guard against watches
//! that go silent without a 410 (kubernetes/kubernetes#104171).

use crate::enrich::Candidate;
use crate::ops::{Readiness, WatchLabel, metrics};
use crate::resources::EventObject;
use crate::ship::OpenBatch;
use futures::StreamExt;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use podwarn_shared::{IncidentType, Severity, WarningEvent};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use xxhash_rust::xxh3::xxh3_64;

/// The server-side filter: only Warning events about Pods cross the wire.
pub const EVENT_FIELD_SELECTOR: &str = "type=Warning,involvedObject.kind=Pod";

/// Which namespaces the agent covers.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Watch only these; empty means all.
    pub namespaces: Vec<String>,
    /// Never ship these.
    pub excluded: HashSet<String>,
}

impl Scope {
    /// Whether warnings of `namespace` are shipped.
    pub fn covers(&self, namespace: &str) -> bool {
        !self.excluded.contains(namespace)
            && (self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace))
    }

    /// One API per watch: each selected namespace, or all namespaces.
    pub fn apis<K>(&self, client: &kube::Client) -> Vec<(String, Api<K>)>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        if self.namespaces.is_empty() {
            vec![("*".to_owned(), Api::all(client.clone()))]
        } else {
            self.namespaces
                .iter()
                .map(|ns| (ns.clone(), Api::namespaced(client.clone(), ns)))
                .collect()
        }
    }
}

/// Remembers the highest count handed on per event uid, so a relist does not
/// ship again what this process already shipped or spooled. Bounded: when
/// full it forgets everything, which costs at most one round of duplicates
/// (the collector absorbs them).
#[derive(Debug)]
pub struct Seen {
    counts: Mutex<HashMap<u64, u32>>,
    capacity: usize,
}

impl Seen {
    /// An empty cache of at most `capacity` uids.
    pub fn new(capacity: usize) -> Self {
        Self {
            counts: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// Whether (uid, count) is new; records it if so.
    pub fn is_new(&self, uid: &str, count: u32) -> bool {
        let key = xxh3_64(uid.as_bytes());
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        match counts.get(&key) {
            Some(seen) if *seen >= count => false,
            _ => {
                if counts.len() >= self.capacity {
                    counts.clear();
                }
                counts.insert(key, count);
                true
            }
        }
    }
}

/// Turns a core/v1 Event into a candidate warning, or `None` when it is not
/// a Pod warning (the server filters, this is the belt to those braces).
///
/// Occurrences are `count` for legacy recorders and `series.count` for
/// events.k8s.io recorders (the scheduler), whose legacy timestamps are empty:
/// times then come from `eventTime` and `series.lastObservedTime`.
pub fn candidate(ev: EventObject) -> Option<Candidate> {
    if ev.type_.as_deref() != Some("Warning") || ev.involved_object.kind.as_deref() != Some("Pod") {
        return None;
    }
    // The object is consumed: its strings move into the warning, uncopied.
    let EventObject {
        metadata,
        involved_object,
        reason,
        message,
        count,
        first_timestamp,
        last_timestamp,
        event_time,
        series,
        source_component,
        source_host,
        reporting_component,
        ..
    } = ev;
    let uid = metadata.uid?;
    let namespace = involved_object.namespace.or(metadata.namespace)?;
    let pod = involved_object.name?;
    let count = series
        .as_ref()
        .and_then(|s| s.count)
        .into_iter()
        .chain(count)
        .max()
        .unwrap_or(1)
        .max(1);
    let first = first_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| event_time.as_ref().map(|t| t.0))
        .or_else(|| metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or_else(jiff::Timestamp::now);
    let last = last_timestamp
        .as_ref()
        .map(|t| t.0)
        .into_iter()
        .chain(series.as_ref().and_then(|s| s.last_observed_time.as_ref()).map(|t| t.0))
        .chain(event_time.as_ref().map(|t| t.0))
        .max()
        .unwrap_or(first);
    let source = source_component
        .filter(|c| !c.is_empty())
        .or_else(|| reporting_component.filter(|c| !c.is_empty()));
    // Kubelet events name the node they come from; enrichment may know better.
    let node = source_host.filter(|h| !h.is_empty());
    Some(Candidate {
        event: WarningEvent {
            uid,
            namespace,
            pod,
            pod_uid: involved_object.uid,
            node,
            workload: None,
            container: involved_object.field_path.as_deref().and_then(container_of_field_path),
            reason: reason.unwrap_or_else(|| "Unknown".into()),
            message: message.unwrap_or_default(),
            incident_type: IncidentType::Other,
            severity: Severity::Medium,
            count: u32::try_from(count).unwrap_or(1),
            // As the API server has it: the collector keys dedup on it, so it
            // must not move when the Event is updated (last_seen may lag it
            // when clocks disagree; the collector never stores that inverted).
            first_seen: first,
            last_seen: last.max(first),
            source,
            logs: None,
        },
        pod: None,
        termination: None,
    })
}

/// `spec.containers{app}` → `app` (also `spec.initContainers{…}`, `spec.ephemeralContainers{…}`).
pub fn container_of_field_path(path: &str) -> Option<String> {
    let (_, rest) = path.split_once('{')?;
    let name = rest.strip_suffix('}')?;
    (!name.is_empty()).then(|| name.to_owned())
}

/// What every watch task shares.
#[derive(Debug, Clone)]
pub struct WatchContext {
    /// Which namespaces are shipped.
    pub scope: Arc<Scope>,
    /// What was already handed on.
    pub seen: Arc<Seen>,
    /// Where candidates go.
    pub out: mpsc::Sender<Candidate>,
    /// Silence after which a watch is relisted.
    pub stale_after: Duration,
    /// Stops the watches.
    pub shutdown: CancellationToken,
    /// Set once a watch has listed.
    pub readiness: Arc<Readiness>,
    /// The batch being gathered, which repeats of its warnings are folded into.
    pub open_batch: Arc<OpenBatch>,
}

/// What a watch hands to its handler.
#[derive(Debug)]
pub enum Change<K> {
    /// A (re)list starts: the objects until [`Change::Listed`] are the whole collection.
    Relist,
    /// An object was listed, added or modified.
    Applied(K),
    /// The (re)list is complete.
    Listed,
    /// An object was deleted.
    Deleted(K),
}

/// Drives kube-runtime watches of `api` with `config` until `ctx.shutdown`:
/// a watch that ends is restarted, one silent for `ctx.stale_after` is
/// restarted from a fresh list (kube-runtime consumes bookmarks itself, so
/// silence is the only signal of kubernetes/kubernetes#104171), and readiness
/// is set once a list completes. Each change goes to `handle`, which returns
/// false to stop (its receiver is gone).
///
/// The relist is cheap: [`Seen`] keeps it from shipping anything again.
pub async fn supervise<K, F, Fut>(
    api: Api<K>,
    config: watcher::Config,
    label: WatchLabel,
    what: &str,
    ctx: &WatchContext,
    mut handle: F,
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
    F: FnMut(Change<K>) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    loop {
        metrics().watch_restarts.get_or_create(&label).inc();
        let mut stream = watcher(api.clone(), config.clone()).default_backoff().boxed();
        loop {
            let next = tokio::select! {
                () = ctx.shutdown.cancelled() => return,
                next = tokio::time::timeout(ctx.stale_after, stream.next()) => next,
            };
            let change = match next {
                Err(_) => {
                    metrics().stale_watches.get_or_create(&label).inc();
                    tracing::warn!(watch = what, silent_for = ?ctx.stale_after, "watch silent; relisting");
                    break;
                }
                Ok(None) => break,
                // The watcher retries with backoff by itself; say why it is retrying.
                Ok(Some(Err(e))) => {
                    tracing::warn!(watch = what, error = %e, "watch error; retrying");
                    continue;
                }
                Ok(Some(Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)))) => {
                    Change::Applied(object)
                }
                Ok(Some(Ok(watcher::Event::Init))) => Change::Relist,
                Ok(Some(Ok(watcher::Event::InitDone))) => {
                    ctx.readiness.watching.store(true, Ordering::Relaxed);
                    Change::Listed
                }
                Ok(Some(Ok(watcher::Event::Delete(object)))) => Change::Deleted(object),
            };
            if !handle(change).await {
                return;
            }
        }
    }
}

/// Runs one Event watch (one namespace, or `*` for all), handing each new Pod
/// warning to `ctx.out`, or folding it into its copy in the open batch.
pub async fn watch_events(api: Api<EventObject>, label: String, ctx: WatchContext) {
    let config = watcher::Config::default().fields(EVENT_FIELD_SELECTOR);
    let what = format!("events in {label}");
    supervise(api, config, WatchLabel { watch: "events" }, &what, &ctx, |change| {
        let ctx = &ctx;
        async move {
            let Change::Applied(ev) = change else { return true };
            let Some(c) = candidate(ev) else { return true };
            if !ctx.scope.covers(&c.event.namespace) || !ctx.seen.is_new(&c.event.uid, c.event.count) {
                return true;
            }
            metrics().events_seen.inc();
            if ctx.open_batch.fold(&c.event) {
                return true;
            }
            ctx.out.send(c).await.is_ok()
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: serde_json::Value) -> EventObject {
        serde_json::from_value(json).unwrap()
    }

    /// `first_seen` is part of the collector's dedup key (invariant 4): it
    /// must stay as the API server has it even when a skewed clock put
    /// `lastTimestamp` before it, or an update would store a second record.
    #[test]
    fn first_seen_is_sent_as_the_api_server_has_it_even_after_last_seen() {
        let skewed = |count: u32, last: &str| {
            let ev = event(serde_json::json!({
                "metadata": {"name": "a.2", "namespace": "shop", "uid": "u9"},
                "involvedObject": {"kind": "Pod", "name": "api-1", "namespace": "shop"},
                "reason": "BackOff", "message": "Back-off", "type": "Warning",
                "count": count, "firstTimestamp": "2026-11-22T10:00:00Z", "lastTimestamp": last
            }));
            candidate(ev).unwrap().event
        };
        let before = skewed(1, "2026-11-22T09:59:58Z");
        let after = skewed(2, "2026-11-22T10:03:00Z");
        assert_eq!(before.first_seen, after.first_seen);
        assert_eq!(before.first_seen.to_string(), "2026-11-22T10:00:00Z");
        assert!(before.last_seen >= before.first_seen, "never sent inverted");
    }

    #[test]
    fn legacy_and_series_events_both_give_count_and_times() {
        let legacy = event(serde_json::json!({
            "metadata": {"name": "a.1", "namespace": "shop", "uid": "u1"},
            "involvedObject": {"kind": "Pod", "name": "api-1", "namespace": "shop", "uid": "p1", "fieldPath": "spec.containers{app}"},
            "reason": "BackOff", "message": "Back-off restarting failed container", "type": "Warning",
            "count": 7, "firstTimestamp": "2026-11-22T10:00:00Z", "lastTimestamp": "2026-11-22T10:05:00Z",
            "source": {"component": "kubelet", "host": "node-a"}
        }));
        let c = candidate(legacy).unwrap().event;
        assert_eq!(
            (c.count, c.container.as_deref(), c.node.as_deref()),
            (7, Some("app"), Some("node-a"))
        );
        assert_eq!(c.last_seen.to_string(), "2026-11-22T10:05:00Z");

        let series = event(serde_json::json!({
            "metadata": {"name": "b.1", "namespace": "shop", "uid": "u2"},
            "involvedObject": {"kind": "Pod", "name": "api-2", "namespace": "shop"},
            "reason": "FailedScheduling", "message": "0/3 nodes are available", "type": "Warning",
            "eventTime": "2026-11-22T10:00:00.000000Z", "reportingComponent": "default-scheduler",
            "series": {"count": 12, "lastObservedTime": "2026-11-22T10:30:00.000000Z"}
        }));
        let c = candidate(series).unwrap().event;
        assert_eq!(c.count, 12);
        assert_eq!(c.first_seen.to_string(), "2026-11-22T10:00:00Z");
        assert_eq!(c.last_seen.to_string(), "2026-11-22T10:30:00Z");
        assert_eq!(c.source.as_deref(), Some("default-scheduler"));

        let normal = event(serde_json::json!({
            "metadata": {"uid": "u3"}, "involvedObject": {"kind": "Pod", "name": "x", "namespace": "n"}, "type": "Normal"
        }));
        assert!(candidate(normal).is_none());
        let node = event(serde_json::json!({
            "metadata": {"uid": "u4"}, "involvedObject": {"kind": "Node", "name": "n1"}, "type": "Warning"
        }));
        assert!(candidate(node).is_none());
    }

    #[test]
    fn seen_passes_only_growth_and_stays_bounded() {
        let seen = Seen::new(3);
        assert!(seen.is_new("a", 1));
        assert!(!seen.is_new("a", 1));
        assert!(seen.is_new("a", 2));
        assert!(!seen.is_new("a", 1));
        for uid in ["b", "c", "d", "e"] {
            assert!(seen.is_new(uid, 1));
        }
        assert!(seen.counts.lock().unwrap().len() <= 3);
    }

    #[test]
    fn scope_keeps_every_listed_namespace_and_drops_excluded_ones() {
        let scope = Scope {
            namespaces: vec!["a".into(), "b".into()],
            excluded: HashSet::from(["b".to_owned()]),
        };
        assert!(scope.covers("a"));
        assert!(!scope.covers("b"));
        assert!(!scope.covers("c"));
        let all = Scope {
            namespaces: vec![],
            excluded: HashSet::from(["kube-system".to_owned()]),
        };
        assert!(all.covers("anything") && !all.covers("kube-system"));
    }
}
