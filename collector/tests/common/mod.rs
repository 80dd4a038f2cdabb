//! Harness for tests that run the real `podwarn-collector` binary on loopback
//! and talk to it with real HTTPS clients.

#![allow(dead_code)]

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_podwarn-collector");

/// A running collector process.
pub struct Collector {
    pub child: Child,
    pub url: String,
    pub dir: PathBuf,
    pub admin_token: String,
    pub ca_pem: Vec<u8>,
}

impl Collector {
    /// Starts `serve` on a free port and waits until it listens.
    pub fn start(dir: &Path, extra: &[&str]) -> Collector {
        let mut child = Command::new(BIN)
            .args(["serve", "--data-dir"])
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn podwarn-collector");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("collector exited before listening")
                .expect("read collector stdout");
            if let Some(url) = line.strip_prefix("podwarn-collector listening on ") {
                break url.to_owned();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let admin_token = std::fs::read_to_string(dir.join("admin.token"))
            .expect("admin token")
            .trim()
            .to_owned();
        let ca_pem = std::fs::read(dir.join("tls/ca.crt")).expect("ca.crt");
        Collector {
            child,
            url,
            dir: dir.to_owned(),
            admin_token,
            ca_pem,
        }
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }

    /// An admin HTTPS client (bearer token, no client certificate).
    pub fn admin(&self) -> Admin {
        Admin {
            client: client(&self.ca_pem, None),
            url: self.url.clone(),
            token: self.admin_token.clone(),
        }
    }

    /// Issues an agent certificate with the `cert issue` command.
    pub fn issue_cert(&self, cluster: &str) -> PathBuf {
        issue_cert(&self.dir, cluster)
    }

    /// An ingest client for an agent certificate folder.
    pub fn agent(&self, cert_dir: &Path) -> Agent {
        Agent {
            client: agent_client(&self.ca_pem, cert_dir),
            url: self.url.clone(),
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cert issue` for `cluster` into a fresh folder inside the data dir's parent.
pub fn issue_cert(data_dir: &Path, cluster: &str) -> PathBuf {
    let out = data_dir
        .parent()
        .unwrap()
        .join(format!("agent-{cluster}-{}", rand_suffix()));
    let status = Command::new(BIN)
        .args(["cert", "issue", "--data-dir"])
        .arg(data_dir)
        .args(["--cluster", cluster, "--out"])
        .arg(&out)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .status()
        .expect("run cert issue");
    assert!(status.success(), "cert issue failed");
    out
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &[u8]) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
        roots.add(cert.unwrap()).unwrap();
    }
    roots
}

/// A reqwest client trusting `ca_pem`, optionally presenting a client certificate.
pub fn client(ca_pem: &[u8], identity: Option<(&[u8], &[u8])>) -> reqwest::Client {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(ca_pem));
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = rustls_pemfile::certs(&mut &cert[..])
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = rustls_pemfile::private_key(&mut &key[..]).unwrap().unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A client presenting the agent certificate in `cert_dir`.
pub fn agent_client(ca_pem: &[u8], cert_dir: &Path) -> reqwest::Client {
    let cert = std::fs::read(cert_dir.join("tls.crt")).unwrap();
    let key = std::fs::read(cert_dir.join("tls.key")).unwrap();
    client(ca_pem, Some((&cert, &key)))
}

pub struct Admin {
    pub client: reqwest::Client,
    pub url: String,
    pub token: String,
}

impl Admin {
    /// GET a path with the admin token; returns (status, JSON body).
    pub async fn get(&self, path_and_query: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path_and_query}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Every event, following cursors.
    pub async fn all_events(&self, filters: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = format!("/v1/events?limit=1000{filters}");
            if let Some(c) = &cursor {
                q.push_str(&format!("&cursor={c}"));
            }
            let (status, body) = self.get(&q).await;
            assert_eq!(status, 200, "{body}");
            out.extend(body["items"].as_array().unwrap().iter().cloned());
            match body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
    }
}

pub struct Agent {
    pub client: reqwest::Client,
    pub url: String,
}

impl Agent {
    /// POSTs a batch; returns (status, JSON body).
    pub async fn send(&self, events: &[Value]) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}/v1/ingest", self.url))
            .json(&json!({ "agent": {"version": "test"}, "events": events }))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

/// A builder for warning events, e.g. `warning("u1").pod("api-7d9-x").reason("BackOff").count(3)`.
pub struct Warning(Value);

pub fn warning(uid: &str) -> Warning {
    Warning(json!({
        "uid": uid,
        "namespace": "shop",
        "pod": "api-7d9f8b6c5-x2k4q",
        "pod_uid": "6f1c1c7e-0000-4000-8000-000000000001",
        "node": "node-a",
        "workload": {"kind": "Deployment", "name": "api"},
        "container": "app",
        "reason": "BackOff",
        "message": "Back-off restarting failed container app in pod api-7d9f8b6c5-x2k4q_shop(6f1c1c7e)",
        "incident_type": "CrashLoopBackOff",
        "severity": "high",
        "count": 1,
        "first_seen": "2026-11-22T10:00:00Z",
        "last_seen": "2026-11-22T10:00:00Z",
        "source": "kubelet",
        "logs": null
    }))
}

impl Warning {
    fn set(mut self, key: &str, value: Value) -> Self {
        self.0[key] = value;
        self
    }
    pub fn namespace(self, v: &str) -> Self {
        self.set("namespace", v.into())
    }
    pub fn pod(self, v: &str) -> Self {
        self.set("pod", v.into())
    }
    pub fn node(self, v: &str) -> Self {
        self.set("node", v.into())
    }
    pub fn workload(self, kind: &str, name: &str) -> Self {
        self.set("workload", json!({"kind": kind, "name": name}))
    }
    pub fn reason(self, v: &str) -> Self {
        self.set("reason", v.into())
    }
    pub fn message(self, v: &str) -> Self {
        self.set("message", v.into())
    }
    pub fn incident_type(self, v: &str) -> Self {
        self.set("incident_type", v.into())
    }
    pub fn count(self, v: u32) -> Self {
        self.set("count", v.into())
    }
    pub fn last_seen(self, v: &str) -> Self {
        self.set("last_seen", v.into())
    }
    pub fn raw(self, key: &str, v: Value) -> Self {
        self.set(key, v)
    }
    pub fn json(self) -> Value {
        self.0
    }
}
