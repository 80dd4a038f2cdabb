//! The sender: one batch at a time, live while the spool is empty (with a
//! short retry budget), else into the spool.

use super::Shared;
use super::batch::{self, Pending};
use super::client::Outcome;
use super::{ShipError, refusal};
use crate::ops::metrics;
use crate::spool::{Batch, SpoolError};
use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

/// Takes batches from the batcher: live while the spool is empty, else to the spool.
pub(super) async fn send_loop(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Pending>,
    shutdown: CancellationToken,
) -> Result<(), ShipError> {
    let mut lost = 0u64;
    let mut last_error = None;
    loop {
        let pending = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            pending = rx.recv() => match pending {
                Some(pending) => pending,
                None => break,
            },
        };
        if shared.spool.is_empty() && shared.gate.until().is_none() {
            let delivered = tokio::select! {
                delivered = shared.send_live(&pending) => delivered,
                // Whatever was in flight goes to the spool; if it did arrive, the collector dedups the replay.
                () = shutdown.cancelled() => false,
            };
            if delivered {
                continue;
            }
        }
        let events = u64::from(pending.batch.events);
        match shared.spool_until_written(pending, &shutdown).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                lost += events;
                last_error = Some(e);
                break;
            }
        }
    }
    // Shutdown: the spool takes everything still in memory; the batcher
    // hands over its last batches and then closes the channel.
    while let Some(pending) = rx.recv().await {
        let events = u64::from(pending.batch.events);
        if let Err(e) = shared.push(pending).await {
            metrics().events_dropped.inc_by(events);
            error!(batch_events = events, error = %e, "could not spool a batch at shutdown; lost");
            lost += events;
            last_error = Some(e);
        }
    }
    match last_error {
        Some(source) => Err(ShipError::LostAtShutdown { events: lost, source }),
        None => Ok(()),
    }
}

/// Why one live attempt did not store the batch.
#[derive(Debug)]
enum LiveFailure {
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    Refused {
        status: reqwest::StatusCode,
        code: String,
        message: String,
    },
}

impl Shared {
    /// Sends a batch directly, with a short retry budget. Returns whether it
    /// is done with (stored, or refused and set aside); `false` means spool it.
    async fn send_live(&self, pending: &Pending) -> bool {
        let t = self.tuning;
        let body = pending.batch.body.clone();
        let attempt = || {
            let body = body.clone();
            async move {
                match self.collector.send(body).await {
                    Outcome::Stored(counts) => Ok(counts),
                    Outcome::Retry { reason, retry_after } => Err(LiveFailure::Retry { reason, retry_after }),
                    Outcome::Refused { status, code, message } => Err(LiveFailure::Refused { status, code, message }),
                }
            }
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(t.live_min_delay)
            .with_max_delay(t.live_max_wait)
            .with_max_times(t.live_retries)
            .with_jitter();
        let retries = attempt
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|e| matches!(e, LiveFailure::Retry { .. }))
            .adjust(|e, delay| match e {
                // Honour Retry-After while the budget lasts; a longer wait is the drainer's job.
                LiveFailure::Retry {
                    retry_after: Some(wait),
                    ..
                } => {
                    self.gate.hold_for(*wait);
                    delay.filter(|_| *wait <= t.live_max_wait).map(|_| *wait)
                }
                _ => delay,
            })
            .notify(|e, delay| {
                if let LiveFailure::Retry { reason, .. } = e {
                    debug!(batch_events = pending.batch.events, retry_in = ?delay, error = %reason, "retrying batch");
                }
            });
        // A black-holed collector makes each attempt wait for the connect timeout: bound the whole.
        let result = tokio::time::timeout(t.live_budget, retries).await.unwrap_or_else(|_| {
            Err(LiveFailure::Retry {
                reason: format!("no answer within {:?}", t.live_budget),
                retry_after: None,
            })
        });
        match result {
            Ok(counts) => {
                self.shipped(&pending.batch, counts);
                true
            }
            Err(LiveFailure::Retry { reason, .. }) => {
                warn!(batch_events = pending.batch.events, error = %reason, "collector unreachable; spooling");
                false
            }
            Err(LiveFailure::Refused { status, code, message }) => {
                self.refused_live(pending, status, &code, &message).await
            }
        }
    }

    /// A live batch refused for good: split if too large, else set aside.
    async fn refused_live(&self, pending: &Pending, status: reqwest::StatusCode, code: &str, message: &str) -> bool {
        if status == reqwest::StatusCode::PAYLOAD_TOO_LARGE {
            self.too_large(pending.batch.body.len());
        }
        if status == reqwest::StatusCode::PAYLOAD_TOO_LARGE
            && let Some((a, b)) = self.split(&pending.batch)
        {
            // Both halves go through the spool (and the drainer) so the sender stays free.
            for half in [a, b] {
                if let Err(e) = self.push(Pending::new(half, &self.held)).await {
                    error!(error = %e, "could not spool half of a split batch");
                    return false;
                }
            }
            return true;
        }
        let reason = refusal(status, code, message);
        self.count_refused(pending.batch.events, status, code, message);
        if let Err(e) = self.spool.put_rejected(pending.batch.clone(), reason).await {
            warn!(error = %e, "could not keep a refused batch aside");
        }
        true
    }

    pub(super) fn split(&self, batch: &Batch) -> Option<(Batch, Batch)> {
        match batch::split(batch, &self.version, self.spool.dropped_total()) {
            Ok(halves) => {
                if halves.is_some() {
                    warn!(
                        batch_events = batch.events,
                        "collector found the batch too large; splitting it in two"
                    );
                }
                halves
            }
            Err(e) => {
                warn!(error = %e, "could not split a batch the collector found too large");
                None
            }
        }
    }

    pub(super) fn count_refused(&self, events: u32, status: reqwest::StatusCode, code: &str, message: &str) {
        metrics().events_rejected.inc_by(u64::from(events));
        error!(
            status = status.as_u16(),
            code,
            message,
            batch_events = events,
            "collector refused a batch; kept aside in the spool's rejected table, not retried"
        );
    }

    pub(super) fn shipped(&self, batch: &Batch, counts: podwarn_shared::IngestResponse) {
        let m = metrics();
        m.events_shipped.inc_by(u64::from(batch.events));
        let latency = SystemTime::now()
            .duration_since(batch.first_event_at)
            .unwrap_or_default();
        m.batch_latency.observe(latency.as_secs_f64());
        self.readiness.shipping.store(true, Ordering::Relaxed);
        debug!(
            batch_events = batch.events,
            accepted = counts.accepted,
            duplicate = counts.duplicate,
            "batch stored"
        );
    }

    /// One spool write; wakes the drainer.
    async fn push(&self, pending: Pending) -> Result<(), SpoolError> {
        let batch = pending.batch.clone();
        drop(pending);
        self.spool.push(batch).await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Writes a batch to the spool, retrying while the disk refuses (readiness
    /// goes false meanwhile: the batch stays in memory and the event channel
    /// fills, so the watches pause rather than lose). Returns whether to go
    /// on (`false` at shutdown), or the error when the last attempt at
    /// shutdown failed too (the batch is then lost, and counted as dropped).
    async fn spool_until_written(&self, pending: Pending, shutdown: &CancellationToken) -> Result<bool, SpoolError> {
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(self.tuning.drain_min_delay)
            .with_max_delay(self.tuning.drain_max_delay)
            .without_max_times()
            .with_jitter()
            .build();
        loop {
            let batch = pending.batch.clone();
            match self.spool.push(batch).await {
                Ok(_) => {
                    self.wake.notify_one();
                    self.readiness.shipping.store(true, Ordering::Relaxed);
                    return Ok(!shutdown.is_cancelled());
                }
                Err(e) => {
                    self.readiness.shipping.store(false, Ordering::Relaxed);
                    error!(batch_events = pending.batch.events, error = %e, "cannot write the spool; holding the batch");
                    if shutdown.is_cancelled() {
                        metrics().events_dropped.inc_by(u64::from(pending.batch.events));
                        error!(
                            batch_events = pending.batch.events,
                            "could not spool a batch at shutdown; lost"
                        );
                        return Err(e);
                    }
                    // Perhaps the collector is back: that also gets the batch out of memory.
                    let outcome = tokio::select! {
                        outcome = self.collector.send(pending.batch.body.clone()) => outcome,
                        () = shutdown.cancelled() => continue,
                    };
                    if let Outcome::Stored(counts) = outcome {
                        self.shipped(&pending.batch, counts);
                        return Ok(true);
                    }
                    let wait = backoff.next().unwrap_or(self.tuning.drain_max_delay);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
            }
        }
    }
}
