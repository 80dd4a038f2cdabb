//! Command line and environment: every flag is also a `PODWARN_…` variable.

use clap::{Args, Parser, Subcommand, ValueEnum};
use podwarn_shared::units::{parse_bytes, parse_duration};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// podwarn-agent: watches Pod warnings in one cluster and ships them to the collector.
#[derive(Debug, Parser)]
#[command(name = "podwarn-agent", version, about, long_about = None)]
pub struct Cli {
    /// Log format.
    #[arg(long, env = "PODWARN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch, enrich, classify and ship Pod warnings until stopped.
    Run(Box<RunArgs>),
    /// Test the setup and print a checklist with fixes ("Test connection").
    Check(Box<CheckArgs>),
}

/// How the agent reaches the Kubernetes API: the four onboarding workflows.
#[derive(Debug, Clone, Args)]
pub struct AccessArgs {
    /// Kubeconfig file; `-` reads it from standard input (the "paste kubeconfig" workflow).
    /// Without it: the in-cluster service account when KUBERNETES_SERVICE_HOST is set,
    /// else the default kubeconfig (KUBECONFIG, ~/.kube/config).
    #[arg(long, env = "PODWARN_KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use instead of the current one.
    #[arg(long, env = "PODWARN_CONTEXT")]
    pub context: Option<String>,
    /// Requests per second the agent allows itself against the API server (enrichment, logs).
    #[arg(long, env = "PODWARN_API_QPS", default_value_t = 20.0)]
    pub api_qps: f64,
    /// Burst above `--api-qps`.
    #[arg(long, env = "PODWARN_API_BURST", default_value_t = 40)]
    pub api_burst: u32,
}

/// Which Pods the agent covers.
#[derive(Debug, Clone, Args)]
pub struct ScopeArgs {
    /// Watch only these namespaces (comma-separated; every one of them is watched). Default: all.
    #[arg(long = "namespace", env = "PODWARN_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Never ship warnings from these namespaces (comma-separated).
    #[arg(
        long = "exclude-namespace",
        env = "PODWARN_EXCLUDE_NAMESPACES",
        value_delimiter = ','
    )]
    pub exclude_namespaces: Vec<String>,
    /// `deployment`: one agent per cluster ships everything. `daemonset`: each agent ships
    /// the Pods of its own node (`--node-name`).
    #[arg(long, env = "PODWARN_MODE", value_enum, default_value_t = Mode::Deployment)]
    pub mode: Mode,
    /// This agent's node (DaemonSet mode; from the downward API's spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
}

/// Deployment shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// One agent (or a leader among replicas) ships the whole cluster.
    Deployment,
    /// One agent per node ships its node's Pods.
    Daemonset,
}

/// Where and how to ship, and the agent's identity.
#[derive(Debug, Clone, Args)]
pub struct ShipArgs {
    /// The collector's base URL, e.g. https://podwarn.example.com:8443.
    #[arg(long, env = "PODWARN_COLLECTOR", value_name = "URL")]
    pub collector: Option<String>,
    /// Folder with this agent's client certificate: tls.crt, tls.key, ca.crt. The agent
    /// writes it when it enrolls or renews. Default: `<spool-dir>/identity`.
    #[arg(long, env = "PODWARN_CERT_DIR", value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// Enrollment token `pw1.<id>.<secret>` from `podwarn-collector token create`: used
    /// only when the cert dir holds no valid certificate. Needs --ca-pin.
    #[arg(
        long,
        env = "PODWARN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<Secret>,
    /// File holding the enrollment token (e.g. a mounted Secret's key).
    #[arg(long, env = "PODWARN_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// The collector CA's pin `sha256:<64 hex digits>`, printed by `token create`: the
    /// token is sent only to a collector whose CA matches it.
    #[arg(long, env = "PODWARN_CA_PIN", value_name = "PIN", conflicts_with = "ca_pin_file")]
    pub ca_pin: Option<String>,
    /// File holding the CA pin.
    #[arg(long, env = "PODWARN_CA_PIN_FILE", value_name = "PATH")]
    pub ca_pin_file: Option<PathBuf>,
}

/// A secret flag value (the enrollment token). `Debug` never shows it, and
/// parsing never fails, so clap's error messages never repeat it: its format
/// is checked later, by messages that leave the secret out.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret text, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// Leader election on a coordination.k8s.io Lease in the agent's own namespace.
#[derive(Debug, Clone, Args)]
pub struct LeaderArgs {
    /// Take part in leader election. Deployment mode: only the leader watches and ships
    /// (run 2 replicas for a warm standby). DaemonSet mode: the leader also ships warnings
    /// of Pods that have no node yet (FailedScheduling).
    #[arg(long, env = "PODWARN_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Name of the Lease.
    #[arg(long, env = "PODWARN_LEASE_NAME", default_value = "podwarn-agent")]
    pub lease_name: String,
    /// Namespace of the Lease: the agent's own (POD_NAMESPACE from the downward API).
    /// Default: the namespace of the service account or kubeconfig context.
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This agent's identity in the election (POD_NAME from the downward API). Default: host name and a random suffix.
    #[arg(long, env = "POD_NAME")]
    pub lease_identity: Option<String>,
    /// How long a lease is valid after its last renewal; a standby takes over within it.
    #[arg(long, env = "PODWARN_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
}

impl LeaderArgs {
    /// The namespace the Lease is in: `--lease-namespace`, else the client's
    /// default (the service account's or the kubeconfig context's).
    pub fn namespace(&self, client: &kube::Client) -> String {
        self.lease_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned())
    }
}

/// `run` flags.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub access: AccessArgs,
    #[command(flatten)]
    pub scope: ScopeArgs,
    #[command(flatten)]
    pub ship: ShipArgs,
    #[command(flatten)]
    pub leader: LeaderArgs,
    /// Folder for the on-disk spool used while the collector is unreachable.
    #[arg(long, env = "PODWARN_SPOOL_DIR", default_value = "/var/lib/podwarn-agent")]
    pub spool_dir: PathBuf,
    /// Most bytes the spool may hold; beyond it the oldest batches are dropped (and counted).
    #[arg(long, env = "PODWARN_SPOOL_MAX_BYTES", default_value = "256MiB", value_parser = parse_bytes)]
    pub spool_max_bytes: u64,
    /// Most events in one batch.
    #[arg(long, env = "PODWARN_BATCH_MAX_EVENTS", default_value_t = 1000)]
    pub batch_max_events: usize,
    /// Longest a batch waits for more events before it is sent.
    #[arg(long, env = "PODWARN_BATCH_INTERVAL", default_value = "500ms", value_parser = parse_duration)]
    pub batch_interval: Duration,
    /// Events waiting to be batched, at most (the watches pause when it is full).
    #[arg(long, env = "PODWARN_QUEUE_CAPACITY", default_value_t = 10_000)]
    pub queue_capacity: usize,
    /// Lines of the previous container's log attached to crash-type warnings.
    #[arg(long, env = "PODWARN_LOG_LINES", default_value_t = 50)]
    pub log_lines: u32,
    /// Most bytes of log attached to one warning.
    #[arg(long, env = "PODWARN_LOG_MAX_BYTES", default_value = "16KiB", value_parser = parse_bytes)]
    pub log_max_bytes: u64,
    /// Never read Pod logs (no pods/log permission needed).
    #[arg(long, env = "PODWARN_NO_LOGS")]
    pub no_logs: bool,
    /// A watch that brings nothing for this long is treated as stale and relisted
    /// (guards against kubernetes/kubernetes#104171).
    #[arg(long, env = "PODWARN_STALE_WATCH_AFTER", default_value = "10m", value_parser = parse_duration)]
    pub stale_watch_after: Duration,
    /// Address of the ops server (/healthz, /readyz, /metrics).
    #[arg(long, env = "PODWARN_OPS_LISTEN", default_value = "0.0.0.0:9090")]
    pub ops_listen: SocketAddr,
    /// How long shutdown may take to flush pending events to the spool.
    #[arg(long, env = "PODWARN_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
}

/// `check` flags.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub access: AccessArgs,
    #[command(flatten)]
    pub scope: ScopeArgs,
    #[command(flatten)]
    pub ship: ShipArgs,
    /// The agent's spool folder, as for `run` (the default cert dir is inside it).
    #[arg(long, env = "PODWARN_SPOOL_DIR", default_value = "/var/lib/podwarn-agent")]
    pub spool_dir: PathBuf,
    /// Do not check pods/log (as with `run --no-logs`).
    #[arg(long, env = "PODWARN_NO_LOGS")]
    pub no_logs: bool,
    /// With --leader-elect, also check the Lease permissions, as `run` would need them.
    #[command(flatten)]
    pub leader: LeaderArgs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed_and_namespaces_are_all_kept() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::parse_from(["podwarn-agent", "run", "--namespace", "a,b", "--namespace", "c"]);
        let Command::Run(run) = cli.command else {
            panic!("run expected")
        };
        assert_eq!(run.scope.namespaces, ["a", "b", "c"]);
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let cli = Cli::parse_from([
            "podwarn-agent",
            "run",
            "--token",
            "pw1.0123456789ab.c2VjcmV0LXNlY3JldC1zZWNyZXQ",
        ]);
        let text = format!("{cli:?}");
        assert!(!text.contains("c2VjcmV0"), "{text}");
        assert!(text.contains("<redacted>"));
    }
}
