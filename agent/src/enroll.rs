//! The agent's identity lifecycle: the client certificate it ships with.
//!
//! - **Start-up** ([`ensure_identity`]): a valid certificate in the cert dir
//!   is used as is (a restart does not enroll again). Otherwise the agent
//!   enrolls with its token: it fetches `GET /v1/ca` without trusting
//!   anything, checks the CA against `--ca-pin` *before* the token leaves the
//!   pod (kubeadm's `--discovery-token-ca-cert-hash`), makes its own P-256
//!   key, and posts token + CSR to `/v1/enroll` over TLS verified against
//!   that CA alone.
//! - **Renewal** ([`Lifecycle::run`]): at a jittered 60–80 % of the
//!   certificate's lifetime, `POST /v1/renew` over mutual TLS with a new key.
//!   Files are replaced atomically; the shipper picks them up at its next
//!   connection, so nothing is dropped.
//! - **Recovery**: an expired certificate (or a collector saying so) is
//!   replaced by enrolling again with the token; a revoked agent stops with
//!   [`EnrollError::Revoked`].
//!
//! The token secret and the private key never reach a log, an error or a
//! `Debug` output.

use crate::config::{Secret, ShipArgs};
use crate::ship::{CertRefusal, IdentityLink};
use jiff::{SignedDuration, Timestamp};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// File names in the cert dir.
const CERT_FILE: &str = "tls.crt";
const KEY_FILE: &str = "tls.key";
const CA_FILE: &str = "ca.crt";
/// Most bytes read of any collector answer during enrollment.
const BODY_CAP: usize = 64 * 1024;
/// Renewal happens at this fraction of the lifetime, jittered between the two.
const RENEW_FROM: f64 = 0.6;
const RENEW_TO: f64 = 0.8;
/// Longest pause between failed attempts (enroll, renew).
const MAX_RETRY: Duration = Duration::from_secs(60);
/// Least time from one certificate to its renewal.
const MIN_RENEW_GAP_SECS: i64 = 10;
/// Least time between two checks of the certificate prompted by refusals on ingest.
const CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// Least time between two enrollments while the certificate had not expired.
const EARLY_REENROLL_INTERVAL: Duration = Duration::from_secs(600);
/// Timeouts of the enrollment client.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the agent has no usable identity, or lost it.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// Nothing to ship with: no certificate and no token.
    #[error(
        "no client certificate in {} and no enrollment token: pass --token (or --token-file) and --ca-pin \
         (or --ca-pin-file) as printed by `podwarn-collector token create`, or mount its Secret with envFrom \
         (PODWARN_TOKEN, PODWARN_CA_PIN, PODWARN_COLLECTOR); or put tls.crt, tls.key and ca.crt from \
         `podwarn-collector cert issue --out DIR` there and pass --cert-dir DIR",
        dir.display()
    )]
    NoIdentity {
        /// The cert dir.
        dir: PathBuf,
    },
    /// The certificate expired and there is no token to enroll again with.
    #[error(
        "the client certificate in {} expired at {not_after} and there is no enrollment token to enroll again: \
         pass --token and --ca-pin from `podwarn-collector token create`, or issue a new certificate",
        dir.display()
    )]
    ExpiredWithoutToken {
        /// The cert dir.
        dir: PathBuf,
        /// When it expired.
        not_after: Timestamp,
    },
    /// A token without a pin (or the reverse, when enrolling).
    #[error("--token needs --ca-pin (printed next to the token by `podwarn-collector token create`)")]
    TokenWithoutPin,
    /// `--collector` is missing.
    #[error("--collector URL is required (https://HOST:PORT of the podwarn collector)")]
    NoCollector,
    /// `--collector` is not an https URL with a host.
    #[error("--collector {url:?} is not usable ({reason}): use https://HOST:PORT")]
    CollectorUrl {
        /// The URL given.
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The token is not `pw1.<id>.<secret>`; the message never repeats it.
    #[error(
        "the enrollment token is malformed: {0} (expected pw1.<id>.<secret>, as printed by `podwarn-collector token create`)"
    )]
    TokenMalformed(&'static str),
    /// The pin is not `sha256:<64 hex digits>`.
    #[error(
        "--ca-pin {0:?} is malformed: expected sha256:<64 hex digits>, as printed by `podwarn-collector token create`"
    )]
    PinMalformed(String),
    /// `--token-file` or `--ca-pin-file` cannot be read.
    #[error("cannot read {flag} {}", path.display())]
    ReadFile {
        /// Which flag.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The collector's CA does not match the pin: the token was not sent.
    #[error(
        "the collector at {url} presents CA {found}, not the pinned {expected}: the enrollment token was NOT sent. \
         Either this is not your collector (someone in the way?), or --ca-pin is wrong: copy it again from \
         `podwarn-collector token create` on the collector"
    )]
    PinMismatch {
        /// The collector URL.
        url: String,
        /// The configured pin.
        expected: String,
        /// The pin of the CA the collector sent.
        found: String,
    },
    /// The collector refused the enrollment for good.
    #[error(
        "the collector refused to enroll this agent ({status} {code}: {message}){}",
        hint(code)
    )]
    Refused {
        /// HTTP status.
        status: u16,
        /// The collector's error code.
        code: String,
        /// Its message.
        message: String,
    },
    /// The collector does not answer like a podwarn collector.
    #[error("{0}")]
    Unexpected(String),
    /// The agent was revoked: a human must act.
    #[error(
        "the collector refused agent {agent_id} (cluster {cluster}): it was revoked (`podwarn-collector agent revoke`) \
         or the collector forgot it. Shipping stopped; events wait in the spool. To enroll again, delete {} and \
         restart the agent with a valid token (`podwarn-collector token create --cluster {cluster}`)",
        dir.display()
    )]
    Revoked {
        /// The agent id of the certificate.
        agent_id: String,
        /// Its cluster.
        cluster: String,
        /// The cert dir to clear.
        dir: PathBuf,
    },
    /// The key or the CSR could not be made.
    #[error("generating the agent's key and certificate request")]
    Key(#[source] rcgen::Error),
    /// The files of the cert dir could not be written.
    #[error("writing the agent's certificate to {}", dir.display())]
    Write {
        /// The cert dir.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("building the HTTPS client")]
    Client(#[source] reqwest::Error),
    /// Shutdown came first.
    #[error("stopped before the agent had a certificate")]
    Cancelled,
}

fn hint(code: &str) -> &'static str {
    match code {
        "token_invalid" => ": the token is wrong or unknown to this collector; copy it again or create a new one",
        "token_expired" | "token_used_up" | "token_revoked" => {
            ": create a new token (`podwarn-collector token create`) and update the agent's Secret"
        }
        "token_malformed" => ": the token is not pw1.<id>.<secret>",
        "conflict" => ": the token's cluster name belongs to another tenant",
        _ => "",
    }
}

impl EnrollError {
    /// Whether the configuration must change (the process exits with 64).
    pub fn is_config(&self) -> bool {
        !matches!(
            self,
            Self::Revoked { .. } | Self::Write { .. } | Self::Key(_) | Self::Client(_) | Self::Cancelled
        )
    }
}

/// A parsed enrollment token. `Debug` shows only its public id.
#[derive(Clone)]
pub struct Token {
    id: String,
    text: Secret,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Token {
    /// Checks the `pw1.<id>.<secret>` form (as the collector does); the error never repeats the input.
    pub fn parse(text: &str) -> Result<Self, EnrollError> {
        let text = text.trim();
        let mut parts = text.split('.');
        let (Some(prefix), Some(id), Some(secret), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(EnrollError::TokenMalformed(
                "it must have exactly three parts separated by '.'",
            ));
        };
        if prefix != "pw1" {
            return Err(EnrollError::TokenMalformed("it must start with `pw1.`"));
        }
        if !(8..=16).contains(&id.len()) || !id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
            return Err(EnrollError::TokenMalformed(
                "the id must be 8 to 16 characters of a-z and 0-9",
            ));
        }
        if !(22..=128).contains(&secret.len())
            || !secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(EnrollError::TokenMalformed(
                "the secret must be 22 to 128 base64url characters",
            ));
        }
        Ok(Self {
            id: id.to_owned(),
            text: text.parse().unwrap_or_else(|never| match never {}),
        })
    }

    /// The public id (safe to log).
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// A CA pin, `sha256:<64 lowercase hex digits>` of the CA's SubjectPublicKeyInfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaPin(String);

impl CaPin {
    /// Parses a configured pin (hex digits in either case).
    pub fn parse(text: &str) -> Result<Self, EnrollError> {
        let text = text.trim();
        let malformed = || EnrollError::PinMalformed(text.chars().take(80).collect());
        let hex = text.strip_prefix("sha256:").ok_or_else(malformed)?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(malformed());
        }
        Ok(Self(format!("sha256:{}", hex.to_ascii_lowercase())))
    }

    /// The pin of the first certificate of `pem`.
    pub fn of_pem(pem: &[u8]) -> Result<Self, String> {
        let der = rustls_pemfile::certs(&mut &pem[..])
            .next()
            .ok_or("holds no PEM certificate")?
            .map_err(|_| "is not valid PEM")?;
        Self::of_der(&der)
    }

    /// The pin of a DER certificate.
    pub fn of_der(der: &[u8]) -> Result<Self, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|_| "is not an X.509 certificate")?;
        let digest = Sha256::digest(cert.tbs_certificate.subject_pki.raw);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self(format!("sha256:{hex}")))
    }
}

impl std::fmt::Display for CaPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where the identity lives and how to get one.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// The collector's base URL.
    pub collector: reqwest::Url,
    /// Folder of `tls.crt`, `tls.key`, `ca.crt`.
    pub cert_dir: PathBuf,
    /// Token to enroll with, if any.
    pub token: Option<Token>,
    /// The pin the collector's CA must match.
    pub pin: Option<CaPin>,
    /// This agent's version, sent when enrolling.
    pub agent_version: String,
}

impl IdentityConfig {
    /// From the flags: reads `--token-file`/`--ca-pin-file`, checks formats;
    /// the cert dir defaults to `<spool_dir>/identity`.
    pub fn from_args(ship: &ShipArgs, spool_dir: &Path) -> Result<Self, EnrollError> {
        let url = ship.collector.as_deref().ok_or(EnrollError::NoCollector)?;
        let collector = parse_url(url)?;
        let read = |flag: &'static str, path: &Path| {
            std::fs::read_to_string(path).map_err(|source| EnrollError::ReadFile {
                flag,
                path: path.into(),
                source,
            })
        };
        let token = match (&ship.token, &ship.token_file) {
            (Some(t), _) if !t.expose().trim().is_empty() => Some(Token::parse(t.expose())?),
            (_, Some(path)) => Some(Token::parse(&read("--token-file", path)?)?),
            _ => None,
        };
        let pin = match (&ship.ca_pin, &ship.ca_pin_file) {
            (Some(p), _) if !p.trim().is_empty() => Some(CaPin::parse(p)?),
            (_, Some(path)) => Some(CaPin::parse(&read("--ca-pin-file", path)?)?),
            _ => None,
        };
        if token.is_some() && pin.is_none() {
            return Err(EnrollError::TokenWithoutPin);
        }
        Ok(Self {
            collector,
            cert_dir: ship.cert_dir.clone().unwrap_or_else(|| default_cert_dir(spool_dir)),
            token,
            pin,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        })
    }
}

/// The cert dir when `--cert-dir` is not given: inside the agent's writable spool folder.
pub fn default_cert_dir(spool_dir: &Path) -> PathBuf {
    spool_dir.join("identity")
}

fn parse_url(text: &str) -> Result<reqwest::Url, EnrollError> {
    let bad = |reason| EnrollError::CollectorUrl {
        url: text.into(),
        reason,
    };
    let url = reqwest::Url::parse(text.trim()).map_err(|_| bad("not a URL"))?;
    if url.scheme() != "https" {
        return Err(bad("the scheme must be https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it names no host"));
    }
    Ok(url)
}

/// What the certificate in the cert dir says about the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The agent id of its identity URI.
    pub agent_id: String,
    /// Its tenant.
    pub tenant: String,
    /// Its cluster.
    pub cluster: String,
    /// Serial number, hex.
    pub serial: String,
    /// Start of validity (collectors backdate it a few minutes for clock skew).
    pub not_before: Timestamp,
    /// When it was issued, as well as the agent can tell: when it arrived,
    /// or when `tls.crt` was written; never before `not_before`. Lifetime
    /// fractions count from here, so a backdated short certificate is not
    /// renewed the moment it arrives.
    pub issued: Timestamp,
    /// End of validity.
    pub not_after: Timestamp,
}

impl CertInfo {
    /// Whether it has expired at `now`.
    pub fn expired(&self, now: Timestamp) -> bool {
        now >= self.not_after
    }

    /// The fraction of its lifetime left at `now` (0 when expired).
    pub fn life_left(&self, now: Timestamp) -> f64 {
        let total = self.not_after.duration_since(self.issued).as_secs_f64();
        if total <= 0.0 {
            return 0.0;
        }
        (self.not_after.duration_since(now).as_secs_f64() / total).clamp(0.0, 1.0)
    }

    /// With `issued` set to `at`, kept within the validity.
    fn issued_at(mut self, at: Timestamp) -> Self {
        self.issued = at.clamp(self.not_before, self.not_after);
        self
    }

    fn describe(der: &[u8]) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let uri = cert.subject_alternative_name().ok().flatten().and_then(|san| {
            san.value.general_names.iter().find_map(|name| match name {
                x509_parser::extensions::GeneralName::URI(uri) => Some((*uri).to_owned()),
                _ => None,
            })
        });
        // spiffe://podwarn/tenant/<t>/cluster/<c>/agent/<id>
        let (tenant, cluster, agent_id) = uri
            .as_deref()
            .and_then(|u| u.strip_prefix("spiffe://podwarn/tenant/"))
            .and_then(|rest| {
                let parts: Vec<&str> = rest.split('/').collect();
                match parts.as_slice() {
                    [t, "cluster", c, "agent", a] => Some(((*t).to_owned(), (*c).to_owned(), (*a).to_owned())),
                    _ => None,
                }
            })
            .unwrap_or_else(|| ("?".into(), "?".into(), "?".into()));
        Some(Self {
            agent_id,
            tenant,
            cluster,
            serial: cert.raw_serial_as_string().replace(':', ""),
            not_before: Timestamp::from_second(cert.validity().not_before.timestamp()).ok()?,
            issued: Timestamp::from_second(cert.validity().not_before.timestamp()).ok()?,
            not_after: Timestamp::from_second(cert.validity().not_after.timestamp()).ok()?,
        })
    }
}

/// What the cert dir holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// No `tls.crt`.
    Missing,
    /// Files that cannot be used, and why.
    Unusable(String),
    /// A certificate with its key and CA (perhaps expired).
    Present(CertInfo),
}

/// Reads the cert dir: the certificate, whether the key is its key, the CA.
pub fn read_stored(dir: &Path) -> Stored {
    let cert_path = dir.join(CERT_FILE);
    let cert_pem = match std::fs::read(&cert_path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Stored::Missing,
        Err(e) => return Stored::Unusable(format!("cannot read {}: {e}", cert_path.display())),
    };
    match load_pair(dir, &cert_pem) {
        Ok((chain, _)) => match CertInfo::describe(&chain[0]) {
            Some(info) => {
                let written = std::fs::metadata(&cert_path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| Timestamp::try_from(t).ok())
                    .map_or(info.not_before, |t| t.min(Timestamp::now()));
                Stored::Present(info.issued_at(written))
            }
            None => Stored::Unusable(format!("{} is not an X.509 certificate", cert_path.display())),
        },
        Err(why) => Stored::Unusable(why),
    }
}

type Pair = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// The certificate chain and key of the cert dir, checked to belong together; the CA must parse.
fn load_pair(dir: &Path, cert_pem: &[u8]) -> Result<Pair, String> {
    let key_path = dir.join(KEY_FILE);
    let ca_path = dir.join(CA_FILE);
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{} is not valid PEM", dir.join(CERT_FILE).display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no certificate", dir.join(CERT_FILE).display()));
    }
    let key_pem = std::fs::read(&key_path).map_err(|e| format!("cannot read {}: {e}", key_path.display()))?;
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .ok()
        .flatten()
        .ok_or_else(|| format!("{} holds no usable private key", key_path.display()))?;
    let ca_pem = std::fs::read(&ca_path).map_err(|e| format!("cannot read {}: {e}", ca_path.display()))?;
    CaPin::of_pem(&ca_pem).map_err(|why| format!("{} {why}", ca_path.display()))?;
    let provider = provider();
    rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider)
        .map_err(|_| format!("{} is not the private key of {}", key_path.display(), CERT_FILE))?;
    Ok((chain, key))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Writes `name` in `dir` atomically (temporary file, fsync, rename) with `mode`.
pub(crate) fn write_atomic(dir: &Path, name: &str, contents: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Writes a new identity: CA, then key (0600), then certificate. The
/// shipper ignores a key and certificate that do not match, so it goes on
/// with the old pair until both are in place.
fn write_identity(dir: &Path, key_pem: &str, cert_pem: &str, ca_pem: &[u8]) -> Result<(), EnrollError> {
    use std::os::unix::fs::PermissionsExt;
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        write_atomic(dir, CA_FILE, ca_pem, 0o644)?;
        write_atomic(dir, KEY_FILE, key_pem.as_bytes(), 0o600)?;
        write_atomic(dir, CERT_FILE, cert_pem.as_bytes(), 0o644)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|source| EnrollError::Write {
        dir: dir.into(),
        source,
    })
}

/// When to renew: `fraction` (60–80 %) of the way from `issued` to `not_after`.
pub fn renew_at(issued: Timestamp, not_after: Timestamp, fraction: f64) -> Timestamp {
    let life = not_after.duration_since(issued).as_secs_f64().max(0.0);
    let offset = SignedDuration::try_from_secs_f64(life * fraction.clamp(0.0, 1.0)).unwrap_or(SignedDuration::ZERO);
    issued.checked_add(offset).unwrap_or(not_after)
}

/// A random fraction in the renewal window, so agents enrolled together do not renew together.
pub fn renewal_fraction() -> f64 {
    RENEW_FROM + rand::random::<f64>() * (RENEW_TO - RENEW_FROM)
}

/// The wait before attempt `failures + 1`: doubling from 1 s, capped, jittered ±25 %.
fn retry_delay(failures: u32) -> Duration {
    let base = Duration::from_secs(1u64 << failures.min(6)).min(MAX_RETRY);
    base.mul_f64(0.75 + rand::random::<f64>() * 0.5)
}

/// Accepts any server certificate: only for fetching the CA, whose pin is checked before anything is sent.
#[derive(Debug)]
struct TrustOnPin(Arc<CryptoProvider>);

impl ServerCertVerifier for TrustOnPin {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn http_client(tls: rustls::ClientConfig) -> Result<reqwest::Client, EnrollError> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(EnrollError::Client)
}

fn tls_builder(
    provider: Arc<CryptoProvider>,
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, EnrollError> {
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| EnrollError::Unexpected(format!("TLS setup: {e}")))
}

/// A client trusting only `ca_pem` (normal host name checks), optionally presenting a certificate.
fn pinned_client(ca_pem: &[u8], identity: Option<Pair>) -> Result<reqwest::Client, EnrollError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]).flatten() {
        let _ = roots.add(cert);
    }
    let builder = tls_builder(provider())?.with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| EnrollError::Unexpected(format!("the agent's certificate is unusable: {e}")))?,
    };
    http_client(config)
}

fn endpoint(base: &reqwest::Url, path: &str) -> reqwest::Url {
    let mut url = base.clone();
    url.set_path(&format!("{}{path}", base.path().trim_end_matches('/')));
    url
}

/// Why one attempt did not give a certificate.
#[derive(Debug)]
enum Attempt {
    /// Try again later (network, 429, 5xx).
    Retry { reason: String, after: Option<Duration> },
    /// The certificate is no longer accepted (401 on renewal): enroll again.
    Reenroll { reason: String },
    /// The agent is revoked (403 `agent_refused`).
    Revoked { reason: String },
    /// Stop: the configuration must change.
    Fatal(EnrollError),
}

impl Attempt {
    /// What to retry with, or the fatal error.
    fn retry(self) -> Result<(String, Option<Duration>), EnrollError> {
        match self {
            Self::Retry { reason, after } => Ok((reason, after)),
            Self::Reenroll { reason } | Self::Revoked { reason } => Ok((reason, None)),
            Self::Fatal(e) => Err(e),
        }
    }
}

/// The answer of `/v1/enroll` and `/v1/renew`.
#[derive(Deserialize)]
struct Issued {
    cert: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    #[serde(default)]
    message: String,
}

/// Reads a capped body.
async fn read_body(mut response: reqwest::Response) -> Vec<u8> {
    let mut raw = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        raw.extend_from_slice(&chunk);
        if raw.len() > BODY_CAP {
            break;
        }
    }
    raw
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let secs: u64 = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs).min(Duration::from_secs(300)))
}

/// A request that failed before an answer: a TLS verification failure is
/// a configuration problem, anything else is retried.
fn network_failure(err: &reqwest::Error, url: &reqwest::Url) -> Attempt {
    let mut chain = String::new();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut invalid_cert = false;
    while let Some(e) = cause {
        if !chain.is_empty() {
            chain.push_str(": ");
        }
        chain.push_str(&e.to_string());
        if let Some(rustls::Error::InvalidCertificate(_)) = e.downcast_ref::<rustls::Error>() {
            invalid_cert = true;
        }
        if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref())
            && let Some(rustls::Error::InvalidCertificate(_)) = inner.downcast_ref::<rustls::Error>()
        {
            invalid_cert = true;
        }
        cause = e.source();
    }
    if invalid_cert {
        return Attempt::Fatal(EnrollError::Unexpected(format!(
            "the collector at {url} presents a server certificate its pinned CA does not vouch for under this name \
             ({chain}): use in --collector a host name the collector's certificate names (`serve --advertise`)"
        )));
    }
    Attempt::Retry {
        reason: format!("{url}: {chain}"),
        after: None,
    }
}

/// `GET /v1/ca` without verifying the server (nothing secret is sent), and the pin of what came back.
pub async fn fetch_ca(collector: &reqwest::Url) -> Result<(Vec<u8>, CaPin), String> {
    match fetch_ca_once(collector).await {
        Ok(found) => Ok(found),
        Err(Attempt::Fatal(e)) => Err(e.to_string()),
        Err(Attempt::Retry { reason, .. } | Attempt::Reenroll { reason } | Attempt::Revoked { reason }) => Err(reason),
    }
}

async fn fetch_ca_once(collector: &reqwest::Url) -> Result<(Vec<u8>, CaPin), Attempt> {
    let provider = provider();
    let config = tls_builder(provider.clone())
        .map_err(Attempt::Fatal)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(TrustOnPin(provider)))
        .with_no_client_auth();
    let client = http_client(config).map_err(Attempt::Fatal)?;
    let url = endpoint(collector, "/v1/ca");
    let response = match client.get(url.clone()).send().await {
        Ok(r) => r,
        Err(e) => {
            return Err(Attempt::Retry {
                reason: format!("fetching the collector's CA from {url}: {e}"),
                after: None,
            });
        }
    };
    let status = response.status();
    if status.is_server_error() || status.as_u16() == 429 {
        return Err(Attempt::Retry {
            reason: format!("{url} answered {status}"),
            after: retry_after(&response),
        });
    }
    if !status.is_success() {
        return Err(Attempt::Fatal(EnrollError::Unexpected(format!(
            "{url} answered {status}: is --collector the podwarn collector's base URL?"
        ))));
    }
    let pem = read_body(response).await;
    let pin = CaPin::of_pem(&pem)
        .map_err(|why| Attempt::Fatal(EnrollError::Unexpected(format!("the CA from {url} {why}"))))?;
    Ok((pem, pin))
}

/// A fresh P-256 key (PKCS#8 PEM, never logged) and a CSR for it.
fn new_key_and_csr() -> Result<(String, String), EnrollError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(EnrollError::Key)?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(EnrollError::Key)?;
    Ok((key.serialize_pem(), csr))
}

/// Posts `body` and turns the answer into a stored identity or an [`Attempt`].
async fn post_for_cert(
    client: &reqwest::Client,
    url: reqwest::Url,
    body: serde_json::Value,
    dir: &Path,
    key_pem: &str,
    ca_pem: &[u8],
) -> Result<CertInfo, Attempt> {
    let response = match client.post(url.clone()).json(&body).send().await {
        Ok(r) => r,
        Err(e) => return Err(network_failure(&e, &url)),
    };
    let status = response.status();
    let after = retry_after(&response);
    let raw = read_body(response).await;
    if status.is_success() {
        let issued: Issued = serde_json::from_slice(&raw).map_err(|e| Attempt::Retry {
            reason: format!("{url} answered 200 with an unexpected body ({e})"),
            after: None,
        })?;
        let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut issued.cert.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap_or_default();
        let info = chain
            .first()
            .and_then(|c| CertInfo::describe(c))
            .map(|info| info.issued_at(Timestamp::now()))
            .ok_or_else(|| Attempt::Retry {
                reason: format!("{url} answered 200 without a usable certificate"),
                after: None,
            })?;
        // Checked before anything is written: a certificate for another key
        // must not replace a working pair.
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes()).ok().flatten();
        let matches = key.is_some_and(|key| rustls::sign::CertifiedKey::from_der(chain, key, &provider()).is_ok());
        if !matches {
            return Err(Attempt::Retry {
                reason: format!("{url} answered with a certificate that is not for this agent's new key"),
                after: None,
            });
        }
        write_identity(dir, key_pem, &issued.cert, ca_pem).map_err(Attempt::Fatal)?;
        return Ok(info);
    }
    let (code, message) = serde_json::from_slice::<ErrorBody>(&raw)
        .map(|b| (b.error.code, b.error.message))
        .unwrap_or_default();
    let reason = format!("{url} answered {} {code}: {message}", status.as_u16());
    match status.as_u16() {
        408 | 429 | 500..=599 => Err(Attempt::Retry { reason, after }),
        401 if url.path().ends_with("/renew") => Err(Attempt::Reenroll { reason }),
        403 if code == "agent_refused" => Err(Attempt::Revoked { reason }),
        s @ 400..=499 if url.path().ends_with("/enroll") => Err(Attempt::Fatal(EnrollError::Refused {
            status: s,
            code,
            message,
        })),
        _ => Err(Attempt::Retry { reason, after }),
    }
}

/// One enrollment: CA, pin check, key, `/v1/enroll`, files.
async fn enroll_once(cfg: &IdentityConfig, token: &Token, pin: &CaPin) -> Result<CertInfo, Attempt> {
    let (ca_pem, found) = fetch_ca_once(&cfg.collector).await?;
    if &found != pin {
        return Err(Attempt::Fatal(EnrollError::PinMismatch {
            url: cfg.collector.to_string(),
            expected: pin.to_string(),
            found: found.to_string(),
        }));
    }
    let client = pinned_client(&ca_pem, None).map_err(Attempt::Fatal)?;
    let (key_pem, csr) = new_key_and_csr().map_err(Attempt::Fatal)?;
    let body = serde_json::json!({
        "token": token.text.expose(),
        "csr": csr,
        "agent_version": cfg.agent_version,
    });
    let url = endpoint(&cfg.collector, "/v1/enroll");
    post_for_cert(&client, url, body, &cfg.cert_dir, &key_pem, &ca_pem).await
}

/// Enrolls with the token, retrying what can be retried, until shutdown.
async fn enroll(cfg: &IdentityConfig, shutdown: &CancellationToken) -> Result<CertInfo, EnrollError> {
    let (Some(token), Some(pin)) = (&cfg.token, &cfg.pin) else {
        return Err(EnrollError::TokenWithoutPin);
    };
    let mut failures = 0u32;
    loop {
        info!(collector = %cfg.collector, token_id = token.id(), pin = %pin, "enrolling with the token");
        match enroll_once(cfg, token, pin).await {
            Ok(info) => {
                info!(agent = %info.agent_id, cluster = %info.cluster, tenant = %info.tenant, not_after = %info.not_after, cert_dir = %cfg.cert_dir.display(), "enrolled");
                return Ok(info);
            }
            Err(attempt) => {
                let (reason, after) = attempt.retry()?;
                let wait = after.unwrap_or_else(|| retry_delay(failures));
                failures = failures.saturating_add(1);
                warn!(error = %reason, retry_in = ?wait, "enrollment failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = shutdown.cancelled() => return Err(EnrollError::Cancelled),
                }
            }
        }
    }
}

/// The identity to start with: the stored certificate when it is valid
/// (and its CA matches `--ca-pin`, if given), else a new enrollment.
pub async fn ensure_identity(cfg: &IdentityConfig, shutdown: &CancellationToken) -> Result<CertInfo, EnrollError> {
    let now = Timestamp::now();
    match read_stored(&cfg.cert_dir) {
        Stored::Present(info) if !info.expired(now) => {
            let ca_pin = std::fs::read(cfg.cert_dir.join(CA_FILE))
                .ok()
                .and_then(|pem| CaPin::of_pem(&pem).ok());
            match (&cfg.pin, ca_pin) {
                (Some(pin), Some(stored)) if &stored != pin && cfg.token.is_some() => {
                    warn!(cert_dir = %cfg.cert_dir.display(), stored = %stored, pin = %pin, "the stored CA does not match --ca-pin; enrolling again");
                }
                _ => {
                    info!(agent = %info.agent_id, cluster = %info.cluster, not_after = %info.not_after, cert_dir = %cfg.cert_dir.display(), "using the stored client certificate");
                    return Ok(info);
                }
            }
        }
        Stored::Present(info) => {
            if cfg.token.is_none() {
                return Err(EnrollError::ExpiredWithoutToken {
                    dir: cfg.cert_dir.clone(),
                    not_after: info.not_after,
                });
            }
            info!(agent = %info.agent_id, not_after = %info.not_after, "the stored client certificate expired; enrolling again");
        }
        Stored::Unusable(why) => {
            if cfg.token.is_none() {
                return Err(EnrollError::Unexpected(format!(
                    "{why}: fix the cert dir, or pass --token and --ca-pin to enroll"
                )));
            }
            warn!(problem = %why, "the stored client certificate is unusable; enrolling again");
        }
        Stored::Missing => {
            if cfg.token.is_none() {
                return Err(EnrollError::NoIdentity {
                    dir: cfg.cert_dir.clone(),
                });
            }
        }
    }
    enroll(cfg, shutdown).await
}

/// One renewal: `/v1/renew` over mTLS with the current certificate, for a new key.
async fn renew_once(cfg: &IdentityConfig) -> Result<CertInfo, Attempt> {
    let dir = &cfg.cert_dir;
    let cert_pem = std::fs::read(dir.join(CERT_FILE)).map_err(|e| Attempt::Reenroll {
        reason: format!("cannot read {}: {e}", dir.join(CERT_FILE).display()),
    })?;
    let pair = load_pair(dir, &cert_pem).map_err(|reason| Attempt::Reenroll { reason })?;
    let ca_pem = std::fs::read(dir.join(CA_FILE)).map_err(|e| Attempt::Reenroll {
        reason: format!("cannot read {}: {e}", dir.join(CA_FILE).display()),
    })?;
    let client = pinned_client(&ca_pem, Some(pair)).map_err(Attempt::Fatal)?;
    let (key_pem, csr) = new_key_and_csr().map_err(Attempt::Fatal)?;
    let url = endpoint(&cfg.collector, "/v1/renew");
    post_for_cert(&client, url, serde_json::json!({ "csr": csr }), dir, &key_pem, &ca_pem).await
}

/// Keeps the agent's certificate valid while it runs: see the module docs.
#[derive(Debug)]
pub struct Lifecycle {
    cfg: IdentityConfig,
    current: CertInfo,
    link: Arc<IdentityLink>,
    refusals: mpsc::Receiver<CertRefusal>,
}

/// What woke the lifecycle.
enum Wake {
    Due,
    Refused(CertRefusal),
}

impl Lifecycle {
    /// A lifecycle for the certificate `current` (from [`ensure_identity`]),
    /// announcing new ones on `link` and hearing the shipper's `refusals`.
    pub fn new(
        cfg: IdentityConfig,
        current: CertInfo,
        link: Arc<IdentityLink>,
        refusals: mpsc::Receiver<CertRefusal>,
    ) -> Self {
        Self {
            cfg,
            current,
            link,
            refusals,
        }
    }

    /// Renews and re-enrolls until `shutdown`. Returns an error only when the
    /// agent cannot go on: revoked ([`EnrollError::Revoked`]), or refused
    /// when enrolling again (bad, expired or used-up token).
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), EnrollError> {
        let mut due = self.schedule();
        let mut failures = 0u32;
        // When a refusal on ingest last made us check the certificate, and
        // when we last enrolled again although the certificate had not
        // expired: both bounded, so a proxy that strips client certificates
        // cannot make the agent hammer the collector or burn token uses.
        let mut last_check: Option<Instant> = None;
        let mut last_early_reenroll: Option<Instant> = None;
        loop {
            let wait = Duration::try_from(due.duration_since(Timestamp::now())).unwrap_or(Duration::ZERO);
            let wake = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                Some(refusal) = self.refusals.recv() => Wake::Refused(refusal),
                () = tokio::time::sleep(wait) => Wake::Due,
            };
            let now = Timestamp::now();
            let reenroll = match wake {
                Wake::Due => self.current.expired(now),
                Wake::Refused(r) if r.status == 401 && self.current.expired(now) => true,
                Wake::Refused(r) if r.status == 401 || (r.status == 403 && r.code == "agent_refused") => {
                    if last_check.is_some_and(|t| t.elapsed() < CHECK_INTERVAL) {
                        continue;
                    }
                    last_check = Some(Instant::now());
                    // Renewing over a fresh connection tells a stale connection or a
                    // skewed clock (renewed) from a revoked agent (403) or a
                    // certificate the collector no longer takes (401: enroll again).
                    warn!(agent = %self.current.agent_id, status = r.status, code = %r.code, "the collector refused this agent's certificate on ingest; checking by renewing");
                    false
                }
                Wake::Refused(_) => continue,
            };
            let result = if reenroll {
                self.reenroll("the client certificate is expired or refused", &shutdown)
                    .await
            } else {
                match renew_once(&self.cfg).await {
                    Ok(info) => {
                        info!(agent = %info.agent_id, not_after = %info.not_after, serial = %info.serial, "client certificate renewed");
                        Ok(Some(info))
                    }
                    Err(Attempt::Revoked { reason }) => {
                        error!(agent = %self.current.agent_id, cluster = %self.current.cluster, error = %reason, "this agent was revoked by the collector; stopping");
                        return Err(EnrollError::Revoked {
                            agent_id: self.current.agent_id.clone(),
                            cluster: self.current.cluster.clone(),
                            dir: self.cfg.cert_dir.clone(),
                        });
                    }
                    Err(Attempt::Reenroll { reason }) => {
                        if last_early_reenroll.is_some_and(|t| t.elapsed() < EARLY_REENROLL_INTERVAL) {
                            error!(agent = %self.current.agent_id, error = %reason, "the collector refuses a certificate that has not expired, again; not enrolling again so soon (is a proxy in the way stripping client certificates?)");
                            Ok(None)
                        } else {
                            last_early_reenroll = Some(Instant::now());
                            self.reenroll(&reason, &shutdown).await
                        }
                    }
                    Err(Attempt::Fatal(e)) => {
                        error!(error = %e, "renewal failed; retrying");
                        Ok(None)
                    }
                    Err(Attempt::Retry { reason, .. }) => {
                        warn!(error = %reason, not_after = %self.current.not_after, "renewal failed; retrying");
                        Ok(None)
                    }
                }
            };
            match result? {
                Some(info) => {
                    self.current = info;
                    self.link.identity_changed();
                    // Refusals reported before the swap are about the previous certificate.
                    while self.refusals.try_recv().is_ok() {}
                    failures = 0;
                    due = self.schedule();
                }
                None => {
                    failures = failures.saturating_add(1);
                    let next = Timestamp::now()
                        .checked_add(SignedDuration::try_from(retry_delay(failures)).unwrap_or(SignedDuration::ZERO))
                        .unwrap_or(self.current.not_after);
                    // Never past expiry: then enrolling again takes over.
                    due = if self.current.expired(Timestamp::now()) {
                        next
                    } else {
                        next.min(self.current.not_after)
                    };
                }
            }
        }
    }

    fn schedule(&self) -> Timestamp {
        let at = renew_at(self.current.issued, self.current.not_after, renewal_fraction());
        // Never a tight loop, whatever the certificate says.
        let at = at
            .max(Timestamp::now() + SignedDuration::from_secs(MIN_RENEW_GAP_SECS))
            .min(self.current.not_after);
        info!(agent = %self.current.agent_id, not_after = %self.current.not_after, renew_at = %at, "next certificate renewal");
        at
    }

    /// Enrolls again with the token; without one, reports and waits (an
    /// operator may put a new certificate in place).
    async fn reenroll(&self, reason: &str, shutdown: &CancellationToken) -> Result<Option<CertInfo>, EnrollError> {
        if self.cfg.token.is_none() {
            // A certificate put in place by hand is taken as it is.
            if let Stored::Present(info) = read_stored(&self.cfg.cert_dir)
                && info.serial != self.current.serial
                && !info.expired(Timestamp::now())
            {
                return Ok(Some(info));
            }
            error!(
                agent = %self.current.agent_id,
                error = %reason,
                cert_dir = %self.cfg.cert_dir.display(),
                "the client certificate is no longer accepted and there is no token to enroll again: pass --token and --ca-pin, or issue a new certificate into the cert dir"
            );
            return Ok(None);
        }
        warn!(agent = %self.current.agent_id, reason, "enrolling again with the token");
        match enroll(&self.cfg, shutdown).await {
            Ok(info) => Ok(Some(info)),
            Err(EnrollError::Cancelled) => Ok(None),
            Err(e) => {
                error!(error = %e, "enrolling again failed; stopping");
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_is_sha256_of_the_spki_in_the_collectors_format() {
        use rcgen::PublicKeyData as _;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        // The collector's `Ca::pin`: sha256 over the key's SubjectPublicKeyInfo, as `sha256:<hex>`.
        let expected: String = Sha256::digest(key.subject_public_key_info())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let pin = CaPin::of_pem(cert.pem().as_bytes()).unwrap();
        assert_eq!(pin.to_string(), format!("sha256:{expected}"));
        assert_eq!(pin.to_string().len(), "sha256:".len() + 64);
        // A configured pin in upper case is the same pin; malformed ones are refused.
        assert_eq!(
            CaPin::parse(&format!("sha256:{}", expected.to_uppercase())).unwrap(),
            pin
        );
        assert!(CaPin::parse(&expected).is_err());
        assert!(CaPin::parse("sha256:abc").is_err());
    }

    #[test]
    fn token_errors_never_repeat_the_secret() {
        let secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0";
        let token = Token::parse(&format!("pw1.0123456789ab.{secret}")).unwrap();
        assert_eq!(token.id(), "0123456789ab");
        assert!(!format!("{token:?}").contains(secret));
        for bad in [
            format!("pw2.0123456789ab.{secret}"),
            format!("pw1.UPPER.{secret}"),
            format!("pw1.0123456789ab.{secret}!"),
            secret.to_owned(),
        ] {
            let e = Token::parse(&bad).unwrap_err().to_string();
            assert!(!e.contains(secret), "{e}");
        }
    }

    #[test]
    fn flags_and_files_give_the_identity_configuration() {
        use clap::Parser;
        let tmp = tempfile::tempdir().unwrap();
        let token_file = tmp.path().join("token");
        std::fs::write(&token_file, "pw1.0123456789ab.c2VjcmV0LXNlY3JldC1zZWNyZXQ\n").unwrap();
        let pin_file = tmp.path().join("pin");
        std::fs::write(&pin_file, format!("sha256:{}\n", "AB".repeat(32))).unwrap();
        let parse = |args: &[&str]| {
            let mut all = vec!["podwarn-agent", "run", "--collector", "https://c.example:8443"];
            all.extend_from_slice(args);
            let crate::config::Command::Run(run) = crate::config::Cli::parse_from(all).command else {
                panic!("run expected")
            };
            IdentityConfig::from_args(&run.ship, Path::new("/spool"))
        };
        let token = token_file.to_str().unwrap();
        let pin = pin_file.to_str().unwrap();
        let cfg = parse(&["--token-file", token, "--ca-pin-file", pin]).unwrap();
        assert_eq!(cfg.cert_dir, Path::new("/spool/identity"));
        assert_eq!(cfg.token.as_ref().map(Token::id), Some("0123456789ab"));
        assert_eq!(cfg.pin.unwrap().to_string(), format!("sha256:{}", "ab".repeat(32)));
        assert!(matches!(
            parse(&["--token-file", token]),
            Err(EnrollError::TokenWithoutPin)
        ));
        assert!(parse(&["--cert-dir", "/certs"]).unwrap().token.is_none());
        assert!(matches!(
            parse(&["--token", "pw1.x", "--ca-pin-file", pin]),
            Err(EnrollError::TokenMalformed(_))
        ));
    }

    #[test]
    fn identity_files_are_written_atomically_with_a_private_key_of_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("identity");
        write_identity(&dir, "KEY", "CERT", b"CA").unwrap();
        let mode = |name: &str| std::fs::metadata(dir.join(name)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(KEY_FILE), 0o600);
        assert_eq!(std::fs::read_to_string(dir.join(KEY_FILE)).unwrap(), "KEY");
        assert_eq!(mode(CERT_FILE) & 0o077, 0o044);
        // Replacing keeps the mode and leaves no temporary files behind.
        write_identity(&dir, "KEY2", "CERT2", b"CA").unwrap();
        assert_eq!(mode(KEY_FILE), 0o600);
        assert_eq!(std::fs::read_to_string(dir.join(CERT_FILE)).unwrap(), "CERT2");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }

    #[test]
    fn renewal_is_scheduled_in_the_60_to_80_percent_window_with_jitter() {
        let nb: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let na: Timestamp = "2026-01-08T00:00:00Z".parse().unwrap();
        let life = na.duration_since(nb).as_secs_f64();
        assert_eq!(renew_at(nb, na, 0.6), nb + SignedDuration::from_secs_f64(life * 0.6));
        assert_eq!(renew_at(nb, na, 0.8), nb + SignedDuration::from_secs_f64(life * 0.8));
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let f = renewal_fraction();
            assert!((RENEW_FROM..=RENEW_TO).contains(&f), "{f}");
            let at = renew_at(nb, na, f);
            assert!(at >= renew_at(nb, na, 0.6) && at <= renew_at(nb, na, 0.8));
            seen.insert((f * 1000.0) as u64);
        }
        assert!(seen.len() > 50, "no jitter: {} distinct", seen.len());
        // A one-minute certificate, backdated five minutes as the collector does, still
        // renews 36 to 48 seconds after it was issued, not at once.
        let issued: Timestamp = "2026-01-01T00:05:00Z".parse().unwrap();
        let one_minute = issued + SignedDuration::from_secs(60);
        let at = renew_at(issued, one_minute, renewal_fraction());
        assert!((36..=48).contains(&at.duration_since(issued).as_secs()));
        // A one-minute certificate renews between 36 and 48 seconds.
        let short = nb + SignedDuration::from_secs(60);
        let at = renew_at(nb, short, renewal_fraction());
        assert!((36..=48).contains(&at.duration_since(nb).as_secs()));
    }

    #[test]
    fn retry_delays_grow_and_stay_capped() {
        assert!(retry_delay(0) <= Duration::from_millis(1250));
        assert!(retry_delay(20) <= MAX_RETRY.mul_f64(1.25));
        assert!(retry_delay(20) >= MAX_RETRY.mul_f64(0.75));
    }

    #[test]
    fn stored_identity_needs_a_matching_key() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(read_stored(tmp.path()), Stored::Missing);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&ca_key)
            .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://podwarn/tenant/default/cluster/prod/agent/0123456789abcdef"
                .try_into()
                .unwrap(),
        )];
        let cert = params.self_signed(&key).unwrap();
        write_identity(tmp.path(), &key.serialize_pem(), &cert.pem(), ca.pem().as_bytes()).unwrap();
        let Stored::Present(info) = read_stored(tmp.path()) else {
            panic!("expected a stored identity")
        };
        assert_eq!(
            (info.agent_id.as_str(), info.cluster.as_str()),
            ("0123456789abcdef", "prod")
        );
        let other = rcgen::KeyPair::generate().unwrap();
        write_identity(tmp.path(), &other.serialize_pem(), &cert.pem(), ca.pem().as_bytes()).unwrap();
        assert!(matches!(read_stored(tmp.path()), Stored::Unusable(_)));
    }
}
