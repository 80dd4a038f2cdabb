//! A throwaway CA and a serving certificate for loopback and the in-cluster service names,
//! and the rustls server config (ring provider, ALPN h2 + http/1.1 like kube-apiserver).

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::Context as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// The CA clients must trust and the acceptor presenting the serving certificate.
pub(crate) struct TlsMaterial {
    pub(crate) ca_pem: String,
    pub(crate) acceptor: TlsAcceptor,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial").finish_non_exhaustive()
    }
}

pub(crate) fn generate(listen_ip: IpAddr) -> anyhow::Result<TlsMaterial> {
    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "podwarn-sim-ca");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).context("self-signing the CA")?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut names: Vec<String> = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    names.push("127.0.0.1".to_string());
    names.push("::1".to_string());
    let mut params = CertificateParams::new(names)?;
    if !listen_ip.is_unspecified() && !listen_ip.is_loopback() {
        params.subject_alt_names.push(SanType::IpAddress(listen_ip));
    }
    params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    let key = KeyPair::generate().context("generating the serving key")?;
    let cert = params
        .signed_by(&key, &issuer)
        .context("signing the serving certificate")?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions")?
        .with_no_client_auth()
        .with_single_cert(
            vec![
                CertificateDer::from(cert.der().to_vec()),
                CertificateDer::from(ca_cert.der().to_vec()),
            ],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .context("building the TLS server config")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        ca_pem: ca_cert.pem(),
        acceptor: TlsAcceptor::from(Arc::new(config)),
    })
}
