//! Harness helpers for enrollment and access control: tokens, API keys,
//! enrollments through `/v1/enroll`.

use super::{Admin, Agent, Collector, agent_client, client, issue_cert, token_of};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

impl Collector {
    /// `token create --cluster CLUSTER` plus `extra`; returns the token.
    pub fn create_token(&self, cluster: &str, extra: &[&str]) -> String {
        let mut args = vec!["token", "create", "--cluster", cluster];
        args.extend_from_slice(extra);
        token_of(&self.cli(&args))
    }

    /// `apikey create`; returns the key.
    pub fn create_apikey(&self, tenant: Option<&str>, role: &str) -> String {
        let mut args = vec!["apikey", "create", "--role", role];
        if let Some(t) = tenant {
            args.extend_from_slice(&["--tenant", t]);
        }
        let out = self.cli(&args);
        assert!(out.success, "apikey create failed: {}", out.stderr);
        out.stdout
            .lines()
            .find(|l| l.starts_with("pwk_"))
            .unwrap_or_else(|| panic!("no key in {}", out.stdout))
            .to_owned()
    }

    /// An HTTPS client with `key` as its bearer token.
    pub fn with_key(&self, key: &str) -> Admin {
        Admin {
            client: client(&self.ca_pem, None),
            url: self.url.clone(),
            token: key.to_owned(),
        }
    }

    /// POSTs an enrollment with a fresh key; returns (status, body, key PEM).
    pub async fn enroll(&self, token: &str) -> (u16, Value, String) {
        let (key, csr) = podwarn_collector::tls::new_key_and_csr().unwrap();
        let (status, body) = self.enroll_csr(token, &csr).await;
        (status, body, key)
    }

    /// POSTs an enrollment with the given CSR; returns (status, body).
    pub async fn enroll_csr(&self, token: &str, csr: &str) -> (u16, Value) {
        let r = client(&self.ca_pem, None)
            .post(format!("{}/v1/enroll", self.url))
            .json(&json!({"token": token, "csr": csr, "agent_version": "test"}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Enrolls with `token` and returns an ingest client holding the new certificate.
    pub async fn enrolled_agent(&self, token: &str) -> (Agent, Value, String) {
        let (status, body, key) = self.enroll(token).await;
        assert_eq!(status, 200, "{body}");
        let cert = body["cert"].as_str().unwrap().to_owned();
        let agent = Agent {
            client: client(&self.ca_pem, Some((cert.as_bytes(), key.as_bytes()))),
            url: self.url.clone(),
        };
        (agent, body, key)
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }

    /// An admin HTTPS client (bearer token, no client certificate).
    pub fn admin(&self) -> Admin {
        Admin {
            client: client(&self.ca_pem, None),
            url: self.url.clone(),
            token: self.admin_token.clone(),
        }
    }

    /// Issues an agent certificate with the `cert issue` command.
    pub fn issue_cert(&self, cluster: &str) -> PathBuf {
        issue_cert(&self.dir, cluster)
    }

    /// An ingest client for an agent certificate folder.
    pub fn agent(&self, cert_dir: &Path) -> Agent {
        Agent {
            client: agent_client(&self.ca_pem, cert_dir),
            url: self.url.clone(),
        }
    }
}
