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
    correlator: HashMap<String, Key>,
    by_key: HashMap<Key, (u128, String)>,
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

fn correlation_key(spec: &EmitSpec) -> String {
    let io = &spec.involved;
    let o = |v: &Option<String>| v.clone().unwrap_or_default();
    format!(
        "{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{:?}\u{1f}{}",
        spec.event_namespace,
        o(&io.kind),
        o(&io.name),
        o(&io.field_path),
        spec.warning,
        spec.reason,
        spec.message,
        spec.style,
        spec.component
    )
}

fn occurrence_count(ev: &Event) -> u32 {
    match &ev.series {
        Some(s) => s.count.unwrap_or(1).max(1) as u32,
        None => ev.count.unwrap_or(1).max(1) as u32,
    }
}

fn log_occurrence(state: &mut State, uid: u128, ev: &Event) -> EventRef {
    let io = &ev.involved_object;
    let count = occurrence_count(ev);
    let namespace = ev.metadata.namespace.clone().unwrap_or_default();
    let name = ev.metadata.name.clone().unwrap_or_default();
    state.emitted.record(Occurrence {
        uid,
        namespace: &namespace,
        object: io.name.as_deref().unwrap_or(""),
        kind: io.kind.as_deref().unwrap_or(""),
        reason: ev.reason.as_deref().unwrap_or(""),
        warning: ev.type_.as_deref() == Some("Warning"),
        count,
    });
    EventRef {
        uid: ev.metadata.uid.clone().unwrap_or_default(),
        namespace,
        name,
        count,
    }
}

/// Emits one occurrence, merging it into an existing isomorphic Event if there is one.
pub(crate) fn emit(state: &mut State, spec: EmitSpec) -> EventRef {
    let corr = correlation_key(&spec);
    if let Some(key) = state.events.correlator.get(&corr).cloned()
        && let Some(uid) = state.events.by_key.get(&key).map(|v| v.0)
        && let Some(r) = bump(state, &key, uid)
    {
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
    let ev = state.modify::<Event>(&key.0, &key.1, |ev| {
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
    })?;
    Some(log_occurrence(state, uid, &ev))
}

fn create(state: &mut State, spec: EmitSpec, corr: String) -> EventRef {
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
    state.events.correlator.insert(corr.clone(), key.clone());
    state.events.by_key.insert(key.clone(), (uid_num, corr));
    state.events.by_uid.insert(uid_num, key);
    log_occurrence(state, uid_num, &ev)
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
