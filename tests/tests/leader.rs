//! Deployment mode with leader election, and DaemonSet mode sharded by node:
//! real agents against one simulator and one collector. Whatever the
//! topology, every warning is stored exactly once, and none is shipped twice.

use podwarn_testkit::Workload;
use podwarn_testkit::harness::{Agent, eventually};
use podwarn_testkit::pipeline::{DELIVERY, Pipeline};
use std::time::{Duration, Instant};

const LEASE: &str = "3s";
const LEASE_DURATION: Duration = Duration::from_secs(3);

async fn leading(agent: &Agent) -> bool {
    agent.counter("podwarn_agent_leader").await >= 1.0
}

/// Events the collector answered as duplicates: copies that were shipped twice.
async fn collector_duplicates(p: &Pipeline) -> f64 {
    let admin = p.collector.as_ref().expect("collector").admin();
    let r = admin
        .client
        .get(format!("{}/metrics", admin.url))
        .send()
        .await
        .expect("metrics");
    let body = r.text().await.expect("metrics body");
    body.lines()
        .filter(|l| l.starts_with("podwarn_events_duplicate"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn lease_args(identity: &str) -> Vec<String> {
    [
        "--leader-elect",
        "--lease-namespace",
        "podwarn",
        "--lease-duration",
        LEASE,
        "--lease-identity",
        identity,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_handover_within_the_lease_duration_loses_and_doubles_nothing() {
    let p = Pipeline::without_agent().await;
    let a = p.spawn_agent("a", "sim", &strs(&lease_args("agent-a")));
    let b = p.spawn_agent("b", "sim", &strs(&lease_args("agent-b")));
    let pods = p
        .sim
        .cluster()
        .create(&Workload::deployment("shop", "api").replicas(2))
        .unwrap();
    let warn = |i: usize| {
        p.sim
            .cluster()
            .emit_warning(
                &pods[i % 2],
                "BackOff",
                &format!("Back-off restarting failed container ({i})"),
                None,
            )
            .unwrap()
    };
    let (leader, standby) = eventually(DELIVERY, "one leader", || async {
        match (leading(&a).await, leading(&b).await) {
            (true, false) => Some((true, false)),
            (false, true) => Some((false, true)),
            _ => None,
        }
    })
    .await;
    assert!(leader ^ standby);
    for i in 0..10 {
        warn(i);
    }
    p.assert_delivered_exactly().await;

    // kill -9 the leader: the standby must take over within the lease duration (plus a retry).
    let (dead, survivor) = if leader { (a, b) } else { (b, a) };
    dead.kill9();
    let killed = Instant::now();
    for i in 10..20 {
        warn(i);
    }
    eventually(DELIVERY, "the standby leads", || async {
        leading(&survivor).await.then_some(())
    })
    .await;
    let took = killed.elapsed();
    assert!(
        took <= LEASE_DURATION * 2 + Duration::from_secs(2),
        "handover took {took:?}"
    );
    p.assert_delivered_exactly().await;
    // The new leader relists and re-sends what the dead one had shipped; the collector's
    // dedup absorbs exactly those copies (stored counts above are exact) and no more.
    let absorbed = collector_duplicates(&p).await;
    assert!(
        absorbed <= 10.0,
        "{absorbed} copies absorbed; at most the 10 events shipped before the handover"
    );
    drop(survivor);
}

#[tokio::test(flavor = "multi_thread")]
async fn daemonset_agents_ship_each_warning_once_by_node_and_the_leader_ships_unscheduled_pods() {
    let p = Pipeline::without_agent().await;
    let nodes = ["node-1", "node-2", "node-3"];
    let agents: Vec<Agent> = nodes
        .iter()
        .map(|node| {
            let mut args = lease_args(node);
            args.extend([
                "--mode".into(),
                "daemonset".into(),
                "--node-name".into(),
                (*node).to_owned(),
            ]);
            p.spawn_agent(node, "sim", &strs(&args))
        })
        .collect();
    let mut spread = Workload::deployment("shop", "api").replicas(6);
    for node in nodes {
        spread = spread.node(node);
    }
    let pods = p.sim.cluster().create(&spread).unwrap();
    let pending = p
        .sim
        .cluster()
        .create(&Workload::deployment("shop", "big").replicas(2).unscheduled())
        .unwrap();
    eventually(DELIVERY, "a leader among the node agents", || async {
        let mut leaders = 0;
        for agent in &agents {
            leaders += usize::from(leading(agent).await);
        }
        (leaders == 1).then_some(())
    })
    .await;
    for (i, pod) in pods.iter().enumerate() {
        for j in 0..3 {
            p.sim
                .cluster()
                .emit_warning(pod, "Unhealthy", &format!("Liveness probe failed ({i}.{j})"), None)
                .unwrap();
        }
    }
    for pod in &pending {
        p.sim
            .cluster()
            .emit_warning(
                pod,
                "FailedScheduling",
                "0/3 nodes are available: 3 Insufficient memory.",
                None,
            )
            .unwrap();
    }
    p.assert_delivered_exactly().await;
    assert_eq!(
        collector_duplicates(&p).await,
        0.0,
        "a warning was shipped by more than one agent"
    );
    // Every node agent shipped its own share.
    for (agent, node) in agents.iter().zip(nodes) {
        assert!(
            agent.counter("podwarn_agent_events_shipped").await >= 6.0,
            "{node} shipped too little"
        );
    }
}
