//! The resources the simulator serves and the legacy discovery documents (`/api`, `/apis`,
//! `/api/v1`, `/apis/<group>/<version>`, `/version`) that kubectl and kube-rs read.

use serde_json::{Value, json};

use super::store::Kind;

/// One served resource.
#[derive(Debug)]
pub(crate) struct ResourceInfo {
    pub(crate) kind: Kind,
    pub(crate) group: &'static str,
    pub(crate) version: &'static str,
    pub(crate) plural: &'static str,
    pub(crate) singular: &'static str,
    pub(crate) kind_name: &'static str,
    pub(crate) namespaced: bool,
    pub(crate) short_names: &'static [&'static str],
    pub(crate) categories: &'static [&'static str],
}

impl ResourceInfo {
    /// `pods` or `leases.coordination.k8s.io`, as used in Status messages.
    pub(crate) fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

#[allow(clippy::too_many_arguments)] // a const table row constructor
const fn res(
    kind: Kind,
    group: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind_name: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
) -> ResourceInfo {
    ResourceInfo {
        kind,
        group,
        version: "v1",
        plural,
        singular,
        kind_name,
        namespaced,
        short_names,
        categories,
    }
}

pub(crate) static RESOURCES: &[ResourceInfo] = &[
    res(Kind::Event, "", "events", "event", "Event", true, &["ev"], &[]),
    res(Kind::Pod, "", "pods", "pod", "Pod", true, &["po"], &["all"]),
    res(
        Kind::Namespace,
        "",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        &["ns"],
        &[],
    ),
    res(Kind::Node, "", "nodes", "node", "Node", false, &["no"], &[]),
    res(
        Kind::ReplicaSet,
        "apps",
        "replicasets",
        "replicaset",
        "ReplicaSet",
        true,
        &["rs"],
        &["all"],
    ),
    res(
        Kind::Deployment,
        "apps",
        "deployments",
        "deployment",
        "Deployment",
        true,
        &["deploy"],
        &["all"],
    ),
    res(
        Kind::StatefulSet,
        "apps",
        "statefulsets",
        "statefulset",
        "StatefulSet",
        true,
        &["sts"],
        &["all"],
    ),
    res(
        Kind::DaemonSet,
        "apps",
        "daemonsets",
        "daemonset",
        "DaemonSet",
        true,
        &["ds"],
        &["all"],
    ),
    res(Kind::Job, "batch", "jobs", "job", "Job", true, &[], &["all"]),
    res(
        Kind::CronJob,
        "batch",
        "cronjobs",
        "cronjob",
        "CronJob",
        true,
        &["cj"],
        &["all"],
    ),
    res(
        Kind::Lease,
        "coordination.k8s.io",
        "leases",
        "lease",
        "Lease",
        true,
        &[],
        &[],
    ),
];

/// The pseudo-resource for SelfSubjectAccessReview (create only, never stored).
pub(crate) static SSAR: ResourceInfo = res(
    Kind::Lease,
    "authorization.k8s.io",
    "selfsubjectaccessreviews",
    "selfsubjectaccessreview",
    "SelfSubjectAccessReview",
    false,
    &[],
    &[],
);

pub(crate) fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

pub(crate) fn for_kind(kind: Kind) -> &'static ResourceInfo {
    RESOURCES.iter().find(|r| r.kind == kind).expect("every kind is served")
}

const VERBS_RW: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const GROUPS: &[&str] = &["apps", "batch", "coordination.k8s.io", "authorization.k8s.io"];

/// The version the simulator reports (kube-rs and kubectl only parse it).
pub(crate) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "gitVersion": "v1.33.0",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

pub(crate) fn api_versions(server: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": server }]
    })
}

fn group_entry(group: &str) -> Value {
    let gv = json!({ "groupVersion": format!("{group}/v1"), "version": "v1" });
    json!({ "name": group, "versions": [gv.clone()], "preferredVersion": gv })
}

pub(crate) fn api_group_list() -> Value {
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": GROUPS.iter().map(|g| group_entry(g)).collect::<Vec<_>>()
    })
}

pub(crate) fn api_group(group: &str) -> Option<Value> {
    GROUPS.contains(&group).then(|| {
        let mut v = group_entry(group);
        v["kind"] = json!("APIGroup");
        v["apiVersion"] = json!("v1");
        v
    })
}

fn resource_entry(r: &ResourceInfo, verbs: &[&str]) -> Value {
    let mut v = json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind_name,
        "verbs": verbs,
    });
    if !r.short_names.is_empty() {
        v["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        v["categories"] = json!(r.categories);
    }
    v
}

/// The APIResourceList for `group/version` (`""` is the core group).
pub(crate) fn resource_list(group: &str, version: &str) -> Option<Value> {
    if version != "v1" || (!group.is_empty() && !GROUPS.contains(&group)) {
        return None;
    }
    let mut resources: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.group == group)
        .map(|r| resource_entry(r, VERBS_RW))
        .collect();
    if group.is_empty() {
        resources.push(json!({
            "name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]
        }));
    }
    if group == SSAR.group {
        resources.push(resource_entry(&SSAR, &["create"]));
    }
    let gv = if group.is_empty() {
        "v1".to_string()
    } else {
        format!("{group}/v1")
    };
    Some(json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources }))
}
