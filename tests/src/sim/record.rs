//! The log of every Event the simulator emitted, kept compact (interned strings, numeric
//! uids) so a long storm does not grow it much beyond one small record per distinct Event.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::store::format_uid;

/// One emitted Event with its latest count, for comparing with what the collector stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EmittedRecord {
    /// The Event's `metadata.uid`.
    pub uid: String,
    /// The Event's namespace.
    pub namespace: String,
    /// Name of the involved object (the Pod for Pod events).
    pub pod: String,
    /// Kind of the involved object (`Pod`, `Node`, `Deployment`, ...).
    pub kind: String,
    /// The Event's reason.
    pub reason: String,
    /// Latest `count` (or `series.count` for new-style events): counts 1..=count were all emitted.
    pub count: u32,
    /// `Warning` or `Normal`.
    #[serde(rename = "type")]
    pub type_: String,
}

#[derive(Debug)]
struct Compact {
    uid: u128,
    namespace: Arc<str>,
    object: Arc<str>,
    kind: Arc<str>,
    reason: Arc<str>,
    warning: bool,
    count: u32,
}

#[derive(Debug, Default)]
pub(crate) struct EmittedLog {
    index: HashMap<u128, usize>,
    records: Vec<Compact>,
    strings: HashSet<Arc<str>>,
    warnings: u64,
}

/// What identifies an emitted occurrence.
#[derive(Debug)]
pub(crate) struct Occurrence<'a> {
    pub(crate) uid: u128,
    pub(crate) namespace: &'a str,
    pub(crate) object: &'a str,
    pub(crate) kind: &'a str,
    pub(crate) reason: &'a str,
    pub(crate) warning: bool,
    pub(crate) count: u32,
}

impl EmittedLog {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(v) = self.strings.get(s) {
            return v.clone();
        }
        let v: Arc<str> = Arc::from(s);
        self.strings.insert(v.clone());
        v
    }

    pub(crate) fn record(&mut self, o: Occurrence<'_>) {
        if o.warning {
            self.warnings += 1;
        }
        if let Some(&i) = self.index.get(&o.uid) {
            self.records[i].count = o.count;
            return;
        }
        let rec = Compact {
            uid: o.uid,
            namespace: self.intern(o.namespace),
            object: self.intern(o.object),
            kind: self.intern(o.kind),
            reason: self.intern(o.reason),
            warning: o.warning,
            count: o.count,
        };
        self.index.insert(o.uid, self.records.len());
        self.records.push(rec);
    }

    /// Number of Warning occurrences ever emitted (each count increment is one).
    pub(crate) fn warning_occurrences(&self) -> u64 {
        self.warnings
    }

    pub(crate) fn all(&self) -> Vec<EmittedRecord> {
        self.records
            .iter()
            .map(|r| EmittedRecord {
                uid: format_uid(r.uid),
                namespace: r.namespace.to_string(),
                pod: r.object.to_string(),
                kind: r.kind.to_string(),
                reason: r.reason.to_string(),
                count: r.count,
                type_: if r.warning { "Warning" } else { "Normal" }.to_string(),
            })
            .collect()
    }
}
