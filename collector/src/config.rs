//! Command line and environment: every flag is also a `PODWARN_…` variable.

use clap::{Args, Parser, Subcommand, ValueEnum};
use podwarn_shared::units::{parse_bytes, parse_duration};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A flag value the collector cannot run with; `main` exits with code 64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// podwarn-collector: remembers every Pod warning your agents send.
#[derive(Debug, Parser)]
#[command(name = "podwarn-collector", version, about, long_about = None)]
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
    /// Run the collector: ingest over mutual TLS, store, serve queries.
    Serve(ServeArgs),
    /// Agent client certificates.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Enrollment tokens agents join with.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Enrolled agents.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Clusters.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// API keys for the query and admin API.
    #[command(subcommand)]
    Apikey(ApikeyCommand),
}

/// `token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (once) with the CA pin and the agent install commands.
    Create(TokenCreateArgs),
    /// List tokens (never their secrets).
    List(DataDirArg),
    /// Revoke a token: agents can no longer enroll with it.
    Revoke(IdArgs),
}

/// `agent` subcommands.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// List agents: cluster, id, tenant, last seen, version, certificate expiry, revoked.
    List(DataDirArg),
    /// Revoke an agent: refused from its very next request on.
    Revoke(IdArgs),
}

/// `cluster` subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Revoke every agent and token of a cluster; `--purge` also deletes its data.
    Remove(ClusterRemoveArgs),
}

/// `apikey` subcommands.
#[derive(Debug, Subcommand)]
pub enum ApikeyCommand {
    /// Create an API key and print it (once).
    Create(ApikeyCreateArgs),
    /// List API keys (never the keys themselves).
    List(DataDirArg),
    /// Revoke an API key.
    Revoke(IdArgs),
}

/// An object id on a data directory.
#[derive(Debug, Clone, Args)]
pub struct IdArgs {
    #[command(flatten)]
    pub data: DataDirArg,
    /// The id, as `list` shows it.
    pub id: String,
}

/// `token create` flags.
#[derive(Debug, Clone, Args)]
pub struct TokenCreateArgs {
    #[command(flatten)]
    pub data: DataDirArg,
    /// The cluster agents enrolling with this token are bound to.
    #[arg(long, env = "PODWARN_CLUSTER")]
    pub cluster: String,
    /// The tenant the cluster belongs to.
    #[arg(long, env = "PODWARN_TENANT", default_value = "default")]
    pub tenant: String,
    /// How long the token can be used (e.g. 24h).
    #[arg(long, env = "PODWARN_TOKEN_TTL", default_value = "24h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// How many enrollments it allows (default: any number until it expires).
    #[arg(long, env = "PODWARN_TOKEN_USES")]
    pub uses: Option<u64>,
    /// The URL agents reach the collector at, for the printed commands
    /// (default: the running server's, else a placeholder).
    #[arg(long, env = "PODWARN_COLLECTOR_URL")]
    pub collector_url: Option<String>,
    /// Namespace of the printed Kubernetes Secret.
    #[arg(long, default_value = "podwarn")]
    pub namespace: String,
}

/// `cluster remove` flags.
#[derive(Debug, Clone, Args)]
pub struct ClusterRemoveArgs {
    #[command(flatten)]
    pub data: DataDirArg,
    /// The cluster.
    pub name: String,
    /// Also delete its events, incidents and dedup keys.
    #[arg(long)]
    pub purge: bool,
}

/// Role of an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// Query endpoints only.
    Read,
    /// Query and admin endpoints.
    Admin,
}

/// `apikey create` flags.
#[derive(Debug, Clone, Args)]
pub struct ApikeyCreateArgs {
    #[command(flatten)]
    pub data: DataDirArg,
    /// The tenant the key is confined to (default: every tenant).
    #[arg(long, env = "PODWARN_TENANT")]
    pub tenant: Option<String>,
    /// What the key may do.
    #[arg(long, value_enum)]
    pub role: RoleArg,
}

/// `cert` subcommands.
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Issue an agent client certificate bound to one cluster (the offline
    /// path; token enrollment does the same over the network).
    Issue(CertIssueArgs),
}

/// The data directory, shared by every command.
#[derive(Debug, Clone, Args)]
pub struct DataDirArg {
    /// Where the store, the CA and the admin token live.
    #[arg(long, env = "PODWARN_DATA_DIR", value_name = "DIR")]
    pub data_dir: PathBuf,
}

/// `serve` flags.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub data: DataDirArg,
    /// Address to listen on (HTTPS: ingest, queries, metrics). Port 0 picks a free port.
    #[arg(long, env = "PODWARN_LISTEN", default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Extra DNS names or IPs for the server certificate (localhost and 127.0.0.1 are always in it).
    #[arg(long, env = "PODWARN_ADVERTISE", value_delimiter = ',')]
    pub advertise: Vec<String>,
    /// Memory the store may use to cache pages of its file (e.g. 256MiB). The
    /// collector's memory is this plus a few MiB per connection, whatever
    /// the number of stored events.
    #[arg(long, env = "PODWARN_CACHE_SIZE", default_value = "256MiB", value_parser = parse_bytes)]
    pub cache_size: u64,
    /// How long events are kept (e.g. 30d, 12h).
    #[arg(long, env = "PODWARN_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub retention: Duration,
    /// How often retention runs.
    #[arg(long, env = "PODWARN_RETENTION_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub retention_interval: Duration,
    /// Largest ingest body accepted as sent (compressed), e.g. 8MiB.
    #[arg(long, env = "PODWARN_MAX_BODY", default_value = "8MiB", value_parser = parse_bytes)]
    pub max_body: u64,
    /// Largest ingest body accepted after decompression, e.g. 64MiB.
    #[arg(long, env = "PODWARN_MAX_DECODED_BODY", default_value = "64MiB", value_parser = parse_bytes)]
    pub max_decoded_body: u64,
    /// How long after its last occurrence an incident counts as active.
    #[arg(long, env = "PODWARN_ACTIVE_WINDOW", default_value = "30m", value_parser = parse_duration)]
    pub active_window: Duration,
    /// Lifetime of agent certificates issued by enrollment and renewal (1m to 366d).
    #[arg(long, env = "PODWARN_CERT_TTL", default_value = "7d", value_parser = parse_duration)]
    pub cert_ttl: Duration,
    /// Failed enrollment attempts allowed per source address and minute; more get 429.
    #[arg(long, env = "PODWARN_ENROLL_FAILURES_PER_MINUTE", default_value_t = 10)]
    pub enroll_failures_per_minute: u32,
    /// How long shutdown waits for open requests to finish.
    #[arg(long, env = "PODWARN_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Most connections open at once; more wait in the kernel's accept queue.
    /// Lowered at start to fit the open-file limit.
    #[arg(long, env = "PODWARN_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// How long a client may take to finish the TLS handshake.
    #[arg(long, env = "PODWARN_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub tls_handshake_timeout: Duration,
    /// How long a request's headers may take to arrive, from the handshake or
    /// the previous answer (so also how long an idle HTTP/1.1 connection stays).
    #[arg(long, env = "PODWARN_HEADER_READ_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// How long a request body may take to arrive in full (408 after).
    #[arg(long, env = "PODWARN_BODY_READ_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub body_read_timeout: Duration,
    /// How long a connection may stay open with no request in progress (HTTP/2).
    #[arg(long, env = "PODWARN_IDLE_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
}

impl ServeArgs {
    /// Checks the connection limits: each timeout at least 100 ms, at least one connection.
    pub fn check_connection_limits(&self) -> Result<(), ConfigError> {
        let timeouts = [
            ("--tls-handshake-timeout", self.tls_handshake_timeout),
            ("--header-read-timeout", self.header_read_timeout),
            ("--body-read-timeout", self.body_read_timeout),
            ("--idle-timeout", self.idle_timeout),
        ];
        for (flag, value) in timeouts {
            if value < Duration::from_millis(100) {
                return Err(ConfigError(format!("{flag} must be at least 100ms, not {value:?}")));
            }
        }
        if self.max_connections == 0 {
            return Err(ConfigError("--max-connections must be at least 1".into()));
        }
        Ok(())
    }
}

/// `cert issue` flags.
#[derive(Debug, Clone, Args)]
pub struct CertIssueArgs {
    #[command(flatten)]
    pub data: DataDirArg,
    /// The cluster the certificate binds (a DNS label: lowercase letters, digits, '-').
    #[arg(long, env = "PODWARN_CLUSTER")]
    pub cluster: String,
    /// The tenant the cluster belongs to.
    #[arg(long, env = "PODWARN_TENANT", default_value = "default")]
    pub tenant: String,
    /// Certificate lifetime (e.g. 7d).
    #[arg(long, env = "PODWARN_CERT_TTL", default_value = "7d", value_parser = parse_duration)]
    pub ttl: Duration,
    /// Folder to write tls.crt, tls.key and ca.crt into (created if missing).
    #[arg(long, value_name = "OUTDIR")]
    pub out: PathBuf,
    /// Tests only: allow lifetimes down to 1 s (offline issuing only).
    #[arg(long, hide = true)]
    pub insecure_short_ttl: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
