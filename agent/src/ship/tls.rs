//! The agent's TLS identity from `--cert-dir`: trusts only `ca.crt`, presents
//! `tls.crt`/`tls.key`, and picks up a renewed certificate written over them
//! without a restart (new connections use it).

use super::ShipError;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::{SignatureScheme, client::WantsClientCert};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The client TLS configuration and what the messages say about the certificate.
pub(crate) struct Identity {
    /// Ready for reqwest.
    pub(crate) config: rustls::ClientConfig,
    /// End of the client certificate's validity.
    pub(crate) not_after: Option<jiff::Timestamp>,
    /// The identity URI the collector wrote into the certificate.
    pub(crate) agent_uri: Option<String>,
}

/// Reads `tls.crt`, `tls.key` and `ca.crt` and builds the rustls client
/// configuration. Fails on a missing or unreadable file, bad PEM, or a key
/// that is not the certificate's.
pub(crate) fn load_identity(cert_dir: &Path) -> Result<Identity, ShipError> {
    let ca_path = cert_dir.join("ca.crt");
    let ca_pem = read(&ca_path)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_slice()) {
        let cert = cert.map_err(|_| bad(&ca_path, "is not valid PEM"))?;
        roots
            .add(cert)
            .map_err(|_| bad(&ca_path, "holds a certificate that is not a usable CA"))?;
    }
    if roots.is_empty() {
        return Err(bad(&ca_path, "holds no certificate"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let loaded = load_certified_key(cert_dir, &provider)?;
    let (not_after, agent_uri) = describe_cert(&loaded.key.cert[0]);
    let builder: rustls::ConfigBuilder<rustls::ClientConfig, WantsClientCert> =
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|source| ShipError::Tls {
                dir: cert_dir.into(),
                source,
            })?
            .with_root_certificates(roots);
    let reloader = CertReloader {
        dir: cert_dir.into(),
        provider,
        current: Mutex::new(loaded),
    };
    let mut config = builder.with_client_cert_resolver(Arc::new(reloader));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // A resumed session carries the certificate of the session it resumes:
    // every new connection (few, they are pooled) presents the current one.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Identity {
        config,
        not_after,
        agent_uri,
    })
}

/// A certificate and key as loaded, with the file times they were read at.
struct Loaded {
    key: Arc<CertifiedKey>,
    stamp: Stamp,
}

/// Modification times of `tls.crt` and `tls.key`.
type Stamp = (Option<SystemTime>, Option<SystemTime>);

fn stamp(dir: &Path) -> Stamp {
    let mtime = |name| std::fs::metadata(dir.join(name)).and_then(|m| m.modified()).ok();
    (mtime("tls.crt"), mtime("tls.key"))
}

fn load_certified_key(dir: &Path, provider: &CryptoProvider) -> Result<Loaded, ShipError> {
    let stamp = stamp(dir);
    let cert_path = dir.join("tls.crt");
    let key_path = dir.join("tls.key");
    let cert_pem = read(&cert_path)?;
    let key_pem = read(&key_path)?;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|_| bad(&cert_path, "is not valid PEM"))?;
    if chain.is_empty() {
        return Err(bad(&cert_path, "holds no certificate"));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|_| bad(&key_path, "is not valid PEM"))?
        .ok_or_else(|| bad(&key_path, "holds no private key"))?;
    // `from_der` also checks that the key is the certificate's.
    let key = CertifiedKey::from_der(chain, key, provider).map_err(|source| match source {
        rustls::Error::InconsistentKeys(_) => ShipError::KeyMismatch { dir: dir.into() },
        source => ShipError::Tls {
            dir: dir.into(),
            source,
        },
    })?;
    Ok(Loaded {
        key: Arc::new(key),
        stamp,
    })
}

/// Presents the certificate of `--cert-dir`, re-reading it at the next
/// handshake after `tls.crt` or `tls.key` changed (renewal). A half-written
/// or mismatched pair is not used: the previous one stays until the files
/// agree again.
struct CertReloader {
    dir: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Mutex<Loaded>,
}

impl std::fmt::Debug for CertReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material.
        f.debug_struct("CertReloader")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl ResolvesClientCert for CertReloader {
    fn resolve(&self, _root_hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = stamp(&self.dir);
        if now != current.stamp {
            match load_certified_key(&self.dir, &self.provider) {
                Ok(loaded) => {
                    let (not_after, agent) = describe_cert(&loaded.key.cert[0]);
                    tracing::info!(
                        cert_dir = %self.dir.display(),
                        not_after = ?not_after,
                        agent = ?agent,
                        "client certificate changed on disk; using the new one"
                    );
                    *current = loaded;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "client certificate changed on disk but is not usable; keeping the previous one");
                    // Retry only when the files change again, not at every handshake.
                    current.stamp = now;
                }
            }
        }
        Some(current.key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ShipError> {
    std::fs::read(path).map_err(|source| ShipError::CertFile {
        path: path.into(),
        source,
    })
}

fn bad(path: &Path, what: &'static str) -> ShipError {
    ShipError::BadPem {
        path: path.into(),
        what,
    }
}

/// Expiry and identity URI of a certificate, for messages (never its bytes).
pub(crate) fn describe_cert(der: &CertificateDer<'_>) -> (Option<jiff::Timestamp>, Option<String>) {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return (None, None);
    };
    let not_after = jiff::Timestamp::from_second(cert.validity().not_after.timestamp()).ok();
    let uri = cert.subject_alternative_name().ok().flatten().and_then(|san| {
        san.value.general_names.iter().find_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => Some((*uri).to_string()),
            _ => None,
        })
    });
    (not_after, uri)
}
