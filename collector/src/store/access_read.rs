//! Reads of the access-control state: tokens, API keys and the audit log.

use super::reader::{MAX_SCAN, Page, Position};
use super::schema::{AUDIT, AuditRecord, decode};
use super::{Result, StoreError};
use redb::{ReadTransaction, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;

/// Filters of an audit log query.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only entries of this tenant; `None` for every entry.
    pub tenant: Option<String>,
    /// Page size.
    pub limit: usize,
    /// Continue with entries older than this position (its `id` is the sequence number).
    pub after: Option<Position>,
}

type KvDef = TableDefinition<'static, &'static str, &'static [u8]>;

fn missing<T>(e: redb::TableError, empty: T) -> Result<T> {
    match e {
        redb::TableError::TableDoesNotExist(_) => Ok(empty),
        e => Err(StoreError::from(e)),
    }
}

/// One record by key.
pub(super) fn get<T: DeserializeOwned>(txn: &ReadTransaction, def: KvDef, key: &str) -> Result<Option<T>> {
    let table = match txn.open_table(def) {
        Ok(t) => t,
        Err(e) => return missing(e, None),
    };
    match table.get(key)? {
        Some(bytes) => Ok(Some(decode(bytes.value())?)),
        None => Ok(None),
    }
}

/// Every record of a small table.
pub(super) fn all<T: DeserializeOwned>(txn: &ReadTransaction, def: KvDef) -> Result<Vec<T>> {
    let table = match txn.open_table(def) {
        Ok(t) => t,
        Err(e) => return missing(e, Vec::new()),
    };
    let mut out = Vec::new();
    for row in table.iter()? {
        out.push(decode(row?.1.value())?);
    }
    Ok(out)
}

/// A page of the audit log, newest first; examines at most [`MAX_SCAN`] entries.
pub(super) fn audit(txn: &ReadTransaction, q: &AuditQuery) -> Result<Page<(u64, AuditRecord)>> {
    let empty = Page {
        items: Vec::new(),
        next: None,
    };
    let table = match txn.open_table(AUDIT) {
        Ok(t) => t,
        Err(e) => return missing(e, empty),
    };
    let upper = q.after.map_or(u64::MAX, |p| p.id);
    let mut items = Vec::new();
    let mut next = None;
    for (seen, row) in table.range(..upper)?.rev().enumerate() {
        let (seq, bytes) = row?;
        let seq = seq.value();
        let position = Some(Position { ts_us: 0, id: seq });
        if seen == MAX_SCAN {
            // Out of budget: go on from the entry before this one next time.
            next = Some(Position { ts_us: 0, id: seq + 1 });
            break;
        }
        let rec: AuditRecord = decode(bytes.value())?;
        if q.tenant.is_none() || rec.tenant == q.tenant {
            items.push((seq, rec));
            if items.len() == q.limit {
                next = position;
                break;
            }
        }
    }
    Ok(Page { items, next })
}
