//! A scriptable HTTPS collector for the shipper's tests: a throwaway CA, a
//! server certificate for 127.0.0.1/localhost, a client certificate written
//! into a temporary `--cert-dir`, and `/v1/ingest` answering what the test
//! scripted (200 with counts, a status with or without `Retry-After`, a stall).

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use podwarn_shared::wire::{ErrorBody, ErrorDetail};
use podwarn_shared::{IngestBatch, IngestResponse, WarningEvent};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// A CA with a server certificate and a client certificate in a `--cert-dir`.
pub(super) struct Pki {
    pub(super) cert_dir: tempfile::TempDir,
    server: Arc<rustls::ServerConfig>,
    issuer: Issuer<'static, KeyPair>,
}

/// Which client certificate a [`Pki`] writes.
#[derive(Debug, Clone, Copy)]
pub(super) enum Client {
    /// Signed by the collector's CA, valid now.
    Valid,
    /// Signed by the collector's CA, expired in 2020.
    Expired,
    /// Signed by another CA (a certificate from another collector).
    Foreign,
}

/// The identity URI written into test client certificates.
pub(super) const AGENT_URI: &str = "spiffe://podwarn/tenant/default/cluster/test/agent/a1";

fn ca() -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "test CA");
    let cert = params.self_signed(&key).expect("CA cert");
    (cert, Issuer::new(params, key))
}

impl Pki {
    /// Fresh PKI with a valid client certificate.
    pub(super) fn new() -> Self {
        Self::with_client(Client::Valid)
    }

    /// Fresh PKI with the client certificate of the given kind.
    pub(super) fn with_client(kind: Client) -> Self {
        let (ca_cert, issuer) = ca();
        let (_, foreign) = ca();
        let client_issuer = if matches!(kind, Client::Foreign) {
            &foreign
        } else {
            &issuer
        };
        let server_key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("server params");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = params.signed_by(&server_key, &issuer).expect("server cert");

        let (client_cert, client_key) = client_cert(client_issuer, AGENT_URI, matches!(kind, Client::Expired));
        let cert_dir = tempfile::tempdir().expect("cert dir");
        write(cert_dir.path(), "tls.crt", &client_cert.pem());
        write(cert_dir.path(), "tls.key", &client_key.serialize_pem());
        write(cert_dir.path(), "ca.crt", &ca_cert.pem());

        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).expect("root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()
            .expect("verifier");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
        let chain: Vec<CertificateDer<'static>> = vec![server_cert.der().clone()];
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .expect("server config");
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self {
            cert_dir,
            server: Arc::new(server),
            issuer,
        }
    }

    /// Writes a new client certificate and key over the old ones (a renewal), naming `uri`.
    pub(super) fn renew_client(&self, uri: &str) {
        let (cert, key) = client_cert(&self.issuer, uri, false);
        write(self.cert_dir.path(), "tls.crt", &cert.pem());
        write(self.cert_dir.path(), "tls.key", &key.serialize_pem());
    }

    /// Replaces `ca.crt` in the cert dir by an unrelated CA.
    pub(super) fn use_foreign_ca(&self) {
        let (other, _) = ca();
        write(self.cert_dir.path(), "ca.crt", &other.pem());
    }
}

fn client_cert(issuer: &Issuer<'static, KeyPair>, uri: &str, expired: bool) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().expect("client key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
    params.subject_alt_names = vec![SanType::URI(uri.try_into().expect("uri"))];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 1, 2);
    }
    let cert = params.signed_by(&key, issuer).expect("client cert");
    (cert, key)
}

fn write(dir: &Path, name: &str, pem: &str) {
    std::fs::write(dir.join(name), pem).expect("write pem");
}

/// One scripted answer; when the script is empty the collector stores.
#[derive(Debug, Clone, Copy)]
pub(super) enum Step {
    /// 200 with counts; the batch is recorded as stored.
    Store,
    /// This status with the protocol's error body, and `Retry-After` if given.
    Fail { status: u16, retry_after: Option<u64> },
    /// Waits this long, then answers 503 (nothing stored).
    Stall(Duration),
}

/// One request the collector saw.
#[derive(Debug, Clone)]
pub(super) struct Attempt {
    pub(super) at: Instant,
    pub(super) status: u16,
    pub(super) events: usize,
    /// The identity URI of the client certificate, if one was presented.
    pub(super) agent: Option<String>,
    /// `Content-Encoding` and `Content-Type` as sent.
    pub(super) encoding: Option<String>,
    pub(super) content_type: Option<String>,
}

#[derive(Default)]
struct Inner {
    script: Mutex<VecDeque<Step>>,
    stored: Mutex<Vec<IngestBatch>>,
    attempts: Mutex<Vec<Attempt>>,
}

/// A running test collector.
pub(super) struct TestCollector {
    pub(super) addr: SocketAddr,
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

impl TestCollector {
    /// Listens on a fresh loopback port.
    pub(super) async fn start(pki: &Pki) -> Self {
        Self::start_on(pki, "127.0.0.1:0".parse().expect("addr")).await
    }

    /// Listens on `addr` (to come back on the port of an earlier one).
    pub(super) async fn start_on(pki: &Pki, addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/v1/ingest", post(ingest))
            .with_state(inner.clone());
        let acceptor = tokio_rustls::TlsAcceptor::from(pki.server.clone());
        let task = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every connection.
            let mut connections = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let app = app.clone();
                connections.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let peer = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
                    let agent = peer.map(|der| super::tls::describe_cert(der).1.unwrap_or_default());
                    let app = app.layer(axum::Extension(ClientCert(agent)));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                        .await;
                });
            }
        });
        Self { addr, inner, task }
    }

    /// `https://127.0.0.1:PORT`.
    pub(super) fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Appends answers to the script.
    pub(super) fn script(&self, steps: impl IntoIterator<Item = Step>) {
        self.inner.script.lock().expect("script").extend(steps);
    }

    /// Every event the collector answered 200 for, in arrival order.
    pub(super) fn stored_events(&self) -> Vec<WarningEvent> {
        self.stored_batches().into_iter().flat_map(|b| b.events).collect()
    }

    /// Every batch the collector answered 200 for.
    pub(super) fn stored_batches(&self) -> Vec<IngestBatch> {
        self.inner.stored.lock().expect("stored").clone()
    }

    /// Every request, answered or not.
    pub(super) fn attempts(&self) -> Vec<Attempt> {
        self.inner.attempts.lock().expect("attempts").clone()
    }

    /// Stops listening and cuts every connection.
    pub(super) async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// The identity URI of the peer's certificate, if it presented one.
#[derive(Clone)]
struct ClientCert(Option<String>);

async fn ingest(
    State(inner): State<Arc<Inner>>,
    axum::Extension(ClientCert(agent)): axum::Extension<ClientCert>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let decoded = match headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()) {
        Some("zstd") => zstd::stream::decode_all(&body[..]).expect("zstd body"),
        _ => body.to_vec(),
    };
    let batch: IngestBatch = serde_json::from_slice(&decoded).expect("a valid ingest batch");
    let step = inner.script.lock().expect("script").pop_front().unwrap_or(Step::Store);
    let record = |status: u16| {
        inner.attempts.lock().expect("attempts").push(Attempt {
            at: Instant::now(),
            status,
            events: batch.events.len(),
            agent: agent.clone(),
            encoding: header_text(&headers, header::CONTENT_ENCODING),
            content_type: header_text(&headers, header::CONTENT_TYPE),
        });
    };
    match step {
        Step::Store => {
            record(200);
            let n = batch.events.len() as u64;
            inner.stored.lock().expect("stored").push(batch);
            axum::Json(IngestResponse {
                accepted: n,
                duplicate: 0,
                occurrences: n,
            })
            .into_response()
        }
        Step::Fail { status, retry_after } => {
            record(status);
            failure(status, retry_after)
        }
        Step::Stall(wait) => {
            record(0);
            tokio::time::sleep(wait).await;
            failure(503, None)
        }
    }
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn failure(status: u16, retry_after: Option<u64>) -> Response {
    let code = match status {
        400 => "invalid_event",
        403 => "agent_refused",
        413 => "payload_too_large",
        429 => "rate_limited",
        _ => "store_unavailable",
    };
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.into(),
            message: format!("scripted {status}"),
        },
    };
    let status = StatusCode::from_u16(status).expect("status");
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, secs.to_string().parse().expect("header"));
    }
    response
}
