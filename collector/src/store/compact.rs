//! The stored form of an event: names interned, the message split into a
//! shared template and its variable words, numbers as varints.
//!
//! Most of an event's bytes repeat across events: namespace, node and
//! workload names, the reason, and the wording of the message. Each distinct
//! string is stored once in a dictionary ([`STRINGS`] and [`STRING_TEXT`])
//! and events hold its id. Pod names and uids are not interned: Jobs and
//! rollouts make new ones all the time, and a dictionary entry costs two
//! inserts at random places; they stay inline (a UUID in 16 bytes). A message is stored as the id of its template (the
//! message with every word that contains a digit replaced by a placeholder)
//! plus those words, so "Back-off restarting failed container app in pod
//! api-7d9f8b6c5-x2k4q_prod(…)" shares its template with every other pod's.
//! A record is about 60 bytes instead of 400, and costs no compression CPU.
//!
//! The dictionary only grows: it holds distinct names and templates, not
//! events, so it grows with the number of namespaces, nodes, workloads and
//! kinds of message seen.

use super::schema::{Dim, EventRecord};
use super::{Result, StoreError};
use foldhash::HashMap;
use redb::{ReadableTable, Table, TableDefinition};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

/// Dictionary: text → id.
pub const STRINGS: TableDefinition<&str, u32> = TableDefinition::new("strings");
/// Dictionary: id → text.
pub const STRING_TEXT: TableDefinition<u32, &str> = TableDefinition::new("string_text");

/// Stands in a template for one variable word.
const PLACEHOLDER: char = '\u{1}';
/// Separates the variable words (which never contain it).
const ARG_SEPARATOR: char = ' ';
/// Logs longer than this are stored zstd-compressed.
const COMPRESS_LOGS_OVER: usize = 256;

/// An event uid: Kubernetes uids are UUIDs, 16 bytes instead of 36.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Uid {
    /// A lowercase hyphenated UUID.
    Uuid([u8; 16]),
    /// Anything else, verbatim.
    Text(String),
}

impl Default for Uid {
    fn default() -> Self {
        Self::Text(String::new())
    }
}

impl Uid {
    /// The compact form of `uid`; [`Uid::text`] gives back exactly `uid`.
    pub fn of(uid: &str) -> Self {
        let b = uid.as_bytes();
        let shape = b.len() == 36
            && b.iter().enumerate().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => *c == b'-',
                _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
            });
        if !shape {
            return Self::Text(uid.to_owned());
        }
        let mut out = [0u8; 16];
        let hex: Vec<u8> = b.iter().copied().filter(|c| *c != b'-').collect();
        for (i, pair) in hex.chunks(2).enumerate() {
            let digit = |c: u8| if c.is_ascii_digit() { c - b'0' } else { c - b'a' + 10 };
            out[i] = digit(pair[0]) << 4 | digit(pair[1]);
        }
        Self::Uuid(out)
    }

    /// The uid as the agent sent it.
    pub fn text(&self) -> String {
        match self {
            Self::Text(s) => s.clone(),
            Self::Uuid(b) => {
                let mut s = String::with_capacity(36);
                for (i, byte) in b.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        s.push('-');
                    }
                    s.push_str(&format!("{byte:02x}"));
                }
                s
            }
        }
    }
}

/// Splits a message into its template and its variable words (each maximal
/// run of `[A-Za-z0-9._-]` that contains a digit). `None` words: the message
/// is its own template (it contains the placeholder character itself).
pub fn split_message(message: &str) -> (String, Option<String>) {
    if message.contains(PLACEHOLDER) {
        return (message.to_owned(), None);
    }
    // Word characters are ASCII, so byte positions between runs are char
    // boundaries.
    let word_byte = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    let bytes = message.as_bytes();
    let mut template = String::with_capacity(message.len());
    let mut args = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && word_byte(bytes[i]) {
            i += 1;
        }
        let word = &message[start..i];
        if word.bytes().any(|b| b.is_ascii_digit()) {
            template.push(PLACEHOLDER);
            if !args.is_empty() {
                args.push(ARG_SEPARATOR);
            }
            args.push_str(word);
        } else {
            template.push_str(word);
        }
        let gap = i;
        while i < bytes.len() && !word_byte(bytes[i]) {
            i += 1;
        }
        template.push_str(&message[gap..i]);
    }
    (template, Some(args))
}

/// The inverse of [`split_message`].
pub fn join_message(template: &str, args: Option<&str>) -> String {
    let Some(args) = args else {
        return template.to_owned();
    };
    let mut words = args.split(ARG_SEPARATOR);
    let mut out = String::with_capacity(template.len() + args.len());
    for c in template.chars() {
        if c == PLACEHOLDER {
            out.push_str(words.next().unwrap_or(""));
        } else {
            out.push(c);
        }
    }
    out
}

/// Logs, compressed when long.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Logs {
    /// As sent.
    Plain(String),
    /// zstd of the UTF-8 text.
    Zstd(Vec<u8>),
}

impl Logs {
    fn of(text: &str) -> Self {
        if text.len() > COMPRESS_LOGS_OVER
            && let Ok(z) = zstd::bulk::compress(text.as_bytes(), 3)
            && z.len() < text.len()
        {
            return Self::Zstd(z);
        }
        Self::Plain(text.to_owned())
    }

    fn text(&self) -> Result<String> {
        match self {
            Self::Plain(s) => Ok(s.clone()),
            Self::Zstd(z) => zstd::bulk::decompress(z, podwarn_shared::wire::limits::LOGS)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| StoreError::Storage("stored logs are unreadable".into())),
        }
    }
}

/// One event as stored in `EVENTS`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CompactEvent {
    pub cluster: u32,
    pub uid: Uid,
    pub namespace: u32,
    pub pod: String,
    pub pod_uid: Option<Uid>,
    pub node: Option<u32>,
    /// Kind, name.
    pub workload: Option<(u32, u32)>,
    pub container: Option<u32>,
    pub reason: u32,
    pub template: u32,
    pub args: Option<String>,
    pub incident_type: u8,
    pub severity: u8,
    pub count: u32,
    /// As sent: part of the dedup key, never changes.
    pub first_seen_us: i64,
    /// `last_seen - first_seen`.
    pub last_after_first_us: i64,
    /// `received - first_seen`.
    pub received_after_first_us: i64,
    pub source: Option<u32>,
    pub logs: Option<Logs>,
    pub incident: u64,
}

impl CompactEvent {
    /// Last seen, microseconds.
    pub fn last_seen_us(&self) -> i64 {
        self.first_seen_us.saturating_add(self.last_after_first_us)
    }

    /// The index values of this event.
    pub fn dims(&self) -> super::postings::Dims {
        let mut dims: super::postings::Dims = smallvec::smallvec![
            (Dim::Time, 0),
            (Dim::Namespace, u64::from(self.namespace)),
            (Dim::Pod, pod_value(&self.pod)),
            (Dim::Incident, self.incident),
        ];
        if let Some((_, name)) = self.workload {
            dims.push((Dim::Workload, u64::from(name)));
        }
        if let Some(node) = self.node {
            dims.push((Dim::Node, u64::from(node)));
        }
        dims
    }
}

/// The pod-dimension index value of a pod name (a hash: pod names are not
/// interned; a collision only costs a comparison).
pub fn pod_value(pod: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(pod.as_bytes())
}

/// Most dictionary entries the writer keeps in memory.
const WRITER_CACHE: usize = 1 << 17;
/// Most dictionary entries the readers keep in memory.
const READER_CACHE: usize = 1 << 17;

/// The writer's side of the dictionary: text → id, creating ids as needed.
/// Its cache may hold ids of a transaction that then failed: the writer
/// calls [`Interner::forget`] whenever a commit fails.
#[derive(Default)]
pub struct Interner {
    cache: HashMap<Box<str>, u32>,
}

/// The dictionary tables of a write transaction, and the next free id.
pub struct Dictionary<'a, 't> {
    pub strings: &'a mut Table<'t, &'static str, u32>,
    pub text: &'a mut Table<'t, u32, &'static str>,
    pub next_id: &'a mut u32,
}

impl Interner {
    /// Drops every cached id.
    pub fn forget(&mut self) {
        self.cache.clear();
    }

    /// The id of `text`, creating it if new.
    pub fn id(&mut self, dict: &mut Dictionary<'_, '_>, text: &str) -> Result<u32> {
        if let Some(id) = self.cache.get(text) {
            return Ok(*id);
        }
        let existing = dict.strings.get(text)?.map(|v| v.value());
        let id = match existing {
            Some(id) => id,
            None => {
                let id = *dict.next_id;
                *dict.next_id = id
                    .checked_add(1)
                    .ok_or_else(|| StoreError::Storage("the string dictionary is full".into()))?;
                dict.strings.insert(text, id)?;
                dict.text.insert(id, text)?;
                id
            }
        };
        if self.cache.len() >= WRITER_CACHE {
            self.cache.clear();
        }
        self.cache.insert(text.into(), id);
        Ok(id)
    }

    /// The stored form of `rec`, whose dictionary-free parts are `split`.
    pub fn compact(&mut self, dict: &mut Dictionary<'_, '_>, rec: &EventRecord, split: Split) -> Result<CompactEvent> {
        let mut opt =
            |s: &Option<String>| -> Result<Option<u32>> { s.as_deref().map(|s| self.id(dict, s)).transpose() };
        let node = opt(&rec.node)?;
        let container = opt(&rec.container)?;
        let source = opt(&rec.source)?;
        let workload = match &rec.workload {
            Some((kind, name)) => Some((self.id(dict, kind)?, self.id(dict, name)?)),
            None => None,
        };
        Ok(CompactEvent {
            cluster: rec.cluster,
            uid: split.uid,
            namespace: self.id(dict, &rec.namespace)?,
            pod: split.pod,
            pod_uid: split.pod_uid,
            node,
            workload,
            container,
            reason: self.id(dict, &rec.reason)?,
            template: self.id(dict, &split.template)?,
            args: split.args,
            incident_type: rec.incident_type,
            severity: rec.severity,
            count: rec.count,
            first_seen_us: rec.first_seen_us,
            last_after_first_us: rec.last_seen_us.saturating_sub(rec.first_seen_us),
            received_after_first_us: rec.received_us.saturating_sub(rec.first_seen_us),
            source,
            logs: split.logs,
            incident: rec.incident,
        })
    }
}

/// The parts of a record's stored form that need no dictionary: the message
/// split, the uids packed, the logs compressed. Computed by the requesting
/// task, so the single writer thread does only lookups and writes.
#[derive(Debug, Clone, Default)]
pub struct Split {
    /// A copy of the pod name, made here so that the writer need not.
    pub pod: String,
    pub template: String,
    pub args: Option<String>,
    pub uid: Uid,
    pub pod_uid: Option<Uid>,
    pub logs: Option<Logs>,
}

impl Split {
    /// The dictionary-free parts of `rec`'s stored form.
    pub fn of(rec: &EventRecord) -> Self {
        let (template, args) = split_message(&rec.message);
        Self {
            pod: rec.pod.clone(),
            template,
            args,
            uid: Uid::of(&rec.uid),
            pod_uid: rec.pod_uid.as_deref().map(Uid::of),
            logs: rec.logs.as_deref().map(Logs::of),
        }
    }
}

/// The readers' side of the dictionary: id → text, cached. Ids are never
/// reused, so a cached entry never goes stale.
#[derive(Debug, Default)]
pub struct Resolver {
    cache: Mutex<HashMap<u32, Arc<str>>>,
}

impl Resolver {
    /// The text of `id`.
    pub fn text(&self, table: &impl ReadableTable<u32, &'static str>, id: u32) -> Result<Arc<str>> {
        if let Some(text) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&id) {
            return Ok(text.clone());
        }
        let text: Arc<str> = table
            .get(id)?
            .map(|v| Arc::from(v.value()))
            .ok_or_else(|| StoreError::Storage(format!("string {id} is missing from the dictionary")))?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= READER_CACHE {
            cache.clear();
        }
        cache.insert(id, text.clone());
        Ok(text)
    }

    /// The full record of a stored event.
    pub fn expand(&self, table: &impl ReadableTable<u32, &'static str>, c: &CompactEvent) -> Result<EventRecord> {
        let s = |id: u32| -> Result<String> { Ok(self.text(table, id)?.to_string()) };
        let opt = |id: Option<u32>| -> Result<Option<String>> { id.map(s).transpose() };
        Ok(EventRecord {
            cluster: c.cluster,
            uid: c.uid.text(),
            namespace: s(c.namespace)?,
            pod: c.pod.clone(),
            pod_uid: c.pod_uid.as_ref().map(Uid::text),
            node: opt(c.node)?,
            workload: match c.workload {
                Some((kind, name)) => Some((s(kind)?, s(name)?)),
                None => None,
            },
            container: opt(c.container)?,
            reason: s(c.reason)?,
            message: join_message(&self.text(table, c.template)?, c.args.as_deref()),
            incident_type: c.incident_type,
            severity: c.severity,
            count: c.count,
            first_seen_us: c.first_seen_us,
            last_seen_us: c.last_seen_us(),
            source: opt(c.source)?,
            logs: c.logs.as_ref().map(Logs::text).transpose()?,
            incident: c.incident,
            received_us: c.first_seen_us.saturating_add(c.received_after_first_us),
        })
    }
}

/// The id of `text` if the dictionary has it (a query filter on a name never
/// stored matches nothing).
pub fn lookup(table: &impl ReadableTable<&'static str, u32>, text: &str) -> Result<Option<u32>> {
    Ok(table.get(text)?.map(|v| v.value()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_into_a_shared_template_and_come_back_exactly() {
        let a = "Back-off restarting failed container app in pod api-7d9f8b6c5-x2k4q_prod(0a1b-22)";
        let b = "Back-off restarting failed container app in pod api-7d9f8b6c5-zz9k4_prod(ff-31)";
        let (ta, args_a) = split_message(a);
        let (tb, _) = split_message(b);
        assert_eq!(ta, tb);
        assert_eq!(join_message(&ta, args_a.as_deref()), a);
        for m in [
            "",
            "no digits at all",
            "0/12 nodes are available: 3 Insufficient cpu.",
            "  spaces  and\ttabs 1 ",
            "ünïcödé 9 ✓ x1",
            "trailing-1",
            "Readiness probe failed: Get \"http://10.0.0.1:8080/healthz\": dial tcp",
            "has \u{1} placeholder 5",
        ] {
            let (t, args) = split_message(m);
            assert_eq!(join_message(&t, args.as_deref()), m, "{m:?}");
        }
    }

    proptest::proptest! {
        /// Any text comes back exactly, and its template holds no digit
        /// outside the placeholder's words.
        #[test]
        fn any_message_comes_back_exactly(m in "[ -~\u{1}\u{e9}\u{2713}\t]{0,80}") {
            let (t, args) = split_message(&m);
            proptest::prop_assert_eq!(join_message(&t, args.as_deref()), m.clone());
            if args.is_some() {
                proptest::prop_assert!(!t.bytes().any(|b| b.is_ascii_digit()));
            }
        }
    }

    #[test]
    fn uuids_are_packed_and_everything_else_is_kept_verbatim() {
        let u = "b5c1c1fa-5db6-4be4-8dcd-0910410f5630";
        assert!(matches!(Uid::of(u), Uid::Uuid(_)));
        assert_eq!(Uid::of(u).text(), u);
        for other in [
            "B5C1C1FA-5DB6-4BE4-8DCD-0910410F5630",
            "podstatus:x:1",
            "",
            "b5c1c1fa5db64be48dcd0910410f5630",
        ] {
            assert_eq!(Uid::of(other), Uid::Text(other.to_owned()));
        }
    }

    #[test]
    fn long_logs_are_compressed_and_come_back_exactly() {
        let text = "line of a crashing container\n".repeat(100);
        let logs = Logs::of(&text);
        assert!(matches!(logs, Logs::Zstd(_)));
        assert_eq!(logs.text().unwrap(), text);
        assert_eq!(Logs::of("short").text().unwrap(), "short");
    }
}
