//! The single writer: group commit, dedup (invariant 4), incident grouping,
//! agent checks and retention.

use super::schema::*;
use super::{Result, StoreError, now_us};
use crate::incidents;
use crate::tls::AgentIdentity;
use podwarn_shared::{IngestBatch, IngestResponse, WarningEvent};
use redb::{ReadableTable, Table, WriteTransaction};
use std::collections::HashMap;
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
        batch: IngestBatch,
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
const RETENTION_BUDGET: u64 = 2000;

/// Prepares the tables and starts the writer thread.
pub(super) fn start(db: Arc<redb::Database>, rx: mpsc::Receiver<Job>) -> Result<()> {
    let state = {
        let txn = db.begin_write()?;
        let state = {
            let mut t = Tables::open(&txn)?;
            let schema = t.meta.get(META_SCHEMA)?.map(|v| v.value());
            match schema {
                None => {
                    t.meta.insert(META_SCHEMA, SCHEMA_VERSION)?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(other) => {
                    return Err(StoreError::Storage(format!(
                        "the store was written with schema {other}, this build reads schema {SCHEMA_VERSION}: \
                         use a podwarn-collector of the matching version"
                    )));
                }
            }
            State::load(&t)?
        };
        txn.commit()?;
        state
    };
    std::thread::Builder::new()
        .name("podwarn-store-writer".into())
        .spawn(move || run(db, rx, state))
        .map_err(StoreError::storage)?;
    Ok(())
}

/// What the writer keeps between transactions; restored from a snapshot when
/// a commit fails, so memory never runs ahead of the disk.
#[derive(Clone)]
pub(super) struct State {
    pub(super) next_seq: u64,
    pub(super) next_audit: u64,
    pub(super) clusters: HashMap<String, (u32, ClusterRecord)>,
}

impl State {
    fn load(t: &Tables<'_>) -> Result<Self> {
        let next_seq = t.meta.get(META_NEXT_SEQ)?.map(|v| v.value()).unwrap_or(1);
        let next_audit = t.meta.get(META_NEXT_AUDIT)?.map(|v| v.value()).unwrap_or(1);
        let mut clusters = HashMap::new();
        for row in t.clusters.iter()? {
            let (id, bytes) = row?;
            let rec: ClusterRecord = decode(bytes.value())?;
            clusters.insert(rec.name.clone(), (id.value(), rec));
        }
        Ok(Self {
            next_seq,
            next_audit,
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
    pub(super) uids: Table<'t, &'static [u8], u64>,
    pub(super) index: Table<'t, &'static [u8], ()>,
    pub(super) incidents: Table<'t, u64, &'static [u8]>,
    pub(super) incident_index: Table<'t, &'static [u8], ()>,
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
            events: txn.open_table(EVENTS)?,
            uids: txn.open_table(EVENT_UIDS)?,
            index: txn.open_table(EVENT_INDEX)?,
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

/// Incidents touched in one transaction: written once at the end.
#[derive(Default)]
struct IncidentCache {
    /// id → (record, the last_seen its index entry has on disk, if any).
    touched: HashMap<u64, (IncidentRecord, Option<i64>)>,
}

impl IncidentCache {
    fn get_or_load(&mut self, t: &Tables<'_>, id: u64) -> Result<Option<&mut IncidentRecord>> {
        use std::collections::hash_map::Entry;
        match self.touched.entry(id) {
            Entry::Occupied(e) => Ok(Some(&mut e.into_mut().0)),
            Entry::Vacant(e) => {
                let Some(bytes) = t.incidents.get(id)? else {
                    return Ok(None);
                };
                let rec: IncidentRecord = decode(bytes.value())?;
                let ts = rec.last_seen_us;
                Ok(Some(&mut e.insert((rec, Some(ts))).0))
            }
        }
    }

    fn flush(self, t: &mut Tables<'_>) -> Result<()> {
        for (id, (rec, indexed)) in self.touched {
            if indexed != Some(rec.last_seen_us) {
                if let Some(old) = indexed {
                    for key in incident_entries(&rec, id, old) {
                        t.incident_index.remove(key.as_slice())?;
                    }
                }
                for key in incident_entries(&rec, id, rec.last_seen_us) {
                    t.incident_index.insert(key.as_slice(), ())?;
                }
            }
            t.incidents.insert(id, encode(&rec).as_slice())?;
        }
        Ok(())
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

fn run(db: Arc<redb::Database>, mut rx: mpsc::Receiver<Job>, mut state: State) {
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let snapshot = state.clone();
        let (replies, commit) = commit_group(&db, &mut state, group);
        if commit.is_err() {
            state = snapshot;
            tracing::error!(error = %commit.as_ref().err().map(ToString::to_string).unwrap_or_default(), "store commit failed; the group was refused and nothing of it is stored");
        }
        for reply in replies {
            reply.send(&commit);
        }
    }
}

fn commit_group(db: &redb::Database, state: &mut State, group: Vec<Job>) -> (Vec<Reply>, Result<()>) {
    let started = std::time::Instant::now();
    let mut replies = Vec::with_capacity(group.len());
    let outcome = (|| -> Result<()> {
        let txn = db.begin_write()?;
        {
            let mut t = Tables::open(&txn)?;
            let mut incidents = IncidentCache::default();
            let mut dirty_clusters = Vec::new();
            for job in group {
                match job {
                    Job::Ingest { identity, batch, reply } => {
                        let r = ingest(&mut t, state, &mut incidents, &identity, batch);
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
                        let r = super::access::apply(&mut t, state, job);
                        if let Err(StoreError::Storage(_) | StoreError::Corrupt(_)) = &r {
                            replies.push(Reply::Access(reply, Err(StoreError::Storage("aborted".into()))));
                            return r.map(|_| ());
                        }
                        replies.push(Reply::Access(reply, r));
                    }
                    Job::Retention { cutoff_us, reply } => {
                        let r = retention(&mut t, state, cutoff_us);
                        let failed = r.is_err();
                        dirty_clusters.extend(state.clusters.keys().cloned());
                        replies.push(Reply::Retention(reply, r));
                        if failed {
                            return Err(StoreError::Storage("retention failed".into()));
                        }
                    }
                }
            }
            incidents.flush(&mut t)?;
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
        }
        txn.commit()?;
        Ok(())
    })();
    crate::ops::metrics()
        .commit_seconds
        .observe(started.elapsed().as_secs_f64());
    (replies, outcome)
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

fn ingest(
    t: &mut Tables<'_>,
    state: &mut State,
    incidents: &mut IncidentCache,
    identity: &AgentIdentity,
    batch: IngestBatch,
) -> Result<IngestOutcome> {
    let mut agent = check_agent(t, identity)?;
    let now = now_us();
    let cluster = state.cluster_id(&identity.cluster, &identity.tenant);
    let mut out = IngestResponse::default();
    let mut new_events = 0;
    for ev in batch.events {
        let key = uid_key(cluster, &ev.uid);
        let existing = t.uids.get(key.as_slice())?.map(|v| v.value());
        let added = match existing {
            Some(seq) => update_event(t, incidents, seq, ev)?,
            None => {
                let seq = state.next_seq;
                state.next_seq += 1;
                new_events += 1;
                t.uids.insert(key.as_slice(), seq)?;
                insert_event(t, incidents, &identity.cluster, cluster, seq, ev, now)?
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
    if let Some(info) = batch.agent {
        agent.version = Some(info.version).filter(|v| !v.is_empty());
        agent.dropped_total = agent.dropped_total.max(info.dropped_total);
    }
    t.agents.insert(agent.agent_id.as_str(), encode(&agent).as_slice())?;
    Ok(out)
}

fn record_of(ev: WarningEvent, cluster: u32, now: i64) -> EventRecord {
    let first = ev.first_seen.as_microsecond();
    let last = ev.last_seen.as_microsecond();
    EventRecord {
        cluster,
        uid: ev.uid,
        namespace: ev.namespace,
        pod: ev.pod,
        pod_uid: ev.pod_uid,
        node: ev.node,
        workload: ev.workload.map(|w| (w.kind, w.name)),
        container: ev.container,
        reason: ev.reason,
        message: ev.message,
        incident_type: ev.incident_type.code(),
        severity: podwarn_shared::Severity::ALL
            .iter()
            .position(|s| *s == ev.severity)
            .unwrap_or(1) as u8,
        count: ev.count,
        // Clocks disagree in real clusters; never store an inverted interval.
        first_seen_us: first.min(last),
        last_seen_us: last.max(first),
        source: ev.source,
        logs: ev.logs,
        incident: 0,
        received_us: now,
    }
}

fn insert_event(
    t: &mut Tables<'_>,
    incidents: &mut IncidentCache,
    cluster_name: &str,
    cluster: u32,
    seq: u64,
    ev: WarningEvent,
    now: i64,
) -> Result<u64> {
    let mut rec = record_of(ev, cluster, now);
    let (id, pattern) = incidents::fingerprint(cluster_name, &rec);
    rec.incident = id;
    let occurrences = u64::from(rec.count);
    match incidents.get_or_load(t, id)? {
        Some(inc) => incidents::absorb(inc, &rec, occurrences, true),
        None => {
            let mut inc = incidents::open(&rec, pattern);
            incidents::absorb(&mut inc, &rec, occurrences, true);
            incidents.touched.insert(id, (inc, None));
        }
    }
    for key in index_entries(&rec, seq) {
        t.index.insert(key.as_slice(), ())?;
    }
    t.events.insert(seq, encode(&rec).as_slice())?;
    Ok(occurrences)
}

/// Applies a re-sent event: only a higher count changes anything, and only
/// the difference is added.
fn update_event(t: &mut Tables<'_>, incidents: &mut IncidentCache, seq: u64, ev: WarningEvent) -> Result<u64> {
    let Some(bytes) = t.events.get(seq)? else {
        return Err(StoreError::Storage(format!("dedup key points at missing event {seq}")));
    };
    let old: EventRecord = decode(bytes.value())?;
    drop(bytes);
    if ev.count <= old.count {
        return Ok(0);
    }
    let delta = u64::from(ev.count - old.count);
    let fresh = record_of(ev, old.cluster, old.received_us);
    let mut rec = old.clone();
    rec.count = fresh.count;
    if fresh.last_seen_us >= old.last_seen_us {
        rec.last_seen_us = fresh.last_seen_us;
        rec.message = fresh.message;
    }
    rec.first_seen_us = rec.first_seen_us.min(fresh.first_seen_us);
    rec.severity = rec.severity.max(fresh.severity);
    rec.node = fresh.node.or(rec.node);
    rec.logs = fresh.logs.or(rec.logs);
    for key in index_entries(&old, seq) {
        t.index.remove(key.as_slice())?;
    }
    for key in index_entries(&rec, seq) {
        t.index.insert(key.as_slice(), ())?;
    }
    if let Some(inc) = incidents.get_or_load(t, rec.incident)? {
        incidents::absorb(inc, &rec, delta, false);
    }
    t.events.insert(seq, encode(&rec).as_slice())?;
    Ok(delta)
}

fn retention(t: &mut Tables<'_>, state: &mut State, cutoff_us: i64) -> Result<RetentionOutcome> {
    let mut out = RetentionOutcome::default();
    for (id, rec) in state.clusters.values_mut() {
        let lo = index_key(Dim::Time, *id, 0, i64::MIN, 0);
        let hi = index_key(Dim::Time, *id, 0, cutoff_us, 0);
        let mut doomed = Vec::new();
        for row in t.index.range(lo.as_slice()..hi.as_slice())? {
            if out.events + doomed.len() as u64 >= RETENTION_BUDGET {
                out.more = true;
                break;
            }
            doomed.push(position_of(row?.0.value()).1);
        }
        for seq in doomed {
            let Some(bytes) = t.events.remove(seq)? else { continue };
            let ev: EventRecord = decode(bytes.value())?;
            drop(bytes);
            for key in index_entries(&ev, seq) {
                t.index.remove(key.as_slice())?;
            }
            t.uids.remove(uid_key(ev.cluster, &ev.uid).as_slice())?;
            rec.events_stored = rec.events_stored.saturating_sub(1);
            out.events += 1;
        }
        let lo = index_key(Dim::Time, *id, 0, i64::MIN, 0);
        let hi = index_key(Dim::Time, *id, 0, cutoff_us, 0);
        let mut doomed = Vec::new();
        for row in t.incident_index.range(lo.as_slice()..hi.as_slice())? {
            doomed.push(position_of(row?.0.value()));
        }
        for (last_seen, incident) in doomed {
            let Some(bytes) = t.incidents.remove(incident)? else {
                continue;
            };
            let rec: IncidentRecord = decode(bytes.value())?;
            drop(bytes);
            for key in incident_entries(&rec, incident, last_seen) {
                t.incident_index.remove(key.as_slice())?;
            }
            out.incidents += 1;
        }
    }
    Ok(out)
}
