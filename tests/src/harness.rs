//! Running the real podwarn binaries in tests: a collector and agents as
//! child processes on loopback, HTTPS clients for them, and a poller for
//! "eventually" assertions.
//!
//! Binaries are found beside the test executable (`target/<profile>/`);
//! `cargo test --workspace` builds them.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where [`pin_binaries`] copied the binaries, once called.
static PINNED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Copies `podwarn-agent` and `podwarn-collector` into `dir` and makes [`binary`]
/// return the copies for the rest of this process: a suite that runs for long keeps
/// testing the build it started with even when `target/` is rebuilt meanwhile (a
/// checkout shared by several people). Only the first call copies; the caller removes
/// `dir` when done.
///
/// # Panics
/// When a binary is not built or cannot be copied.
pub fn pin_binaries(dir: &Path) {
    pin_binaries_from(
        dir,
        &[
            ("podwarn-agent", binary("podwarn-agent")),
            ("podwarn-collector", binary("podwarn-collector")),
        ],
    );
}

/// Like [`pin_binaries`], with each binary copied from the path given.
///
/// # Panics
/// When a binary cannot be copied.
pub fn pin_binaries_from(dir: &Path, binaries: &[(&str, PathBuf)]) {
    PINNED.get_or_init(|| {
        std::fs::create_dir_all(dir).expect("create the pinned binaries folder");
        for (name, from) in binaries {
            std::fs::copy(from, dir.join(name)).expect("copy a binary to pin it");
        }
        dir.to_owned()
    });
}

/// `podwarn-agent` as its image ships it: the `agent` profile.
///
/// # Panics
/// When it has not been built, with the command that builds it.
pub fn shipped_agent() -> PathBuf {
    built(
        "agent",
        "podwarn-agent",
        "`cargo build --profile agent -p podwarn-agent`",
    )
}

/// `name` as built with `profile` (its folder under `target/`).
///
/// # Panics
/// When it has not been built, naming `how` to build it.
fn built(profile: &str, name: &str, how: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<this profile>/deps/<test> → target/<profile>/<name>
    let target = exe.ancestors().nth(3).expect("target directory");
    let path = target.join(profile).join(name);
    assert!(path.exists(), "{} is not built: run {how}", path.display());
    path
}

/// The path of a workspace binary (`podwarn-agent`, `podwarn-collector`).
///
/// # Panics
/// When it has not been built, with the command that builds it.
pub fn binary(name: &str) -> PathBuf {
    if let Some(pinned) = PINNED.get().map(|dir| dir.join(name))
        && pinned.exists()
    {
        return pinned;
    }
    let exe = std::env::current_exe().expect("test executable path");
    let own = exe
        .ancestors()
        .nth(2)
        .and_then(Path::file_name)
        .expect("profile folder");
    built(
        &own.to_string_lossy(),
        name,
        "`cargo build --workspace --bins` (`cargo test --workspace` does)",
    )
}

/// Reads a child's stdout until a line starting with `prefix`; returns the
/// rest of that line and keeps draining stdout so the child never blocks.
fn wait_for_line(child: &mut Child, prefix: &str) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let found = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("process exited before printing {prefix:?}"))
            .expect("read stdout");
        if let Some(rest) = line.strip_prefix(prefix) {
            break rest.to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    found
}

/// Like [`wait_for_line`], and appends every stdout line to `log`.
fn wait_for_line_logged(child: &mut Child, prefix: &str, log: std::fs::File) -> String {
    use std::io::Write;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut log = log;
    let found = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("process exited before printing {prefix:?}"))
            .expect("read stdout");
        let _ = writeln!(log, "{line}");
        if let Some(rest) = line.strip_prefix(prefix) {
            break rest.to_owned();
        }
    };
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = writeln!(log, "{line}");
        }
    });
    found
}

fn append(log: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open the log file")
}

/// The token and CA pin printed by `podwarn-collector token create`.
#[derive(Debug, Clone)]
pub struct EnrollmentToken {
    /// `pw1.<id>.<secret>`.
    pub token: String,
    /// The token's public id.
    pub id: String,
    /// `sha256:<hex>`.
    pub pin: String,
}

impl EnrollmentToken {
    /// The secret part of the token.
    pub fn secret(&self) -> &str {
        self.token.rsplit('.').next().unwrap_or("")
    }
}

/// Runs `podwarn-collector token create --data-dir DIR --cluster CLUSTER EXTRA…`
/// and reads the token and the pin from what it prints.
pub fn create_token(binary: &Path, data_dir: &Path, cluster: &str, extra: &[&str]) -> EnrollmentToken {
    let out = Command::new(binary)
        .args(["token", "create", "--data-dir"])
        .arg(data_dir)
        .args(["--cluster", cluster])
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run token create");
    assert!(
        out.status.success(),
        "token create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("token create printed no {name:?} line"))
    };
    let token = field("token:");
    let pin = field("CA pin:");
    let id = token.split('.').nth(1).unwrap_or("").to_owned();
    EnrollmentToken { token, id, pin }
}

/// A running `podwarn-collector serve`.
#[derive(Debug)]
pub struct Collector {
    /// The process.
    pub child: Child,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// Its data directory.
    pub dir: PathBuf,
    /// The admin token.
    pub admin_token: String,
    /// The CA certificate, PEM.
    pub ca_pem: Vec<u8>,
    binary: PathBuf,
}

impl Collector {
    /// Starts `serve` on `listen` (use `127.0.0.1:0` for a free port) and waits until it listens.
    pub fn start_on(binary: &Path, dir: &Path, listen: &str, extra: &[&str]) -> Collector {
        Self::launch(Command::new(binary), binary, dir, listen, extra, None)
    }

    /// Starts `serve` like [`Collector::start_on`], appending everything it prints
    /// (stdout and stderr) to `log`.
    pub fn start_on_logged(binary: &Path, dir: &Path, listen: &str, extra: &[&str], log: &Path) -> Collector {
        Self::launch(Command::new(binary), binary, dir, listen, extra, Some(log))
    }

    /// Starts `serve` like [`Collector::start_on`] with SIGXFSZ ignored (a shell's
    /// `trap '' XFSZ` before `exec`: an ignored signal stays ignored across exec). A
    /// file-size limit set later with [`Collector::limit_file_size`] then makes its writes
    /// past the limit fail with EFBIG, as a full disk makes them fail with ENOSPC,
    /// instead of killing it: a full disk without the privilege to mount one. Its output
    /// is appended to `log` (which the limit applies to as well while it is set).
    pub fn start_on_ignoring_sigxfsz(binary: &Path, dir: &Path, listen: &str, extra: &[&str], log: &Path) -> Collector {
        let mut sh = Command::new("sh");
        sh.args(["-c", "trap '' XFSZ; exec \"$0\" \"$@\""]).arg(binary);
        Self::launch(sh, binary, dir, listen, extra, Some(log))
    }

    /// Sets the soft `RLIMIT_FSIZE` of the running collector with `prlimit(1)`:
    /// `Some(bytes)` makes writes beyond that offset of any file fail, `None` lifts the
    /// limit. The hard limit is left alone, so lifting it again needs no privilege.
    ///
    /// # Panics
    /// When `prlimit` is missing or fails.
    pub fn limit_file_size(&self, bytes: Option<u64>) {
        let soft = bytes.map_or_else(|| "unlimited".to_owned(), |b| b.to_string());
        let out = Command::new("prlimit")
            .arg(format!("--pid={}", self.child.id()))
            .arg(format!("--fsize={soft}:"))
            .output()
            .expect("run prlimit(1) (util-linux)");
        assert!(
            out.status.success(),
            "prlimit --fsize={soft}: failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn launch(
        mut cmd: Command,
        binary: &Path,
        dir: &Path,
        listen: &str,
        extra: &[&str],
        log: Option<&Path>,
    ) -> Collector {
        // A logged collector's stderr goes through a pipe that this process copies to the
        // file, so a file-size limit set on the collector cannot silence it.
        let (level, stderr) = match log {
            Some(_) => ("info", Stdio::piped()),
            None => ("warn", Stdio::inherit()),
        };
        let mut child = cmd
            .args(["serve", "--data-dir"])
            .arg(dir)
            .args(["--listen", listen])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("PODWARN_TEST_LOG").unwrap_or_else(|_| level.into()),
            )
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn podwarn-collector");
        if let (Some(log), Some(stderr)) = (log, child.stderr.take()) {
            let mut file = append(log);
            std::thread::spawn(move || {
                use std::io::Write;
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let _ = writeln!(file, "{line}");
                }
            });
        }
        let url = match log {
            Some(log) => wait_for_line_logged(&mut child, "podwarn-collector listening on ", append(log)),
            None => wait_for_line(&mut child, "podwarn-collector listening on "),
        };
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
            binary: binary.to_owned(),
        }
    }

    /// Starts `serve` on a free port.
    pub fn start(binary: &Path, dir: &Path, extra: &[&str]) -> Collector {
        Self::start_on(binary, dir, "127.0.0.1:0", extra)
    }

    /// The `host:port` it listens on.
    pub fn addr(&self) -> String {
        self.url.trim_start_matches("https://").to_owned()
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }

    /// An admin HTTPS client (bearer token, no client certificate).
    pub fn admin(&self) -> Admin {
        Admin {
            client: https_client(&self.ca_pem, None),
            url: self.url.clone(),
            token: self.admin_token.clone(),
        }
    }

    /// Issues an agent certificate for `cluster` with the `cert issue` command.
    pub fn issue_cert(&self, cluster: &str) -> PathBuf {
        issue_cert(&self.binary, &self.dir, cluster)
    }

    /// An ingest client presenting the agent certificate in `cert_dir`.
    pub fn agent_client(&self, cert_dir: &Path) -> Ingest {
        Ingest {
            client: agent_https_client(&self.ca_pem, cert_dir),
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

/// Runs `podwarn-collector cert issue` for `cluster` into a fresh folder beside the data dir.
pub fn issue_cert(binary: &Path, data_dir: &Path, cluster: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let parent = data_dir.parent().expect("data dir has a parent");
    let out = parent.join(format!("agent-{cluster}-{}", N.fetch_add(1, Ordering::Relaxed)));
    let status = Command::new(binary)
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

/// A running `podwarn-agent run`.
#[derive(Debug)]
pub struct Agent {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT` of its ops server.
    pub ops_url: String,
}

impl Agent {
    /// Starts `podwarn-agent run` with `args` (an ops port of 0 is added) and
    /// waits until its ops server listens.
    pub fn start(binary: &Path, args: &[String], env: &[(&str, &str)]) -> Agent {
        let mut cmd = Command::new(binary);
        cmd.arg("run")
            .args(args)
            .args(["--ops-listen", "127.0.0.1:0"])
            .env(
                "RUST_LOG",
                std::env::var("PODWARN_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBECONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn podwarn-agent");
        let ops_url = wait_for_line(&mut child, "podwarn-agent ops on ");
        Agent { child, ops_url }
    }

    /// Starts `podwarn-agent run` like [`Agent::start`], appending everything
    /// it prints (stdout and stderr) to `log`.
    pub fn start_logged(binary: &Path, args: &[String], env: &[(&str, &str)], log: &Path) -> Agent {
        let mut cmd = Command::new(binary);
        cmd.arg("run")
            .args(args)
            .args(["--ops-listen", "127.0.0.1:0"])
            .env(
                "RUST_LOG",
                std::env::var("PODWARN_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBECONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(append(log)));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn podwarn-agent");
        let ops_url = wait_for_line_logged(&mut child, "podwarn-agent ops on ", append(log));
        Agent { child, ops_url }
    }

    /// Waits up to `timeout` for the agent to exit by itself; `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        poll(timeout, || self.child.try_wait().expect("wait"))
    }

    /// SIGTERM and wait: the agent flushes to its spool and exits.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.wait_exit(Duration::from_secs(20))
            .expect("agent did not exit within 20 s of SIGTERM")
    }

    /// SIGKILL.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }

    /// The agent's metrics text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.ops_url))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// A counter's value from the metrics text (0 when absent).
    pub async fn counter(&self, name: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A reqwest client trusting only `ca_pem`, optionally presenting a client certificate (cert PEM, key PEM).
pub fn https_client(ca_pem: &[u8], identity: Option<(&[u8], &[u8])>) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = rustls_pemfile::certs(&mut &cert[..])
                .collect::<Result<Vec<_>, _>>()
                .expect("cert PEM");
            let key = rustls_pemfile::private_key(&mut &key[..])
                .expect("key PEM")
                .expect("a private key");
            builder.with_client_auth_cert(chain, key).expect("client certificate")
        }
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

/// A client presenting the agent certificate in `cert_dir` (tls.crt, tls.key).
pub fn agent_https_client(ca_pem: &[u8], cert_dir: &Path) -> reqwest::Client {
    let cert = std::fs::read(cert_dir.join("tls.crt")).expect("tls.crt");
    let key = std::fs::read(cert_dir.join("tls.key")).expect("tls.key");
    https_client(ca_pem, Some((&cert, &key)))
}

/// The query API with the admin token.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The client.
    pub client: reqwest::Client,
    /// Base URL.
    pub url: String,
    /// Bearer token.
    pub token: String,
}

impl Admin {
    /// GET a path; returns (status, JSON body or Null).
    pub async fn get(&self, path_and_query: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path_and_query}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("query the collector");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Every event matching `filters` (e.g. `&cluster=prod`), following cursors.
    pub async fn all_events(&self, filters: &str) -> Vec<Value> {
        self.all("/v1/events", filters).await
    }

    /// Every incident matching `filters`, following cursors.
    pub async fn all_incidents(&self, filters: &str) -> Vec<Value> {
        self.all("/v1/incidents", filters).await
    }

    async fn all(&self, path: &str, filters: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor = String::new();
        loop {
            let (status, body) = self.get(&format!("{path}?limit=1000{filters}{cursor}")).await;
            assert_eq!(status, 200, "{body}");
            out.extend(body["items"].as_array().expect("items").iter().cloned());
            match body["next_cursor"].as_str() {
                Some(c) => cursor = format!("&cursor={c}"),
                None => return out,
            }
        }
    }
}

/// Ingest with an agent certificate.
#[derive(Debug, Clone)]
pub struct Ingest {
    /// The client.
    pub client: reqwest::Client,
    /// Base URL.
    pub url: String,
}

impl Ingest {
    /// POSTs a batch of events; returns (status, JSON body or Null).
    pub async fn send(&self, events: &[Value]) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}/v1/ingest", self.url))
            .json(&json!({ "agent": {"version": "test"}, "events": events }))
            .send()
            .await
            .expect("post to the collector");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

/// Polls `check` every 50 ms, blocking the thread, until it returns `Some`;
/// `None` once `timeout` has passed (the async form is [`eventually`]).
pub fn poll<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Replaces the section between `<!-- bench:NAME:begin -->` and
/// `<!-- bench:NAME:end -->` of `docs/BENCHMARKS.md` (appending it when
/// absent), so each benchmark rewrites only its own numbers.
pub fn write_benchmark_section(name: &str, section: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/BENCHMARKS.md");
    let begin = format!("<!-- bench:{name}:begin -->");
    let end = format!("<!-- bench:{name}:end -->");
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|_| "# podwarn benchmarks\n\n".to_owned());
    let block = format!("{begin}\n{section}{end}");
    let doc = match (doc.find(&begin), doc.find(&end)) {
        (Some(b), Some(e)) if b < e => format!("{}{block}{}", &doc[..b], &doc[e + end.len()..]),
        _ => format!("{}\n\n{block}\n", doc.trim_end()),
    };
    std::fs::write(&path, doc).expect("write docs/BENCHMARKS.md");
}

/// The machine a benchmark ran on: cores and CPU model.
pub fn machine_description() -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores, {model}")
}

/// CPU seconds (user + system) a process has used so far, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    stat_cpu_seconds(&stat)
}

/// CPU time (user + system) of the thread of process `pid` named `name`
/// (its `comm`, at most 15 bytes), if there is one.
pub fn thread_cpu_seconds(pid: u32, name: &str) -> Option<f64> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            return Some(stat_cpu_seconds(&stat));
        }
    }
    None
}

fn stat_cpu_seconds(stat: &str) -> f64 {
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th overall.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (field(11) + field(12)) / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Resident memory of a process in bytes (`VmRSS`), and its peak so far (`VmHWM`).
pub fn rss_bytes(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}
