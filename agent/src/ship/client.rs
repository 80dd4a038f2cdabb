//! The mTLS HTTP client: posting to `/v1/ingest`, classifying answers per
//! PROTOCOL.md, explaining failures, and the `check` probe.

use super::tls::{Identity, load_identity};
use super::{IdentityLink, ShipError};
use bytes::Bytes;
use podwarn_shared::IngestResponse;
use podwarn_shared::wire::{ErrorBody, ErrorDetail};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Longest `Retry-After` taken at its word; a larger value is clamped to it.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(300);
/// Most bytes of an error answer read (the collector's are a few hundred).
const ERROR_BODY_CAP: usize = 16 * 1024;

/// Checks `--collector`: an `https://` URL with a host.
pub(crate) fn parse_collector_url(collector: &str) -> Result<reqwest::Url, ShipError> {
    let invalid = |reason: &str| ShipError::CollectorUrl {
        url: collector.into(),
        reason: reason.into(),
    };
    let url = reqwest::Url::parse(collector.trim()).map_err(|e| invalid(&e.to_string()))?;
    match url.scheme() {
        "https" => {}
        "http" => return Err(ShipError::PlainHttp { url: collector.into() }),
        _ => return Err(invalid("the scheme must be https")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it names no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("it must be a base URL without query or fragment"));
    }
    Ok(url)
}

/// Timeouts of the HTTP client.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// TCP connect plus TLS handshake.
    pub(crate) connect: Duration,
    /// A whole request, answer included.
    pub(crate) request: Duration,
}

/// The collector as the shipper talks to it.
#[derive(Debug)]
pub(crate) struct Collector {
    /// The HTTP client and the identity generation it was built at. Rebuilt
    /// (dropping pooled connections, which keep presenting the certificate
    /// of their handshake) when the identity changes or the collector
    /// refuses the certificate.
    client: Mutex<(reqwest::Client, u64)>,
    tls: rustls::ClientConfig,
    timeouts: Timeouts,
    ingest: reqwest::Url,
    link: Option<Arc<IdentityLink>>,
}

fn build_client(tls: &rustls::ClientConfig, timeouts: Timeouts) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls.clone())
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.request)
        // A redirect would take the batch to a server we did not choose.
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
}

impl Collector {
    /// Builds the client for `base` (as checked by [`parse_collector_url`]).
    pub(crate) fn new(base: &reqwest::Url, identity: Identity, timeouts: Timeouts) -> Result<Self, ShipError> {
        let client = build_client(&identity.config, timeouts).map_err(ShipError::Client)?;
        let mut ingest = base.clone();
        let path = format!("{}/v1/ingest", base.path().trim_end_matches('/'));
        ingest.set_path(&path);
        Ok(Self {
            client: Mutex::new((client, 0)),
            tls: identity.config,
            timeouts,
            ingest,
            link: None,
        })
    }

    /// Connects this client to the identity lifecycle: refusals of the
    /// certificate are reported to it, and its new certificates are used
    /// on fresh connections.
    pub(crate) fn set_link(&mut self, link: Arc<IdentityLink>) {
        if let Ok(mut slot) = self.client.lock() {
            slot.1 = link.generation();
        }
        self.link = Some(link);
    }

    /// Resolves when the identity lifecycle has a new certificate (never without a link).
    pub(crate) async fn identity_changed(&self) {
        match &self.link {
            Some(link) => link.changed.notified().await,
            None => std::future::pending().await,
        }
    }

    /// The client to use now: a fresh one (new connections, current
    /// certificate) after the identity changed.
    fn client(&self) -> reqwest::Client {
        let mut slot = self.client.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(generation) = self.link.as_ref().map(|l| l.generation())
            && generation != slot.1
        {
            slot.1 = generation;
            match build_client(&self.tls, self.timeouts) {
                Ok(client) => slot.0 = client,
                Err(e) => tracing::warn!(error = %e, "could not rebuild the HTTPS client; keeping the previous one"),
            }
        }
        slot.0.clone()
    }

    /// Drops the pooled connections: the next request handshakes again with
    /// the certificate on disk.
    fn reconnect(&self) {
        let mut slot = self.client.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match build_client(&self.tls, self.timeouts) {
            Ok(client) => slot.0 = client,
            Err(e) => tracing::warn!(error = %e, "could not rebuild the HTTPS client; keeping the previous one"),
        }
    }

    /// POSTs a body to `/v1/ingest`.
    pub(crate) async fn post(&self, body: Bytes, encoding: Option<&'static str>) -> Result<Reply, reqwest::Error> {
        let mut request = self
            .client()
            .post(self.ingest.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(encoding) = encoding {
            request = request.header(CONTENT_ENCODING, encoding);
        }
        let mut response = request.send().await?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        if status == StatusCode::OK {
            // Stored whatever the body says; the counts are informational.
            let counts = response.json::<IngestResponse>().await.ok();
            return Ok(Reply {
                status,
                retry_after,
                counts,
                error: None,
            });
        }
        let mut raw = Vec::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            raw.extend_from_slice(&chunk);
            if raw.len() > ERROR_BODY_CAP {
                break;
            }
        }
        let error = serde_json::from_slice::<ErrorBody>(&raw).ok().map(|b| b.error);
        if matches!(status.as_u16(), 401 | 403) {
            if status == StatusCode::UNAUTHORIZED {
                // Perhaps a pooled connection still presents a certificate
                // that was replaced since: handshake again next time.
                self.reconnect();
            }
            if let Some(link) = &self.link {
                let code = error.as_ref().map(|e| e.code.clone()).unwrap_or_default();
                link.report(status.as_u16(), code);
            }
        }
        Ok(Reply {
            status,
            retry_after,
            counts: None,
            error,
        })
    }

    /// Sends one zstd-compressed batch and classifies the answer.
    pub(crate) async fn send(&self, body: Bytes) -> Outcome {
        match self.post(body, Some("zstd")).await {
            Ok(reply) => reply.classify(),
            Err(e) => Outcome::Retry {
                reason: explain_error(&e, &self.ingest),
                retry_after: None,
            },
        }
    }
}

/// An HTTP answer of the collector.
#[derive(Debug)]
pub(crate) struct Reply {
    status: StatusCode,
    retry_after: Option<Duration>,
    counts: Option<IngestResponse>,
    error: Option<ErrorDetail>,
}

/// What to do with a batch after one attempt.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// Durably stored by the collector.
    Stored(IngestResponse),
    /// Not stored; send again later (network error, timeout, 408, 429, 5xx,
    /// and 401/403: the certificate is the problem, not the batch).
    Retry {
        /// For the log: what happened and, where known, what to do.
        reason: String,
        /// The wait the collector asked for.
        retry_after: Option<Duration>,
    },
    /// Refused for good (a 4xx other than 401, 403, 408, 429): keep it aside.
    Refused {
        /// The status.
        status: StatusCode,
        /// The collector's error code (`invalid_event` …), or empty.
        code: String,
        /// The collector's explanation, or empty.
        message: String,
    },
}

/// How long to wait when the certificate is refused: no point hammering,
/// the operator has to act.
const AUTH_RETRY: Duration = Duration::from_secs(30);

impl Reply {
    fn detail(&self) -> (String, String) {
        self.error
            .as_ref()
            .map(|e| (e.code.clone(), e.message.clone()))
            .unwrap_or_default()
    }

    fn classify(self) -> Outcome {
        let status = self.status;
        let (code, message) = self.detail();
        match status.as_u16() {
            200 => Outcome::Stored(self.counts.unwrap_or_default()),
            401 | 403 => Outcome::Retry {
                reason: format!(
                    "the collector refused this agent's certificate ({status} {code}: {message}); \
                     issue a new certificate (`podwarn-collector cert issue`) or enroll again"
                ),
                retry_after: Some(self.retry_after.unwrap_or(AUTH_RETRY).max(AUTH_RETRY)),
            },
            408 | 429 | 500..=599 => Outcome::Retry {
                reason: format!("collector answered {status} {code}: {message}"),
                retry_after: self.retry_after,
            },
            400..=499 => Outcome::Refused { status, code, message },
            // Anything else is not "stored" either (PROTOCOL.md); keep the batch and retry.
            _ => Outcome::Retry {
                reason: format!("unexpected answer {status} from the collector (a proxy in the way?)"),
                retry_after: self.retry_after,
            },
        }
    }
}

/// `Retry-After` in seconds (the collector's form), clamped to [`RETRY_AFTER_CAP`].
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(RETRY_AFTER_CAP))
}

/// A human explanation of a failed request, with what to do.
pub(crate) fn explain_error(err: &reqwest::Error, url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or("?");
    let port = url.port_or_known_default().unwrap_or(443);
    let mut chain = String::new();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut tls = None;
    let mut io_kind = None;
    while let Some(e) = cause {
        if !chain.is_empty() {
            chain.push_str(": ");
        }
        chain.push_str(&e.to_string());
        dig(e, &mut tls, &mut io_kind);
        cause = e.source();
    }
    use rustls::CertificateError as C;
    use std::io::ErrorKind;
    if let Some(tls) = tls {
        return match tls {
            rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => format!(
                "the collector's certificate is not signed by ca.crt in --cert-dir: that ca.crt is not this \
                 collector's CA. Copy DATA_DIR/tls/ca.crt of the collector at {host}:{port} (or issue the agent \
                 certificate again from it)"
            ),
            rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => format!(
                "the collector's certificate is not valid for the name {host}: use in --collector the host name or \
                 address the collector's server certificate was made for"
            ),
            rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
                "the collector's server certificate has expired: renew it on the collector".into()
            }
            rustls::Error::AlertReceived(alert) => format!(
                "the collector refused this agent's client certificate during the TLS handshake ({alert:?}): it \
                 expired, or another collector issued it. Issue a new one (`podwarn-collector cert issue`) or \
                 enroll again"
            ),
            other => format!("TLS with the collector at {host}:{port} failed ({other}); check --cert-dir and ca.crt"),
        };
    }
    // After the handshake, a refused client certificate arrives as an alert on
    // the first read, which the TLS stream reports as text only.
    if let Some(at) = chain.find("received fatal alert: ") {
        let alert = chain[at + "received fatal alert: ".len()..]
            .split(':')
            .next()
            .unwrap_or("")
            .trim();
        return format!(
            "the collector refused this agent's client certificate ({alert}): it expired, or another collector \
             issued it. Issue a new one (`podwarn-collector cert issue`) or enroll again"
        );
    }
    // The same refusal, when the stream broke before the alert could be read.
    let cut = matches!(
        io_kind,
        Some(
            ErrorKind::BrokenPipe
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::UnexpectedEof
        )
    ) || chain.contains("broken pipe")
        || chain.contains("connection closed");
    if cut && !err.is_connect() && !err.is_timeout() {
        return format!(
            "the collector at {host}:{port} closed the connection right after the TLS handshake ({chain}). That is \
             how it refuses a client certificate it did not issue, or one that expired: issue a new one \
             (`podwarn-collector cert issue`) or enroll again. If the certificate is fine, see the collector's log"
        );
    }
    if io_kind == Some(ErrorKind::ConnectionRefused) {
        return format!(
            "connection refused by {host}:{port}: is the collector running (`podwarn-collector serve`)? Are the URL \
             and port in --collector right? In Kubernetes, check the collector's Service and that no NetworkPolicy \
             blocks the agent's egress"
        );
    }
    if err.is_timeout() {
        return format!(
            "timed out reaching the collector at {host}:{port}: a firewall or NetworkPolicy may drop the traffic, or \
             the collector is overloaded ({chain})"
        );
    }
    if err.is_connect() {
        return format!(
            "cannot connect to the collector at {host}:{port} ({chain}): check the host name resolves, the port, and \
             any firewall or NetworkPolicy in the way"
        );
    }
    format!("request to the collector at {host}:{port} failed: {chain}")
}

/// Finds a rustls error or an I/O error kind in `e`, looking inside I/O
/// errors (whose `source()` skips the error they wrap).
fn dig(
    e: &(dyn std::error::Error + 'static),
    tls: &mut Option<rustls::Error>,
    io_kind: &mut Option<std::io::ErrorKind>,
) {
    if let Some(t) = e.downcast_ref::<rustls::Error>() {
        tls.get_or_insert_with(|| t.clone());
    } else if let Some(io) = e.downcast_ref::<std::io::Error>() {
        match io.get_ref() {
            Some(inner) => dig(inner, tls, io_kind),
            None => {
                io_kind.get_or_insert(io.kind());
            }
        }
    }
}

/// See [`super::probe_collector`].
pub(crate) async fn probe(collector: &str, cert_dir: &Path, timeouts: Timeouts) -> Result<String, String> {
    let url = parse_collector_url(collector).map_err(|e| e.to_string())?;
    let identity = load_identity(cert_dir).map_err(|e| e.to_string())?;
    let not_after = identity.not_after;
    let agent = identity.agent_uri.clone();
    if let Some(t) = not_after
        && t < jiff::Timestamp::now()
    {
        return Err(format!(
            "the client certificate {} expired at {t}: issue a new one (`podwarn-collector cert issue --out {}`) or \
             enroll again",
            cert_dir.join("tls.crt").display(),
            cert_dir.display()
        ));
    }
    let client = Collector::new(&url, identity, timeouts).map_err(|e| e.to_string())?;
    let reply = client
        .post(Bytes::from_static(br#"{"events":[]}"#), None)
        .await
        .map_err(|e| explain_error(&e, &url))?;
    let (code, message) = reply.detail();
    match reply.status.as_u16() {
        200 => {
            let validity = not_after.map_or_else(|| "validity unknown".into(), |t| format!("valid until {t}"));
            let who = agent.map_or_else(String::new, |a| format!(", {a}"));
            let url = collector.trim().trim_end_matches('/');
            Ok(format!("collector reachable at {url} (certificate {validity}{who})"))
        }
        401 => Err(format!(
            "the collector at {url} did not get a client certificate ({code}: {message}): check that --cert-dir \
             holds tls.crt and tls.key issued by this collector"
        )),
        403 => Err(format!(
            "the collector at {url} refused this agent ({code}: {message}): the certificate was revoked or is \
             unknown to this collector. Issue a new one (`podwarn-collector cert issue`) or enroll again"
        )),
        404 => Err(format!(
            "{url} answered 404 for /v1/ingest: --collector must be the collector's base URL (https://HOST:PORT)"
        )),
        _ => Err(format!(
            "the collector at {url} answered {} ({code}: {message}){}",
            reply.status,
            if reply.status.is_server_error() {
                ": see the collector's log"
            } else {
                ""
            }
        )),
    }
}
