//! The object store: one global resourceVersion counter (like etcd), objects per resource
//! kind ordered by key (like etcd keys), and a bounded ring of recent changes per kind (the
//! API server's watch cache). A resourceVersion older than the ring is "too old" (410).

mod history;

use std::any::Any;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::Serialize;
use tokio::sync::watch;

use super::events::EventIndex;
use super::logs::LogStore;
use super::record::EmittedLog;

/// Resource kinds the simulator stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Event,
    Pod,
    Namespace,
    Node,
    ReplicaSet,
    Deployment,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
    Lease,
}

impl Kind {
    pub(crate) const ALL: [Kind; 11] = [
        Kind::Event,
        Kind::Pod,
        Kind::Namespace,
        Kind::Node,
        Kind::ReplicaSet,
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::DaemonSet,
        Kind::Job,
        Kind::CronJob,
        Kind::Lease,
    ];
}

/// `(namespace, name)`; namespace is empty for cluster-scoped kinds.
pub(crate) type Key = (String, String);

/// One serialized version of an object plus what selectors need.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) rv: u64,
    pub(crate) key: Key,
    pub(crate) json: Bytes,
    pub(crate) labels: Arc<BTreeMap<String, String>>,
    pub(crate) fields: Arc<Vec<(&'static str, String)>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One entry of the watch cache.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub(crate) rv: u64,
    pub(crate) at: Instant,
    pub(crate) ty: ChangeType,
    pub(crate) obj: Arc<Snapshot>,
    pub(crate) prev: Option<Arc<Snapshot>>,
}

/// A typed Kubernetes object the store can hold.
pub(crate) trait SimObject:
    Serialize + Clone + Send + Sync + 'static + k8s_openapi::Metadata<Ty = ObjectMeta>
{
    const STORE_KIND: Kind;
    /// Selectable fields besides `metadata.name` and `metadata.namespace`.
    fn fields(&self) -> Vec<(&'static str, String)>;
}

struct Entry {
    typed: Box<dyn Any + Send + Sync>,
    snap: Arc<Snapshot>,
    written: Instant,
}

#[derive(Default)]
struct Table {
    objects: BTreeMap<Key, Entry>,
    history: VecDeque<Change>,
    /// Highest resourceVersion whose successors are no longer all in `history`.
    floor: u64,
}

/// Store errors, mapped to Status objects by the HTTP layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoreError {
    NotFound,
    AlreadyExists,
    Conflict,
    /// The requested resourceVersion is older than the kept window; carries the floor.
    Expired(u64),
}

/// Everything behind the store lock.
pub(crate) struct State {
    rv: u64,
    window: usize,
    tables: Vec<Table>,
    pub(crate) events: EventIndex,
    pub(crate) emitted: EmittedLog,
    pub(crate) logs: LogStore,
}

/// Shared handle to the state plus the "something changed" signal watchers wait on.
pub(crate) struct Store {
    state: Mutex<State>,
    notify: watch::Sender<u64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    pub(crate) fn new(window: usize) -> Arc<Self> {
        let state = State {
            rv: 1,
            window: window.max(1),
            tables: Kind::ALL.iter().map(|_| Table::default()).collect(),
            events: EventIndex::default(),
            emitted: EmittedLog::default(),
            logs: LogStore::default(),
        };
        let (notify, _) = watch::channel(1);
        Arc::new(Self {
            state: Mutex::new(state),
            notify,
        })
    }

    /// Runs `f` under the lock and wakes watchers if it wrote anything.
    pub(crate) fn write<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let before = guard.rv;
        let out = f(&mut guard);
        let after = guard.rv;
        drop(guard);
        if after != before {
            self.notify.send_replace(after);
        }
        out
    }

    pub(crate) fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        let guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&guard)
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.notify.subscribe()
    }
}

fn snapshot<T: SimObject>(obj: &T, rv: u64) -> Arc<Snapshot> {
    let meta = obj.metadata();
    let key = (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    );
    let mut fields = vec![("metadata.name", key.1.clone()), ("metadata.namespace", key.0.clone())];
    fields.extend(obj.fields());
    let json = serde_json::to_vec(obj).expect("k8s-openapi objects always serialize");
    Arc::new(Snapshot {
        rv,
        key,
        json: Bytes::from(json),
        labels: Arc::new(meta.labels.clone().unwrap_or_default()),
        fields: Arc::new(fields),
    })
}

/// A fresh random UUID (version 4 layout), as the API server assigns.
pub(crate) fn new_uid() -> (u128, String) {
    let mut b = rand::random::<u128>().to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let v = u128::from_be_bytes(b);
    (v, format_uid(v))
}

pub(crate) fn format_uid(v: u128) -> String {
    let h = format!("{v:032x}");
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

pub(crate) fn parse_uid(s: &str) -> Option<u128> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    (hex.len() == 32).then(|| u128::from_str_radix(&hex, 16).ok())?
}

pub(crate) fn now() -> Time {
    Time(jiff::Timestamp::now())
}

impl State {
    pub(crate) fn current_rv(&self) -> u64 {
        self.rv
    }

    fn table(&self, kind: Kind) -> &Table {
        &self.tables[kind as usize]
    }

    fn table_mut(&mut self, kind: Kind) -> &mut Table {
        &mut self.tables[kind as usize]
    }

    pub(crate) fn get<T: SimObject>(&self, ns: &str, name: &str) -> Option<&T> {
        let key = (ns.to_string(), name.to_string());
        self.table(T::STORE_KIND).objects.get(&key)?.typed.downcast_ref::<T>()
    }

    pub(crate) fn get_snapshot(&self, kind: Kind, ns: &str, name: &str) -> Option<Arc<Snapshot>> {
        let key = (ns.to_string(), name.to_string());
        self.table(kind).objects.get(&key).map(|e| e.snap.clone())
    }

    pub(crate) fn iter<T: SimObject>(&self) -> impl Iterator<Item = &T> {
        self.table(T::STORE_KIND)
            .objects
            .values()
            .filter_map(|e| e.typed.downcast_ref::<T>())
    }

    /// Keys of objects of `kind` last written before `cutoff`.
    pub(crate) fn written_before(&self, kind: Kind, cutoff: Instant) -> Vec<Key> {
        self.table(kind)
            .objects
            .iter()
            .filter(|(_, e)| e.written < cutoff)
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn record(&mut self, kind: Kind, ty: ChangeType, obj: Arc<Snapshot>, prev: Option<Arc<Snapshot>>) {
        let window = self.window;
        let table = self.table_mut(kind);
        table.history.push_back(Change {
            rv: obj.rv,
            at: Instant::now(),
            ty,
            obj,
            prev,
        });
        while table.history.len() > window {
            if let Some(old) = table.history.pop_front() {
                table.floor = old.rv;
            }
        }
    }

    /// Stores a new object, assigning uid, creationTimestamp and resourceVersion.
    pub(crate) fn create<T: SimObject>(&mut self, mut obj: T) -> Result<T, StoreError> {
        let meta = obj.metadata();
        let key = (
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        );
        if self.table(T::STORE_KIND).objects.contains_key(&key) {
            return Err(StoreError::AlreadyExists);
        }
        self.rv += 1;
        let rv = self.rv;
        let meta = obj.metadata_mut();
        if meta.uid.is_none() {
            meta.uid = Some(new_uid().1);
        }
        if meta.creation_timestamp.is_none() {
            meta.creation_timestamp = Some(now());
        }
        meta.resource_version = Some(rv.to_string());
        let snap = snapshot(&obj, rv);
        self.table_mut(T::STORE_KIND).objects.insert(
            key,
            Entry {
                typed: Box::new(obj.clone()),
                snap: snap.clone(),
                written: Instant::now(),
            },
        );
        self.record(T::STORE_KIND, ChangeType::Added, snap, None);
        Ok(obj)
    }

    /// Replaces an object; `expected_rv` gives optimistic concurrency (409 on mismatch).
    pub(crate) fn update<T: SimObject>(&mut self, mut obj: T, expected_rv: Option<u64>) -> Result<T, StoreError> {
        let meta = obj.metadata();
        let key = (
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        );
        let Some(entry) = self.table(T::STORE_KIND).objects.get(&key) else {
            return Err(StoreError::NotFound);
        };
        if expected_rv.is_some_and(|rv| rv != entry.snap.rv) {
            return Err(StoreError::Conflict);
        }
        let old = entry.typed.downcast_ref::<T>().ok_or(StoreError::NotFound)?;
        let (uid, created) = (old.metadata().uid.clone(), old.metadata().creation_timestamp.clone());
        let prev = entry.snap.clone();
        self.rv += 1;
        let rv = self.rv;
        let meta = obj.metadata_mut();
        meta.uid = uid;
        meta.creation_timestamp = created;
        meta.resource_version = Some(rv.to_string());
        let snap = snapshot(&obj, rv);
        self.table_mut(T::STORE_KIND).objects.insert(
            key,
            Entry {
                typed: Box::new(obj.clone()),
                snap: snap.clone(),
                written: Instant::now(),
            },
        );
        self.record(T::STORE_KIND, ChangeType::Modified, snap, Some(prev));
        Ok(obj)
    }

    /// Applies `f` to a copy of the stored object and writes it back.
    pub(crate) fn modify<T: SimObject>(&mut self, ns: &str, name: &str, f: impl FnOnce(&mut T)) -> Option<T> {
        let mut obj = self.get::<T>(ns, name)?.clone();
        f(&mut obj);
        self.update(obj, None).ok()
    }

    /// Mutates the stored object in place (no copy of the object), for hot paths such as
    /// event repeats whose selectable fields and labels cannot change.
    pub(crate) fn modify_same_selectors<T: SimObject, R>(
        &mut self,
        ns: &str,
        name: &str,
        f: impl FnOnce(&mut T) -> R,
    ) -> Option<(R, Arc<Snapshot>)> {
        let key = (ns.to_string(), name.to_string());
        let rv = self.rv + 1;
        let entry = self.tables[T::STORE_KIND as usize].objects.get_mut(&key)?;
        let obj = entry.typed.downcast_mut::<T>()?;
        let out = f(obj);
        obj.metadata_mut().resource_version = Some(rv.to_string());
        let prev = entry.snap.clone();
        let json = serde_json::to_vec(&*obj).expect("k8s-openapi objects always serialize");
        let snap = Arc::new(Snapshot {
            rv,
            key: prev.key.clone(),
            json: Bytes::from(json),
            labels: prev.labels.clone(),
            fields: prev.fields.clone(),
        });
        entry.snap = snap.clone();
        entry.written = Instant::now();
        self.rv = rv;
        self.record(T::STORE_KIND, ChangeType::Modified, snap.clone(), Some(prev));
        Some((out, snap))
    }

    /// Deletes an object; watchers get DELETED with the final state at a new resourceVersion.
    pub(crate) fn delete<T: SimObject>(&mut self, ns: &str, name: &str) -> Option<T> {
        let key = (ns.to_string(), name.to_string());
        let entry = self.table_mut(T::STORE_KIND).objects.remove(&key)?;
        let mut obj = entry.typed.downcast_ref::<T>()?.clone();
        self.rv += 1;
        let rv = self.rv;
        obj.metadata_mut().resource_version = Some(rv.to_string());
        let snap = snapshot(&obj, rv);
        self.record(T::STORE_KIND, ChangeType::Deleted, snap, Some(entry.snap));
        Some(obj)
    }
}
