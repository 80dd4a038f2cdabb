//! Watch streams: newline-delimited `{"type","object"}` over a chunked response, replaying
//! the watch cache from `resourceVersion`, BOOKMARKs, `sendInitialEvents`, selector
//! transitions (MODIFIED → ADDED/DELETED), 410 as an ERROR event, `timeoutSeconds`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::Shared;
use super::discovery::ResourceInfo;
use super::faults::Faults;
use super::list::Opts;
use super::status::ApiError;
use super::store::{Change, ChangeType, Snapshot, StoreError};
use super::table;

/// Changes pulled from the watch cache per lock acquisition.
const MAX_BATCH: usize = 1000;
/// The server-side default when the client sets no timeoutSeconds (minRequestTimeout).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

struct Framer {
    info: &'static ResourceInfo,
    table: bool,
    include: String,
}

impl Framer {
    fn push(&self, out: &mut Vec<u8>, ty: &str, obj: &[u8], rv: u64) {
        out.extend_from_slice(b"{\"type\":\"");
        out.extend_from_slice(ty.as_bytes());
        out.extend_from_slice(b"\",\"object\":");
        if self.table {
            let t = table::table(self.info, std::iter::once(obj), &self.include, rv, None);
            out.extend_from_slice(t.to_string().as_bytes());
        } else {
            out.extend_from_slice(obj);
        }
        out.extend_from_slice(b"}\n");
    }

    fn bookmark(&self, out: &mut Vec<u8>, rv: u64, initial_end: bool) {
        let mut meta = json!({ "resourceVersion": rv.to_string(), "creationTimestamp": null });
        if initial_end {
            meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
        }
        let obj = json!({ "kind": self.info.kind_name, "apiVersion": self.info.api_version(), "metadata": meta });
        let frame = json!({ "type": "BOOKMARK", "object": obj });
        out.extend_from_slice(frame.to_string().as_bytes());
        out.push(b'\n');
    }

    fn error(&self, err: &ApiError) -> Bytes {
        let frame = json!({ "type": "ERROR", "object": err.to_json() });
        Bytes::from(format!("{frame}\n"))
    }

    /// The cacher's filtering: an update that stops matching is a DELETED of the old state.
    fn change(&self, out: &mut Vec<u8>, c: &Change, opts: &Opts) {
        let cur = c.ty != ChangeType::Deleted && opts.matches(&c.obj);
        let old = c.prev.as_ref().is_some_and(|p| opts.matches(p));
        match (cur, old) {
            (true, false) => self.push(out, "ADDED", &c.obj.json, c.rv),
            (true, true) => self.push(out, "MODIFIED", &c.obj.json, c.rv),
            (false, true) if c.ty == ChangeType::Deleted => self.push(out, "DELETED", &c.obj.json, c.rv),
            (false, true) => {
                let prev = c.prev.as_ref().expect("old matched so it exists");
                self.push(out, "DELETED", &with_rv(prev, c.rv), c.rv);
            }
            (false, false) => {}
        }
    }
}

fn with_rv(snap: &Snapshot, rv: u64) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&snap.json).unwrap_or(Value::Null);
    v["metadata"]["resourceVersion"] = json!(rv.to_string());
    serde_json::to_vec(&v).unwrap_or_default()
}

enum Start {
    /// Stream changes after this resourceVersion, after sending `initial`.
    From { rv: u64, initial: Vec<u8> },
    /// The resourceVersion is too old: send this ERROR and end.
    Gone(Bytes),
    /// The #104171 behaviour: 200 and silence.
    Silent,
}

/// Starts a watch and returns the streaming response.
pub(crate) fn serve(
    sh: Arc<Shared>,
    info: &'static ResourceInfo,
    ns: Option<String>,
    opts: Opts,
) -> Result<Response, ApiError> {
    let requested = opts.rv_number()?;
    sh.faults.count_watch();
    let framer = Framer {
        info,
        table: opts.table,
        include: opts.include_object.clone(),
    };
    let silent_stale = sh.faults.silent_stale();
    let start = sh.store.read(|s| {
        if let Some(rv) = requested
            && !opts.send_initial
        {
            return match s.is_expired(info.kind, rv) {
                Some(_) if silent_stale => Start::Silent,
                Some(floor) => Start::Gone(framer.error(&ApiError::too_old(rv, floor))),
                None => Start::From {
                    rv,
                    initial: Vec::new(),
                },
            };
        }
        // rv unset/"0", or sendInitialEvents: synthetic ADDED for the current state.
        let cur = s.current_rv();
        let mut initial = Vec::new();
        let snaps = s.snapshot_at(info.kind, None, None, ns.as_deref()).unwrap_or_default();
        for snap in snaps.iter().filter(|snap| opts.matches(snap)) {
            framer.push(&mut initial, "ADDED", &snap.json, snap.rv);
        }
        if opts.send_initial && opts.bookmarks {
            framer.bookmark(&mut initial, cur, true);
        }
        Start::From { rv: cur, initial }
    });
    let ct = if opts.table {
        "application/json;as=Table;v=v1;g=meta.k8s.io"
    } else {
        "application/json"
    };
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let timeout = opts.timeout_secs.map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    // Subscribe before answering, so a fault switched right after the response headers
    // still reaches this stream.
    let signals = Signals {
        notify: sh.store.subscribe(),
        dropped: sh.faults.drop_signal(),
        stall: sh.faults.stall_signal(),
        shutdown: sh.shutdown.subscribe(),
    };
    tokio::spawn(run(sh, framer, ns, opts, start, tx, timeout, signals));
    let body = Body::from_stream(ReceiverStream::new(rx).map(Ok::<_, Infallible>));
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    Ok(resp)
}

struct Signals {
    notify: tokio::sync::watch::Receiver<u64>,
    dropped: tokio::sync::watch::Receiver<u64>,
    stall: tokio::sync::watch::Receiver<Option<Option<tokio::time::Instant>>>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

#[allow(clippy::too_many_arguments)] // one call site; the pieces of one watch
async fn run(
    sh: Arc<Shared>,
    framer: Framer,
    ns: Option<String>,
    opts: Opts,
    start: Start,
    tx: mpsc::Sender<Bytes>,
    timeout: Duration,
    signals: Signals,
) {
    let Signals {
        mut notify,
        mut dropped,
        mut stall,
        mut shutdown,
    } = signals;
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    // A stalled server sends nothing on new streams either, not even their first frames.
    if Faults::is_stalled(&stall) {
        tokio::select! {
            _ = Faults::wait_unstalled(&mut stall) => {}
            _ = &mut deadline => return,
            _ = dropped.changed() => return,
            _ = tx.closed() => return,
            _ = shutdown.changed() => return,
        }
    }
    let mut last_rv = match start {
        Start::Gone(frame) => {
            sh.faults.count_watch_gone();
            let _ = tx.send(frame).await;
            return;
        }
        Start::Silent => {
            tokio::select! {
                _ = &mut deadline => {}
                _ = dropped.changed() => {}
                _ = tx.closed() => {}
                _ = shutdown.changed() => {}
            }
            return;
        }
        Start::From { rv, initial } => {
            if !initial.is_empty() && tx.send(Bytes::from(initial)).await.is_err() {
                return;
            }
            rv
        }
    };
    let period = sh.config.bookmark_interval.max(Duration::from_millis(10));
    let mut bookmark = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    bookmark.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let kind = framer.info.kind;
    loop {
        if Faults::is_stalled(&stall) {
            tokio::select! {
                _ = Faults::wait_unstalled(&mut stall) => {}
                _ = &mut deadline => break,
                _ = dropped.changed() => break,
                _ = tx.closed() => break,
                _ = shutdown.changed() => break,
            }
            continue;
        }
        notify.borrow_and_update();
        let (pulled, current) = sh
            .store
            .read(|s| (s.changes_after(kind, last_rv, MAX_BATCH), s.current_rv()));
        let changes = match pulled {
            Ok(c) => c,
            Err(StoreError::Expired(floor)) => {
                sh.faults.count_watch_gone();
                let _ = tx.send(framer.error(&ApiError::too_old(last_rv, floor))).await;
                break;
            }
            Err(_) => break,
        };
        let complete = changes.len() < MAX_BATCH;
        let mut out = Vec::new();
        for c in &changes {
            if ns.as_deref().is_none_or(|n| c.obj.key.0 == n) {
                framer.change(&mut out, c, &opts);
            }
        }
        // With the whole backlog pulled under one lock, nothing of this kind is pending up
        // to `current`, so later bookmarks may carry it.
        last_rv = match (complete, changes.last()) {
            (true, _) => current,
            (false, Some(c)) => c.rv,
            (false, None) => last_rv,
        };
        if !out.is_empty() {
            tokio::select! {
                r = tx.send(Bytes::from(out)) => if r.is_err() { break },
                _ = dropped.changed() => break,
                _ = shutdown.changed() => break,
            }
        }
        if !complete {
            continue;
        }
        tokio::select! {
            r = notify.changed() => if r.is_err() { break },
            _ = bookmark.tick(), if opts.bookmarks => {
                let mut out = Vec::new();
                framer.bookmark(&mut out, last_rv, false);
                if tx.send(Bytes::from(out)).await.is_err() {
                    break;
                }
            }
            _ = &mut deadline => break,
            _ = dropped.changed() => break,
            _ = stall.changed() => {}
            _ = tx.closed() => break,
            _ = shutdown.changed() => break,
        }
    }
}
