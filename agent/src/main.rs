//! podwarn-agent binary: flags, logging, signals, exit codes. The work is in the library.

use clap::Parser;
use podwarn_agent::config::{Cli, Command, LogFormat};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// Exit code for bad configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    if rustls::crypto::ring::default_provider().install_default().is_err() {
        eprintln!("error: a TLS crypto provider was already installed");
        return ExitCode::FAILURE;
    }
    // One thread, as linkerd2-proxy runs by default: the agent needs a
    // fraction of a core even at 10 000 warnings/s, and on one thread its
    // tasks (watch, enrich, batch, send) hand events on without waking
    // another thread. Against two workers this cut its CPU per event by about
    // a fifth (docs/BENCHMARKS.md), and its memory (one stack, one allocator
    // arena) is the same on a 4-core node and a 96-core one. Spool file I/O
    // still runs on tokio's blocking threads.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
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
                // Registered before the agent starts, so a SIGTERM that comes
                // while it connects still stops it gracefully.
                let signal = match podwarn_shared::signal::shutdown_signal() {
                    Ok(signal) => signal,
                    Err(e) => {
                        eprintln!("error: installing the SIGTERM and SIGINT handlers: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                let shutdown = CancellationToken::new();
                let on_signal = shutdown.clone();
                tokio::spawn(async move {
                    signal.await;
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
