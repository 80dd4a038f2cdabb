//! Turning events into compressed batches, and batches held in memory.

use super::ShipError;
use crate::spool::Batch;
use bytes::Bytes;
use podwarn_shared::wire::AgentInfo;
use podwarn_shared::{IngestBatch, WarningEvent};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

/// zstd level of batch bodies: fast, and JSON of warnings compresses well at it.
const ZSTD_LEVEL: i32 = 3;

/// Encodes events as the JSON body of `/v1/ingest`, compressed with zstd.
pub(crate) fn encode(
    events: Vec<WarningEvent>,
    first_event_at: SystemTime,
    version: &str,
    dropped_total: u64,
) -> Result<Batch, ShipError> {
    let count = u32::try_from(events.len()).unwrap_or(u32::MAX);
    let body = IngestBatch {
        agent: Some(AgentInfo {
            version: version.into(),
            dropped_total,
        }),
        events,
    };
    let json = serde_json::to_vec(&body).map_err(ShipError::Encode)?;
    let compressed = zstd::bulk::compress(&json, ZSTD_LEVEL).map_err(ShipError::Compress)?;
    Ok(Batch {
        events: count,
        first_event_at,
        body: Bytes::from(compressed),
    })
}

/// Decodes a body made by [`encode`].
pub(crate) fn decode(body: &[u8]) -> Result<IngestBatch, ShipError> {
    let json = zstd::stream::decode_all(body).map_err(ShipError::Compress)?;
    serde_json::from_slice(&json).map_err(ShipError::Encode)
}

/// Splits a batch the collector found too large into two halves, re-encoded;
/// `None` when it holds a single event.
pub(crate) fn split(batch: &Batch, version: &str, dropped_total: u64) -> Result<Option<(Batch, Batch)>, ShipError> {
    let mut decoded = decode(&batch.body)?;
    if decoded.events.len() < 2 {
        return Ok(None);
    }
    let second = decoded.events.split_off(decoded.events.len() / 2);
    Ok(Some((
        encode(decoded.events, batch.first_event_at, version, dropped_total)?,
        encode(second, batch.first_event_at, version, dropped_total)?,
    )))
}

/// Joins batches into one, events in order, re-encoded: the drainer replays a run of
/// small spooled batches as one request instead of one round trip each.
pub(crate) fn merge(batches: &[Batch], version: &str, dropped_total: u64) -> Result<Batch, ShipError> {
    let mut events = Vec::new();
    for batch in batches {
        events.extend(decode(&batch.body)?.events);
    }
    let first_event_at = batches
        .iter()
        .map(|b| b.first_event_at)
        .min()
        .unwrap_or_else(SystemTime::now);
    encode(events, first_event_at, version, dropped_total)
}

/// Counts encoded batches alive in memory, and the most ever seen at once:
/// the proof that an outage fills the disk, not the heap.
#[derive(Debug, Default)]
pub(crate) struct Held {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Held {
    /// Batches held right now.
    #[cfg(test)]
    pub(crate) fn now(&self) -> usize {
        self.now.load(Ordering::Relaxed)
    }

    /// The most batches held at once so far.
    #[cfg(test)]
    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }
}

/// A batch in memory, counted in [`Held`] until dropped.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) batch: Batch,
    held: Arc<Held>,
}

impl Pending {
    pub(crate) fn new(batch: Batch, held: &Arc<Held>) -> Self {
        let now = held.now.fetch_add(1, Ordering::Relaxed) + 1;
        held.peak.fetch_max(now, Ordering::Relaxed);
        Self {
            batch,
            held: held.clone(),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.held.now.fetch_sub(1, Ordering::Relaxed);
    }
}
