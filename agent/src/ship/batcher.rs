//! The batcher: cuts batches from the event channel by size or interval,
//! and at shutdown hands everything left to the sender for the spool.
//!
//! A batch holds one copy per warning: when the same Event comes again
//! before its batch is cut (a crash loop's BackOff with a higher `count`),
//! the newer copy takes the older one's place. The collector applies a
//! higher count as the difference over what it has, so the one copy with the
//! highest count stores exactly what all of them would have; during a storm
//! this cuts the bytes encoded, sent and committed several times over.
//!
//! The batch being gathered is shared with the Event watch as an
//! [`OpenBatch`]: a repeat of a warning already in it, with the same
//! message, is folded in place by the watch (count and last time), without
//! being enriched and classified again only to replace its copy here.
//! The copy keeps the enrichment it was given at most one batch interval
//! ago; the next batch's first copy is enriched afresh.

use super::Shared;
use super::batch::{self, Pending};
use crate::ops::metrics;
use podwarn_shared::WarningEvent;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
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
        if let Some(held) = self.copy_mut(key, &event.uid) {
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
        // A hash collision between two uids is astronomically rare; then both
        // stay, and the slot keeps pointing at the first.
        self.slots.entry(key).or_insert(self.events.len());
        self.events.push(event);
    }

    /// The copy of warning `uid` (whose hash is `key`) held here.
    fn copy_mut(&mut self, key: u64, uid: &str) -> Option<&mut WarningEvent> {
        let &i = self.slots.get(&key)?;
        Some(&mut self.events[i]).filter(|held| held.uid == uid)
    }

    pub(super) fn len(&self) -> usize {
        self.events.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Folds a later occurrence of a warning into the copy here, when there is
    /// one of the same uid, first occurrence (part of the collector's dedup
    /// key) and message (a new one may classify differently); false otherwise.
    fn fold(&mut self, again: &WarningEvent) -> bool {
        let Some(held) = self.copy_mut(xxh3_64(again.uid.as_bytes()), &again.uid) else {
            return false;
        };
        if held.first_seen != again.first_seen || held.message != again.message {
            return false;
        }
        metrics().events_coalesced.inc();
        held.count = held.count.max(again.count);
        held.last_seen = held.last_seen.max(again.last_seen);
        true
    }

    /// The events, in the order they first came; empties the gathering.
    pub(super) fn take(&mut self) -> Vec<WarningEvent> {
        self.slots.clear();
        std::mem::take(&mut self.events)
    }
}

/// The batch being gathered, shared between the batcher and the Event watch.
#[derive(Debug, Default)]
pub struct OpenBatch(Mutex<Gathering>);

impl OpenBatch {
    /// Folds `again`, a later occurrence of a warning not yet enriched, into
    /// the copy of that warning in the open batch; false when the batch holds
    /// no such copy (then the occurrence goes the whole way).
    pub fn fold(&self, again: &WarningEvent) -> bool {
        self.lock().fold(again)
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Gathering> {
        // Never held across an await or a panic-prone call; a poisoned lock still holds sound events.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Cuts batches of at most `max_events`, or `interval` after their first event.
pub(super) struct Batcher<'a> {
    pub(super) shared: &'a Arc<Shared>,
    pub(super) max_events: usize,
    pub(super) interval: Duration,
    pub(super) tx: mpsc::Sender<Pending>,
    pub(super) open: Arc<OpenBatch>,
}

impl Batcher<'_> {
    pub(super) async fn run(self, events: &mut mpsc::Receiver<WarningEvent>, shutdown: &CancellationToken) {
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
                        if self.add(event, &mut started) >= self.max_events {
                            unsent = self.cut(&mut started);
                        }
                    }
                    // The watches are gone; ship what we have and wait for shutdown.
                    None => {
                        open = false;
                        unsent = self.cut(&mut started);
                    }
                },
                () = sleep_until_opt(deadline), if unsent.is_none() && deadline.is_some() => {
                    unsent = self.cut(&mut started);
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
            if self.add(event, &mut started) >= self.max_events {
                last.extend(self.cut(&mut started));
                self.hand_over(&mut last).await;
            }
        }
        last.extend(self.cut(&mut started));
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

    /// Adds an event to the open batch (its first starts the interval); returns the batch's size.
    fn add(&self, event: WarningEvent, started: &mut Option<(Instant, SystemTime)>) -> usize {
        let mut open = self.open.lock();
        if open.is_empty() {
            *started = Some((Instant::now(), SystemTime::now()));
        }
        open.push(event);
        open.len()
    }

    /// Encodes the accumulated events into a batch.
    fn cut(&self, started: &mut Option<(Instant, SystemTime)>) -> Option<Pending> {
        let (_, first_event_at) = started.take()?;
        let events = self.open.lock().take();
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
