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

use super::schema::{DedupEntry, DedupKey, DedupValue};
use foldhash::HashMap;
use redb::{ReadableTable, Table};

/// Bytes one remembered key costs, about: the key, its entry and the map's
/// own overhead.
const BYTES_PER_KEY: usize = 64;

type DedupTable<'t> = Table<'t, DedupKey, DedupValue>;

/// The order-preserving time part of a dedup key.
fn key_time(key: &DedupKey) -> u64 {
    let mut t = [0u8; 8];
    t.copy_from_slice(&key.0[4..12]);
    u64::from_be_bytes(t)
}

fn key_cluster(key: &DedupKey) -> u32 {
    u32::from_be_bytes([key.0[0], key.0[1], key.0[2], key.0[3]])
}

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
    fn load(&mut self, table: &DedupTable<'_>) -> super::Result<()> {
        let mut upper: Option<DedupKey> = None;
        loop {
            let last = match &upper {
                None => table.last()?.map(|(k, _)| k.value()),
                Some(below) => table
                    .range::<DedupKey>(..*below)?
                    .next_back()
                    .transpose()?
                    .map(|(k, _)| k.value()),
            };
            let Some(key) = last else { break };
            let cluster = key_cluster(&key);
            self.floors.insert(cluster, key_time(&key).saturating_add(1));
            let mut start = [0u8; 28];
            start[..4].copy_from_slice(&cluster.to_be_bytes());
            upper = Some(super::schema::BytesKey(start));
        }
        self.loaded = true;
        Ok(())
    }

    /// The stored entry of `key`.
    pub fn get(&mut self, table: &DedupTable<'_>, key: DedupKey) -> super::Result<Option<DedupEntry>> {
        if !self.loaded {
            self.load(table)?;
        }
        if key_time(&key) >= self.floor(key_cluster(&key)) {
            return Ok(self.entries.get(&key).copied());
        }
        Ok(table.get(key)?.map(|v| DedupEntry::from_bytes(v.value())))
    }

    /// Stores `entry` for `key`.
    pub fn insert(&mut self, table: &mut DedupTable<'_>, key: DedupKey, entry: DedupEntry) -> super::Result<()> {
        if !self.loaded {
            self.load(table)?;
        }
        table.insert(key, entry.to_bytes())?;
        if key_time(&key) >= self.floor(key_cluster(&key)) {
            self.entries.insert(key, entry);
            if self.entries.len() > self.capacity {
                self.drop_older_half();
            }
        }
        Ok(())
    }

    /// Deletes `key`.
    pub fn remove(&mut self, table: &mut DedupTable<'_>, key: DedupKey) -> super::Result<()> {
        table.remove(key)?;
        self.entries.remove(&key);
        Ok(())
    }

    fn drop_older_half(&mut self) {
        let mut times: Vec<u64> = self.entries.keys().map(key_time).collect();
        let middle = times.len() / 2;
        let (_, &mut cut, _) = times.select_nth_unstable(middle);
        // Keys at the cut stay: "at or above the floor" must stay complete.
        self.global_floor = self.global_floor.max(cut);
        let floor = self.global_floor;
        let floors = &self.floors;
        self.entries
            .retain(|k, _| key_time(k) >= floor.max(floors.get(&key_cluster(k)).copied().unwrap_or(0)));
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
    use super::super::schema::{DEDUP, dedup_key};
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
            let mut table = txn.open_table(DEDUP).unwrap();
            let mut model = BTreeMap::new();
            let mut recent = Recent::new(capacity);
            // Keys stored before the writer started, straight into the table.
            for op in before {
                if let Op::Insert { cluster, ts, uid, count } = op {
                    let key = dedup_key(cluster, ts, &uid.to_string());
                    let entry = DedupEntry { seq: u64::from(uid), count, segment: cluster };
                    table.insert(key, entry.to_bytes()).unwrap();
                    model.insert(key, entry);
                }
            }
            for op in ops {
                match op {
                    Op::Insert { cluster, ts, uid, count } => {
                        let key = dedup_key(cluster, ts, &uid.to_string());
                        let entry = DedupEntry { seq: u64::from(uid), count, segment: cluster };
                        recent.insert(&mut table, key, entry).unwrap();
                        model.insert(key, entry);
                    }
                    Op::Remove { cluster, ts, uid } => {
                        let key = dedup_key(cluster, ts, &uid.to_string());
                        recent.remove(&mut table, key).unwrap();
                        model.remove(&key);
                    }
                    Op::Get { cluster, ts, uid } => {
                        let key = dedup_key(cluster, ts, &uid.to_string());
                        prop_assert_eq!(recent.get(&table, key).unwrap(), model.get(&key).copied());
                    }
                    Op::Forget => recent.forget(),
                }
                prop_assert!(recent.len() <= capacity);
            }
        }
    }
}
