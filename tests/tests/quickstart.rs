//! The README's first command, `./quickstart.sh`, brings up the whole
//! pipeline on this machine (no cluster here: the simulator) and a query
//! shows warnings within a minute.

use podwarn_testkit::harness::{self, eventually};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn readme_first_command_shows_warnings_within_a_minute() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The binaries are built by `cargo test --workspace`; a nested cargo build would wait on its lock.
    harness::binary("podwarn-agent");
    harness::binary("podwarn-collector");
    let state = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../quickstart.sh");
    let mut child = Command::new("bash")
        .arg(&script)
        .env("PODWARN_SKIP_BUILD", "1")
        .env("PODWARN_STATE_DIR", state.path())
        .env("PODWARN_LISTEN", &listen)
        // No cluster on this machine: the quickstart must fall back to the simulator.
        .env("KUBECONFIG", state.path().join("no-such-kubeconfig"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // Its own process group, so the whole pipeline can be stopped at the end.
        .process_group(0)
        .spawn()
        .expect("run quickstart.sh");
    let guard = ProcessGroup(child.id());
    let started = std::time::Instant::now();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut printed = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    assert!(printed.contains("starting podwarn-sim"), "{printed}");
    assert!(
        printed.contains("/v1/incidents"),
        "the query commands are printed:\n{printed}"
    );

    let data = state.path().join("collector");
    let ca = std::fs::read(data.join("tls/ca.crt")).unwrap();
    let token = std::fs::read_to_string(data.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    let admin = harness::Admin {
        client: harness::https_client(&ca, None),
        url: format!("https://{listen}"),
        token,
    };
    let incidents = eventually(Duration::from_secs(60), "warnings queryable", || async {
        let incidents = admin.all_incidents("&cluster=sim").await;
        (!incidents.is_empty()).then_some(incidents)
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    assert!(incidents.iter().all(|i| i["cluster"] == "sim"));

    drop(guard);
    let _ = child.wait();
}

/// Stops the quickstart and everything it started, however the test ends.
struct ProcessGroup(u32);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.0)])
            .status();
    }
}
