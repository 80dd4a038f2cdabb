//! Admin commands that work on a data directory whether or not `serve` runs
//! on it: redb admits one process, so when the store is held we go through
//! the running server's admin API instead.

mod access;

pub use access::{
    agent_list, agent_revoke, apikey_create, apikey_list, apikey_revoke, cluster_remove, token_create, token_list,
    token_revoke,
};

use crate::config::CertIssueArgs;
use crate::enroll::{IssueRequest, IssuedAgent, MIN_CERT_TTL};
use crate::store::{Store, StoreError};
use crate::{ServeInfo, serve_info_path, store_path, tls};
use anyhow::{Context, bail};
use std::path::Path;

/// `cert issue`: writes `tls.crt`, `tls.key` and `ca.crt` for one agent.
pub async fn cert_issue(args: CertIssueArgs) -> anyhow::Result<()> {
    let dir = &args.data.data_dir;
    crate::names::validate_name("cluster", &args.cluster)?;
    crate::names::validate_name("tenant", &args.tenant)?;
    crate::create_private_dir(dir)?;
    let (key_pem, csr) = tls::new_key_and_csr()?;
    let req = IssueRequest {
        cluster: args.cluster.clone(),
        tenant: args.tenant.clone(),
        csr,
        ttl_seconds: args.ttl.as_secs(),
    };
    let issued = match Store::open(&store_path(dir)) {
        Ok(store) => {
            let ca = tls::Ca::load_or_create(&tls::TlsPaths::new(dir))?;
            let min_ttl = if args.insecure_short_ttl {
                std::time::Duration::from_secs(1)
            } else {
                MIN_CERT_TTL
            };
            crate::enroll::issue(&store, &ca, req, min_ttl, "local-cli", "local").await?
        }
        Err(StoreError::Locked(_)) => issue_via_server(dir, &req).await?,
        Err(e) => return Err(e.into()),
    };
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    tls::write_public(&args.out.join("tls.crt"), issued.cert.as_bytes())?;
    tls::write_secret(&args.out.join("tls.key"), key_pem.as_bytes())?;
    tls::write_public(&args.out.join("ca.crt"), issued.ca.as_bytes())?;
    println!(
        "issued agent {} for cluster {} (tenant {}), valid until {}: {}/{{tls.crt,tls.key,ca.crt}}",
        issued.agent_id,
        args.cluster,
        args.tenant,
        issued.not_after,
        args.out.display()
    );
    Ok(())
}

async fn issue_via_server(dir: &Path, req: &IssueRequest) -> anyhow::Result<IssuedAgent> {
    let info: ServeInfo = serde_json::from_slice(&std::fs::read(serve_info_path(dir)).with_context(|| {
        format!(
            "the store in {} is in use, but no running server is recorded",
            dir.display()
        )
    })?)?;
    let token = std::fs::read_to_string(dir.join("admin.token")).context("reading the admin token")?;
    let ca = std::fs::read(tls::TlsPaths::new(dir).ca_cert()).context("reading the CA certificate")?;
    let client = admin_client(&ca)?;
    let response = client
        .post(format!("{}/v1/admin/certs", info.url))
        .bearer_auth(token.trim())
        .json(req)
        .send()
        .await
        .with_context(|| format!("reaching the running collector at {} (pid {})", info.url, info.pid))?;
    if !response.status().is_success() {
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        bail!(
            "the collector refused ({status}): {}",
            body["error"]["message"].as_str().unwrap_or("no details")
        );
    }
    Ok(response.json().await?)
}

/// An HTTPS client that trusts only the collector's CA.
pub fn admin_client(ca_pem: &[u8]) -> anyhow::Result<reqwest::Client> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
        roots.add(cert?)?;
    }
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(reqwest::Client::builder().tls_backend_preconfigured(config).build()?)
}
