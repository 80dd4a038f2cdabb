//! A Kubernetes API simulator for podwarn's tests and quickstart.
//!
//! It speaks the real wire protocol closely enough for `kubectl` and kube-rs: discovery,
//! core/v1 Events, Pods (with owners and container statuses), Pod logs, Namespaces, Nodes,
//! apps/v1 and batch/v1 workloads, coordination.k8s.io Leases, SelfSubjectAccessReview;
//! list with `resourceVersion`, `limit`/`continue` and field/label selectors; watch with
//! BOOKMARKs, `sendInitialEvents`, resumption and 410 Gone; bearer tokens and TLS.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use podwarn_testkit::{SimConfig, Simulator, Workload};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let sim = Simulator::start(SimConfig::default(), listener).await?;
//! sim.write_kubeconfig(std::path::Path::new("/tmp/sim.kubeconfig"))?;
//! let pods = sim.cluster().create(&Workload::deployment("shop", "checkout").replicas(2))?;
//! let ev = sim.cluster().emit_warning(&pods[0], "BackOff", "Back-off restarting failed container", Some("checkout"))?;
//! sim.faults().expire_versions();
//! assert_eq!(sim.cluster().emitted()[0].uid, ev.uid);
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # What it models, and where it stops
//!
//! - One global resourceVersion (like etcd); a bounded ring of changes per resource
//!   ([`SimConfig::watch_window`] entries, at most [`SimConfig::watch_window_age`] old) is
//!   the watch cache. A watch from an older version gets a
//!   200 and an ERROR event with a 410 `Expired` Status (`too old resource version: X (Y)`),
//!   as the real cacher answers; an Exact list or an expired `continue` gets HTTP 410.
//!   `continue` pages are one consistent snapshot, rebuilt from the change ring.
//! - Watch field selectors follow the cacher: an update that stops matching arrives as
//!   DELETED carrying the last matching state at the new resourceVersion.
//! - Events aggregate like the kubelet's correlator (same uid, `count` + 1, `lastTimestamp`
//!   moves); new-style events carry `eventTime`/`series` and no legacy timestamps. Events
//!   expire [`SimConfig::event_ttl`] after their last update (DELETED to watchers).
//! - kubectl gets server-side Tables (`-o wide` columns of the real printers); its
//!   protobuf SelfSubjectAccessReview is decoded; answers are always JSON. The kubeconfig is
//!   JSON (valid YAML). Not served: events.k8s.io, `/openapi/*` (404, which kubectl
//!   tolerates for get/logs/auth), protobuf responses, aggregated discovery (clients fall
//!   back to the legacy documents).
//! - Scenarios emit in 10 ms batches under one lock. An optimised build emits about
//!   100 000 warnings/s and holds `storm` at 20 000/s in real time; an unoptimised test
//!   build manages several thousand per second, so tests assert the per-tick schedule
//!   ([`ClusterHandle::drive_scenario`]) rather than wall-clock rates.
//!
//! # Control endpoint
//!
//! Tests in another process script the simulator with JSON under `/_sim` (same bearer token
//! as the API when one is configured). Every route answers JSON; errors are
//! `{"error": "..."}` with 400/404/409.
//!
//! | Route | Body | Effect |
//! |---|---|---|
//! | `GET /_sim/stats` | | resourceVersion, warning occurrences, stored events, scenario progress, [`FaultCounts`] |
//! | `POST /_sim/workloads` | [`Workload`] JSON (`kind`: deployment, statefulset, daemonset, job, cronjob, pod) | creates it; returns the [`PodRef`]s |
//! | `GET /_sim/pods` | | every [`PodRef`] |
//! | `POST /_sim/events` | `{namespace, pod, warning, reason, message, container?, component?, series?}` | emits (or repeats) a Pod event; returns [`EventRef`] |
//! | `POST /_sim/events/object` | `{kind, namespace, name, reason, message}` | Warning about a non-Pod object |
//! | `POST /_sim/events/repeat` | `{uid}` | same Event, count + 1 |
//! | `POST /_sim/events/delete` | `{uid}` | deletes it (DELETED to watchers) |
//! | `POST /_sim/events/expire` | | deletes every Event now |
//! | `POST /_sim/events/ttl` | `{seconds}` | sets the Event TTL |
//! | `GET /_sim/emitted` | | every [`EmittedRecord`] |
//! | `POST /_sim/pods/restart` | `{namespace, pod, container?, termination: {"reason":"OOMKilled"} \| {"reason":"Error","exit_code":N}}` | restart without an Event |
//! | `POST /_sim/pods/waiting` | `{namespace, pod, container?, reason, message}` | container waiting state |
//! | `POST /_sim/pods/logs` | `{namespace, pod, container?, current, previous?}` | sets logs |
//! | `POST /_sim/faults/drop-watches` | | [`FaultHandle::drop_all_watches`] |
//! | `POST /_sim/faults/reset-connections` | | [`FaultHandle::reset_connections`] (100 ms later, so the answer gets out) |
//! | `POST /_sim/faults/stall-watches` | `{millis?}` (absent: until cleared) | [`FaultHandle::stall_watches`] |
//! | `POST /_sim/faults/clear-stall` | | |
//! | `POST /_sim/faults/fail-requests` | `{status, millis, retry_after_secs?}` | [`FaultHandle::fail_requests`] |
//! | `POST /_sim/faults/clear-failures` | | |
//! | `POST /_sim/faults/expire-versions` | | [`FaultHandle::expire_versions`] |
//! | `POST /_sim/faults/silent-stale-watch` | `{on}` | [`FaultHandle::silent_stale_watch`] |
//! | `POST /_sim/faults/slow-responses` | `{millis}` | [`FaultHandle::slow_responses`] |
//! | `POST /_sim/faults/deny` / `allow` | `{verb, resource}`, for deny optionally `except_names: [..]` | [`FaultHandle::deny`], [`FaultHandle::deny_except`] / [`FaultHandle::allow`] |
//! | `POST /_sim/faults/clear` | | every fault off |
//! | `POST /_sim/scenario` | `{name, seed?, rate?}` | starts a [`Scenario`] |
//! | `DELETE /_sim/scenario` | | stops it |
//!
//! # Beyond the simulator
//!
//! [`harness`] runs the real binaries, [`pipeline`] wires simulator, collector and agent
//! together, and [`proxy`] sits between agent and collector to black-hole, reset or slow
//! the network on demand (the fault matrix, `tests/faults.rs`).

pub mod harness;
pub mod pipeline;
pub mod proxy;
mod sim;

pub use sim::{
    ClusterHandle, ContainerSpec, Denial, EmittedRecord, EventRef, FaultCounts, FaultHandle, InClusterEnv, Pacer,
    PodEvent, PodRef, Scenario, ScenarioStats, SimConfig, SimError, Simulator, Termination, Workload, WorkloadKind,
};
