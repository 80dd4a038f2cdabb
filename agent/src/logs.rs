//! The last lines of a crashed container's previous instance, attached to
//! crash-type warnings.
//!
//! One request per container instance (pod, container, restart count) at
//! most: fetched logs are cached (bounded, with a TTL), and concurrent
//! callers share one request. Once fetched, a log is read without waiting,
//! so the many warnings of a crash loop pass enrichment at full speed.
//!
//! A log goes to the collector once per warning: Kubernetes updates a crash
//! loop's BackOff Event (a higher `count`) many times per container instance,
//! and the collector keeps a record's logs when an update carries none
//! (PROTOCOL.md), so updates after the first leave out the same text again.
//!
//! Logs are best effort where warnings are not: a fetch waits at most
//! [`RATE_WAIT`] for the agent's API rate limit (`--api-qps`), else the
//! warning goes on without log lines (counted in
//! `podwarn_agent_logs_skipped_total`), as do the instance's other warnings
//! for [`SKIP_RETRY`], after which a later one tries again. A crash storm then
//! degrades the attachments, not the delivery or the latency of the warnings
//! themselves.

use crate::access::RateLimiter;
use crate::ops::{PermissionLabel, metrics};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use podwarn_shared::wire::limits;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

/// Longest a log fetch waits for the API rate limit before the warning goes without it.
pub const RATE_WAIT: Duration = Duration::from_millis(250);
/// How long warnings of an instance whose fetch the rate limit refused go
/// without a log before one tries again.
pub const SKIP_RETRY: Duration = Duration::from_secs(1);
/// Container instances whose log is kept.
const CAPACITY: usize = 256;
/// How long a fetched log is kept.
const TTL: Duration = Duration::from_secs(600);
/// Warnings remembered as having been shipped with their log; when full the
/// memory starts over, which costs one more copy of each log.
const ATTACHED_CAPACITY: usize = 65_536;

/// Hash of (namespace, pod, container, restart count): one container
/// instance. Hashed so a lookup allocates nothing; a 64-bit collision among
/// a few hundred instances is not a practical concern.
type Key = u64;

fn instance(parts: [&[u8]; 3], restarts: i32) -> u64 {
    let mut hasher = Xxh3::new();
    for part in parts {
        hasher.update(part);
        hasher.update(b"/");
    }
    hasher.update(&restarts.to_le_bytes());
    hasher.digest()
}

/// A fetch's result: the text (None when empty or unavailable), or `Skipped`
/// when the rate limit did not allow it (not cached: tried again later).
#[derive(Debug, Clone)]
enum Fetched {
    Text(Option<Arc<str>>),
    Skipped,
}

type Fetch = Shared<BoxFuture<'static, Fetched>>;

#[derive(Default)]
struct Slots {
    map: HashMap<Key, (Fetch, Instant)>,
    /// Insertion order, for eviction.
    order: VecDeque<Key>,
}

/// Reads previous-instance logs; cheap to share behind an `Arc`.
pub struct PreviousLogs {
    client: kube::Client,
    limiter: Arc<RateLimiter>,
    lines: u32,
    max_bytes: u64,
    denied: AtomicBool,
    slots: Mutex<Slots>,
    /// Event uid hash → hash of the instance whose log went with it.
    attached: Mutex<HashMap<u64, u64>>,
}

impl std::fmt::Debug for PreviousLogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreviousLogs")
            .field("lines", &self.lines)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

/// What [`PreviousLogs::cached`] knows without waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    /// Logs are off (`--no-logs`, or `pods/log` denied): there is nothing to wait for.
    Off,
    /// Fetched: the text, or None when there was none.
    Ready(Option<Arc<str>>),
    /// Not fetched yet, or a fetch is under way: [`PreviousLogs::get`] waits for it.
    Wait,
}

impl PreviousLogs {
    /// `lines` lines (0: never fetch), at most `max_bytes`, through `limiter`.
    pub fn new(client: kube::Client, limiter: Arc<RateLimiter>, lines: u32, max_bytes: u64) -> Self {
        Self {
            client,
            limiter,
            lines,
            max_bytes: max_bytes.min(limits::LOGS as u64),
            denied: AtomicBool::new(false),
            slots: Mutex::default(),
            attached: Mutex::default(),
        }
    }

    /// Whether warning `uid` was already given the log of this instance (see
    /// the module docs); if not, records that it now is when `attach`.
    pub fn already_attached(&self, uid: &str, pod: &str, container: &str, restarts: i32, attach: bool) -> bool {
        let key = xxh3_64(uid.as_bytes());
        let mut hasher = Xxh3::new();
        for part in [
            pod.as_bytes(),
            b"/",
            container.as_bytes(),
            b"/",
            &restarts.to_le_bytes(),
        ] {
            hasher.update(part);
        }
        let instance = hasher.digest();
        let mut attached = self.attached.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if attached.get(&key) == Some(&instance) {
            return true;
        }
        if attach {
            if attached.len() >= ATTACHED_CAPACITY {
                attached.clear();
            }
            attached.insert(key, instance);
        }
        false
    }

    fn off(&self) -> bool {
        self.lines == 0 || self.denied.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The log of an instance if it is known now, without waiting.
    pub fn cached(&self, namespace: &str, pod: &str, container: &str, restarts: i32) -> Cached {
        if self.off() {
            return Cached::Off;
        }
        let key = instance([namespace.as_bytes(), pod.as_bytes(), container.as_bytes()], restarts);
        let slots = self.lock();
        match slots.map.get(&key).map(|(fetch, at)| (fetch.peek(), at.elapsed())) {
            Some((Some(Fetched::Text(text)), age)) if age < TTL => Cached::Ready(text.clone()),
            Some((Some(Fetched::Skipped), age)) if age < SKIP_RETRY => {
                metrics().logs_skipped.inc();
                Cached::Ready(None)
            }
            _ => Cached::Wait,
        }
    }

    /// Whether a slot can still answer (a fetched log within its TTL, a
    /// refusal within [`SKIP_RETRY`], or a fetch under way).
    fn fresh(fetch: &Fetch, at: Instant) -> bool {
        match fetch.peek() {
            Some(Fetched::Skipped) => at.elapsed() < SKIP_RETRY,
            _ => at.elapsed() < TTL,
        }
    }

    /// The log of an instance: cached, or fetched once for all concurrent callers.
    pub async fn get(self: &Arc<Self>, namespace: &str, pod: &str, container: &str, restarts: i32) -> Option<Arc<str>> {
        if self.off() {
            return None;
        }
        let key = instance([namespace.as_bytes(), pod.as_bytes(), container.as_bytes()], restarts);
        let fetch = {
            let mut slots = self.lock();
            match slots.map.get(&key) {
                Some((fetch, at)) if Self::fresh(fetch, *at) => fetch.clone(),
                _ => {
                    let names = (namespace.to_owned(), pod.to_owned(), container.to_owned());
                    let fetch = self.clone().fetch(names).boxed().shared();
                    if slots.map.insert(key, (fetch.clone(), Instant::now())).is_none() {
                        slots.order.push_back(key);
                    }
                    while slots.map.len() > CAPACITY {
                        let Some(oldest) = slots.order.pop_front() else { break };
                        slots.map.remove(&oldest);
                    }
                    fetch
                }
            }
        };
        match fetch.await {
            Fetched::Text(text) => text,
            Fetched::Skipped => {
                metrics().logs_skipped.inc();
                None
            }
        }
    }

    async fn fetch(self: Arc<Self>, (namespace, pod, container): (String, String, String)) -> Fetched {
        if !self.limiter.acquire_within(RATE_WAIT).await {
            return Fetched::Skipped;
        }
        metrics()
            .api_requests
            .get_or_create(&crate::ops::RequestLabel {
                request: "get pods/log",
            })
            .inc();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let params = LogParams {
            container: Some(container.clone()),
            previous: true,
            tail_lines: Some(i64::from(self.lines)),
            limit_bytes: Some(self.max_bytes as i64),
            ..LogParams::default()
        };
        match api.logs(&pod, &params).await {
            Ok(text) if text.is_empty() => Fetched::Text(None),
            Ok(text) => Fetched::Text(Some(text.into())),
            Err(kube::Error::Api(status)) if status.code == 403 => {
                if !self.denied.swap(true, Ordering::Relaxed) {
                    metrics()
                        .permission_missing
                        .get_or_create(&PermissionLabel {
                            permission: "get pods/log",
                        })
                        .inc();
                    tracing::warn!(
                        permission = "get pods/log",
                        consequence = "crash warnings are shipped without log lines",
                        "optional permission missing; `podwarn-agent check` shows the RBAC rule to add"
                    );
                }
                Fetched::Text(None)
            }
            Err(e) => {
                tracing::debug!(namespace, pod, container, error = %e, "previous log unavailable");
                Fetched::Text(None)
            }
        }
    }
}
