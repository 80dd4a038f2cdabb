//! The dedup table (invariant 4) in chunks: sorted runs of up to
//! [`CHUNK_ENTRIES`] keys with their entries per redb row, each row keyed by
//! its first key.
//!
//! One row per event made the dedup insert a sixth of the writer's work (a
//! B-tree insert per new event) and left its pages half empty (redb splits
//! leaves in the middle, and keys arrive in order): 88 bytes per event. New
//! keys arrive nearly in order (`first_seen` leads the key), so a commit now
//! rewrites the last chunk of each cluster and appends full ones: about one
//! row write per hundred new events, at about 27 bytes per entry.
//!
//! A transaction's changes wait in [`Changes`], sorted, and are merged into
//! the chunks they fall in at its end ([`Changes::flush`]), each touched
//! chunk read and written once. Lookups see those changes first.

use super::postings::{get_varint, put_varint};
use super::schema::{BytesKey, DecodeError, DedupEntry, DedupKey, dedup_key_cluster, dedup_key_time};
use super::{Result, StoreError};
use redb::{ReadableTable, Table, TableDefinition};
use std::collections::BTreeMap;
use std::ops::Bound;

/// Dedup chunks by their first key.
pub const DEDUP_CHUNKS: TableDefinition<DedupKey, &[u8]> = TableDefinition::new("event_dedup");

/// Most keys one chunk holds.
#[cfg(not(test))]
const CHUNK_ENTRIES: usize = 128;
/// Tiny chunks in unit tests, so that a few dozen keys span many.
#[cfg(test)]
const CHUNK_ENTRIES: usize = 4;

/// The table as the writer opens it.
pub type ChunkTable<'t> = Table<'t, DedupKey, &'static [u8]>;

/// One stored key with its entry.
type Item = (DedupKey, DedupEntry);

/// The dedup changes of one transaction: `None` deletes the key.
///
/// It also keeps the last chunk a lookup decoded. The table does not change
/// while a `Changes` lives (its own [`Changes::flush`] consumes it), and
/// lookups on disk come in key order when an agent replays its spool, so
/// most of them find their key in that chunk instead of decoding it again.
#[derive(Default)]
pub struct Changes {
    changes: BTreeMap<DedupKey, Option<DedupEntry>>,
    /// The last chunk decoded by [`Changes::get`], whole.
    last_chunk: Vec<Item>,
}

impl Changes {
    /// The entry of `key`, counting this transaction's changes.
    pub fn get(
        &mut self,
        table: &impl ReadableTable<DedupKey, &'static [u8]>,
        key: DedupKey,
    ) -> Result<Option<DedupEntry>> {
        if let Some(change) = self.changes.get(&key) {
            return Ok(*change);
        }
        // Chunks are disjoint sorted runs: a key between the first and the
        // last of one is in that chunk or nowhere.
        let cached = match (self.last_chunk.first(), self.last_chunk.last()) {
            (Some((first, _)), Some((last, _))) => *first <= key && key <= *last,
            _ => false,
        };
        if !cached {
            let Some(row) = table.range(..=key)?.next_back() else {
                return Ok(None);
            };
            self.last_chunk = decode_chunk(row?.1.value())?;
        }
        let chunk = &self.last_chunk;
        Ok(chunk.binary_search_by(|(k, _)| k.cmp(&key)).ok().map(|i| chunk[i].1))
    }

    /// Stores `entry` for `key`.
    pub fn insert(&mut self, key: DedupKey, entry: DedupEntry) {
        self.changes.insert(key, Some(entry));
    }

    /// Deletes `key`.
    pub fn remove(&mut self, key: DedupKey) {
        self.changes.insert(key, None);
    }

    /// Merges the changes into the chunks they fall in.
    pub fn flush(self, table: &mut ChunkTable<'_>) -> Result<()> {
        let mut changes = self.changes.into_iter().peekable();
        while let Some(&(first, _)) = changes.peek() {
            let (start, mut items, end) = chunk_of(table, first)?;
            let mut mine = Vec::new();
            while let Some((key, change)) = changes.next_if(|(k, _)| end.is_none_or(|e| *k < e)) {
                mine.push((key, change));
            }
            items = merge(items, mine);
            if let Some(s) = start {
                table.remove(s)?;
            }
            let mut buf = Vec::new();
            for piece in items.chunks(CHUNK_ENTRIES) {
                buf.clear();
                encode_chunk(&mut buf, piece);
                table.insert(piece[0].0, buf.as_slice())?;
            }
        }
        Ok(())
    }
}

/// The chunk `key` falls in (the last one starting at or before it, else the
/// first one, which then starts later): its first key, its items, and where
/// the next chunk starts. An empty table has no chunk.
fn chunk_of(table: &ChunkTable<'_>, key: DedupKey) -> Result<(Option<DedupKey>, Vec<Item>, Option<DedupKey>)> {
    let found = match table.range(..=key)?.next_back() {
        Some(row) => Some(row?),
        None => table.first()?,
    };
    let Some((start, bytes)) = found else {
        return Ok((None, Vec::new(), None));
    };
    let start = start.value();
    let items = decode_chunk(bytes.value())?;
    let end = table
        .range::<DedupKey>((Bound::Excluded(start), Bound::Unbounded))?
        .next()
        .transpose()?
        .map(|(k, _)| k.value());
    Ok((Some(start), items, end))
}

/// `items` (sorted) with `changes` (sorted) applied.
fn merge(items: Vec<Item>, changes: Vec<(DedupKey, Option<DedupEntry>)>) -> Vec<Item> {
    let mut out = Vec::with_capacity(items.len() + changes.len());
    let mut changes = changes.into_iter().peekable();
    for (key, entry) in items {
        while let Some((k, change)) = changes.next_if(|(k, _)| *k < key) {
            out.extend(change.map(|e| (k, e)));
        }
        match changes.next_if(|(k, _)| *k == key) {
            Some((_, change)) => out.extend(change.map(|e| (key, e))),
            None => out.push((key, entry)),
        }
    }
    out.extend(changes.filter_map(|(k, change)| change.map(|e| (k, e))));
    out
}

/// The newest stored key below `bound` (the newest of all without one).
pub fn last_below(
    table: &impl ReadableTable<DedupKey, &'static [u8]>,
    bound: Option<DedupKey>,
) -> Result<Option<DedupKey>> {
    let row = match bound {
        Some(b) => table.range(..b)?.next_back(),
        None => table.last()?.map(Ok),
    };
    let Some(row) = row else { return Ok(None) };
    let (_, bytes) = row?;
    let items = decode_chunk(bytes.value())?;
    Ok(items
        .into_iter()
        .map(|(k, _)| k)
        .rfind(|k| bound.is_none_or(|b| *k < b)))
}

fn corrupt() -> StoreError {
    StoreError::Corrupt(DecodeError::truncated())
}

/// `[count]`, then per item: the cluster's difference to the previous
/// item's, the time (as the difference to the previous one within a
/// cluster), the uid hash, and the entry's three numbers.
fn encode_chunk(out: &mut Vec<u8>, items: &[Item]) {
    put_varint(out, items.len() as u64);
    let mut prev: Option<&DedupKey> = None;
    for (key, entry) in items {
        let (cluster, time) = (dedup_key_cluster(key), dedup_key_time(key));
        match prev {
            Some(p) if dedup_key_cluster(p) == cluster => {
                put_varint(out, 0);
                put_varint(out, time - dedup_key_time(p));
            }
            Some(p) => {
                put_varint(out, u64::from(cluster - dedup_key_cluster(p)));
                put_varint(out, time);
            }
            None => {
                put_varint(out, u64::from(cluster));
                put_varint(out, time);
            }
        }
        out.extend_from_slice(&key.0[12..]);
        put_varint(out, entry.seq);
        put_varint(out, u64::from(entry.count));
        put_varint(out, u64::from(entry.segment));
        prev = Some(key);
    }
}

fn get_item(bytes: &mut &[u8], prev: Option<DedupKey>) -> Result<Item> {
    let mut num = || get_varint(bytes).ok_or_else(corrupt);
    let cluster_step = num()?;
    let time_part = num()?;
    let (cluster, time) = match prev {
        Some(p) if cluster_step == 0 => (
            dedup_key_cluster(&p),
            dedup_key_time(&p).checked_add(time_part).ok_or_else(corrupt)?,
        ),
        Some(p) => (
            u32::try_from(u64::from(dedup_key_cluster(&p)) + cluster_step).map_err(|_| corrupt())?,
            time_part,
        ),
        None => (u32::try_from(cluster_step).map_err(|_| corrupt())?, time_part),
    };
    let (hash, rest) = bytes.split_at_checked(16).ok_or_else(corrupt)?;
    *bytes = rest;
    let mut key = [0u8; 28];
    key[..4].copy_from_slice(&cluster.to_be_bytes());
    key[4..12].copy_from_slice(&time.to_be_bytes());
    key[12..].copy_from_slice(hash);
    let mut num = || get_varint(bytes).ok_or_else(corrupt);
    let seq = num()?;
    let count = u32::try_from(num()?).map_err(|_| corrupt())?;
    let segment = u32::try_from(num()?).map_err(|_| corrupt())?;
    Ok((BytesKey(key), DedupEntry { seq, count, segment }))
}

fn decode_chunk(mut bytes: &[u8]) -> Result<Vec<Item>> {
    let n = get_varint(&mut bytes).ok_or_else(corrupt)?;
    // Each item takes at least 21 bytes: never trust a count past the data.
    let mut out = Vec::with_capacity((n as usize).min(bytes.len() / 21));
    let mut prev = None;
    for _ in 0..n {
        let item = get_item(&mut bytes, prev)?;
        prev = Some(item.0);
        out.push(item);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::schema::{dedup_key, dedup_key_hashed};
    use super::*;
    use proptest::prelude::*;

    fn entry(seq: u64) -> DedupEntry {
        DedupEntry {
            seq,
            count: (seq % 7) as u32 + 1,
            segment: (seq % 3) as u32,
        }
    }

    proptest! {
        /// Chunks round-trip any sorted items, and damaged bytes are an
        /// error, never a panic.
        #[test]
        fn chunks_round_trip_and_refuse_damage(
            keys in prop::collection::btree_set((0u32..4, any::<i64>(), any::<u16>()), 1..40),
            cut in any::<prop::sample::Index>(),
            flip in any::<(prop::sample::Index, u8)>(),
        ) {
            let items: Vec<Item> = keys
                .iter()
                .map(|(c, t, u)| (dedup_key(*c, *t, &u.to_string()), entry(u64::from(*u))))
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect();
            let mut buf = Vec::new();
            encode_chunk(&mut buf, &items);
            prop_assert_eq!(decode_chunk(&buf).unwrap(), items);
            let _ = decode_chunk(&buf[..cut.index(buf.len())]);
            let mut bad = buf.clone();
            let i = flip.0.index(bad.len());
            bad[i] ^= flip.1 | 1;
            let _ = decode_chunk(&bad);
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put(u32, i64, u8, u64),
        Remove(u32, i64, u8),
        Commit,
    }

    fn op() -> impl Strategy<Value = Op> {
        let k = (0u32..3, -20i64..60, 0u8..6);
        prop_oneof![
            6 => (k.clone(), 1u64..1000).prop_map(|((c, t, u), s)| Op::Put(c, t, u, s)),
            2 => k.prop_map(|(c, t, u)| Op::Remove(c, t, u)),
            1 => Just(Op::Commit),
        ]
    }

    proptest! {
        /// Through inserts, overwrites and deletes over many commits, every
        /// lookup and the newest key per cluster are what a plain map says,
        /// and no chunk exceeds its bound or is left empty.
        #[test]
        fn chunks_answer_what_a_map_holds(ops in prop::collection::vec(op(), 1..150)) {
            let dir = tempfile::tempdir().unwrap();
            let db = redb::Database::create(dir.path().join("d.redb")).unwrap();
            let mut model = BTreeMap::new();
            let mut changes = Changes::default();
            let txn = db.begin_write().unwrap();
            let mut table = txn.open_table(DEDUP_CHUNKS).unwrap();
            let mut probes = Vec::new();
            for op in ops {
                match op {
                    Op::Put(c, t, u, s) => {
                        let key = dedup_key(c, t, &u.to_string());
                        changes.insert(key, entry(s));
                        model.insert(key, entry(s));
                        probes.push(key);
                    }
                    Op::Remove(c, t, u) => {
                        let key = dedup_key(c, t, &u.to_string());
                        changes.remove(key);
                        model.remove(&key);
                        probes.push(key);
                    }
                    Op::Commit => std::mem::take(&mut changes).flush(&mut table).unwrap(),
                }
                for key in &probes {
                    prop_assert_eq!(changes.get(&table, *key).unwrap(), model.get(key).copied());
                }
            }
            changes.flush(&mut table).unwrap();
            let mut fresh = Changes::default();
            for key in &probes {
                prop_assert_eq!(fresh.get(&table, *key).unwrap(), model.get(key).copied());
            }
            for row in table.iter().unwrap() {
                let (start, bytes) = row.unwrap();
                let items = decode_chunk(bytes.value()).unwrap();
                prop_assert!(!items.is_empty() && items.len() <= CHUNK_ENTRIES);
                prop_assert_eq!(items[0].0, start.value());
            }
            prop_assert_eq!(last_below(&table, None).unwrap(), model.keys().next_back().copied());
            for c in 0u32..4 {
                let bound = dedup_key_hashed(c, i64::MIN, 0);
                prop_assert_eq!(last_below(&table, Some(bound)).unwrap(), model.range(..bound).next_back().map(|(k, _)| *k));
            }
        }
    }
}
