//! Enrichment: what a bare Event does not say. The Pod's node, its workload
//! (owner chain), the state of the container the warning is about (restart
//! count, last termination: this is how OOMKilled is seen), and the last log
//! lines of a crashed container. Then classification.
//!
//! Lookups are cached (bounded, with a TTL) and single-flight, and go through
//! the agent's API rate limit. A missing optional permission degrades with
//! one warning and a metric, never a crash.

use crate::access::RateLimiter;
use crate::ops::{PermissionLabel, metrics};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use moka::future::Cache;
use podwarn_shared::classify::{Signal, classify};
use podwarn_shared::wire::limits;
use podwarn_shared::{IncidentType, WarningEvent, Workload};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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

/// What the agent keeps of a Pod: a few fields, never the whole object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    /// The Pod's uid.
    pub uid: Option<String>,
    /// Its node, once scheduled.
    pub node: Option<String>,
    /// Its owning workload.
    pub workload: Option<Workload>,
    /// Its containers (init containers included).
    pub containers: Vec<ContainerInfo>,
}

/// A warning on its way through the pipeline.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The event, with the fields the watch could fill.
    pub event: WarningEvent,
    /// The Pod, when the watch already had it (pod-status warnings).
    pub pod: Option<PodInfo>,
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
    client: kube::Client,
    limiter: Arc<RateLimiter>,
    config: Arc<EnrichConfig>,
    pods: Cache<(String, String), Option<PodInfo>>,
    owners: Cache<(String, String), Option<Workload>>,
    logs: Cache<(String, String, i32), Option<String>>,
    logs_denied: Arc<AtomicBool>,
    replicasets_denied: Arc<AtomicBool>,
}

impl std::fmt::Debug for Enricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enricher")
            .field("config", &self.config)
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

impl Enricher {
    /// A new enricher with empty caches.
    pub fn new(client: kube::Client, limiter: Arc<RateLimiter>, config: EnrichConfig) -> Self {
        Self {
            client,
            limiter,
            config: Arc::new(config),
            // Pod state changes (restarts): a short TTL keeps it fresh, the capacity keeps memory flat.
            pods: Cache::builder()
                .max_capacity(4096)
                .time_to_live(Duration::from_secs(15))
                .build(),
            owners: Cache::builder()
                .max_capacity(4096)
                .time_to_live(Duration::from_secs(600))
                .build(),
            logs: Cache::builder()
                .max_capacity(256)
                .time_to_live(Duration::from_secs(600))
                .build(),
            logs_denied: Arc::default(),
            replicasets_denied: Arc::default(),
        }
    }

    /// Completes a candidate. `None` when the warning is not this agent's to ship
    /// (DaemonSet mode: another node's Pod).
    pub async fn enrich(&self, candidate: Candidate) -> Option<WarningEvent> {
        let Candidate {
            mut event,
            pod,
            termination,
        } = candidate;
        // Kubelet events name their node: another node's warning needs no lookup to be skipped.
        if event.node.is_some() && !self.is_mine(event.node.as_deref()) {
            return None;
        }
        let pod = match pod {
            Some(pod) => Some(pod),
            None => self.pod(&event.namespace, &event.pod).await,
        };
        if let Some(pod) = &pod {
            event.pod_uid = event.pod_uid.or_else(|| pod.uid.clone());
            event.node = pod.node.clone().or(event.node);
            event.workload = pod.workload.clone();
        }
        if !self.is_mine(event.node.as_deref()) {
            return None;
        }
        let container = event
            .container
            .as_deref()
            .and_then(|name| pod.as_ref()?.containers.iter().find(|c| c.name == name));
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
        if event.logs.is_none()
            && wants_logs(event.incident_type)
            && let Some(c) = container
            && c.restart_count > 0
        {
            event.logs = self
                .previous_logs(&event.namespace, &event.pod, &c.name, c.restart_count)
                .await;
        }
        tracing::debug!(uid = %event.uid, incident_type = %event.incident_type, "enriched");
        Some(truncate_fields(event))
    }

    fn is_mine(&self, node: Option<&str>) -> bool {
        match (&self.config.node, node) {
            (None, _) => true,
            (Some(mine), Some(node)) => mine == node,
            (Some(_), None) => self.config.ships_unscheduled.load(Ordering::Relaxed),
        }
    }

    /// The Pod, from cache or one API call shared by all concurrent callers.
    pub async fn pod(&self, namespace: &str, name: &str) -> Option<PodInfo> {
        let key = (namespace.to_owned(), name.to_owned());
        let this = self.clone();
        self.pods
            .get_with(key, async move {
                this.limiter.acquire().await;
                let api: Api<Pod> = Api::namespaced(this.client.clone(), namespace);
                match api.get_opt(name).await {
                    Ok(Some(pod)) => Some(this.pod_info(&pod).await),
                    Ok(None) => None,
                    Err(e) => {
                        metrics().enrich_failures.inc();
                        tracing::debug!(namespace, pod = name, error = %e, "pod lookup failed");
                        None
                    }
                }
            })
            .await
    }

    /// Reduces a Pod to what the agent keeps, resolving its workload.
    pub async fn pod_info(&self, pod: &Pod) -> PodInfo {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let workload = match controller_of(&pod.metadata) {
            Some((kind, name)) if kind == "ReplicaSet" => Some(self.replicaset_owner(&namespace, &name).await),
            Some((kind, name)) if kind == "Job" => Some(job_owner(&name)),
            Some((kind, name)) => Some(Workload { kind, name }),
            None => None,
        };
        PodInfo {
            uid: pod.metadata.uid.clone(),
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            workload,
            containers: containers_of(pod),
        }
    }

    async fn replicaset_owner(&self, namespace: &str, name: &str) -> Workload {
        let plain = Workload {
            kind: "ReplicaSet".into(),
            name: name.to_owned(),
        };
        if self.replicasets_denied.load(Ordering::Relaxed) {
            return guess_deployment(name).unwrap_or(plain);
        }
        let key = (namespace.to_owned(), name.to_owned());
        let this = self.clone();
        let owner = self
            .owners
            .get_with(key, async move {
                this.limiter.acquire().await;
                let api: Api<ReplicaSet> = Api::namespaced(this.client.clone(), namespace);
                match api.get_opt(name).await {
                    Ok(Some(rs)) => Some(
                        controller_of(&rs.metadata)
                            .map(|(kind, name)| Workload { kind, name })
                            .unwrap_or_else(|| Workload {
                                kind: "ReplicaSet".into(),
                                name: name.to_owned(),
                            }),
                    ),
                    Ok(None) => None,
                    Err(kube::Error::Api(status)) if status.code == 403 => {
                        this.degrade(
                            &this.replicasets_denied,
                            "get replicasets",
                            "workloads are guessed from ReplicaSet names",
                        );
                        None
                    }
                    Err(e) => {
                        metrics().enrich_failures.inc();
                        tracing::debug!(namespace, replicaset = name, error = %e, "replicaset lookup failed");
                        None
                    }
                }
            })
            .await;
        owner.or_else(|| guess_deployment(name)).unwrap_or(plain)
    }

    async fn previous_logs(&self, namespace: &str, pod: &str, container: &str, restarts: i32) -> Option<String> {
        if self.config.log_lines == 0 || self.logs_denied.load(Ordering::Relaxed) {
            return None;
        }
        let key = (format!("{namespace}/{pod}"), container.to_owned(), restarts);
        let this = self.clone();
        self.logs
            .get_with(key, async move {
                this.limiter.acquire().await;
                let api: Api<Pod> = Api::namespaced(this.client.clone(), namespace);
                let params = LogParams {
                    container: Some(container.to_owned()),
                    previous: true,
                    tail_lines: Some(i64::from(this.config.log_lines)),
                    limit_bytes: Some(this.config.log_max_bytes.min(limits::LOGS as u64) as i64),
                    ..LogParams::default()
                };
                match api.logs(pod, &params).await {
                    Ok(text) if text.is_empty() => None,
                    Ok(text) => Some(text),
                    Err(kube::Error::Api(status)) if status.code == 403 => {
                        this.degrade(
                            &this.logs_denied,
                            "get pods/log",
                            "crash warnings are shipped without log lines",
                        );
                        None
                    }
                    Err(e) => {
                        tracing::debug!(namespace, pod, container, error = %e, "previous log unavailable");
                        None
                    }
                }
            })
            .await
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

/// A CronJob names its Jobs `<cronjob>-<scheduled minute since the epoch>`.
/// The agent may not read Jobs (least privilege), so the name decides.
fn job_owner(job: &str) -> Workload {
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

/// The containers of a Pod with their last termination.
pub fn containers_of(pod: &Pod) -> Vec<ContainerInfo> {
    let Some(status) = &pod.status else { return Vec::new() };
    let statuses = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    statuses
        .map(|s| {
            let terminated = s.last_state.as_ref().and_then(|l| l.terminated.as_ref());
            ContainerInfo {
                name: s.name.clone(),
                restart_count: s.restart_count,
                last_termination_reason: terminated.and_then(|t| t.reason.clone()),
                last_exit_code: terminated.map(|t| t.exit_code),
            }
        })
        .collect()
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
            job_owner("backup-28930140"),
            Workload {
                kind: "CronJob".into(),
                name: "backup".into()
            }
        );
        assert_eq!(
            job_owner("migrate-db"),
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
