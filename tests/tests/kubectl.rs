//! Real kubectl against the simulator: the fidelity bar from issue 3.

mod common;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use common::{Env, kubectl, kubectl_cmd, kubectl_path, kubectl_with, ok, start_default, stderr, stdout};
use podwarn_testkit::{Termination, Workload};
use serde_json::Value;
use tokio::io::AsyncReadExt as _;

fn uids(list: &Value) -> BTreeSet<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["metadata"]["uid"].as_str().expect("uid").to_string())
        .collect()
}

/// Pod warnings, Pod normals, a new-style warning and warnings about a Node and a Deployment.
async fn mixed_events(env: &Env) -> BTreeSet<String> {
    let c = env.sim.cluster();
    let pods = c
        .create(&Workload::deployment("shop", "checkout").replicas(2).node("node-a"))
        .unwrap();
    let back_off = c
        .emit_warning(
            &pods[0],
            "BackOff",
            "Back-off restarting failed container checkout",
            Some("checkout"),
        )
        .unwrap();
    let repeated = c
        .emit_warning(
            &pods[0],
            "BackOff",
            "Back-off restarting failed container checkout",
            Some("checkout"),
        )
        .unwrap();
    assert_eq!((repeated.uid.as_str(), repeated.count), (back_off.uid.as_str(), 2));
    let unhealthy = c
        .emit_warning(
            &pods[1],
            "Unhealthy",
            "Readiness probe failed: HTTP probe failed with statuscode: 503",
            Some("checkout"),
        )
        .unwrap();
    let scheduling = c
        .emit_series_warning(
            &pods[1],
            "FailedScheduling",
            "0/3 nodes are available: 3 Insufficient cpu.",
        )
        .unwrap();
    c.emit_normal(
        &pods[0],
        "Pulled",
        "Container image \"registry.example.com/checkout:1.0.0\" already present on machine",
        Some("checkout"),
    )
    .unwrap();
    c.emit_normal(&pods[1], "Started", "Started container checkout", Some("checkout"))
        .unwrap();
    c.emit_object_warning(
        "Node",
        "",
        "node-a",
        "SystemOOM",
        "System OOM encountered, victim process: java, pid: 4763",
    );
    c.emit_object_warning("Deployment", "shop", "checkout", "FailedCreate", "quota exceeded");
    [back_off.uid, unhealthy.uid, scheduling.uid].into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_field_selector_returns_exactly_the_pod_warnings() {
    let env = start_default().await;
    let expected = mixed_events(&env).await;
    let out = kubectl(
        &env,
        &[
            "get",
            "events",
            "-A",
            "-o",
            "json",
            "--field-selector",
            "type=Warning,involvedObject.kind=Pod",
        ],
    )
    .await;
    let list: Value = serde_json::from_str(&ok(&out)).expect("kubectl prints JSON");
    assert_eq!(uids(&list), expected);
    let repeated = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["reason"] == "BackOff")
        .unwrap();
    assert_eq!(repeated["count"], 2, "a repeat updates the same Event");

    let all = kubectl(&env, &["get", "events", "-A", "-o", "json"]).await;
    let all: Value = serde_json::from_str(&ok(&all)).unwrap();
    assert_eq!(
        all["items"].as_array().unwrap().len(),
        7,
        "3 pod warnings, 2 normals, 2 non-pod warnings"
    );

    let bad = kubectl(&env, &["get", "events", "-A", "--field-selector", "spec.foo=bar"]).await;
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("field label not supported: spec.foo"),
        "{}",
        stderr(&bad)
    );
    env.sim.shutdown().await;
}

/// Splits kubectl's stream of pretty-printed JSON objects.
fn parse_stream(buf: &[u8]) -> Vec<Value> {
    serde_json::Deserializer::from_slice(buf)
        .into_iter::<Value>()
        .map_while(Result::ok)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_watch_receives_events_emitted_after_it_started() {
    let env = start_default().await;
    let c = env.sim.cluster();
    let pods = c.create(&Workload::deployment("web", "frontend").replicas(2)).unwrap();
    let first = c
        .emit_warning(&pods[0], "Failed", "Error: ImagePullBackOff", Some("frontend"))
        .unwrap();

    let mut child = kubectl_cmd(&kubectl_path(), &env, &["get", "events", "-A", "--watch", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl starts");
    let mut out = child.stdout.take().unwrap();
    let mut buf = Vec::new();
    let mut read_until = async |pred: &dyn Fn(&[Value]) -> bool| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut chunk = [0u8; 8192];
        while !pred(&parse_stream(&buf)) {
            let n = tokio::time::timeout_at(deadline, out.read(&mut chunk))
                .await
                .expect("kubectl printed the expected objects in time")
                .expect("read kubectl stdout");
            assert!(n > 0, "kubectl exited early: {}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        }
        parse_stream(&buf)
    };
    let has = |uid: &str, count: i64| {
        let uid = uid.to_string();
        move |objs: &[Value]| {
            objs.iter()
                .any(|o| o["metadata"]["uid"] == uid.as_str() && o["count"] == count)
        }
    };
    read_until(&has(&first.uid, 1)).await;

    // Live updates after the initial list: a new Event and a repeat of the first.
    let second = c
        .emit_warning(
            &pods[1],
            "BackOff",
            "Back-off restarting failed container frontend",
            Some("frontend"),
        )
        .unwrap();
    let repeat = c.repeat_event(&first.uid).unwrap();
    assert_eq!(repeat.count, 2);
    read_until(&has(&second.uid, 1)).await;
    let objs = read_until(&has(&first.uid, 2)).await;
    assert!(objs.iter().all(|o| o["kind"] == "Event"), "only Events are printed");
    child.kill().await.ok();
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_pods_wide_prints_status_ip_and_node() {
    let env = start_default().await;
    let c = env.sim.cluster();
    let pods = c
        .create(
            &Workload::deployment("default", "api")
                .replicas(2)
                .node("worker-1")
                .node("worker-2"),
        )
        .unwrap();
    c.restart_container(&pods[0], "api", Termination::Error { exit_code: 1 })
        .unwrap();
    c.set_container_waiting(
        &pods[0],
        "api",
        "CrashLoopBackOff",
        "back-off 10s restarting failed container",
    )
    .unwrap();
    let out = ok(&kubectl(&env, &["get", "pods", "-o", "wide"]).await);
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        &header[..7],
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"],
        "{out}"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 2, "{out}");
    let crashing = rows.iter().find(|r| r[0] == pods[0].name).expect("first pod listed");
    assert_eq!(&crashing[1..4], ["0/1", "CrashLoopBackOff", "1"], "{out}");
    assert!(
        crashing.contains(&"worker-1") && crashing.iter().any(|c| c.starts_with("10.244.")),
        "{out}"
    );
    let healthy = rows.iter().find(|r| r[0] == pods[1].name).expect("second pod listed");
    assert_eq!(&healthy[1..4], ["1/1", "Running", "0"], "{out}");
    assert!(healthy.contains(&"worker-2"), "{out}");
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_previous_reads_the_previous_container_run() {
    let env = start_default().await;
    let c = env.sim.cluster();
    let pod = c
        .create(
            &Workload::pod("default", "worker")
                .container("app", "busybox:1.36")
                .container("sidecar", "envoy:1.30"),
        )
        .unwrap()
        .remove(0);
    c.set_logs(&pod, "app", "first run: starting\nfirst run: panic: boom\n", None);
    c.restart_container(&pod, "app", Termination::OOMKilled).unwrap();
    c.set_logs(&pod, "app", "second run: starting\n", None);

    let prev = ok(&kubectl(&env, &["logs", "--previous", "worker", "-c", "app"]).await);
    assert_eq!(prev, "first run: starting\nfirst run: panic: boom\n");
    let tail = ok(&kubectl(&env, &["logs", "--previous", "worker", "-c", "app", "--tail=1"]).await);
    assert_eq!(tail, "first run: panic: boom\n");
    let limited = ok(&kubectl(&env, &["logs", "--previous", "worker", "-c", "app", "--limit-bytes=5"]).await);
    assert_eq!(limited, "first");
    let current = ok(&kubectl(&env, &["logs", "worker", "-c", "app"]).await);
    assert_eq!(current, "second run: starting\n");
    let never = kubectl(&env, &["logs", "--previous", "worker", "-c", "sidecar"]).await;
    assert!(!never.status.success());
    assert!(
        stderr(&never).contains("previous terminated container \"sidecar\" in pod \"worker\" not found"),
        "{}",
        stderr(&never)
    );
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_auth_can_i_follows_denials_and_requests_get_403() {
    let env = start_default().await;
    let yes = kubectl(&env, &["auth", "can-i", "watch", "events"]).await;
    assert_eq!((yes.status.code(), stdout(&yes).trim()), (Some(0), "yes"));
    let all_ns = kubectl(&env, &["auth", "can-i", "list", "events", "--all-namespaces"]).await;
    assert_eq!(stdout(&all_ns).trim(), "yes");

    env.sim.faults().deny("watch", "events");
    env.sim.faults().deny("list", "events");
    let no = kubectl(&env, &["auth", "can-i", "watch", "events"]).await;
    assert_eq!(no.status.code(), Some(1), "{}", stderr(&no));
    assert!(stdout(&no).starts_with("no"), "{}", stdout(&no));
    assert_eq!(
        stdout(&kubectl(&env, &["auth", "can-i", "get", "pods"]).await).trim(),
        "yes"
    );

    let denied = kubectl(&env, &["get", "events"]).await;
    assert!(!denied.status.success());
    assert!(
        stderr(&denied).contains(
            "events is forbidden: User \"system:serviceaccount:podwarn:podwarn-agent\" cannot list resource \"events\" in API group \"\" in the namespace \"default\""
        ),
        "{}",
        stderr(&denied)
    );
    env.sim.faults().allow("watch", "events");
    let again = kubectl(&env, &["auth", "can-i", "watch", "events"]).await;
    assert_eq!(stdout(&again).trim(), "yes");
    env.sim.shutdown().await;
}

/// Older and newer kubectl releases (when installed side by side, as in the Cloud SDK)
/// list with field selectors and answer can-i the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_kubectl_versions_list_pod_warnings_and_answer_can_i() {
    let versions: Vec<_> = (27..=33)
        .map(|v| std::path::PathBuf::from(format!("/usr/lib/google-cloud-sdk/bin/kubectl.1.{v}")))
        .filter(|p| p.exists())
        .collect();
    if versions.is_empty() {
        eprintln!("no versioned kubectl binaries installed; the default kubectl is covered by the other tests");
        return;
    }
    let env = start_default().await;
    let expected = mixed_events(&env).await;
    for k in versions {
        let out = kubectl_with(
            &k,
            &env,
            &[
                "get",
                "events",
                "-A",
                "-o",
                "json",
                "--field-selector",
                "type=Warning,involvedObject.kind=Pod",
            ],
        )
        .await;
        let list: Value = serde_json::from_str(&ok(&out)).unwrap();
        assert_eq!(uids(&list), expected, "{}", k.display());
        let pods = ok(&kubectl_with(&k, &env, &["get", "pods", "-A", "-o", "wide"]).await);
        assert!(pods.contains("checkout-"), "{}: {pods}", k.display());
        let can = kubectl_with(&k, &env, &["auth", "can-i", "watch", "events"]).await;
        assert_eq!(stdout(&can).trim(), "yes", "{}: {}", k.display(), stderr(&can));
    }
    env.sim.shutdown().await;
}

/// Without `-o json` kubectl lists and watches as server-side Tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_watch_prints_table_rows_for_live_events() {
    let env = start_default().await;
    let c = env.sim.cluster();
    let pod = c.create(&Workload::deployment("web", "frontend")).unwrap().remove(0);
    c.emit_warning(&pod, "Failed", "Error: ImagePullBackOff", Some("frontend"))
        .unwrap();
    let mut child = kubectl_cmd(&kubectl_path(), &env, &["get", "events", "-A", "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl starts");
    let mut out = child.stdout.take().unwrap();
    let mut text = String::new();
    let mut read_until = async |needle: &str| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut chunk = [0u8; 4096];
        while !text.contains(needle) {
            let n = tokio::time::timeout_at(deadline, out.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("no {needle:?} in time:\n{text}"))
                .unwrap();
            assert!(n > 0, "kubectl exited early:\n{text}");
            text.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
        text.clone()
    };
    let first = read_until("Error: ImagePullBackOff").await;
    assert!(first.starts_with("NAMESPACE"), "{first}");
    assert!(first.contains(&format!("pod/{}", pod.name)), "{first}");
    c.emit_warning(
        &pod,
        "BackOff",
        "Back-off pulling image \"frontend:v2\"",
        Some("frontend"),
    )
    .unwrap();
    let later = read_until("Back-off pulling image").await;
    let row = later.lines().find(|l| l.contains("Back-off pulling image")).unwrap();
    assert!(row.contains("Warning") && row.contains("BackOff"), "{row}");
    child.kill().await.ok();
    env.sim.shutdown().await;
}
