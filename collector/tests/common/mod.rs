//! Harness for tests that run the real `podwarn-collector` binary on loopback
//! and talk to it with real HTTPS clients.

#![allow(dead_code)]

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod access;
mod unverified;
#[allow(unused_imports)]
pub use unverified::unverified_client;

pub const BIN: &str = env!("CARGO_BIN_EXE_podwarn-collector");

/// A running collector process.
pub struct Collector {
    pub child: Child,
    pub url: String,
    pub dir: PathBuf,
    pub admin_token: String,
    pub ca_pem: Vec<u8>,
    /// Everything the serve process printed (stdout and stderr), and every
    /// command run through [`Collector::cli`] (each with its own output).
    pub output: Arc<Mutex<Vec<Printed>>>,
}

/// What one process printed.
#[derive(Debug, Clone)]
pub struct Printed {
    /// `serve`, or the command line of a CLI run.
    pub what: String,
    pub stdout: String,
    pub stderr: String,
}

/// A finished CLI command.
#[derive(Debug, Clone)]
pub struct CliOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a CLI command on `data_dir` (`--data-dir` is appended).
pub fn cli(data_dir: &Path, args: &[&str]) -> CliOutput {
    let out = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "debug")
        .output()
        .expect("run podwarn-collector");
    CliOutput {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The token printed by `token create`.
pub fn token_of(out: &CliOutput) -> String {
    assert!(out.success, "token create failed: {}", out.stderr);
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("token:"))
        .map(|t| t.trim().to_owned())
        .unwrap_or_else(|| panic!("no token in {}", out.stdout))
}

impl Collector {
    /// Starts `serve` on a free port and waits until it listens.
    pub fn start(dir: &Path, extra: &[&str]) -> Collector {
        Self::start_logging(dir, extra, "warn")
    }

    /// Starts `serve` with `RUST_LOG` set to `log`, capturing all it prints.
    pub fn start_logging(dir: &Path, extra: &[&str], log: &str) -> Collector {
        Self::start_under(&[], dir, extra, log)
    }

    /// Starts `serve` through `wrapper` (a command that ends by running the
    /// binary and arguments it is given, e.g. `sh -c 'ulimit -n 256 && exec "$@"' sh`).
    pub fn start_under(wrapper: &[&str], dir: &Path, extra: &[&str], log: &str) -> Collector {
        let mut command = match wrapper.split_first() {
            None => Command::new(BIN),
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(BIN);
                c
            }
        };
        let mut child = command
            .args(["serve", "--data-dir"])
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", log)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn podwarn-collector");
        let output = Arc::new(Mutex::new(vec![Printed {
            what: "serve".into(),
            stdout: String::new(),
            stderr: String::new(),
        }]));
        let stderr = child.stderr.take().expect("stderr");
        let sink = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[collector] {line}");
                sink.lock().unwrap()[0].stderr.push_str(&format!("{line}\n"));
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("collector exited before listening")
                .expect("read collector stdout");
            output.lock().unwrap()[0].stdout.push_str(&format!("{line}\n"));
            if let Some(url) = line.strip_prefix("podwarn-collector listening on ") {
                break url.to_owned();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        let sink = output.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap()[0].stdout.push_str(&format!("{line}\n"));
            }
        });
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
            output,
        }
    }

    /// Runs a CLI command on this data directory and records what it printed.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        let out = cli(&self.dir, args);
        self.output.lock().unwrap().push(Printed {
            what: args.join(" "),
            stdout: out.stdout.clone(),
            stderr: out.stderr.clone(),
        });
        out
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
    issue_cert_with(data_dir, cluster, &[])
}

/// `cert issue` with extra flags (`--tenant`, `--ttl` …).
pub fn issue_cert_with(data_dir: &Path, cluster: &str, extra: &[&str]) -> PathBuf {
    let out = data_dir
        .parent()
        .unwrap()
        .join(format!("agent-{cluster}-{}", rand_suffix()));
    let status = Command::new(BIN)
        .args(["cert", "issue", "--data-dir"])
        .arg(data_dir)
        .args(["--cluster", cluster, "--out"])
        .arg(&out)
        .args(extra)
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

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
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
    /// POST a JSON body with the bearer token; returns (status, JSON body).
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

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
