//! The batcher: cuts batches from the event channel by size or interval,
//! and at shutdown hands everything left to the sender for the spool.
//!
//! A batch holds one copy per warning: when the same Event comes again
//! before its batch is cut (a crash loop's BackOff with a higher `count`),
//! the newer copy takes the older one's place. The collector applies a
//! higher count as the difference over what it has, so the one copy with the
//! highest count stores exactly what all of them would have; during a storm
//! this cuts the bytes encoded, sent and committed several times over.

use super::Shared;
use super::batch::{self, Pending};
use crate::ops::metrics;
use podwarn_shared::WarningEvent;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::error;
use xxhash_rust::xxh3::xxh3_64;

/// The events of the batch being gathered, one per warning uid.
#[derive(Debug, Default)]
pub(super) struct Gathering {
    events: Vec<WarningEvent>,
    /// Hash of the uid → position in `events`.
    slots: HashMap<u64, usize>,
}

impl Gathering {
    /// Adds an event, or folds it into the copy of the same warning already here.
    pub(super) fn push(&mut self, mut event: WarningEvent) {
        let key = xxh3_64(event.uid.as_bytes());
        if let Some(&i) = self.slots.get(&key) {
            let held = &mut self.events[i];
            // A hash collision between two uids is astronomically rare; then both stay.
            if held.uid == event.uid {
                metrics().events_coalesced.inc();
                if event.count >= held.count {
                    // Logs go with the first copy only (crate::logs): keep them.
                    event.logs = event.logs.or_else(|| held.logs.take());
                    *held = event;
                } else if held.logs.is_none() {
                    held.logs = event.logs;
                }
                return;
            }
        } else {
            self.slots.insert(key, self.events.len());
        }
        self.events.push(event);
    }

    pub(super) fn len(&self) -> usize {
        self.events.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The events, in the order they first came; empties the gathering.
    pub(super) fn take(&mut self) -> Vec<WarningEvent> {
        self.slots.clear();
        std::mem::take(&mut self.events)
    }
}

/// Cuts batches of at most `max_events`, or `interval` after their first event.
pub(super) struct Batcher<'a> {
    pub(super) shared: &'a Arc<Shared>,
    pub(super) max_events: usize,
    pub(super) interval: Duration,
    pub(super) tx: mpsc::Sender<Pending>,
}

impl Batcher<'_> {
    pub(super) async fn run(self, events: &mut mpsc::Receiver<WarningEvent>, shutdown: &CancellationToken) {
        let mut pending = Gathering::default();
        let mut started: Option<(Instant, SystemTime)> = None;
        let mut unsent: Option<Pending> = None;
        let mut open = true;
        loop {
            let deadline = started.map(|(at, _)| at + self.interval);
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                event = events.recv(), if open && unsent.is_none() => match event {
                    Some(event) => {
                        if pending.is_empty() {
                            started = Some((Instant::now(), SystemTime::now()));
                        }
                        pending.push(event);
                        if pending.len() >= self.max_events {
                            unsent = self.cut(&mut pending, &mut started);
                        }
                    }
                    // The watches are gone; ship what we have and wait for shutdown.
                    None => {
                        open = false;
                        unsent = self.cut(&mut pending, &mut started);
                    }
                },
                () = sleep_until_opt(deadline), if unsent.is_none() && deadline.is_some() => {
                    unsent = self.cut(&mut pending, &mut started);
                }
                permit = self.tx.reserve(), if unsent.is_some() => match (permit, unsent.take()) {
                    (Ok(permit), Some(batch)) => permit.send(batch),
                    // The sender only stops at shutdown.
                    (Err(_), batch) => { unsent = batch; break }
                    (Ok(_), None) => {}
                },
            }
        }
        // Shutdown: everything left goes to the spool through the sender, in order.
        events.close();
        let mut last = unsent.into_iter().collect::<Vec<_>>();
        while let Some(event) = events.recv().await {
            if pending.is_empty() {
                started = Some((Instant::now(), SystemTime::now()));
            }
            pending.push(event);
            if pending.len() >= self.max_events {
                last.extend(self.cut(&mut pending, &mut started));
                self.hand_over(&mut last).await;
            }
        }
        last.extend(self.cut(&mut pending, &mut started));
        self.hand_over(&mut last).await;
    }

    async fn hand_over(&self, batches: &mut Vec<Pending>) {
        for batch in batches.drain(..) {
            if let Err(mpsc::error::SendError(batch)) = self.tx.send(batch).await {
                // Unreachable while the sender runs; write it ourselves rather than lose it.
                if let Err(e) = self.shared.spool.push(batch.batch.clone()).await {
                    metrics().events_dropped.inc_by(u64::from(batch.batch.events));
                    error!(batch_events = batch.batch.events, error = %e, "could not spool a batch at shutdown; lost");
                }
            }
        }
    }

    /// Encodes the accumulated events into a batch.
    fn cut(&self, pending: &mut Gathering, started: &mut Option<(Instant, SystemTime)>) -> Option<Pending> {
        let (_, first_event_at) = started.take()?;
        let events = pending.take();
        if events.is_empty() {
            return None;
        }
        let n = events.len();
        match batch::encode(
            events,
            first_event_at,
            &self.shared.version,
            self.shared.spool.dropped_total(),
        ) {
            Ok(batch) => Some(Pending::new(batch, &self.shared.held)),
            Err(e) => {
                // Cannot happen with these types; if it does, it is counted, not silent.
                metrics().events_dropped.inc_by(n as u64);
                error!(batch_events = n, error = %e, "could not encode a batch; dropped");
                None
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
