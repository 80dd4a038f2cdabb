//! A whole podwarn pipeline for end-to-end tests and benchmarks: the
//! simulator plays a cluster, the real `podwarn-collector` and
//! `podwarn-agent` binaries run on loopback, and helpers compare what the
//! collector stored with what the simulator emitted.

use crate::harness::{self, Agent, Collector, eventually};
use crate::{SimConfig, Simulator};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a pipeline may take to deliver what was emitted.
pub const DELIVERY: Duration = Duration::from_secs(60);

/// A simulator, a collector and agents, all real, on loopback.
#[derive(Debug)]
pub struct Pipeline {
    /// See the type docs.
    pub sim: Simulator,
    /// See the type docs.
    pub collector: Option<Collector>,
    /// See the type docs.
    pub agent: Option<Agent>,
    /// See the type docs.
    pub tmp: tempfile::TempDir,
    /// See the type docs.
    pub kubeconfig: PathBuf,
    /// See the type docs.
    pub cert_dir: PathBuf,
    /// See the type docs.
    pub collector_addr: String,
    /// When set, the collector and the agents append their output to files here
    /// (`collector.log`, `agent.log`, `agent-NAME.log`) instead of the test's stderr.
    pub log_dir: Option<PathBuf>,
}

impl Pipeline {
    /// Starts the simulator, the collector and one agent with `agent_args` added.
    pub async fn start(agent_args: &[&str]) -> Pipeline {
        let mut p = Self::without_agent().await;
        p.start_agent(agent_args);
        p
    }

    /// Starts the simulator and the collector; agents come with [`Pipeline::start_agent`]
    /// or [`Pipeline::spawn_agent`].
    pub async fn without_agent() -> Pipeline {
        Self::launch(None).await
    }

    /// Like [`Pipeline::without_agent`], with every process logging to a file in
    /// `log_dir` (created if missing) at `info` level: for suites that run several
    /// pipelines at once, or keep the logs of a failure (the pipeline's temporary
    /// directory goes away with it).
    pub async fn without_agent_logged(log_dir: PathBuf) -> Pipeline {
        Self::launch(Some(log_dir)).await
    }

    async fn launch(log_dir: Option<PathBuf>) -> Pipeline {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let sim = Simulator::start(
            SimConfig::default(),
            tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        )
        .await
        .expect("start the simulator");
        let tmp = tempfile::tempdir().expect("temp dir");
        let kubeconfig = tmp.path().join("kubeconfig");
        sim.write_kubeconfig(&kubeconfig).expect("kubeconfig");
        if let Some(dir) = &log_dir {
            std::fs::create_dir_all(dir).expect("log dir");
        }
        let binary = harness::binary("podwarn-collector");
        let data = tmp.path().join("collector");
        let collector = match &log_dir {
            Some(dir) => Collector::start_on_logged(&binary, &data, "127.0.0.1:0", &[], &dir.join("collector.log")),
            None => Collector::start(&binary, &data, &[]),
        };
        let cert_dir = collector.issue_cert("sim");
        let collector_addr = collector.addr();
        Pipeline {
            sim,
            collector: Some(collector),
            agent: None,
            tmp,
            kubeconfig,
            cert_dir,
            collector_addr,
            log_dir,
        }
    }

    /// Where the process `name` (`collector`, `agent`, `agent-NAME`) logs, when logged.
    pub fn log_path(&self, name: &str) -> Option<PathBuf> {
        self.log_dir.as_ref().map(|d| d.join(format!("{name}.log")))
    }

    fn agent_with(&self, args: &[String], log: &str) -> Agent {
        let binary = harness::binary("podwarn-agent");
        match self.log_path(log) {
            Some(log) => Agent::start_logged(&binary, args, &[], &log),
            None => Agent::start(&binary, args, &[]),
        }
    }

    /// The arguments of the main agent, with `extra` added.
    pub fn agent_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--kubeconfig".into(),
            self.kubeconfig.display().to_string(),
            "--collector".into(),
            format!("https://{}", self.collector_addr),
            "--cert-dir".into(),
            self.cert_dir.display().to_string(),
            "--spool-dir".into(),
            self.tmp.path().join("spool").display().to_string(),
        ];
        // Test-friendly defaults, unless `extra` sets them.
        for (flag, value) in [("--batch-interval", "100ms"), ("--stale-watch-after", "5s")] {
            if !extra.contains(&flag) {
                args.extend([flag.to_owned(), value.to_owned()]);
            }
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    }

    /// (Re)starts the main agent.
    pub fn start_agent(&mut self, extra: &[&str]) {
        let args = self.agent_args(extra);
        self.agent = Some(self.agent_with(&args, "agent"));
    }

    /// Starts the collector again on the same address and data.
    pub fn restart_collector(&mut self) {
        let dir = self.tmp.path().join("collector");
        let binary = harness::binary("podwarn-collector");
        self.collector = Some(match self.log_path("collector") {
            Some(log) => Collector::start_on_logged(&binary, &dir, &self.collector_addr, &[], &log),
            None => Collector::start_on(&binary, &dir, &self.collector_addr, &[]),
        });
    }

    /// The collector's query API.
    pub fn admin(&self) -> harness::Admin {
        self.collector.as_ref().expect("collector running").admin()
    }

    /// uid → count of every Pod warning the simulator emitted.
    pub fn emitted_warnings(&self) -> BTreeMap<String, u64> {
        self.sim
            .cluster()
            .emitted()
            .into_iter()
            .filter(|r| r.type_ == "Warning" && r.kind == "Pod")
            .map(|r| (r.uid, u64::from(r.count)))
            .collect()
    }

    /// uid → count of every event the collector stored from the Event path.
    pub async fn stored_events(&self) -> BTreeMap<String, u64> {
        self.admin()
            .all_events("")
            .await
            .into_iter()
            .filter(|e| e["source"] != "podwarn-agent/pod-status")
            .map(|e| (e["uid"].as_str().unwrap().to_owned(), e["count"].as_u64().unwrap()))
            .collect()
    }

    /// Waits until the collector holds exactly what was emitted, with the right counts.
    pub async fn assert_delivered_exactly(&self) {
        let expected = self.emitted_warnings();
        assert!(!expected.is_empty(), "the test emitted nothing");
        let stored = eventually(DELIVERY, "every emitted warning stored with its count", || async {
            let stored = self.stored_events().await;
            (stored == expected).then_some(stored)
        })
        .await;
        // Exactly once: the incidents' occurrences add up to the emitted counts.
        let occurrences: u64 = self
            .admin()
            .all_incidents("")
            .await
            .iter()
            .filter(|i| i["reason"] != "OOMKilled" && i["reason"] != "Error")
            .map(|i| i["occurrences"].as_u64().unwrap())
            .sum();
        assert_eq!(
            occurrences,
            stored.values().sum::<u64>(),
            "occurrences counted more than once"
        );
    }
}

impl Pipeline {
    /// Starts another agent with its own certificate (for `cluster`) and spool, and `extra` arguments.
    pub fn spawn_agent(&self, name: &str, cluster: &str, extra: &[&str]) -> Agent {
        let collector = self.collector.as_ref().expect("collector running");
        let cert_dir = collector.issue_cert(cluster);
        let mut args = self.agent_args(extra);
        replace_arg(&mut args, "--cert-dir", &cert_dir);
        replace_arg(&mut args, "--spool-dir", &self.tmp.path().join(format!("spool-{name}")));
        self.agent_with(&args, &format!("agent-{name}"))
    }
}

fn replace_arg(args: &mut [String], flag: &str, value: &Path) {
    if let Some(i) = args.iter().position(|a| a == flag) {
        args[i + 1] = value.display().to_string();
    }
}
