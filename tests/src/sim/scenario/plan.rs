//! The generator: lays a scenario's cluster out and turns "N events due" into concrete
//! actions (emits, restarts, waiting states, logs). All choices come from the seeded RNG and
//! per-pod counters, never from wall-clock time, so a seed replays the same sequence.

use k8s_openapi::api::core::v1::Pod;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use super::super::cluster::{PodEvent, emit_for_object, emit_for_pod};
use super::super::pods::{self, Termination};
use super::super::store::{State, StoreError};
use super::super::workloads::{self, Workload, WorkloadKind, safe_suffix, stable_hash};
use super::Scenario;
use super::catalog;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Healthy,
    CrashLoop,
    OomKill,
    ImagePull,
    Probe,
    Unschedulable,
    Mount,
    Sandbox,
}

const FAILING: [Mode; 7] = [
    Mode::CrashLoop,
    Mode::OomKill,
    Mode::ImagePull,
    Mode::Probe,
    Mode::Unschedulable,
    Mode::Mount,
    Mode::Sandbox,
];

#[derive(Debug)]
struct Slot {
    ns: String,
    pod: String,
    uid: String,
    container: String,
    app: String,
    image: String,
    ip: String,
    node: String,
    mode: Mode,
    hits: u64,
    variant: u64,
}

/// One step the generator applies under the store lock.
#[derive(Debug)]
pub(crate) enum Action {
    Emit(usize, PodEvent),
    Object {
        kind: &'static str,
        ns: String,
        name: String,
        reason: &'static str,
        message: String,
    },
    Restart(usize, Termination),
    Waiting(usize, &'static str, String),
    Log(usize, String),
}

/// Scenario state: the pods it drives and its RNG.
#[derive(Debug)]
pub(crate) struct Generator {
    rng: StdRng,
    slots: Vec<Slot>,
    failing: Vec<usize>,
    normal_ratio: f64,
    object_ratio: f64,
    restart_every: u64,
}

struct Layout {
    ns: String,
    app: String,
    kind: WorkloadKind,
    replicas: u32,
    mode: Mode,
}

fn l(ns: &str, app: &str, kind: WorkloadKind, replicas: u32, mode: Mode) -> Layout {
    Layout {
        ns: ns.to_string(),
        app: app.to_string(),
        kind,
        replicas,
        mode,
    }
}

fn layout(scenario: Scenario, rng: &mut StdRng) -> Vec<Layout> {
    use WorkloadKind::*;
    match scenario {
        Scenario::Quiet => vec![
            l("shop", "cart", Deployment, 2, Mode::Healthy),
            l("shop", "catalog", Deployment, 2, Mode::Healthy),
            l("web", "frontend", Deployment, 3, Mode::Healthy),
            l("data", "session-store", StatefulSet, 3, Mode::Healthy),
            l("monitoring", "metrics-exporter", DaemonSet, 1, Mode::Healthy),
        ],
        Scenario::Crashloop => vec![
            l("shop", "checkout", Deployment, 3, Mode::CrashLoop),
            l("shop", "cart", Deployment, 2, Mode::Healthy),
        ],
        Scenario::Oomkill => vec![
            l("analytics", "report-builder", Deployment, 2, Mode::OomKill),
            l("data", "session-store", StatefulSet, 1, Mode::Healthy),
        ],
        Scenario::Imagepull => vec![
            l("web", "frontend", Deployment, 2, Mode::ImagePull),
            l("web", "api-gateway", Deployment, 2, Mode::Healthy),
        ],
        Scenario::Mixed => {
            let modes = [
                Mode::CrashLoop,
                Mode::CrashLoop,
                Mode::OomKill,
                Mode::ImagePull,
                Mode::ImagePull,
                Mode::Probe,
                Mode::Probe,
                Mode::Unschedulable,
                Mode::Mount,
                Mode::Sandbox,
                Mode::Healthy,
                Mode::Healthy,
                Mode::Healthy,
            ];
            let mut out: Vec<Layout> = modes
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let ns = catalog::NAMESPACES[rng.random_range(0..catalog::NAMESPACES.len())];
                    let kind = if i == 5 { StatefulSet } else { Deployment };
                    l(ns, catalog::APPS[i], kind, rng.random_range(1..=3), *m)
                })
                .collect();
            out.push(l("batch", "ledger-reconcile", CronJob, 1, Mode::CrashLoop));
            out.push(l("monitoring", "metrics-exporter", DaemonSet, 1, Mode::Healthy));
            out
        }
        Scenario::Storm => (0..64)
            .map(|i| {
                let ns = catalog::NAMESPACES[i % catalog::NAMESPACES.len()];
                let app = format!("{}-{}", catalog::APPS[i % catalog::APPS.len()], i / catalog::APPS.len());
                let mode = FAILING[rng.random_range(0..FAILING.len())];
                l(ns, &app, Deployment, 4, mode)
            })
            .collect(),
    }
}

impl Generator {
    /// Creates the scenario's workloads and the generator driving them.
    pub(crate) fn setup(state: &mut State, scenario: Scenario, seed: u64) -> Result<Self, StoreError> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut slots = Vec::new();
        for lay in layout(scenario, &mut rng) {
            let mut w = Workload {
                kind: lay.kind,
                namespace: lay.ns.clone(),
                name: lay.app.clone(),
                replicas: lay.replicas,
                containers: Vec::new(),
                nodes: catalog::NODES.iter().map(|n| n.to_string()).collect(),
                unscheduled: lay.mode == Mode::Unschedulable,
                labels: Default::default(),
            };
            let image = if lay.mode == Mode::ImagePull {
                catalog::bad_image(&lay.app, rng.random())
            } else {
                catalog::image(&lay.app)
            };
            w = w.container(&lay.app, &image);
            for p in workloads::create(state, &w)? {
                let ip = state
                    .get::<Pod>(&p.namespace, &p.name)
                    .and_then(|pod| pod.status.as_ref()?.pod_ip.clone())
                    .unwrap_or_else(|| "10.244.0.10".to_string());
                slots.push(Slot {
                    ns: p.namespace.clone(),
                    container: p.container().to_string(),
                    node: p.node.clone().unwrap_or_default(),
                    pod: p.name,
                    uid: p.uid,
                    app: lay.app.clone(),
                    image: image.clone(),
                    ip,
                    mode: lay.mode,
                    hits: 0,
                    variant: rng.random_range(0..1000),
                });
            }
        }
        let failing = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.mode != Mode::Healthy)
            .map(|(i, _)| i)
            .collect();
        let (normal_ratio, object_ratio, restart_every) = match scenario {
            Scenario::Storm => (0.0, 0.0, 200),
            Scenario::Mixed => (0.3, 0.02, 3),
            _ => (0.3, 0.0, 3),
        };
        Ok(Self {
            rng,
            slots,
            failing,
            normal_ratio,
            object_ratio,
            restart_every,
        })
    }

    /// Actions for `n` primary events (Warnings; Normals for `quiet`).
    pub(crate) fn plan(&mut self, n: u64) -> Vec<Action> {
        let mut out = Vec::with_capacity(n as usize);
        for _ in 0..n {
            if self.failing.is_empty() {
                let i = self.rng.random_range(0..self.slots.len());
                let which = self.rng.random_range(0..4);
                self.normal(i, which, &mut out);
            } else if self.object_ratio > 0.0 && self.rng.random_bool(self.object_ratio) {
                self.object_warning(&mut out);
            } else {
                let i = self.failing[self.rng.random_range(0..self.failing.len())];
                self.failure(i, &mut out);
            }
        }
        out
    }

    fn normal(&mut self, i: usize, which: u32, out: &mut Vec<Action>) {
        let s = &self.slots[i];
        let c = Some(s.container.clone());
        let (reason, message, container, component) = match which {
            0 => (
                "Pulled",
                format!("Container image \"{}\" already present on machine", s.image),
                c,
                None,
            ),
            1 => ("Created", format!("Created container: {}", s.container), c, None),
            2 => ("Started", format!("Started container {}", s.container), c, None),
            _ => (
                "Scheduled",
                format!("Successfully assigned {}/{} to {}", s.ns, s.pod, s.node),
                None,
                Some("default-scheduler".to_string()),
            ),
        };
        out.push(Action::Emit(
            i,
            PodEvent {
                warning: false,
                reason: reason.to_string(),
                message,
                container,
                component,
                series: false,
            },
        ));
    }

    fn maybe_normals(&mut self, i: usize, out: &mut Vec<Action>) {
        if self.normal_ratio > 0.0 && self.rng.random_bool(self.normal_ratio) {
            let which = self.rng.random_range(0..3);
            self.normal(i, which, out);
        }
    }

    fn object_warning(&mut self, out: &mut Vec<Action>) {
        let i = self.failing[self.rng.random_range(0..self.failing.len())];
        let variant: u64 = self.rng.random();
        let s = &self.slots[i];
        let (kind, namespaced, reason, message) = catalog::object_warning(variant, &s.ns, &s.app);
        let name = match kind {
            "Node" => catalog::NODES[(variant % catalog::NODES.len() as u64) as usize].to_string(),
            "ReplicaSet" => format!(
                "{}-{}",
                s.app,
                safe_suffix(stable_hash(&[&s.ns, &s.app, "template"]), 10)
            ),
            _ => s.app.clone(),
        };
        out.push(Action::Object {
            kind,
            ns: if namespaced { s.ns.clone() } else { String::new() },
            name,
            reason,
            message,
        });
    }

    fn failure(&mut self, i: usize, out: &mut Vec<Action>) {
        self.slots[i].hits += 1;
        let every = self.restart_every;
        let s = &self.slots[i];
        let h = s.hits;
        let c = s.container.clone();
        let warn = |reason: &str, message: String, container: Option<String>| {
            Action::Emit(
                i,
                PodEvent {
                    container,
                    ..PodEvent::warning(reason, &message, None)
                },
            )
        };
        match s.mode {
            Mode::CrashLoop | Mode::OomKill => {
                if (h - 1).is_multiple_of(every) {
                    let oom = s.mode == Mode::OomKill;
                    out.push(Action::Log(i, catalog::crash_log(&s.app, oom)));
                    let how = if oom {
                        Termination::OOMKilled
                    } else {
                        Termination::Error {
                            exit_code: [1, 2, 255][(s.variant % 3) as usize],
                        }
                    };
                    out.push(Action::Restart(i, how));
                    let msg = catalog::waiting_back_off(&c, &s.pod, &s.ns, &s.uid);
                    out.push(Action::Waiting(i, "CrashLoopBackOff", msg));
                }
                let msg = catalog::back_off(&c, &s.pod, &s.ns, &s.uid);
                out.push(warn("BackOff", msg, Some(c)));
            }
            Mode::ImagePull => {
                if (h - 1).is_multiple_of(every) {
                    let msg = format!("Back-off pulling image \"{}\"", s.image);
                    out.push(Action::Waiting(i, "ImagePullBackOff", msg));
                }
                let msg = match h % 3 {
                    1 => catalog::pull_failed(&s.image),
                    2 => "Error: ErrImagePull".to_string(),
                    _ => "Error: ImagePullBackOff".to_string(),
                };
                out.push(warn("Failed", msg, Some(c)));
            }
            Mode::Probe => {
                let (msg, liveness) = catalog::probe_failure(s.variant * 2 + h % 2, &s.ip);
                if liveness && h.is_multiple_of(every * 2) {
                    out.push(Action::Restart(i, Termination::Error { exit_code: 137 }));
                }
                out.push(warn("Unhealthy", msg, Some(c)));
            }
            Mode::Unschedulable => {
                out.push(Action::Emit(
                    i,
                    PodEvent {
                        component: Some("default-scheduler".to_string()),
                        series: true,
                        ..PodEvent::warning("FailedScheduling", &catalog::failed_scheduling(s.variant), None)
                    },
                ));
            }
            Mode::Mount => {
                let suffix = safe_suffix(stable_hash(&[&s.pod]), 5);
                out.push(warn(
                    "FailedMount",
                    catalog::failed_mount(s.variant + h % 2, &s.app, &suffix),
                    None,
                ));
            }
            Mode::Sandbox => {
                let sandbox = format!("{:016x}{:016x}", stable_hash(&[&s.pod]), stable_hash(&[&s.uid]));
                out.push(warn("FailedCreatePodSandBox", catalog::sandbox_failed(&sandbox), None));
            }
            Mode::Healthy => {}
        }
        if self.slots[i].mode != Mode::Unschedulable {
            self.maybe_normals(i, out);
        }
    }

    /// Applies planned actions; pods deleted by a test meanwhile are skipped.
    pub(crate) fn apply(&self, state: &mut State, actions: &[Action]) {
        for a in actions {
            match a {
                Action::Emit(i, ev) => {
                    let s = &self.slots[*i];
                    let _ = emit_for_pod(state, &s.ns, &s.pod, ev);
                }
                Action::Object {
                    kind,
                    ns,
                    name,
                    reason,
                    message,
                } => {
                    emit_for_object(state, kind, ns, name, true, reason, message);
                }
                Action::Restart(i, how) => {
                    let s = &self.slots[*i];
                    pods::restart(state, &s.ns, &s.pod, &s.container, how);
                }
                Action::Waiting(i, reason, message) => {
                    let s = &self.slots[*i];
                    pods::set_waiting(state, &s.ns, &s.pod, &s.container, reason, message);
                }
                Action::Log(i, text) => {
                    let s = &self.slots[*i];
                    state.logs.append(&s.ns, &s.pod, &s.container, text);
                }
            }
        }
    }
}
