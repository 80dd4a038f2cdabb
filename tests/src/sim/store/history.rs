//! The watch-cache side of the store: changes since a resourceVersion, expiry checks,
//! compaction, and consistent snapshots at a past resourceVersion for `continue` pages.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use super::{Change, Key, Kind, Snapshot, State, StoreError};

impl State {
    /// Changes of `kind` after `rv`, at most `max`; `Expired` when `rv` left the window.
    pub(crate) fn changes_after(&self, kind: Kind, rv: u64, max: usize) -> Result<Vec<Change>, StoreError> {
        let table = self.table(kind);
        if rv < table.floor {
            return Err(StoreError::Expired(table.floor));
        }
        let start = table.history.partition_point(|c| c.rv <= rv);
        Ok(table.history.range(start..).take(max).cloned().collect())
    }

    /// Whether a watch or list from `rv` can no longer be served.
    pub(crate) fn is_expired(&self, kind: Kind, rv: u64) -> Option<u64> {
        let floor = self.table(kind).floor;
        (rv < floor).then_some(floor)
    }

    /// Forgets changes recorded before `cutoff` (etcd's periodic compaction).
    pub(crate) fn compact_before(&mut self, cutoff: Instant) {
        for table in &mut self.tables {
            while table.history.front().is_some_and(|c| c.at < cutoff) {
                if let Some(old) = table.history.pop_front() {
                    table.floor = old.rv;
                }
            }
        }
    }

    /// Forgets all history, as if etcd compacted at the current revision.
    pub(crate) fn compact_all(&mut self) {
        let rv = self.rv;
        for table in &mut self.tables {
            table.history.clear();
            table.floor = rv;
        }
    }

    /// Objects of `kind` as they were at `at` (or now), with key greater than `after`,
    /// in key order. Reconstructed from the change history.
    pub(crate) fn snapshot_at(
        &self,
        kind: Kind,
        at: Option<u64>,
        after: Option<&Key>,
        namespace: Option<&str>,
    ) -> Result<Vec<Arc<Snapshot>>, StoreError> {
        let table = self.table(kind);
        let in_range = |k: &Key| after.is_none_or(|a| k > a) && namespace.is_none_or(|ns| k.0 == ns);
        let at = match at {
            Some(at) if at < self.rv => at,
            _ => {
                return Ok(table
                    .objects
                    .iter()
                    .filter(|(k, _)| in_range(k))
                    .map(|(_, e)| e.snap.clone())
                    .collect());
            }
        };
        if at < table.floor {
            return Err(StoreError::Expired(table.floor));
        }
        // The first change after `at` to a key tells its state at `at`.
        let start = table.history.partition_point(|c| c.rv <= at);
        let mut overrides: HashMap<&Key, Option<Arc<Snapshot>>> = HashMap::new();
        for change in table.history.range(start..) {
            overrides.entry(&change.obj.key).or_insert_with(|| change.prev.clone());
        }
        let mut out: BTreeMap<&Key, Arc<Snapshot>> = BTreeMap::new();
        for (k, e) in &table.objects {
            if in_range(k) && !overrides.contains_key(k) {
                out.insert(k, e.snap.clone());
            }
        }
        for (k, prev) in overrides {
            if let Some(prev) = prev
                && in_range(k)
            {
                out.insert(k, prev);
            }
        }
        Ok(out.into_values().collect())
    }
}
