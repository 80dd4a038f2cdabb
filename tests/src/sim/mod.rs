//! The simulator: configuration, the running server and the handles tests script it with.

mod auth;
mod cluster;
mod control;
mod discovery;
mod events;
mod faults;
mod http;
mod kubeconfig;
mod leases;
mod list;
mod logs;
mod objects;
mod pods;
mod proto;
mod record;
mod scenario;
mod selectors;
mod server;
mod status;
mod store;
mod table;
mod tls;
mod watch;
mod workloads;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch as signal;
use tokio::task::JoinHandle;

pub use cluster::{ClusterHandle, PodEvent, SimError};
pub use events::EventRef;
pub use faults::{Denial, FaultCounts, FaultHandle};
pub use kubeconfig::InClusterEnv;
pub use pods::{PodRef, Termination};
pub use record::EmittedRecord;
pub use scenario::{Pacer, Scenario, ScenarioStats};
pub use workloads::{ContainerSpec, Workload, WorkloadKind};

use faults::Faults;
use store::Store;

/// How a simulator behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Serve HTTPS with a self-signed CA (written into kubeconfigs) instead of plain HTTP.
    pub tls: bool,
    /// Bearer token clients must present (401 otherwise); `None` turns authentication off.
    pub token: Option<String>,
    /// User name in RBAC denials (`... User "<user>" cannot watch ...`).
    pub user: String,
    /// Events are deleted (DELETED to watchers) this long after their last update.
    pub event_ttl: Duration,
    /// Changes kept per resource kind for watch resumption; an older resourceVersion is 410.
    pub watch_window: usize,
    /// Changes older than this are forgotten too (etcd compacts every 5 minutes).
    pub watch_window_age: Duration,
    /// How often watches that allow bookmarks get a BOOKMARK.
    pub bookmark_interval: Duration,
    /// Default seed for scenarios started through the control endpoint without one.
    pub seed: u64,
    /// Namespace written to the in-cluster `namespace` file.
    pub namespace: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            tls: true,
            token: Some(format!("podwarn-sim-{:032x}", rand::random::<u128>())),
            user: "system:serviceaccount:podwarn:podwarn-agent".to_string(),
            event_ttl: Duration::from_secs(3600),
            watch_window: 20_000,
            watch_window_age: Duration::from_secs(300),
            bookmark_interval: Duration::from_secs(10),
            seed: 0,
            namespace: "podwarn".to_string(),
        }
    }
}

/// State shared by the server, the handles and background tasks.
pub(crate) struct Shared {
    pub(crate) store: Arc<Store>,
    pub(crate) faults: Faults,
    pub(crate) config: SimConfig,
    pub(crate) addr: SocketAddr,
    pub(crate) shutdown: signal::Sender<bool>,
    pub(crate) event_ttl: Mutex<Duration>,
    pub(crate) scenario: Mutex<Option<scenario::Running>>,
}

/// A running simulator bound to a listener.
#[derive(Debug)]
pub struct Simulator {
    shared: Arc<Shared>,
    ca_pem: Option<String>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Starts serving on `listener` (bind `127.0.0.1:0` for tests).
    pub async fn start(config: SimConfig, listener: TcpListener) -> anyhow::Result<Simulator> {
        let addr = listener.local_addr()?;
        let tls = if config.tls {
            Some(tls::generate(addr.ip())?)
        } else {
            None
        };
        let (shutdown, shutdown_rx) = signal::channel(false);
        let shared = Arc::new(Shared {
            store: Store::new(config.watch_window),
            faults: Faults::default(),
            event_ttl: Mutex::new(config.event_ttl),
            config,
            addr,
            shutdown,
            scenario: Mutex::new(None),
        });
        let router = http::router(shared.clone());
        let server = tokio::spawn(server::run(
            listener,
            router,
            tls.as_ref().map(|t| t.acceptor.clone()),
            shutdown_rx,
            shared.faults.reset_signal(),
        ));
        let sweeper = tokio::spawn(sweep(shared.clone()));
        Ok(Simulator {
            shared,
            ca_pem: tls.map(|t| t.ca_pem),
            tasks: vec![server, sweeper],
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `https://127.0.0.1:PORT` (or `http://`); an unspecified bind address maps to loopback.
    pub fn url(&self) -> String {
        let scheme = if self.ca_pem.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host(), self.addr().port())
    }

    fn host(&self) -> String {
        match self.addr().ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        }
    }

    /// The bearer token clients must send, if authentication is on.
    pub fn token(&self) -> Option<&str> {
        self.shared.config.token.as_deref()
    }

    /// The CA certificate (PEM) in TLS mode.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Writes a kubeconfig (server URL, CA data, token) for kubectl and kube-rs.
    pub fn write_kubeconfig(&self, path: &Path) -> anyhow::Result<()> {
        kubeconfig::write_kubeconfig(path, &self.url(), self.ca_pem(), self.token())
    }

    /// Writes `token`, `ca.crt` and `namespace` into `dir` as a service account would see
    /// them, and returns the values for `KUBERNETES_SERVICE_HOST/PORT`.
    pub fn write_in_cluster_env(&self, dir: &Path) -> anyhow::Result<InClusterEnv> {
        let host = self.host();
        kubeconfig::write_in_cluster(
            dir,
            host.trim_matches(|c| c == '[' || c == ']'),
            self.addr().port(),
            self.ca_pem(),
            self.token(),
            &self.shared.config.namespace,
        )
    }

    /// Scripts the cluster: workloads, events, restarts, logs, scenarios.
    pub fn cluster(&self) -> ClusterHandle {
        ClusterHandle(self.shared.clone())
    }

    /// Switches faults.
    pub fn faults(&self) -> FaultHandle {
        FaultHandle(self.shared.clone())
    }

    /// Stops the scenario, ends watches and closes connections.
    pub async fn shutdown(mut self) {
        self.cluster().stop_scenario();
        self.shared.shutdown.send_replace(true);
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
        if let Ok(mut s) = self.shared.scenario.lock()
            && let Some(run) = s.take()
        {
            run.stop();
        }
    }
}

/// Twice a second: deletes Events past their TTL and compacts history past its age.
async fn sweep(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let ttl = *shared.event_ttl.lock().unwrap_or_else(|e| e.into_inner());
        let age = shared.config.watch_window_age;
        shared.store.write(|s| {
            events::expire(s, ttl);
            if let Some(cutoff) = std::time::Instant::now().checked_sub(age) {
                s.compact_before(cutoff);
            }
        });
    }
}
