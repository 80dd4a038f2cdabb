//! The collector's certificate authority, its server certificate, agent
//! client certificates, and the identity read back from a peer certificate.
//!
//! An agent's identity (tenant, cluster, agent id) lives in one URI SAN,
//! `spiffe://podwarn/tenant/<t>/cluster/<c>/agent/<id>`, set by the collector
//! when it signs: never taken from what the agent asked for (invariant 5).

use crate::names::{self, validate_name};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Errors of certificate handling.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A certificate or key could not be generated or parsed.
    #[error("{what}")]
    Cert {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {what}")]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: &'static str,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(String),
    /// A name is not valid for a certificate.
    #[error(transparent)]
    Name(#[from] names::InvalidName),
}

type Result<T, E = TlsError> = std::result::Result<T, E>;

/// Where the TLS material of a data directory lives.
#[derive(Debug, Clone)]
pub struct TlsPaths {
    /// `DIR/tls`.
    pub dir: PathBuf,
}

impl TlsPaths {
    /// The TLS folder of a data directory.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("tls"),
        }
    }
    /// The CA certificate (public, handed to agents).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    /// The CA private key (0600).
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    /// The server certificate.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }
    /// The server private key (0600).
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
}

/// The collector's certificate authority, loaded in memory.
pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// An agent identity, as bound in its client certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AgentIdentity {
    /// The tenant the agent writes into.
    pub tenant: String,
    /// The cluster every record it sends is stored under.
    pub cluster: String,
    /// The agent's unique id.
    pub agent_id: String,
}

impl AgentIdentity {
    /// The URI SAN that carries this identity.
    pub fn uri(&self) -> String {
        format!(
            "spiffe://podwarn/tenant/{}/cluster/{}/agent/{}",
            self.tenant, self.cluster, self.agent_id
        )
    }

    /// Parses the URI SAN written by [`AgentIdentity::uri`].
    pub fn from_uri(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix("spiffe://podwarn/")?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["tenant", t, "cluster", c, "agent", a] => {
                for part in [t, c, a] {
                    validate_name("identity", part).ok()?;
                }
                Some(Self {
                    tenant: (*t).into(),
                    cluster: (*c).into(),
                    agent_id: (*a).into(),
                })
            }
            _ => None,
        }
    }

    /// Reads the identity from a DER client certificate that rustls already verified.
    pub fn from_cert_der(der: &[u8]) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let san = cert.subject_alternative_name().ok()??;
        san.value.general_names.iter().find_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => Self::from_uri(uri),
            _ => None,
        })
    }
}

/// When a DER certificate stops being valid, in microseconds since the epoch.
pub fn cert_not_after_us(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    cert.validity().not_after.timestamp().checked_mul(1_000_000)
}

/// A freshly signed agent certificate.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The CA certificate, PEM (the agent trusts the collector through it).
    pub ca_pem: String,
    /// Serial number, hex.
    pub serial: String,
    /// When it stops being valid.
    pub not_after: jiff::Timestamp,
}

impl Ca {
    /// Loads the CA of a data directory, creating it on first start.
    pub fn load_or_create(paths: &TlsPaths) -> Result<Self> {
        if paths.ca_cert().exists() && paths.ca_key().exists() {
            return Self::load(paths);
        }
        fs::create_dir_all(&paths.dir).map_err(|source| io_err(&paths.dir, source))?;
        let key = KeyPair::generate().map_err(|source| TlsError::Cert {
            what: "generating the CA key",
            source,
        })?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "podwarn collector CA");
        dn.push(DnType::OrganizationName, "podwarn");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(3650);
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key).map_err(|source| TlsError::Cert {
            what: "signing the CA",
            source,
        })?;
        write_secret(&paths.ca_key(), key.serialize_pem().as_bytes())?;
        write_public(&paths.ca_cert(), cert.pem().as_bytes())?;
        Self::load(paths)
    }

    /// Loads an existing CA.
    pub fn load(paths: &TlsPaths) -> Result<Self> {
        let cert_pem = read(&paths.ca_cert())?;
        let key_pem = read(&paths.ca_key())?;
        let key = KeyPair::from_pem(&key_pem).map_err(|source| TlsError::Cert {
            what: "reading the CA key",
            source,
        })?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|source| TlsError::Cert {
            what: "reading the CA certificate",
            source,
        })?;
        let cert_der = first_cert(&paths.ca_cert(), &cert_pem)?;
        Ok(Self {
            cert_pem,
            cert_der,
            issuer,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The pin agents check before trusting this CA: `sha256:<hex of SubjectPublicKeyInfo>`.
    pub fn pin(&self) -> String {
        use sha2::Digest;
        let spki = self.issuer.key().subject_public_key_info();
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(spki)))
    }

    /// Writes (or rewrites) the server certificate for the given names; `localhost`
    /// and `127.0.0.1` are always included.
    pub fn write_server_cert(&self, paths: &TlsPaths, advertise: &[String]) -> Result<()> {
        let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        for name in advertise {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        let key = KeyPair::generate().map_err(|source| TlsError::Cert {
            what: "generating the server key",
            source,
        })?;
        let mut params = CertificateParams::new(names).map_err(|source| TlsError::Cert {
            what: "server certificate names",
            source,
        })?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "podwarn-collector");
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(365);
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).map_err(|source| TlsError::Cert {
            what: "signing the server certificate",
            source,
        })?;
        write_secret(&paths.server_key(), key.serialize_pem().as_bytes())?;
        write_public(&paths.server_cert(), cert.pem().as_bytes())?;
        Ok(())
    }

    /// Signs an agent client certificate for `identity`, valid for `ttl`.
    ///
    /// Only the public key is taken from the CSR: subject, SANs, key usage,
    /// serial and validity are all set here, so a CSR that asks for more
    /// (another cluster, CA rights) gets nothing more.
    pub fn issue_agent_cert(&self, csr_pem: &str, identity: &AgentIdentity, ttl: Duration) -> Result<IssuedCert> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|source| TlsError::Cert {
            what: "reading the certificate signing request",
            source,
        })?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("podwarn-agent {}", identity.agent_id));
        dn.push(DnType::OrganizationName, identity.tenant.clone());
        dn.push(DnType::OrganizationalUnitName, identity.cluster.clone());
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(identity.uri().try_into().map_err(|source| {
            TlsError::Cert {
                what: "identity URI",
                source,
            }
        })?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let serial = random_serial();
        let serial_hex = hex::encode(serial.to_bytes());
        params.serial_number = Some(serial);
        let now = time::OffsetDateTime::now_utc();
        // A little slack backwards for agents whose clock runs behind.
        params.not_before = now - time::Duration::minutes(5);
        let ttl = time::Duration::try_from(ttl).unwrap_or(time::Duration::days(7));
        params.not_after = now + ttl;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|source| TlsError::Cert {
                what: "signing the agent certificate",
                source,
            })?;
        let not_after = jiff::Timestamp::from_second(params.not_after.unix_timestamp()).unwrap_or(jiff::Timestamp::MAX);
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            ca_pem: self.cert_pem.clone(),
            serial: serial_hex,
            not_after,
        })
    }
}

/// Builds the server's rustls configuration: TLS 1.2+, our server
/// certificate, and client certificates verified against our CA when
/// presented (they are optional at the TLS layer; ingest requires one).
pub fn server_config(paths: &TlsPaths, ca: &Ca) -> Result<rustls::ServerConfig> {
    let cert_pem = read(&paths.server_cert())?;
    let key_pem = read(&paths.server_key())?;
    let chain = vec![first_cert(&paths.server_cert(), &cert_pem)?];
    let key = private_key(&paths.server_key(), &key_pem)?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca.cert_der().clone())
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Generates a fresh P-256 key and a CSR for it (the agent side of enrollment,
/// also used by `cert issue`). Returns (key PEM, CSR PEM).
pub fn new_key_and_csr() -> Result<(String, String)> {
    let key = KeyPair::generate().map_err(|source| TlsError::Cert {
        what: "generating the agent key",
        source,
    })?;
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|source| TlsError::Cert {
            what: "building the certificate signing request",
            source,
        })?;
    Ok((key.serialize_pem(), csr))
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive and non-zero as RFC 5280 wants.
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

fn first_cert(path: &Path, pem: &str) -> Result<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .and_then(|c| c.ok())
        .ok_or_else(|| TlsError::BadPem {
            path: path.into(),
            what: "no certificate found in this PEM file",
        })
}

fn private_key(path: &Path, pem: &str) -> Result<PrivateKeyDer<'static>> {
    rustls_pemfile::pkcs8_private_keys(&mut pem.as_bytes())
        .next()
        .and_then(|k| k.ok())
        .map(|k: PrivatePkcs8KeyDer<'static>| k.into())
        .ok_or_else(|| TlsError::BadPem {
            path: path.into(),
            what: "no PKCS#8 private key found in this PEM file",
        })
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| io_err(path, source))
}

fn io_err(path: &Path, source: std::io::Error) -> TlsError {
    TlsError::Io {
        path: path.into(),
        source,
    }
}

/// Writes a file readable by its owner only (0600), atomically.
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with_mode(path, bytes, 0o600)
}

/// Writes a public file (0644), atomically.
pub fn write_public(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with_mode(path, bytes, 0o644)
}

fn write_with_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let _ = fs::remove_file(&tmp);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|source| io_err(path, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_uri_round_trips_and_rejects_tampering() {
        let id = AgentIdentity {
            tenant: "acme".into(),
            cluster: "prod-eu".into(),
            agent_id: "a1b2".into(),
        };
        assert_eq!(AgentIdentity::from_uri(&id.uri()), Some(id));
        assert_eq!(
            AgentIdentity::from_uri("spiffe://podwarn/tenant/a/cluster/b/agent/c/extra"),
            None
        );
        assert_eq!(
            AgentIdentity::from_uri("spiffe://other/tenant/a/cluster/b/agent/c"),
            None
        );
        assert_eq!(
            AgentIdentity::from_uri("spiffe://podwarn/tenant/A B/cluster/b/agent/c"),
            None
        );
    }

    #[test]
    fn issued_cert_carries_only_the_identity_we_chose() {
        let dir = tempfile::tempdir().unwrap();
        let paths = TlsPaths::new(dir.path());
        let ca = Ca::load_or_create(&paths).unwrap();
        // A CSR that asks for CA rights and another cluster's name.
        let key = KeyPair::generate().unwrap();
        let mut greedy =
            CertificateParams::new(vec!["spiffe://podwarn/tenant/x/cluster/other/agent/z".into()]).unwrap();
        greedy.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let csr = greedy.serialize_request(&key).unwrap().pem().unwrap();
        let id = AgentIdentity {
            tenant: "default".into(),
            cluster: "prod".into(),
            agent_id: "agent1".into(),
        };
        let issued = ca.issue_agent_cert(&csr, &id, Duration::from_secs(3600)).unwrap();
        let der = rustls_pemfile::certs(&mut issued.cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(AgentIdentity::from_cert_der(&der), Some(id));
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(!parsed.is_ca());
        // Reloading gives the same pin: it is what agents are told to trust.
        assert_eq!(Ca::load(&paths).unwrap().pin(), ca.pin());
        assert!(ca.pin().starts_with("sha256:") && ca.pin().len() == 7 + 64);
    }
}
