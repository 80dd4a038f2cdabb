//! Wire-protocol semantics through kube-rs: pagination, selectors, watch transitions,
//! bookmarks, TTL expiry, auth, Leases, injected failures, the control endpoint.

mod common;

use std::time::Duration;

use common::{client, client_for, start, start_default};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, ObjectMeta, PostParams, VersionMatch, WatchEvent, WatchParams};
use podwarn_testkit::{SimConfig, Termination, Workload};

fn api_code(e: &kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("expected an API Status error, got {other:?}"),
    }
}

fn status(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API Status error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_are_one_consistent_snapshot_and_expire_with_410() {
    let env = start_default().await;
    let c = env.sim.cluster();
    let pods = c.create(&Workload::deployment("a", "x").replicas(5)).unwrap();
    for i in 0..25 {
        c.emit_warning(&pods[i % 5], "Unhealthy", &format!("probe failed {i}"), None)
            .unwrap();
    }
    let api = Api::<Event>::all(client(&env).await);
    let first = api.list(&ListParams::default().limit(10)).await.unwrap();
    let rv = first.metadata.resource_version.clone().unwrap();
    let mut names: Vec<_> = first.items.iter().map(|e| e.metadata.name.clone().unwrap()).collect();
    let mut token = first.metadata.continue_.clone();
    // Changes after the first page are not part of this list.
    c.emit_warning(&pods[0], "BackOff", "new after page one", None).unwrap();
    c.repeat_event(first.items[0].metadata.uid.as_deref().unwrap()).unwrap();
    while let Some(t) = token.filter(|t| !t.is_empty()) {
        let page = api
            .list(&ListParams::default().limit(10).continue_token(&t))
            .await
            .unwrap();
        assert_eq!(page.metadata.resource_version.as_deref(), Some(rv.as_str()));
        names.extend(page.items.iter().map(|e| e.metadata.name.clone().unwrap()));
        assert!(page.items.iter().all(|e| e.reason.as_deref() == Some("Unhealthy")));
        token = page.metadata.continue_.clone();
    }
    assert_eq!(names.len(), 25);
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "lists are in key order");

    let again = api.list(&ListParams::default().limit(10)).await.unwrap();
    let t = again.metadata.continue_.clone().unwrap();
    // Compaction after a write: the token's resourceVersion is now below the kept window.
    c.emit_warning(&pods[1], "BackOff", "before compaction", None).unwrap();
    env.sim.faults().expire_versions();
    let gone = status(
        api.list(&ListParams::default().limit(10).continue_token(&t))
            .await
            .unwrap_err(),
    );
    assert_eq!((gone.code, gone.reason.as_str()), (410, "Expired"));
    let exact = ListParams::default().at(&rv).matching(VersionMatch::Exact);
    let gone = status(api.list(&exact).await.unwrap_err());
    assert_eq!(gone.code, 410);
    assert!(
        gone.message.starts_with(&format!("too old resource version: {rv} (")),
        "{}",
        gone.message
    );
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_and_label_selectors_follow_the_real_server() {
    let env = start_default().await;
    let c = env.sim.cluster();
    let a = c
        .create(&Workload::deployment("ns1", "api").replicas(2).node("n1"))
        .unwrap();
    c.create(&Workload::statefulset("ns2", "db").replicas(1).node("n2"))
        .unwrap();
    c.create(&Workload::deployment("ns1", "stuck").unscheduled()).unwrap();
    let client = client(&env).await;
    let pods = Api::<Pod>::all(client.clone());
    let on_n1 = pods
        .list(&ListParams::default().fields("spec.nodeName=n1"))
        .await
        .unwrap();
    assert_eq!(on_n1.items.len(), 2);
    let pending = pods
        .list(&ListParams::default().fields("status.phase=Pending"))
        .await
        .unwrap();
    assert_eq!(pending.items.len(), 1);
    let not_api = pods.list(&ListParams::default().labels("app!=api")).await.unwrap();
    assert_eq!(not_api.items.len(), 2);
    let set = pods
        .list(&ListParams::default().labels("app in (api,db),pod-template-hash"))
        .await
        .unwrap();
    assert_eq!(set.items.len(), 2, "only Deployment pods carry pod-template-hash");
    let named = Api::<Pod>::namespaced(client.clone(), "ns1")
        .list(&ListParams::default().fields(&format!("metadata.name={}", a[0].name)))
        .await
        .unwrap();
    assert_eq!(named.items.len(), 1);

    let events = Api::<Event>::all(client);
    let bad = events
        .list(&ListParams::default().fields("involvedObject.foo=x"))
        .await
        .unwrap_err();
    let st = status(bad);
    assert_eq!((st.code, st.reason.as_str()), (400, "BadRequest"));
    assert_eq!(st.message, "field label not supported: involvedObject.foo");
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_turns_an_update_that_stops_matching_into_deleted() {
    let env = start_default().await;
    let c = env.sim.cluster();
    let pods = c.create(&Workload::deployment("default", "web").replicas(2)).unwrap();
    let api = Api::<Pod>::namespaced(client(&env).await, "default");
    let rv = c.resource_version().to_string();
    let wp = WatchParams::default().fields("status.phase=Running").timeout(10);
    let mut stream = api.watch(&wp, &rv).await.unwrap().boxed();
    c.set_pod_phase(
        &pods[0],
        "Failed",
        Some("Evicted"),
        Some("The node was low on resource: memory."),
    )
    .unwrap();
    c.restart_container(&pods[1], "web", Termination::OOMKilled).unwrap();
    let after = c.resource_version();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Deleted(p)) => {
            assert_eq!(p.metadata.name.as_deref(), Some(pods[0].name.as_str()));
            let status = p.status.unwrap();
            assert_eq!(status.phase.as_deref(), Some("Running"), "the last state that matched");
            assert!(p.metadata.resource_version.unwrap().parse::<u64>().unwrap() > rv.parse().unwrap());
        }
        other => panic!("expected DELETED, got {other:?}"),
    }
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Modified(p)) => {
            let cs = &p.status.unwrap().container_statuses.unwrap()[0];
            assert_eq!(cs.restart_count, 1);
            let t = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
            assert_eq!((t.reason.as_deref(), t.exit_code), (Some("OOMKilled"), 137));
            assert_eq!(p.metadata.resource_version, Some(after.to_string()));
        }
        other => panic!("expected MODIFIED, got {other:?}"),
    }
    assert_eq!(c.stored_events(), 0, "a restart emits no Event, like a real kubelet");
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_initial_events_and_timeout_seconds() {
    let env = start(SimConfig {
        bookmark_interval: Duration::from_millis(100),
        ..SimConfig::default()
    })
    .await;
    let c = env.sim.cluster();
    let pod = c.create(&Workload::pod("default", "p")).unwrap().remove(0);
    let ev = c
        .emit_warning(&pod, "BackOff", "Back-off restarting failed container p", Some("p"))
        .unwrap();
    let api = Api::<Event>::all(client(&env).await);
    let wp = WatchParams::default().initial_events().timeout(1);
    let started = tokio::time::Instant::now();
    let items: Vec<_> = api.watch(&wp, "0").await.unwrap().try_collect().await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "timeoutSeconds ends the stream"
    );
    match &items[0] {
        WatchEvent::Added(e) => assert_eq!(e.metadata.uid.as_deref(), Some(ev.uid.as_str())),
        other => panic!("expected the initial ADDED, got {other:?}"),
    }
    match &items[1] {
        WatchEvent::Bookmark(b) => {
            assert_eq!(
                b.metadata
                    .annotations
                    .get("k8s.io/initial-events-end")
                    .map(String::as_str),
                Some("true")
            );
            assert_eq!(b.metadata.resource_version, c.resource_version().to_string());
        }
        other => panic!("expected the initial-events-end bookmark, got {other:?}"),
    }
    let periodic = items[2..]
        .iter()
        .filter(|e| matches!(e, WatchEvent::Bookmark(_)))
        .count();
    assert!(periodic >= 3, "periodic bookmarks every 100ms, got {periodic}");
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_watch_sends_nothing_until_cleared_then_the_backlog() {
    let env = start(SimConfig {
        bookmark_interval: Duration::from_millis(50),
        ..SimConfig::default()
    })
    .await;
    let c = env.sim.cluster();
    let pod = c.create(&Workload::pod("default", "p")).unwrap().remove(0);
    let api = Api::<Event>::all(client(&env).await);
    let rv = c.resource_version().to_string();
    let mut stream = api
        .watch(&WatchParams::default().timeout(20), &rv)
        .await
        .unwrap()
        .boxed();
    env.sim.faults().stall_watches(None);
    let ev = c
        .emit_warning(&pod, "BackOff", "Back-off restarting failed container p", Some("p"))
        .unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(600), stream.next()).await;
    assert!(
        quiet.is_err(),
        "a stalled stream sends nothing, not even bookmarks: {quiet:?}"
    );
    env.sim.faults().clear_stall();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Added(e)) => assert_eq!(e.metadata.uid.as_deref(), Some(ev.uid.as_str())),
        other => panic!("expected the backlog, got {other:?}"),
    }
    // A timed stall ends by itself.
    env.sim.faults().stall_watches(Some(Duration::from_millis(300)));
    c.repeat_event(&ev.uid).unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(next, Some(WatchEvent::Modified(_)) | Some(WatchEvent::Bookmark(_))),
        "{next:?}"
    );
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_older_than_the_window_age_is_compacted() {
    let env = start(SimConfig {
        watch_window_age: Duration::from_millis(500),
        ..SimConfig::default()
    })
    .await;
    let c = env.sim.cluster();
    let pod = c.create(&Workload::pod("default", "p")).unwrap().remove(0);
    let old = c.resource_version().to_string();
    c.emit_warning(&pod, "BackOff", "Back-off restarting failed container p", Some("p"))
        .unwrap();
    let api = Api::<Event>::all(client(&env).await);
    let mut fresh = api
        .watch(&WatchParams::default().timeout(1), &old)
        .await
        .unwrap()
        .boxed();
    assert!(
        matches!(fresh.try_next().await.unwrap(), Some(WatchEvent::Added(_))),
        "still in the window"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut stale = api
        .watch(&WatchParams::default().timeout(1), &old)
        .await
        .unwrap()
        .boxed();
    match stale.try_next().await.unwrap() {
        Some(WatchEvent::Error(st)) => assert_eq!(st.code, 410),
        other => panic!("expected 410 after compaction, got {other:?}"),
    }
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_expire_after_their_ttl_with_deleted_to_watchers() {
    let env = start_default().await;
    let c = env.sim.cluster();
    let pod = c.create(&Workload::pod("default", "p")).unwrap().remove(0);
    let ev = c
        .emit_warning(&pod, "BackOff", "Back-off restarting failed container p", Some("p"))
        .unwrap();
    let api = Api::<Event>::all(client(&env).await);
    let rv = c.resource_version().to_string();
    let mut stream = api
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    c.set_event_ttl(Duration::from_millis(300));
    match tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        Some(WatchEvent::Deleted(e)) => assert_eq!(e.metadata.uid.as_deref(), Some(ev.uid.as_str())),
        other => panic!("expected DELETED, got {other:?}"),
    }
    assert_eq!(c.stored_events(), 0);
    assert_eq!(c.emitted().len(), 1, "the emitted log keeps expired events");
    let err = c.repeat_event(&ev.uid).unwrap_err();
    assert!(err.to_string().contains("not found"));
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_style_events_carry_series_and_no_legacy_timestamps() {
    let env = start_default().await;
    let c = env.sim.cluster();
    let pod = c
        .create(&Workload::deployment("default", "big").unscheduled())
        .unwrap()
        .remove(0);
    let first = c
        .emit_series_warning(
            &pod,
            "FailedScheduling",
            "0/3 nodes are available: 3 Insufficient memory.",
        )
        .unwrap();
    let second = c
        .emit_series_warning(
            &pod,
            "FailedScheduling",
            "0/3 nodes are available: 3 Insufficient memory.",
        )
        .unwrap();
    assert_eq!((first.uid.as_str(), second.count), (second.uid.as_str(), 2));
    let api = Api::<Event>::namespaced(client(&env).await, "default");
    let e = api.get(&first.name).await.unwrap();
    assert!(e.event_time.is_some());
    assert!(e.first_timestamp.is_none() && e.last_timestamp.is_none() && e.count.is_none());
    assert_eq!(e.series.unwrap().count, Some(2));
    assert_eq!(e.reporting_component.as_deref(), Some("default-scheduler"));
    assert_eq!(c.emitted()[0].count, 2);
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_references_lead_from_pod_to_deployment() {
    let env = start_default().await;
    let pod = env
        .sim
        .cluster()
        .create(&Workload::deployment("shop", "cart"))
        .unwrap()
        .remove(0);
    let client = client(&env).await;
    let p = Api::<Pod>::namespaced(client.clone(), "shop")
        .get(&pod.name)
        .await
        .unwrap();
    let owner = &p.metadata.owner_references.unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.controller), ("ReplicaSet", Some(true)));
    let rs = Api::<ReplicaSet>::namespaced(client.clone(), "shop")
        .get(&owner.name)
        .await
        .unwrap();
    assert_eq!(rs.metadata.uid.as_deref(), Some(owner.uid.as_str()));
    let d_ref = &rs.metadata.owner_references.unwrap()[0];
    assert_eq!(d_ref.kind, "Deployment");
    let d = Api::<Deployment>::namespaced(client, "shop")
        .get(&d_ref.name)
        .await
        .unwrap();
    assert_eq!(d.metadata.name.as_deref(), Some("cart"));
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_use_optimistic_concurrency() {
    let env = start_default().await;
    let api = Api::<Lease>::namespaced(client(&env).await, "podwarn");
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("podwarn-agent".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("agent-a".into()),
            lease_duration_seconds: Some(15),
            ..Default::default()
        }),
    };
    let created = api.create(&PostParams::default(), &lease).await.unwrap();
    let dup = api.create(&PostParams::default(), &lease).await.unwrap_err();
    assert_eq!(status(dup).reason, "AlreadyExists");
    let mut mine = created.clone();
    mine.spec.as_mut().unwrap().holder_identity = Some("agent-b".into());
    let updated = api
        .replace("podwarn-agent", &PostParams::default(), &mine)
        .await
        .unwrap();
    assert_ne!(updated.metadata.resource_version, created.metadata.resource_version);
    // A second writer still holding the old resourceVersion loses.
    let stale = api
        .replace("podwarn-agent", &PostParams::default(), &mine)
        .await
        .unwrap_err();
    let st = status(stale);
    assert_eq!((st.code, st.reason.as_str()), (409, "Conflict"));
    assert!(
        st.message
            .contains("leases.coordination.k8s.io \"podwarn-agent\": the object has been modified")
    );
    let got = api.get("podwarn-agent").await.unwrap();
    assert_eq!(got.spec.unwrap().holder_identity.as_deref(), Some("agent-b"));
    let missing = api.get("nope").await.unwrap_err();
    assert_eq!(api_code(&missing), 404);
    let patch = serde_json::json!({ "spec": { "holderIdentity": "agent-c" } });
    let patched = api
        .patch(
            "podwarn-agent",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    assert_eq!(patched.spec.unwrap().holder_identity.as_deref(), Some("agent-c"));
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_is_required_and_failures_are_status_objects() {
    let env = start_default().await;
    let kc = env.dir.path().join("no-token");
    let text = std::fs::read_to_string(&env.kubeconfig).unwrap();
    std::fs::write(&kc, text.replace(env.sim.token().unwrap(), "wrong-token")).unwrap();
    let bad = Api::<Pod>::all(client_for(&kc).await)
        .list(&ListParams::default())
        .await
        .unwrap_err();
    let st = status(bad);
    assert_eq!(
        (st.code, st.reason.as_str(), st.message.as_str()),
        (401, "Unauthorized", "Unauthorized")
    );

    // kube-rs 5 retries 429/503 and honours Retry-After: the call succeeds after the window.
    let api = Api::<Pod>::all(client(&env).await);
    env.sim
        .faults()
        .fail_requests(429, Duration::from_millis(1500), Some(Duration::from_secs(1)));
    let t = tokio::time::Instant::now();
    api.list(&ListParams::default()).await.unwrap();
    assert!(t.elapsed() >= Duration::from_secs(1), "retried after Retry-After");
    // 500 is not retried; without the retry layer 429/503 show their Status.
    env.sim.faults().fail_requests(500, Duration::from_secs(30), None);
    let st = status(api.list(&ListParams::default()).await.unwrap_err());
    assert_eq!((st.code, st.reason.as_str()), (500, "InternalError"));
    let mut cfg = common::config_for(&env.kubeconfig).await;
    cfg.default_retry = false;
    let raw = Api::<Pod>::all(kube::Client::try_from(cfg).unwrap());
    env.sim
        .faults()
        .fail_requests(429, Duration::from_secs(30), Some(Duration::from_secs(3)));
    let st = status(raw.list(&ListParams::default()).await.unwrap_err());
    assert_eq!((st.code, st.reason.as_str()), (429, "TooManyRequests"));
    assert_eq!(st.details.as_ref().map(|d| d.retry_after_seconds), Some(3));
    env.sim.faults().fail_requests(503, Duration::from_secs(30), None);
    assert_eq!(api_code(&raw.list(&ListParams::default()).await.unwrap_err()), 503);
    env.sim.faults().clear_failures();
    api.list(&ListParams::default()).await.unwrap();

    env.sim.faults().deny("list", "pods");
    let st = status(api.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(st.code, 403);
    assert!(
        st.message
            .ends_with("cannot list resource \"pods\" in API group \"\" at the cluster scope"),
        "{}",
        st.message
    );
    env.sim.faults().clear();

    env.sim.faults().slow_responses(Duration::from_millis(300));
    let t = tokio::time::Instant::now();
    api.list(&ListParams::default()).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_endpoint_scripts_the_same_things_over_http() {
    let env = start_default().await;
    let client = client(&env).await;
    let post = |path: &str, body: serde_json::Value| {
        http::Request::post(path)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .unwrap()
    };
    let pods: serde_json::Value = client
        .request(post(
            "/_sim/workloads",
            serde_json::json!({"kind": "deployment", "namespace": "shop", "name": "cart", "replicas": 2}),
        ))
        .await
        .unwrap();
    let pod = pods[0]["name"].as_str().unwrap().to_string();
    let ev: serde_json::Value = client
        .request(post(
            "/_sim/events",
            serde_json::json!({"namespace": "shop", "pod": pod, "warning": true, "reason": "BackOff", "message": "Back-off restarting failed container cart", "container": "cart"}),
        ))
        .await
        .unwrap();
    let uid = ev["uid"].as_str().unwrap();
    let again: serde_json::Value = client
        .request(post("/_sim/events/repeat", serde_json::json!({"uid": uid})))
        .await
        .unwrap();
    assert_eq!(again["count"], 2);
    let _: serde_json::Value = client
        .request(post(
            "/_sim/pods/restart",
            serde_json::json!({"namespace": "shop", "pod": pod, "termination": {"reason": "Error", "exit_code": 3}}),
        ))
        .await
        .unwrap();
    let _: serde_json::Value = client
        .request(post(
            "/_sim/faults/deny",
            serde_json::json!({"verb": "watch", "resource": "events"}),
        ))
        .await
        .unwrap();
    let emitted: Vec<podwarn_testkit::EmittedRecord> = client
        .request(http::Request::get("/_sim/emitted").body(vec![]).unwrap())
        .await
        .unwrap();
    assert_eq!(emitted, env.sim.cluster().emitted());
    assert_eq!((emitted[0].uid.as_str(), emitted[0].count), (uid, 2));
    let p = env.sim.cluster().pod("shop", &pod).unwrap();
    let st = status(
        Api::<Event>::all(client.clone())
            .watch(&WatchParams::default(), "0")
            .await
            .err()
            .expect("watch denied"),
    );
    assert_eq!(st.code, 403);
    let pods_api = Api::<Pod>::namespaced(client, "shop");
    let restarted = pods_api.get(&p.name).await.unwrap();
    let cs = &restarted.status.unwrap().container_statuses.unwrap()[0];
    assert_eq!(
        cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap().exit_code,
        3
    );
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_mode_and_in_cluster_files() {
    let env = start(SimConfig {
        tls: false,
        token: Some("in-cluster-token".into()),
        ..SimConfig::default()
    })
    .await;
    assert!(env.sim.url().starts_with("http://127.0.0.1:"));
    let dir = env.dir.path().join("sa");
    let ic = env.sim.write_in_cluster_env(&dir).unwrap();
    assert_eq!(std::fs::read_to_string(&ic.token_path).unwrap(), "in-cluster-token");
    assert_eq!(std::fs::read_to_string(&ic.namespace_path).unwrap(), "podwarn");
    assert!(ic.ca_path.is_none(), "no CA in plain HTTP mode");
    assert_eq!((ic.host.as_str(), ic.port), ("127.0.0.1", env.sim.addr().port()));
    let ns = Api::<k8s_openapi::api::core::v1::Namespace>::all(client(&env).await);
    env.sim.cluster().create_namespace("team-a");
    assert_eq!(ns.list(&ListParams::default()).await.unwrap().items.len(), 1);
    env.sim.shutdown().await;

    let tls = start_default().await;
    let ic = tls.sim.write_in_cluster_env(&tls.dir.path().join("sa")).unwrap();
    let ca = std::fs::read_to_string(ic.ca_path.unwrap()).unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
    // A client built like the in-cluster path: service URL, CA file, token file.
    let mut cfg = kube::Config::new(format!("https://{}:{}", ic.host, ic.port).parse().unwrap());
    cfg.root_cert = Some(vec![pem_to_der(&ca)]);
    cfg.auth_info.token = Some(std::fs::read_to_string(&ic.token_path).unwrap().into());
    let api = Api::<Pod>::all(kube::Client::try_from(cfg).unwrap());
    api.list(&ListParams::default()).await.unwrap();
    tls.sim.shutdown().await;
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    use base64::Engine as _;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).unwrap()
}

/// Reads a raw HTTP/1.1 watch until the server stops; returns everything received.
async fn raw_watch_until_closed(addr: std::net::SocketAddr, stop: impl FnOnce()) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /api/v1/events?watch=true HTTP/1.1\r\nHost: sim\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tcp.read(&mut buf).await.unwrap();
    let mut got = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
    assert!(got.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{got}");
    stop();
    // Until the connection closes, or the chunked body ends (the connection stays alive).
    while !got.ends_with("0\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("the stream ended in time")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => got.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_watches_end_cleanly_and_reset_connections_cut_mid_stream() {
    let env = start(SimConfig {
        tls: false,
        token: None,
        ..SimConfig::default()
    })
    .await;
    let f = env.sim.faults();
    let clean = raw_watch_until_closed(env.sim.addr(), || f.drop_all_watches()).await;
    assert!(
        clean.ends_with("0\r\n\r\n"),
        "a dropped watch ends its chunked body: {clean:?}"
    );
    let cut = raw_watch_until_closed(env.sim.addr(), || f.reset_connections()).await;
    assert!(!cut.ends_with("0\r\n\r\n"), "a reset cuts the body short: {cut:?}");
    env.sim.shutdown().await;
}
