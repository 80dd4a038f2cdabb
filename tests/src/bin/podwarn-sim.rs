//! `podwarn-sim`: run the Kubernetes API simulator from the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use podwarn_testkit::{Scenario, SimConfig, Simulator};

fn scenario_help() -> String {
    let mut s = String::from("Scenarios:\n");
    for sc in Scenario::ALL {
        s.push_str(&format!("  {:<10} {}\n", sc.name(), sc.description()));
    }
    s
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (e.g. 90s, 10m, 1h)"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("invalid duration unit in {s:?} (use s, m or h)")),
    };
    Ok(Duration::from_secs(secs))
}

/// A Kubernetes API simulator that kubectl and kube-rs can talk to.
#[derive(Debug, Parser)]
#[command(version, about, after_help = scenario_help())]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "PODWARN_SIM_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write a kubeconfig for this simulator here.
    #[arg(long, env = "PODWARN_SIM_KUBECONFIG")]
    write_kubeconfig: Option<PathBuf>,
    /// Lay out an in-cluster service-account directory (token, ca.crt, namespace) here.
    #[arg(long, env = "PODWARN_SIM_IN_CLUSTER_DIR")]
    in_cluster_dir: Option<PathBuf>,
    /// Scenario to play (see below).
    #[arg(long, env = "PODWARN_SIM_SCENARIO")]
    scenario: Option<Scenario>,
    /// Seed for the scenario generator.
    #[arg(long, env = "PODWARN_SIM_SEED", default_value_t = 0)]
    seed: u64,
    /// Warning events per second (default depends on the scenario).
    #[arg(long, env = "PODWARN_SIM_RATE")]
    rate: Option<f64>,
    /// Serve HTTPS with a self-signed CA (default).
    #[arg(long, overrides_with = "no_tls")]
    tls: bool,
    /// Serve plain HTTP.
    #[arg(long, env = "PODWARN_SIM_NO_TLS")]
    no_tls: bool,
    /// Bearer token clients must present (random when unset).
    #[arg(long, env = "PODWARN_SIM_TOKEN")]
    token: Option<String>,
    /// Accept requests without a token.
    #[arg(long, env = "PODWARN_SIM_NO_AUTH")]
    no_auth: bool,
    /// Events disappear this long after their last update (e.g. 90s, 10m, 1h).
    #[arg(long, env = "PODWARN_SIM_EVENT_TTL", default_value = "1h", value_parser = parse_duration)]
    event_ttl: Duration,
    /// Changes kept per resource for watch resumption before 410 Gone.
    #[arg(long, env = "PODWARN_SIM_WATCH_WINDOW", default_value_t = 20_000)]
    watch_window: usize,
    /// Changes older than this are compacted away too (e.g. 5m).
    #[arg(long, env = "PODWARN_SIM_WATCH_WINDOW_AGE", default_value = "5m", value_parser = parse_duration)]
    watch_window_age: Duration,
    /// BOOKMARK period on watches that allow them (e.g. 10s).
    #[arg(long, env = "PODWARN_SIM_BOOKMARK_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    bookmark_interval: Duration,
    /// Log format: text or json.
    #[arg(long, env = "PODWARN_SIM_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = SimConfig {
        tls: !args.no_tls,
        event_ttl: args.event_ttl,
        watch_window: args.watch_window,
        watch_window_age: args.watch_window_age,
        bookmark_interval: args.bookmark_interval,
        seed: args.seed,
        ..SimConfig::default()
    };
    if args.no_auth {
        config.token = None;
    } else if let Some(t) = args.token {
        config.token = Some(t);
    }
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let sim = Simulator::start(config, listener).await?;
    // Everything a client needs exists before the first line is printed, so a caller may
    // run kubectl as soon as it reads it.
    if let Some(path) = &args.write_kubeconfig {
        sim.write_kubeconfig(path)?;
    }
    let in_cluster = match &args.in_cluster_dir {
        Some(dir) => Some(sim.write_in_cluster_env(dir)?),
        None => None,
    };
    if let Some(scenario) = args.scenario {
        sim.cluster().start_scenario(scenario, args.seed, args.rate)?;
    }
    println!("podwarn-sim listening on {}", sim.url());
    if let Some(path) = &args.write_kubeconfig {
        println!("kubeconfig written to {}", path.display());
    }
    if let (Some(dir), Some(env)) = (&args.in_cluster_dir, &in_cluster) {
        println!(
            "in-cluster files in {}: KUBERNETES_SERVICE_HOST={} KUBERNETES_SERVICE_PORT={}",
            dir.display(),
            env.host,
            env.port
        );
    }
    if let Some(scenario) = args.scenario {
        let rate = args.rate.unwrap_or_else(|| scenario.default_rate());
        println!("scenario {scenario} (seed {}, {rate} events/s)", args.seed);
        tracing::info!(scenario = %scenario, seed = args.seed, rate, "scenario started");
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    sim.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    // One process-wide rustls provider: ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("podwarn-sim: cannot start the runtime: {e}");
            return ExitCode::from(70);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("podwarn-sim: {e:#}");
            ExitCode::from(64)
        }
    }
}
