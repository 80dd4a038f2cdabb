//! Event records stored [`BLOCK`] to a row.
//!
//! One redb row per block of consecutive sequence numbers instead of one per
//! event: the writer does one B-tree insert for a block's worth of new events,
//! and the rows are large, so redb's half-full leaves after a split cost
//! little (issue 7: fewer B-tree operations and fewer bytes per event).
//! A batch's events come numbered grouped by namespace and workload
//! ([`super::prepare::PreparedBatch::of`]), so a block holds neighbours and a
//! page of one namespace opens a few blocks, not one per event.
//!
//! A block is `[1][slot]*`: each slot is a LEB128 length, `0` for an empty
//! slot (deleted, or never written), else `len + 1` followed by the record's
//! bytes ([`super::schema::encode`]d). Trailing empty slots are not written;
//! a block with no record left is removed. Stored, a block is usually
//! `[2][LZ4 of the slots]`: neighbouring events share names and words, and
//! compressing them together is what brings an event under 300 bytes on disk.

use super::compact::CompactEvent;
use super::postings::{get_varint, put_varint};
use super::schema::{DecodeError, decode, encode_into};
use redb::{ReadableTable, TableDefinition};

/// Event records by block number (`seq / BLOCK`).
pub const EVENT_BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("event_blocks");

/// Sequence numbers per block.
pub const BLOCK: u64 = 64;
const BLOCK_FORMAT: u8 = 1;
/// LZ4 block format behind its decompressed size (u32, little-endian).
/// LZ4 rather than zstd: on these records it compresses as well, and a
/// query decompresses a block for every event it lists.
const BLOCK_FORMAT_LZ4: u8 = 2;
/// No block decompresses to more than this (a damaged header could claim anything).
const MAX_BLOCK_BYTES: u64 = 64 << 20;

/// The slots of a block as stored (after its format byte, decompressed).
fn unseal(stored: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, DecodeError> {
    match stored.split_first() {
        Some((&BLOCK_FORMAT, slots)) => Ok(std::borrow::Cow::Borrowed(slots)),
        Some((&BLOCK_FORMAT_LZ4, z)) => {
            let damaged = || DecodeError::format(BLOCK_FORMAT_LZ4);
            let (size, body) = z.split_first_chunk::<4>().ok_or_else(damaged)?;
            let size = u64::from(u32::from_le_bytes(*size));
            if size > MAX_BLOCK_BYTES {
                return Err(damaged());
            }
            let mut slots = vec![0; size as usize];
            match lz4_flex::block::decompress_into(body, &mut slots) {
                Ok(n) if n as u64 == size => Ok(std::borrow::Cow::Owned(slots)),
                _ => Err(damaged()),
            }
        }
        Some((&other, _)) => Err(DecodeError::format(other)),
        None => Err(DecodeError::truncated()),
    }
}

/// The stored form of a block's slots: compressed when that saves space.
fn seal(slots: &[u8]) -> Vec<u8> {
    let z = lz4_flex::block::compress_prepend_size(slots);
    let (format, body) = if z.len() < slots.len() {
        (BLOCK_FORMAT_LZ4, z.as_slice())
    } else {
        (BLOCK_FORMAT, slots)
    };
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(format);
    out.extend_from_slice(body);
    out
}

fn block_of(seq: u64) -> (u64, usize) {
    // The slot is below BLOCK, so it fits a usize.
    (seq / BLOCK, (seq % BLOCK) as usize)
}

/// The record bytes of `slot` in a block's slots, if it holds one.
fn slot_bytes(slots: &[u8], slot: usize) -> Result<Option<&[u8]>, DecodeError> {
    let mut rest = slots;
    for _ in 0..slot {
        if rest.is_empty() {
            return Ok(None);
        }
        take_slot(&mut rest)?;
    }
    if rest.is_empty() {
        return Ok(None);
    }
    take_slot(&mut rest)
}

/// Takes one slot off the front of `rest`: its record, or `None` if empty.
fn take_slot<'a>(rest: &mut &'a [u8]) -> Result<Option<&'a [u8]>, DecodeError> {
    let tag = get_varint(rest).ok_or_else(DecodeError::truncated)?;
    let len = usize::try_from(tag.saturating_sub(1)).map_err(|_| DecodeError::truncated())?;
    if rest.len() < len {
        return Err(DecodeError::truncated());
    }
    let (record, tail) = rest.split_at(len);
    *rest = tail;
    Ok((tag > 0).then_some(record))
}

/// Blocks a [`Reader`] keeps decompressed.
const READER_BLOCKS: usize = 8;

/// Reads the events of one query, decompressing each block once: a page
/// of the newest events lies in one or two blocks.
pub struct Reader<'a, T> {
    table: &'a T,
    /// Most recently read last.
    recent: Vec<(u64, Vec<u8>)>,
}

impl<'a, T: ReadableTable<u64, &'static [u8]>> Reader<'a, T> {
    pub fn new(table: &'a T) -> Self {
        Self {
            table,
            recent: Vec::with_capacity(READER_BLOCKS),
        }
    }

    /// The event stored at `seq`.
    pub fn read(&mut self, seq: u64) -> super::Result<Option<CompactEvent>> {
        let (block, slot) = block_of(seq);
        let at = match self.recent.iter().position(|(n, _)| *n == block) {
            Some(at) => at,
            None => {
                let Some(row) = self.table.get(block)? else {
                    return Ok(None);
                };
                let slots = unseal(row.value())?.into_owned();
                if self.recent.len() == READER_BLOCKS {
                    self.recent.remove(0);
                }
                self.recent.push((block, slots));
                self.recent.len() - 1
            }
        };
        Ok(slot_bytes(&self.recent[at].1, slot)?.map(decode).transpose()?)
    }
}

/// One block being changed, its records still encoded, all in one buffer:
/// putting an event encodes it at the buffer's end and allocates nothing of
/// its own (a record replaced or removed leaves its old bytes behind until
/// the block is written, at the end of the transaction).
#[derive(Default)]
struct Block {
    /// Record bytes; each slot's record is a range of this.
    data: Vec<u8>,
    /// The `start..end` of each slot's record in `data`, `None` if empty.
    slots: Vec<Option<(u32, u32)>>,
    /// Changed since it was read: written back at the end of the transaction.
    dirty: bool,
}

/// Room for a new block's records (about 150 bytes each, encoded).
const NEW_BLOCK_BYTES: usize = 160 * BLOCK as usize;

impl Block {
    fn new() -> Self {
        Self {
            data: Vec::with_capacity(NEW_BLOCK_BYTES),
            ..Self::default()
        }
    }

    fn parse(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut rest = bytes;
        let mut slots = Vec::with_capacity(BLOCK as usize);
        // Records keep their offsets in the stored form: one copy of it is the buffer.
        let offset = |rest: &[u8]| (bytes.len() - rest.len()) as u32;
        while !rest.is_empty() && slots.len() < BLOCK as usize {
            let slot = take_slot(&mut rest)?.map(|record| (offset(rest) - record.len() as u32, offset(rest)));
            slots.push(slot);
        }
        while slots.last().is_some_and(Option::is_none) {
            slots.pop();
        }
        let data = bytes[..bytes.len() - rest.len()].to_vec();
        Ok(Self {
            data,
            slots,
            dirty: false,
        })
    }

    /// The record in `slot`, if any.
    fn record(&self, slot: usize) -> Option<&[u8]> {
        let (start, end) = (*self.slots.get(slot)?)?;
        Some(&self.data[start as usize..end as usize])
    }

    fn encode(&self) -> Vec<u8> {
        let size: usize = self
            .slots
            .iter()
            .map(|s| s.map_or(1, |(start, end)| (end - start) as usize + 3))
            .sum();
        let mut out = Vec::with_capacity(size);
        for slot in 0..self.slots.len() {
            match self.record(slot) {
                Some(record) => {
                    put_varint(&mut out, record.len() as u64 + 1);
                    out.extend_from_slice(record);
                }
                None => out.push(0),
            }
        }
        out
    }

    /// Puts `event` in `slot`, encoded at the end of the buffer.
    fn put(&mut self, slot: usize, event: &CompactEvent) {
        let start = self.data.len();
        encode_into(&mut self.data, event);
        self.set(slot, Some((start as u32, self.data.len() as u32)));
    }

    fn set(&mut self, slot: usize, record: Option<(u32, u32)>) {
        self.dirty = true;
        if self.slots.len() <= slot {
            if record.is_none() {
                return;
            }
            self.slots.resize(slot + 1, None);
        }
        self.slots[slot] = record;
        while self.slots.last().is_some_and(Option::is_none) {
            self.slots.pop();
        }
    }
}

/// The blocks one write transaction changes, written back once at its end.
#[derive(Default)]
pub struct Pending {
    blocks: foldhash::HashMap<u64, Block>,
}

impl Pending {
    fn block<'a>(
        blocks: &'a mut foldhash::HashMap<u64, Block>,
        table: &impl ReadableTable<u64, &'static [u8]>,
        block: u64,
    ) -> super::Result<&'a mut Block> {
        use std::collections::hash_map::Entry;
        Ok(match blocks.entry(block) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let loaded = match table.get(block)? {
                    Some(row) => Block::parse(&unseal(row.value())?)?,
                    None => Block::new(),
                };
                e.insert(loaded)
            }
        })
    }

    /// The event stored at `seq`, as this transaction has it.
    pub fn get(
        &mut self,
        table: &impl ReadableTable<u64, &'static [u8]>,
        seq: u64,
    ) -> super::Result<Option<CompactEvent>> {
        let (block, slot) = block_of(seq);
        // Kept: an event read is usually an event about to be rewritten.
        let b = Self::block(&mut self.blocks, table, block)?;
        Ok(b.record(slot).map(decode).transpose()?)
    }

    /// Stores (or replaces) the event at `seq`.
    pub fn put(
        &mut self,
        table: &impl ReadableTable<u64, &'static [u8]>,
        seq: u64,
        event: &CompactEvent,
    ) -> super::Result<()> {
        let (block, slot) = block_of(seq);
        Self::block(&mut self.blocks, table, block)?.put(slot, event);
        Ok(())
    }

    /// Deletes the event at `seq`.
    pub fn remove(&mut self, table: &impl ReadableTable<u64, &'static [u8]>, seq: u64) -> super::Result<()> {
        let (block, slot) = block_of(seq);
        Self::block(&mut self.blocks, table, block)?.set(slot, None);
        Ok(())
    }

    /// Writes every changed block, removing those left empty.
    pub fn flush(self, table: &mut redb::Table<'_, u64, &'static [u8]>) -> super::Result<()> {
        let mut blocks: Vec<_> = self.blocks.into_iter().collect();
        blocks.sort_unstable_by_key(|(n, _)| *n);
        for (n, block) in blocks.into_iter().filter(|(_, b)| b.dirty) {
            if block.slots.is_empty() {
                table.remove(n)?;
            } else {
                table.insert(n, seal(&block.encode()).as_slice())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn block_of_slots(slots: &[Option<Vec<u8>>]) -> Block {
        let mut b = Block::default();
        for (i, s) in slots.iter().enumerate() {
            let record = s.as_ref().map(|r| {
                let start = b.data.len() as u32;
                b.data.extend_from_slice(r);
                (start, b.data.len() as u32)
            });
            b.set(i, record);
        }
        b
    }

    proptest! {
        #[test]
        fn every_slot_reads_back_as_written(
            slots in prop::collection::vec(prop::option::of(prop::collection::vec(any::<u8>(), 0..300)), 0..64)
        ) {
            let encoded = block_of_slots(&slots).encode();
            for (i, want) in slots.iter().enumerate() {
                prop_assert_eq!(slot_bytes(&encoded, i).unwrap(), want.as_deref());
            }
            if slots.len() < 64 {
                prop_assert_eq!(slot_bytes(&encoded, slots.len()).unwrap(), None);
            }
            let reparsed = Block::parse(&encoded).unwrap();
            prop_assert_eq!(reparsed.encode(), encoded.clone());
            let sealed = seal(&encoded);
            let unsealed = unseal(&sealed).unwrap();
            prop_assert_eq!(unsealed.as_ref(), encoded.as_slice());
        }

        #[test]
        fn a_damaged_block_is_an_error_never_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), slot in 0usize..64) {
            let _ = slot_bytes(&bytes, slot);
            let _ = Block::parse(&bytes);
            let mut lz4_framed = vec![BLOCK_FORMAT_LZ4];
            lz4_framed.extend_from_slice(&bytes);
            let _ = unseal(&lz4_framed);
            if let Ok(plain) = unseal(&bytes) {
                let _ = slot_bytes(&plain, slot);
            }
        }
    }

    #[test]
    fn replaced_and_removed_records_leave_no_trace_in_the_written_block() {
        let mut b = block_of_slots(&[
            Some(b"first".to_vec()),
            Some(b"second".to_vec()),
            Some(b"third".to_vec()),
        ]);
        let start = b.data.len() as u32;
        b.data.extend_from_slice(b"FIRST, longer");
        b.set(0, Some((start, b.data.len() as u32)));
        b.set(2, None);
        let encoded = b.encode();
        assert_eq!(slot_bytes(&encoded, 0).unwrap(), Some(&b"FIRST, longer"[..]));
        assert_eq!(slot_bytes(&encoded, 1).unwrap(), Some(&b"second"[..]));
        assert_eq!(slot_bytes(&encoded, 2).unwrap(), None);
        // Only the live records are written: the replaced bytes are gone.
        assert_eq!(encoded.len(), 1 + 13 + 1 + 6);
        let reparsed = Block::parse(&encoded).unwrap();
        assert_eq!(reparsed.data.len(), encoded.len());
        assert_eq!(reparsed.record(0), Some(&b"FIRST, longer"[..]));
    }

    #[test]
    fn similar_records_are_stored_compressed() {
        let record = |i: usize| {
            format!("\u{1}pod-web-7d9f8c6b5-{i:05} team-payments Back-off restarting failed container").into_bytes()
        };
        let slots: Vec<_> = (0..64).map(|i| Some(record(i))).collect();
        let plain = block_of_slots(&slots).encode();
        let sealed = seal(&plain);
        assert_eq!(sealed[0], BLOCK_FORMAT_LZ4);
        assert!(sealed.len() * 3 < plain.len(), "{} of {}", sealed.len(), plain.len());
        // A damaged frame is refused, not misread.
        let mut damaged = sealed.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        damaged.truncate(last - 3);
        assert!(unseal(&damaged).is_err());
    }

    #[test]
    fn a_block_of_another_format_is_refused_by_its_format() {
        let err = unseal(&[9, 1]).unwrap_err();
        assert!(err.to_string().contains("format 9"), "{err}");
    }
}
