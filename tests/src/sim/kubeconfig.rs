//! Client configuration the simulator writes for itself: a kubeconfig (JSON, which is valid
//! YAML for kubectl and kube-rs) and an in-cluster service-account layout.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

/// Values for the agent's in-cluster path: what a Pod would see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InClusterEnv {
    /// `KUBERNETES_SERVICE_HOST`.
    pub host: String,
    /// `KUBERNETES_SERVICE_PORT`.
    pub port: u16,
    /// The service-account token file (empty token when auth is off).
    pub token_path: PathBuf,
    /// The cluster CA bundle (`ca.crt`); absent in plain-HTTP mode.
    pub ca_path: Option<PathBuf>,
    /// The `namespace` file.
    pub namespace_path: PathBuf,
}

impl InClusterEnv {
    /// `KUBERNETES_SERVICE_HOST` / `KUBERNETES_SERVICE_PORT` pairs to put in a child's env.
    pub fn vars(&self) -> Vec<(String, String)> {
        vec![
            ("KUBERNETES_SERVICE_HOST".to_string(), self.host.clone()),
            ("KUBERNETES_SERVICE_PORT".to_string(), self.port.to_string()),
        ]
    }
}

pub(crate) fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca_pem: Option<&str>,
    token: Option<&str>,
) -> anyhow::Result<()> {
    let mut cluster = json!({ "server": server });
    if let Some(ca) = ca_pem {
        cluster["certificate-authority-data"] = json!(STANDARD.encode(ca));
    }
    let user = match token {
        Some(t) => json!({ "token": t }),
        None => json!({}),
    };
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "podwarn-sim", "cluster": cluster }],
        "users": [{ "name": "podwarn-sim", "user": user }],
        "contexts": [{ "name": "podwarn-sim", "context": { "cluster": "podwarn-sim", "user": "podwarn-sim", "namespace": "default" } }],
        "current-context": "podwarn-sim",
        "preferences": {}
    });
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
        .with_context(|| format!("writing kubeconfig {}", path.display()))
}

pub(crate) fn write_in_cluster(
    dir: &Path,
    host: &str,
    port: u16,
    ca_pem: Option<&str>,
    token: Option<&str>,
    namespace: &str,
) -> anyhow::Result<InClusterEnv> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let token_path = dir.join("token");
    std::fs::write(&token_path, token.unwrap_or("")).context("writing the token file")?;
    let ca_path = match ca_pem {
        Some(ca) => {
            let p = dir.join("ca.crt");
            std::fs::write(&p, ca).context("writing ca.crt")?;
            Some(p)
        }
        None => None,
    };
    let namespace_path = dir.join("namespace");
    std::fs::write(&namespace_path, namespace).context("writing the namespace file")?;
    Ok(InClusterEnv {
        host: host.to_string(),
        port,
        token_path,
        ca_path,
        namespace_path,
    })
}
