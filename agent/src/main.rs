//! podwarn-agent binary: flags, logging, signals, exit codes. The work is in the library.

use clap::Parser;
use podwarn_agent::config::{Cli, Command, LogFormat};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// Exit code for bad configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// Runtime worker threads. The agent needs a fraction of one core even at
/// 10 000 warnings/s; two workers keep one busy step (a batch being
/// compressed) from holding up the watches, and a fixed number keeps the
/// per-thread memory (stacks, allocator arenas) the same on a 4-core node
/// and a 96-core one.
const WORKER_THREADS: usize = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    if rustls::crypto::ring::default_provider().install_default().is_err() {
        eprintln!("error: a TLS crypto provider was already installed");
        return ExitCode::FAILURE;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Check(args) => {
                let (items, ok) = podwarn_agent::check::run_checks(&args).await;
                ExitCode::from(podwarn_agent::check::print(&items, ok) as u8)
            }
            Command::Run(args) => {
                let shutdown = CancellationToken::new();
                let on_signal = shutdown.clone();
                tokio::spawn(async move {
                    shutdown_signal().await;
                    on_signal.cancel();
                });
                match podwarn_agent::run(*args, shutdown).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        if e.downcast_ref::<podwarn_agent::ConfigError>().is_some() {
                            ExitCode::from(EXIT_CONFIG)
                        } else {
                            ExitCode::FAILURE
                        }
                    }
                }
            }
        }
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
