//! podwarn-collector binary: flags, logging, exit codes. The work is in the library.

use clap::Parser;
use podwarn_collector::cli;
use podwarn_collector::config::{
    AgentCommand, ApikeyCommand, CertCommand, Cli, ClusterCommand, Command, LogFormat, TokenCommand,
};
use std::process::ExitCode;

/// Exit code for bad configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    if rustls::crypto::ring::default_provider().install_default().is_err() {
        eprintln!("error: a TLS crypto provider was already installed");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            // Registered before the store opens, so a SIGTERM meanwhile still stops it gracefully.
            Command::Serve(args) => match podwarn_shared::signal::shutdown_signal() {
                Ok(signal) => podwarn_collector::serve(args, signal).await,
                Err(e) => Err(anyhow::anyhow!("installing the SIGTERM and SIGINT handlers: {e}")),
            },
            Command::Cert(CertCommand::Issue(args)) => cli::cert_issue(args).await,
            Command::Token(TokenCommand::Create(args)) => cli::token_create(args).await,
            Command::Token(TokenCommand::List(args)) => cli::token_list(args).await,
            Command::Token(TokenCommand::Revoke(args)) => cli::token_revoke(args).await,
            Command::Agent(AgentCommand::List(args)) => cli::agent_list(args).await,
            Command::Agent(AgentCommand::Revoke(args)) => cli::agent_revoke(args).await,
            Command::Cluster(ClusterCommand::Remove(args)) => cli::cluster_remove(args).await,
            Command::Apikey(ApikeyCommand::Create(args)) => cli::apikey_create(args).await,
            Command::Apikey(ApikeyCommand::List(args)) => cli::apikey_list(args).await,
            Command::Apikey(ApikeyCommand::Revoke(args)) => cli::apikey_revoke(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<podwarn_collector::names::InvalidName>().is_some()
                || e.downcast_ref::<podwarn_collector::config::ConfigError>().is_some()
            {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
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
