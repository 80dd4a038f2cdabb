//! A TCP proxy to put between two real processes (an agent and its collector)
//! and break the network between them on demand.
//!
//! It forwards bytes, so TLS passes through untouched: the agent still verifies
//! the collector's certificate (issued for the loopback address, whatever the
//! port). The [`ProxyMode`] switches at runtime and applies to open
//! connections as well as new ones:
//!
//! - [`ProxyMode::Pass`]: forward both ways.
//! - [`ProxyMode::Stall`]: a black hole. New connections are accepted and held,
//!   open ones stay open, and nothing is forwarded either way until the mode
//!   changes (then held connections go on where they stopped).
//! - [`ProxyMode::Reset`]: every open connection and every new one is cut with
//!   a TCP RST (zero linger), both towards the client and the upstream.
//! - [`ProxyMode::Delay`]: forward, with everything from upstream to the client
//!   (the responses) handed over the given time after it arrived; a delay
//!   line, not a throttle, so throughput is unchanged.
//!
//! [`ProxyStats`] counts what each mode actually did, so a test can prove its
//! fault happened rather than assume it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// What the proxy does with traffic; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward both ways.
    Pass,
    /// Accept and hold connections; forward nothing.
    Stall,
    /// Cut every connection, open and new, with a RST.
    Reset,
    /// Forward, delaying everything the upstream sends by this much.
    Delay(Duration),
}

/// Counts of what the proxy did since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections held without forwarding while stalled (counted once per
    /// connection and stall).
    pub stalled: u64,
    /// Connections cut with a RST.
    pub reset: u64,
    /// Bytes forwarded from clients to the upstream.
    pub bytes_up: u64,
    /// Bytes forwarded from the upstream to clients.
    pub bytes_down: u64,
    /// Chunks from the upstream that were held back by [`ProxyMode::Delay`].
    pub delayed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    stalled: AtomicU64,
    reset: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    delayed: AtomicU64,
}

/// A running proxy. Dropping it closes the listener and every connection.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    mode: watch::Sender<ProxyMode>,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`, in [`ProxyMode::Pass`].
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, rx) = watch::channel(ProxyMode::Pass);
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(accept_loop(listener, upstream, rx, counters.clone()));
        Ok(Proxy {
            addr,
            mode,
            counters,
            task,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches the mode; open connections follow at once.
    pub fn set_mode(&self, mode: ProxyMode) {
        self.mode.send_replace(mode);
    }

    /// The mode in force.
    pub fn mode(&self) -> ProxyMode {
        *self.mode.borrow()
    }

    /// What the proxy did so far.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ProxyStats {
            accepted: get(&c.accepted),
            stalled: get(&c.stalled),
            reset: get(&c.reset),
            bytes_up: get(&c.bytes_up),
            bytes_down: get(&c.bytes_down),
            delayed: get(&c.delayed),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The accept loop owns the connections' JoinSet: aborting it aborts them all.
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    mode: watch::Receiver<ProxyMode>,
    counters: Arc<Counters>,
) {
    let mut connections = JoinSet::new();
    loop {
        // Reap finished connections so the set stays as small as the open ones.
        while connections.try_join_next().is_some() {}
        let Ok((client, _)) = listener.accept().await else {
            // Out of file descriptors or similar: wait rather than spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        let _ = client.set_nodelay(true);
        connections.spawn(connection(client, upstream, mode.clone(), counters.clone()));
    }
}

/// Cuts a connection with a RST instead of a FIN.
fn reset(stream: TcpStream, counters: &Counters) {
    // Counted first, so a peer that sees the RST also sees it counted.
    counters.reset.fetch_add(1, Ordering::Relaxed);
    // Zero linger makes close() send RST and discard anything unsent.
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    mut mode: watch::Receiver<ProxyMode>,
    counters: Arc<Counters>,
) {
    // Held before anything is forwarded, even the connect to the upstream, while stalled.
    let mut counted_stall = false;
    loop {
        let now = *mode.borrow_and_update();
        match now {
            ProxyMode::Reset => return reset(client, &counters),
            ProxyMode::Stall => {
                if !counted_stall {
                    counted_stall = true;
                    counters.stalled.fetch_add(1, Ordering::Relaxed);
                }
                if mode.changed().await.is_err() {
                    return;
                }
            }
            ProxyMode::Pass | ProxyMode::Delay(_) => break,
        }
    }
    let mut client = client;
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return reset(client, &counters);
    };
    let _ = server.set_nodelay(true);
    let cut = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let up = pump(Pump {
            from: client_read,
            to: server_write,
            mode: mode.clone(),
            counters: &counters,
            downstream: false,
        });
        let down = pump(Pump {
            from: server_read,
            to: client_write,
            mode: mode.clone(),
            counters: &counters,
            downstream: true,
        });
        tokio::select! {
            _ = async { tokio::join!(up, down) } => false,
            () = wait_for_reset(&mut mode) => true,
        }
    };
    if cut {
        // The upstream side first, so a client that sees its RST sees both counted.
        reset(server, &counters);
        reset(client, &counters);
    }
}

async fn wait_for_reset(mode: &mut watch::Receiver<ProxyMode>) {
    if mode.wait_for(|m| *m == ProxyMode::Reset).await.is_err() {
        // The proxy is gone; its drop aborts this task.
        std::future::pending::<()>().await;
    }
}

/// One direction of a connection.
struct Pump<'a> {
    from: ReadHalf<'a>,
    to: WriteHalf<'a>,
    mode: watch::Receiver<ProxyMode>,
    counters: &'a Counters,
    /// Upstream to client: the direction [`ProxyMode::Delay`] delays.
    downstream: bool,
}

/// Most chunks read ahead of the writer (in delay mode they wait in memory).
const MAX_QUEUED: usize = 256;

/// Forwards `from` to `to` until `from` ends (then shuts `to` down) or either fails.
async fn pump(mut p: Pump<'_>) {
    let mut buf = vec![0u8; 16 * 1024];
    // Chunks read and not yet written, each with the instant it may be written.
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut eof = false;
    let mut counted_stall = false;
    loop {
        if eof && queue.is_empty() {
            let _ = p.to.shutdown().await;
            return;
        }
        let mode = *p.mode.borrow_and_update();
        // A reset forwards nothing either: the connection's task cuts both
        // sides, and a pump polled before it notices must not first hand over
        // what the stall held (a request the test believes was black-holed).
        let stalled = mode == ProxyMode::Stall;
        let halted = stalled || mode == ProxyMode::Reset;
        if stalled && !counted_stall && !p.downstream {
            // One count per connection and stall (the upstream direction does the counting).
            counted_stall = true;
            p.counters.stalled.fetch_add(1, Ordering::Relaxed);
        }
        if !stalled {
            counted_stall = false;
        }
        let due = queue.front().map(|(t, _)| *t);
        tokio::select! {
            read = p.from.read(&mut buf), if !eof && !halted && queue.len() < MAX_QUEUED => match read {
                Ok(0) | Err(_) => eof = true,
                Ok(n) => {
                    let delay = match mode {
                        ProxyMode::Delay(d) if p.downstream => {
                            p.counters.delayed.fetch_add(1, Ordering::Relaxed);
                            d
                        }
                        _ => Duration::ZERO,
                    };
                    queue.push_back((Instant::now() + delay, buf[..n].to_vec()));
                }
            },
            () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() && !halted => {
                let (_, chunk) = queue.pop_front().expect("a due chunk");
                // Counted first, so a peer that got the bytes also sees them counted.
                let counter = if p.downstream { &p.counters.bytes_down } else { &p.counters.bytes_up };
                counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                if p.to.write_all(&chunk).await.is_err() {
                    return;
                }
            },
            changed = p.mode.changed() => if changed.is_err() {
                return;
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(msg).await?;
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).await?;
        Ok(got)
    }

    #[tokio::test]
    async fn pass_forwards_both_ways() {
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut s, b"hello").await.unwrap(), b"hello");
        let stats = proxy.stats();
        assert_eq!((stats.accepted, stats.bytes_up, stats.bytes_down), (1, 5, 5));
    }

    #[tokio::test]
    async fn stall_holds_open_and_new_connections_until_pass() {
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut open, b"a").await.unwrap(), b"a");
        proxy.set_mode(ProxyMode::Stall);
        let mut new = TcpStream::connect(proxy.addr()).await.unwrap();
        for s in [&mut open, &mut new] {
            let held = tokio::time::timeout(Duration::from_millis(300), round_trip(s, b"b")).await;
            assert!(held.is_err(), "a stalled proxy forwarded {held:?}");
        }
        assert_eq!(proxy.stats().stalled, 2);
        proxy.set_mode(ProxyMode::Pass);
        // The held bytes go through once the stall ends.
        let mut got = [0u8; 1];
        for s in [&mut open, &mut new] {
            s.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"b");
        }
    }

    #[tokio::test]
    async fn reset_cuts_open_and_new_connections_with_rst() {
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut open, b"a").await.unwrap(), b"a");
        proxy.set_mode(ProxyMode::Reset);
        let mut buf = [0u8; 1];
        let err = open.read(&mut buf).await.expect_err("a RST, not a clean end");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
        let mut new = TcpStream::connect(proxy.addr()).await.unwrap();
        let err = new.read(&mut buf).await.expect_err("a RST, not a clean end");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
        // The open connection's two sides, then the new one.
        assert_eq!(proxy.stats().reset, 3);
    }

    #[tokio::test]
    async fn bytes_held_by_a_stall_are_cut_by_a_reset_not_forwarded() {
        // Responses held back by a delay, then by a stall, then cut by a reset:
        // none may reach the client. Many connections, because the switch
        // from stall to reset is a race the proxy must win every time.
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        proxy.set_mode(ProxyMode::Delay(Duration::from_millis(200)));
        let mut clients = Vec::new();
        for _ in 0..32 {
            let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
            s.write_all(b"held").await.unwrap();
            clients.push(s);
        }
        // Every request read and held by the delay (else the reset would have
        // nothing to cut), checked often: the stall must come before the delay ends.
        let deadline = Instant::now() + Duration::from_secs(5);
        while proxy.stats().delayed < 32 {
            assert!(Instant::now() < deadline, "requests not held: {:?}", proxy.stats());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        proxy.set_mode(ProxyMode::Stall);
        assert_eq!(proxy.stats().bytes_down, 0, "a delayed response went through early");
        // Past the delay: the held responses are due, but stalled.
        tokio::time::sleep(Duration::from_millis(400)).await;
        proxy.set_mode(ProxyMode::Reset);
        let mut leaked = 0;
        for s in &mut clients {
            let mut buf = [0u8; 16];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => leaked += n,
                }
            }
        }
        assert_eq!(leaked, 0, "bytes held by the stall reached clients on the reset");
        assert_eq!(proxy.stats().bytes_down, 0);
    }

    #[tokio::test]
    async fn delay_holds_responses_back_without_losing_them() {
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        proxy.set_mode(ProxyMode::Delay(Duration::from_millis(400)));
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        let started = std::time::Instant::now();
        assert_eq!(round_trip(&mut s, b"slow").await.unwrap(), b"slow");
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
        assert!(proxy.stats().delayed >= 1);
    }
}
