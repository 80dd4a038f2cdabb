//! The public description of a workload to create, with a small builder.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What owns the pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    /// Deployment → ReplicaSet → Pods.
    Deployment,
    /// StatefulSet → Pods `<name>-0..n`.
    StatefulSet,
    /// DaemonSet → one Pod per node.
    DaemonSet,
    /// Job → Pods.
    Job,
    /// CronJob → Job → Pods.
    CronJob,
    /// Bare Pods without owner.
    Pod,
}

/// A container of a workload's pod template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Container name.
    pub name: String,
    /// Image reference.
    pub image: String,
}

/// A workload to create; build with [`Workload::deployment`] and friends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    /// Controller kind.
    pub kind: WorkloadKind,
    /// Namespace (created if missing).
    pub namespace: String,
    /// Workload name.
    pub name: String,
    /// Pod count (ignored for DaemonSets: one per node).
    #[serde(default = "one")]
    pub replicas: u32,
    /// Containers; one named after the workload when empty.
    #[serde(default)]
    pub containers: Vec<ContainerSpec>,
    /// Nodes pods are spread over round-robin (created if missing); `sim-node-1` when empty.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Pods stay Pending with no node (for FailedScheduling).
    #[serde(default)]
    pub unscheduled: bool,
    /// Extra pod labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

impl Workload {
    fn new(kind: WorkloadKind, namespace: &str, name: &str) -> Self {
        Self {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
            replicas: 1,
            containers: Vec::new(),
            nodes: Vec::new(),
            unscheduled: false,
            labels: BTreeMap::new(),
        }
    }
    /// A Deployment (with its ReplicaSet).
    pub fn deployment(namespace: &str, name: &str) -> Self {
        Self::new(WorkloadKind::Deployment, namespace, name)
    }
    /// A StatefulSet.
    pub fn statefulset(namespace: &str, name: &str) -> Self {
        Self::new(WorkloadKind::StatefulSet, namespace, name)
    }
    /// A DaemonSet.
    pub fn daemonset(namespace: &str, name: &str) -> Self {
        Self::new(WorkloadKind::DaemonSet, namespace, name)
    }
    /// A Job.
    pub fn job(namespace: &str, name: &str) -> Self {
        Self::new(WorkloadKind::Job, namespace, name)
    }
    /// A CronJob and one Job it started.
    pub fn cronjob(namespace: &str, name: &str) -> Self {
        Self::new(WorkloadKind::CronJob, namespace, name)
    }
    /// Bare pods (`name` for one replica, `name-<i>` for more).
    pub fn pod(namespace: &str, name: &str) -> Self {
        Self::new(WorkloadKind::Pod, namespace, name)
    }
    /// Sets the pod count.
    pub fn replicas(mut self, n: u32) -> Self {
        self.replicas = n;
        self
    }
    /// Adds a container.
    pub fn container(mut self, name: &str, image: &str) -> Self {
        self.containers.push(ContainerSpec {
            name: name.to_string(),
            image: image.to_string(),
        });
        self
    }
    /// Adds a node to spread pods over.
    pub fn node(mut self, name: &str) -> Self {
        self.nodes.push(name.to_string());
        self
    }
    /// Leaves pods unscheduled (Pending, no node).
    pub fn unscheduled(mut self) -> Self {
        self.unscheduled = true;
        self
    }
    /// Adds a pod label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_string(), value.to_string());
        self
    }
}
