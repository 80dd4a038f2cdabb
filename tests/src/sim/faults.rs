//! Fault switches: dropped and stalled watches, injected 5xx/429, forced 410, the silent
//! stale watch of kubernetes/kubernetes#104171, slow responses and RBAC denials.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use super::Shared;

/// A permission the simulated RBAC refuses (`*` matches anything).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denial {
    /// Verb: get, list, watch, create, update, patch, delete, or `*`.
    pub verb: String,
    /// Resource such as `events`, `pods/log`, `leases`, or `*`.
    pub resource: String,
    /// Objects still allowed by name, as a Role's `resourceNames` grants them:
    /// a request or access review naming one of these passes, one naming
    /// another object or none (list, watch, create) is denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except_names: Vec<String>,
}

impl Denial {
    fn denies(&self, verb: &str, resource: &str, name: Option<&str>) -> bool {
        (self.verb == "*" || self.verb == verb)
            && (self.resource == "*" || self.resource == resource)
            && !name.is_some_and(|n| self.except_names.iter().any(|e| e == n))
    }
}

#[derive(Debug, Clone, Copy)]
struct Failure {
    status: u16,
    until: Instant,
    retry_after: Option<u64>,
}

/// How often faults (and the 410s they lead to) were actually served, so a test can
/// prove its fault reached the client rather than assume it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounts {
    /// Watch requests answered (every re-watch after a drop, a reset or a 410 counts).
    pub watches: u64,
    /// Watches answered with a 410 `Expired` ERROR event, at their start or mid-stream.
    pub watch_gone: u64,
    /// API requests answered with an injected failure, by HTTP status.
    pub injected: BTreeMap<u16, u64>,
}

/// `None`: flowing; `Some(None)`: stalled until cleared; `Some(Some(t))`: stalled until t.
type Stall = Option<Option<Instant>>;

#[derive(Debug)]
pub(crate) struct Faults {
    drop_gen: watch::Sender<u64>,
    reset_gen: watch::Sender<u64>,
    stall: watch::Sender<Stall>,
    failure: Mutex<Option<Failure>>,
    silent_stale: AtomicBool,
    slow: Mutex<Duration>,
    denials: Mutex<Vec<Denial>>,
    watches: AtomicU64,
    watch_gone: AtomicU64,
    injected: Mutex<BTreeMap<u16, u64>>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            drop_gen: watch::channel(0).0,
            reset_gen: watch::channel(0).0,
            stall: watch::channel(None).0,
            failure: Mutex::new(None),
            silent_stale: AtomicBool::new(false),
            slow: Mutex::new(Duration::ZERO),
            denials: Mutex::new(Vec::new()),
            watches: AtomicU64::new(0),
            watch_gone: AtomicU64::new(0),
            injected: Mutex::new(BTreeMap::new()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Faults {
    /// Resolves when every open watch must end.
    pub(crate) fn drop_signal(&self) -> watch::Receiver<u64> {
        let mut rx = self.drop_gen.subscribe();
        rx.borrow_and_update();
        rx
    }

    /// Changes when every connection must be cut.
    pub(crate) fn reset_signal(&self) -> watch::Receiver<u64> {
        self.reset_gen.subscribe()
    }

    pub(crate) fn stall_signal(&self) -> watch::Receiver<Stall> {
        self.stall.subscribe()
    }

    /// Waits while watches are stalled.
    pub(crate) async fn wait_unstalled(rx: &mut watch::Receiver<Stall>) {
        loop {
            let stall = *rx.borrow_and_update();
            match stall {
                None => return,
                Some(Some(t)) if t <= Instant::now() => return,
                Some(Some(t)) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(t) => return,
                        r = rx.changed() => if r.is_err() { return },
                    }
                }
                Some(None) => {
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    pub(crate) fn is_stalled(rx: &watch::Receiver<Stall>) -> bool {
        match *rx.borrow() {
            None => false,
            Some(None) => true,
            Some(Some(t)) => t > Instant::now(),
        }
    }

    /// A watch request is being answered.
    pub(crate) fn count_watch(&self) {
        self.watches.fetch_add(1, Ordering::Relaxed);
    }

    /// A watch is being answered with a 410 ERROR event.
    pub(crate) fn count_watch_gone(&self) {
        self.watch_gone.fetch_add(1, Ordering::Relaxed);
    }

    /// The injected failure in force now, as (status, Retry-After seconds); counted as
    /// served, since every caller answers with it.
    pub(crate) fn current_failure(&self) -> Option<(u16, Option<u64>)> {
        let mut f = lock(&self.failure);
        match *f {
            Some(x) if x.until > Instant::now() => {
                *lock(&self.injected).entry(x.status).or_default() += 1;
                Some((x.status, x.retry_after))
            }
            Some(_) => {
                *f = None;
                None
            }
            None => None,
        }
    }

    pub(crate) fn silent_stale(&self) -> bool {
        self.silent_stale.load(Ordering::Relaxed)
    }

    pub(crate) fn slow(&self) -> Duration {
        *lock(&self.slow)
    }

    /// Whether `verb` on `resource` (the object `name`, if the request names one) is refused.
    pub(crate) fn is_denied(&self, verb: &str, resource: &str, name: Option<&str>) -> bool {
        lock(&self.denials).iter().any(|d| d.denies(verb, resource, name))
    }
}

/// Switches faults on a running simulator. Cheap to clone.
#[derive(Clone)]
pub struct FaultHandle(pub(crate) Arc<Shared>);

impl std::fmt::Debug for FaultHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultHandle").finish_non_exhaustive()
    }
}

impl FaultHandle {
    fn faults(&self) -> &Faults {
        &self.0.faults
    }

    /// Ends every open watch stream now (clients see the response end and re-watch).
    pub fn drop_all_watches(&self) {
        self.faults().drop_gen.send_modify(|g| *g += 1);
    }

    /// Cuts every open connection without an HTTP-level goodbye (a network blip or an
    /// API server restart): open watches fail mid-stream instead of ending cleanly.
    pub fn reset_connections(&self) {
        self.faults().reset_gen.send_modify(|g| *g += 1);
    }

    /// Stops watch streams, open and new, from sending anything (not even bookmarks) for `duration`,
    /// or until [`FaultHandle::clear_stall`] when `None`. Connections stay open.
    pub fn stall_watches(&self, duration: Option<Duration>) {
        let until = duration.map(|d| Instant::now() + d);
        self.faults().stall.send_replace(Some(until));
    }

    /// Lets stalled watches flow again.
    pub fn clear_stall(&self) {
        self.faults().stall.send_replace(None);
    }

    /// Answers every API request with `status` (500, 503, 429...) for `duration`, with a
    /// `Retry-After` header when given.
    pub fn fail_requests(&self, status: u16, duration: Duration, retry_after: Option<Duration>) {
        *lock(&self.faults().failure) = Some(Failure {
            status,
            until: Instant::now() + duration,
            retry_after: retry_after.map(|d| d.as_secs().max(1)),
        });
    }

    /// Stops injected failures.
    pub fn clear_failures(&self) {
        *lock(&self.faults().failure) = None;
    }

    /// Forgets the watch history, like an etcd compaction: any later watch or Exact list from
    /// an older resourceVersion gets 410 Gone. Open watches that are caught up continue.
    pub fn expire_versions(&self) {
        self.0.store.write(|s| s.compact_all());
    }

    /// kubernetes/kubernetes#104171: a watch from a too-old resourceVersion answers 200 and
    /// then stays silent instead of sending the 410 ERROR event.
    pub fn silent_stale_watch(&self, on: bool) {
        self.faults().silent_stale.store(on, Ordering::Relaxed);
    }

    /// Delays every API response by `delay` (zero turns it off).
    pub fn slow_responses(&self, delay: Duration) {
        *lock(&self.faults().slow) = delay;
    }

    /// Denies `verb` on `resource` both in SelfSubjectAccessReview and on the real request
    /// (403 Forbidden Status).
    pub fn deny(&self, verb: &str, resource: &str) {
        self.deny_except(verb, resource, &[]);
    }

    /// Allows `verb` on `resource` only for the objects named in `names`, as a Role with
    /// `resourceNames` does: requests and access reviews for any other object, or for
    /// none, are denied.
    pub fn deny_except(&self, verb: &str, resource: &str, names: &[&str]) {
        self.add_denial(Denial {
            verb: verb.to_string(),
            resource: resource.to_string(),
            except_names: names.iter().map(|n| n.to_string()).collect(),
        });
    }

    pub(crate) fn add_denial(&self, d: Denial) {
        let mut denials = lock(&self.faults().denials);
        // One rule per verb and resource: a later call replaces the names.
        denials.retain(|old| !(old.verb == d.verb && old.resource == d.resource));
        denials.push(d);
    }

    /// Removes one denial.
    pub fn allow(&self, verb: &str, resource: &str) {
        lock(&self.faults().denials).retain(|d| !(d.verb == verb && d.resource == resource));
    }

    /// How often faults were served so far.
    pub fn counts(&self) -> FaultCounts {
        let f = self.faults();
        FaultCounts {
            watches: f.watches.load(Ordering::Relaxed),
            watch_gone: f.watch_gone.load(Ordering::Relaxed),
            injected: lock(&f.injected).clone(),
        }
    }

    /// Turns every fault off.
    pub fn clear(&self) {
        self.clear_stall();
        self.clear_failures();
        self.silent_stale_watch(false);
        self.slow_responses(Duration::ZERO);
        lock(&self.faults().denials).clear();
    }
}
