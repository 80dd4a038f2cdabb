//! End to end: the simulator plays a cluster, the real `podwarn-agent` and
//! `podwarn-collector` binaries run on loopback, and every test compares what
//! the collector stored with what the simulator emitted, event by event.

use podwarn_testkit::harness::{self, eventually};
use podwarn_testkit::pipeline::{DELIVERY, Pipeline};
use podwarn_testkit::{PodRef, Termination, Workload};
use serde_json::Value;
use std::time::Duration;

fn crashloop(p: &Pipeline, namespace: &str, name: &str, replicas: u32) -> Vec<PodRef> {
    p.sim
        .cluster()
        .create(&Workload::deployment(namespace, name).replicas(replicas))
        .unwrap()
}

fn warn(p: &Pipeline, pod: &PodRef, i: usize) -> String {
    p.sim
        .cluster()
        .emit_warning(
            pod,
            "BackOff",
            &format!("Back-off restarting failed container {} ({i})", pod.containers[0]),
            Some(&pod.containers[0]),
        )
        .unwrap()
        .uid
}

#[tokio::test(flavor = "multi_thread")]
async fn invariant_3_dropped_watches_and_forced_410_lose_nothing() {
    let p = Pipeline::start(&[]).await;
    let pods = crashloop(&p, "shop", "api", 3);
    for i in 0..20 {
        warn(&p, &pods[i % 3], i);
    }
    p.sim.faults().drop_all_watches();
    for i in 20..40 {
        warn(&p, &pods[i % 3], i);
    }
    p.sim.faults().expire_versions();
    p.sim.faults().drop_all_watches();
    for i in 40..60 {
        warn(&p, &pods[i % 3], i);
    }
    p.assert_delivered_exactly().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invariant_4_an_event_updated_50_times_is_one_record_with_count_51() {
    let p = Pipeline::start(&[]).await;
    let pods = crashloop(&p, "shop", "api", 1);
    let uid = warn(&p, &pods[0], 0);
    for _ in 0..50 {
        p.sim.cluster().repeat_event(&uid).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    p.assert_delivered_exactly().await;
    assert_eq!(p.stored_events().await[&uid], 51);
}

#[tokio::test(flavor = "multi_thread")]
async fn invariant_3_agent_restart_loses_nothing_and_duplicates_nothing() {
    let mut p = Pipeline::start(&[]).await;
    let pods = crashloop(&p, "shop", "api", 2);
    for i in 0..10 {
        warn(&p, &pods[i % 2], i);
    }
    // A graceful stop, events while it is down, then a kill -9 mid-stream.
    let status = p.agent.take().unwrap().terminate();
    assert!(status.success(), "agent exit status {status}");
    for i in 10..20 {
        warn(&p, &pods[i % 2], i);
    }
    p.start_agent(&[]);
    for i in 20..30 {
        warn(&p, &pods[i % 2], i);
    }
    p.agent.take().unwrap().kill9();
    for i in 30..40 {
        warn(&p, &pods[i % 2], i);
    }
    p.start_agent(&[]);
    p.assert_delivered_exactly().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invariant_3_two_minute_collector_outage_is_spooled_and_replayed() {
    let mut p = Pipeline::start(&[]).await;
    let pods = crashloop(&p, "shop", "api", 4);
    warn(&p, &pods[0], 0);
    p.assert_delivered_exactly().await;
    p.collector.take().unwrap().kill9();
    // Two minutes of warnings while the collector is away.
    let started = std::time::Instant::now();
    let mut i = 1;
    while started.elapsed() < Duration::from_secs(120) {
        warn(&p, &pods[i % 4], i);
        i += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let agent = p.agent.as_ref().unwrap();
    assert!(
        agent.counter("podwarn_agent_events_spooled").await >= 1.0,
        "nothing was spooled"
    );
    p.restart_collector();
    p.assert_delivered_exactly().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invariant_3_a_watch_that_goes_silent_without_410_is_relisted() {
    // Long enough that no routine quiet-period relist lands inside the fault window:
    // only the silent watch can trigger the relist this test waits for.
    let p = Pipeline::start(&["--stale-watch-after", "20s"]).await;
    let pods = crashloop(&p, "shop", "api", 1);
    warn(&p, &pods[0], 0);
    p.assert_delivered_exactly().await;
    // The agent falls behind (its stream stalls while events come), cannot reconnect for a
    // while, and meanwhile its version is compacted away. With no stream open at the
    // compaction there is no 410 to see: its next watch starts from the expired version
    // and hits kubernetes/kubernetes#104171, a 200 followed by nothing.
    p.sim.faults().stall_watches(None);
    // Let streams already writing finish, so the stall really holds from here on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let agent = p.agent.as_ref().unwrap();
    let seen_before = agent.counter("podwarn_agent_events_seen").await;
    for i in 1..10 {
        warn(&p, &pods[0], i);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        agent.counter("podwarn_agent_events_seen").await,
        seen_before,
        "precondition: the stall held the events back"
    );
    p.sim.faults().fail_requests(503, Duration::from_secs(3), None);
    p.sim.faults().drop_all_watches();
    // Streams close asynchronously; reconnects fail meanwhile.
    tokio::time::sleep(Duration::from_millis(500)).await;
    p.sim.faults().silent_stale_watch(true);
    p.sim.faults().expire_versions();
    p.sim.faults().clear_stall();
    p.assert_delivered_exactly().await;
    let agent = p.agent.as_ref().unwrap();
    assert!(
        agent.counter("podwarn_agent_stale_watches").await >= 1.0,
        "the silent watch was not counted:\n{}",
        agent.metrics().await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn warnings_are_enriched_from_the_pod_watch_without_a_pod_lookup_each() {
    // The Pods exist before the agent starts, as in a running cluster.
    let mut p = Pipeline::without_agent().await;
    let pods = crashloop(&p, "shop", "api", 3);
    p.start_agent(&[]);
    for i in 0..30 {
        warn(&p, &pods[i % 3], i);
    }
    p.assert_delivered_exactly().await;
    for stored in p.admin().all_events("&namespace=shop").await {
        let pod = pods
            .iter()
            .find(|pod| stored["pod"] == pod.name.as_str())
            .expect("a known pod");
        assert_eq!(stored["workload"]["kind"], "Deployment", "{stored}");
        assert_eq!(stored["workload"]["name"], "api", "{stored}");
        assert_eq!(stored["node"].as_str(), pod.node.as_deref(), "{stored}");
        assert_eq!(stored["pod_uid"], pod.uid.as_str(), "{stored}");
    }
    // The Pod watch's index answered: no Pod was read, the ReplicaSet once.
    let agent = p.agent.as_ref().unwrap();
    let metrics = agent.metrics().await;
    assert_eq!(
        agent
            .counter("podwarn_agent_api_requests_total{request=\"get pod\"}")
            .await,
        0.0,
        "{metrics}"
    );
    assert_eq!(
        agent
            .counter("podwarn_agent_api_requests_total{request=\"get replicaset\"}")
            .await,
        1.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn oom_kill_without_any_warning_event_is_stored_as_oomkilled() {
    let p = Pipeline::start(&[]).await;
    let pods = crashloop(&p, "shop", "api", 1);
    p.sim
        .cluster()
        .set_logs(&pods[0], &pods[0].containers[0], "", Some("allocating 2GiB\nKilled\n"));
    let admin = p.admin();
    let container = &pods[0].containers[0];
    p.sim
        .cluster()
        .restart_container(&pods[0], container, Termination::OOMKilled)
        .unwrap();
    // Real restarts are seconds apart (crash-loop backoff): let the agent see each one.
    eventually(DELIVERY, "the OOM kill", || async {
        (admin.all_events("&namespace=shop").await.len() == 1).then_some(())
    })
    .await;
    p.sim
        .cluster()
        .restart_container(&pods[0], container, Termination::Error { exit_code: 3 })
        .unwrap();
    let stored = eventually(DELIVERY, "two pod-status warnings", || async {
        let events: Vec<Value> = admin.all_events("&namespace=shop").await;
        (events.len() == 2).then_some(events)
    })
    .await;
    let oom = stored
        .iter()
        .find(|e| e["reason"] == "OOMKilled")
        .expect("an OOMKilled record");
    assert_eq!(oom["incident_type"], "OOMKilled");
    assert_eq!(oom["workload"]["kind"], "Deployment");
    assert_eq!(oom["workload"]["name"], "api");
    assert_eq!(oom["container"], pods[0].containers[0].as_str());
    let failed = stored
        .iter()
        .find(|e| e["reason"] == "Error")
        .expect("a non-zero exit record");
    assert_eq!(failed["incident_type"], "ContainerFailed");
    // The simulator emitted no Warning event at all for these.
    assert!(p.emitted_warnings().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn normal_events_and_warnings_about_other_objects_are_never_stored() {
    let p = Pipeline::start(&["--namespace", "shop,billing", "--exclude-namespace", "billing"]).await;
    let shop = crashloop(&p, "shop", "api", 1);
    let billing = crashloop(&p, "billing", "invoices", 1);
    let other = crashloop(&p, "elsewhere", "x", 1);
    let cluster = p.sim.cluster();
    cluster
        .emit_normal(&shop[0], "Pulled", "Successfully pulled image", None)
        .unwrap();
    cluster.emit_object_warning("Node", "default", "sim-node-1", "NodeNotReady", "Node is not ready");
    warn(&p, &billing[0], 1);
    warn(&p, &other[0], 2);
    let wanted = warn(&p, &shop[0], 3);
    let admin = p.admin();
    eventually(DELIVERY, "the one shop warning", || async {
        let events = admin.all_events("").await;
        (!events.is_empty()).then_some(events)
    })
    .await;
    // Give the others time to (wrongly) arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stored: Vec<Value> = admin.all_events("").await;
    assert_eq!(stored.len(), 1, "{stored:#?}");
    assert_eq!(stored[0]["uid"], wanted.as_str());
}

fn check_output(p: &Pipeline, extra: &[&str]) -> (i32, String) {
    let output = std::process::Command::new(harness::binary("podwarn-agent"))
        .arg("check")
        .args(["--kubeconfig", &p.kubeconfig.display().to_string()])
        .args(extra)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn check_reports_a_denied_permission_with_its_rbac_rule_and_an_unreachable_collector() {
    let p = Pipeline::start(&[]).await;
    let cert = p.cert_dir.display().to_string();
    let url = format!("https://{}", p.collector_addr);
    let (code, out) = check_output(&p, &["--collector", &url, "--cert-dir", &cert]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("[ok]   API server reachable"), "{out}");

    p.sim.faults().deny("watch", "events");
    p.sim.faults().deny("get", "pods/log");
    let (code, out) = check_output(&p, &["--collector", &url, "--cert-dir", &cert]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[FAIL] permission: get/list/watch events"), "{out}");
    assert!(out.contains("missing: watch"), "{out}");
    assert!(out.contains("resources: [\"events\"]"), "{out}");
    assert!(out.contains("[warn] permission: get pods/log"), "{out}");
    p.sim.faults().clear();

    // With leader election, the Lease's write permissions are needed too.
    let (code, out) = check_output(&p, &["--leader-elect", "--lease-namespace", "podwarn"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("[ok]   permission: get/create/update leases.coordination.k8s.io (namespace podwarn)"),
        "{out}"
    );
    p.sim.faults().deny("update", "leases");
    let (code, out) = check_output(&p, &["--leader-elect", "--lease-namespace", "podwarn"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("[FAIL] permission: get/create/update leases.coordination.k8s.io"),
        "{out}"
    );
    assert!(out.contains("missing: update"), "{out}");
    assert!(out.contains("apiGroups: [\"coordination.k8s.io\"]"), "{out}");
    // As the shipped Role: create on any Lease, get and update on this one.
    assert!(out.contains("verbs: [\"create\"]"), "{out}");
    assert!(out.contains("resourceNames: [\"podwarn-agent\"]"), "{out}");
    assert!(out.contains("verbs: [\"get\", \"update\"]"), "{out}");
    p.sim.faults().clear();

    // The shipped Role grants get and update on one Lease by name; check must ask
    // for that name, and fails for a Lease the Role does not name.
    for verb in ["get", "update"] {
        p.sim.faults().deny_except(verb, "leases", &["podwarn-agent"]);
    }
    let (code, out) = check_output(&p, &["--leader-elect", "--lease-namespace", "podwarn"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = check_output(
        &p,
        &[
            "--leader-elect",
            "--lease-namespace",
            "podwarn",
            "--lease-name",
            "other",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("missing: get, update"), "{out}");
    assert!(out.contains("resourceNames: [\"other\"]"), "{out}");
    p.sim.faults().clear();

    // Nothing listens on this port: the collector is unreachable.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (code, out) = check_output(&p, &["--collector", &format!("https://{closed}"), "--cert-dir", &cert]);
    assert_eq!(code, 1, "{out}");
    assert!(out.to_lowercase().contains("refused"), "{out}");
}
