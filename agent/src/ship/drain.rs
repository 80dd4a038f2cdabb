//! The drainer: sends the oldest spooled batches until the spool is empty,
//! backing off while the collector is away, until shutdown.
//!
//! A run of small batches (an outage spools one per batch interval) goes as
//! one request of at most `batch_max_events`: one round trip per spooled batch
//! would replay more slowly than warnings arrive, and the spool would never
//! empty. If the collector refuses a joined run, its batches go one by one
//! until the oldest is dealt with, so a refusal sets aside only the batch it
//! is about; after a 413 runs stay under half the refused size, so the halves
//! of a split batch are not joined again.

use super::Shared;
use super::batch::{self, Pending};
use super::client::Outcome;
use super::refusal;
use crate::spool::{SpoolError, SpooledBatch};
use backon::{BackoffBuilder, ExponentialBuilder};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Sends spooled batches, oldest first, until shutdown.
pub(super) async fn drain_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    let t = shared.tuning;
    let builder = ExponentialBuilder::default()
        .with_min_delay(t.drain_min_delay)
        .with_max_delay(t.drain_max_delay)
        .without_max_times()
        .with_jitter();
    let mut backoff = builder.build();
    let mut failures = 0u64;
    // After a joined run was refused: the oldest batch alone, until it is dealt with.
    let mut alone = false;
    while !shutdown.is_cancelled() {
        let (max_events, max_bytes) = if alone {
            (0, 0)
        } else {
            (
                shared.replay_max_events,
                shared.replay_max_bytes.load(Ordering::Relaxed),
            )
        };
        let run = match shared.spool.peek_oldest_run(max_events, max_bytes).await {
            Ok(run) if run.is_empty() => {
                tokio::select! {
                    () = shared.wake.notified() => continue,
                    () = shutdown.cancelled() => break,
                }
            }
            Ok(run) => run,
            Err(SpoolError::Corrupt { seq }) => {
                // redb checksums its pages, so this means a record of another layout: it cannot be sent.
                error!(seq, "damaged spool record; deleting it");
                if let Err(e) = shared.spool.remove(seq).await {
                    error!(error = %e, "cannot delete a damaged spool record");
                    if !pause(t.drain_max_delay, &shutdown).await {
                        break;
                    }
                }
                continue;
            }
            Err(e) => {
                error!(error = %e, "cannot read the spool");
                if !pause(backoff.next().unwrap_or(t.drain_max_delay), &shutdown).await {
                    break;
                }
                continue;
            }
        };
        if let Some(until) = shared.gate.until() {
            tokio::select! {
                () = tokio::time::sleep_until(until) => {}
                () = shared.collector.identity_changed() => shared.gate.clear(),
                () = shutdown.cancelled() => break,
            }
        }
        let seqs: Vec<u64> = run.iter().map(|b| b.seq).collect();
        let seq = seqs[0];
        let batch = match join(&shared, run) {
            Ok(batch) => batch,
            Err(e) => {
                warn!(error = %e, "cannot join spooled batches; sending them one by one");
                alone = true;
                continue;
            }
        };
        let pending = Pending::new(batch, &shared.held);
        let outcome = tokio::select! {
            outcome = shared.collector.send(pending.batch.body.clone()) => outcome,
            // The batch is still in the spool: nothing to do.
            () = shutdown.cancelled() => break,
        };
        match outcome {
            Outcome::Stored(counts) => {
                if failures > 0 {
                    info!(
                        failed_attempts = failures,
                        "collector reachable again; replaying the spool"
                    );
                }
                failures = 0;
                backoff = builder.build();
                alone = false;
                shared.shipped(&pending.batch, counts);
                if let Err(e) = shared.spool.remove_all(seqs).await {
                    // They will be sent again: harmless, the collector dedups.
                    error!(error = %e, "cannot delete shipped batches from the spool");
                }
            }
            Outcome::Retry { reason, retry_after } => {
                // It stays on disk; do not hold a copy through the back-off.
                drop(pending);
                failures += 1;
                let wait = match retry_after {
                    Some(wait) => {
                        shared.gate.hold_for(wait);
                        wait
                    }
                    None => backoff.next().unwrap_or(t.drain_max_delay),
                };
                if failures == 1 || failures.is_multiple_of(10) {
                    warn!(
                        spooled_batches = shared.spool.len_batches(),
                        spooled_bytes = shared.spool.len_bytes(),
                        failed_attempts = failures,
                        retry_in = ?wait,
                        error = %reason,
                        "collector unreachable; events wait in the spool"
                    );
                } else {
                    debug!(failed_attempts = failures, retry_in = ?wait, error = %reason, "spool replay failed");
                }
                // A new certificate (renewed or enrolled again) ends the wait: retry with it now.
                let renewed = tokio::select! {
                    () = shared.collector.identity_changed() => true,
                    go_on = pause(wait, &shutdown) => if go_on { false } else { break },
                };
                if renewed {
                    shared.gate.clear();
                    backoff = builder.build();
                }
            }
            Outcome::Refused { status, .. } if seqs.len() > 1 => {
                if status == reqwest::StatusCode::PAYLOAD_TOO_LARGE {
                    shared.too_large(pending.batch.body.len());
                }
                debug!(
                    status = status.as_u16(),
                    batches = seqs.len(),
                    "collector refused a joined replay; sending its batches one by one"
                );
                alone = true;
            }
            Outcome::Refused { status, code, message } => {
                alone = false;
                if status == reqwest::StatusCode::PAYLOAD_TOO_LARGE {
                    shared.too_large(pending.batch.body.len());
                }
                if status == reqwest::StatusCode::PAYLOAD_TOO_LARGE
                    && let Some((a, b)) = shared.split(&pending.batch)
                {
                    // Halves first, then the original out: a crash in between only duplicates.
                    let ok = shared.spool.push(a).await.is_ok() && shared.spool.push(b).await.is_ok();
                    if ok && shared.spool.remove(seq).await.is_ok() {
                        continue;
                    }
                    error!("cannot replace a too-large batch by its halves in the spool");
                }
                shared.count_refused(pending.batch.events, status, &code, &message);
                if let Err(e) = shared.spool.reject(seq, refusal(status, &code, &message)).await {
                    error!(error = %e, "cannot move a refused batch aside");
                    if !pause(t.drain_max_delay, &shutdown).await {
                        break;
                    }
                }
            }
        }
    }
}

/// One batch for a run of spooled batches: the batch itself when alone, else
/// their events joined, oldest first.
fn join(shared: &Shared, mut run: Vec<SpooledBatch>) -> Result<crate::spool::Batch, super::ShipError> {
    if run.len() == 1 {
        return Ok(run.remove(0).batch);
    }
    let batches: Vec<crate::spool::Batch> = run.into_iter().map(|b| b.batch).collect();
    batch::merge(&batches, &shared.version, shared.spool.dropped_total())
}

/// Sleeps unless shutdown comes first; returns whether to go on.
async fn pause(wait: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(wait) => true,
        () = shutdown.cancelled() => false,
    }
}
