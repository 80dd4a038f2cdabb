//! Shared fixtures: a simulator on loopback with its kubeconfig, a kube-rs client for it,
//! and real kubectl pointed at it.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use podwarn_testkit::{SimConfig, Simulator};
use tempfile::TempDir;

/// A running simulator plus a scratch directory holding its kubeconfig.
pub struct Env {
    pub sim: Simulator,
    pub dir: TempDir,
    pub kubeconfig: PathBuf,
}

pub fn install_ring() {
    // Only one provider is compiled in; a second install attempt just errors.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub async fn start(config: SimConfig) -> Env {
    install_ring();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let sim = Simulator::start(config, listener).await.expect("simulator starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).expect("kubeconfig written");
    Env { sim, dir, kubeconfig }
}

pub async fn start_default() -> Env {
    start(SimConfig::default()).await
}

/// A kube-rs client from the kubeconfig the simulator wrote.
pub async fn client(env: &Env) -> kube::Client {
    client_for(&env.kubeconfig).await
}

pub async fn client_for(path: &Path) -> kube::Client {
    kube::Client::try_from(config_for(path).await).expect("kube client")
}

pub async fn config_for(path: &Path) -> kube::Config {
    install_ring();
    let kc = kube::config::Kubeconfig::read_from(path).expect("kubeconfig parses");
    kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .expect("kube config")
}

/// The kubectl to test with: `$KUBECTL`, else `/usr/bin/kubectl`, else `kubectl` on PATH.
/// Panics when none exists: CI installs Debian's `kubernetes-client`, so a missing kubectl
/// must fail loudly rather than let these tests pass without running.
pub fn kubectl_path() -> PathBuf {
    if let Some(p) = std::env::var_os("KUBECTL").map(PathBuf::from) {
        assert!(p.exists(), "KUBECTL={} does not exist", p.display());
        return p;
    }
    let usr = PathBuf::from("/usr/bin/kubectl");
    if usr.exists() {
        return usr;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("kubectl"))
                .find(|p| p.exists())
        })
        .expect(
            "kubectl not found (set KUBECTL, or install Debian's kubernetes-client package): \
             the simulator's fidelity tests need a real kubectl",
        )
}

/// A kubectl command against the simulator, with its own discovery cache and HOME.
pub fn kubectl_cmd(kubectl: &Path, env: &Env, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(kubectl);
    cmd.arg("--kubeconfig")
        .arg(&env.kubeconfig)
        .args(args)
        .env("HOME", env.dir.path())
        .env("KUBECACHEDIR", env.dir.path().join("kubecache"))
        .env_remove("KUBECONFIG")
        .kill_on_drop(true);
    cmd
}

/// Runs kubectl to completion (30 s limit).
pub async fn kubectl(env: &Env, args: &[&str]) -> Output {
    kubectl_with(&kubectl_path(), env, args).await
}

pub async fn kubectl_with(kubectl: &Path, env: &Env, args: &[&str]) -> Output {
    let fut = kubectl_cmd(kubectl, env, args).output();
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .unwrap_or_else(|_| panic!("kubectl {args:?} timed out"))
        .expect("kubectl runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts kubectl succeeded and returns its stdout.
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "kubectl failed: {}\nstdout: {}",
        stderr(o),
        stdout(o)
    );
    stdout(o)
}

/// Polls `check` until it holds or `timeout` passes; returns whether it held.
pub async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
