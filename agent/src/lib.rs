//! podwarn-agent: watches Pod warnings in one Kubernetes cluster, enriches
//! and classifies them, and ships them to the collector over mutual TLS,
//! spooling to disk while the collector is away.
//!
//! `main.rs` parses flags and calls [`run`] or [`check::run_checks`];
//! everything else is here so tests can drive it.
//!
//! The pipeline: watches (Events, Pod status) → bounded channel → enrichment
//! (from the Pod index the Pod watch keeps; bounded concurrent lookups for
//! the rest) → bounded queue → shipper (batches, mTLS, spool). Every stage is
//! bounded, so a slow collector pauses the watches instead of growing memory
//! (invariant 6).

pub mod access;
pub mod check;
pub mod config;
pub mod enrich;
pub mod enroll;
pub mod lease;
pub mod logs;
pub mod ops;
pub mod pods;
pub mod podstatus;
pub mod resources;
pub mod ship;
pub mod spool;
pub mod watch;

use config::{Mode, RunArgs};
use resources::{EventObject, PodObject};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Configuration that cannot work; `main` exits with code 64 and this message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Distinct event uids remembered to skip re-shipping after a relist.
const SEEN_CAPACITY: usize = 200_000;

/// Joins the lease election when `--leader-elect` is set; the receiver holds
/// whether this agent leads. Without an election the agent always leads.
fn leader_election(
    args: &config::LeaderArgs,
    client: &kube::Client,
    shutdown: &CancellationToken,
) -> Option<tokio::sync::watch::Receiver<bool>> {
    if !args.leader_elect {
        ops::metrics().leader.set(1);
        return None;
    }
    let namespace = args.namespace(client);
    let identity = args.lease_identity.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "podwarn-agent".into());
        format!("{host}-{:08x}", rand::random::<u32>())
    });
    tracing::info!(lease = %args.lease_name, namespace = %namespace, identity = %identity, "joining the lease election");
    let config = lease::LeaseConfig::with_duration(args.lease_name.clone(), namespace, identity, args.lease_duration);
    Some(lease::spawn(client.clone(), config, shutdown.clone()))
}

/// Runs the agent until `shutdown` is cancelled, then stops the watches,
/// lets enrichment finish (bounded by `--drain-timeout`) and flushes what is
/// pending to the spool.
pub async fn run(args: RunArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let identity =
        enroll::IdentityConfig::from_args(&args.ship, &args.spool_dir).map_err(|e| ConfigError(e.to_string()))?;
    let collector = identity.collector.to_string();
    let node = match (args.scope.mode, &args.scope.node_name) {
        (Mode::Daemonset, None) => {
            return Err(ConfigError(
                "--mode daemonset needs --node-name (set NODE_NAME from the downward API: fieldRef spec.nodeName)"
                    .into(),
            )
            .into());
        }
        (Mode::Daemonset, Some(node)) => Some(node.clone()),
        (Mode::Deployment, _) => None,
    };
    let access = access::connect(&args.access)
        .await
        .map_err(|e| ConfigError(e.to_string()))?;
    tracing::info!(access = %access.source, "connected to the Kubernetes API");

    // The ops server answers /healthz while the agent enrolls (which may wait for the collector).
    let readiness = Arc::new(ops::Readiness::default());
    let ops_listener = tokio::net::TcpListener::bind(args.ops_listen)
        .await
        .map_err(|e| ConfigError(format!("--ops-listen {}: {e}", args.ops_listen)))?;
    println!("podwarn-agent ops on http://{}", ops_listener.local_addr()?);
    let ops_shutdown = shutdown.clone();
    let ops_router = ops::router(readiness.clone());
    tokio::spawn(async move {
        let served = axum::serve(ops_listener, ops_router)
            .with_graceful_shutdown(ops_shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "ops server stopped");
        }
    });

    let current = match enroll::ensure_identity(&identity, &shutdown).await {
        Ok(current) => current,
        Err(enroll::EnrollError::Cancelled) => return Ok(()),
        Err(e) if e.is_config() => return Err(ConfigError(e.to_string()).into()),
        Err(e) => return Err(e.into()),
    };
    let (link, refusals) = ship::IdentityLink::new();
    let shipper = ship::Shipper::new(ship::ShipConfig {
        collector,
        cert_dir: identity.cert_dir.clone(),
        spool_dir: args.spool_dir.clone(),
        spool_max_bytes: args.spool_max_bytes,
        batch_max_events: args.batch_max_events,
        batch_interval: args.batch_interval,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
    })
    .map_err(|e| ConfigError(e.to_string()))?
    .with_identity_link(link.clone());
    let lifecycle_token = CancellationToken::new();
    let mut lifecycle =
        tokio::spawn(enroll::Lifecycle::new(identity, current, link, refusals).run(lifecycle_token.clone()));

    let mut leadership = leader_election(&args.leader, &access.client, &shutdown);
    let ships_unscheduled = Arc::new(AtomicBool::new(true));
    if args.scope.mode == Mode::Deployment
        && let Some(leading) = leadership.as_mut()
    {
        // A standby is doing its job: ready, its shipper draining any old spool, not watching.
        readiness.watching.store(true, Ordering::Relaxed);
        readiness.shipping.store(true, Ordering::Relaxed);
        tracing::info!("standing by until this agent holds the lease");
        tokio::select! {
            () = shutdown.cancelled() => {
                lifecycle_token.cancel();
                let (_idle_tx, idle_rx) = mpsc::channel(1);
                let stop = CancellationToken::new();
                stop.cancel();
                shipper.run(idle_rx, stop, readiness.clone()).await?;
                return Ok(());
            }
            led = leading.wait_for(|leading| *leading) => {
                led.map_err(|_| anyhow::anyhow!("the lease election stopped"))?;
            }
        }
        readiness.watching.store(false, Ordering::Relaxed);
        tracing::info!("leading: starting the watches");
    } else if let Some(leading) = leadership.clone() {
        // DaemonSet: every agent ships its node; the lease holder also ships Pods without one.
        let flag = ships_unscheduled.clone();
        tokio::spawn(async move {
            let mut leading = leading;
            loop {
                flag.store(*leading.borrow_and_update(), Ordering::Relaxed);
                if leading.changed().await.is_err() {
                    return;
                }
            }
        });
    }
    let scope = Arc::new(watch::Scope {
        namespaces: args.scope.namespaces.clone(),
        excluded: args.scope.exclude_namespaces.iter().cloned().collect::<HashSet<_>>(),
    });
    let limiter = Arc::new(access::RateLimiter::new(args.access.api_qps, args.access.api_burst));
    let pod_apis = scope.apis::<PodObject>(&access.client);
    let index = Arc::new(pods::PodIndex::new(pod_apis.len()));
    let enricher = enrich::Enricher::new(
        access.client.clone(),
        limiter,
        index.clone(),
        enrich::EnrichConfig {
            log_lines: if args.no_logs { 0 } else { args.log_lines },
            log_max_bytes: args.log_max_bytes,
            node: node.clone(),
            // Without an election every DaemonSet agent ships Pods without a node
            // (the collector's dedup absorbs the copies); with one, only the leader.
            ships_unscheduled: ships_unscheduled.clone(),
        },
    );
    let (raw_tx, raw_rx) = mpsc::channel::<enrich::Candidate>(1024);
    let (events_tx, events_rx) = mpsc::channel(args.queue_capacity.max(1));
    let watch_token = CancellationToken::new();
    let ctx = watch::WatchContext {
        scope: scope.clone(),
        seen: Arc::new(watch::Seen::new(SEEN_CAPACITY)),
        out: raw_tx.clone(),
        stale_after: args.stale_watch_after,
        shutdown: watch_token.clone(),
        readiness: readiness.clone(),
        open_batch: shipper.open_batch(),
    };
    let mut watches = tokio::task::JoinSet::new();
    for (label, api) in scope.apis::<EventObject>(&access.client) {
        watches.spawn(watch::watch_events(api, label, ctx.clone()));
    }
    for (label, api) in pod_apis {
        let namespace = (label != "*").then_some(label);
        watches.spawn(podstatus::watch_pods(
            api,
            namespace,
            node.clone(),
            index.clone(),
            ctx.clone(),
        ));
    }
    drop(ctx);
    drop(raw_tx);
    let enrich_task = tokio::spawn(enrich::run(enricher, raw_rx, events_tx));
    let ship_token = CancellationToken::new();
    let mut ship_task = tokio::spawn(shipper.run(events_rx, ship_token.clone(), readiness.clone()));

    // Set when the identity is lost for good (revoked, or refused when enrolling again).
    let mut lost_identity = None;
    let lost_lead = async {
        match leadership.as_mut().filter(|_| args.scope.mode == Mode::Deployment) {
            Some(leading) => {
                let _ = leading.wait_for(|leading| !*leading).await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = lost_lead => {
            // Another agent may lead now: stop shipping, flush, and restart as a standby.
            tracing::warn!("lost the lease; flushing pending events to the spool and stopping");
            lost_identity = Some(anyhow::anyhow!("lost leadership of the lease; exiting so the restart stands by"));
        }
        finished = &mut ship_task => {
            watch_token.cancel();
            lifecycle_token.cancel();
            return match finished {
                Ok(Ok(())) => Err(anyhow::anyhow!("the shipper stopped unexpectedly")),
                Ok(Err(e)) => Err(e.into()),
                Err(e) => Err(e.into()),
            };
        }
        ended = &mut lifecycle => {
            readiness.shipping.store(false, std::sync::atomic::Ordering::Relaxed);
            let error = match ended {
                Ok(Ok(())) => anyhow::anyhow!("the certificate lifecycle stopped unexpectedly"),
                Ok(Err(e)) if e.is_config() => ConfigError(e.to_string()).into(),
                Ok(Err(e)) => e.into(),
                Err(e) => e.into(),
            };
            tracing::error!(error = %error, "cannot ship any more; flushing pending events to the spool and stopping");
            lost_identity = Some(error);
        }
    }
    tracing::info!("stopping watches and flushing pending events to the spool");
    watch_token.cancel();
    let drain = async {
        while watches.join_next().await.is_some() {}
        let _ = enrich_task.await;
    };
    if tokio::time::timeout(args.drain_timeout, drain).await.is_err() {
        tracing::warn!(deadline = ?args.drain_timeout, "enrichment did not finish in time; the relist after restart will bring the rest");
    }
    ship_token.cancel();
    lifecycle_token.cancel();
    ship_task.await??;
    if let Some(error) = lost_identity {
        return Err(error);
    }
    tracing::info!("stopped");
    Ok(())
}
