//! podwarn-collector: accepts Pod warnings from agents over mutual TLS,
//! deduplicates them, groups them into incidents, stores them durably in redb
//! and serves them back over an HTTP query API.
//!
//! `main.rs` parses flags and calls [`serve`] or [`cli`]; everything else is
//! here so tests can drive it.

pub mod admin;
pub mod admin_api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod enroll;
pub mod error;
pub mod incidents;
pub mod ingest;
pub mod names;
pub mod ops;
pub mod query;
pub mod ratelimit;
pub mod server;
pub mod store;
pub mod tls;
pub mod token;

use anyhow::Context;
use config::ServeArgs;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The store file inside a data directory.
pub fn store_path(data_dir: &Path) -> PathBuf {
    data_dir.join("podwarn.redb")
}

/// Written by a running `serve` so admin commands can reach it while it holds the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServeInfo {
    /// Base URL of the running server.
    pub url: String,
    /// Its process id.
    pub pid: u32,
}

/// `DATA_DIR/serve.json`.
pub fn serve_info_path(data_dir: &Path) -> PathBuf {
    data_dir.join("serve.json")
}

/// Runs the collector until `shutdown` resolves.
pub async fn serve(args: ServeArgs, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let dir = &args.data.data_dir;
    if args.cert_ttl < enroll::MIN_CERT_TTL || args.cert_ttl > enroll::MAX_CERT_TTL {
        return Err(config::ConfigError("--cert-ttl must be between 1m and 366d".into()).into());
    }
    if args.enroll_failures_per_minute == 0 {
        return Err(config::ConfigError("--enroll-failures-per-minute must be at least 1".into()).into());
    }
    args.check_connection_limits()?;
    create_private_dir(dir)?;
    let cache = usize::try_from(args.cache_size).unwrap_or(usize::MAX);
    let store = store::Store::open_with_cache(&store_path(dir), cache).map_err(|e| match e {
        store::StoreError::Locked(_) => anyhow::anyhow!(
            "another podwarn-collector is already serving {} (see {}): stop it or choose another --data-dir",
            dir.display(),
            serve_info_path(dir).display()
        ),
        e => anyhow::Error::new(e),
    })?;
    let paths = tls::TlsPaths::new(dir);
    let ca = tls::Ca::load_or_create(&paths).context("loading the collector CA")?;
    ca.write_server_cert(&paths, &args.advertise)
        .context("writing the server certificate")?;
    let tls_config = tls::server_config(&paths, &ca).context("building the TLS configuration")?;
    let (admin_token, created) = auth::load_or_create_admin_token(dir).context("loading the admin token")?;
    if created {
        println!(
            "admin token (also in {}, mode 0600): {admin_token}",
            dir.join("admin.token").display()
        );
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}: is another process using that port?", args.listen))?;
    let addr = listener.local_addr()?;
    let url = format!("https://{addr}");
    let info = ServeInfo {
        url: url.clone(),
        pid: std::process::id(),
    };
    tls::write_public(&serve_info_path(dir), &serde_json::to_vec_pretty(&info)?)?;
    println!("podwarn-collector listening on {url}");
    println!("CA pin for agents: {}", ca.pin());
    tracing::info!(%addr, data_dir = %dir.display(), "serving");

    let state = server::AppState {
        store: store.clone(),
        ca: Arc::new(ca),
        admin_token_digest: auth::digest(&admin_token),
        limits: Arc::new(server::Limits {
            max_body: args.max_body,
            max_decoded_body: args.max_decoded_body,
            active_window: args.active_window,
            cert_ttl: args.cert_ttl,
            body_read_timeout: args.body_read_timeout,
        }),
        limiter: Arc::new(ratelimit::FailureLimiter::new(
            args.enroll_failures_per_minute,
            Duration::from_secs(60),
        )),
    };
    let (max_connections, open_files) = server::fit_open_file_limit(args.max_connections);
    if max_connections < args.max_connections {
        tracing::warn!(
            wanted = args.max_connections,
            allowed = max_connections,
            open_file_limit = open_files,
            "--max-connections lowered to fit the open-file limit (raise `ulimit -n` for more)"
        );
    }
    let conn_limits = server::ConnLimits {
        max_connections,
        tls_handshake_timeout: args.tls_handshake_timeout,
        header_read_timeout: args.header_read_timeout,
        idle_timeout: args.idle_timeout,
    };
    let retention = tokio::spawn(retention_loop(store.clone(), args.retention, args.retention_interval));
    server::serve(
        listener,
        Arc::new(tls_config),
        server::app(state),
        shutdown,
        args.drain_timeout,
        conn_limits,
    )
    .await;
    retention.abort();
    let _ = std::fs::remove_file(serve_info_path(dir));
    tracing::info!("stopped");
    Ok(())
}

async fn retention_loop(store: store::Store, keep: Duration, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let cutoff = store::now_us().saturating_sub(keep.as_micros().min(i64::MAX as u128) as i64);
        match store.apply_retention(cutoff).await {
            Ok(done) if done.events + done.incidents > 0 => {
                tracing::info!(
                    events = done.events,
                    incidents = done.incidents,
                    "retention deleted expired data"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention failed; will retry"),
        }
    }
}

pub(crate) fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))
}
