//! Names, images and event texts modelled on real clusters (see `shared/corpus/events.jsonl`):
//! the kubelet's BackOff/Failed/Unhealthy/FailedMount/FailedCreatePodSandBox wording, the
//! scheduler's FailedScheduling summaries, controller warnings about non-Pod objects.

/// Application names used for workloads.
pub(crate) const APPS: &[&str] = &[
    "checkout",
    "cart",
    "payments",
    "catalog",
    "orders",
    "frontend",
    "api-gateway",
    "auth",
    "search",
    "recommendations",
    "inventory",
    "shipping",
    "notifications",
    "report-builder",
    "ingest",
    "image-resizer",
    "billing",
    "ledger",
    "session-store",
    "metrics-exporter",
];

/// Namespaces.
pub(crate) const NAMESPACES: &[&str] = &[
    "shop",
    "payments",
    "analytics",
    "web",
    "platform",
    "data",
    "batch",
    "monitoring",
];

/// Node names.
pub(crate) const NODES: &[&str] = &[
    "ip-10-42-11-201.us-west-2.compute.internal",
    "ip-10-42-12-87.us-west-2.compute.internal",
    "ip-10-42-13-142.us-west-2.compute.internal",
];

pub(crate) fn image(app: &str) -> String {
    format!("registry.example.com/{app}:1.4.2")
}

pub(crate) fn bad_image(app: &str, variant: u64) -> String {
    match variant % 3 {
        0 => format!("registry.example.com/{app}:1.4.3-rc"),
        1 => format!("{app}2:latest"),
        _ => format!("public.ecr.aws/example/{app}:v2"),
    }
}

pub(crate) fn back_off(container: &str, pod: &str, ns: &str, uid: &str) -> String {
    format!("Back-off restarting failed container {container} in pod {pod}_{ns}({uid})")
}

pub(crate) fn waiting_back_off(container: &str, pod: &str, ns: &str, uid: &str) -> String {
    format!("back-off 40s restarting failed container={container} pod={pod}_{ns}({uid})")
}

pub(crate) fn pull_failed(img: &str) -> String {
    let full = if img.contains('/') && img.split('/').next().is_some_and(|h| h.contains('.')) {
        img.to_string()
    } else {
        format!("docker.io/library/{img}")
    };
    format!(
        "Failed to pull image \"{img}\": rpc error: code = NotFound desc = failed to pull and \
         unpack image \"{full}\": failed to resolve reference \"{full}\": {full}: not found"
    )
}

pub(crate) fn probe_failure(variant: u64, ip: &str) -> (String, bool) {
    match variant % 4 {
        0 => (
            format!(
                "Readiness probe failed: Get \"http://{ip}:8080/healthz/ready\": dial tcp {ip}:8080: connect: connection refused"
            ),
            false,
        ),
        1 => (
            "Readiness probe failed: HTTP probe failed with statuscode: 503".to_string(),
            false,
        ),
        2 => (
            "Liveness probe failed: HTTP probe failed with statuscode: 500".to_string(),
            true,
        ),
        _ => (
            format!(
                "Liveness probe failed: Get \"http://{ip}:8080/actuator/health/liveness\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            ),
            true,
        ),
    }
}

pub(crate) fn failed_scheduling(variant: u64) -> String {
    let n = NODES.len();
    match variant % 4 {
        0 => format!(
            "0/{n} nodes are available: {n} Insufficient cpu. preemption: 0/{n} nodes are available: {n} No preemption victims found for incoming pod."
        ),
        1 => format!(
            "0/{n} nodes are available: {n} Insufficient memory. preemption: 0/{n} nodes are available: {n} No preemption victims found for incoming pod."
        ),
        2 => format!(
            "0/{n} nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/{n} nodes are available: {n} Preemption is not helpful for scheduling."
        ),
        _ => format!(
            "0/{n} nodes are available: {n} node(s) didn't match Pod's node affinity/selector. preemption: 0/{n} nodes are available: {n} Preemption is not helpful for scheduling."
        ),
    }
}

pub(crate) fn failed_mount(variant: u64, app: &str, suffix: &str) -> String {
    match variant % 3 {
        0 => format!("MountVolume.SetUp failed for volume \"config\" : configmap \"{app}-config\" not found"),
        1 => format!("MountVolume.SetUp failed for volume \"tls\" : secret \"{app}-tls\" not found"),
        _ => format!(
            "Unable to attach or mount volumes: unmounted volumes=[data], unattached volumes=[data kube-api-access-{suffix}]: timed out waiting for the condition"
        ),
    }
}

pub(crate) fn sandbox_failed(sandbox: &str) -> String {
    format!(
        "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to setup network \
         for sandbox \"{sandbox}\": plugin type=\"calico\" failed (add): error getting \
         ClusterInformation: connection is unauthorized: Unauthorized"
    )
}

/// Log lines a crashing app writes before it exits.
pub(crate) fn crash_log(app: &str, oom: bool) -> String {
    if oom {
        format!(
            "{{\"level\":\"info\",\"msg\":\"{app} loading dataset\"}}\n\
             {{\"level\":\"warn\",\"msg\":\"heap usage above 90%\"}}\n\
             java.lang.OutOfMemoryError: Java heap space\n"
        )
    } else {
        format!(
            "{{\"level\":\"info\",\"msg\":\"starting {app}\"}}\n\
             {{\"level\":\"error\",\"msg\":\"failed to connect to postgres: dial tcp 10.96.14.2:5432: connect: connection refused\"}}\n\
             panic: cannot start without database\n"
        )
    }
}

/// A Warning about a non-Pod object: (kind, namespaced, reason, message).
pub(crate) fn object_warning(variant: u64, ns: &str, app: &str) -> (&'static str, bool, &'static str, String) {
    match variant % 4 {
        0 => (
            "Node",
            false,
            "SystemOOM",
            format!(
                "System OOM encountered, victim process: {app}, pid: {}",
                4000 + variant % 900
            ),
        ),
        1 => (
            "Node",
            false,
            "InvalidDiskCapacity",
            "invalid capacity 0 on image filesystem".to_string(),
        ),
        2 => (
            "ReplicaSet",
            true,
            "FailedCreate",
            format!(
                "Error creating: pods \"{app}-\" is forbidden: exceeded quota: compute-resources, requested: limits.memory=2Gi, used: limits.memory=7Gi, limited: limits.memory=8Gi"
            ),
        ),
        _ => (
            "Deployment",
            true,
            "FailedCreate",
            format!("Error creating replica set for deployment {ns}/{app}: quota exceeded"),
        ),
    }
}
