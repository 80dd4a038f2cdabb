//! A raw HTTP/1.1-over-TLS client: it sends exactly the bytes a case builds
//! (lying lengths, unnormalised paths, broken framing), which no ordinary
//! client would, and reads back whatever the server answers.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Who a request comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// No client certificate, no bearer token.
    Anonymous,
    /// The agent's client certificate.
    Agent,
    /// The admin bearer token (no client certificate).
    Admin,
}

/// TLS connectors for each kind of caller, and where the collector listens.
#[derive(Clone)]
pub struct Dialer {
    pub addr: SocketAddr,
    anonymous: TlsConnector,
    agent: TlsConnector,
    pub admin_token: String,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client TLS configuration trusting `ca_pem`, speaking `alpn`.
pub fn client_config(ca_pem: &[u8], cert_dir: Option<&Path>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match cert_dir {
        None => builder.with_no_client_auth(),
        Some(dir) => {
            let cert = std::fs::read(dir.join("tls.crt")).unwrap();
            let key = std::fs::read(dir.join("tls.key")).unwrap();
            let chain = rustls_pemfile::certs(&mut &cert[..])
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = rustls_pemfile::private_key(&mut &key[..]).unwrap().unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

impl Dialer {
    pub fn new(url: &str, ca_pem: &[u8], agent_cert_dir: &Path, admin_token: &str) -> Self {
        let addr = url.trim_start_matches("https://").parse().expect("collector address");
        Self {
            addr,
            anonymous: TlsConnector::from(client_config(ca_pem, None, &[b"http/1.1"])),
            agent: TlsConnector::from(client_config(ca_pem, Some(agent_cert_dir), &[b"http/1.1"])),
            admin_token: admin_token.to_owned(),
        }
    }

    /// A TLS connection as `who`.
    pub async fn connect(&self, who: Who) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.addr).await?;
        let connector = match who {
            Who::Agent => &self.agent,
            Who::Anonymous | Who::Admin => &self.anonymous,
        };
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        connector.connect(name, tcp).await
    }

    /// Sends `request` on a fresh connection and reads the first answer.
    pub async fn exchange(&self, who: Who, request: Request) -> Result<Reply, String> {
        let bytes = request.encode(who, &self.admin_token);
        let stream = self.connect(who).await.map_err(|e| format!("connect: {e}"))?;
        let (mut read, mut write) = tokio::io::split(stream);
        // Write while reading: the server may answer (413) and close before
        // the whole body is sent, and the answer must still be read.
        let hold_open = request.hold_open;
        let writer = tokio::spawn(async move {
            let _ = write.write_all(&bytes).await;
            let _ = write.flush().await;
            if let Some(hold) = hold_open {
                tokio::time::sleep(hold).await;
            }
            write
        });
        let reply = tokio::time::timeout(Duration::from_secs(60), read_reply(&mut read))
            .await
            .map_err(|_| "no answer within 60 s".to_owned())?;
        writer.abort();
        reply
    }
}

/// An HTTP/1.1 request, as bytes to send.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    target: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    /// `Content-Length` is added unless a case sets its own framing.
    auto_length: bool,
    /// Keep the connection open this long after sending (a lying length).
    hold_open: Option<Duration>,
}

impl Request {
    pub fn new(method: &str, target: impl Into<Vec<u8>>) -> Self {
        Self {
            method: method.to_owned(),
            target: target.into(),
            headers: Vec::new(),
            body: Vec::new(),
            auto_length: true,
            hold_open: None,
        }
    }
    pub fn get(target: impl Into<Vec<u8>>) -> Self {
        Self::new("GET", target)
    }
    pub fn post(target: impl Into<Vec<u8>>) -> Self {
        Self::new("POST", target)
    }
    /// A JSON POST.
    pub fn json(target: &str, body: impl Into<Vec<u8>>) -> Self {
        Self::post(target).header("content-type", "application/json").body(body)
    }
    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("transfer-encoding") {
            self.auto_length = false;
        }
        self.headers.push((name.to_owned(), value.into()));
        self
    }
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
    pub fn hold_open(mut self, wait: Duration) -> Self {
        self.hold_open = Some(wait);
        self
    }

    fn encode(&self, who: Who, admin_token: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 512);
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(&self.target);
        out.extend_from_slice(b" HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
        if who == Who::Admin {
            out.extend_from_slice(format!("authorization: Bearer {admin_token}\r\n").as_bytes());
        }
        if self.auto_length && (!self.body.is_empty() || self.method == "POST") {
            out.extend_from_slice(format!("content-length: {}\r\n", self.body.len()).as_bytes());
        }
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one answer: its head, then a `Content-Length` body, a chunked body,
/// or everything up to the close.
pub async fn read_reply(read: &mut (impl AsyncRead + Unpin)) -> Result<Reply, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut head = httparse::Response::new(&mut headers);
        match head.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let status = head.code.unwrap_or(0);
                let headers: Vec<(String, String)> = head
                    .headers
                    .iter()
                    .map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned()))
                    .collect();
                let mut rest = buf.split_off(len);
                let body = read_body(read, &headers, &mut rest).await?;
                return Ok(Reply { status, headers, body });
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(format!("unparseable answer ({e}): {:?}", String::from_utf8_lossy(&buf))),
        }
        let n = read.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(if buf.is_empty() {
                "the connection closed without an answer".to_owned()
            } else {
                format!("the connection closed mid-answer: {:?}", String::from_utf8_lossy(&buf))
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn read_body(
    read: &mut (impl AsyncRead + Unpin),
    headers: &[(String, String)],
    buf: &mut Vec<u8>,
) -> Result<Vec<u8>, String> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_ascii_lowercase())
    };
    let mut chunk = [0u8; 16 * 1024];
    if let Some(len) = get("content-length") {
        let len: usize = len.parse().map_err(|_| format!("bad content-length {len}"))?;
        while buf.len() < len {
            let n = read.read(&mut chunk).await.map_err(|e| format!("read body: {e}"))?;
            if n == 0 {
                return Err(format!("body cut at {} of {len} bytes", buf.len()));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.truncate(len);
        return Ok(std::mem::take(buf));
    }
    // Chunked or close-delimited: read to the end, then undo the chunking.
    loop {
        match read.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    if get("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
        return dechunk(buf);
    }
    Ok(std::mem::take(buf))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunk size line missing")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("chunk cut short".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Waits until the peer closes `stream` (EOF or an error), sending `trickle`
/// one byte per `every` meanwhile. Returns how many bytes were sent, or
/// `None` if the connection was still open after `limit`.
pub async fn wait_closed_while_trickling(
    stream: impl AsyncRead + AsyncWrite + Unpin,
    trickle: &[u8],
    every: Duration,
    limit: Duration,
) -> Option<usize> {
    let (mut read, mut write) = tokio::io::split(stream);
    let mut sent = 0;
    let deadline = tokio::time::Instant::now() + limit;
    let mut tick = tokio::time::interval(every);
    let mut buf = [0u8; 4096];
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return None,
            got = read.read(&mut buf) => match got {
                Ok(0) | Err(_) => return Some(sent),
                // Whatever the server says (a 408 for a trickled body), keep
                // waiting for it to close.
                Ok(_) => {}
            },
            _ = tick.tick() => {
                if let Some(byte) = trickle.get(sent) {
                    if write.write_all(std::slice::from_ref(byte)).await.is_err()
                        || write.flush().await.is_err()
                    {
                        return Some(sent);
                    }
                    sent += 1;
                }
            }
        }
    }
}
