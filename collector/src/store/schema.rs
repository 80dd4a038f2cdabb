//! Table definitions, key layouts and record encodings of the redb store.
//!
//! Records are postcard behind a one-byte format version, so a later build can
//! read what an earlier one wrote. Index keys are fixed-width big-endian so
//! that byte order is time order.

use redb::TableDefinition;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use xxhash_rust::xxh3::xxh3_64;

/// Store-wide values: the schema version and the next event sequence number.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Incident records by id.
pub const INCIDENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("incidents");
/// Secondary indexes over incidents, see [`incident_entries`].
/// The value is the incident's exact last occurrence (microseconds).
pub const INCIDENT_INDEX: TableDefinition<IncidentIndexKey, i64> = TableDefinition::new("incident_index");
/// Cluster name → cluster id.
pub const CLUSTER_IDS: TableDefinition<&str, u32> = TableDefinition::new("cluster_ids");
/// Cluster records by id.
pub const CLUSTERS: TableDefinition<u32, &[u8]> = TableDefinition::new("clusters");
/// Agent records by agent id.
pub const AGENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agents");
/// Enrollment tokens by token id (only a digest of the secret is stored).
pub const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
/// API keys by key id (only a digest of the key is stored).
pub const API_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_keys");
/// The audit log by sequence number (append only; higher is newer).
pub const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

/// The schema this build writes.
pub const SCHEMA_VERSION: u64 = 7;
/// `META` key of the schema version.
pub const META_SCHEMA: &str = "schema_version";
/// `META` key of the next event sequence number.
pub const META_NEXT_SEQ: &str = "next_seq";
/// `META` key of the next audit sequence number.
pub const META_NEXT_AUDIT: &str = "next_audit";
/// `META` key of the next string-dictionary id.
pub const META_NEXT_STRING: &str = "next_string";
/// `META` key of the index segment being written.
pub const META_SEGMENT: &str = "segment";

const RECORD_FORMAT: u8 = 1;

/// Errors decoding a stored record: the file holds something this build cannot read.
#[derive(Debug, thiserror::Error)]
#[error("stored record is unreadable (format {format})")]
pub struct DecodeError {
    format: u8,
    #[source]
    source: postcard::Error,
}

impl DecodeError {
    /// Bytes that end before the record does.
    pub fn truncated() -> Self {
        Self {
            format: RECORD_FORMAT,
            source: postcard::Error::DeserializeUnexpectedEnd,
        }
    }

    /// A record or block of a format this build does not know.
    pub fn format(format: u8) -> Self {
        Self {
            format,
            source: postcard::Error::DeserializeBadEncoding,
        }
    }
}

/// Encodes a record with its format byte.
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    encode_into(&mut out, record);
    out
}

/// [`encode`], appending to `out` (so a caller can reuse one buffer).
pub fn encode_into<T: Serialize>(out: &mut Vec<u8>, record: &T) {
    out.push(RECORD_FORMAT);
    // Serializing plain structs of strings and integers into a Vec cannot fail.
    *out = postcard::to_extend(record, std::mem::take(out)).unwrap_or_default();
}

/// Decodes a record written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (format, body) = bytes.split_first().unwrap_or((&0, &[]));
    if *format != RECORD_FORMAT {
        return Err(DecodeError::format(*format));
    }
    postcard::from_bytes(body).map_err(|source| DecodeError {
        format: *format,
        source,
    })
}

/// One event with every name spelled out; stored as a [`super::compact::CompactEvent`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventRecord {
    pub cluster: u32,
    pub uid: String,
    pub namespace: String,
    pub pod: String,
    pub pod_uid: Option<String>,
    pub node: Option<String>,
    pub workload: Option<(String, String)>,
    pub container: Option<String>,
    pub reason: String,
    pub message: String,
    pub incident_type: u8,
    pub severity: u8,
    pub count: u32,
    /// As the agent sent it: part of the dedup key.
    pub first_seen_us: i64,
    /// Never before `first_seen_us`.
    pub last_seen_us: i64,
    pub source: Option<String>,
    pub logs: Option<String>,
    pub incident: u64,
    pub received_us: i64,
}

/// One incident: recurring occurrences of the same problem in one workload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IncidentRecord {
    pub cluster: u32,
    pub namespace: String,
    pub workload: Option<(String, String)>,
    /// The pod, for bare pods (no workload).
    pub pod: Option<String>,
    pub container: Option<String>,
    pub incident_type: u8,
    /// The highest severity seen.
    pub severity: u8,
    pub reason: String,
    /// The normalised message the fingerprint was taken from.
    pub pattern: String,
    /// The latest full message.
    pub message: String,
    pub first_seen_us: i64,
    pub last_seen_us: i64,
    pub occurrences: u64,
    pub events: u64,
    /// Most recently affected pods, newest last, at most [`MAX_INCIDENT_PODS`].
    pub pods: Vec<String>,
    /// Distinct pods seen beyond those listed (an upper bound).
    pub pods_not_listed: u64,
}

/// How many pod names an incident keeps.
pub const MAX_INCIDENT_PODS: usize = 20;

/// One cluster as the collector knows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterRecord {
    pub name: String,
    pub tenant: String,
    pub created_us: i64,
    pub events_stored: u64,
    pub occurrences: u64,
    pub last_ingest_us: Option<i64>,
}

/// One agent certificate the collector issued.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgentRecord {
    pub agent_id: String,
    pub cluster: String,
    pub tenant: String,
    pub created_us: i64,
    pub cert_serial: String,
    pub cert_not_after_us: i64,
    pub revoked_us: Option<i64>,
    pub last_seen_us: Option<i64>,
    pub version: Option<String>,
    pub dropped_total: u64,
}

/// One enrollment token. The secret itself is never stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenRecord {
    pub id: String,
    /// SHA-256 of the secret part of the token.
    pub secret_sha256: [u8; 32],
    pub cluster: String,
    pub tenant: String,
    pub created_us: i64,
    pub expires_us: i64,
    /// Enrollments allowed in total; `None` for no limit (until expiry).
    pub uses_total: Option<u64>,
    /// Enrollments done so far.
    pub used: u64,
    pub revoked_us: Option<i64>,
    pub last_used_us: Option<i64>,
}

/// Role of an API key.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KeyRole {
    /// Query endpoints only.
    Read,
    /// Query and admin endpoints.
    Admin,
}

/// One API key. Only a digest of the key is stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ApiKeyRecord {
    /// Public id: the first 12 hex digits of the key's SHA-256.
    pub id: String,
    /// SHA-256 of the whole key.
    pub key_sha256: [u8; 32],
    /// The tenant the key is confined to; `None` for every tenant.
    pub tenant: Option<String>,
    pub role: KeyRole,
    pub created_us: i64,
    pub revoked_us: Option<i64>,
}

/// One audit log entry. Never holds a secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    pub time_us: i64,
    /// Who acted: `admin-token`, `local-cli`, `apikey:<id>`, `token:<id>`, `agent:<id>`.
    pub actor: String,
    /// What was done, e.g. `token.create`, `agent.enroll`.
    pub action: String,
    pub tenant: Option<String>,
    pub cluster: Option<String>,
    /// The object acted on (token id, agent id, key id …).
    pub target: Option<String>,
    /// The caller's network address, or `local`.
    pub source: String,
    /// A short note (uses left, new expiry …); never a secret.
    pub detail: Option<String>,
}

/// Index dimensions of the event posting lists and of [`INCIDENT_INDEX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Dim {
    /// Every event (incident) of a cluster by time; value 0.
    Time = 1,
    /// Namespace (its dictionary id for events, its name's hash for incidents).
    Namespace = 2,
    /// Pod name (its hash: pod names are not interned).
    Pod = 3,
    /// Workload name (dictionary id for events, hash for incidents).
    Workload = 4,
    /// Node name's dictionary id.
    Node = 5,
    /// Incident id.
    Incident = 6,
}

/// Length of an [`INCIDENT_INDEX`] key.
pub const INDEX_KEY_LEN: usize = 1 + 4 + 8 + 8 + 8;
/// An [`INCIDENT_INDEX`] key: `[dim][cluster][value][bucket][id]`, see [`index_key`].
pub type IncidentIndexKey = BytesKey<INDEX_KEY_LEN>;

/// How wide the incident index's time buckets are: one hour.
///
/// An incident's index keys carry the hour its last occurrence fell in,
/// and their values the exact time, so a busy incident's entries move once
/// an hour; in between, a commit rewrites their values in place instead of
/// removing and inserting them. A query reads a whole hour's entries (keys
/// and times only) and orders them by time.
pub const INCIDENT_BUCKET_US: i64 = 3_600_000_000;

/// The start of the incident-index bucket `ts_us` falls in.
pub fn incident_bucket(ts_us: i64) -> i64 {
    ts_us
        .checked_sub(ts_us.rem_euclid(INCIDENT_BUCKET_US))
        .unwrap_or(i64::MIN)
}
/// Length of the `(dim, cluster, value)` prefix of an index key.
pub const INDEX_PREFIX_LEN: usize = 1 + 4 + 8;

/// Hashes a filter value into an index value. Collisions only cost a
/// post-filter check: records are always compared exactly.
pub fn value_hash(text: &str) -> u64 {
    xxh3_64(text.as_bytes())
}

/// Orders signed microseconds as unsigned big-endian bytes.
pub fn ts_bytes(ts_us: i64) -> [u8; 8] {
    ((ts_us as u64) ^ (1 << 63)).to_be_bytes()
}

/// The inverse of [`ts_bytes`].
pub fn ts_from_bytes(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}

/// `[dim][cluster][value]`.
pub fn index_prefix(dim: Dim, cluster: u32, value: u64) -> [u8; INDEX_PREFIX_LEN] {
    let mut key = [0u8; INDEX_PREFIX_LEN];
    key[0] = dim as u8;
    key[1..5].copy_from_slice(&cluster.to_be_bytes());
    key[5..13].copy_from_slice(&value.to_be_bytes());
    key
}

/// `[dim][cluster][value][ts][id]`.
pub fn index_key(dim: Dim, cluster: u32, value: u64, ts_us: i64, id: u64) -> IncidentIndexKey {
    let mut key = [0u8; INDEX_KEY_LEN];
    key[..INDEX_PREFIX_LEN].copy_from_slice(&index_prefix(dim, cluster, value));
    key[13..21].copy_from_slice(&ts_bytes(ts_us));
    key[21..29].copy_from_slice(&id.to_be_bytes());
    BytesKey(key)
}

/// Reads `(ts, id)` back from an index key.
pub fn position_of(key: &IncidentIndexKey) -> (i64, u64) {
    let mut ts = [0u8; 8];
    let mut id = [0u8; 8];
    ts.copy_from_slice(&key.0[13..21]);
    id.copy_from_slice(&key.0[21..29]);
    (ts_from_bytes(ts), u64::from_be_bytes(id))
}

/// Every index entry of one incident in `bucket` (see [`incident_bucket`]):
/// by time, by namespace and by workload.
pub fn incident_entries(rec: &IncidentRecord, id: u64, bucket: i64) -> impl Iterator<Item = IncidentIndexKey> + '_ {
    let c = rec.cluster;
    [
        Some((Dim::Time, 0)),
        Some((Dim::Namespace, value_hash(&rec.namespace))),
        rec.workload.as_ref().map(|(_, name)| (Dim::Workload, value_hash(name))),
    ]
    .into_iter()
    .flatten()
    .map(move |(dim, value)| index_key(dim, c, value, bucket, id))
}

/// A key of `N` bytes that redb compares with one `memcmp`. (redb compares
/// a `[u8; N]` key element by element, and serialises a tuple key into a
/// fresh `Vec` on every use: both showed in the writer's profile.) Fields
/// are big-endian, so byte order is numeric order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct BytesKey<const N: usize>(pub [u8; N]);

/// Hashed eight bytes at a time: the writer hashes a posting key for every
/// index value of every event, and the byte-slice path of the hasher was
/// two fifths of that work.
impl<const N: usize> std::hash::Hash for BytesKey<N> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut words = self.0.chunks_exact(8);
        for word in words.by_ref() {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            state.write_u64(u64::from_le_bytes(w));
        }
        for &b in words.remainder() {
            state.write_u8(b);
        }
    }
}

impl<const N: usize> redb::Value for BytesKey<N> {
    type SelfType<'a> = BytesKey<N>;
    type AsBytes<'a> = [u8; N];

    fn fixed_width() -> Option<usize> {
        Some(N)
    }

    fn from_bytes<'a>(data: &'a [u8]) -> Self
    where
        Self: 'a,
    {
        let mut key = [0u8; N];
        key.copy_from_slice(data);
        Self(key)
    }

    fn as_bytes<'a, 'b: 'a>(value: &'a Self) -> [u8; N]
    where
        Self: 'b,
    {
        value.0
    }

    fn type_name() -> redb::TypeName {
        redb::TypeName::new(&format!("podwarn::BytesKey<{N}>"))
    }
}

impl<const N: usize> redb::Key for BytesKey<N> {
    fn compare(data1: &[u8], data2: &[u8]) -> std::cmp::Ordering {
        data1.cmp(data2)
    }
}

/// `[cluster][first_seen][xxh3-128 of the uid]`: time-major, so that new
/// events land at the end of the table instead of all over it. `first_seen`
/// is fixed for an Event object (its `firstTimestamp`/`eventTime`), so it
/// is as stable an identity as the uid alone.
pub type DedupKey = BytesKey<28>;

/// The dedup key of an event.
pub fn dedup_key(cluster: u32, first_seen_us: i64, uid: &str) -> DedupKey {
    dedup_key_hashed(cluster, first_seen_us, uid_hash(uid))
}

/// The dedup key of an event whose uid hashes to `uid_hash`.
pub fn dedup_key_hashed(cluster: u32, first_seen_us: i64, uid_hash: u128) -> DedupKey {
    let mut key = [0u8; 28];
    key[..4].copy_from_slice(&cluster.to_be_bytes());
    key[4..12].copy_from_slice(&ts_bytes(first_seen_us));
    key[12..].copy_from_slice(&uid_hash.to_be_bytes());
    BytesKey(key)
}

/// The cluster of a dedup key.
pub fn dedup_key_cluster(key: &DedupKey) -> u32 {
    u32::from_be_bytes([key.0[0], key.0[1], key.0[2], key.0[3]])
}

/// The time part of a dedup key as it sorts (`first_seen` through
/// [`ts_bytes`], not microseconds).
pub fn dedup_key_time(key: &DedupKey) -> u64 {
    let mut t = [0u8; 8];
    t.copy_from_slice(&key.0[4..12]);
    u64::from_be_bytes(t)
}

/// The uid's part of the dedup key.
pub fn uid_hash(uid: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(uid.as_bytes())
}

/// Where a stored event is, and the count stored, so a replay is answered
/// from this one lookup (see `dedup.rs` for how entries are stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupEntry {
    pub seq: u64,
    pub count: u32,
    pub segment: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_keys_sort_by_time_then_seq_including_before_1970() {
        let a = index_key(Dim::Time, 1, 0, -5, 9);
        let b = index_key(Dim::Time, 1, 0, 3, 1);
        let c = index_key(Dim::Time, 1, 0, 3, 2);
        assert!(a < b && b < c);
        assert_eq!(position_of(&a), (-5, 9));
    }

    #[test]
    fn incident_buckets_are_whole_hours_and_never_overflow() {
        let hour = INCIDENT_BUCKET_US;
        assert_eq!(incident_bucket(0), 0);
        assert_eq!(incident_bucket(hour - 1), 0);
        assert_eq!(incident_bucket(hour), hour);
        assert_eq!(incident_bucket(-1), -hour);
        assert_eq!(incident_bucket(i64::MIN), i64::MIN);
        assert!(incident_bucket(i64::MAX) > i64::MAX - hour);
        for ts in [-hour - 7, -3, 5, 7 * hour + 11, i64::MAX, i64::MIN + 1] {
            let b = incident_bucket(ts);
            assert!(b <= ts && incident_bucket(b) == b, "{ts} → {b}");
        }
    }

    #[test]
    fn records_round_trip_and_refuse_unknown_formats() {
        let rec = ClusterRecord {
            name: "c".into(),
            tenant: "t".into(),
            created_us: 1,
            events_stored: 2,
            occurrences: 3,
            last_ingest_us: None,
        };
        let bytes = encode(&rec);
        assert_eq!(decode::<ClusterRecord>(&bytes).unwrap(), rec);
        let mut future = bytes.clone();
        future[0] = 9;
        assert!(decode::<ClusterRecord>(&future).is_err());
        assert!(decode::<ClusterRecord>(&[]).is_err());
    }
}
