//! Connection-level attacks: clients that trickle bytes (slow loris), that
//! open thousands of connections and say nothing, and more connections than
//! the collector may hold. Deadlines are seconds here so the tests are quick;
//! every bound asserted is several times the configured deadline, so a busy
//! machine cannot make them flaky.

use super::common::Collector;
use super::raw::{self, Dialer, Who, wait_closed_while_trickling};
use super::report;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Open file descriptors of a process.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// This test process needs a descriptor per client connection.
fn ensure_open_files(needed: usize) {
    let (fit, soft) = podwarn_collector::server::fit_open_file_limit(usize::MAX);
    assert!(
        fit >= needed,
        "this test opens {needed} connections; raise the open-file limit (now {soft:?})"
    );
}

/// `GET /healthz` over a connection that is already open; waits for the answer.
async fn one_request(stream: &mut tokio_rustls::client::TlsStream<TcpStream>) {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let reply = raw::read_reply(stream).await.unwrap();
    assert_eq!(reply.status, 200);
}

/// A request head that never ends: after the request line, a header that
/// keeps growing.
fn endless_head() -> Vec<u8> {
    let mut head = b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nx-slow: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 200));
    head
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_loris_clients_are_cut_off_within_the_deadlines() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    // 2 s for the handshake and for request heads, 3 s for a body.
    let collector = Collector::start(
        &tmp.path().join("data"),
        &[
            "--tls-handshake-timeout",
            "2s",
            "--header-read-timeout",
            "2s",
            "--body-read-timeout",
            "3s",
            "--idle-timeout",
            "60s",
        ],
    );
    let cert = collector.issue_cert("prod");
    let dialer = Dialer::new(&collector.url, &collector.ca_pem, &cert, &collector.admin_token);
    let every = Duration::from_secs(1);
    // Five times the largest deadline: a server without it keeps these
    // clients far longer (the trickles last 60 s and more).
    let limit = Duration::from_secs(15);
    let client_hello: Vec<u8> = [&[0x16u8, 0x03, 0x01, 0x02, 0x00][..], &[0x01; 120]].concat();
    let tcp = || TcpStream::connect(dialer.addr);

    let silent_tcp = async { wait_closed_while_trickling(tcp().await.unwrap(), b"", every, limit).await };
    let slow_hello = async { wait_closed_while_trickling(tcp().await.unwrap(), &client_hello, every, limit).await };
    let silent_tls =
        async { wait_closed_while_trickling(dialer.connect(Who::Anonymous).await.unwrap(), b"", every, limit).await };
    let slow_head = async {
        let head = endless_head();
        wait_closed_while_trickling(dialer.connect(Who::Anonymous).await.unwrap(), &head, every, limit).await
    };
    let slow_second_head = async {
        let mut stream = dialer.connect(Who::Anonymous).await.unwrap();
        one_request(&mut stream).await;
        let head = endless_head();
        wait_closed_while_trickling(stream, &head, every, limit).await
    };
    let slow_body = async {
        let mut stream = dialer.connect(Who::Agent).await.unwrap();
        stream
            .write_all(b"POST /v1/ingest HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n")
            .await
            .unwrap();
        let body = [b"{\"events\": [".as_slice(), &[b' '; 188]].concat();
        wait_closed_while_trickling(stream, &body, every, limit).await
    };
    let (silent_tcp, slow_hello, silent_tls, slow_head, slow_second_head, slow_body) = tokio::join!(
        silent_tcp,
        slow_hello,
        silent_tls,
        slow_head,
        slow_second_head,
        slow_body
    );
    let outcomes = [
        ("silent TCP (handshake deadline)", silent_tcp),
        ("ClientHello one byte a second (handshake deadline)", slow_hello),
        ("silent after the handshake (header deadline)", silent_tls),
        ("request head one byte a second (header deadline)", slow_head),
        (
            "second request head one byte a second (header deadline)",
            slow_second_head,
        ),
        ("body one byte a second (body deadline)", slow_body),
    ];
    let mut failed = Vec::new();
    for (name, outcome) in &outcomes {
        match outcome {
            // Cut off after a few bytes: the deadline, not the client, ended it.
            Some(sent) if *sent < 10 => {}
            Some(sent) => failed.push(format!("{name}: closed only after {sent} bytes")),
            None => failed.push(format!("{name}: still open after {limit:?}")),
        }
    }
    report(&format!(
        "slow loris: {} passed, {} failed ({:.0?})",
        outcomes.len() - failed.len(),
        failed.len(),
        started.elapsed()
    ));
    assert!(failed.is_empty(), "{failed:#?}");
    // The body trickler got a precise answer before the close.
    let reply = dialer
        .exchange(
            Who::Agent,
            raw::Request::json("/v1/ingest", "{")
                .header("content-length", "100")
                .hold_open(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 408, "{:?}", String::from_utf8_lossy(&reply.body));
    let (status, _) = collector.admin().get("/v1/events").await;
    assert_eq!(status, 200, "still serving");
}

/// Opens a TLS connection, optionally makes one HTTP/1.1 request on it, and
/// waits until the server closes it. Returns how long that took.
async fn idle_tls(dialer: Dialer, request_first: bool, limit: Duration) -> Option<Duration> {
    let mut stream = dialer.connect(Who::Anonymous).await.ok()?;
    if request_first {
        one_request(&mut stream).await;
    }
    let opened = Instant::now();
    wait_closed_while_trickling(stream, b"", Duration::from_secs(3600), limit)
        .await
        .map(|_| opened.elapsed())
}

/// Opens an HTTP/2 connection, makes one request and waits, idle, until the
/// server closes it. Returns how long that took.
async fn idle_h2(dialer: Dialer, ca_pem: Vec<u8>, limit: Duration) -> Option<Duration> {
    let tcp = TcpStream::connect(dialer.addr).await.ok()?;
    let config = raw::client_config(&ca_pem, None, &[b"h2"]);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.ok()?;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .ok()?;
    let conn = tokio::spawn(conn);
    let request = http::Request::get("https://localhost/healthz")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let answer = send.send_request(request).await.ok()?;
    assert_eq!(answer.status(), 200);
    answer.into_body().collect().await.ok()?;
    let opened = Instant::now();
    // `send` stays alive: the client keeps the connection; only the server may end it.
    let closed = tokio::time::timeout(limit, conn).await.ok().map(|_| opened.elapsed());
    drop(send);
    closed
}

#[tokio::test(flavor = "multi_thread")]
async fn two_thousand_idle_connections_neither_starve_requests_nor_stay_open() {
    const SILENT_TCP: usize = 1400;
    const SILENT_TLS: usize = 400;
    const KEEP_ALIVE: usize = 180;
    const H2: usize = 20;
    const TOTAL: usize = SILENT_TCP + SILENT_TLS + KEEP_ALIVE + H2;
    ensure_open_files(TOTAL + 200);
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    // Long enough that all are open together, short enough for a quick test.
    let deadline = Duration::from_secs(20);
    let collector = Collector::start(
        &tmp.path().join("data"),
        &[
            "--tls-handshake-timeout",
            "20s",
            "--header-read-timeout",
            "20s",
            "--idle-timeout",
            "20s",
        ],
    );
    let pid = collector.child.id();
    let cert = collector.issue_cert("prod");
    let dialer = Dialer::new(&collector.url, &collector.ca_pem, &cert, &collector.admin_token);
    let admin = collector.admin();
    let (status, _) = admin.get("/v1/events").await;
    assert_eq!(status, 200);
    let (fds_before, rss_before) = (fds(pid), rss_kib(pid));

    // Four times the deadline for every client to have been closed.
    let limit = deadline * 4;
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..SILENT_TCP {
        let stream = TcpStream::connect(dialer.addr).await.unwrap();
        clients.spawn(async move {
            let opened = Instant::now();
            wait_closed_while_trickling(stream, b"", Duration::from_secs(3600), limit)
                .await
                .map(|_| opened.elapsed())
        });
    }
    for i in 0..SILENT_TLS + KEEP_ALIVE {
        clients.spawn(idle_tls(dialer.clone(), i >= SILENT_TLS, limit));
        if i % 50 == 49 {
            // Let the handshakes of this batch finish before starting more.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for _ in 0..H2 {
        clients.spawn(idle_h2(dialer.clone(), collector.ca_pem.clone(), limit));
    }
    // Wait until the collector holds (nearly) all of them.
    let held = loop {
        let held = fds(pid).saturating_sub(fds_before);
        if held >= TOTAL * 9 / 10 || started.elapsed() > deadline {
            break held;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let rss_held = rss_kib(pid);

    // A normal request is served at once, however many idle connections there are.
    let asked = Instant::now();
    let (status, body) = tokio::time::timeout(deadline, admin.get("/v1/events?limit=5"))
        .await
        .expect("a query within the deadline despite the idle connections");
    assert_eq!(status, 200, "{body}");
    let served_in = asked.elapsed();

    // And every idle connection is closed by the collector.
    let mut closed = 0;
    let mut open = 0;
    while let Some(outcome) = clients.join_next().await {
        match outcome.unwrap() {
            Some(_) => closed += 1,
            None => open += 1,
        }
    }
    let fds_after = loop {
        let now = fds(pid);
        if now <= fds_before + 10 || started.elapsed() > limit * 2 {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    report(&format!(
        "idle connections: {closed} passed, {open} failed ({TOTAL} opened, {held} held at once, \
         query served in {served_in:.1?}, RSS {} → {} KiB, {:.0?})",
        rss_before,
        rss_held,
        started.elapsed()
    ));
    assert!(
        held >= TOTAL * 9 / 10,
        "the collector held only {held} of {TOTAL} connections at once"
    );
    assert_eq!(open, 0, "{open} of {TOTAL} idle connections were never closed");
    assert!(
        fds_after <= fds_before + 10,
        "descriptors leaked: {fds_before} before, {fds_after} after"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn more_clients_than_descriptors_wait_their_turn_instead_of_breaking_accept() {
    const CLIENTS: usize = 500;
    ensure_open_files(CLIENTS + 100);
    let tmp = tempfile::tempdir().unwrap();
    // 256 descriptors: the default of 4096 connections must be lowered to fit.
    let collector = Collector::start_under(
        &["sh", "-c", "ulimit -n 256 && exec \"$@\"", "sh"],
        &tmp.path().join("data"),
        &["--tls-handshake-timeout", "2s"],
        "warn",
    );
    let pid = collector.child.id();
    let limit = Duration::from_secs(120);
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut stream = TcpStream::connect(collector.url.trim_start_matches("https://"))
            .await
            .unwrap();
        clients.push(tokio::spawn(async move {
            let mut buf = [0u8; 64];
            tokio::time::timeout(limit, stream.read(&mut buf)).await.is_ok()
        }));
    }
    let mut most = 0;
    for _ in 0..20 {
        most = most.max(fds(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A real client gets through once idle ones time out, within a few rounds of the handshake deadline.
    let (status, body) = tokio::time::timeout(limit, collector.admin().get("/v1/clusters"))
        .await
        .expect("served once slots free up");
    assert_eq!(status, 200, "{body}");
    for client in clients {
        assert!(
            client.await.unwrap(),
            "every silent client is closed by the handshake deadline"
        );
    }
    let printed = collector.output.lock().unwrap()[0].stderr.clone();
    report(&format!(
        "connection cap: at most {most} descriptors under a 256 limit with {CLIENTS} clients"
    ));
    assert!(
        printed.contains("lowered to fit the open-file limit"),
        "says that it lowered --max-connections:\n{printed}"
    );
    assert!(
        printed.contains("connection limit reached"),
        "says that it is full:\n{printed}"
    );
    assert!(
        !printed.contains("accept failed"),
        "accept never ran out of descriptors:\n{printed}"
    );
}
