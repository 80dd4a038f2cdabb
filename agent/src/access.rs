//! Reaching the Kubernetes API: the four onboarding workflows (in-cluster
//! service account, `--kubeconfig PATH`, a kubeconfig pasted on stdin, the
//! default kubeconfig with an optional `--context`), and a client-side rate
//! limit for the requests the agent makes per event.
//!
//! The API server's address and every credential stay out of logs and errors.

use crate::config::AccessArgs;
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Where the service account's token, CA and namespace live in a Pod.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Why the agent cannot reach the Kubernetes API.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The kubeconfig file does not exist or cannot be read.
    #[error(
        "kubeconfig {0} cannot be read: pass --kubeconfig PATH (or `-` to paste one on stdin), set KUBECONFIG, \
         or run the agent inside the cluster"
    )]
    KubeconfigNotFound(PathBuf, #[source] std::io::Error),
    /// No kubeconfig anywhere and not in a cluster.
    #[error(
        "no kubeconfig found (KUBECONFIG unset, ~/.kube/config missing) and not running in a cluster: \
         pass --kubeconfig PATH, or `--kubeconfig -` and paste it on stdin"
    )]
    NoKubeconfig,
    /// The kubeconfig is not valid YAML or misses parts.
    #[error("the kubeconfig is not usable: {0}")]
    BadKubeconfig(String),
    /// The requested context is not in the kubeconfig.
    #[error("context {wanted:?} is not in the kubeconfig; it has: {available}")]
    NoSuchContext {
        /// The context asked for.
        wanted: String,
        /// The contexts there are.
        available: String,
    },
    /// In-cluster configuration is incomplete.
    #[error(
        "in-cluster configuration is incomplete ({0}): the Pod needs a service account token mounted \
         (automountServiceAccountToken: true)"
    )]
    InCluster(String),
    /// The client could not be built.
    #[error("building the Kubernetes client: {0}")]
    Client(String),
}

/// A connected client and a description of how it was configured (no secrets, no address).
#[derive(Clone)]
pub struct Access {
    /// The Kubernetes client.
    pub client: kube::Client,
    /// How the agent reaches the cluster, for humans: "in-cluster service account", "kubeconfig ~/.kube/config, context kind-dev".
    pub source: String,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Builds a client from the flags.
pub async fn connect(args: &AccessArgs) -> Result<Access, AccessError> {
    let (config, source) = match &args.kubeconfig {
        Some(path) if path == Path::new("-") => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| AccessError::BadKubeconfig(format!("reading stdin: {e}")))?;
            let kubeconfig = Kubeconfig::from_yaml(&text).map_err(|e| AccessError::BadKubeconfig(e.to_string()))?;
            from_kubeconfig(kubeconfig, args.context.as_deref(), "kubeconfig from stdin").await?
        }
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| AccessError::KubeconfigNotFound(path.clone(), e))?;
            let kubeconfig = Kubeconfig::from_yaml(&text).map_err(|e| AccessError::BadKubeconfig(e.to_string()))?;
            from_kubeconfig(
                kubeconfig,
                args.context.as_deref(),
                &format!("kubeconfig {}", path.display()),
            )
            .await?
        }
        None if args.context.is_none() && std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
            let dir = std::env::var_os("PODWARN_SERVICE_ACCOUNT_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(SERVICE_ACCOUNT_DIR));
            (in_cluster(&dir)?, "in-cluster service account".to_owned())
        }
        None => {
            let kubeconfig = Kubeconfig::read().map_err(|_| AccessError::NoKubeconfig)?;
            from_kubeconfig(kubeconfig, args.context.as_deref(), "default kubeconfig").await?
        }
    };
    let client = kube::Client::try_from(config).map_err(|e| AccessError::Client(e.to_string()))?;
    Ok(Access { client, source })
}

async fn from_kubeconfig(
    kubeconfig: Kubeconfig,
    context: Option<&str>,
    what: &str,
) -> Result<(kube::Config, String), AccessError> {
    if let Some(wanted) = context
        && !kubeconfig.contexts.iter().any(|c| c.name == wanted)
    {
        let names: Vec<&str> = kubeconfig.contexts.iter().map(|c| c.name.as_str()).collect();
        return Err(AccessError::NoSuchContext {
            wanted: wanted.to_owned(),
            available: if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            },
        });
    }
    let chosen = context
        .map(str::to_owned)
        .or_else(|| kubeconfig.current_context.clone())
        .unwrap_or_default();
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..KubeConfigOptions::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| AccessError::BadKubeconfig(e.to_string()))?;
    Ok((config, format!("{what}, context {chosen:?}")))
}

/// The in-cluster configuration, read from a service account directory
/// (token, ca.crt, namespace) and `KUBERNETES_SERVICE_HOST/PORT`. The token
/// is re-read by the client as the kubelet rotates it.
fn in_cluster(dir: &Path) -> Result<kube::Config, AccessError> {
    let host = std::env::var("KUBERNETES_SERVICE_HOST")
        .map_err(|_| AccessError::InCluster("no KUBERNETES_SERVICE_HOST".into()))?;
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    let uri: http::Uri = format!("https://{host}:{port}")
        .parse()
        .map_err(|_| AccessError::InCluster("KUBERNETES_SERVICE_HOST/PORT do not form a URL".into()))?;
    let token = dir.join("token");
    if !token.exists() {
        return Err(AccessError::InCluster(format!("{} is missing", token.display())));
    }
    let ca = std::fs::read(dir.join("ca.crt"))
        .map_err(|_| AccessError::InCluster(format!("{}/ca.crt is missing", dir.display())))?;
    let roots: Vec<Vec<u8>> = rustls_pemfile::certs(&mut ca.as_slice())
        .filter_map(Result::ok)
        .map(|c| c.as_ref().to_vec())
        .collect();
    if roots.is_empty() {
        return Err(AccessError::InCluster(format!(
            "{}/ca.crt holds no certificate",
            dir.display()
        )));
    }
    let mut config = kube::Config::new(uri);
    config.root_cert = Some(roots);
    config.default_namespace = std::fs::read_to_string(dir.join("namespace"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "default".into());
    config.auth_info.token_file = Some(token.to_string_lossy().into_owned());
    Ok(config)
}

/// A token bucket: at most `qps` requests a second on average, `burst` at once.
///
/// Callers reserve their turn (the bucket may go negative), so waiters are
/// served in order and each sleeps once, for exactly its own wait.
#[derive(Debug)]
pub struct RateLimiter {
    qps: f64,
    burst: f64,
    /// Tokens (negative: reserved ahead) as of the instant.
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// A full bucket.
    pub fn new(qps: f64, burst: u32) -> Self {
        let qps = qps.max(0.1);
        let burst = f64::from(burst.max(1));
        Self {
            qps,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Reserves a turn if it comes within `max_wait`; returns the wait.
    fn reserve(&self, max_wait: Option<Duration>) -> Option<Duration> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (tokens, last) = *state;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.qps).min(self.burst);
        let wait = Duration::from_secs_f64((1.0 - tokens).max(0.0) / self.qps);
        if max_wait.is_some_and(|max| wait > max) {
            *state = (tokens, now);
            return None;
        }
        *state = (tokens - 1.0, now);
        Some(wait)
    }

    /// Waits until a request may go.
    pub async fn acquire(&self) {
        if let Some(wait) = self.reserve(None)
            && !wait.is_zero()
        {
            tokio::time::sleep(wait).await;
        }
    }

    /// Waits until a request may go if that is within `max_wait`, and returns
    /// true; returns false at once (taking no turn) when it would be later.
    pub async fn acquire_within(&self, max_wait: Duration) -> bool {
        match self.reserve(Some(max_wait)) {
            Some(wait) => {
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rate_limiter_allows_a_burst_then_paces() {
        let limiter = RateLimiter::new(10.0, 5);
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            limiter.acquire().await;
        }
        assert!(start.elapsed() < Duration::from_millis(1));
        for _ in 0..10 {
            limiter.acquire().await;
        }
        let paced = start.elapsed();
        assert!(
            paced >= Duration::from_millis(900) && paced <= Duration::from_millis(1100),
            "{paced:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_bounded_wait_gives_up_at_once_without_taking_a_turn() {
        let limiter = RateLimiter::new(10.0, 2);
        assert!(limiter.acquire_within(Duration::ZERO).await);
        assert!(limiter.acquire_within(Duration::ZERO).await);
        // Empty: the next turn is 100 ms away.
        let start = tokio::time::Instant::now();
        assert!(!limiter.acquire_within(Duration::from_millis(50)).await);
        assert!(start.elapsed().is_zero(), "a refusal does not wait");
        assert!(limiter.acquire_within(Duration::from_millis(150)).await);
        assert_eq!(start.elapsed(), Duration::from_millis(100), "the refusal took no turn");
        // Two reserved ahead: the second waits behind the first.
        let ((), b) = tokio::join!(limiter.acquire(), limiter.acquire_within(Duration::from_millis(150)));
        assert!(!b, "the second turn is 200 ms away");
    }

    #[tokio::test]
    async fn missing_kubeconfig_and_context_errors_say_what_to_do() {
        let args = AccessArgs {
            kubeconfig: Some("/nonexistent/kubeconfig".into()),
            context: None,
            api_qps: 1.0,
            api_burst: 1,
        };
        let err = connect(&args).await.unwrap_err().to_string();
        assert!(
            err.contains("--kubeconfig PATH") && err.contains("/nonexistent/kubeconfig"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n\
             users: [{name: u, user: {token: secret-token-value}}]\n\
             contexts: [{name: dev, context: {cluster: c, user: u}}]\ncurrent-context: dev\n",
        )
        .unwrap();
        let args = AccessArgs {
            kubeconfig: Some(path.clone()),
            context: Some("prod".into()),
            api_qps: 1.0,
            api_burst: 1,
        };
        let err = connect(&args).await.unwrap_err().to_string();
        assert!(err.contains("\"prod\"") && err.contains("dev"), "{err}");
        assert!(
            !err.contains("secret-token-value") && !err.contains("127.0.0.1"),
            "{err}"
        );
        let args = AccessArgs {
            kubeconfig: Some(path),
            context: None,
            api_qps: 1.0,
            api_burst: 1,
        };
        let access = connect(&args).await.unwrap();
        assert!(access.source.contains("context \"dev\""), "{}", access.source);
        assert!(!format!("{access:?}").contains("secret-token-value"));
    }
}
