//! Which k8s-openapi types the store holds and their selectable fields (the real server's
//! `GetAttrs`/`ToSelectableFields` per resource).

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod};

use super::store::{Kind, SimObject};

impl SimObject for Event {
    const STORE_KIND: Kind = Kind::Event;
    fn fields(&self) -> Vec<(&'static str, String)> {
        let io = &self.involved_object;
        let s = |v: &Option<String>| v.clone().unwrap_or_default();
        // The real strategy falls back to reportingController when source.component is empty.
        let mut source = self
            .source
            .as_ref()
            .and_then(|s| s.component.clone())
            .unwrap_or_default();
        if source.is_empty() {
            source = s(&self.reporting_component);
        }
        vec![
            ("involvedObject.kind", s(&io.kind)),
            ("involvedObject.namespace", s(&io.namespace)),
            ("involvedObject.name", s(&io.name)),
            ("involvedObject.uid", s(&io.uid)),
            ("involvedObject.apiVersion", s(&io.api_version)),
            ("involvedObject.resourceVersion", s(&io.resource_version)),
            ("involvedObject.fieldPath", s(&io.field_path)),
            ("reason", s(&self.reason)),
            ("reportingComponent", s(&self.reporting_component)),
            ("source", source),
            ("type", s(&self.type_)),
        ]
    }
}

impl SimObject for Pod {
    const STORE_KIND: Kind = Kind::Pod;
    fn fields(&self) -> Vec<(&'static str, String)> {
        let spec = self.spec.as_ref();
        let status = self.status.as_ref();
        let ss = |v: Option<&Option<String>>| v.cloned().flatten().unwrap_or_default();
        vec![
            ("spec.nodeName", ss(spec.map(|s| &s.node_name))),
            ("spec.restartPolicy", ss(spec.map(|s| &s.restart_policy))),
            ("spec.schedulerName", ss(spec.map(|s| &s.scheduler_name))),
            ("spec.serviceAccountName", ss(spec.map(|s| &s.service_account_name))),
            (
                "spec.hostNetwork",
                spec.and_then(|s| s.host_network).unwrap_or(false).to_string(),
            ),
            ("status.phase", ss(status.map(|s| &s.phase))),
            ("status.podIP", ss(status.map(|s| &s.pod_ip))),
            ("status.podIPs", ss(status.map(|s| &s.pod_ip))),
            ("status.nominatedNodeName", ss(status.map(|s| &s.nominated_node_name))),
        ]
    }
}

impl SimObject for Namespace {
    const STORE_KIND: Kind = Kind::Namespace;
    fn fields(&self) -> Vec<(&'static str, String)> {
        let phase = self.status.as_ref().and_then(|s| s.phase.clone());
        vec![("status.phase", phase.unwrap_or_default())]
    }
}

impl SimObject for Node {
    const STORE_KIND: Kind = Kind::Node;
    fn fields(&self) -> Vec<(&'static str, String)> {
        let u = self.spec.as_ref().and_then(|s| s.unschedulable);
        vec![("spec.unschedulable", u.unwrap_or(false).to_string())]
    }
}

impl SimObject for ReplicaSet {
    const STORE_KIND: Kind = Kind::ReplicaSet;
    fn fields(&self) -> Vec<(&'static str, String)> {
        let r = self.status.as_ref().map(|s| s.replicas).unwrap_or(0);
        vec![("status.replicas", r.to_string())]
    }
}

impl SimObject for Job {
    const STORE_KIND: Kind = Kind::Job;
    fn fields(&self) -> Vec<(&'static str, String)> {
        let s = self.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0);
        vec![("status.successful", s.to_string())]
    }
}

macro_rules! plain_object {
    ($($ty:ty => $kind:expr),* $(,)?) => {$(
        impl SimObject for $ty {
            const STORE_KIND: Kind = $kind;
            fn fields(&self) -> Vec<(&'static str, String)> {
                Vec::new()
            }
        }
    )*};
}

plain_object!(
    Deployment => Kind::Deployment,
    StatefulSet => Kind::StatefulSet,
    DaemonSet => Kind::DaemonSet,
    CronJob => Kind::CronJob,
    Lease => Kind::Lease,
);
