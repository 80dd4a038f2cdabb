//! Token enrollment, the CA endpoint and renewal, against the real binary
//! with real HTTPS clients: every refusal, the identity the collector signs,
//! no double spend under concurrency, and the failed-attempt limit.

mod common;

use common::{Collector, warning};
use serde_json::Value;
use std::collections::HashSet;

fn cert_der(pem: &str) -> Vec<u8> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

fn uri_sans(der: &[u8]) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect()
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread")]
async fn enrollment_refuses_wrong_expired_revoked_and_used_up_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let collector = Collector::start(&tmp.path().join("data"), &[]);

    let once = collector.create_token("prod-eu", &["--uses", "1"]);
    let (id, _secret) = once.rsplit_once('.').unwrap();

    // A wrong secret for a real id and an unknown id read the same.
    let wrong = format!("{id}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let (status, wrong_body, _) = collector.enroll(&wrong).await;
    assert_eq!((status, code(&wrong_body)), (401, "token_invalid"), "{wrong_body}");
    let (status, unknown_body, _) = collector
        .enroll("pw1.0123456789ab.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .await;
    assert_eq!(status, 401);
    assert_eq!(wrong_body, unknown_body, "an existing id must not be revealed");
    let (status, body, _) = collector.enroll("not-a-token").await;
    assert_eq!((status, code(&body)), (400, "token_malformed"), "{body}");

    // One use: the first enrollment works, the second is refused.
    let (status, body, _) = collector.enroll(&once).await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = collector.enroll(&once).await;
    assert_eq!((status, code(&body)), (403, "token_used_up"), "{body}");

    let short = collector.create_token("prod-eu", &["--ttl", "1s"]);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (status, body, _) = collector.enroll(&short).await;
    assert_eq!((status, code(&body)), (403, "token_expired"), "{body}");

    let revoked = collector.create_token("prod-eu", &[]);
    let revoked_id = revoked.split('.').nth(1).unwrap();
    let out = collector.cli(&["token", "revoke", revoked_id]);
    assert!(out.success, "{}", out.stderr);
    let (status, body, _) = collector.enroll(&revoked).await;
    assert_eq!((status, code(&body)), (403, "token_revoked"), "{body}");

    // The list shows each token's state and never a secret.
    let out = collector.cli(&["token", "list"]);
    assert!(out.success, "{}", out.stderr);
    for token in [&once, &short, &revoked] {
        let secret = token.rsplit('.').next().unwrap();
        assert!(!out.stdout.contains(secret));
    }
    for state in ["used_up", "expired", "revoked"] {
        assert!(out.stdout.contains(state), "{}", out.stdout);
    }

    // Creation, use and revocation are in the audit log.
    let (status, audit) = collector.admin().get("/v1/audit").await;
    assert_eq!(status, 200, "{audit}");
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "token.revoke",
            "token.create",
            "token.create",
            "agent.enroll",
            "token.create"
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_csr_asking_for_another_cluster_gets_a_certificate_for_the_token_cluster_only() {
    let tmp = tempfile::tempdir().unwrap();
    let collector = Collector::start(&tmp.path().join("data"), &[]);
    let token = collector.create_token("prod-eu", &["--tenant", "acme"]);

    // The CSR asks for another cluster, another tenant and CA rights.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut greedy = rcgen::CertificateParams::new(vec![
        "spiffe://podwarn/tenant/other/cluster/staging/agent/zzz".into(),
        "collector.example".into(),
    ])
    .unwrap();
    greedy.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let csr = greedy.serialize_request(&key).unwrap().pem().unwrap();
    let (status, body) = collector.enroll_csr(&token, &csr).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["cluster"].as_str(), body["tenant"].as_str()),
        (Some("prod-eu"), Some("acme"))
    );
    let agent_id = body["agent_id"].as_str().unwrap();
    let der = cert_der(body["cert"].as_str().unwrap());
    assert_eq!(
        uri_sans(&der),
        [format!("spiffe://podwarn/tenant/acme/cluster/prod-eu/agent/{agent_id}")]
    );
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert!(!cert.is_ca());
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert!(
        (7 * 86400..=7 * 86400 + 600).contains(&lifetime),
        "default lifetime is 7 days: {lifetime}"
    );

    // A payload claiming another cluster is stored under the certificate's.
    let client = common::client(
        &collector.ca_pem,
        Some((
            body["cert"].as_str().unwrap().as_bytes(),
            key.serialize_pem().as_bytes(),
        )),
    );
    let agent = common::Agent {
        client,
        url: collector.url.clone(),
    };
    let (status, _) = agent
        .send(&[warning("x1").raw("cluster", "staging".into()).json()])
        .await;
    assert_eq!(status, 200);
    let events = collector.admin().all_events("").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["cluster"], "prod-eu");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_enrollments_never_exceed_the_token_uses() {
    let tmp = tempfile::tempdir().unwrap();
    let collector = std::sync::Arc::new(Collector::start(
        &tmp.path().join("data"),
        &["--enroll-failures-per-minute", "1000"],
    ));
    let token = collector.create_token("prod-eu", &["--uses", "3"]);
    let mut tasks = Vec::new();
    for _ in 0..24 {
        let (collector, token) = (collector.clone(), token.clone());
        tasks.push(tokio::spawn(async move { collector.enroll(&token).await }));
    }
    let mut agents = HashSet::new();
    let mut refused = 0;
    for task in tasks {
        let (status, body, _) = task.await.unwrap();
        match status {
            200 => assert!(agents.insert(body["agent_id"].as_str().unwrap().to_owned())),
            403 => {
                assert_eq!(code(&body), "token_used_up");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((agents.len(), refused), (3, 21));
    let (status, list) = collector.admin().get("/v1/admin/agents").await;
    assert_eq!(status, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
    let (_, tokens) = collector.admin().get("/v1/admin/tokens").await;
    assert_eq!(tokens["items"][0]["used"], 3);
    assert_eq!(tokens["items"][0]["uses_left"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_enrollment_attempts_are_rate_limited_per_source() {
    let tmp = tempfile::tempdir().unwrap();
    let collector = Collector::start(&tmp.path().join("data"), &["--enroll-failures-per-minute", "3"]);
    let token = collector.create_token("prod-eu", &[]);
    let id = token.split('.').nth(1).unwrap();
    let guess = format!("pw1.{id}.BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB");
    for _ in 0..3 {
        assert_eq!(collector.enroll(&guess).await.0, 401);
    }
    let (key, csr) = podwarn_collector::tls::new_key_and_csr().unwrap();
    drop(key);
    let response = common::client(&collector.ca_pem, None)
        .post(format!("{}/v1/enroll", collector.url))
        .json(&serde_json::json!({"token": token, "csr": csr}))
        .send()
        .await
        .unwrap();
    // Even the right token waits: the source is blocked, not the token.
    assert_eq!(response.status().as_u16(), 429);
    let retry: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=61).contains(&retry), "{retry}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(code(&body), "too_many_requests");
    let metrics = common::client(&collector.ca_pem, None)
        .get(format!("{}/metrics", collector.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("podwarn_enroll_requests_total{outcome=\"refused\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("podwarn_enroll_requests_total{outcome=\"limited\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ca_endpoint_serves_the_pinned_ca_and_renewal_keeps_the_identity_until_revoked() {
    let tmp = tempfile::tempdir().unwrap();
    let collector = Collector::start(&tmp.path().join("data"), &[]);
    let out = collector.cli(&["token", "create", "--cluster", "prod-eu"]);
    let token = common::token_of(&out);
    let pin = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("CA pin:"))
        .unwrap()
        .trim()
        .to_owned();

    // What an agent does first: fetch the CA without trusting anything, check the pin.
    let ca_pem = common::unverified_client()
        .get(format!("{}/v1/ca", collector.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let der = cert_der(&ca_pem);
    let (_, ca) = x509_parser::parse_x509_certificate(&der).unwrap();
    use sha2::Digest;
    let spki_pin = format!("sha256:{}", hex::encode(sha2::Sha256::digest(ca.public_key().raw)));
    assert_eq!(spki_pin, pin);

    let (agent, enrolled, _) = collector.enrolled_agent(&token).await;
    let agent_id = enrolled["agent_id"].as_str().unwrap().to_owned();
    assert_eq!(agent.send(&[warning("r1").json()]).await.0, 200);

    // Renewal over mTLS: same identity, new key, new serial.
    let (new_key, csr) = podwarn_collector::tls::new_key_and_csr().unwrap();
    let response = agent
        .client
        .post(format!("{}/v1/renew", collector.url))
        .json(&serde_json::json!({ "csr": csr }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let renewed: Value = response.json().await.unwrap();
    assert_eq!(renewed["agent_id"], agent_id.as_str());
    let new_der = cert_der(renewed["cert"].as_str().unwrap());
    assert_eq!(
        uri_sans(&new_der),
        uri_sans(&cert_der(enrolled["cert"].as_str().unwrap()))
    );
    assert_ne!(new_der, cert_der(enrolled["cert"].as_str().unwrap()));
    let renewed_agent = common::Agent {
        client: common::client(
            &collector.ca_pem,
            Some((renewed["cert"].as_str().unwrap().as_bytes(), new_key.as_bytes())),
        ),
        url: collector.url.clone(),
    };
    assert_eq!(renewed_agent.send(&[warning("r2").json()]).await.0, 200);

    // Without a client certificate: 401. Once revoked: 403, and no more ingest.
    let (status, body) = collector
        .with_key("")
        .post("/v1/renew", serde_json::json!({ "csr": csr }))
        .await;
    assert_eq!((status, code(&body)), (401, "client_certificate_required"));
    let out = collector.cli(&["agent", "revoke", &agent_id]);
    assert!(out.success, "{}", out.stderr);
    let response = renewed_agent
        .client
        .post(format!("{}/v1/renew", collector.url))
        .json(&serde_json::json!({ "csr": csr }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(code(&body), "agent_refused");
    assert_eq!(renewed_agent.send(&[warning("r3").json()]).await.0, 403);

    let (_, audit) = collector.admin().get("/v1/audit?limit=2").await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["agent.revoke", "agent.renew"]);
    assert!(audit["next_cursor"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn invariant_7_bad_enrollment_requests_are_refused_precisely_and_spend_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let collector = Collector::start(&tmp.path().join("data"), &[]);
    let token = collector.create_token("prod-eu", &["--uses", "1"]);
    let http = common::client(&collector.ca_pem, None);
    let url = format!("{}/v1/enroll", collector.url);
    let post = |body: Vec<u8>| {
        let request = http.post(&url).header("content-type", "application/json").body(body);
        async move {
            let r = request.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, body) = post(b"{\"token\": ".to_vec()).await;
    assert_eq!((status, code(&body)), (400, "invalid_json"));
    let (status, body) = post(serde_json::to_vec(&serde_json::json!({"token": token})).unwrap()).await;
    assert_eq!((status, code(&body)), (400, "invalid_body"), "{body}");
    let (status, body) = post(vec![b' '; 100 * 1024]).await;
    assert_eq!((status, code(&body)), (413, "payload_too_large"));
    // The right token with an unusable CSR: refused, and the use is not spent.
    let (status, body) = collector
        .enroll_csr(&token, "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n")
        .await;
    assert_eq!((status, code(&body)), (400, "invalid_csr"), "{body}");
    let (_, tokens) = collector.admin().get("/v1/admin/tokens").await;
    assert_eq!(tokens["items"][0]["used"], 0);
    assert_eq!(collector.enroll(&token).await.0, 200);

    // A lifetime the collector cannot sign is a configuration error (exit 64).
    let status = std::process::Command::new(common::BIN)
        .args(["serve", "--cert-ttl", "1s", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("other"))
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(64));
}
