//! Workloads as the controllers would have created them: Deployment → ReplicaSet → Pods,
//! StatefulSet/DaemonSet → Pods, CronJob → Job → Pods, with ownerReferences and names shaped
//! like the real ones (derived from a hash of the workload, so seeded runs repeat exactly).

mod spec;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec, ReplicaSet, ReplicaSetSpec, StatefulSet, StatefulSetSpec,
};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Container, Namespace, NamespaceStatus, Node, NodeCondition, NodeStatus, NodeSystemInfo, Pod, PodSpec,
    PodTemplateSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};

pub use spec::{ContainerSpec, Workload, WorkloadKind};

use super::pods::{PodRef, pod_object};
use super::store::{SimObject, State, StoreError, now};

/// FNV-1a, for stable generated names.
pub(crate) fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h
}

/// The alphabet Kubernetes uses for generated name suffixes.
pub(crate) fn safe_suffix(mut h: u64, len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..len)
        .map(|_| {
            let c = ALPHABET[(h % ALPHABET.len() as u64) as usize] as char;
            h /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

fn owner(api_version: &str, kind: &str, meta: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn upsert<T: SimObject>(state: &mut State, obj: T) -> Result<T, StoreError> {
    match state.create(obj.clone()) {
        Err(StoreError::AlreadyExists) => {
            let m = obj.metadata();
            let ns = m.namespace.clone().unwrap_or_default();
            let name = m.name.clone().unwrap_or_default();
            state.get::<T>(&ns, &name).cloned().ok_or(StoreError::NotFound)
        }
        other => other,
    }
}

/// Creates the namespace if it does not exist.
pub(crate) fn ensure_namespace(state: &mut State, name: &str) {
    if state.get::<Namespace>("", name).is_none() {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                labels: Some(BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_string(),
                    name.to_string(),
                )])),
                ..Default::default()
            },
            status: Some(NamespaceStatus {
                phase: Some("Active".to_string()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let _ = state.create(ns);
    }
}

/// Creates the node if it does not exist.
pub(crate) fn ensure_node(state: &mut State, name: &str) {
    if state.get::<Node>("", name).is_none() {
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                labels: Some(BTreeMap::from([
                    ("kubernetes.io/hostname".to_string(), name.to_string()),
                    ("kubernetes.io/os".to_string(), "linux".to_string()),
                ])),
                ..Default::default()
            },
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".to_string(),
                    status: "True".to_string(),
                    reason: Some("KubeletReady".to_string()),
                    message: Some("kubelet is posting ready status".to_string()),
                    last_heartbeat_time: Some(now()),
                    last_transition_time: Some(now()),
                }]),
                node_info: Some(NodeSystemInfo {
                    kubelet_version: "v1.33.0".to_string(),
                    container_runtime_version: "containerd://2.0.5".to_string(),
                    operating_system: "linux".to_string(),
                    architecture: "amd64".to_string(),
                    os_image: "Debian GNU/Linux 13 (trixie)".to_string(),
                    kernel_version: "6.12.0".to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let _ = state.create(node);
    }
}

fn template(labels: &BTreeMap<String, String>, containers: &[ContainerSpec]) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels.clone()),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: containers
                .iter()
                .map(|c| Container {
                    name: c.name.clone(),
                    image: Some(c.image.clone()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
    }
}

fn meta(ns: &str, name: &str, labels: &BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(ns.to_string()),
        labels: Some(labels.clone()),
        ..Default::default()
    }
}

/// Creates the workload's objects and pods; returns the pods.
pub(crate) fn create(state: &mut State, w: &Workload) -> Result<Vec<PodRef>, StoreError> {
    let ns = w.namespace.as_str();
    ensure_namespace(state, ns);
    let mut containers = w.containers.clone();
    if containers.is_empty() {
        containers.push(ContainerSpec {
            name: w.name.clone(),
            image: format!("registry.example.com/{}:1.0.0", w.name),
        });
    }
    let mut nodes = w.nodes.clone();
    if nodes.is_empty() {
        nodes.push("sim-node-1".to_string());
    }
    for n in &nodes {
        ensure_node(state, n);
    }
    let mut labels = w.labels.clone();
    labels.insert("app".to_string(), w.name.clone());
    let selector = LabelSelector {
        match_labels: Some(BTreeMap::from([("app".to_string(), w.name.clone())])),
        ..Default::default()
    };
    let replicas = if w.kind == WorkloadKind::DaemonSet {
        nodes.len() as u32
    } else {
        w.replicas
    };
    let tpl = template(&labels, &containers);
    let hash = safe_suffix(stable_hash(&[ns, &w.name, "template"]), 10);
    // (owner reference, pod name prefix or fixed names, extra labels)
    let (owner_ref, names, restart): (Option<OwnerReference>, Vec<String>, &str) = match w.kind {
        WorkloadKind::Deployment => {
            let d = upsert(
                state,
                Deployment {
                    metadata: meta(ns, &w.name, &labels),
                    spec: Some(DeploymentSpec {
                        replicas: Some(replicas as i32),
                        selector: selector.clone(),
                        template: tpl.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )?;
            let rs_name = format!("{}-{hash}", w.name);
            labels.insert("pod-template-hash".to_string(), hash.clone());
            let mut rs_meta = meta(ns, &rs_name, &labels);
            rs_meta.owner_references = Some(vec![owner("apps/v1", "Deployment", &d.metadata)]);
            let rs = upsert(
                state,
                ReplicaSet {
                    metadata: rs_meta,
                    spec: Some(ReplicaSetSpec {
                        replicas: Some(replicas as i32),
                        selector,
                        template: Some(template(&labels, &containers)),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )?;
            let names = (0..replicas)
                .map(|i| {
                    let s = safe_suffix(stable_hash(&[ns, &rs_name, &i.to_string()]), 5);
                    format!("{rs_name}-{s}")
                })
                .collect();
            (Some(owner("apps/v1", "ReplicaSet", &rs.metadata)), names, "Always")
        }
        WorkloadKind::StatefulSet => {
            let s = upsert(
                state,
                StatefulSet {
                    metadata: meta(ns, &w.name, &labels),
                    spec: Some(StatefulSetSpec {
                        replicas: Some(replicas as i32),
                        selector,
                        service_name: Some(w.name.clone()),
                        template: tpl,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )?;
            let names = (0..replicas).map(|i| format!("{}-{i}", w.name)).collect();
            (Some(owner("apps/v1", "StatefulSet", &s.metadata)), names, "Always")
        }
        WorkloadKind::DaemonSet => {
            let d = upsert(
                state,
                DaemonSet {
                    metadata: meta(ns, &w.name, &labels),
                    spec: Some(DaemonSetSpec {
                        selector,
                        template: tpl,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )?;
            let names = nodes
                .iter()
                .map(|n| format!("{}-{}", w.name, safe_suffix(stable_hash(&[ns, &w.name, n]), 5)))
                .collect();
            (Some(owner("apps/v1", "DaemonSet", &d.metadata)), names, "Always")
        }
        WorkloadKind::Job | WorkloadKind::CronJob => {
            let job_spec = JobSpec {
                template: tpl.clone(),
                ..Default::default()
            };
            let (job_name, job_owner) = if w.kind == WorkloadKind::CronJob {
                let cj = upsert(
                    state,
                    CronJob {
                        metadata: meta(ns, &w.name, &labels),
                        spec: Some(CronJobSpec {
                            schedule: "*/5 * * * *".to_string(),
                            job_template: JobTemplateSpec {
                                metadata: None,
                                spec: Some(job_spec.clone()),
                            },
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                )?;
                // CronJob jobs are named after the scheduled minute (epoch minutes); derived
                // from the name rather than the clock so seeded runs repeat exactly.
                let minute = 29_000_000 + stable_hash(&[ns, &w.name, "schedule"]) % 1_000_000;
                (
                    format!("{}-{minute}", w.name),
                    Some(owner("batch/v1", "CronJob", &cj.metadata)),
                )
            } else {
                (w.name.clone(), None)
            };
            let mut job_meta = meta(ns, &job_name, &labels);
            job_meta.owner_references = job_owner.map(|o| vec![o]);
            let job = upsert(
                state,
                Job {
                    metadata: job_meta,
                    spec: Some(job_spec),
                    ..Default::default()
                },
            )?;
            labels.insert("job-name".to_string(), job_name.clone());
            let names = (0..replicas)
                .map(|i| {
                    let s = safe_suffix(stable_hash(&[ns, &job_name, &i.to_string()]), 5);
                    format!("{job_name}-{s}")
                })
                .collect();
            (Some(owner("batch/v1", "Job", &job.metadata)), names, "Never")
        }
        WorkloadKind::Pod => {
            let names = if replicas == 1 {
                vec![w.name.clone()]
            } else {
                (0..replicas).map(|i| format!("{}-{i}", w.name)).collect()
            };
            (None, names, "Always")
        }
    };
    let mut pods = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let node = (!w.unscheduled).then(|| nodes[i % nodes.len()].clone());
        let pod: Pod = pod_object(ns, name, &labels, owner_ref.clone(), &containers, node, restart);
        let pod = upsert(state, pod)?;
        pods.push(PodRef::from_pod(&pod));
    }
    Ok(pods)
}
