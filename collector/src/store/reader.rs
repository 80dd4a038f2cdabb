//! Queries: pick the most selective index, walk it newest first (merging the
//! per-cluster ranges), check the remaining filters on each record, and stop
//! after a bounded amount of work so that no query scans the whole store.

use super::compact::{CompactEvent, Resolver, STRING_TEXT, STRINGS, lookup, pod_value};
use super::postings::{self, Entry, POSTINGS, SEGMENTS, SegmentInfo, posting_key};
use super::schema::*;
use super::{Result, StoreError};
use crate::incidents;
use jiff::Timestamp;
use podwarn_shared::{IncidentType, Severity, WarningEvent, Workload};
use redb::{ReadTransaction, ReadableTable, TableDefinition};
use serde::Serialize;
use std::collections::BinaryHeap;
use std::collections::HashMap;

/// Most index entries one query examines before it answers with what it
/// found and a cursor to go on from.
pub const MAX_SCAN: usize = 20_000;

/// Where a page ended: `(last_seen, id)` of its last entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Microseconds since the epoch.
    pub ts_us: i64,
    /// Event sequence number or incident id.
    pub id: u64,
}

/// One page of results.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The results, newest first.
    pub items: Vec<T>,
    /// Where the next page starts, if there may be one.
    pub next: Option<Position>,
}

/// Filters of an event query. All given filters must match.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only these clusters (names); `None` for every cluster.
    pub clusters: Option<Vec<String>>,
    /// Only clusters of this tenant; `None` for every tenant.
    pub tenant: Option<String>,
    /// Exact namespace.
    pub namespace: Option<String>,
    /// Exact pod name.
    pub pod: Option<String>,
    /// Workload: optional kind, name.
    pub workload: Option<(Option<String>, String)>,
    /// Exact node name.
    pub node: Option<String>,
    /// Exact reason.
    pub reason: Option<String>,
    /// Incident type.
    pub incident_type: Option<IncidentType>,
    /// Incident id.
    pub incident: Option<u64>,
    /// Last seen at or after.
    pub since_us: Option<i64>,
    /// Last seen at or before.
    pub until_us: Option<i64>,
    /// Page size.
    pub limit: usize,
    /// Continue after this position.
    pub after: Option<Position>,
}

/// Filters of an incident query.
#[derive(Debug, Clone, Default)]
pub struct IncidentQuery {
    /// Only these clusters (names); `None` for every cluster.
    pub clusters: Option<Vec<String>>,
    /// Only clusters of this tenant; `None` for every tenant.
    pub tenant: Option<String>,
    /// Exact namespace.
    pub namespace: Option<String>,
    /// Workload: optional kind, name.
    pub workload: Option<(Option<String>, String)>,
    /// Incident type.
    pub incident_type: Option<IncidentType>,
    /// Only active (`true`) or only resolved (`false`) incidents.
    pub active: Option<bool>,
    /// Last seen at or after.
    pub since_us: Option<i64>,
    /// Last seen at or before.
    pub until_us: Option<i64>,
    /// "Now", for `active`.
    pub now_us: i64,
    /// How long an incident stays active after its last occurrence.
    pub active_window: std::time::Duration,
    /// Page size.
    pub limit: usize,
    /// Continue after this position.
    pub after: Option<Position>,
}

/// An event as the query API returns it.
#[derive(Debug, Clone, Serialize)]
pub struct StoredEvent {
    /// The cluster, from the sending agent's certificate.
    pub cluster: String,
    /// The event, as the agent sent it (with the latest count).
    #[serde(flatten)]
    pub event: WarningEvent,
    /// The incident this event belongs to.
    pub incident: String,
    /// When the collector first stored it.
    pub received_at: Timestamp,
}

/// An incident as the query API returns it.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentView {
    /// Stable id (16 hex digits).
    pub id: String,
    /// The cluster.
    pub cluster: String,
    /// The cluster's tenant.
    pub tenant: String,
    /// The namespace.
    pub namespace: String,
    /// The owning workload, if any.
    pub workload: Option<Workload>,
    /// The pod, for bare pods.
    pub pod: Option<String>,
    /// The container, if the events name one.
    pub container: Option<String>,
    /// The kind of problem.
    pub incident_type: IncidentType,
    /// The highest severity seen.
    pub severity: Severity,
    /// The latest reason.
    pub reason: String,
    /// The normalised message shared by its events.
    pub pattern: String,
    /// The latest message.
    pub message: String,
    /// First occurrence.
    pub first_seen: Timestamp,
    /// Latest occurrence.
    pub last_seen: Timestamp,
    /// Occurrences in total (sum of counts).
    pub occurrences: u64,
    /// Distinct events.
    pub events: u64,
    /// Most recently affected pods.
    pub pods: Vec<String>,
    /// Pods affected beyond those listed.
    pub pods_not_listed: u64,
    /// Whether it occurred within the active window.
    pub active: bool,
}

/// A cluster with its agents.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    /// The cluster name.
    pub cluster: String,
    /// Its tenant.
    pub tenant: String,
    /// Distinct events stored.
    pub events_stored: u64,
    /// Occurrences stored.
    pub occurrences: u64,
    /// Last accepted batch.
    pub last_ingest: Option<Timestamp>,
    /// Agents holding certificates for it.
    pub agents: Vec<AgentView>,
}

/// An agent as `/v1/clusters` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    /// The agent id.
    pub agent_id: String,
    /// The agent's version, from its last batch.
    pub version: Option<String>,
    /// Last accepted batch.
    pub last_seen: Option<Timestamp>,
    /// When its certificate expires.
    pub cert_expires: Timestamp,
    /// Whether it is revoked.
    pub revoked: bool,
    /// Events it reported dropping (spool overflow), running total.
    pub dropped_total: u64,
}

fn ts(us: i64) -> Timestamp {
    Timestamp::from_microsecond(us).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Cluster id → record, for every cluster (a small table).
fn cluster_map(txn: &ReadTransaction) -> Result<HashMap<u32, ClusterRecord>> {
    let table = match txn.open_table(CLUSTERS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(HashMap::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = HashMap::new();
    for row in table.iter()? {
        let (id, bytes) = row?;
        out.insert(id.value(), decode(bytes.value())?);
    }
    Ok(out)
}

fn selected(clusters: &HashMap<u32, ClusterRecord>, only: &Option<Vec<String>>, tenant: &Option<String>) -> Vec<u32> {
    let mut ids: Vec<u32> = clusters
        .iter()
        .filter(|(_, rec)| only.as_ref().is_none_or(|names| names.contains(&rec.name)))
        .filter(|(_, rec)| tenant.as_ref().is_none_or(|t| *t == rec.tenant))
        .map(|(id, _)| *id)
        .collect();
    ids.sort_unstable();
    ids
}

/// Exclusive upper bound of a newest-first walk.
fn upper(until_us: Option<i64>, after: Option<Position>) -> (i64, u64) {
    let from_until = until_us.map_or((i64::MAX, u64::MAX), |u| (u.saturating_add(1), 0));
    let from_after = after.map_or((i64::MAX, u64::MAX), |p| (p.ts_us, p.id));
    from_until.min(from_after)
}

/// One cluster's incident index range, walked backwards, with the entry
/// (bucket, id, last occurrence) it is at.
type Head<'a> = (
    Option<(i64, u64, i64)>,
    std::iter::Rev<redb::Range<'a, IncidentIndexKey, i64>>,
);

/// Walks several incident index ranges newest bucket first as one, calling
/// `visit` with the `(last occurrence, id)` of one whole bucket at a time
/// (from every range) until it returns false or [`MAX_SCAN`] entries were
/// seen. A bucket is never split, so one past the budget is still read
/// whole. Returns whether the budget ran out, and the last bucket visited.
fn walk_buckets<'a>(
    ranges: Vec<redb::Range<'a, IncidentIndexKey, i64>>,
    mut visit: impl FnMut(&mut Vec<(i64, u64)>) -> Result<bool>,
) -> Result<(bool, Option<i64>)> {
    let mut heads: Vec<Head<'a>> = ranges.into_iter().map(|r| (None, r.rev())).collect();
    let advance = |head: &mut Head<'a>| -> Result<()> {
        head.0 = match head.1.next() {
            Some(row) => {
                let (key, last_seen) = row?;
                let (bucket, id) = position_of(&key.value());
                Some((bucket, id, last_seen.value()))
            }
            None => None,
        };
        Ok(())
    };
    for head in heads.iter_mut() {
        advance(head)?;
    }
    let (mut seen, mut last, mut entries) = (0, None, Vec::new());
    loop {
        let Some(bucket) = heads.iter().filter_map(|(at, _)| at.map(|(b, _, _)| b)).max() else {
            return Ok((false, last));
        };
        if seen >= MAX_SCAN {
            return Ok((true, last));
        }
        entries.clear();
        for head in heads.iter_mut() {
            while let Some((b, id, last_seen)) = head.0
                && b == bucket
            {
                entries.push((last_seen, id));
                advance(head)?;
            }
        }
        seen += entries.len();
        last = Some(bucket);
        if !visit(&mut entries)? {
            return Ok((false, last));
        }
    }
}

/// The newest incident-index bucket that may hold an incident before the
/// exclusive bound `(ts, id)`.
fn top_bucket(ts: i64, id: u64) -> i64 {
    let bucket = incident_bucket(ts);
    if (ts, id) > (bucket, 0) {
        bucket
    } else {
        incident_bucket(ts.saturating_sub(1))
    }
}

fn workload_matches(filter: &Option<(Option<String>, String)>, workload: &Option<(String, String)>) -> bool {
    match (filter, workload) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some((kind, name)), Some((k, n))) => n == name && kind.as_ref().is_none_or(|kind| kind == k),
    }
}

fn event_view(rec: EventRecord, cluster: &str) -> StoredEvent {
    StoredEvent {
        cluster: cluster.to_owned(),
        incident: format!("{:016x}", rec.incident),
        received_at: ts(rec.received_us),
        event: WarningEvent {
            uid: rec.uid,
            namespace: rec.namespace,
            pod: rec.pod,
            pod_uid: rec.pod_uid,
            node: rec.node,
            workload: rec.workload.map(|(kind, name)| Workload { kind, name }),
            container: rec.container,
            reason: rec.reason,
            message: rec.message,
            incident_type: IncidentType::from_code(rec.incident_type),
            severity: Severity::ALL
                .get(rec.severity as usize)
                .copied()
                .unwrap_or(Severity::Medium),
            count: rec.count,
            first_seen: ts(rec.first_seen_us),
            last_seen: ts(rec.last_seen_us),
            source: rec.source,
            logs: rec.logs,
        },
    }
}

/// A query filter on a name, as a dictionary id: `Ok(None)` when there is no
/// filter, `Err(())` when the name was never stored (nothing can match).
type IdFilter = std::result::Result<Option<u32>, ()>;

fn id_filter(dictionary: &impl ReadableTable<&'static str, u32>, name: Option<&str>) -> Result<IdFilter> {
    Ok(match name {
        None => Ok(None),
        Some(name) => lookup(dictionary, name)?.map(Some).ok_or(()),
    })
}

/// The name filters of an event query, as dictionary ids.
struct IdFilters {
    namespace: Option<u32>,
    /// Pod names are not interned: the name itself.
    pod: Option<String>,
    node: Option<u32>,
    workload_kind: Option<u32>,
    workload_name: Option<u32>,
    reason: Option<u32>,
}

impl IdFilters {
    /// `None` when some filter names something never stored.
    fn of(dictionary: &impl ReadableTable<&'static str, u32>, q: &EventQuery) -> Result<Option<Self>> {
        let (kind, name) = match &q.workload {
            Some((kind, name)) => (kind.as_deref(), Some(name.as_str())),
            None => (None, None),
        };
        let (Ok(namespace), Ok(node), Ok(workload_kind), Ok(workload_name), Ok(reason)) = (
            id_filter(dictionary, q.namespace.as_deref())?,
            id_filter(dictionary, q.node.as_deref())?,
            id_filter(dictionary, kind)?,
            id_filter(dictionary, name)?,
            id_filter(dictionary, q.reason.as_deref())?,
        ) else {
            return Ok(None);
        };
        Ok(Some(Self {
            namespace,
            pod: q.pod.clone(),
            node,
            workload_kind,
            workload_name,
            reason,
        }))
    }

    /// The index to walk: the most selective filter given.
    fn dimension(&self, incident: Option<u64>) -> (Dim, u64) {
        if let Some(pod) = &self.pod {
            (Dim::Pod, pod_value(pod))
        } else if let Some(incident) = incident {
            (Dim::Incident, incident)
        } else if let Some(name) = self.workload_name {
            (Dim::Workload, u64::from(name))
        } else if let Some(node) = self.node {
            (Dim::Node, u64::from(node))
        } else if let Some(ns) = self.namespace {
            (Dim::Namespace, u64::from(ns))
        } else {
            (Dim::Time, 0)
        }
    }

    fn matches(&self, q: &EventQuery, e: &CompactEvent) -> bool {
        let same = |filter: Option<u32>, value: Option<u32>| filter.is_none_or(|f| Some(f) == value);
        same(self.namespace, Some(e.namespace))
            && self.pod.as_ref().is_none_or(|p| *p == e.pod)
            && same(self.node, e.node)
            && same(self.workload_kind, e.workload.map(|w| w.0))
            && (self.workload_name.is_none() || e.workload.is_some())
            && same(self.workload_name, e.workload.map(|w| w.1))
            && same(self.reason, Some(e.reason))
            && q.incident_type.is_none_or(|t| t.code() == e.incident_type)
            && q.incident.is_none_or(|i| i == e.incident)
    }
}

/// Walks the posting lists of one `(dimension, value)` newest first across
/// segments and clusters, opening a segment only once its newest entry could
/// be next. Calls `visit` until it returns false or [`MAX_SCAN`] entries were
/// seen; returns whether the budget ran out, and the last position visited.
fn walk_postings(
    txn: &ReadTransaction,
    clusters: &[u32],
    (dim, value): (Dim, u64),
    (lo_ts, hi): (i64, (i64, u64)),
    mut visit: impl FnMut(Position) -> Result<bool>,
) -> Result<(bool, Option<Position>)> {
    let (Some(lists), Some(segment_table)) = (open_optional(txn, POSTINGS)?, open_optional(txn, SEGMENTS)?) else {
        return Ok((false, None));
    };
    let mut candidates: Vec<(u32, SegmentInfo)> = postings::segments(&segment_table)?
        .into_iter()
        .filter(|(_, info)| info.overlaps(lo_ts, hi.0))
        .collect();
    candidates.sort_by_key(|(_, info)| std::cmp::Reverse(info.max_ts));
    let mut sources: Vec<Vec<Entry>> = Vec::new();
    let mut heads: BinaryHeap<(Entry, usize, usize)> = BinaryHeap::new();
    let mut opened = 0;
    let mut seen = 0;
    let mut last = None;
    loop {
        while let Some((segment, info)) = candidates.get(opened)
            && heads.peek().is_none_or(|(best, _, _)| info.max_ts >= best.ts_us)
        {
            for cluster in clusters {
                let Some(bytes) = lists.get(posting_key(*segment, dim, *cluster, value))? else {
                    continue;
                };
                let list: Vec<Entry> = postings::decode_list(bytes.value())?
                    .into_iter()
                    .filter(|e| e.ts_us >= lo_ts && (e.ts_us, e.seq) < hi)
                    .collect();
                if let Some(first) = list.first() {
                    heads.push((*first, sources.len(), 0));
                    sources.push(list);
                }
            }
            opened += 1;
        }
        let Some((entry, source, at)) = heads.pop() else {
            return Ok((false, last));
        };
        if seen == MAX_SCAN {
            return Ok((true, last));
        }
        seen += 1;
        if let Some(next) = sources[source].get(at + 1) {
            heads.push((*next, source, at + 1));
        }
        let position = Position {
            ts_us: entry.ts_us,
            id: entry.seq,
        };
        last = Some(position);
        if !visit(position)? {
            return Ok((false, last));
        }
    }
}

fn open_optional<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    table: TableDefinition<K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>> {
    match txn.open_table(table) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A page of events.
pub(super) fn events(txn: &ReadTransaction, q: &EventQuery, strings: &Resolver) -> Result<Page<StoredEvent>> {
    let empty = Page {
        items: Vec::new(),
        next: None,
    };
    let clusters = cluster_map(txn)?;
    let ids = selected(&clusters, &q.clusters, &q.tenant);
    if ids.is_empty() || q.limit == 0 {
        return Ok(empty);
    }
    let (Some(dictionary), Some(text), Some(events)) = (
        open_optional(txn, STRINGS)?,
        open_optional(txn, STRING_TEXT)?,
        open_optional(txn, super::blocks::EVENT_BLOCKS)?,
    ) else {
        return Ok(empty);
    };
    let Some(filters) = IdFilters::of(&dictionary, q)? else {
        return Ok(empty);
    };
    let mut events = super::blocks::Reader::new(&events);
    let hi = upper(q.until_us, q.after);
    let lo_ts = q.since_us.unwrap_or(i64::MIN);
    let mut items = Vec::new();
    let mut last_item = None;
    let (exhausted, last_seen) = walk_postings(txn, &ids, filters.dimension(q.incident), (lo_ts, hi), |pos| {
        let Some(stored) = events.read(pos.id)? else {
            return Ok(true);
        };
        if filters.matches(q, &stored) {
            let rec = strings.expand(&text, &stored)?;
            let cluster = clusters.get(&rec.cluster).map(|c| c.name.as_str()).unwrap_or("");
            items.push(event_view(rec, cluster));
            last_item = Some(pos);
        }
        Ok(items.len() < q.limit)
    })?;
    let next = if items.len() == q.limit {
        last_item
    } else if exhausted {
        last_seen
    } else {
        None
    };
    Ok(Page { items, next })
}

fn incident_view(
    id: u64,
    rec: IncidentRecord,
    cluster: &ClusterRecord,
    now_us: i64,
    window: std::time::Duration,
) -> IncidentView {
    IncidentView {
        id: format!("{id:016x}"),
        cluster: cluster.name.clone(),
        tenant: cluster.tenant.clone(),
        namespace: rec.namespace,
        workload: rec.workload.map(|(kind, name)| Workload { kind, name }),
        pod: rec.pod,
        container: rec.container,
        incident_type: IncidentType::from_code(rec.incident_type),
        severity: Severity::ALL
            .get(rec.severity as usize)
            .copied()
            .unwrap_or(Severity::Medium),
        reason: rec.reason,
        pattern: rec.pattern,
        message: rec.message,
        first_seen: ts(rec.first_seen_us),
        last_seen: ts(rec.last_seen_us),
        occurrences: rec.occurrences,
        events: rec.events,
        pods: rec.pods,
        pods_not_listed: rec.pods_not_listed,
        active: incidents::is_active(rec.last_seen_us, now_us, window),
    }
}

/// A page of incidents.
pub(super) fn incidents(txn: &ReadTransaction, q: &IncidentQuery) -> Result<Page<IncidentView>> {
    let clusters = cluster_map(txn)?;
    let ids = selected(&clusters, &q.clusters, &q.tenant);
    if ids.is_empty() || q.limit == 0 {
        return Ok(Page {
            items: Vec::new(),
            next: None,
        });
    }
    let index = txn.open_table(INCIDENT_INDEX)?;
    let table = txn.open_table(INCIDENTS)?;
    let (hi_ts, hi_id) = upper(q.until_us, q.after);
    let lo_ts = q.since_us.unwrap_or(i64::MIN);
    let (dim, value) = if let Some(ns) = &q.namespace {
        (Dim::Namespace, value_hash(ns))
    } else if let Some((_, name)) = &q.workload {
        (Dim::Workload, value_hash(name))
    } else {
        (Dim::Time, 0)
    };
    let (lo, top) = (incident_bucket(lo_ts), top_bucket(hi_ts, hi_id));
    let mut ranges = Vec::with_capacity(ids.len());
    if lo <= top {
        for c in &ids {
            ranges.push(index.range(index_key(dim, *c, value, lo, 0)..=index_key(dim, *c, value, top, u64::MAX))?);
        }
    }
    let mut items = Vec::new();
    let mut last_item = None;
    let (exhausted, last_bucket) = walk_buckets(ranges, |bucket| {
        // A bucket's entries are in id order: order them by time (the index
        // has it), then read records newest first until the page is full.
        bucket.retain(|at| at.0 >= lo_ts && *at < (hi_ts, hi_id));
        bucket.sort_unstable_by_key(|at| std::cmp::Reverse(*at));
        for &(ts_us, id) in bucket.iter() {
            let Some(bytes) = table.get(id)? else { continue };
            let rec: IncidentRecord = decode(bytes.value())?;
            let active = incidents::is_active(rec.last_seen_us, q.now_us, q.active_window);
            let matches = q.namespace.as_ref().is_none_or(|v| *v == rec.namespace)
                && workload_matches(&q.workload, &rec.workload)
                && q.incident_type.is_none_or(|t| t.code() == rec.incident_type)
                && q.active.is_none_or(|a| a == active);
            if matches && let Some(cluster) = clusters.get(&rec.cluster) {
                items.push(incident_view(id, rec, cluster, q.now_us, q.active_window));
                last_item = Some(Position { ts_us, id });
                if items.len() == q.limit {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    })?;
    let next = if items.len() == q.limit {
        last_item
    } else if exhausted {
        // Everything from the last bucket read on is done.
        last_bucket.map(|ts_us| Position { ts_us, id: 0 })
    } else {
        None
    };
    Ok(Page { items, next })
}

/// One incident.
pub(super) fn incident(
    txn: &ReadTransaction,
    id: u64,
    now_us: i64,
    window: std::time::Duration,
) -> Result<Option<IncidentView>> {
    let clusters = cluster_map(txn)?;
    let table = match txn.open_table(INCIDENTS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Some(bytes) = table.get(id)? else { return Ok(None) };
    let rec: IncidentRecord = decode(bytes.value())?;
    Ok(clusters
        .get(&rec.cluster)
        .map(|cluster| incident_view(id, rec, cluster, now_us, window)))
}

/// Every agent record.
pub(super) fn agents(txn: &ReadTransaction) -> Result<Vec<AgentRecord>> {
    let table = match txn.open_table(AGENTS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for row in table.iter()? {
        out.push(decode(row?.1.value())?);
    }
    Ok(out)
}

/// Every cluster with its agents.
pub(super) fn clusters(txn: &ReadTransaction) -> Result<Vec<ClusterView>> {
    let mut by_name: Vec<ClusterView> = cluster_map(txn)?
        .into_values()
        .map(|c| ClusterView {
            cluster: c.name,
            tenant: c.tenant,
            events_stored: c.events_stored,
            occurrences: c.occurrences,
            last_ingest: c.last_ingest_us.map(ts),
            agents: Vec::new(),
        })
        .collect();
    by_name.sort_by(|a, b| a.cluster.cmp(&b.cluster));
    for agent in agents(txn)? {
        if let Some(view) = by_name.iter_mut().find(|c| c.cluster == agent.cluster) {
            view.agents.push(AgentView {
                agent_id: agent.agent_id,
                version: agent.version,
                last_seen: agent.last_seen_us.map(ts),
                cert_expires: ts(agent.cert_not_after_us),
                revoked: agent.revoked_us.is_some(),
                dropped_total: agent.dropped_total,
            });
        }
    }
    Ok(by_name)
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        Self::Storage(e.to_string())
    }
}
