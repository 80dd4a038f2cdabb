//! The two Kubernetes objects the agent watches, cut down to the fields it
//! reads. A watch decodes every object the API server sends, most of them
//! repeats of an Event whose `count` grew or Pods whose status moved; the full
//! `k8s-openapi` types would allocate every label, annotation, volume, env var
//! and `managedFields` entry of each one only to drop them. These types let
//! serde skip all of that, so a watched object costs a handful of strings.
//!
//! Both are ordinary [`kube::Resource`]s (core/v1 `events` and `pods`), so
//! `kube::runtime::watcher` lists, watches, relists and tracks
//! `resourceVersion` for them exactly as for the full types.

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use serde::Deserialize;
use std::borrow::Cow;

/// `metadata` as the agent reads it; everything else (labels, annotations,
/// `managedFields` …) is skipped while decoding.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    creation_timestamp: Option<Time>,
    owner_references: Option<Vec<WireOwner>>,
}

#[derive(Deserialize)]
struct WireOwner {
    kind: String,
    name: String,
    controller: Option<bool>,
}

impl WireMeta {
    /// The `ObjectMeta` kube-runtime needs (name, namespace, uid,
    /// resourceVersion), and the controller owner (kind, name).
    fn split(self) -> (ObjectMeta, Option<(String, String)>) {
        let controller = self
            .owner_references
            .into_iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| (o.kind, o.name));
        let meta = ObjectMeta {
            name: self.name,
            namespace: self.namespace,
            uid: self.uid,
            resource_version: self.resource_version,
            creation_timestamp: self.creation_timestamp,
            ..ObjectMeta::default()
        };
        (meta, controller)
    }
}

/// A core/v1 Event, as much of it as a Pod warning needs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(from = "WireEvent")]
pub struct EventObject {
    /// Name, namespace, uid, resourceVersion, creation time.
    pub metadata: ObjectMeta,
    /// `type`: `Warning` or `Normal`.
    pub type_: Option<String>,
    /// What the event is about.
    pub involved_object: InvolvedObject,
    /// Short machine-readable reason (`BackOff`, `FailedScheduling` …).
    pub reason: Option<String>,
    /// Human-readable message.
    pub message: Option<String>,
    /// Occurrences, for legacy recorders.
    pub count: Option<i32>,
    /// First occurrence, for legacy recorders.
    pub first_timestamp: Option<Time>,
    /// Last occurrence, for legacy recorders.
    pub last_timestamp: Option<Time>,
    /// First occurrence, for events.k8s.io recorders.
    pub event_time: Option<MicroTime>,
    /// Occurrences and last time, for events.k8s.io recorders.
    pub series: Option<EventSeries>,
    /// `source.component`.
    pub source_component: Option<String>,
    /// `source.host`: the node of kubelet events.
    pub source_host: Option<String>,
    /// `reportingComponent`, for events.k8s.io recorders.
    pub reporting_component: Option<String>,
}

/// `involvedObject` of an Event.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvolvedObject {
    /// `Pod` for the events the agent keeps.
    pub kind: Option<String>,
    /// Name of the object.
    pub name: Option<String>,
    /// Namespace of the object.
    pub namespace: Option<String>,
    /// Uid of the object.
    pub uid: Option<String>,
    /// `spec.containers{NAME}` when the event is about one container.
    pub field_path: Option<String>,
}

/// `series` of an Event.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventSeries {
    /// Occurrences.
    pub count: Option<i32>,
    /// Last occurrence.
    pub last_observed_time: Option<MicroTime>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireEvent {
    metadata: WireMeta,
    #[serde(rename = "type")]
    type_: Option<String>,
    #[serde(default)]
    involved_object: InvolvedObject,
    reason: Option<String>,
    message: Option<String>,
    count: Option<i32>,
    first_timestamp: Option<Time>,
    last_timestamp: Option<Time>,
    event_time: Option<MicroTime>,
    series: Option<EventSeries>,
    source: Option<WireSource>,
    reporting_component: Option<String>,
}

#[derive(Deserialize)]
struct WireSource {
    component: Option<String>,
    host: Option<String>,
}

impl From<WireEvent> for EventObject {
    fn from(w: WireEvent) -> Self {
        let (metadata, _) = w.metadata.split();
        let (source_component, source_host) = w.source.map_or((None, None), |s| (s.component, s.host));
        Self {
            metadata,
            type_: w.type_,
            involved_object: w.involved_object,
            reason: w.reason,
            message: w.message,
            count: w.count,
            first_timestamp: w.first_timestamp,
            last_timestamp: w.last_timestamp,
            event_time: w.event_time,
            series: w.series,
            source_component,
            source_host,
            reporting_component: w.reporting_component,
        }
    }
}

/// A core/v1 Pod, as much of it as enrichment and pod-status warnings need.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(from = "WirePod")]
pub struct PodObject {
    /// Name, namespace, uid, resourceVersion.
    pub metadata: ObjectMeta,
    /// The controller owner (kind, name), e.g. (`ReplicaSet`, `api-7d9f8b6c5`).
    pub controller: Option<(String, String)>,
    /// `spec.nodeName`, once scheduled.
    pub node_name: Option<String>,
    /// Init containers first, then containers.
    pub containers: Vec<ContainerStatus>,
}

/// A container's status.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    /// Container name.
    pub name: String,
    /// Restarts so far.
    #[serde(default)]
    pub restart_count: i32,
    /// The current state.
    pub state: Option<ContainerState>,
    /// The previous instance's state.
    pub last_state: Option<ContainerState>,
}

/// A container state: only termination matters here.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ContainerState {
    /// Set when the container (instance) has terminated.
    pub terminated: Option<Terminated>,
}

/// How a container instance ended.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Terminated {
    /// Exit code.
    #[serde(default)]
    pub exit_code: i32,
    /// `OOMKilled`, `Error`, `Completed` …
    pub reason: Option<String>,
    /// The signal that ended it.
    pub signal: Option<i32>,
    /// `containerd://…`: names the instance.
    #[serde(rename = "containerID")]
    pub container_id: Option<String>,
    /// Start of the instance.
    pub started_at: Option<Time>,
    /// End of the instance.
    pub finished_at: Option<Time>,
}

#[derive(Deserialize)]
struct WirePod {
    metadata: WireMeta,
    spec: Option<WireSpec>,
    status: Option<WireStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireSpec {
    node_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireStatus {
    init_container_statuses: Option<Vec<ContainerStatus>>,
    container_statuses: Option<Vec<ContainerStatus>>,
}

impl From<WirePod> for PodObject {
    fn from(w: WirePod) -> Self {
        let (metadata, controller) = w.metadata.split();
        let containers = match w.status {
            Some(s) => {
                let mut all = s.init_container_statuses.unwrap_or_default();
                all.extend(s.container_statuses.unwrap_or_default());
                all
            }
            None => Vec::new(),
        };
        Self {
            metadata,
            controller,
            node_name: w.spec.and_then(|s| s.node_name).filter(|n| !n.is_empty()),
            containers,
        }
    }
}

/// A core/v1 resource under `/api/v1/…/{plural}`, namespaced.
macro_rules! core_v1 {
    ($ty:ty, $kind:literal, $plural:literal) => {
        impl kube::Resource for $ty {
            type DynamicType = ();
            type Scope = NamespaceResourceScope;

            fn kind(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($kind)
            }
            fn group(_: &()) -> Cow<'_, str> {
                Cow::Borrowed("")
            }
            fn version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed("v1")
            }
            fn plural(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($plural)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

core_v1!(EventObject, "Event", "events");
core_v1!(PodObject, "Pod", "pods");

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    #[test]
    fn a_full_pod_decodes_to_the_fields_the_agent_uses() {
        let pod: PodObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "api-7d9f8b6c5-x2x9z", "namespace": "shop", "uid": "pod-1", "resourceVersion": "42",
                "labels": {"app": "api"}, "annotations": {"a": "b"},
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Node", "name": "n", "uid": "u0"},
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-7d9f8b6c5", "uid": "u1", "controller": true}
                ],
                "managedFields": [{"manager": "kubelet", "operation": "Update", "fieldsType": "FieldsV1",
                                   "fieldsV1": {"f:status": {"f:conditions": {}}}}]
            },
            "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "i", "env": [{"name": "X", "value": "1"}]}]},
            "status": {
                "phase": "Running",
                "initContainerStatuses": [{"name": "init", "restartCount": 0, "ready": true, "image": "i", "imageID": ""}],
                "containerStatuses": [{"name": "app", "restartCount": 3, "ready": false, "image": "i", "imageID": "",
                    "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "containerID": "containerd://abc",
                                                 "finishedAt": "2026-11-22T10:00:05Z"}}}]
            }
        }))
        .unwrap();
        assert_eq!(pod.meta().resource_version.as_deref(), Some("42"));
        assert_eq!(pod.meta().uid.as_deref(), Some("pod-1"));
        assert_eq!(pod.controller, Some(("ReplicaSet".into(), "api-7d9f8b6c5".into())));
        assert_eq!(pod.node_name.as_deref(), Some("node-a"));
        let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["init", "app"]);
        let last = pod.containers[1]
            .last_state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap();
        assert_eq!((last.exit_code, last.reason.as_deref()), (137, Some("OOMKilled")));
        assert_eq!(last.container_id.as_deref(), Some("containerd://abc"));
        assert_eq!(PodObject::url_path(&(), Some("shop")), "/api/v1/namespaces/shop/pods");
        assert_eq!(EventObject::url_path(&(), None), "/api/v1/events");
    }

    #[test]
    fn an_event_keeps_source_and_series() {
        let ev: EventObject = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a.1", "namespace": "shop", "uid": "u1", "resourceVersion": "7"},
            "involvedObject": {"kind": "Pod", "name": "api-1", "namespace": "shop", "fieldPath": "spec.containers{app}"},
            "type": "Warning", "reason": "FailedScheduling", "message": "m",
            "eventTime": "2026-11-22T10:00:00.000000Z", "reportingComponent": "default-scheduler",
            "series": {"count": 12, "lastObservedTime": "2026-11-22T10:30:00.000000Z"},
            "source": {"component": "kubelet", "host": "node-a"}
        }))
        .unwrap();
        assert_eq!(ev.type_.as_deref(), Some("Warning"));
        assert_eq!(ev.series.as_ref().and_then(|s| s.count), Some(12));
        assert_eq!(ev.source_host.as_deref(), Some("node-a"));
        assert_eq!(ev.meta().resource_version.as_deref(), Some("7"));
    }
}
