//! End to end: agents join with a token, the way `kubeadm join` does. The
//! real `podwarn-agent` and `podwarn-collector` binaries run on loopback
//! against the simulator; each test checks what the collector recorded
//! (tokens, agents, audit, stored events) and what the agent printed.

use podwarn_testkit::harness::{self, Agent, Collector, EnrollmentToken, eventually};
use podwarn_testkit::{PodRef, SimConfig, Simulator, Workload};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long delivery may take.
const DELIVERY: Duration = Duration::from_secs(60);
const CLUSTER: &str = "prod-eu";

struct Setup {
    sim: Simulator,
    collector: Option<Collector>,
    tmp: tempfile::TempDir,
    kubeconfig: PathBuf,
    /// Everything the agents of this test printed.
    log: PathBuf,
}

impl Setup {
    async fn start(collector_args: &[&str]) -> Setup {
        Self::start_with(collector_args, |_| {}).await
    }

    /// Starts the simulator and the collector; `before_serve` runs on the
    /// collector's data dir before `serve` (offline commands).
    async fn start_with(collector_args: &[&str], before_serve: impl FnOnce(&Path)) -> Setup {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let sim = Simulator::start(
            SimConfig::default(),
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        )
        .await
        .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let kubeconfig = tmp.path().join("kubeconfig");
        sim.write_kubeconfig(&kubeconfig).unwrap();
        let data = tmp.path().join("collector");
        before_serve(&data);
        let collector = Collector::start(&harness::binary("podwarn-collector"), &data, collector_args);
        let log = tmp.path().join("agent.log");
        Setup {
            sim,
            collector: Some(collector),
            tmp,
            kubeconfig,
            log,
        }
    }

    fn col(&self) -> &Collector {
        self.collector.as_ref().expect("collector running")
    }

    fn token(&self, extra: &[&str]) -> EnrollmentToken {
        harness::create_token(&harness::binary("podwarn-collector"), &self.col().dir, CLUSTER, extra)
    }

    fn spool(&self) -> PathBuf {
        self.tmp.path().join("spool")
    }

    /// The default cert dir: `<spool>/identity`.
    fn identity(&self) -> PathBuf {
        self.spool().join("identity")
    }

    /// Starts the agent with the token and pin in the environment, as the
    /// Secret's `envFrom` gives them; no `--cert-dir`.
    fn agent(&self, token: &EnrollmentToken) -> Agent {
        self.agent_with(&[], &[("PODWARN_TOKEN", &token.token), ("PODWARN_CA_PIN", &token.pin)])
    }

    fn agent_with(&self, extra: &[&str], env: &[(&str, &str)]) -> Agent {
        self.agent_at(&self.col().url, extra, env)
    }

    fn agent_at(&self, collector: &str, extra: &[&str], env: &[(&str, &str)]) -> Agent {
        let mut args: Vec<String> = [
            "--kubeconfig",
            &self.kubeconfig.display().to_string(),
            "--collector",
            collector,
            "--spool-dir",
            &self.spool().display().to_string(),
            "--batch-interval",
            "100ms",
            "--stale-watch-after",
            "5s",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        Agent::start_logged(&harness::binary("podwarn-agent"), &args, env, &self.log)
    }

    async fn admin_items(&self, path: &str) -> Vec<Value> {
        let (status, body) = self.col().admin().get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        body["items"].as_array().cloned().unwrap_or_default()
    }

    async fn tokens(&self) -> Vec<Value> {
        self.admin_items("/v1/admin/tokens").await
    }

    async fn agents(&self) -> Vec<Value> {
        self.admin_items("/v1/admin/agents").await
    }

    async fn audit_actions(&self, action: &str) -> Vec<Value> {
        self.admin_items("/v1/audit?limit=1000")
            .await
            .into_iter()
            .filter(|e| e["action"] == action)
            .collect()
    }

    fn pods(&self, name: &str) -> Vec<PodRef> {
        self.sim
            .cluster()
            .create(&Workload::deployment("shop", name).replicas(2))
            .unwrap()
    }

    fn warn(&self, pod: &PodRef, i: usize) -> String {
        self.sim
            .cluster()
            .emit_warning(
                pod,
                "BackOff",
                &format!("Back-off restarting failed container {} ({i})", pod.containers[0]),
                Some(&pod.containers[0]),
            )
            .unwrap()
            .uid
    }

    fn emitted(&self) -> BTreeMap<String, u64> {
        self.sim
            .cluster()
            .emitted()
            .into_iter()
            .filter(|r| r.type_ == "Warning" && r.kind == "Pod")
            .map(|r| (r.uid, u64::from(r.count)))
            .collect()
    }

    /// Waits until the collector holds exactly the emitted warnings, all under `CLUSTER`.
    async fn assert_delivered(&self) {
        let expected = self.emitted();
        assert!(!expected.is_empty(), "the test emitted nothing");
        let admin = self.col().admin();
        let events = eventually(DELIVERY, "every emitted warning stored", || async {
            let events: Vec<Value> = admin
                .all_events("")
                .await
                .into_iter()
                .filter(|e| e["source"] != "podwarn-agent/pod-status")
                .collect();
            let stored: BTreeMap<String, u64> = events
                .iter()
                .map(|e| (e["uid"].as_str().unwrap().to_owned(), e["count"].as_u64().unwrap()))
                .collect();
            (stored == expected).then_some(events)
        })
        .await;
        assert!(
            events.iter().all(|e| e["cluster"] == CLUSTER),
            "events stored under another cluster than the token's"
        );
    }

    /// Nothing the agents printed holds the token's secret or a private key.
    fn assert_no_secrets(&self, token: &EnrollmentToken) {
        assert_log_clean(&self.log, &[token.secret()]);
    }
}

fn assert_log_clean(log: &Path, secrets: &[&str]) {
    let printed = std::fs::read_to_string(log).unwrap_or_default();
    assert!(
        !printed.is_empty(),
        "the agent printed nothing at all: is the log captured?"
    );
    for secret in secrets {
        assert!(
            !printed.contains(secret),
            "the token secret appears in what the agent printed ({})",
            log.display()
        );
    }
    assert!(
        !printed.contains("PRIVATE KEY"),
        "a private key appears in what the agent printed"
    );
}

fn cert_fingerprint(dir: &Path) -> (String, u64) {
    use std::hash::{Hash, Hasher};
    let cert = std::fs::read_to_string(dir.join("tls.crt")).expect("tls.crt");
    // The key's hash only: tests never print a key.
    let key = std::fs::read(dir.join("tls.key")).expect("tls.key");
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (cert, h.finish())
}

#[tokio::test(flavor = "multi_thread")]
async fn enrolling_with_token_and_pin_ships_under_the_token_cluster() {
    use std::os::unix::fs::PermissionsExt;
    let s = Setup::start(&[]).await;
    let token = s.token(&["--uses", "3"]);
    let agent = s.agent(&token);
    let pods = s.pods("api");
    for i in 0..10 {
        s.warn(&pods[i % 2], i);
    }
    s.assert_delivered().await;

    let mode = std::fs::metadata(s.identity().join("tls.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "tls.key must be private");
    assert!(s.identity().join("ca.crt").exists() && s.identity().join("tls.crt").exists());
    let tokens = s.tokens().await;
    assert_eq!(tokens[0]["used"], 1, "{tokens:?}");
    let agents = s.agents().await;
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0]["cluster"], CLUSTER);
    assert_eq!(s.audit_actions("agent.enroll").await.len(), 1);
    drop(agent);
    s.assert_no_secrets(&token);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_ca_pin_stops_the_agent_before_the_token_is_sent() {
    let s = Setup::start(&[]).await;
    let token = s.token(&[]);
    // The pin of another collector's CA: what an impostor in the way would present.
    let other = tempfile::tempdir().unwrap();
    let impostor = harness::create_token(
        &harness::binary("podwarn-collector"),
        &other.path().join("data"),
        CLUSTER,
        &[],
    );
    assert_ne!(impostor.pin, token.pin);
    let mut agent = s.agent_with(
        &[],
        &[("PODWARN_TOKEN", &token.token), ("PODWARN_CA_PIN", &impostor.pin)],
    );
    let status = agent.wait_exit(Duration::from_secs(30)).expect("the agent must stop");
    assert_eq!(status.code(), Some(64), "a wrong pin is a configuration error");
    let printed = std::fs::read_to_string(&s.log).unwrap();
    assert!(printed.contains("NOT sent"), "{printed}");

    // The collector never saw the token: unused, no enrollment, no agent.
    let tokens = s.tokens().await;
    assert_eq!(tokens[0]["used"], 0, "{tokens:?}");
    assert!(tokens[0]["last_used"].is_null());
    assert!(s.audit_actions("agent.enroll").await.is_empty());
    assert!(s.agents().await.is_empty());
    assert!(!s.identity().join("tls.crt").exists());
    s.assert_no_secrets(&token);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_with_a_valid_certificate_does_not_enroll_again() {
    let s = Setup::start(&[]).await;
    let token = s.token(&[]);
    let agent = s.agent(&token);
    let pods = s.pods("api");
    for i in 0..5 {
        s.warn(&pods[i % 2], i);
    }
    s.assert_delivered().await;
    let first = s.agents().await;
    assert_eq!(first.len(), 1);
    let before = cert_fingerprint(&s.identity());

    let status = agent.terminate();
    assert!(status.success(), "agent exit status {status}");
    for i in 5..10 {
        s.warn(&pods[i % 2], i);
    }
    let agent = s.agent(&token);
    s.assert_delivered().await;

    let agents = s.agents().await;
    assert_eq!(agents.len(), 1, "a restart enrolled a new agent: {agents:?}");
    assert_eq!(agents[0]["agent_id"], first[0]["agent_id"]);
    assert_eq!(s.tokens().await[0]["used"], 1, "the token was spent again");
    assert_eq!(s.audit_actions("agent.enroll").await.len(), 1);
    assert_eq!(
        cert_fingerprint(&s.identity()),
        before,
        "the certificate or key changed"
    );
    drop(agent);
    s.assert_no_secrets(&token);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_renews_before_expiry_with_a_new_key_and_loses_nothing() {
    // One-minute certificates: renewal is due 36–48 s after issue.
    let s = Setup::start(&["--cert-ttl", "1m"]).await;
    let token = s.token(&[]);
    let agent = s.agent(&token);
    let pods = s.pods("api");
    s.warn(&pods[0], 0);
    s.assert_delivered().await;
    let first = s.agents().await;
    let agent_id = first[0]["agent_id"].clone();
    let first_expiry = first[0]["cert_expires"].clone();
    let before = cert_fingerprint(&s.identity());

    // Warnings keep coming through the renewal and past the first certificate's expiry.
    let started = std::time::Instant::now();
    let mut i = 1;
    while started.elapsed() < Duration::from_secs(75) {
        s.warn(&pods[i % 2], i);
        i += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    s.assert_delivered().await;

    let agents = s.agents().await;
    assert_eq!(agents.len(), 1, "renewal must keep the agent: {agents:?}");
    assert_eq!(agents[0]["agent_id"], agent_id);
    assert_ne!(
        agents[0]["cert_expires"], first_expiry,
        "the certificate was not renewed"
    );
    // 60–80 % of a one-minute lifetime: one or two renewals in 75 s, not a storm
    // (the collector backdates not_before; the agent counts from issue).
    let renewals = s.audit_actions("agent.renew").await.len();
    assert!((1..=3).contains(&renewals), "{renewals} renewals in 75 s");
    assert_eq!(s.tokens().await[0]["used"], 1, "renewal must not spend the token");
    let after = cert_fingerprint(&s.identity());
    assert_ne!(after.0, before.0, "tls.crt unchanged");
    assert_ne!(after.1, before.1, "renewal must use a new key");
    assert_eq!(agent.counter("podwarn_agent_events_dropped").await, 0.0);
    s.assert_no_secrets(&token);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_certificate_with_a_valid_token_enrolls_again_by_itself() {
    let tmp_out = tempfile::tempdir().unwrap();
    let issued = tmp_out.path().join("issued");
    // A 2-second certificate, issued offline before the server starts (test-only flag).
    let s = Setup::start_with(&[], |data| {
        let status = std::process::Command::new(harness::binary("podwarn-collector"))
            .args(["cert", "issue", "--data-dir"])
            .arg(data)
            .args(["--cluster", CLUSTER, "--ttl", "2s", "--insecure-short-ttl", "--out"])
            .arg(&issued)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    })
    .await;
    let old = s.agents().await;
    assert_eq!(old.len(), 1);
    std::fs::create_dir_all(s.spool()).unwrap();
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(&issued)
        .arg(s.identity())
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::sleep(Duration::from_secs(3)).await;

    let token = s.token(&[]);
    let agent = s.agent(&token);
    let pods = s.pods("api");
    for i in 0..5 {
        s.warn(&pods[i % 2], i);
    }
    s.assert_delivered().await;
    let agents = s.agents().await;
    assert_eq!(agents.len(), 2, "{agents:?}");
    let new: Vec<&Value> = agents.iter().filter(|a| a["agent_id"] != old[0]["agent_id"]).collect();
    assert_eq!(new.len(), 1, "a new agent id after enrolling again");
    assert_eq!(s.tokens().await[0]["used"], 1);
    drop(agent);
    s.assert_no_secrets(&token);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_agent_stops_with_a_clear_error_and_a_non_zero_exit() {
    let s = Setup::start(&[]).await;
    let token = s.token(&[]);
    let mut agent = s.agent(&token);
    let pods = s.pods("api");
    s.warn(&pods[0], 0);
    s.assert_delivered().await;
    let agent_id = s.agents().await[0]["agent_id"].as_str().unwrap().to_owned();

    let status = std::process::Command::new(harness::binary("podwarn-collector"))
        .args(["agent", "revoke", "--data-dir"])
        .arg(&s.col().dir)
        .arg(&agent_id)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "agent revoke failed");
    // The next batch is refused; the agent confirms by renewing and stops.
    s.warn(&pods[1], 1);
    let status = agent
        .wait_exit(Duration::from_secs(60))
        .expect("a revoked agent must stop");
    assert!(!status.success(), "exit status {status}");
    let printed = std::fs::read_to_string(&s.log).unwrap();
    assert!(printed.contains("revoked"), "{printed}");
    assert!(printed.contains(&agent_id), "the error must name the agent: {printed}");
    // It did not enroll again on its own with the still-valid token.
    assert_eq!(s.tokens().await[0]["used"], 1);
    assert_eq!(s.agents().await.len(), 1);
    s.assert_no_secrets(&token);
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_the_agent_prints_holds_the_token_secret_or_a_private_key() {
    // The most verbose logs, the token from a file, a renewal and the `check` command.
    let s = Setup::start(&["--cert-ttl", "1m"]).await;
    let token = s.token(&[]);
    let token_file = s.tmp.path().join("token");
    std::fs::write(&token_file, format!("{}\n", token.token)).unwrap();
    let check = std::process::Command::new(harness::binary("podwarn-agent"))
        .args(["check", "--kubeconfig"])
        .arg(&s.kubeconfig)
        .args(["--collector", &s.col().url, "--spool-dir"])
        .arg(s.spool())
        .args(["--ca-pin", &token.pin])
        .env("PODWARN_TOKEN", &token.token)
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    // `--help` shows environment values of other flags, never the token's.
    let help = std::process::Command::new(harness::binary("podwarn-agent"))
        .args(["run", "--help"])
        .env("PODWARN_TOKEN", &token.token)
        .output()
        .unwrap();
    let check_out = format!(
        "{}{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr),
        String::from_utf8_lossy(&help.stdout)
    );
    assert!(check_out.contains("matches the pin"), "{check_out}");
    assert_eq!(s.tokens().await[0]["used"], 0, "check must not spend the token");

    let agent = s.agent_with(
        &["--token-file", &token_file.display().to_string()],
        &[
            ("PODWARN_CA_PIN", &token.pin),
            ("RUST_LOG", "debug,podwarn_agent=trace"),
        ],
    );
    let pods = s.pods("api");
    s.warn(&pods[0], 0);
    s.assert_delivered().await;
    eventually(Duration::from_secs(70), "a renewal", || async {
        (!s.audit_actions("agent.renew").await.is_empty()).then_some(())
    })
    .await;
    s.warn(&pods[1], 1);
    s.assert_delivered().await;
    let status = agent.terminate();
    assert!(status.success(), "{status}");

    std::fs::write(s.tmp.path().join("check.log"), &check_out).unwrap();
    assert_log_clean(&s.tmp.path().join("check.log"), &[token.secret()]);
    s.assert_no_secrets(&token);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_that_expires_while_the_collector_is_away_is_replaced_by_enrolling_again() {
    let mut s = Setup::start(&[]).await;
    let token = s.token(&[]);
    let collector = s.collector.take().unwrap();
    let (addr, data) = (collector.addr(), collector.dir.clone());
    collector.kill9();
    // A 6-second certificate (issued offline, test-only flag): it expires
    // while renewal cannot reach the collector.
    let status = std::process::Command::new(harness::binary("podwarn-collector"))
        .args(["cert", "issue", "--data-dir"])
        .arg(&data)
        .args(["--cluster", CLUSTER, "--ttl", "6s", "--insecure-short-ttl", "--out"])
        .arg(s.identity())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let url = format!("https://{addr}");
    let agent = s.agent_at(
        &url,
        &[],
        &[("PODWARN_TOKEN", &token.token), ("PODWARN_CA_PIN", &token.pin)],
    );
    let pods = s.pods("api");
    for i in 0..5 {
        s.warn(&pods[i % 2], i);
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    s.collector = Some(Collector::start_on(
        &harness::binary("podwarn-collector"),
        &data,
        &addr,
        &[],
    ));
    for i in 5..10 {
        s.warn(&pods[i % 2], i);
    }
    s.assert_delivered().await;
    let agents = s.agents().await;
    assert_eq!(agents.len(), 2, "the issued agent and the enrolled one: {agents:?}");
    assert_eq!(s.tokens().await[0]["used"], 1);
    assert_eq!(s.audit_actions("agent.enroll").await.len(), 1);
    drop(agent);
    s.assert_no_secrets(&token);
}

/// An HTTPS server with a CA of its own that records every request: a
/// collector impostor between the agent and the real one.
async fn impostor() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;
    use std::sync::{Arc, Mutex};
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let pem = cert.pem();
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key_der)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = axum::Router::new().fallback(move |method: http::Method, uri: http::Uri, body: bytes::Bytes| {
        let record = record.clone();
        let pem = pem.clone();
        async move {
            record
                .lock()
                .unwrap()
                .push(format!("{method} {} {}", uri.path(), String::from_utf8_lossy(&body)));
            if uri.path() == "/v1/ca" { pem } else { "{}".to_owned() }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                    .await;
            });
        }
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_impostor_collector_gets_a_ca_request_and_never_the_token() {
    let s = Setup::start(&[]).await;
    let token = s.token(&[]);
    let (url, seen) = impostor().await;
    let mut agent = s.agent_at(
        &url,
        &[],
        &[("PODWARN_TOKEN", &token.token), ("PODWARN_CA_PIN", &token.pin)],
    );
    let status = agent.wait_exit(Duration::from_secs(30)).expect("the agent must stop");
    assert_eq!(status.code(), Some(64));
    let seen = seen.lock().unwrap().clone();
    assert!(seen.iter().any(|r| r.starts_with("GET /v1/ca")), "{seen:?}");
    assert!(
        seen.iter().all(|r| r.starts_with("GET /v1/ca")),
        "the agent sent more than a CA request: {seen:?}"
    );
    assert!(seen.iter().all(|r| !r.contains(token.secret())));
    s.assert_no_secrets(&token);
}
