//! Warnings Kubernetes never writes as Events: a container killed for memory
//! (OOMKilled) or exiting non-zero and restarted produces no Warning event
//! (kubernetes/kubernetes#69676). The agent watches Pods and turns each such
//! termination into a warning of its own, with an id stable across relists
//! and agent restarts, so the collector's dedup applies.
//!
//! The same watch keeps the agent's Pod index ([`crate::pods`]) current:
//! every Pod it lists, adds, modifies or deletes is recorded there, and
//! enrichment reads it instead of asking the API server.

use crate::enrich::Candidate;
use crate::ops::{WatchLabel, metrics};
use crate::pods::PodIndex;
use crate::resources::{ContainerStatus, PodObject, Terminated};
use crate::watch::{Change, WatchContext, supervise};
use kube::Api;
use kube::runtime::watcher;
use podwarn_shared::{IncidentType, Severity, WarningEvent};
use std::sync::Arc;
use xxhash_rust::xxh3::xxh3_64;

/// The component name pod-status warnings carry in `source`.
pub const SOURCE: &str = "podwarn-agent/pod-status";

/// A termination worth a warning: OOMKilled, or a non-zero exit.
fn is_warning(reason: Option<&str>, exit_code: i32) -> bool {
    reason == Some("OOMKilled") || exit_code != 0
}

/// The warnings a Pod's status holds: the last termination of every
/// restarted container, and the current termination of containers that
/// stopped for good, when they were OOM kills or non-zero exits. Each comes
/// with its (reason, exit code).
pub fn terminations(pod: &PodObject) -> Vec<(WarningEvent, (String, i32))> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let pod_uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let mut out = Vec::new();
    for s in &pod.containers {
        let previous = s.last_state.as_ref().and_then(|l| l.terminated.as_ref());
        let current = s.state.as_ref().and_then(|st| st.terminated.as_ref());
        for (terminated, restarted) in [(previous, true), (current, false)] {
            let Some(t) = terminated else { continue };
            if !is_warning(t.reason.as_deref(), t.exit_code) {
                continue;
            }
            let w = warning(namespace, name, pod_uid, s, t, restarted);
            let termination = (w.reason.clone(), t.exit_code);
            out.push((w, termination));
        }
    }
    out
}

fn warning(
    namespace: &str,
    pod: &str,
    pod_uid: &str,
    s: &ContainerStatus,
    t: &Terminated,
    restarted: bool,
) -> WarningEvent {
    // One container instance terminates once: its container id names it. Without one
    // (some runtimes leave it empty), the restart count and finish time do.
    let instance = match t.container_id.as_deref().filter(|id| !id.is_empty()) {
        Some(id) => id.to_owned(),
        None => format!(
            "{}/{}",
            s.restart_count,
            t.finished_at.as_ref().map(|f| f.0.to_string()).unwrap_or_default()
        ),
    };
    let uid = format!(
        "podstatus-{:016x}",
        xxh3_64(format!("{pod_uid}/{}/{instance}", s.name).as_bytes())
    );
    let reason = t
        .reason
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "Error".into());
    let signal = t.signal.map(|sig| format!(", signal {sig}")).unwrap_or_default();
    let what = if restarted {
        format!("; restarted, {} restarts so far", s.restart_count)
    } else {
        String::new()
    };
    let message = format!(
        "Container {} terminated: {reason} (exit code {}{signal}){what}",
        s.name, t.exit_code
    );
    let when = t
        .finished_at
        .as_ref()
        .or(t.started_at.as_ref())
        .map(|f| f.0)
        .unwrap_or_else(jiff::Timestamp::now);
    WarningEvent {
        uid,
        namespace: namespace.to_owned(),
        pod: pod.to_owned(),
        pod_uid: Some(pod_uid.to_owned()).filter(|u| !u.is_empty()),
        node: None,
        workload: None,
        container: Some(s.name.clone()),
        reason,
        message,
        incident_type: IncidentType::Other,
        severity: Severity::Medium,
        count: 1,
        first_seen: when,
        last_seen: when,
        source: Some(SOURCE.into()),
        logs: None,
    }
}

/// Runs one Pod watch (one namespace, or all when `namespace` is `None`):
/// records every Pod in `index`, and hands each termination warning to
/// `ctx.out` with the Pod's facts already known, so enrichment needs no
/// lookup. In DaemonSet mode `node` restricts the watch server-side to this
/// node.
pub async fn watch_pods(
    api: Api<PodObject>,
    namespace: Option<String>,
    node: Option<String>,
    index: Arc<PodIndex>,
    ctx: WatchContext,
) {
    let mut config = watcher::Config::default();
    if let Some(node) = &node {
        config = config.fields(&format!("spec.nodeName={node}"));
    }
    let mut generation = 0;
    let mut first_list = true;
    supervise(api, config, WatchLabel { watch: "pods" }, "pods", &ctx, |change| {
        let step = match change {
            Change::Relist => {
                generation = index.relist_started();
                None
            }
            Change::Listed => {
                index.relist_done(namespace.as_deref(), generation, first_list);
                first_list = false;
                None
            }
            Change::Deleted(pod) => {
                index.delete(&pod);
                None
            }
            Change::Applied(pod) => {
                let in_scope = ctx.scope.covers(pod.metadata.namespace.as_deref().unwrap_or_default());
                in_scope.then(|| {
                    let info = index.apply(&pod, generation);
                    let fresh: Vec<Candidate> = terminations(&pod)
                        .into_iter()
                        .filter(|(w, _)| ctx.seen.is_new(&w.uid, w.count))
                        .map(|(event, termination)| Candidate {
                            event,
                            pod: Some(info.clone()),
                            termination: Some(termination),
                        })
                        .collect();
                    fresh
                })
            }
        };
        let ctx = &ctx;
        async move {
            for candidate in step.into_iter().flatten() {
                metrics().events_seen.inc();
                if ctx.out.send(candidate).await.is_err() {
                    return false;
                }
            }
            true
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(statuses: serde_json::Value) -> PodObject {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "api-1", "namespace": "shop", "uid": "pod-uid-1"},
            "status": {"containerStatuses": statuses}
        }))
        .unwrap()
    }

    #[test]
    fn oom_kill_and_non_zero_exit_become_warnings_with_stable_ids() {
        let p = pod(serde_json::json!([
            {"name": "app", "restartCount": 3, "ready": true, "image": "i", "imageID": "",
             "state": {"running": {"startedAt": "2026-11-22T10:00:10Z"}},
             "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "containerID": "containerd://abc",
                                          "finishedAt": "2026-11-22T10:00:05Z"}}},
            {"name": "sidecar", "restartCount": 1, "ready": true, "image": "i", "imageID": "",
             "lastState": {"terminated": {"exitCode": 0, "reason": "Completed", "containerID": "containerd://def"}}},
            {"name": "job", "restartCount": 0, "ready": false, "image": "i", "imageID": "",
             "state": {"terminated": {"exitCode": 2, "reason": "Error", "containerID": "containerd://ghi"}}}
        ]));
        let warnings: Vec<WarningEvent> = terminations(&p).into_iter().map(|(w, _)| w).collect();
        assert_eq!(warnings.len(), 2, "{warnings:#?}");
        assert_eq!(warnings[0].reason, "OOMKilled");
        assert_eq!(warnings[0].container.as_deref(), Some("app"));
        assert_eq!(warnings[0].last_seen.to_string(), "2026-11-22T10:00:05Z");
        assert!(warnings[0].message.contains("exit code 137"));
        assert_eq!(warnings[1].reason, "Error");
        // The same status seen again (relist, agent restart) gives the same ids.
        assert_eq!(terminations(&p)[0].0.uid, warnings[0].uid);
        assert_ne!(warnings[0].uid, warnings[1].uid);
        assert!(warnings.iter().all(|w| w.validate().is_ok()));
    }
}
