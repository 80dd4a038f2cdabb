//! Event emission as the kubelet's and scheduler's recorders do it: an isomorphic repeat
//! updates the same Event (count up, lastTimestamp moves), new-style events carry
//! `series`/`eventTime` instead, and Events vanish after a TTL with a DELETED to watchers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSeries, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use serde::{Deserialize, Serialize};

use super::record::Occurrence;
use super::store::{Key, Kind, State, new_uid, now, parse_uid};

/// A handle to an emitted Event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRef {
    /// `metadata.uid` (stable across repeats).
    pub uid: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// The count this emission produced (1 for a new Event).
    pub count: u32,
}

#[derive(Debug, Default)]
pub(crate) struct EventIndex {
    /// Hash of the correlation attributes → the Event they aggregate into.
    correlator: HashMap<u64, Key>,
    by_key: HashMap<Key, (u128, u64)>,
    by_uid: HashMap<u128, Key>,
}

/// Legacy core/v1 recorder (count/first/lastTimestamp) or events.k8s.io recorder
/// written through core/v1 (eventTime/series, empty legacy timestamps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    Legacy,
    Series,
}

#[derive(Debug, Clone)]
pub(crate) struct EmitSpec {
    pub(crate) involved: ObjectReference,
    pub(crate) event_namespace: String,
    pub(crate) warning: bool,
    pub(crate) reason: String,
    pub(crate) message: String,
    pub(crate) component: String,
    pub(crate) host: Option<String>,
    pub(crate) style: Style,
}

/// What the kubelet's EventCorrelator aggregates on (source, object, type, reason,
/// message), hashed; a 64-bit collision among a test's events is not a practical concern.
pub(crate) fn correlation_key(parts: &[&str]) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

fn spec_key(spec: &EmitSpec) -> u64 {
    let io = &spec.involved;
    correlation_key(&[
        &spec.event_namespace,
        io.kind.as_deref().unwrap_or(""),
        io.name.as_deref().unwrap_or(""),
        io.field_path.as_deref().unwrap_or(""),
        if spec.warning { "Warning" } else { "Normal" },
        &spec.reason,
        &spec.message,
        if spec.style == Style::Series {
            "series"
        } else {
            "legacy"
        },
        &spec.component,
    ])
}

/// Repeats the Event with this correlation key, if one exists.
pub(crate) fn repeat_correlated(state: &mut State, corr: u64) -> Option<EventRef> {
    let key = state.events.correlator.get(&corr)?.clone();
    let uid = state.events.by_key.get(&key)?.0;
    bump(state, &key, uid)
}

fn occurrence_count(ev: &Event) -> u32 {
    match &ev.series {
        Some(s) => s.count.unwrap_or(1).max(1) as u32,
        None => ev.count.unwrap_or(1).max(1) as u32,
    }
}

/// Emits one occurrence, merging it into an existing isomorphic Event if there is one.
pub(crate) fn emit(state: &mut State, spec: EmitSpec) -> EventRef {
    let corr = spec_key(&spec);
    if let Some(r) = repeat_correlated(state, corr) {
        return r;
    }
    create(state, spec, corr)
}

/// Repeats an existing Event (same uid, count + 1), as the correlator does.
pub(crate) fn repeat(state: &mut State, uid: &str) -> Option<EventRef> {
    let uid = parse_uid(uid)?;
    let key = state.events.by_uid.get(&uid)?.clone();
    bump(state, &key, uid)
}

fn bump(state: &mut State, key: &Key, uid: u128) -> Option<EventRef> {
    let (occ, _) = state.modify_same_selectors::<Event, _>(&key.0, &key.1, |ev| {
        if ev.event_time.is_some() {
            let next = ev.series.as_ref().and_then(|s| s.count).unwrap_or(1) + 1;
            ev.series = Some(EventSeries {
                count: Some(next),
                last_observed_time: Some(MicroTime(jiff::Timestamp::now())),
            });
        } else {
            ev.count = Some(ev.count.unwrap_or(1) + 1);
            ev.last_timestamp = Some(now());
        }
        Occ::of(ev)
    })?;
    Some(occ.log(state, uid))
}

/// What the emitted log and the caller need from an Event, taken without cloning it.
struct Occ {
    namespace: String,
    name: String,
    object: String,
    kind: String,
    reason: String,
    warning: bool,
    count: u32,
    uid: String,
}

impl Occ {
    fn of(ev: &Event) -> Self {
        let io = &ev.involved_object;
        Self {
            namespace: ev.metadata.namespace.clone().unwrap_or_default(),
            name: ev.metadata.name.clone().unwrap_or_default(),
            object: io.name.clone().unwrap_or_default(),
            kind: io.kind.clone().unwrap_or_default(),
            reason: ev.reason.clone().unwrap_or_default(),
            warning: ev.type_.as_deref() == Some("Warning"),
            count: occurrence_count(ev),
            uid: ev.metadata.uid.clone().unwrap_or_default(),
        }
    }

    fn log(self, state: &mut State, uid: u128) -> EventRef {
        state.emitted.record(Occurrence {
            uid,
            namespace: &self.namespace,
            object: &self.object,
            kind: &self.kind,
            reason: &self.reason,
            warning: self.warning,
            count: self.count,
        });
        EventRef {
            uid: self.uid,
            namespace: self.namespace,
            name: self.name,
            count: self.count,
        }
    }
}

fn create(state: &mut State, spec: EmitSpec, corr: u64) -> EventRef {
    let (uid_num, uid) = new_uid();
    let base = spec.involved.name.clone().unwrap_or_default();
    // The recorders name events `<object>.<hex nanos>`; bump on a same-nanosecond collision.
    let mut nanos = jiff::Timestamp::now().as_nanosecond() as u128;
    let mut name = format!("{base}.{nanos:x}");
    while state.get::<Event>(&spec.event_namespace, &name).is_some() {
        nanos += 1;
        name = format!("{base}.{nanos:x}");
    }
    let t = now();
    let series = spec.style == Style::Series;
    let reporting_instance = match (&spec.host, series) {
        (Some(h), _) => h.clone(),
        (None, true) => format!("{}-sim", spec.component),
        (None, false) => String::new(),
    };
    let ev = Event {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(spec.event_namespace.clone()),
            uid: Some(uid),
            ..Default::default()
        },
        involved_object: spec.involved.clone(),
        reason: Some(spec.reason.clone()),
        message: Some(spec.message.clone()),
        type_: Some(if spec.warning { "Warning" } else { "Normal" }.to_string()),
        source: Some(if series {
            EventSource::default()
        } else {
            EventSource {
                component: Some(spec.component.clone()),
                host: spec.host.clone(),
            }
        }),
        first_timestamp: (!series).then(|| t.clone()),
        last_timestamp: (!series).then(|| t.clone()),
        count: (!series).then_some(1),
        event_time: series.then_some(MicroTime(t.0)),
        action: series.then(|| "Scheduling".to_string()),
        reporting_component: Some(spec.component.clone()),
        reporting_instance: Some(reporting_instance),
        ..Default::default()
    };
    let ev = state.create(ev).expect("event names are made unique above");
    let key = (spec.event_namespace.clone(), name);
    state.events.correlator.insert(corr, key.clone());
    state.events.by_key.insert(key.clone(), (uid_num, corr));
    state.events.by_uid.insert(uid_num, key);
    Occ::of(&ev).log(state, uid_num)
}

/// Deletes an Event by uid (watchers get DELETED). Returns whether it existed.
pub(crate) fn delete_uid(state: &mut State, uid: &str) -> bool {
    let Some(key) = parse_uid(uid).and_then(|u| state.events.by_uid.get(&u).cloned()) else {
        return false;
    };
    delete_key(state, &key)
}

pub(crate) fn delete_key(state: &mut State, key: &Key) -> bool {
    if let Some((uid, corr)) = state.events.by_key.remove(key) {
        state.events.by_uid.remove(&uid);
        if state.events.correlator.get(&corr) == Some(key) {
            state.events.correlator.remove(&corr);
        }
    }
    state.delete::<Event>(&key.0, &key.1).is_some()
}

/// Deletes every Event not written for `ttl` (the etcd lease the real server attaches).
pub(crate) fn expire(state: &mut State, ttl: Duration) -> usize {
    let Some(cutoff) = Instant::now().checked_sub(ttl) else {
        return 0;
    };
    let keys = state.written_before(Kind::Event, cutoff);
    keys.iter().filter(|k| delete_key(state, k)).count()
}

/// Deletes every Event now.
pub(crate) fn expire_all(state: &mut State) -> usize {
    let keys = state.written_before(Kind::Event, Instant::now() + Duration::from_secs(1));
    keys.iter().filter(|k| delete_key(state, k)).count()
}
