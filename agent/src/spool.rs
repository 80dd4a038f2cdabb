//! The on-disk spool: a byte-capped, crash-safe FIFO of compressed batches
//! that holds what the collector could not take yet.
//!
//! One redb file, `<spool dir>/spool.redb`. Every operation is one write
//! transaction committed with [`redb::Durability::Immediate`], so a batch that
//! [`Spool::push`] accepted survives a crash or `kill -9` of the agent. When a
//! push would exceed the byte cap, the oldest batches are deleted until it
//! fits, and their events are counted (the `events_dropped` metric and
//! [`Spool::dropped_total`], which the agent reports to the collector):
//! overflow is never silent (invariant 3). Nothing of the spool is held in
//! memory beyond redb's small page cache and a few counters (invariant 6).
//!
//! Batches the collector refused for good (a 4xx other than 408/429) move to a
//! separate `rejected` table, kept for inspection and capped as well.

use crate::ops::metrics;
use bytes::Bytes;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Spooled batches by sequence number (oldest first); see [`encode_batch`] for the value.
const BATCHES: TableDefinition<u64, &[u8]> = TableDefinition::new("batches");
/// Counters that must survive restarts: see the `META_*` keys.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Batches the collector refused with a non-retryable 4xx, by their spool sequence number.
const REJECTED: TableDefinition<u64, &[u8]> = TableDefinition::new("rejected");

const META_NEXT_SEQ: &str = "next_seq";
const META_BYTES: &str = "bytes";
const META_BATCHES: &str = "batches";
const META_DROPPED_TOTAL: &str = "dropped_total";
const META_REJECTED_BYTES: &str = "rejected_bytes";

/// File name of the spool inside `--spool-dir`.
pub const SPOOL_FILE: &str = "spool.redb";

/// redb's page cache; small on purpose: the spool is written and read
/// sequentially, and the agent's memory must not grow with the spool.
const CACHE_BYTES: usize = 4 * 1024 * 1024;

/// Layout version of a stored record (first byte).
const RECORD_V1: u8 = 1;
/// Version byte, event count (u32), first-event time (unix ms, i64).
const BATCH_HEADER: usize = 1 + 4 + 8;

/// Errors of the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool directory cannot be created or written.
    #[error(
        "the spool directory {dir} is not writable: point --spool-dir at a writable folder \
         (in Kubernetes, mount an emptyDir or a PersistentVolumeClaim there)"
    )]
    NotWritable {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the spool file open.
    #[error("the spool {0} is in use by another podwarn-agent process: give each agent its own --spool-dir")]
    Locked(PathBuf),
    /// The spool file could not be opened (damaged, or not a spool).
    #[error("cannot open the spool {path}: move the file away or choose another --spool-dir")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: redb::DatabaseError,
    },
    /// A read or write failed (disk full, I/O error); the operation changed nothing.
    #[error("spool storage error")]
    Storage(#[source] redb::Error),
    /// A stored record could not be decoded.
    #[error("spool record {seq} is damaged")]
    Corrupt {
        /// The record's sequence number.
        seq: u64,
    },
    /// The blocking task running the transaction died.
    #[error("the spool task failed")]
    Task(#[source] tokio::task::JoinError),
}

impl<E: Into<redb::Error>> From<E> for SpoolError {
    fn from(e: E) -> Self {
        Self::Storage(e.into())
    }
}

/// A `Result` of the spool.
pub type Result<T, E = SpoolError> = std::result::Result<T, E>;

/// One batch, encoded and compressed, ready to POST to `/v1/ingest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Events in it.
    pub events: u32,
    /// When its first event was taken from the watches (for the latency metric).
    pub first_event_at: SystemTime,
    /// The zstd-compressed JSON body.
    pub body: Bytes,
}

/// A batch read back from the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledBatch {
    /// Its position in the spool (increasing; pass it to [`Spool::remove`] or [`Spool::reject`]).
    pub seq: u64,
    /// The batch.
    pub batch: Batch,
}

/// What is known about a batch the collector refused (its body stays on disk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedInfo {
    /// Its former spool sequence number.
    pub seq: u64,
    /// Events in it.
    pub events: u32,
    /// Why the collector refused it (status and message).
    pub reason: String,
    /// When it was set aside.
    pub rejected_at: SystemTime,
}

/// Handle on the spool; cheap to clone. Every method is one transaction.
#[derive(Debug, Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    path: PathBuf,
    max_bytes: u64,
    rejected_max_bytes: u64,
    // Mirrors of the meta table, updated after each commit, for cheap reads.
    bytes: AtomicU64,
    batches: AtomicU64,
    dropped_total: AtomicU64,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("path", &self.path)
            .field("max_bytes", &self.max_bytes)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, holding at most `max_bytes` of
    /// batches; rejected batches get a quarter of that on top.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self> {
        let not_writable = |source| SpoolError::NotWritable {
            dir: dir.into(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(not_writable)?;
        // redb would also fail on a read-only folder, but with a less helpful error.
        let probe = dir.join(".podwarn-write-test");
        std::fs::write(&probe, b"").map_err(not_writable)?;
        let _ = std::fs::remove_file(&probe);

        let path = dir.join(SPOOL_FILE);
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|source| match source {
                redb::DatabaseError::DatabaseAlreadyOpen => SpoolError::Locked(path.clone()),
                source => SpoolError::Open {
                    path: path.clone(),
                    source,
                },
            })?;
        let txn = db.begin_write()?;
        let (bytes, batches, dropped_total) = {
            // Creates the tables on first use so readers never meet a missing one.
            txn.open_table(BATCHES)?;
            txn.open_table(REJECTED)?;
            let meta = txn.open_table(META)?;
            let get = |key| -> Result<u64> { Ok(meta.get(key)?.map_or(0, |v| v.value())) };
            (get(META_BYTES)?, get(META_BATCHES)?, get(META_DROPPED_TOTAL)?)
        };
        txn.commit()?;
        metrics().spool_bytes.set(bytes);
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                path,
                max_bytes,
                rejected_max_bytes: max_bytes / 4,
                bytes: AtomicU64::new(bytes),
                batches: AtomicU64::new(batches),
                dropped_total: AtomicU64::new(dropped_total),
            }),
        })
    }

    /// The spool file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Appends a batch, durably. If it does not fit under the byte cap, the
    /// oldest batches are deleted until it does (a batch larger than the whole
    /// cap is itself dropped). Returns how many events were dropped.
    pub async fn push(&self, batch: Batch) -> Result<u64> {
        self.blocking(move |inner| inner.push(&batch)).await
    }

    /// The oldest batch, if any.
    pub async fn peek_oldest(&self) -> Result<Option<SpooledBatch>> {
        Ok(self.peek_oldest_run(0, 0).await?.pop())
    }

    /// The oldest batches, oldest first: the oldest one whatever its size, then each
    /// following one while the run stays within `max_events` events and `max_bytes`
    /// bytes of body (the drainer replays a run as one request). Empty when the spool
    /// is; a damaged record ends the run, or is the error when it is the oldest.
    pub async fn peek_oldest_run(&self, max_events: u32, max_bytes: usize) -> Result<Vec<SpooledBatch>> {
        self.blocking(move |inner| inner.peek_oldest_run(max_events, max_bytes))
            .await
    }

    /// Deletes a batch the collector stored. Returns whether it was there.
    pub async fn remove(&self, seq: u64) -> Result<bool> {
        self.blocking(move |inner| inner.remove(seq)).await
    }

    /// Deletes batches the collector stored, in one transaction. Returns how many were there.
    pub async fn remove_all(&self, seqs: Vec<u64>) -> Result<usize> {
        self.blocking(move |inner| inner.remove_all(&seqs)).await
    }

    /// Moves a batch the collector refused for good into the `rejected`
    /// table, evicting the oldest rejected batches beyond their cap. Returns
    /// whether it was there.
    pub async fn reject(&self, seq: u64, reason: String) -> Result<bool> {
        self.blocking(move |inner| inner.reject(seq, &reason)).await
    }

    /// Sets aside a batch that never entered the spool (refused on the live
    /// path), as [`Spool::reject`] does for spooled ones.
    pub async fn put_rejected(&self, batch: Batch, reason: String) -> Result<()> {
        self.blocking(move |inner| inner.put_rejected(&batch, &reason)).await
    }

    /// The batches set aside as rejected, oldest first (without their bodies).
    pub async fn rejected(&self) -> Result<Vec<RejectedInfo>> {
        self.blocking(|inner| inner.rejected()).await
    }

    /// Bytes of spooled batches (what the cap applies to).
    pub fn len_bytes(&self) -> u64 {
        self.inner.bytes.load(Ordering::Acquire)
    }

    /// Spooled batches.
    pub fn len_batches(&self) -> u64 {
        self.inner.batches.load(Ordering::Acquire)
    }

    /// Whether no batch waits in the spool.
    pub fn is_empty(&self) -> bool {
        self.len_batches() == 0
    }

    /// Events dropped by overflow since the spool was created (persisted).
    pub fn dropped_total(&self) -> u64 {
        self.inner.dropped_total.load(Ordering::Acquire)
    }

    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&Inner) -> Result<T> + Send + 'static) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(SpoolError::Task)?
    }
}

impl Inner {
    fn begin(&self) -> Result<WriteTransaction> {
        let mut txn = self.db.begin_write()?;
        // The spool exists to survive restarts: every commit is on disk when it returns.
        txn.set_durability(Durability::Immediate)?;
        Ok(txn)
    }

    fn push(&self, batch: &Batch) -> Result<u64> {
        let record = encode_batch(batch);
        let len = record.len() as u64;
        let txn = self.begin()?;
        let (bytes, batches, dropped_total, dropped, dropped_batches) = {
            let mut table = txn.open_table(BATCHES)?;
            let mut meta = txn.open_table(META)?;
            let get =
                |meta: &redb::Table<&str, u64>, key| -> Result<u64> { Ok(meta.get(key)?.map_or(0, |v| v.value())) };
            let mut bytes = get(&meta, META_BYTES)?;
            let mut batches = get(&meta, META_BATCHES)?;
            let mut dropped = 0u64;
            let mut dropped_batches = 0u64;
            if len > self.max_bytes {
                dropped += u64::from(batch.events);
            } else {
                while bytes + len > self.max_bytes {
                    let Some((seq, value)) = table.pop_first()? else { break };
                    let (seq, value) = (seq.value(), value.value());
                    // A damaged record must not wedge the spool: evict it all the same.
                    let events = decode_header(seq, value).map_or(0, |(events, _)| events);
                    bytes = bytes.saturating_sub(value.len() as u64);
                    batches = batches.saturating_sub(1);
                    dropped += u64::from(events);
                    dropped_batches += 1;
                }
                let seq = get(&meta, META_NEXT_SEQ)?;
                table.insert(seq, record.as_slice())?;
                meta.insert(META_NEXT_SEQ, seq + 1)?;
                bytes += len;
                batches += 1;
            }
            let dropped_total = get(&meta, META_DROPPED_TOTAL)? + dropped;
            meta.insert(META_BYTES, bytes)?;
            meta.insert(META_BATCHES, batches)?;
            meta.insert(META_DROPPED_TOTAL, dropped_total)?;
            (bytes, batches, dropped_total, dropped, dropped_batches)
        };
        txn.commit()?;
        self.publish(bytes, batches);
        self.dropped_total.store(dropped_total, Ordering::Release);
        let m = metrics();
        if len > self.max_bytes {
            tracing::warn!(
                dropped_events = dropped,
                batch_bytes = len,
                spool_max_bytes = self.max_bytes,
                "batch larger than the whole spool (--spool-max-bytes); dropped it"
            );
        } else {
            m.events_spooled.inc_by(u64::from(batch.events));
        }
        if dropped > 0 {
            m.events_dropped.inc_by(dropped);
            if dropped_batches > 0 {
                tracing::warn!(
                    dropped_events = dropped,
                    dropped_batches,
                    dropped_total,
                    spool_max_bytes = self.max_bytes,
                    "spool full; dropped the oldest batches"
                );
            }
        }
        Ok(dropped)
    }

    fn peek_oldest_run(&self, max_events: u32, max_bytes: usize) -> Result<Vec<SpooledBatch>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(BATCHES)?;
        let mut run: Vec<SpooledBatch> = Vec::new();
        let (mut events, mut bytes) = (0u32, 0usize);
        for entry in table.iter()? {
            let (seq, value) = entry?;
            let (seq, value) = (seq.value(), value.value());
            let (n, first_event_at) = match decode_header(seq, value) {
                Ok(header) => header,
                // Sent alone next time, where the drainer deals with it.
                Err(_) if !run.is_empty() => break,
                Err(e) => return Err(e),
            };
            let body = &value[BATCH_HEADER..];
            if !run.is_empty() && (events.saturating_add(n) > max_events || bytes + body.len() > max_bytes) {
                break;
            }
            events = events.saturating_add(n);
            bytes += body.len();
            run.push(SpooledBatch {
                seq,
                batch: Batch {
                    events: n,
                    first_event_at,
                    body: Bytes::copy_from_slice(body),
                },
            });
        }
        Ok(run)
    }

    /// Deletes `seq` from the batches table inside `txn`; returns its record.
    fn take(&self, txn: &WriteTransaction, seq: u64) -> Result<Option<(Vec<u8>, u64, u64)>> {
        let mut table = txn.open_table(BATCHES)?;
        let mut meta = txn.open_table(META)?;
        let Some(value) = table.remove(seq)? else {
            return Ok(None);
        };
        let record = value.value().to_vec();
        drop(value);
        let bytes = meta
            .get(META_BYTES)?
            .map_or(0, |v| v.value())
            .saturating_sub(record.len() as u64);
        let batches = meta.get(META_BATCHES)?.map_or(0, |v| v.value()).saturating_sub(1);
        meta.insert(META_BYTES, bytes)?;
        meta.insert(META_BATCHES, batches)?;
        Ok(Some((record, bytes, batches)))
    }

    fn remove(&self, seq: u64) -> Result<bool> {
        let txn = self.begin()?;
        let Some((_, bytes, batches)) = self.take(&txn, seq)? else {
            return Ok(false);
        };
        txn.commit()?;
        self.publish(bytes, batches);
        Ok(true)
    }

    fn remove_all(&self, seqs: &[u64]) -> Result<usize> {
        let txn = self.begin()?;
        let mut removed = 0;
        let mut counts = None;
        for &seq in seqs {
            if let Some((_, bytes, batches)) = self.take(&txn, seq)? {
                removed += 1;
                counts = Some((bytes, batches));
            }
        }
        txn.commit()?;
        if let Some((bytes, batches)) = counts {
            self.publish(bytes, batches);
        }
        Ok(removed)
    }

    fn reject(&self, seq: u64, reason: &str) -> Result<bool> {
        let txn = self.begin()?;
        let Some((record, bytes, batches)) = self.take(&txn, seq)? else {
            return Ok(false);
        };
        let evicted = self.insert_rejected(&txn, seq, &record, reason)?;
        txn.commit()?;
        self.publish(bytes, batches);
        log_evicted(evicted);
        Ok(true)
    }

    fn put_rejected(&self, batch: &Batch, reason: &str) -> Result<()> {
        let txn = self.begin()?;
        let evicted = {
            let mut meta = txn.open_table(META)?;
            let seq = meta.get(META_NEXT_SEQ)?.map_or(0, |v| v.value());
            meta.insert(META_NEXT_SEQ, seq + 1)?;
            drop(meta);
            self.insert_rejected(&txn, seq, &encode_batch(batch), reason)?
        };
        txn.commit()?;
        log_evicted(evicted);
        Ok(())
    }

    /// Adds a record to `rejected`, evicting the oldest beyond the cap; returns how many were evicted.
    fn insert_rejected(&self, txn: &WriteTransaction, seq: u64, record: &[u8], reason: &str) -> Result<u64> {
        let mut rejected = txn.open_table(REJECTED)?;
        let mut meta = txn.open_table(META)?;
        let mut rejected_bytes = meta.get(META_REJECTED_BYTES)?.map_or(0, |v| v.value());
        let value = encode_rejected(record, reason);
        let len = value.len() as u64;
        let mut evicted = 0u64;
        while rejected_bytes + len > self.rejected_max_bytes {
            let Some((_, old)) = rejected.pop_first()? else { break };
            rejected_bytes = rejected_bytes.saturating_sub(old.value().len() as u64);
            evicted += 1;
        }
        // A rejected batch larger than the whole cap is not kept; the log has its reason.
        if len <= self.rejected_max_bytes {
            rejected.insert(seq, value.as_slice())?;
            rejected_bytes += len;
        }
        meta.insert(META_REJECTED_BYTES, rejected_bytes)?;
        Ok(evicted)
    }

    fn rejected(&self) -> Result<Vec<RejectedInfo>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(REJECTED)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (seq, value) = entry?;
            let seq = seq.value();
            out.push(decode_rejected(seq, value.value())?);
        }
        Ok(out)
    }

    fn publish(&self, bytes: u64, batches: u64) {
        self.bytes.store(bytes, Ordering::Release);
        self.batches.store(batches, Ordering::Release);
        metrics().spool_bytes.set(bytes);
    }
}

/// `[version][events u32 LE][first event unix ms i64 LE][body]`.
fn encode_batch(batch: &Batch) -> Vec<u8> {
    let mut out = Vec::with_capacity(BATCH_HEADER + batch.body.len());
    out.push(RECORD_V1);
    out.extend_from_slice(&batch.events.to_le_bytes());
    out.extend_from_slice(&unix_ms(batch.first_event_at).to_le_bytes());
    out.extend_from_slice(&batch.body);
    out
}

fn decode_header(seq: u64, value: &[u8]) -> Result<(u32, SystemTime)> {
    let corrupt = || SpoolError::Corrupt { seq };
    if value.len() < BATCH_HEADER || value[0] != RECORD_V1 {
        return Err(corrupt());
    }
    let events = u32::from_le_bytes(value[1..5].try_into().map_err(|_| corrupt())?);
    let ms = i64::from_le_bytes(value[5..13].try_into().map_err(|_| corrupt())?);
    Ok((events, from_unix_ms(ms)))
}

/// `[batch record][reason][reason len u32 LE][rejected at unix ms i64 LE]`: the
/// batch record keeps its own header so the body can be inspected later, and
/// the trailer reads from the end.
fn encode_rejected(record: &[u8], reason: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(record.len() + reason.len() + 12);
    out.extend_from_slice(record);
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(&(reason.len() as u32).to_le_bytes());
    out.extend_from_slice(&unix_ms(SystemTime::now()).to_le_bytes());
    out
}

fn decode_rejected(seq: u64, value: &[u8]) -> Result<RejectedInfo> {
    let corrupt = || SpoolError::Corrupt { seq };
    let (events, _) = decode_header(seq, value)?;
    let time_at = value.len().checked_sub(8).ok_or_else(corrupt)?;
    let len_at = time_at.checked_sub(4).ok_or_else(corrupt)?;
    let ms = i64::from_le_bytes(value[time_at..].try_into().map_err(|_| corrupt())?);
    let reason_len = u32::from_le_bytes(value[len_at..time_at].try_into().map_err(|_| corrupt())?) as usize;
    let reason_at = len_at
        .checked_sub(reason_len)
        .filter(|at| *at >= BATCH_HEADER)
        .ok_or_else(corrupt)?;
    Ok(RejectedInfo {
        seq,
        events,
        reason: String::from_utf8_lossy(&value[reason_at..len_at]).into_owned(),
        rejected_at: from_unix_ms(ms),
    })
}

fn log_evicted(evicted: u64) {
    if evicted > 0 {
        tracing::warn!(
            evicted_batches = evicted,
            "rejected-batch store full; evicted the oldest"
        );
    }
}

fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

fn from_unix_ms(ms: i64) -> SystemTime {
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 { UNIX_EPOCH + d } else { UNIX_EPOCH - d }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(events: u32, body_len: usize) -> Batch {
        Batch {
            events,
            first_event_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            body: Bytes::from(vec![b'x'; body_len]),
        }
    }

    #[tokio::test]
    async fn fifo_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), 1 << 20).expect("open");
        assert!(spool.is_empty());
        for n in 1..=3 {
            assert_eq!(spool.push(batch(n, 100)).await.expect("push"), 0);
        }
        assert_eq!(spool.len_batches(), 3);
        assert_eq!(spool.len_bytes(), 3 * (BATCH_HEADER as u64 + 100));
        drop(spool);

        let spool = Spool::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(spool.len_batches(), 3);
        let first = spool.peek_oldest().await.expect("peek").expect("a batch");
        assert_eq!(first.batch, batch(1, 100));
        assert!(spool.remove(first.seq).await.expect("remove"));
        assert!(!spool.remove(first.seq).await.expect("remove twice"));
        let second = spool.peek_oldest().await.expect("peek").expect("a batch");
        assert_eq!(second.batch.events, 2);
        assert!(second.seq > first.seq);
        assert_eq!(spool.len_bytes(), 2 * (BATCH_HEADER as u64 + 100));
    }

    #[tokio::test]
    async fn a_run_of_the_oldest_batches_stays_within_its_caps_and_goes_in_one_transaction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), 1 << 20).expect("open");
        for n in [3, 3, 3, 5, 1] {
            spool.push(batch(n, 100)).await.expect("push");
        }
        let events = |run: &[SpooledBatch]| run.iter().map(|b| b.batch.events).collect::<Vec<_>>();
        // By events: 3 + 3 + 3 fit in 10, the 5 does not.
        let run = spool.peek_oldest_run(10, 1 << 20).await.expect("run");
        assert_eq!(events(&run), vec![3, 3, 3]);
        assert!(run.windows(2).all(|w| w[0].seq < w[1].seq), "oldest first");
        // By bytes: two bodies of 100 fit in 250.
        assert_eq!(events(&spool.peek_oldest_run(100, 250).await.expect("run")), vec![3, 3]);
        // The oldest always comes, whatever the caps.
        assert_eq!(events(&spool.peek_oldest_run(0, 0).await.expect("run")), vec![3]);

        let seqs: Vec<u64> = run.iter().map(|b| b.seq).collect();
        assert_eq!(spool.remove_all(seqs.clone()).await.expect("remove"), 3);
        assert_eq!(spool.len_batches(), 2);
        assert_eq!(spool.len_bytes(), 2 * (BATCH_HEADER as u64 + 100));
        assert_eq!(spool.remove_all(seqs).await.expect("remove again"), 0);
        drop(spool);
        let spool = Spool::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(
            events(&spool.peek_oldest_run(100, 1 << 20).await.expect("run")),
            vec![5, 1]
        );
        assert_eq!(spool.len_batches(), 2, "the removal was committed");
    }

    #[tokio::test]
    async fn overflow_drops_oldest_and_counts_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let record = BATCH_HEADER as u64 + 1000;
        let spool = Spool::open(dir.path(), 3 * record).expect("open");
        for n in 1..=3 {
            assert_eq!(spool.push(batch(n, 1000)).await.expect("push"), 0);
        }
        // The fourth evicts the first (1 event), the fifth the second (2 events).
        assert_eq!(spool.push(batch(10, 1000)).await.expect("push"), 1);
        assert_eq!(spool.push(batch(20, 1000)).await.expect("push"), 2);
        assert_eq!(spool.dropped_total(), 3);
        assert_eq!(spool.len_batches(), 3);
        assert!(spool.len_bytes() <= 3 * record);
        // A batch larger than the whole cap is dropped itself, keeping the rest.
        assert_eq!(spool.push(batch(7, 5000)).await.expect("push"), 7);
        assert_eq!(spool.dropped_total(), 10);
        assert_eq!(spool.peek_oldest().await.expect("peek").expect("batch").batch.events, 3);
        drop(spool);
        let spool = Spool::open(dir.path(), 3 * record).expect("reopen");
        assert_eq!(spool.dropped_total(), 10, "dropped_total is persisted");
    }

    #[tokio::test]
    async fn rejected_batches_are_kept_aside_and_capped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let record = BATCH_HEADER as u64 + 1000;
        // Rejected cap = a quarter: room for two rejected records of this size.
        let spool = Spool::open(dir.path(), 10 * record).expect("open");
        for n in 1..=4 {
            spool.push(batch(n, 1000)).await.expect("push");
        }
        for _ in 0..3 {
            let oldest = spool.peek_oldest().await.expect("peek").expect("batch");
            let reason = format!("400 invalid_event: batch {}", oldest.batch.events);
            assert!(spool.reject(oldest.seq, reason).await.expect("reject"));
        }
        assert_eq!(spool.len_batches(), 1);
        let rejected = spool.rejected().await.expect("rejected");
        let events: Vec<u32> = rejected.iter().map(|r| r.events).collect();
        assert_eq!(events, vec![2, 3], "oldest rejected batch evicted beyond the cap");
        assert_eq!(rejected[1].reason, "400 invalid_event: batch 3");
        assert_eq!(spool.dropped_total(), 0, "rejected batches are not overflow");
    }

    #[tokio::test]
    async fn unwritable_spool_dir_names_the_flag() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"").expect("write");
        let err = Spool::open(&file.join("spool"), 1 << 20).expect_err("must fail");
        assert!(matches!(err, SpoolError::NotWritable { .. }), "{err:?}");
        assert!(err.to_string().contains("--spool-dir"), "{err}");
    }

    #[tokio::test]
    async fn second_opener_is_told_the_spool_is_in_use() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = Spool::open(dir.path(), 1 << 20).expect("open");
        let err = Spool::open(dir.path(), 1 << 20).expect_err("locked");
        assert!(matches!(err, SpoolError::Locked(_)), "{err:?}");
    }
}
