//! Pod objects and their status transitions as a kubelet reports them: restarts with
//! `lastState.terminated` (and no Warning event), waiting reasons such as CrashLoopBackOff.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    Pod, PodCondition, PodIP, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::{Deserialize, Serialize};

use super::store::{State, now};
use super::workloads::{ContainerSpec, stable_hash};

/// A pod the simulator created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `spec.nodeName` (None while unscheduled).
    pub node: Option<String>,
    /// Container names.
    pub containers: Vec<String>,
}

impl PodRef {
    pub(crate) fn from_pod(pod: &Pod) -> Self {
        Self {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            containers: pod
                .spec
                .as_ref()
                .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
                .unwrap_or_default(),
        }
    }

    /// The first container's name (what most single-container scenarios use).
    pub fn container(&self) -> &str {
        self.containers.first().map(String::as_str).unwrap_or("")
    }
}

/// How a container's previous run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason")]
pub enum Termination {
    /// Killed by the kernel OOM killer (exit code 137).
    OOMKilled,
    /// Exited non-zero.
    Error {
        /// The exit code.
        exit_code: i32,
    },
}

fn container_id(seed: &[&str]) -> String {
    let a = stable_hash(seed);
    let b = stable_hash(&[&a.to_string()]);
    let c = stable_hash(&[&b.to_string()]);
    let d = stable_hash(&[&c.to_string()]);
    format!("containerd://{a:016x}{b:016x}{c:016x}{d:016x}")
}

fn running_status(c: &ContainerSpec, pod: &str, restarts: i32) -> ContainerStatus {
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: format!("{}@sha256:{:016x}", c.image, stable_hash(&[&c.image])),
        container_id: Some(container_id(&[pod, &c.name, &restarts.to_string()])),
        ready: true,
        started: Some(true),
        restart_count: restarts,
        state: Some(ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(now()),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn condition(type_: &str, ok: bool) -> PodCondition {
    PodCondition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        last_transition_time: Some(now()),
        ..Default::default()
    }
}

/// A pod as the kubelet would report it once running (or Pending when `node` is None).
pub(crate) fn pod_object(
    ns: &str,
    name: &str,
    labels: &BTreeMap<String, String>,
    owner: Option<OwnerReference>,
    containers: &[ContainerSpec],
    node: Option<String>,
    restart_policy: &str,
) -> Pod {
    let h = stable_hash(&[ns, name]);
    let ip = format!("10.244.{}.{}", (h >> 8) % 250, h % 250 + 2);
    let spec = PodSpec {
        containers: containers
            .iter()
            .map(|c| Container {
                name: c.name.clone(),
                image: Some(c.image.clone()),
                ..Default::default()
            })
            .collect(),
        node_name: node.clone(),
        restart_policy: Some(restart_policy.to_string()),
        scheduler_name: Some("default-scheduler".to_string()),
        service_account_name: Some("default".to_string()),
        ..Default::default()
    };
    let status = match &node {
        Some(_) => PodStatus {
            phase: Some("Running".to_string()),
            pod_ip: Some(ip.clone()),
            pod_ips: Some(vec![PodIP { ip: ip.clone() }]),
            host_ip: Some(format!("192.168.0.{}", h % 200 + 10)),
            start_time: Some(now()),
            qos_class: Some("BestEffort".to_string()),
            conditions: Some(
                [
                    "PodReadyToStartContainers",
                    "Initialized",
                    "Ready",
                    "ContainersReady",
                    "PodScheduled",
                ]
                .iter()
                .map(|t| condition(t, true))
                .collect(),
            ),
            container_statuses: Some(containers.iter().map(|c| running_status(c, name, 0)).collect()),
            ..Default::default()
        },
        None => PodStatus {
            phase: Some("Pending".to_string()),
            qos_class: Some("BestEffort".to_string()),
            conditions: Some(vec![PodCondition {
                reason: Some("Unschedulable".to_string()),
                message: Some("0/3 nodes are available: 3 Insufficient cpu.".to_string()),
                ..condition("PodScheduled", false)
            }]),
            ..Default::default()
        },
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(ns.to_string()),
            labels: Some(labels.clone()),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(spec),
        status: Some(status),
    }
}

fn with_container(pod: &mut Pod, container: &str, f: impl FnOnce(&mut ContainerStatus)) -> bool {
    let Some(cs) = pod
        .status
        .as_mut()
        .and_then(|s| s.container_statuses.as_mut())
        .and_then(|v| v.iter_mut().find(|c| c.name == container))
    else {
        return false;
    };
    f(cs);
    true
}

fn set_ready(pod: &mut Pod, ready: bool) {
    let all_ready = ready
        && pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|v| v.iter().all(|c| c.ready));
    if let Some(conds) = pod.status.as_mut().and_then(|s| s.conditions.as_mut()) {
        for c in conds.iter_mut() {
            if c.type_ == "Ready" || c.type_ == "ContainersReady" {
                let want = if all_ready { "True" } else { "False" };
                if c.status != want {
                    c.status = want.to_string();
                    c.last_transition_time = Some(now());
                }
            }
        }
    }
}

/// Restarts a container after `how`: restartCount + 1, lastState.terminated filled in,
/// previous logs become the current ones. Emits no Event, like a real kubelet.
pub(crate) fn restart(state: &mut State, ns: &str, name: &str, container: &str, how: &Termination) -> Option<u32> {
    let mut found = None;
    let pod = state.modify::<Pod>(ns, name, |pod| {
        with_container(pod, container, |cs| {
            let started = cs
                .state
                .as_ref()
                .and_then(|s| s.running.as_ref())
                .and_then(|r| r.started_at.clone());
            let (reason, exit_code) = match how {
                Termination::OOMKilled => ("OOMKilled", 137),
                Termination::Error { exit_code } => ("Error", *exit_code),
            };
            cs.last_state = Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    container_id: cs.container_id.clone(),
                    exit_code,
                    reason: Some(reason.to_string()),
                    started_at: started,
                    finished_at: Some(now()),
                    ..Default::default()
                }),
                ..Default::default()
            });
            cs.restart_count += 1;
            cs.container_id = Some(container_id(&[name, container, &cs.restart_count.to_string()]));
            cs.state = Some(ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(now()),
                }),
                ..Default::default()
            });
            cs.ready = true;
            found = Some(cs.restart_count as u32);
        });
        set_ready(pod, true);
    });
    let count = found.filter(|_| pod.is_some())?;
    state.logs.rotate(ns, name, container);
    Some(count)
}

/// Puts a container into `waiting` (e.g. CrashLoopBackOff, ImagePullBackOff), not ready.
pub(crate) fn set_waiting(
    state: &mut State,
    ns: &str,
    name: &str,
    container: &str,
    reason: &str,
    message: &str,
) -> bool {
    let mut found = false;
    state.modify::<Pod>(ns, name, |pod| {
        found = with_container(pod, container, |cs| {
            cs.state = Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.to_string()),
                    message: Some(message.to_string()),
                }),
                ..Default::default()
            });
            cs.ready = false;
            cs.started = Some(false);
        });
        set_ready(pod, false);
    });
    found
}

/// Sets `status.phase` (and `status.reason`/`message`, e.g. Failed/Evicted).
pub(crate) fn set_phase(
    state: &mut State,
    ns: &str,
    name: &str,
    phase: &str,
    reason: Option<&str>,
    message: Option<&str>,
) -> bool {
    state
        .modify::<Pod>(ns, name, |pod| {
            let status = pod.status.get_or_insert_with(Default::default);
            status.phase = Some(phase.to_string());
            status.reason = reason.map(str::to_string);
            status.message = message.map(str::to_string);
            if phase != "Running" {
                for cs in status.container_statuses.iter_mut().flatten() {
                    cs.ready = false;
                }
            }
        })
        .is_some()
}
