//! [`ClusterHandle`]: how tests script the simulated cluster.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use serde::{Deserialize, Serialize};

use super::events::{self, EmitSpec, EventRef, Style};
use super::pods::{self, PodRef, Termination};
use super::record::EmittedRecord;
use super::scenario::{self, Scenario, ScenarioStats};
use super::store::{Kind, State};
use super::workloads::{self, Workload};
use super::{Shared, discovery};

/// Errors from scripting the cluster.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// No such pod.
    #[error("pod {namespace}/{name} not found")]
    PodNotFound {
        /// Namespace looked in.
        namespace: String,
        /// Pod name.
        name: String,
    },
    /// The pod has no container of that name.
    #[error("pod {pod} has no container {container}")]
    ContainerNotFound {
        /// Pod name.
        pod: String,
        /// Container asked for.
        container: String,
    },
    /// No Event with that uid (never emitted, deleted or expired).
    #[error("event {0} not found")]
    EventNotFound(String),
    /// The object already exists with a different shape, or the store refused it.
    #[error("cannot create {0}")]
    Conflict(String),
}

/// `Result` with [`SimError`].
pub type Result<T, E = SimError> = std::result::Result<T, E>;

/// A Pod event to emit, for when the shortcuts are not enough.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodEvent {
    /// `Warning` (true) or `Normal`.
    pub warning: bool,
    /// Reason, e.g. `BackOff`.
    pub reason: String,
    /// Message.
    pub message: String,
    /// Container the event is about (`involvedObject.fieldPath: spec.containers{c}`).
    #[serde(default)]
    pub container: Option<String>,
    /// Reporting component; `kubelet` when None (`default-scheduler` for unscheduled pods).
    #[serde(default)]
    pub component: Option<String>,
    /// New-style (events.k8s.io recorder): `eventTime` + `series`, no legacy timestamps.
    #[serde(default)]
    pub series: bool,
}

impl PodEvent {
    /// A kubelet Warning about `container`.
    pub fn warning(reason: &str, message: &str, container: Option<&str>) -> Self {
        Self {
            warning: true,
            reason: reason.to_string(),
            message: message.to_string(),
            container: container.map(str::to_string),
            component: None,
            series: false,
        }
    }
}

pub(crate) fn emit_for_pod(state: &mut State, ns: &str, name: &str, ev: &PodEvent) -> Result<EventRef> {
    let pod = state.get::<Pod>(ns, name).ok_or_else(|| SimError::PodNotFound {
        namespace: ns.to_string(),
        name: name.to_string(),
    })?;
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let component = ev
        .component
        .clone()
        .unwrap_or_else(|| if node.is_some() { "kubelet" } else { "default-scheduler" }.to_string());
    let field_path = ev.container.as_ref().map(|c| format!("spec.containers{{{c}}}"));
    // Fast path for repeats: the correlator finds the Event without building a new one.
    let corr = events::correlation_key(&[
        ns,
        "Pod",
        name,
        field_path.as_deref().unwrap_or(""),
        if ev.warning { "Warning" } else { "Normal" },
        &ev.reason,
        &ev.message,
        if ev.series { "series" } else { "legacy" },
        &component,
    ]);
    if let Some(r) = events::repeat_correlated(state, corr) {
        return Ok(r);
    }
    let pod = state.get::<Pod>(ns, name).expect("looked up above");
    let host = if component == "kubelet" { node } else { None };
    let spec = EmitSpec {
        involved: ObjectReference {
            kind: Some("Pod".to_string()),
            api_version: Some("v1".to_string()),
            namespace: Some(ns.to_string()),
            name: Some(name.to_string()),
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            field_path,
        },
        event_namespace: ns.to_string(),
        warning: ev.warning,
        reason: ev.reason.clone(),
        message: ev.message.clone(),
        component,
        host,
        style: if ev.series { Style::Series } else { Style::Legacy },
    };
    Ok(events::emit(state, spec))
}

pub(crate) fn emit_for_object(
    state: &mut State,
    kind: &str,
    namespace: &str,
    name: &str,
    warning: bool,
    reason: &str,
    message: &str,
) -> EventRef {
    let info = discovery::RESOURCES.iter().find(|r| r.kind_name == kind);
    let obj_ns = if info.is_some_and(|i| !i.namespaced) {
        ""
    } else {
        namespace
    };
    let (uid, rv) = info
        .and_then(|i| state.get_snapshot(i.kind, obj_ns, name))
        .and_then(|snap| serde_json::from_slice::<serde_json::Value>(&snap.json).ok())
        .map(|v| {
            let s = |k: &str| v["metadata"][k].as_str().map(str::to_string);
            (s("uid"), s("resourceVersion"))
        })
        .unwrap_or((None, None));
    let component = match kind {
        "Node" => "kubelet",
        "Deployment" => "deployment-controller",
        "ReplicaSet" => "replicaset-controller",
        "StatefulSet" => "statefulset-controller",
        "DaemonSet" => "daemonset-controller",
        "Job" => "job-controller",
        "CronJob" => "cronjob-controller",
        _ => "podwarn-sim",
    };
    let spec = EmitSpec {
        involved: ObjectReference {
            kind: Some(kind.to_string()),
            api_version: info.map(|i| i.api_version()),
            namespace: (!obj_ns.is_empty()).then(|| obj_ns.to_string()),
            name: Some(name.to_string()),
            uid: uid.or_else(|| (kind == "Node").then(|| name.to_string())),
            resource_version: rv,
            field_path: None,
        },
        // Events about cluster-scoped objects live in `default`, as the recorders put them.
        event_namespace: if namespace.is_empty() { "default" } else { namespace }.to_string(),
        warning,
        reason: reason.to_string(),
        message: message.to_string(),
        component: component.to_string(),
        host: (kind == "Node").then(|| name.to_string()),
        style: Style::Legacy,
    };
    events::emit(state, spec)
}

/// Scripts the simulated cluster. Cheap to clone.
#[derive(Clone)]
pub struct ClusterHandle(pub(crate) Arc<Shared>);

impl std::fmt::Debug for ClusterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterHandle").finish_non_exhaustive()
    }
}

impl ClusterHandle {
    fn write<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        self.0.store.write(f)
    }

    /// Creates a namespace (no-op if it exists).
    pub fn create_namespace(&self, name: &str) {
        self.write(|s| workloads::ensure_namespace(s, name));
    }

    /// Creates a node (no-op if it exists).
    pub fn create_node(&self, name: &str) {
        self.write(|s| workloads::ensure_node(s, name));
    }

    /// Creates a workload with its owners and pods; returns the pods.
    pub fn create(&self, workload: &Workload) -> Result<Vec<PodRef>> {
        self.write(|s| workloads::create(s, workload))
            .map_err(|e| SimError::Conflict(format!("{}/{}: {e:?}", workload.namespace, workload.name)))
    }

    /// Looks a pod up.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<PodRef> {
        self.0
            .store
            .read(|s| s.get::<Pod>(namespace, name).map(PodRef::from_pod))
    }

    /// Every pod, in namespace/name order.
    pub fn pods(&self) -> Vec<PodRef> {
        self.0.store.read(|s| s.iter::<Pod>().map(PodRef::from_pod).collect())
    }

    /// Emits (or repeats, if an identical one exists) a kubelet Warning about the pod.
    pub fn emit_warning(&self, pod: &PodRef, reason: &str, message: &str, container: Option<&str>) -> Result<EventRef> {
        self.emit(pod, &PodEvent::warning(reason, message, container))
    }

    /// Emits (or repeats) a kubelet Normal event about the pod.
    pub fn emit_normal(&self, pod: &PodRef, reason: &str, message: &str, container: Option<&str>) -> Result<EventRef> {
        let ev = PodEvent {
            warning: false,
            ..PodEvent::warning(reason, message, container)
        };
        self.emit(pod, &ev)
    }

    /// Emits a new-style Warning as the scheduler's events.k8s.io recorder writes it through
    /// core/v1: `eventTime` set, `series` on repeats, no `count`/`firstTimestamp`/`lastTimestamp`.
    pub fn emit_series_warning(&self, pod: &PodRef, reason: &str, message: &str) -> Result<EventRef> {
        let ev = PodEvent {
            component: Some("default-scheduler".to_string()),
            series: true,
            ..PodEvent::warning(reason, message, None)
        };
        self.emit(pod, &ev)
    }

    /// Emits any Pod event.
    pub fn emit(&self, pod: &PodRef, ev: &PodEvent) -> Result<EventRef> {
        self.write(|s| emit_for_pod(s, &pod.namespace, &pod.name, ev))
    }

    /// Emits a Warning about a non-Pod object (`Node`, `Deployment`, `ReplicaSet`, ...).
    /// `namespace` is ignored for cluster-scoped kinds (their events go to `default`).
    pub fn emit_object_warning(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        reason: &str,
        message: &str,
    ) -> EventRef {
        self.write(|s| emit_for_object(s, kind, namespace, name, true, reason, message))
    }

    /// Repeats an Event: same uid, count + 1 (or series.count + 1), timestamps move.
    pub fn repeat_event(&self, uid: &str) -> Result<EventRef> {
        self.write(|s| events::repeat(s, uid))
            .ok_or_else(|| SimError::EventNotFound(uid.to_string()))
    }

    /// Deletes an Event (watchers get DELETED).
    pub fn delete_event(&self, uid: &str) -> Result<()> {
        self.write(|s| events::delete_uid(s, uid))
            .then_some(())
            .ok_or_else(|| SimError::EventNotFound(uid.to_string()))
    }

    /// Deletes every Event now, as if their TTL ran out; returns how many.
    pub fn expire_events_now(&self) -> usize {
        self.write(events::expire_all)
    }

    /// Changes the Event TTL (measured from each Event's last update).
    pub fn set_event_ttl(&self, ttl: Duration) {
        *self.0.event_ttl.lock().unwrap_or_else(|e| e.into_inner()) = ttl;
    }

    /// Restarts a container after OOMKilled or an error exit: restartCount + 1,
    /// lastState.terminated set, logs rotated, and no Event (like a real kubelet).
    /// Returns the new restartCount.
    pub fn restart_container(&self, pod: &PodRef, container: &str, how: Termination) -> Result<u32> {
        self.write(|s| pods::restart(s, &pod.namespace, &pod.name, container, &how))
            .ok_or_else(|| self.missing(pod, container))
    }

    /// Puts a container into `waiting` with `reason` (CrashLoopBackOff, ImagePullBackOff...).
    pub fn set_container_waiting(&self, pod: &PodRef, container: &str, reason: &str, message: &str) -> Result<()> {
        self.write(|s| pods::set_waiting(s, &pod.namespace, &pod.name, container, reason, message))
            .then_some(())
            .ok_or_else(|| self.missing(pod, container))
    }

    fn missing(&self, pod: &PodRef, container: &str) -> SimError {
        if self.pod(&pod.namespace, &pod.name).is_none() {
            SimError::PodNotFound {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
            }
        } else {
            SimError::ContainerNotFound {
                pod: pod.name.clone(),
                container: container.to_string(),
            }
        }
    }

    /// Sets the pod's `status.phase` (with an optional reason/message such as `Evicted`).
    pub fn set_pod_phase(&self, pod: &PodRef, phase: &str, reason: Option<&str>, message: Option<&str>) -> Result<()> {
        self.write(|s| pods::set_phase(s, &pod.namespace, &pod.name, phase, reason, message))
            .then_some(())
            .ok_or_else(|| SimError::PodNotFound {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
            })
    }

    /// Sets a container's current log and, optionally, the previous run's log.
    pub fn set_logs(&self, pod: &PodRef, container: &str, current: &str, previous: Option<&str>) {
        self.write(|s| {
            s.logs.set(
                &pod.namespace,
                &pod.name,
                container,
                Some(current.to_string()),
                previous.map(str::to_string),
            )
        });
    }

    /// Deletes a pod (watchers get DELETED). Returns whether it existed.
    pub fn delete_pod(&self, pod: &PodRef) -> bool {
        self.write(|s| s.delete::<Pod>(&pod.namespace, &pod.name).is_some())
    }

    /// Every Event ever emitted with its latest count (expired ones included).
    pub fn emitted(&self) -> Vec<EmittedRecord> {
        self.0.store.read(|s| s.emitted.all())
    }

    /// Warning occurrences emitted so far (each count increment counts once).
    pub fn warning_occurrences(&self) -> u64 {
        self.0.store.read(|s| s.emitted.warning_occurrences())
    }

    /// Number of Events currently stored.
    pub fn stored_events(&self) -> usize {
        self.0
            .store
            .read(|s| s.iter::<k8s_openapi::api::core::v1::Event>().count())
    }

    /// The latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.0.store.read(|s| s.current_rv())
    }

    /// Sets up `scenario`'s cluster and starts its generator at `rate` warning events/s
    /// (the scenario's default when None), replacing any running one.
    pub fn start_scenario(&self, scenario: Scenario, seed: u64, rate: Option<f64>) -> Result<()> {
        self.stop_scenario();
        let run = scenario::start(self.0.clone(), scenario, seed, rate)?;
        *self.0.scenario.lock().unwrap_or_else(|e| e.into_inner()) = Some(run);
        Ok(())
    }

    /// Plays `scenario` for `virtual_time` without waiting (10 ms virtual ticks, the same
    /// pacing and batching as the live generator) and returns the events emitted per tick.
    /// Reproducible for a given seed; used to measure emission capacity without timing.
    pub fn drive_scenario(&self, scenario: Scenario, seed: u64, rate: f64, virtual_time: Duration) -> Result<Vec<u64>> {
        scenario::drive(&self.0, scenario, seed, rate, virtual_time)
    }

    /// Stops the running scenario, if any. Once this returns, nothing more is emitted:
    /// [`ClusterHandle::emitted`] read after it is the final record.
    pub fn stop_scenario(&self) {
        let run = self.0.scenario.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(run) = run {
            run.stop();
        }
    }

    /// Progress of the running scenario.
    pub fn scenario_stats(&self) -> Option<ScenarioStats> {
        self.0
            .scenario
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|r| r.stats())
    }

    pub(crate) fn kind_count(&self, kind: Kind) -> usize {
        self.0
            .store
            .read(|s| s.snapshot_at(kind, None, None, None).map_or(0, |v| v.len()))
    }
}
