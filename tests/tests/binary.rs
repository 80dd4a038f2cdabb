//! The `podwarn-sim` binary: flags, the first stdout line, and kubectl working at once.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use podwarn_testkit::Scenario;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_podwarn-sim");

/// Starts the binary and returns it with the URL from its first stdout line.
async fn spawn(args: &[&str]) -> (Child, String, tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("podwarn-sim starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("first line in time")
        .unwrap()
        .expect("a first line");
    let url = first
        .strip_prefix("podwarn-sim listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();
    (child, url, lines)
}

async fn run_kubectl(kubeconfig: &Path, home: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(common::kubectl_path())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env("HOME", home)
        .env("KUBECACHEDIR", home.join("kubecache"))
        .env_remove("KUBECONFIG")
        .output();
    tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("kubectl in time")
        .expect("kubectl runs")
}

#[tokio::test]
async fn help_lists_every_scenario_with_a_description() {
    let out = Command::new(BIN).arg("--help").output().await.unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--listen",
        "--write-kubeconfig",
        "--scenario",
        "--seed",
        "--rate",
        "--no-tls",
        "--token",
        "--event-ttl",
        "--in-cluster-dir",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
    for s in Scenario::ALL {
        let line = help
            .lines()
            .find(|l| l.split_whitespace().next() == Some(s.name()))
            .unwrap_or_else(|| panic!("--help lacks scenario {}:\n{help}", s.name()));
        assert!(line.contains(s.description()), "{line}");
    }
}

#[tokio::test]
async fn bad_flags_exit_with_a_message() {
    let out = Command::new(BIN).args(["--scenario", "nope"]).output().await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scenario \"nope\""));
}

#[tokio::test]
async fn kubectl_works_against_the_binary_as_soon_as_it_prints_its_address() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kc.yaml");
    let sa = dir.path().join("sa");
    let (mut child, url, _lines) = spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--write-kubeconfig",
        kc.to_str().unwrap(),
        "--scenario",
        "mixed",
        "--seed",
        "3",
        "--rate",
        "50",
        "--in-cluster-dir",
        sa.to_str().unwrap(),
    ])
    .await;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    assert_ne!(url, "https://127.0.0.1:0");
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&kc).unwrap()).unwrap();
    assert_eq!(written["clusters"][0]["cluster"]["server"], url.as_str());
    assert!(sa.join("token").exists() && sa.join("ca.crt").exists());

    let pods = run_kubectl(&kc, dir.path(), &["get", "pods", "-A"]).await;
    let text = String::from_utf8_lossy(&pods.stdout);
    assert!(pods.status.success(), "{}", String::from_utf8_lossy(&pods.stderr));
    assert!(text.starts_with("NAMESPACE"), "{text}");
    assert!(
        text.lines().count() > 10,
        "the mixed scenario's pods are listed:\n{text}"
    );
    assert!(text.contains("CrashLoopBackOff") || text.contains("Running"), "{text}");

    // At 50 warnings/s the first ones exist well within a second.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let warnings = run_kubectl(
        &kc,
        dir.path(),
        &["get", "events", "-A", "-o", "json", "--field-selector", "type=Warning"],
    )
    .await;
    let list: serde_json::Value = serde_json::from_slice(&warnings.stdout).unwrap();
    assert!(
        !list["items"].as_array().unwrap().is_empty(),
        "the scenario emits warnings"
    );
    child.kill().await.ok();
}

#[tokio::test]
async fn plain_http_without_auth() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kc");
    let (mut child, url, _lines) = spawn(&["--no-tls", "--no-auth", "--write-kubeconfig", kc.to_str().unwrap()]).await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let out = run_kubectl(&kc, dir.path(), &["get", "namespaces"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let version = run_kubectl(&kc, dir.path(), &["version", "-o", "json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&version.stdout).unwrap();
    assert_eq!(v["serverVersion"]["minor"], "33");
    child.kill().await.ok();
}
