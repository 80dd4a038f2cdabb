//! The single writer: group commit, dedup (invariant 4), incident grouping,
//! agent checks and retention.

use super::blocks::{self, EVENT_BLOCKS};
use super::compact::{CompactEvent, Dictionary, Interner, STRING_TEXT, STRINGS, join_message};
use super::dedup;
use super::postings::{self, Entry, POSTINGS, Pending, PostingKey, SEGMENT_EVENTS, SEGMENTS, SegmentInfo};
use super::prepare::{PreparedBatch, PreparedEvent};
use super::recent::Recent;
use super::schema::*;
use super::{Result, StoreError, now_us};
use crate::incidents;
use crate::tls::AgentIdentity;
use foldhash::{HashMap, HashMapExt};
use podwarn_shared::IngestResponse;
use redb::{ReadableTable, Table, WriteTransaction};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// The answer to a stored batch.
pub type IngestOutcome = IngestResponse;

/// What one retention step deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    /// Events deleted.
    pub events: u64,
    /// Incidents deleted.
    pub incidents: u64,
    /// Whether more remains past the per-transaction budget.
    pub more: bool,
}

/// A request to the writer thread.
pub(super) enum Job {
    Ingest {
        identity: AgentIdentity,
        batch: PreparedBatch,
        reply: oneshot::Sender<Result<IngestOutcome>>,
    },
    Access {
        job: super::access::AccessJob,
        reply: oneshot::Sender<Result<super::access::AccessOutcome>>,
    },
    Retention {
        cutoff_us: i64,
        reply: oneshot::Sender<Result<RetentionOutcome>>,
    },
}

/// Most requests committed together.
const MAX_GROUP: usize = 256;
/// Most events deleted in one retention transaction, so ingest never waits long.
const RETENTION_BUDGET: usize = 4000;

/// Prepares the tables and starts the writer thread.
pub(super) fn start(
    db: Arc<redb::Database>,
    rx: mpsc::Receiver<Job>,
    slot: Arc<super::DbSlot>,
    opener: super::Opener,
) -> Result<()> {
    let state = load_state(&db)?;
    let discard = discarder()?;
    let caches = Caches {
        interner: Interner::default(),
        recent: Recent::for_cache(opener.cache_bytes),
        incidents: Incidents::for_cache(opener.cache_bytes),
        postings: Pending::default(),
    };
    std::thread::Builder::new()
        .name("podwarn-store-writer".into())
        .spawn(move || run(db, rx, state, caches, discard, slot, opener))
        .map_err(StoreError::storage)?;
    Ok(())
}

/// Where the writer sends the batches it is done with. Their strings were
/// allocated by the tasks that decoded them; freeing thousands of them per
/// commit showed as a fifth of the writer thread's time, so another thread
/// does it.
type Discard = std::sync::mpsc::SyncSender<Vec<PreparedBatch>>;

fn discarder() -> Result<Discard> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<PreparedBatch>>(16);
    std::thread::Builder::new()
        .name("podwarn-store-discard".into())
        .spawn(move || rx.into_iter().for_each(drop))
        .map_err(StoreError::storage)?;
    Ok(tx)
}

/// Checks the schema (writing it into a new file) and reads the writer's state.
fn load_state(db: &redb::Database) -> Result<State> {
    let txn = db.begin_write()?;
    // The version is read before any other table is opened: a file of
    // another schema may hold the same tables with other key types, which
    // redb would refuse with a less helpful error.
    {
        let mut meta = txn.open_table(META)?;
        let schema = meta.get(META_SCHEMA)?.map(|v| v.value());
        match schema {
            None => {
                meta.insert(META_SCHEMA, SCHEMA_VERSION)?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(other) => {
                return Err(StoreError::Storage(format!(
                    "the store was written with schema {other}, this build reads schema {SCHEMA_VERSION}: \
                     use a podwarn-collector of the matching version, or start this one on a new --data-dir"
                )));
            }
        }
    }
    let state = State::load(&Tables::open(&txn)?)?;
    txn.commit()?;
    Ok(state)
}

/// What the writer keeps between transactions; restored from a snapshot when
/// a commit fails, so memory never runs ahead of the disk.
#[derive(Clone)]
pub(super) struct State {
    pub(super) next_seq: u64,
    pub(super) next_audit: u64,
    pub(super) next_string: u32,
    /// The index segment being written, and how many events it holds.
    pub(super) segment: u32,
    pub(super) segment_events: u64,
    pub(super) clusters: HashMap<String, (u32, ClusterRecord)>,
}

impl State {
    fn load(t: &Tables<'_>) -> Result<Self> {
        let next_seq = t.meta.get(META_NEXT_SEQ)?.map(|v| v.value()).unwrap_or(1);
        let next_audit = t.meta.get(META_NEXT_AUDIT)?.map(|v| v.value()).unwrap_or(1);
        let next_string = t.meta.get(META_NEXT_STRING)?.map(|v| v.value()).unwrap_or(1);
        let next_string =
            u32::try_from(next_string).map_err(|_| StoreError::Storage("the string dictionary is full".into()))?;
        let segment = t.meta.get(META_SEGMENT)?.map(|v| v.value()).unwrap_or(0);
        let segment =
            u32::try_from(segment).map_err(|_| StoreError::Storage("index segment ids are exhausted".into()))?;
        let segment_events = t
            .segments
            .get(segment)?
            .map_or(0, |v| SegmentInfo::from_bytes(v.value()).events);
        let mut clusters = HashMap::new();
        for row in t.clusters.iter()? {
            let (id, bytes) = row?;
            let rec: ClusterRecord = decode(bytes.value())?;
            clusters.insert(rec.name.clone(), (id.value(), rec));
        }
        Ok(Self {
            next_seq,
            next_audit,
            next_string,
            segment,
            segment_events,
            clusters,
        })
    }

    pub(super) fn cluster_id(&mut self, name: &str, tenant: &str) -> u32 {
        if let Some((id, _)) = self.clusters.get(name) {
            return *id;
        }
        let id = self.clusters.values().map(|(id, _)| *id).max().unwrap_or(0) + 1;
        let rec = ClusterRecord {
            name: name.into(),
            tenant: tenant.into(),
            created_us: now_us(),
            events_stored: 0,
            occurrences: 0,
            last_ingest_us: None,
        };
        self.clusters.insert(name.into(), (id, rec));
        id
    }
}

pub(super) struct Tables<'t> {
    meta: Table<'t, &'static str, u64>,
    pub(super) events: Table<'t, u64, &'static [u8]>,
    pub(super) dedup: dedup::ChunkTable<'t>,
    pub(super) postings: Table<'t, PostingKey, &'static [u8]>,
    pub(super) segments: Table<'t, u32, [u8; 24]>,
    pub(super) strings: Table<'t, &'static str, u32>,
    pub(super) string_text: Table<'t, u32, &'static str>,
    pub(super) incidents: Table<'t, u64, &'static [u8]>,
    pub(super) incident_index: Table<'t, IncidentIndexKey, i64>,
    pub(super) cluster_ids: Table<'t, &'static str, u32>,
    pub(super) clusters: Table<'t, u32, &'static [u8]>,
    pub(super) agents: Table<'t, &'static str, &'static [u8]>,
    pub(super) tokens: Table<'t, &'static str, &'static [u8]>,
    pub(super) api_keys: Table<'t, &'static str, &'static [u8]>,
    pub(super) audit: Table<'t, u64, &'static [u8]>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self> {
        Ok(Self {
            meta: txn.open_table(META)?,
            events: txn.open_table(EVENT_BLOCKS)?,
            dedup: txn.open_table(dedup::DEDUP_CHUNKS)?,
            postings: txn.open_table(POSTINGS)?,
            segments: txn.open_table(SEGMENTS)?,
            strings: txn.open_table(STRINGS)?,
            string_text: txn.open_table(STRING_TEXT)?,
            incidents: txn.open_table(INCIDENTS)?,
            incident_index: txn.open_table(INCIDENT_INDEX)?,
            cluster_ids: txn.open_table(CLUSTER_IDS)?,
            clusters: txn.open_table(CLUSTERS)?,
            agents: txn.open_table(AGENTS)?,
            tokens: txn.open_table(TOKENS)?,
            api_keys: txn.open_table(API_KEYS)?,
            audit: txn.open_table(AUDIT)?,
        })
    }
}

/// Incident records as the writer last wrote them, kept between
/// transactions: incidents are few next to events and a busy one is touched
/// by nearly every commit, so reading and decoding it each time was a
/// twentieth of the writer's work. Those changed in the transaction being
/// built are written once, at its end.
///
/// Everything here is either committed or about to be: a failed commit
/// clears it all ([`Incidents::forget`]), and records are read again.
pub(super) struct Incidents {
    known: HashMap<u64, Known>,
    /// Ids changed in this transaction, each once.
    dirty: Vec<u64>,
    /// Most records kept between transactions.
    capacity: usize,
}

struct Known {
    rec: IncidentRecord,
    /// The last occurrence its index entries have on disk, if any.
    indexed: Option<i64>,
    dirty: bool,
}

impl Incidents {
    /// A cache taking about a sixteenth of `cache_bytes` (records are a few
    /// hundred bytes; at least a thousand are kept).
    pub(super) fn for_cache(cache_bytes: usize) -> Self {
        Self {
            known: HashMap::new(),
            dirty: Vec::new(),
            capacity: (cache_bytes / 16 / 512).max(1024),
        }
    }

    /// The record of incident `id`, to change in this transaction.
    fn get_mut(&mut self, t: &Tables<'_>, id: u64) -> Result<Option<&mut IncidentRecord>> {
        use std::collections::hash_map::Entry;
        let known = match self.known.entry(id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let Some(bytes) = t.incidents.get(id)? else {
                    return Ok(None);
                };
                let rec: IncidentRecord = decode(bytes.value())?;
                let indexed = Some(rec.last_seen_us);
                e.insert(Known {
                    rec,
                    indexed,
                    dirty: false,
                })
            }
        };
        if !known.dirty {
            known.dirty = true;
            self.dirty.push(id);
        }
        Ok(Some(&mut known.rec))
    }

    /// Adds a new incident.
    fn open(&mut self, id: u64, rec: IncidentRecord) {
        let previous = self.known.insert(
            id,
            Known {
                rec,
                indexed: None,
                dirty: true,
            },
        );
        if !previous.is_some_and(|k| k.dirty) {
            self.dirty.push(id);
        }
    }

    /// Notes that incident `id` and its index entries were deleted from the
    /// tables. One changed in this same transaction is written again at its
    /// end, as before the deletion; the others are forgotten.
    pub(super) fn deleted(&mut self, id: u64) {
        match self.known.get_mut(&id) {
            Some(k) if k.dirty => k.indexed = None,
            Some(_) => {
                self.known.remove(&id);
            }
            None => {}
        }
    }

    /// Writes the records changed in this transaction with their index
    /// entries: moved when the last occurrence moved to another bucket,
    /// else given the new time in place.
    ///
    /// Records and index entries are written in key order: a commit touches
    /// most incidents of a busy cluster, and B-tree inserts in order modify
    /// each page once, one after the other.
    fn flush(&mut self, t: &mut Tables<'_>) -> Result<()> {
        let mut buf = Vec::new();
        let mut removed = Vec::new();
        let mut indexed = Vec::new();
        self.dirty.sort_unstable();
        for id in self.dirty.drain(..) {
            let Some(k) = self.known.get_mut(&id) else { continue };
            k.dirty = false;
            let last_seen = k.rec.last_seen_us;
            let bucket = incident_bucket(last_seen);
            if k.indexed != Some(last_seen) {
                if let Some(old) = k.indexed.map(incident_bucket).filter(|old| *old != bucket) {
                    removed.extend(incident_entries(&k.rec, id, old));
                }
                indexed.extend(incident_entries(&k.rec, id, bucket).map(|key| (key, last_seen)));
                k.indexed = Some(last_seen);
            }
            buf.clear();
            encode_into(&mut buf, &k.rec);
            t.incidents.insert(id, buf.as_slice())?;
        }
        // Keys name their incident, so no key is both removed and inserted.
        removed.sort_unstable();
        for key in removed {
            t.incident_index.remove(key)?;
        }
        indexed.sort_unstable_by_key(|(key, _)| *key);
        for (key, last_seen) in indexed {
            t.incident_index.insert(key, last_seen)?;
        }
        if self.known.len() > self.capacity {
            self.known.clear();
        }
        Ok(())
    }

    /// Drops everything: the transaction these records were changed in failed.
    fn forget(&mut self) {
        self.known.clear();
        self.dirty.clear();
    }
}

enum Reply {
    Ingest(oneshot::Sender<Result<IngestOutcome>>, Result<IngestOutcome>),
    Access(
        oneshot::Sender<Result<super::access::AccessOutcome>>,
        Result<super::access::AccessOutcome>,
    ),
    Retention(oneshot::Sender<Result<RetentionOutcome>>, Result<RetentionOutcome>),
}

impl Reply {
    fn send(self, commit: &Result<()>) {
        fn pick<T>(result: Result<T>, commit: &Result<()>) -> Result<T> {
            match commit {
                Ok(()) => result,
                Err(e) => Err(StoreError::Storage(e.to_string())),
            }
        }
        // A requester that gave up (client gone) is no reason to stop.
        match self {
            Reply::Ingest(tx, r) => drop(tx.send(pick(r, commit))),
            Reply::Access(tx, r) => drop(tx.send(pick(r, commit))),
            Reply::Retention(tx, r) => drop(tx.send(pick(r, commit))),
        }
    }
}

/// What the writer remembers of the store between transactions, to read
/// less of it. Each may hold what a failed transaction wrote, so each is
/// told to forget when a commit fails.
struct Caches {
    interner: Interner,
    recent: Recent,
    incidents: Incidents,
    /// Kept for its buffers; empty between transactions (its flush, or
    /// [`Caches::forget`] after a failure, clears it).
    postings: Pending,
}

impl Caches {
    fn forget(&mut self) {
        // Ids handed out in the failed transaction may be handed out again,
        // and the dedup keys and incidents it wrote are not stored.
        self.interner.forget();
        self.recent.forget();
        self.incidents.forget();
        // Changes of the failed transaction that its flush did not reach.
        self.postings.clear();
    }
}

fn run(
    mut db: Arc<redb::Database>,
    mut rx: mpsc::Receiver<Job>,
    mut state: State,
    mut caches: Caches,
    discard: Discard,
    slot: Arc<super::DbSlot>,
    opener: super::Opener,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let snapshot = state.clone();
        let (replies, commit, done) = commit_group(&db, &mut state, &mut caches, group);
        if commit.is_err() {
            state = snapshot;
            caches.forget();
            tracing::error!(error = %commit.as_ref().err().map(ToString::to_string).unwrap_or_default(), "store commit failed; the group was refused and nothing of it is stored");
        }
        for reply in replies {
            reply.send(&commit);
        }
        if !done.is_empty() {
            // Only fails when the discard thread is gone; then drop here.
            let _ = discard.send(done);
        }
        if commit.is_err() && needs_reopen(&db) {
            db = reopen(db, &slot, &opener, &mut rx);
            match load_state(&db) {
                Ok(fresh) => state = fresh,
                Err(e) => tracing::error!(error = %e, "reading the reopened store failed; keeping the last state"),
            }
        }
    }
}

/// Whether redb refuses new transactions after an I/O error (a full disk, a
/// failed fsync): it then needs reopening.
fn needs_reopen(db: &redb::Database) -> bool {
    matches!(
        db.begin_write(),
        Err(redb::TransactionError::Storage(redb::StorageError::PreviousIo))
    )
}

/// Closes and reopens the file, refusing jobs meanwhile (503: nothing stored,
/// the agents retry). Reads fail fast while the slot is empty; the file is
/// closed once the last reader lets go of it.
fn reopen(
    db: Arc<redb::Database>,
    slot: &super::DbSlot,
    opener: &super::Opener,
    rx: &mut mpsc::Receiver<Job>,
) -> Arc<redb::Database> {
    tracing::warn!("the store hit an I/O error (disk full?); reopening it");
    *slot.write().unwrap_or_else(|e| e.into_inner()) = None;
    let mut db = db;
    loop {
        match Arc::try_unwrap(db) {
            Ok(inner) => {
                drop(inner);
                break;
            }
            Err(shared) => {
                db = shared;
                refuse_waiting(rx);
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
    loop {
        match opener.open() {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                if !needs_reopen(&fresh) {
                    *slot.write().unwrap_or_else(|e| e.into_inner()) = Some(fresh.clone());
                    tracing::info!("the store is open again");
                    return fresh;
                }
                drop(fresh);
            }
            Err(e) => tracing::warn!(error = %e, "reopening the store failed; retrying in 1 s"),
        }
        for _ in 0..50 {
            refuse_waiting(rx);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Answers every queued job with a storage error.
fn refuse_waiting(rx: &mut mpsc::Receiver<Job>) {
    fn refused<T>() -> Result<T> {
        Err(StoreError::Storage("the store is reopening after an I/O error".into()))
    }
    while let Ok(job) = rx.try_recv() {
        match job {
            Job::Ingest { reply, .. } => drop(reply.send(refused())),
            Job::Access { reply, .. } => drop(reply.send(refused())),
            Job::Retention { reply, .. } => drop(reply.send(refused())),
        }
    }
}

fn commit_group(
    db: &redb::Database,
    state: &mut State,
    caches: &mut Caches,
    group: Vec<Job>,
) -> (Vec<Reply>, Result<()>, Vec<PreparedBatch>) {
    let started = std::time::Instant::now();
    let mut replies = Vec::with_capacity(group.len());
    let mut done = Vec::with_capacity(group.len());
    let mut jobs = group.into_iter();
    let outcome = (|| -> Result<()> {
        let txn = db.begin_write()?;
        {
            let mut t = Tables::open(&txn)?;
            if state.segment_events >= SEGMENT_EVENTS {
                state.segment += 1;
                state.segment_events = 0;
            }
            let mut w = Work {
                interner: &mut caches.interner,
                recent: &mut caches.recent,
                dedup: dedup::Changes::default(),
                incidents: &mut caches.incidents,
                postings: &mut caches.postings,
                events: blocks::Pending::default(),
            };
            let mut dirty_clusters = Vec::new();
            for job in jobs.by_ref() {
                match job {
                    Job::Ingest {
                        identity,
                        mut batch,
                        reply,
                    } => {
                        let r = ingest(&mut t, state, &mut w, &identity, &mut batch);
                        done.push(batch);
                        if let Err(StoreError::Storage(_) | StoreError::Corrupt(_)) = &r {
                            replies.push(Reply::Ingest(reply, Err(StoreError::Storage("aborted".into()))));
                            return r.map(|_| ());
                        }
                        dirty_clusters.push(identity.cluster.clone());
                        replies.push(Reply::Ingest(reply, r));
                    }
                    Job::Access { job, reply } => {
                        // Registering an agent may create its cluster's record.
                        dirty_clusters.extend(job.op.registers_cluster().map(str::to_owned));
                        let r = super::access::apply(&mut t, state, &mut w, job);
                        if let Err(StoreError::Storage(_) | StoreError::Corrupt(_)) = &r {
                            replies.push(Reply::Access(reply, Err(StoreError::Storage("aborted".into()))));
                            return r.map(|_| ());
                        }
                        replies.push(Reply::Access(reply, r));
                    }
                    Job::Retention { cutoff_us, reply } => {
                        let r = retention(&mut t, state, &mut w, cutoff_us);
                        let failed = r.is_err();
                        dirty_clusters.extend(state.clusters.keys().cloned());
                        replies.push(Reply::Retention(reply, r));
                        if failed {
                            return Err(StoreError::Storage("retention failed".into()));
                        }
                    }
                }
            }
            let Work {
                incidents,
                postings,
                events,
                dedup,
                ..
            } = w;
            events.flush(&mut t.events)?;
            dedup.flush(&mut t.dedup)?;
            incidents.flush(&mut t)?;
            postings.flush(&mut t.postings, &mut t.segments)?;
            dirty_clusters.sort();
            dirty_clusters.dedup();
            for name in dirty_clusters {
                if let Some((id, rec)) = state.clusters.get(&name) {
                    t.cluster_ids.insert(name.as_str(), *id)?;
                    t.clusters.insert(*id, encode(rec).as_slice())?;
                }
            }
            t.meta.insert(META_NEXT_SEQ, state.next_seq)?;
            t.meta.insert(META_NEXT_AUDIT, state.next_audit)?;
            t.meta.insert(META_NEXT_STRING, u64::from(state.next_string))?;
            t.meta.insert(META_SEGMENT, u64::from(state.segment))?;
        }
        txn.commit()?;
        Ok(())
    })();
    // Jobs a failure left unattempted get the failure too (not a dropped reply,
    // which their requester would take for a shutdown).
    for job in jobs {
        let not_attempted = || StoreError::Storage("not attempted".into());
        replies.push(match job {
            Job::Ingest { reply, .. } => Reply::Ingest(reply, Err(not_attempted())),
            Job::Access { reply, .. } => Reply::Access(reply, Err(not_attempted())),
            Job::Retention { reply, .. } => Reply::Retention(reply, Err(not_attempted())),
        });
    }
    crate::ops::metrics()
        .commit_seconds
        .observe(started.elapsed().as_secs_f64());
    (replies, outcome, done)
}

pub(super) fn check_agent(t: &Tables<'_>, identity: &AgentIdentity) -> Result<AgentRecord> {
    let Some(bytes) = t.agents.get(identity.agent_id.as_str())? else {
        return Err(StoreError::AgentRefused(format!(
            "agent {} is not known to this collector (its store was reset or the agent was removed): issue or enroll a new certificate",
            identity.agent_id
        )));
    };
    let agent: AgentRecord = decode(bytes.value())?;
    if agent.revoked_us.is_some() {
        return Err(StoreError::AgentRefused(format!(
            "agent {} was revoked: enroll again with a valid token if it should send data",
            identity.agent_id
        )));
    }
    if agent.cluster != identity.cluster || agent.tenant != identity.tenant {
        return Err(StoreError::AgentRefused(format!(
            "agent {} is registered for another cluster: its certificate does not match the record",
            identity.agent_id
        )));
    }
    Ok(agent)
}

/// What one transaction accumulates before it commits.
pub(super) struct Work<'a> {
    pub(super) interner: &'a mut Interner,
    recent: &'a mut Recent,
    dedup: dedup::Changes,
    pub(super) incidents: &'a mut Incidents,
    pub(super) postings: &'a mut Pending,
    events: blocks::Pending,
}

impl Work<'_> {
    fn dictionary<'b, 't>(t: &'b mut Tables<'t>, next_id: &'b mut u32) -> Dictionary<'b, 't> {
        Dictionary {
            strings: &mut t.strings,
            text: &mut t.string_text,
            next_id,
        }
    }
}

fn ingest(
    t: &mut Tables<'_>,
    state: &mut State,
    w: &mut Work<'_>,
    identity: &AgentIdentity,
    batch: &mut PreparedBatch,
) -> Result<IngestOutcome> {
    let mut agent = check_agent(t, identity)?;
    let now = now_us();
    let cluster = state.cluster_id(&identity.cluster, &identity.tenant);
    let mut out = IngestResponse::default();
    let mut new_events = 0;
    for &i in &batch.order {
        let ev = &mut batch.events[i as usize];
        let key = dedup_key_hashed(cluster, ev.rec.first_seen_us, ev.uid_hash);
        let existing = w.recent.get(&t.dedup, &mut w.dedup, key)?;
        let added = match existing {
            Some(found) if ev.rec.count <= found.count => 0,
            Some(found) => update_event(t, state, w, key, found, ev)?,
            None => {
                new_events += 1;
                insert_event(t, state, w, cluster, key, ev, now)?
            }
        };
        if added == 0 {
            out.duplicate += 1;
        } else {
            out.accepted += 1;
            out.occurrences += added;
        }
    }
    if let Some((_, rec)) = state.clusters.get_mut(&identity.cluster) {
        rec.events_stored += new_events;
        rec.occurrences += out.occurrences;
        rec.last_ingest_us = Some(now);
    }
    agent.last_seen_us = Some(now);
    if let Some(info) = batch.agent.take() {
        agent.version = Some(info.version).filter(|v| !v.is_empty());
        agent.dropped_total = agent.dropped_total.max(info.dropped_total);
    }
    t.agents.insert(agent.agent_id.as_str(), encode(&agent).as_slice())?;
    Ok(out)
}

fn insert_event(
    t: &mut Tables<'_>,
    state: &mut State,
    w: &mut Work<'_>,
    cluster: u32,
    key: DedupKey,
    ev: &mut PreparedEvent,
    now: i64,
) -> Result<u64> {
    let split = std::mem::take(&mut ev.split);
    let pattern = std::mem::take(&mut ev.pattern);
    let rec = &mut ev.rec;
    rec.cluster = cluster;
    rec.received_us = now;
    let id = rec.incident;
    let occurrences = u64::from(rec.count);
    match w.incidents.get_mut(t, id)? {
        Some(inc) => incidents::absorb(inc, rec, occurrences, true),
        None => {
            let mut inc = incidents::open(rec, pattern);
            incidents::absorb(&mut inc, rec, occurrences, true);
            w.incidents.open(id, inc);
        }
    }
    let compact = w
        .interner
        .compact(&mut Work::dictionary(t, &mut state.next_string), rec, split)?;
    let seq = state.next_seq;
    state.next_seq += 1;
    let entry = Entry {
        ts_us: compact.last_seen_us(),
        seq,
    };
    w.postings
        .change(cluster, None, Some((state.segment, &compact.dims(), entry)));
    state.segment_events += 1;
    w.events.put(&t.events, seq, &compact)?;
    let dedup = DedupEntry {
        seq,
        count: compact.count,
        segment: state.segment,
    };
    w.recent.insert(&t.dedup, &mut w.dedup, key, dedup)?;
    Ok(occurrences)
}

fn load_event(t: &Tables<'_>, w: &mut Work<'_>, seq: u64) -> Result<CompactEvent> {
    w.events
        .get(&t.events, seq)?
        .ok_or_else(|| StoreError::Storage(format!("the dedup table points at missing event {seq}")))
}

/// Applies a re-sent event with a higher count: only the difference is
/// added, and its index entries move to the current segment.
fn update_event(
    t: &mut Tables<'_>,
    state: &mut State,
    w: &mut Work<'_>,
    key: DedupKey,
    found: DedupEntry,
    ev: &mut PreparedEvent,
) -> Result<u64> {
    let old = load_event(t, w, found.seq)?;
    let delta = u64::from(ev.rec.count - found.count);
    let split = std::mem::take(&mut ev.split);
    let fresh = &mut ev.rec;
    fresh.cluster = old.cluster;
    let newer = fresh.last_seen_us >= old.last_seen_us();
    if !newer {
        // An older copy with a higher count: keep the newest time and message.
        let template = t
            .string_text
            .get(old.template)?
            .map(|v| v.value().to_owned())
            .unwrap_or_default();
        fresh.message = join_message(&template, old.args.as_deref());
        fresh.last_seen_us = old.last_seen_us();
    }
    fresh.incident = old.incident;
    let mut dict = Work::dictionary(t, &mut state.next_string);
    let mut rec = old.clone();
    rec.count = fresh.count;
    rec.last_after_first_us = fresh.last_seen_us.max(old.last_seen_us()) - old.first_seen_us;
    rec.severity = old.severity.max(fresh.severity);
    if newer {
        let latest = w.interner.compact(&mut dict, fresh, split)?;
        rec.template = latest.template;
        rec.args = latest.args;
        rec.node = latest.node.or(old.node);
        rec.logs = latest.logs.or(old.logs.clone());
    }
    if let Some(inc) = w.incidents.get_mut(t, rec.incident)? {
        incidents::absorb(inc, fresh, delta, false);
    }
    let before = Entry {
        ts_us: old.last_seen_us(),
        seq: found.seq,
    };
    let after = Entry {
        ts_us: rec.last_seen_us(),
        seq: found.seq,
    };
    w.postings.change(
        old.cluster,
        Some((found.segment, &old.dims(), before)),
        Some((state.segment, &rec.dims(), after)),
    );
    if found.segment != state.segment {
        state.segment_events += 1;
    }
    w.events.put(&t.events, found.seq, &rec)?;
    let moved = DedupEntry {
        seq: found.seq,
        count: rec.count,
        segment: state.segment,
    };
    w.recent.insert(&t.dedup, &mut w.dedup, key, moved)?;
    Ok(delta)
}

/// Deletes the stored event that `entry` of `segment`'s time list names,
/// with its dedup entry and index entries; returns its cluster id, or `None`
/// if it is gone or has moved since (seen again earlier in this transaction:
/// its entries are no longer in `segment`'s lists as written on disk).
pub(super) fn delete_event(t: &mut Tables<'_>, w: &mut Work<'_>, segment: u32, entry: Entry) -> Result<Option<u32>> {
    let seq = entry.seq;
    let Some(ev) = w.events.get(&t.events, seq)? else {
        return Ok(None);
    };
    let key = dedup_key(ev.cluster, ev.first_seen_us, &ev.uid.text());
    let current = w.recent.get(&t.dedup, &mut w.dedup, key)?;
    if ev.last_seen_us() != entry.ts_us || current.is_some_and(|c| c.segment != segment) {
        return Ok(None);
    }
    w.events.remove(&t.events, seq)?;
    w.recent.remove(&mut w.dedup, key);
    w.postings.change(ev.cluster, Some((segment, &ev.dims(), entry)), None);
    Ok(Some(ev.cluster))
}

/// The time-dimension entries of one segment, with their cluster, oldest first.
pub(super) fn segment_events(t: &Tables<'_>, segment: u32, only_cluster: Option<u32>) -> Result<Vec<(u32, Entry)>> {
    let (lo, hi) = match only_cluster {
        Some(c) => (
            postings::posting_key(segment, Dim::Time, c, 0),
            postings::posting_key(segment, Dim::Time, c, 0),
        ),
        None => (
            postings::posting_key(segment, Dim::Time, 0, 0),
            postings::posting_key(segment, Dim::Time, u32::MAX, 0),
        ),
    };
    let mut out = Vec::new();
    for row in t.postings.range(lo..=hi)? {
        let (key, list) = row?;
        let key = key.value();
        let cluster = postings::cluster_of(&key);
        out.extend(
            postings::decode_list(list.value())?
                .into_iter()
                .rev()
                .map(|e| (cluster, e)),
        );
    }
    Ok(out)
}

fn retention(t: &mut Tables<'_>, state: &mut State, w: &mut Work<'_>, cutoff_us: i64) -> Result<RetentionOutcome> {
    let mut out = RetentionOutcome::default();
    let mut deleted_per_cluster: HashMap<u32, u64> = HashMap::new();
    let mut budget = RETENTION_BUDGET;
    let old: Vec<(u32, SegmentInfo)> = postings::segments(&t.segments)?
        .into_iter()
        .filter(|(_, info)| info.min_ts < cutoff_us)
        .collect();
    'segments: for (segment, _) in old {
        for (_, entry) in segment_events(t, segment, None)? {
            if entry.ts_us >= cutoff_us {
                continue;
            }
            if budget == 0 {
                out.more = true;
                break 'segments;
            }
            budget -= 1;
            if let Some(cluster) = delete_event(t, w, segment, entry)? {
                *deleted_per_cluster.entry(cluster).or_default() += 1;
                out.events += 1;
            }
        }
        w.postings.raise_min(segment, cutoff_us);
    }
    for (id, rec) in state.clusters.values_mut() {
        rec.events_stored = rec
            .events_stored
            .saturating_sub(deleted_per_cluster.get(id).copied().unwrap_or(0));
        // Up to the cutoff's bucket, then by the exact time the index holds.
        let lo = index_key(Dim::Time, *id, 0, i64::MIN, 0);
        let hi = index_key(Dim::Time, *id, 0, incident_bucket(cutoff_us), u64::MAX);
        let mut candidates = Vec::new();
        for row in t.incident_index.range(lo..=hi)? {
            let (key, last_seen) = row?;
            if last_seen.value() < cutoff_us {
                candidates.push(position_of(&key.value()));
            }
        }
        for (bucket, incident) in candidates {
            if delete_incident(t, w, incident, bucket)? {
                out.incidents += 1;
            }
        }
    }
    Ok(out)
}

/// Deletes incident `id`, whose index entries are in `bucket`, with them;
/// returns whether it was there.
pub(super) fn delete_incident(t: &mut Tables<'_>, w: &mut Work<'_>, id: u64, bucket: i64) -> Result<bool> {
    let rec: IncidentRecord = match t.incidents.remove(id)? {
        Some(bytes) => decode(bytes.value())?,
        None => return Ok(false),
    };
    for key in incident_entries(&rec, id, bucket) {
        t.incident_index.remove(key)?;
    }
    w.incidents.deleted(id);
    Ok(true)
}
