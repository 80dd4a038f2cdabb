//! The event indexes: posting lists in time segments.
//!
//! An index entry says "event `seq` has this value in this dimension, and
//! was last seen at `ts`". Entries are not one B-tree key each: all entries
//! of one `(dimension, cluster, value)` in one *segment* share a key, and its
//! value is the list of `(ts, seq)`, newest first, delta-encoded.
//!
//! A segment is the stretch of the store written while it was current; the
//! writer opens a new one every [`SEGMENT_EVENTS`] entries. The segment comes
//! first in the key, so a commit rewrites only keys of the current segment:
//! a few hundred pages whatever the size of the store, which is what keeps
//! ingest flat as the store grows. A query walks the segments overlapping
//! its time window, one point lookup each, and merges their lists.
//!
//! When an event is seen again its entries move: removed from the list they
//! were in, added to the current segment with the new `ts`. Every entry is
//! therefore exact, and a segment holds precisely the events whose latest
//! occurrence was written while it was current.

use super::schema::{BytesKey, DecodeError, Dim};
use super::{Result, StoreError};
use foldhash::{HashMap, HashMapExt};
use redb::{ReadableTable, Table, TableDefinition};
use smallvec::SmallVec;

/// Posting lists by [`PostingKey`].
pub const POSTINGS: TableDefinition<PostingKey, &[u8]> = TableDefinition::new("event_postings");
/// Segment bounds: id → `[min ts][max ts][events]`, see [`SegmentInfo`].
pub const SEGMENTS: TableDefinition<u32, [u8; 24]> = TableDefinition::new("event_segments");

/// How many events (time-dimension entries) a segment takes before the
/// writer opens the next. Larger segments mean fewer lookups for a query
/// over a rare value; smaller ones, fewer pages rewritten per commit.
#[cfg(not(test))]
pub const SEGMENT_EVENTS: u64 = 16_384;
/// Tiny segments in unit tests, so that a few hundred events span many.
#[cfg(test)]
pub const SEGMENT_EVENTS: u64 = 16;

/// `[segment][dim][cluster][value]`, big-endian.
pub type PostingKey = BytesKey<17>;

/// The key of one posting list.
pub fn posting_key(segment: u32, dim: Dim, cluster: u32, value: u64) -> PostingKey {
    let mut key = [0u8; 17];
    key[..4].copy_from_slice(&segment.to_be_bytes());
    key[4] = dim as u8;
    key[5..9].copy_from_slice(&cluster.to_be_bytes());
    key[9..].copy_from_slice(&value.to_be_bytes());
    BytesKey(key)
}

/// The segment a posting key belongs to.
pub fn segment_of(key: &PostingKey) -> u32 {
    u32::from_be_bytes([key.0[0], key.0[1], key.0[2], key.0[3]])
}

/// The dimension byte of a posting key.
pub fn dim_of(key: &PostingKey) -> u8 {
    key.0[4]
}

/// The cluster a posting key belongs to.
pub fn cluster_of(key: &PostingKey) -> u32 {
    u32::from_be_bytes([key.0[5], key.0[6], key.0[7], key.0[8]])
}

/// One index entry; lists are sorted by `(ts_us, seq)` descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    /// The event's last-seen time, microseconds.
    pub ts_us: i64,
    /// The event's sequence number.
    pub seq: u64,
}

/// Appends `v` as LEB128.
pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Takes one LEB128 value off the front of `bytes`.
pub(super) fn get_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Encodes a list sorted newest first into `out`, replacing what it held:
/// the count, the first entry, then each entry as the difference to the one
/// before.
fn encode_list(out: &mut Vec<u8>, entries: &[Entry]) {
    out.clear();
    encode_into(out, entries, entries.len() as u64);
}

/// Writes the header of a list of `count` entries and the first of them,
/// `entries` (any further entries follow as deltas to the last of these).
fn encode_into(out: &mut Vec<u8>, entries: &[Entry], count: u64) {
    put_varint(out, count);
    let mut prev: Option<Entry> = None;
    for e in entries {
        put_entry(out, prev, *e);
        prev = Some(*e);
    }
}

/// Writes `e`: in full if it comes first, else as the difference to `prev`.
fn put_entry(out: &mut Vec<u8>, prev: Option<Entry>, e: Entry) {
    match prev {
        None => {
            put_varint(out, zigzag(e.ts_us));
            put_varint(out, e.seq);
        }
        Some(p) => {
            put_varint(out, p.ts_us.wrapping_sub(e.ts_us) as u64);
            put_varint(out, zigzag(e.seq.wrapping_sub(p.seq) as i64));
        }
    }
}

/// Reads the entry [`put_entry`] wrote after `prev`.
fn get_entry(bytes: &mut &[u8], prev: Option<Entry>) -> Result<Entry> {
    let a = get_varint(bytes).ok_or_else(corrupt)?;
    let b = get_varint(bytes).ok_or_else(corrupt)?;
    Ok(match prev {
        None => Entry {
            ts_us: unzigzag(a),
            seq: b,
        },
        Some(p) => Entry {
            ts_us: p.ts_us.wrapping_sub(a as i64),
            seq: p.seq.wrapping_add(unzigzag(b) as u64),
        },
    })
}

/// Adds `fresh` (sorted newest first) to the encoded list `bytes`, writing
/// the result to `out`, decoding only the entries at least as new as the
/// oldest of `fresh`: the older rest keeps its bytes (each entry is encoded
/// relative to the one before it). New entries are almost always the newest,
/// so a commit's cost no longer grows with the length of the lists it appends
/// to. `newer` is scratch space; both buffers are reused across lists.
fn merge_into(bytes: &[u8], fresh: &[Entry], newer: &mut Vec<Entry>, out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    let Some(&oldest_new) = fresh.last() else {
        out.extend_from_slice(bytes);
        return Ok(());
    };
    let mut rest = bytes;
    let n = get_varint(&mut rest).ok_or_else(corrupt)?;
    newer.clear();
    let mut prev: Option<Entry> = None;
    // The first entry older than every fresh one, and the bytes after it.
    let mut tail: Option<(Entry, u64, &[u8])> = None;
    for i in 0..n {
        let e = get_entry(&mut rest, prev)?;
        if e < oldest_new {
            tail = Some((e, n - i, rest));
            break;
        }
        newer.push(e);
        prev = Some(e);
    }
    newer.extend_from_slice(fresh);
    newer.sort_unstable_by(|a, b| b.cmp(a));
    newer.dedup();
    let merged = newer.as_slice();
    let Some((first_old, old_count, old_rest)) = tail else {
        encode_into(out, merged, merged.len() as u64);
        return Ok(());
    };
    out.reserve(bytes.len() + fresh.len() * 4 + 8);
    encode_into(out, merged, merged.len() as u64 + old_count);
    put_entry(out, merged.last().copied(), first_old);
    out.extend_from_slice(old_rest);
    Ok(())
}

fn corrupt() -> StoreError {
    StoreError::Corrupt(DecodeError::truncated())
}

/// Decodes a list written by [`encode_list`].
pub fn decode_list(bytes: &[u8]) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    decode_list_to(&mut out, bytes)?;
    Ok(out)
}

/// [`decode_list`] into `out`, replacing what it held.
fn decode_list_to(out: &mut Vec<Entry>, mut bytes: &[u8]) -> Result<()> {
    out.clear();
    let n = get_varint(&mut bytes).ok_or_else(corrupt)?;
    // Each entry takes at least two bytes: never trust a count past the data.
    out.reserve((n as usize).min(bytes.len() / 2));
    let mut prev: Option<Entry> = None;
    for _ in 0..n {
        let e = get_entry(&mut bytes, prev)?;
        out.push(e);
        prev = Some(e);
    }
    Ok(())
}

/// What a segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    /// No entry of the segment is older (a lower bound).
    pub min_ts: i64,
    /// No entry of the segment is newer (an upper bound).
    pub max_ts: i64,
    /// Time-dimension entries: events whose latest occurrence is here.
    pub events: u64,
}

impl SegmentInfo {
    /// Reads a [`SEGMENTS`] value.
    pub fn from_bytes(b: [u8; 24]) -> Self {
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            w
        };
        Self {
            min_ts: i64::from_be_bytes(word(0)),
            max_ts: i64::from_be_bytes(word(8)),
            events: u64::from_be_bytes(word(16)),
        }
    }

    /// The [`SEGMENTS`] value.
    pub fn to_bytes(self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&self.min_ts.to_be_bytes());
        b[8..16].copy_from_slice(&self.max_ts.to_be_bytes());
        b[16..].copy_from_slice(&self.events.to_be_bytes());
        b
    }

    /// Whether any entry may lie in `lo..=hi`.
    pub fn overlaps(&self, lo: i64, hi: i64) -> bool {
        self.events > 0 && self.max_ts >= lo && self.min_ts <= hi
    }
}

/// Every segment with its bounds.
pub fn segments(table: &impl ReadableTable<u32, [u8; 24]>) -> Result<Vec<(u32, SegmentInfo)>> {
    let mut out = Vec::new();
    for row in table.iter()? {
        let (id, info) = row?;
        out.push((id.value(), SegmentInfo::from_bytes(info.value())));
    }
    Ok(out)
}

/// The index values of one event: `(dimension, value)` pairs (at most six,
/// kept inline: this is built twice per event on the writer's hot path).
pub type Dims = SmallVec<[(Dim, u64); 6]>;

/// No further link in a chain of [`Pending`].
const END: u32 = u32::MAX;

/// One addition or removal, and the one pushed before it for the same list.
#[derive(Clone, Copy)]
struct Link {
    entry: Entry,
    next: u32,
}

/// The newest links of a list's additions and of its removals.
#[derive(Clone, Copy)]
struct Chains {
    add: u32,
    remove: u32,
}

/// Index changes of one transaction, applied together by [`Pending::flush`]
/// so that each touched list is read and written once.
///
/// Kept by the writer from one transaction to the next, so that its memory
/// is reused: the changes of every list are chains through one vector (not a
/// vector per list), and the flush decodes and encodes through the same few
/// buffers. An event's six or so index entries cost no allocation of their own.
#[derive(Default)]
pub struct Pending {
    lists: HashMap<PostingKey, Chains>,
    links: Vec<Link>,
    /// Lower bounds raised by retention: no entry older is left.
    raise_min: HashMap<u32, i64>,
    scratch: Scratch,
}

/// Buffers [`Pending::flush`] reuses for every list.
#[derive(Default)]
struct Scratch {
    keys: Vec<PostingKey>,
    fresh: Vec<Entry>,
    removed: Vec<Entry>,
    list: Vec<Entry>,
    out: Vec<u8>,
}

impl Pending {
    /// Forgets every change (of a transaction that failed, or was flushed),
    /// keeping the memory of an ordinary transaction's changes, not of the
    /// largest one ever (a retention sweep).
    pub fn clear(&mut self) {
        /// Index changes (about six per event) and lists whose buffers are kept.
        const KEPT: usize = 1 << 16;
        self.lists.clear();
        self.lists.shrink_to(KEPT / 8);
        self.links.clear();
        self.links.shrink_to(KEPT);
        self.raise_min.clear();
        let scratch = &mut self.scratch;
        scratch.keys.shrink_to(KEPT / 8);
        scratch.fresh.shrink_to(KEPT);
        scratch.removed.shrink_to(KEPT);
        scratch.list.shrink_to(KEPT);
        scratch.out.shrink_to(KEPT * 4);
    }

    /// Whether no change is waiting.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.lists.is_empty() && self.raise_min.is_empty()
    }

    /// Moves an event's entries from `old` (segment, dims, entry) to `new`;
    /// either may be absent (a new event, a deleted one). Entries present in
    /// both stay where they are.
    pub fn change(&mut self, cluster: u32, old: Option<(u32, &Dims, Entry)>, new: Option<(u32, &Dims, Entry)>) -> u32 {
        let keys = |side: Option<(u32, &Dims, Entry)>| -> SmallVec<[(PostingKey, Entry); 6]> {
            side.map(|(seg, dims, e)| {
                dims.iter()
                    .map(|(dim, value)| (posting_key(seg, *dim, cluster, *value), e))
                    .collect()
            })
            .unwrap_or_default()
        };
        let (old, new) = (keys(old), keys(new));
        let mut moved = 0;
        for item in &old {
            if !new.contains(item) {
                self.push(item.0, item.1, true);
                moved += 1;
            }
        }
        for item in &new {
            if !old.contains(item) {
                self.push(item.0, item.1, false);
            }
        }
        moved
    }

    fn push(&mut self, key: PostingKey, entry: Entry, remove: bool) {
        let at = u32::try_from(self.links.len()).expect("fewer than 2^32 index changes in one transaction");
        let chains = self.lists.entry(key).or_insert(Chains { add: END, remove: END });
        let head = if remove { &mut chains.remove } else { &mut chains.add };
        self.links.push(Link { entry, next: *head });
        *head = at;
    }

    /// The entries of the chain starting at `head`, into `out`.
    fn collect(links: &[Link], mut head: u32, out: &mut Vec<Entry>) {
        out.clear();
        while head != END {
            let link = links[head as usize];
            out.push(link.entry);
            head = link.next;
        }
    }

    /// Records that no entry of `segment` older than `ts` remains.
    pub fn raise_min(&mut self, segment: u32, ts: i64) {
        let v = self.raise_min.entry(segment).or_insert(ts);
        *v = (*v).max(ts);
    }

    /// Writes every touched list and the bounds of every touched segment,
    /// and forgets the changes.
    pub fn flush(
        &mut self,
        postings: &mut Table<'_, PostingKey, &'static [u8]>,
        segments: &mut Table<'_, u32, [u8; 24]>,
    ) -> Result<()> {
        let Scratch {
            keys,
            fresh,
            removed,
            list,
            out,
        } = &mut self.scratch;
        keys.clear();
        keys.extend(self.lists.keys().copied());
        keys.sort_unstable();
        // (min, max, events added, events removed) per segment.
        let mut bounds: HashMap<u32, (i64, i64, u64, u64)> = HashMap::new();
        for &key in keys.iter() {
            let chains = self.lists[&key];
            let time_dim = dim_of(&key) == Dim::Time as u8;
            let b = bounds.entry(segment_of(&key)).or_insert((i64::MAX, i64::MIN, 0, 0));
            Self::collect(&self.links, chains.add, fresh);
            fresh.sort_unstable_by(|a, b| b.cmp(a));
            fresh.dedup();
            if chains.remove == END {
                // Only additions: merged into the encoded list.
                for e in fresh.iter() {
                    b.0 = b.0.min(e.ts_us);
                    b.1 = b.1.max(e.ts_us);
                }
                match postings.get(key)? {
                    Some(v) => merge_into(v.value(), fresh, list, out)?,
                    None => encode_list(out, fresh),
                }
                if time_dim {
                    // Entries are never added twice (an event's entry moves
                    // only with a removal), so every fresh one is new.
                    b.2 += fresh.len() as u64;
                }
                postings.insert(key, out.as_slice())?;
                continue;
            }
            Self::collect(&self.links, chains.remove, removed);
            removed.sort_unstable();
            removed.dedup();
            let is_removed = |e: &Entry| removed.binary_search(e).is_ok();
            match postings.get(key)? {
                Some(v) => decode_list_to(list, v.value())?,
                None => list.clear(),
            }
            let before = list.len();
            list.retain(|e| !is_removed(e));
            let gone = (before - list.len()) as u64;
            fresh.retain(|e| !is_removed(e));
            for e in fresh.iter() {
                b.0 = b.0.min(e.ts_us);
                b.1 = b.1.max(e.ts_us);
            }
            if time_dim {
                b.2 += fresh.len() as u64;
                b.3 += gone;
            }
            list.extend_from_slice(fresh);
            list.sort_unstable_by(|a, b| b.cmp(a));
            list.dedup();
            if list.is_empty() {
                postings.remove(key)?;
            } else {
                encode_list(out, list);
                postings.insert(key, out.as_slice())?;
            }
        }
        for seg in self.raise_min.keys() {
            bounds.entry(*seg).or_insert((i64::MAX, i64::MIN, 0, 0));
        }
        for (seg, (min, max, added, gone)) in bounds {
            let old = segments.get(seg)?.map(|v| SegmentInfo::from_bytes(v.value()));
            let mut info = old.unwrap_or(SegmentInfo {
                min_ts: min,
                max_ts: max,
                events: 0,
            });
            info.min_ts = info.min_ts.min(min);
            info.max_ts = info.max_ts.max(max);
            if let Some(floor) = self.raise_min.get(&seg) {
                info.min_ts = info.min_ts.max(*floor);
            }
            info.events = (info.events + added).saturating_sub(gone);
            if info.events == 0 {
                segments.remove(seg)?;
            } else {
                segments.insert(seg, info.to_bytes())?;
            }
        }
        self.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(entries: &[Entry]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_list(&mut out, entries);
        out
    }

    /// [`merge_into`] with buffers of its own: the encoded merged list.
    fn merged(bytes: &[u8], fresh: &[Entry]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        merge_into(bytes, fresh, &mut Vec::new(), &mut out)?;
        Ok(out)
    }

    #[test]
    fn lists_round_trip_including_negative_times_and_unordered_sequences() {
        let list = vec![
            Entry {
                ts_us: 9_000_000,
                seq: 4,
            },
            Entry {
                ts_us: 9_000_000,
                seq: 2,
            },
            Entry { ts_us: 5, seq: 900 },
            Entry { ts_us: -7, seq: 1 },
        ];
        assert_eq!(decode_list(&encoded(&list)).unwrap(), list);
        assert_eq!(decode_list(&encoded(&[])).unwrap(), vec![]);
    }

    #[test]
    fn truncated_lists_are_reported_as_corrupt_not_misread() {
        let bytes = encoded(&[Entry { ts_us: 1, seq: 1 }, Entry { ts_us: 0, seq: 2 }]);
        for n in 0..bytes.len() {
            assert!(decode_list(&bytes[..n]).is_err(), "prefix of {n} bytes");
        }
        // A huge count with no data behind it does not allocate for it.
        let mut lying = Vec::new();
        put_varint(&mut lying, u64::MAX);
        assert!(decode_list(&lying).is_err());
    }

    proptest::proptest! {
        #[test]
        fn merging_into_an_encoded_list_equals_decoding_merging_and_encoding(
            old in proptest::collection::vec((-50i64..50, 0u64..40), 0..40),
            fresh in proptest::collection::vec((-50i64..60, 0u64..40), 1..20),
        ) {
            let sorted = |v: &[(i64, u64)]| {
                let mut v: Vec<Entry> = v.iter().map(|&(ts_us, seq)| Entry { ts_us, seq }).collect();
                v.sort_unstable_by(|a, b| b.cmp(a));
                v.dedup();
                v
            };
            let (old, fresh) = (sorted(&old), sorted(&fresh));
            let mut expected = old.clone();
            expected.extend_from_slice(&fresh);
            let expected = sorted(&expected.iter().map(|e| (e.ts_us, e.seq)).collect::<Vec<_>>());
            let merged = merged(&encoded(&old), &fresh).unwrap();
            proptest::prop_assert_eq!(decode_list(&merged).unwrap(), expected.clone());
            proptest::prop_assert_eq!(merged, encoded(&expected));
        }
    }

    #[test]
    fn merging_refuses_a_truncated_list_instead_of_misreading_it() {
        let bytes = encoded(&[Entry { ts_us: 9, seq: 1 }, Entry { ts_us: 5, seq: 2 }]);
        for n in 0..3.min(bytes.len()) {
            assert!(
                merged(&bytes[..n], &[Entry { ts_us: 1, seq: 3 }]).is_err(),
                "prefix of {n} bytes"
            );
        }
    }

    #[test]
    fn keys_sort_by_segment_first() {
        let a = posting_key(1, Dim::Pod, 9, u64::MAX);
        let b = posting_key(2, Dim::Time, 1, 0);
        assert!(a < b);
        assert_eq!(segment_of(&b), 2);
    }

    #[test]
    fn clearing_keeps_an_ordinary_transactions_memory_not_the_largest() {
        // Invariant 6: a retention sweep's million changes must not stay
        // allocated in the writer for the rest of its life.
        let dims: Dims = smallvec::smallvec![(Dim::Time, 0), (Dim::Namespace, 3)];
        let mut p = Pending::default();
        for seq in 0..600_000 {
            p.change(1, None, Some((seq as u32 % 50_000, &dims, Entry { ts_us: 1, seq })));
        }
        assert!(p.links.capacity() >= 1_200_000 && p.lists.capacity() >= 100_000);
        p.clear();
        assert!(p.is_empty());
        assert!(p.links.capacity() <= 1 << 17, "{}", p.links.capacity());
        assert!(p.lists.capacity() <= 1 << 14, "{}", p.lists.capacity());
    }

    #[test]
    fn a_pending_kept_across_transactions_writes_each_change_once() {
        // The writer keeps one `Pending` for its buffers: a flush must forget
        // what it wrote, or the next transaction counts those events again.
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("p.redb")).unwrap();
        let dims: Dims = smallvec::smallvec![(Dim::Time, 0), (Dim::Namespace, 3)];
        let mut p = Pending::default();
        for txn in 0..3u64 {
            let w = db.begin_write().unwrap();
            {
                let (mut lists, mut segments) = (w.open_table(POSTINGS).unwrap(), w.open_table(SEGMENTS).unwrap());
                for seq in txn * 10..txn * 10 + 10 {
                    p.change(1, None, Some((0, &dims, Entry { ts_us: seq as i64, seq })));
                }
                p.flush(&mut lists, &mut segments).unwrap();
            }
            w.commit().unwrap();
        }
        let r = redb::ReadableDatabase::begin_read(&db).unwrap();
        let info = SegmentInfo::from_bytes(r.open_table(SEGMENTS).unwrap().get(0).unwrap().unwrap().value());
        assert_eq!((info.events, info.min_ts, info.max_ts), (30, 0, 29));
        let key = posting_key(0, Dim::Namespace, 1, 3);
        let list = decode_list(r.open_table(POSTINGS).unwrap().get(key).unwrap().unwrap().value()).unwrap();
        assert_eq!(list.len(), 30);
    }

    #[test]
    fn unchanged_entries_are_neither_removed_nor_added() {
        let dims: Dims = smallvec::smallvec![(Dim::Time, 0), (Dim::Namespace, 3)];
        let e = Entry { ts_us: 10, seq: 1 };
        let mut p = Pending::default();
        assert_eq!(p.change(1, Some((0, &dims, e)), Some((0, &dims, e))), 0);
        assert!(p.is_empty());
        let later = Entry { ts_us: 11, seq: 1 };
        assert_eq!(p.change(1, Some((0, &dims, e)), Some((0, &dims, later))), 2);
    }
}
