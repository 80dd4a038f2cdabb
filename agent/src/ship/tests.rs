//! The shipper against a scripted in-test HTTPS collector with mutual TLS.

use super::testserver::{AGENT_URI, Client, Pki, Step, TestCollector};
use super::*;
use podwarn_shared::{IncidentType, Severity};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::SystemTime;
use tokio::task::JoinHandle;

fn event(i: usize) -> WarningEvent {
    let at: jiff::Timestamp = "2026-11-22T10:00:00Z".parse().expect("timestamp");
    WarningEvent {
        uid: format!("uid-{i:05}"),
        namespace: "shop".into(),
        pod: format!("api-7d9f8b6c5-{i}"),
        pod_uid: Some(format!("pod-uid-{i}")),
        node: Some("node-a".into()),
        workload: None,
        container: Some("app".into()),
        reason: "BackOff".into(),
        message: format!("Back-off restarting failed container app in pod api-{i}"),
        incident_type: IncidentType::CrashLoopBackOff,
        severity: Severity::High,
        count: 1,
        first_seen: at,
        last_seen: at,
        source: Some("kubelet".into()),
        logs: None,
    }
}

fn fast() -> Tuning {
    Tuning {
        timeouts: Timeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_secs(1),
        },
        live_retries: 2,
        live_min_delay: Duration::from_millis(50),
        live_budget: Duration::from_secs(3),
        live_max_wait: Duration::from_millis(1500),
        drain_min_delay: Duration::from_millis(100),
        drain_max_delay: Duration::from_millis(250),
    }
}

fn config(url: &str, pki: &Pki, spool_dir: &Path) -> ShipConfig {
    ShipConfig {
        collector: url.into(),
        cert_dir: pki.cert_dir.path().into(),
        spool_dir: spool_dir.into(),
        spool_max_bytes: 64 << 20,
        batch_max_events: 10,
        batch_interval: Duration::from_millis(100),
        agent_version: "test-1".into(),
    }
}

/// A port nothing listens on (bound, then released).
async fn dead_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

struct Running {
    tx: mpsc::Sender<WarningEvent>,
    shutdown: CancellationToken,
    readiness: Arc<Readiness>,
    spool: Spool,
    held: Arc<Held>,
    task: JoinHandle<Result<(), ShipError>>,
}

impl Running {
    fn start(config: ShipConfig) -> Self {
        Self::start_shipper(Shipper::with_tuning(config, fast()).expect("shipper"))
    }

    fn start_shipper(shipper: Shipper) -> Self {
        let spool = shipper.spool.clone();
        let held = shipper.held.clone();
        let (tx, rx) = mpsc::channel(100);
        let shutdown = CancellationToken::new();
        let readiness = Arc::new(Readiness::default());
        let task = tokio::spawn(shipper.run(rx, shutdown.clone(), readiness.clone()));
        Self {
            tx,
            shutdown,
            readiness,
            spool,
            held,
            task,
        }
    }

    async fn send(&self, range: std::ops::Range<usize>) {
        for i in range {
            self.tx.send(event(i)).await.expect("shipper running");
        }
    }

    /// Cancels, waits for `run` to return, and releases the spool.
    async fn stop(self) -> Result<(), ShipError> {
        self.shutdown.cancel();
        drop(self.tx);
        let result = tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("run returns promptly after shutdown")
            .expect("no panic");
        drop(self.spool);
        result
    }
}

/// Polls `cond` every 20 ms for up to `secs` seconds.
async fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn uids(events: &[WarningEvent]) -> BTreeSet<String> {
    events.iter().map(|e| e.uid.clone()).collect()
}

fn expected(range: std::ops::Range<usize>) -> BTreeSet<String> {
    range.map(|i| event(i).uid).collect()
}

#[test]
fn copies_of_one_warning_in_a_batch_become_the_highest_count_with_the_first_logs() {
    let mut gathering = batcher::Gathering::default();
    let copy = |count: u32, logs: Option<&str>| WarningEvent {
        count,
        logs: logs.map(str::to_owned),
        ..event(1)
    };
    gathering.push(copy(1, Some("panic: boom\n")));
    gathering.push(event(2));
    gathering.push(copy(3, None));
    // An older copy enriched late changes nothing.
    gathering.push(copy(2, None));
    assert_eq!(gathering.len(), 2);
    let events = gathering.take();
    assert!(gathering.is_empty());
    assert_eq!(events[0].uid, "uid-00001", "first-come order is kept");
    assert_eq!(events[0].count, 3);
    assert_eq!(events[0].logs.as_deref(), Some("panic: boom\n"));
    assert_eq!(events[1].uid, "uid-00002");
    // The next batch starts afresh.
    gathering.push(copy(4, None));
    assert_eq!(gathering.take()[0].count, 4);
}

#[tokio::test]
async fn events_arrive_exactly_as_sent() {
    let pki = Pki::new();
    let collector = TestCollector::start(&pki).await;
    let spool_dir = tempfile::tempdir().expect("tempdir");
    let run = Running::start(config(&collector.url(), &pki, spool_dir.path()));

    run.send(0..25).await;
    wait_until(5, "25 events stored", || collector.stored_events().len() >= 25).await;
    assert!(run.readiness.shipping.load(Ordering::Relaxed));
    run.stop().await.expect("clean stop");

    let sent: Vec<WarningEvent> = (0..25).map(event).collect();
    assert_eq!(
        collector.stored_events(),
        sent,
        "every field of every event, in order, once"
    );
    let batches = collector.stored_batches();
    assert!(
        batches.iter().all(|b| b.events.len() <= 10),
        "batch_max_events respected"
    );
    // 10 + 10 by size, the last 5 by interval.
    assert_eq!(
        batches.iter().map(|b| b.events.len()).collect::<Vec<_>>(),
        vec![10, 10, 5]
    );
    for b in &batches {
        let agent = b.agent.as_ref().expect("agent info");
        assert_eq!((agent.version.as_str(), agent.dropped_total), ("test-1", 0));
    }
    for a in collector.attempts() {
        assert_eq!(a.agent.as_deref(), Some(AGENT_URI), "mutual TLS on every request");
        assert_eq!(a.encoding.as_deref(), Some("zstd"));
        assert_eq!(a.content_type.as_deref(), Some("application/json"));
    }
}

#[tokio::test]
async fn outage_spools_to_disk_and_replays_everything() {
    let pki = Pki::new();
    let collector = TestCollector::start(&pki).await;
    let addr = collector.addr;
    let spool_dir = tempfile::tempdir().expect("tempdir");
    let run = Running::start(config(&collector.url(), &pki, spool_dir.path()));
    run.send(0..20).await;
    wait_until(5, "20 events stored live", || collector.stored_events().len() == 20).await;
    let before = collector.stored_events();

    // The collector goes away: batches go to disk.
    collector.stop().await;
    run.send(20..50).await;
    wait_until(5, "three batches spooled", || run.spool.len_batches() == 3).await;
    assert!(
        run.readiness.shipping.load(Ordering::Relaxed),
        "spooling counts as able to ship"
    );

    // Events keep coming while the collector comes back: none may fall between the paths.
    let producer = {
        let tx = run.tx.clone();
        tokio::spawn(async move {
            for i in 50..150 {
                tx.send(event(i)).await.expect("shipper running");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let collector = TestCollector::start_on(&pki, addr).await;
    producer.await.expect("producer");
    wait_until(8, "all events stored", || {
        uids(&collector.stored_events()) == expected(20..150)
    })
    .await;
    wait_until(2, "spool empty", || run.spool.is_empty()).await;
    run.stop().await.expect("clean stop");

    let mut all = before;
    all.extend(collector.stored_events());
    assert_eq!(
        uids(&all),
        expected(0..150),
        "nothing lost before, during or after the outage"
    );
    // The spooled batches went first: the oldest events arrived first.
    assert_eq!(collector.stored_events()[0].uid, event(20).uid);
}

/// Spools batches of three events (cut by the interval) while the collector is away.
async fn spool_small_batches(run: &Running, batches: usize) {
    for b in 0..batches {
        run.send(b * 3..b * 3 + 3).await;
        let want = b as u64 + 1;
        wait_until(5, "the batch spooled", || run.spool.len_batches() == want).await;
    }
}

#[tokio::test]
async fn the_spool_is_replayed_in_runs_of_small_batches_joined() {
    let pki = Pki::new();
    let addr = dead_addr().await;
    let spool_dir = tempfile::tempdir().expect("tempdir");
    let run = Running::start(config(&format!("https://{addr}"), &pki, spool_dir.path()));
    spool_small_batches(&run, 7).await;

    let collector = TestCollector::start_on(&pki, addr).await;
    wait_until(8, "spool replayed", || run.spool.is_empty()).await;
    run.stop().await.expect("clean stop");
    assert_eq!(uids(&collector.stored_events()), expected(0..21));
    // Joined up to --batch-max-events (10): three batches of three per request, oldest first.
    let sizes: Vec<usize> = collector.stored_batches().iter().map(|b| b.events.len()).collect();
    assert_eq!(sizes, vec![9, 9, 3]);
    let order: Vec<String> = collector.stored_events().iter().map(|e| e.uid.clone()).collect();
    assert_eq!(order, (0..21).map(|i| event(i).uid).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_refused_joined_replay_is_retried_batch_by_batch_and_rejects_nothing_more() {
    let pki = Pki::new();
    let addr = dead_addr().await;
    let spool_dir = tempfile::tempdir().expect("tempdir");
    let run = Running::start(config(&format!("https://{addr}"), &pki, spool_dir.path()));
    spool_small_batches(&run, 3).await;

    let collector = TestCollector::start_on(&pki, addr).await;
    // The joined run is refused; the oldest batch alone is refused too (it is the bad one).
    let bad = Step::Fail {
        status: 400,
        retry_after: None,
    };
    collector.script([bad, bad]);
    wait_until(8, "spool replayed", || run.spool.is_empty()).await;
    let rejected = run.spool.rejected().await.expect("rejected");
    run.stop().await.expect("clean stop");
    let sizes: Vec<usize> = collector.attempts().iter().map(|a| a.events).collect();
    assert_eq!(
        sizes,
        vec![9, 3, 6],
        "joined, then the oldest alone, then the rest joined"
    );
    assert_eq!(uids(&collector.stored_events()), expected(3..9));
    assert_eq!(rejected.iter().map(|r| r.events).collect::<Vec<_>>(), vec![3]);
}

#[tokio::test]
async fn spool_cap_drops_oldest_and_reports_dropped_total() {
    let pki = Pki::new();
    let addr = dead_addr().await;
    let spool_dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(&format!("https://{addr}"), &pki, spool_dir.path());
    // Room for two batches of ten events and a half.
    let one = batch::encode((0..10).map(event).collect(), SystemTime::now(), "test-1", 0).expect("encode");
    cfg.spool_max_bytes = (one.body.len() as u64 + 13) * 5 / 2;
    let run = Running::start(cfg);

    // Five batches of ten (cut by size, pushed in order); the spool keeps the newest two.
    run.send(0..50).await;
    wait_until(5, "overflow counted", || run.spool.dropped_total() == 30).await;
    assert_eq!(run.spool.len_batches(), 2);

    let collector = TestCollector::start_on(&pki, addr).await;
    wait_until(8, "spool replayed", || {
        run.spool.is_empty() && collector.stored_events().len() == 20
    })
    .await;
    run.send(50..51).await;
    wait_until(5, "live event stored", || collector.stored_events().len() == 21).await;
    let spool = run.spool.clone();
    run.stop().await.expect("clean stop");

    // The newest survived, the oldest were dropped: 30 dropped + 21 stored = 51 sent.
    assert_eq!(uids(&collector.stored_events()), expected(30..51));
    assert_eq!(spool.dropped_total(), 30);
    let last = collector.stored_batches().pop().expect("a batch");
    assert_eq!(
        last.agent.expect("agent info").dropped_total,
        30,
        "the drop is reported to the collector"
    );
}

#[tokio::test]
async fn refused_batch_goes_to_rejected_and_is_not_retried() {
    let pki = Pki::new();
    let collector = TestCollector::start(&pki).await;
    let spool_dir = tempfile::tempdir().expect("tempdir");
    let run = Running::start(config(&collector.url(), &pki, spool_dir.path()));
    let unavailable = Step::Fail {
        status: 503,
        retry_after: None,
    };
    let bad = Step::Fail {
        status: 400,
        retry_after: None,
    };
    // Batch A: refused on the live path. Batch B: three 503s (live budget), spooled, refused by the drainer.
    collector.script([bad, unavailable, unavailable, unavailable, bad]);

    run.send(0..10).await;
    wait_until(5, "batch A set aside", || collector.attempts().len() == 1).await;
    run.send(10..20).await;
    wait_until(5, "batch B refused from the spool", || collector.attempts().len() == 5).await;
    wait_until(5, "spool empty", || run.spool.is_empty()).await;
    run.send(20..30).await;
    wait_until(5, "batch C stored", || collector.stored_events().len() == 10).await;
    // Give a retry loop time to show itself.
    tokio::time::sleep(Duration::from_millis(600)).await;

    let rejected = run.spool.rejected().await.expect("rejected");
    let spool = run.spool.clone();
    run.stop().await.expect("clean stop");
    assert_eq!(collector.attempts().len(), 6, "refused batches are not sent again");
    assert_eq!(uids(&collector.stored_events()), expected(20..30));
    assert_eq!(rejected.iter().map(|r| r.events).collect::<Vec<_>>(), vec![10, 10]);
    assert!(
        rejected.iter().all(|r| r.reason.starts_with("400 invalid_event")),
        "{rejected:?}"
    );
    assert!(spool.is_empty());
}

#[tokio::test]
async fn shutdown_flushes_pending_events_to_the_spool_and_next_run_ships_them() {
    let pki = Pki::new();
    let collector = TestCollector::start(&pki).await;
    let spool_dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(&collector.url(), &pki, spool_dir.path());
    // Nothing would be cut before shutdown.
    cfg.batch_max_events = 1000;
    cfg.batch_interval = Duration::from_secs(60);
    let run = Running::start(cfg.clone());

    // Some are in the pending batch, some still queued in the channel when shutdown starts.
    run.send(0..12).await;
    let started = Instant::now();
    let spool = run.spool.clone();
    run.stop().await.expect("clean stop");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown does not wait on the network"
    );
    assert!(
        collector.attempts().is_empty(),
        "shutdown writes to the spool, not the network"
    );
    let spooled = spool.peek_oldest().await.expect("peek").expect("a spooled batch");
    let decoded = batch::decode(&spooled.batch.body).expect("decode");
    assert_eq!(uids(&decoded.events), expected(0..12));
    drop(spool);

    let run = Running::start(cfg);
    wait_until(5, "the next run ships the spool", || {
        uids(&collector.stored_events()) == expected(0..12)
    })
    .await;
    wait_until(2, "spool empty", || run.spool.is_empty()).await;
    run.stop().await.expect("clean stop");
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let pki = Pki::new();
    let collector = TestCollector::start(&pki).await;
    let spool_dir = tempfile::tempdir().expect("tempdir");
    let run = Running::start(config(&collector.url(), &pki, spool_dir.path()));

    // Live path: a short Retry-After is waited out in place.
    collector.script([Step::Fail {
        status: 429,
        retry_after: Some(1),
    }]);
    run.send(0..10).await;
    wait_until(5, "first batch stored", || collector.stored_events().len() == 10).await;
    let a = collector.attempts();
    assert_eq!(a.len(), 2);
    let gap = a[1].at - a[0].at;
    assert!(
        gap >= Duration::from_millis(900),
        "429 Retry-After: 1 honoured, waited {gap:?}"
    );

    // Longer than the live budget: spooled, and the drainer waits it out.
    collector.script([Step::Fail {
        status: 503,
        retry_after: Some(2),
    }]);
    run.send(10..20).await;
    wait_until(6, "second batch stored", || collector.stored_events().len() == 20).await;
    run.stop().await.expect("clean stop");
    let a = collector.attempts();
    assert_eq!(a.len(), 4);
    let gap = a[3].at - a[2].at;
    assert!(
        gap >= Duration::from_millis(1900),
        "503 Retry-After: 2 honoured, waited {gap:?}"
    );
}

#[tokio::test]
async fn slow_collector_times_out_and_is_retried() {
    let pki = Pki::new();
    let collector = TestCollector::start(&pki).await;
    let spool_dir = tempfile::tempdir().expect("tempdir");
    let run = Running::start(config(&collector.url(), &pki, spool_dir.path()));
    collector.script([Step::Stall(Duration::from_secs(3))]);
    run.send(0..10).await;
    wait_until(6, "stored after the timeout", || collector.stored_events().len() == 10).await;
    run.stop().await.expect("clean stop");
    let a = collector.attempts();
    assert_eq!(a[0].status, 0, "the first attempt stalled");
    assert!(
        a[1].at - a[0].at >= Duration::from_millis(900),
        "the request timed out before the retry"
    );
}

#[tokio::test]
async fn payload_too_large_splits_the_batch() {
    let pki = Pki::new();
    let collector = TestCollector::start(&pki).await;
    let spool_dir = tempfile::tempdir().expect("tempdir");
    let run = Running::start(config(&collector.url(), &pki, spool_dir.path()));
    collector.script([Step::Fail {
        status: 413,
        retry_after: None,
    }]);
    run.send(0..10).await;
    wait_until(5, "both halves stored", || collector.stored_events().len() == 10).await;
    run.stop().await.expect("clean stop");
    assert_eq!(uids(&collector.stored_events()), expected(0..10));
    let sizes: Vec<usize> = collector.stored_batches().iter().map(|b| b.events.len()).collect();
    assert_eq!(sizes, vec![5, 5]);
}

#[tokio::test]
async fn memory_stays_flat_during_an_outage() {
    let pki = Pki::new();
    let addr = dead_addr().await;
    let spool_dir = tempfile::tempdir().expect("tempdir");
    let run = Running::start(config(&format!("https://{addr}"), &pki, spool_dir.path()));

    run.send(0..2000).await;
    wait_until(8, "200 batches on disk", || run.spool.len_batches() == 200).await;
    let on_disk = std::fs::metadata(spool_dir.path().join(crate::spool::SPOOL_FILE))
        .expect("spool file")
        .len();
    assert!(run.spool.len_bytes() > 0 && on_disk >= run.spool.len_bytes());
    // 200 batches went through; at most a handful were ever in memory at once.
    assert!(run.held.peak() <= 4, "peak batches in memory: {}", run.held.peak());
    wait_until(2, "nothing retained once spooled", || run.held.now() == 0).await;
    run.stop().await.expect("clean stop");
}

#[tokio::test]
async fn probe_reports_a_reachable_collector_and_certificate_validity() {
    let pki = Pki::new();
    let collector = TestCollector::start(&pki).await;
    let ok = probe_collector(&collector.url(), pki.cert_dir.path())
        .await
        .expect("reachable");
    assert!(
        ok.contains("collector reachable at") && ok.contains("valid until"),
        "{ok}"
    );
    assert!(ok.contains(AGENT_URI), "{ok}");
    assert_eq!(collector.attempts()[0].events, 0, "an empty batch");
}

#[tokio::test]
async fn probe_explains_each_failure_with_its_fix() {
    let pki = Pki::new();
    let dead = format!("https://{}", dead_addr().await);
    let refused = probe_collector(&dead, pki.cert_dir.path())
        .await
        .expect_err("nothing listens");
    assert!(
        refused.contains("connection refused") && refused.contains("NetworkPolicy"),
        "{refused}"
    );

    let collector = TestCollector::start(&pki).await;
    collector.script([Step::Fail {
        status: 403,
        retry_after: None,
    }]);
    let revoked = probe_collector(&collector.url(), pki.cert_dir.path())
        .await
        .expect_err("403");
    assert!(
        revoked.contains("agent_refused") && revoked.contains("cert issue"),
        "{revoked}"
    );

    let plain = probe_collector(&collector.url().replace("https", "http"), pki.cert_dir.path())
        .await
        .expect_err("http");
    assert!(plain.contains("https://"), "{plain}");

    pki.use_foreign_ca();
    let foreign = probe_collector(&collector.url(), pki.cert_dir.path())
        .await
        .expect_err("unknown issuer");
    assert!(
        foreign.contains("ca.crt") && foreign.contains("not this collector's CA"),
        "{foreign}"
    );

    let other = Pki::with_client(Client::Foreign);
    let collector = TestCollector::start(&other).await;
    let err = probe_collector(&collector.url(), other.cert_dir.path())
        .await
        .expect_err("foreign client cert");
    // Read as an alert or as a cut connection, depending on timing: both name the fix.
    assert!(
        err.contains("client certificate") && err.contains("cert issue"),
        "{err}"
    );

    let expired = Pki::with_client(Client::Expired);
    let collector = TestCollector::start(&expired).await;
    let err = probe_collector(&collector.url(), expired.cert_dir.path())
        .await
        .expect_err("expired");
    assert!(err.contains("expired") && err.contains("cert issue"), "{err}");
}

#[tokio::test]
async fn bad_configuration_fails_fast_and_says_what_to_change() {
    let pki = Pki::new();
    let spool_dir = tempfile::tempdir().expect("tempdir");
    let new = |cfg: ShipConfig| Shipper::new(cfg).expect_err("must fail").to_string();

    let err = new(config("http://127.0.0.1:8443", &pki, spool_dir.path()));
    assert!(err.contains("https://") && err.contains("mutual TLS"), "{err}");
    let err = new(config("not a url", &pki, spool_dir.path()));
    assert!(err.contains("--collector"), "{err}");

    let mut cfg = config("https://127.0.0.1:8443", &pki, spool_dir.path());
    cfg.batch_max_events = MAX_BATCH_EVENTS + 1;
    assert!(new(cfg).contains("--batch-max-events"));

    let empty = tempfile::tempdir().expect("tempdir");
    let mut cfg = config("https://127.0.0.1:8443", &pki, spool_dir.path());
    cfg.cert_dir = empty.path().into();
    let err = new(cfg);
    assert!(err.contains("tls.crt") && err.contains("cert issue"), "{err}");

    // A key from another issue run.
    let other = Pki::new();
    std::fs::copy(
        other.cert_dir.path().join("tls.key"),
        pki.cert_dir.path().join("tls.key"),
    )
    .expect("copy");
    let err = new(config("https://127.0.0.1:8443", &pki, spool_dir.path()));
    assert!(err.contains("tls.key is not the private key"), "{err}");
}

#[tokio::test]
async fn renewed_certificate_is_used_without_a_restart() {
    let pki = Pki::new();
    let collector = TestCollector::start(&pki).await;
    let addr = collector.addr;
    let spool_dir = tempfile::tempdir().expect("tempdir");
    let run = Running::start(config(&collector.url(), &pki, spool_dir.path()));
    run.send(0..10).await;
    wait_until(5, "stored with the first certificate", || {
        collector.stored_events().len() == 10
    })
    .await;
    assert_eq!(collector.attempts()[0].agent.as_deref(), Some(AGENT_URI));

    let renewed = "spiffe://podwarn/tenant/default/cluster/test/agent/a2";
    pki.renew_client(renewed);
    // Cut the pooled connection so the next request needs a new handshake.
    collector.stop().await;
    let collector = TestCollector::start_on(&pki, addr).await;
    run.send(10..20).await;
    wait_until(5, "stored with the renewed certificate", || {
        collector.stored_events().len() == 10
    })
    .await;
    run.stop().await.expect("clean stop");
    assert!(collector.attempts().iter().all(|a| a.agent.as_deref() == Some(renewed)));
}

#[tokio::test]
async fn with_an_identity_link_a_renewed_certificate_is_used_at_once_on_a_fresh_connection() {
    let pki = Pki::new();
    let collector = TestCollector::start(&pki).await;
    let spool_dir = tempfile::tempdir().expect("tempdir");
    let (link, _refusals) = IdentityLink::new();
    let shipper = Shipper::with_tuning(config(&collector.url(), &pki, spool_dir.path()), fast())
        .expect("shipper")
        .with_identity_link(link.clone());
    let run = Running::start_shipper(shipper);
    run.send(0..10).await;
    wait_until(5, "stored with the first certificate", || {
        collector.stored_events().len() == 10
    })
    .await;

    // No restart of the collector: the pooled connection is still open, and
    // would present the old certificate until it expires.
    let renewed = "spiffe://podwarn/tenant/default/cluster/test/agent/a2";
    pki.renew_client(renewed);
    link.identity_changed();
    let before = collector.attempts().len();
    run.send(10..20).await;
    wait_until(5, "stored after the renewal", || collector.stored_events().len() == 20).await;
    run.stop().await.expect("clean stop");
    let after = &collector.attempts()[before..];
    assert!(!after.is_empty());
    assert!(after.iter().all(|a| a.agent.as_deref() == Some(renewed)), "{after:?}");
}

#[tokio::test]
async fn a_refused_certificate_is_reported_and_retried_as_soon_as_a_new_one_is_in_place() {
    let pki = Pki::new();
    let collector = TestCollector::start(&pki).await;
    collector.script([Step::Fail {
        status: 403,
        retry_after: None,
    }]);
    let spool_dir = tempfile::tempdir().expect("tempdir");
    let (link, mut refusals) = IdentityLink::new();
    let shipper = Shipper::with_tuning(config(&collector.url(), &pki, spool_dir.path()), fast())
        .expect("shipper")
        .with_identity_link(link.clone());
    let run = Running::start_shipper(shipper);
    run.send(0..5).await;
    let refusal = tokio::time::timeout(Duration::from_secs(5), refusals.recv())
        .await
        .expect("a refusal is reported")
        .expect("link open");
    assert_eq!(
        refusal,
        CertRefusal {
            status: 403,
            code: "agent_refused".into()
        }
    );
    // Without the announcement the batch would wait 30 s (the refused-certificate back-off).
    let started = Instant::now();
    link.identity_changed();
    wait_until(5, "stored right after the new certificate", || {
        collector.stored_events().len() == 5
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    run.stop().await.expect("clean stop");
}

#[test]
fn a_repeat_folds_into_its_copy_in_the_open_batch_only_when_nothing_but_count_and_time_moved() {
    let open = OpenBatch::default();
    let held = WarningEvent { count: 3, ..event(1) };
    let again = |count: u32, minutes: i64| WarningEvent {
        count,
        last_seen: held.last_seen + jiff::SignedDuration::from_mins(minutes),
        ..held.clone()
    };
    assert!(!open.fold(&again(4, 1)), "nothing to fold into yet");
    open.lock().push(held.clone());
    assert!(open.fold(&again(5, 2)));
    assert!(open.fold(&again(4, 1)), "an older repeat folds but moves nothing back");
    let other_message = WarningEvent {
        message: "Back-off pulling image".into(),
        ..again(6, 3)
    };
    assert!(!open.fold(&other_message), "a new message may classify differently");
    let other_first = WarningEvent {
        first_seen: held.first_seen + jiff::SignedDuration::from_secs(1),
        ..again(6, 3)
    };
    assert!(
        !open.fold(&other_first),
        "first_seen is part of the collector's dedup key"
    );
    let other_uid = WarningEvent {
        uid: "uid-99999".into(),
        ..again(6, 3)
    };
    assert!(!open.fold(&other_uid), "another warning");
    let events = open.lock().take();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].count, 5);
    assert_eq!(events[0].last_seen, held.last_seen + jiff::SignedDuration::from_mins(2));
    assert_eq!(events[0].reason, held.reason, "the rest is the copy's");
    assert!(!open.fold(&again(7, 4)), "a cut batch takes no more folds");
}
