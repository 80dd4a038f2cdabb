//! The writer's memory of recent dedup keys, so that a new event costs no
//! dedup lookup in redb (issue 7: fewer B-tree operations per event).
//!
//! For each cluster it keeps a *floor*: every key of that cluster whose
//! `first_seen` is at or above the floor is in memory, so a key above the
//! floor that memory lacks is not stored at all. When the store opens, a
//! cluster's floor is just past its newest stored key, and every key written
//! from then on is kept, up to a bound: past it, the floors rise past the
//! older half, which is dropped. Keys below a floor are looked up in redb as
//! before. Memory is bounded by the capacity, never by what is stored
//! (invariant 6).
//!
//! Every change to the dedup table goes through here, so memory and table
//! never disagree; after a failed commit the writer calls [`Recent::forget`]
//! and the floors are read again from what was committed.

use super::dedup::{self, Changes, ChunkTable};
use super::schema::{DedupEntry, DedupKey, dedup_key_cluster, dedup_key_hashed, dedup_key_time};
use foldhash::HashMap;

/// Bytes one remembered key costs, about: the key, its entry and the map's
/// own overhead.
const BYTES_PER_KEY: usize = 64;

/// Recent dedup keys of every cluster, with the floor above which memory is complete.
pub struct Recent {
    entries: HashMap<DedupKey, DedupEntry>,
    /// Per cluster: keys at or above this time are all in `entries`.
    floors: HashMap<u32, u64>,
    /// Raised for every cluster when the older half is dropped.
    global_floor: u64,
    /// Whether `floors` were read from the table since the last [`Recent::forget`].
    loaded: bool,
    capacity: usize,
}

impl Recent {
    /// Remembers at most `capacity` keys (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::default(),
            floors: HashMap::default(),
            global_floor: 0,
            loaded: false,
            capacity: capacity.max(1),
        }
    }

    /// Remembers as many keys as an eighth of a page cache of `cache_bytes` holds.
    pub fn for_cache(cache_bytes: usize) -> Self {
        Self::new(cache_bytes / 8 / BYTES_PER_KEY)
    }

    /// Drops everything: the next lookup reads the floors from the table.
    pub fn forget(&mut self) {
        self.entries = HashMap::default();
        self.floors.clear();
        self.global_floor = 0;
        self.loaded = false;
    }

    fn floor(&self, cluster: u32) -> u64 {
        // A cluster without a floor had no key when the floors were read:
        // every key of it since is in memory.
        self.floors.get(&cluster).copied().unwrap_or(0).max(self.global_floor)
    }

    /// Sets each cluster's floor just past its newest stored key.
    fn load(&mut self, table: &ChunkTable<'_>) -> super::Result<()> {
        let mut upper: Option<DedupKey> = None;
        while let Some(key) = dedup::last_below(table, upper)? {
            let cluster = dedup_key_cluster(&key);
            self.floors.insert(cluster, dedup_key_time(&key).saturating_add(1));
            // The smallest key of that cluster: the next search stays below it.
            upper = Some(dedup_key_hashed(cluster, i64::MIN, 0));
        }
        self.loaded = true;
        Ok(())
    }

    /// The stored entry of `key`, counting the transaction's `changes`.
    pub fn get(
        &mut self,
        table: &ChunkTable<'_>,
        changes: &mut Changes,
        key: DedupKey,
    ) -> super::Result<Option<DedupEntry>> {
        if !self.loaded {
            self.load(table)?;
        }
        if dedup_key_time(&key) >= self.floor(dedup_key_cluster(&key)) {
            return Ok(self.entries.get(&key).copied());
        }
        changes.get(table, key)
    }

    /// Stores `entry` for `key` (in the transaction's `changes`).
    pub fn insert(
        &mut self,
        table: &ChunkTable<'_>,
        changes: &mut Changes,
        key: DedupKey,
        entry: DedupEntry,
    ) -> super::Result<()> {
        if !self.loaded {
            self.load(table)?;
        }
        changes.insert(key, entry);
        if dedup_key_time(&key) >= self.floor(dedup_key_cluster(&key)) {
            self.entries.insert(key, entry);
            if self.entries.len() > self.capacity {
                self.drop_older_half();
            }
        }
        Ok(())
    }

    /// Deletes `key`.
    pub fn remove(&mut self, changes: &mut Changes, key: DedupKey) {
        changes.remove(key);
        self.entries.remove(&key);
    }

    fn drop_older_half(&mut self) {
        let mut times: Vec<u64> = self.entries.keys().map(dedup_key_time).collect();
        let middle = times.len() / 2;
        let (_, &mut cut, _) = times.select_nth_unstable(middle);
        // Keys at the cut stay: "at or above the floor" must stay complete.
        self.global_floor = self.global_floor.max(cut);
        let floor = self.global_floor;
        let floors = &self.floors;
        self.entries
            .retain(|k, _| dedup_key_time(k) >= floor.max(floors.get(&dedup_key_cluster(k)).copied().unwrap_or(0)));
        if self.entries.len() > self.capacity {
            // All at one instant: keep none rather than exceed the bound.
            self.global_floor = cut.saturating_add(1);
            self.entries.clear();
        }
        self.entries.shrink_to(self.capacity);
    }

    /// Keys in memory, for tests.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::dedup::DEDUP_CHUNKS;
    use super::super::schema::dedup_key;
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Insert { cluster: u32, ts: i64, uid: u8, count: u32 },
        Remove { cluster: u32, ts: i64, uid: u8 },
        Get { cluster: u32, ts: i64, uid: u8 },
        Forget,
    }

    fn op() -> impl Strategy<Value = Op> {
        let k = (0u32..3, -5i64..40, 0u8..4);
        prop_oneof![
            4 => (k.clone(), 1u32..9).prop_map(|((cluster, ts, uid), count)| Op::Insert { cluster, ts, uid, count }),
            1 => k.clone().prop_map(|(cluster, ts, uid)| Op::Remove { cluster, ts, uid }),
            4 => k.prop_map(|(cluster, ts, uid)| Op::Get { cluster, ts, uid }),
            1 => Just(Op::Forget),
        ]
    }

    proptest! {
        /// Whatever memory holds or forgets, every answer is the table's.
        #[test]
        fn lookups_answer_what_the_table_holds(
            before in prop::collection::vec(op(), 0..20),
            ops in prop::collection::vec(op(), 1..200),
            capacity in 1usize..40,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let db = redb::Database::create(dir.path().join("r.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            let mut table = txn.open_table(DEDUP_CHUNKS).unwrap();
            let mut model = BTreeMap::new();
            let mut recent = Recent::new(capacity);
            // Keys stored before the writer started, straight into the table.
            let mut stored = Changes::default();
            for op in before {
                if let Op::Insert { cluster, ts, uid, count } = op {
                    let key = dedup_key(cluster, ts, &uid.to_string());
                    let entry = DedupEntry { seq: u64::from(uid), count, segment: cluster };
                    stored.insert(key, entry);
                    model.insert(key, entry);
                }
            }
            stored.flush(&mut table).unwrap();
            let mut changes = Changes::default();
            for op in ops {
                match op {
                    Op::Insert { cluster, ts, uid, count } => {
                        let key = dedup_key(cluster, ts, &uid.to_string());
                        let entry = DedupEntry { seq: u64::from(uid), count, segment: cluster };
                        recent.insert(&table, &mut changes, key, entry).unwrap();
                        model.insert(key, entry);
                    }
                    Op::Remove { cluster, ts, uid } => {
                        let key = dedup_key(cluster, ts, &uid.to_string());
                        recent.remove(&mut changes, key);
                        model.remove(&key);
                    }
                    Op::Get { cluster, ts, uid } => {
                        let key = dedup_key(cluster, ts, &uid.to_string());
                        prop_assert_eq!(recent.get(&table, &mut changes, key).unwrap(), model.get(&key).copied());
                    }
                    // The writer forgets after a failed commit, which loses
                    // the transaction's changes; here they are committed
                    // first, so the model stays right.
                    Op::Forget => {
                        std::mem::take(&mut changes).flush(&mut table).unwrap();
                        recent.forget();
                    }
                }
                prop_assert!(recent.len() <= capacity);
            }
        }
    }
}
