//! The agent binary's command line: every mistake an operator makes at
//! install time is refused before anything starts, with a message that says
//! what to do.
//!
//! Being an integration test of this package also makes `cargo test
//! --workspace` build `podwarn-agent`, which the end-to-end suites in
//! `podwarn-testkit` start as a child process.

use std::process::{Command, Output};

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podwarn-agent"))
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", "/nonexistent")
        .output()
        .expect("run podwarn-agent")
}

fn refused(args: &[&str]) -> String {
    let out = agent(args);
    assert!(!out.status.success(), "{args:?} should be refused");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn version_names_the_binary() {
    let out = agent(&["--version"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("podwarn-agent "), "{stdout}");
}

#[test]
fn run_without_a_collector_says_which_flag_is_missing() {
    let stderr = refused(&["run", "--kubeconfig", "/nonexistent"]);
    assert!(stderr.contains("--collector URL is required"), "{stderr}");
}

#[test]
fn daemonset_mode_without_a_node_name_points_at_the_downward_api() {
    let stderr = refused(&["run", "--mode", "daemonset", "--collector", "https://127.0.0.1:1"]);
    assert!(stderr.contains("--node-name"), "{stderr}");
    assert!(stderr.contains("spec.nodeName"), "{stderr}");
}

#[test]
fn a_malformed_number_is_refused_by_name() {
    let stderr = refused(&["run", "--api-qps", "abc"]);
    assert!(stderr.contains("--api-qps"), "{stderr}");
}

#[test]
fn check_without_kubernetes_access_fails_with_the_ways_to_give_it() {
    let out = agent(&["check", "--kubeconfig", "/nonexistent"]);
    assert!(!out.status.success(), "a failed required check must fail the command");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("[FAIL] Kubernetes access"), "{stdout}");
    assert!(stdout.contains("/nonexistent cannot be read"), "{stdout}");
    assert!(stdout.contains("KUBECONFIG"), "{stdout}");
}
