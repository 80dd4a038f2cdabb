//! What the simulated warnings look like: clusters, namespaces, workloads and
//! their pods, ten kinds of Pod warnings with the reasons, messages and crash
//! logs real clusters produce, and the protocol v1 body that carries them.

use rand::Rng;
use rand::rngs::SmallRng;
use serde::Serialize;

/// Namespaces of every cluster.
pub const NAMESPACES: [&str; 12] = [
    "shop",
    "payments",
    "checkout",
    "search",
    "auth",
    "monitoring",
    "logging",
    "ingress-nginx",
    "kube-system",
    "data",
    "ml-serving",
    "batch",
];

/// Workloads of every namespace: name and owner kind after the owner chain.
const WORKLOADS: [(&str, Owner); 10] = [
    ("api", Owner::Deployment),
    ("web", Owner::Deployment),
    ("worker", Owner::Deployment),
    ("gateway", Owner::Deployment),
    ("consumer", Owner::Deployment),
    ("indexer", Owner::Deployment),
    ("db", Owner::StatefulSet),
    ("cache", Owner::StatefulSet),
    ("node-exporter", Owner::DaemonSet),
    ("nightly-report", Owner::CronJob),
];

#[derive(Debug, Clone, Copy)]
enum Owner {
    Deployment,
    StatefulSet,
    DaemonSet,
    CronJob,
}

impl Owner {
    fn kind(self) -> &'static str {
        match self {
            Owner::Deployment => "Deployment",
            Owner::StatefulSet => "StatefulSet",
            Owner::DaemonSet => "DaemonSet",
            Owner::CronJob => "CronJob",
        }
    }
}

/// A cluster name for index `i`: `prod-eu-west-1`, `staging-us-east-2` …
pub fn cluster_name(i: usize) -> String {
    const ENVS: [&str; 2] = ["prod", "staging"];
    const REGIONS: [&str; 5] = ["eu-west", "us-east", "ap-south", "eu-central", "us-west"];
    format!("{}-{}-{}", ENVS[i % 2], REGIONS[(i / 2) % 5], i / 10 + 1)
}

/// What kind of warning an event is; fixes reason, incident type, severity and message.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    CrashLoop,
    Readiness,
    Liveness,
    ImagePull,
    PullBackOff,
    Scheduling,
    Mount,
    OomKilled,
    Sandbox,
    Evicted,
}

/// How often each kind occurs, in percent.
const MIX: [(Kind, u32); 10] = [
    (Kind::CrashLoop, 26),
    (Kind::Readiness, 16),
    (Kind::Liveness, 8),
    (Kind::ImagePull, 7),
    (Kind::PullBackOff, 7),
    (Kind::Scheduling, 8),
    (Kind::Mount, 8),
    (Kind::OomKilled, 8),
    (Kind::Sandbox, 6),
    (Kind::Evicted, 6),
];

impl Kind {
    /// A kind, drawn by [`MIX`].
    pub fn pick(rng: &mut SmallRng) -> Kind {
        let mut r = rng.random_range(0..100);
        for (kind, share) in MIX {
            if r < share {
                return kind;
            }
            r -= share;
        }
        Kind::CrashLoop
    }

    /// Reason, incident type, severity.
    fn labels(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Kind::CrashLoop => ("BackOff", "CrashLoopBackOff", "high"),
            Kind::Readiness => ("Unhealthy", "Unhealthy", "medium"),
            Kind::Liveness => ("Unhealthy", "Unhealthy", "high"),
            Kind::ImagePull => ("Failed", "ImagePullBackOff", "high"),
            Kind::PullBackOff => ("BackOff", "ImagePullBackOff", "high"),
            Kind::Scheduling => ("FailedScheduling", "FailedScheduling", "medium"),
            Kind::Mount => ("FailedMount", "FailedMount", "medium"),
            Kind::OomKilled => ("OOMKilled", "OOMKilled", "critical"),
            Kind::Sandbox => ("FailedCreatePodSandBox", "FailedCreatePodSandBox", "high"),
            Kind::Evicted => ("Evicted", "Evicted", "high"),
        }
    }
}

/// A pod on an agent's node.
#[derive(Debug)]
pub struct Pod {
    /// Its namespace.
    pub namespace: &'static str,
    /// Its name.
    pub name: String,
    owner: Owner,
    workload: &'static str,
    uid: String,
    ip: [u8; 3],
}

impl Pod {
    /// Pod `p` on the node of agent `agent`, in cluster number `cluster`.
    pub fn on_node(cluster: usize, agent: usize, p: usize, rng: &mut SmallRng) -> Pod {
        let namespace = NAMESPACES[rng.random_range(0..NAMESPACES.len())];
        let (workload, owner) = WORKLOADS[rng.random_range(0..WORKLOADS.len())];
        // The ReplicaSet (or Job) hash is per cluster and workload, the suffix per pod.
        let template = mix64(((cluster as u64) << 32) ^ hash(namespace) ^ hash(workload).rotate_left(17));
        let h = mix64(((agent as u64) << 16) | p as u64);
        let name = match owner {
            Owner::Deployment => format!("{workload}-{}-{}", suffix(template, 10), suffix(h, 5)),
            Owner::StatefulSet => format!("{workload}-{}", h % 5),
            Owner::DaemonSet => format!("{workload}-{}", suffix(h, 5)),
            Owner::CronJob => format!("{workload}-{}-{}", 29_300_000 + template % 90_000, suffix(h, 5)),
        };
        Pod {
            namespace,
            name,
            owner,
            workload,
            uid: uuid(mix64(h), h),
            ip: [(h >> 8) as u8, (h >> 16) as u8, (h >> 24) as u8 | 1],
        }
    }
}

/// One occurrence of a warning as it is shipped.
pub struct Occurrence<'a> {
    /// The pod it is about.
    pub pod: &'a Pod,
    /// The agent's node (FailedScheduling has none).
    pub node: &'a str,
    /// Its uid.
    pub uid: String,
    /// Varies the numbers in messages and logs, stably per event.
    pub h: u64,
    /// Its count so far.
    pub count: u32,
    /// Unix seconds.
    pub first_seen: i64,
    /// Unix seconds.
    pub last_seen: i64,
}

impl Kind {
    /// The event of this kind, on the wire.
    pub fn wire<'a>(self, o: Occurrence<'a>) -> Wire<'a> {
        let (reason, incident_type, severity) = self.labels();
        let scheduling = matches!(self, Kind::Scheduling);
        Wire {
            namespace: o.pod.namespace,
            pod: &o.pod.name,
            pod_uid: &o.pod.uid,
            node: (!scheduling).then_some(o.node),
            workload: Workload {
                kind: o.pod.owner.kind(),
                name: o.pod.workload,
            },
            container: o.pod.workload,
            reason,
            message: self.message(o.pod, o.h, o.count),
            incident_type,
            severity,
            count: o.count,
            first_seen: timestamp(o.first_seen),
            last_seen: timestamp(o.last_seen),
            source: if scheduling { "default-scheduler" } else { "kubelet" },
            logs: self.logs(o.pod, o.h),
            uid: o.uid,
        }
    }

    fn message(self, pod: &Pod, h: u64, count: u32) -> String {
        let ns = pod.namespace;
        let wl = pod.workload;
        let image = format!("registry.example.com/{ns}/{wl}:1.{}.0", 20 + h % 7);
        match self {
            Kind::CrashLoop => format!(
                "Back-off restarting failed container {wl} in pod {}_{ns}({})",
                pod.name, pod.uid
            ),
            Kind::Readiness => format!(
                "Readiness probe failed: Get \"http://10.{}.{}.{}:8080/ready\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
                pod.ip[0], pod.ip[1], pod.ip[2]
            ),
            Kind::Liveness => "Liveness probe failed: HTTP probe failed with statuscode: 503".to_owned(),
            Kind::ImagePull => format!(
                "Failed to pull image \"{image}\": rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": {image}: not found"
            ),
            Kind::PullBackOff => format!("Back-off pulling image \"{image}\""),
            Kind::Scheduling => format!(
                "0/10 nodes are available: {} Insufficient cpu, {} Insufficient memory, 1 node(s) had untolerated taint {{node.kubernetes.io/unreachable: }}. preemption: 0/10 nodes are available: 10 Preemption is not helpful for scheduling.",
                2 + h % 5,
                1 + h % 3
            ),
            Kind::Mount => {
                format!("MountVolume.SetUp failed for volume \"{wl}-config\" : configmap \"{wl}-config\" not found")
            }
            Kind::OomKilled => format!(
                "Container {wl} terminated: OOMKilled (exit code 137); restarted, {} restarts so far",
                count
            ),
            Kind::Sandbox => format!(
                "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to setup network for sandbox \"{:016x}{:016x}\": plugin type=\"calico\" failed (add): error getting ClusterInformation: connection is unauthorized: Unauthorized",
                h,
                mix64(h)
            ),
            Kind::Evicted => format!(
                "The node was low on resource: memory. Threshold quantity: 100Mi, available: {}Ki. Container {wl} was using {}Ki, request is 512Mi, has larger consumption of memory.",
                80_000 + h % 20_000,
                1_800_000 + h % 300_000
            ),
        }
    }

    fn logs(self, pod: &Pod, h: u64) -> Option<String> {
        let (ns, wl) = (pod.namespace, pod.workload);
        // Half the crashes carry the previous container's last log lines.
        (matches!(self, Kind::CrashLoop | Kind::OomKilled) && h.is_multiple_of(2)).then(|| {
            format!(
                "2026-11-22T10:00:01Z INFO starting {wl} 1.{v}.0\n\
                     2026-11-22T10:00:01Z INFO connecting to postgres://db.{ns}.svc:5432/{wl}\n\
                     2026-11-22T10:00:06Z ERROR connection refused after 5 attempts\n\
                     panic: config key DATABASE_URL missing\n\n\
                     goroutine 1 [running]:\nmain.main()\n\t/src/cmd/{wl}/main.go:42 +0x1a5\n",
                v = 20 + h % 7
            )
        })
    }
}

/// A small, well-mixed hash (splitmix64), for names and ids that look random but repeat.
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn hash(s: &str) -> u64 {
    s.bytes().fold(0, |h, b| mix64(h ^ u64::from(b)))
}

/// `n` characters of the alphabet Kubernetes uses for generated name suffixes.
fn suffix(mut h: u64, n: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..n)
        .map(|_| {
            let c = ALPHABET[(h % ALPHABET.len() as u64) as usize] as char;
            h /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// A UUID-shaped id: random-looking from `h`, unique by its last 48 bits, `low`.
pub fn uuid(h: u64, low: u64) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        (h >> 20) & 0xfff,
        low & 0xffff_ffff_ffff
    )
}

fn timestamp(unix: i64) -> String {
    jiff::Timestamp::from_second(unix).expect("a valid time").to_string()
}

/// The version the simulated agents report; the checks look for it.
pub const VERSION: &str = "load-0.1";

/// The body of `POST /v1/ingest`.
#[derive(Serialize)]
pub struct Body<'a> {
    agent: Info,
    events: Vec<Wire<'a>>,
}

impl<'a> Body<'a> {
    /// A batch of `events` from an agent that dropped nothing.
    pub fn new(events: Vec<Wire<'a>>) -> Body<'a> {
        Body {
            agent: Info {
                version: VERSION,
                dropped_total: 0,
            },
            events,
        }
    }
}

#[derive(Serialize)]
struct Info {
    version: &'static str,
    dropped_total: u64,
}

#[derive(Serialize)]
struct Workload<'a> {
    kind: &'static str,
    name: &'a str,
}

/// One event of protocol v1, as the agent sends it.
#[derive(Serialize)]
pub struct Wire<'a> {
    uid: String,
    namespace: &'a str,
    pod: &'a str,
    pod_uid: &'a str,
    node: Option<&'a str>,
    workload: Workload<'a>,
    container: &'a str,
    reason: &'static str,
    message: String,
    incident_type: &'static str,
    severity: &'static str,
    count: u32,
    first_seen: String,
    last_seen: String,
    source: &'static str,
    logs: Option<String>,
}
