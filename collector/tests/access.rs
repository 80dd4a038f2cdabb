//! Who may write and read what, against the real binary with real HTTPS
//! clients: revocation on an open connection, foreign and expired
//! certificates, API key roles and tenant scoping, cluster removal.

mod common;

use common::{Collector, warning};
use serde_json::{Value, json};
use std::time::Duration;

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread")]
async fn invariant_5_a_revoked_agent_is_refused_at_the_next_request_on_an_open_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let collector = Collector::start(&tmp.path().join("data"), &[]);
    let token = collector.create_token("prod-eu", &[]);
    let (agent, enrolled, _) = collector.enrolled_agent(&token).await;
    let agent_id = enrolled["agent_id"].as_str().unwrap();

    // One client: its keep-alive connection (and TLS session) stays open.
    assert_eq!(agent.send(&[warning("a1").json()]).await.0, 200);
    assert_eq!(agent.send(&[warning("a2").json()]).await.0, 200);
    let out = collector.cli(&["agent", "revoke", agent_id]);
    assert!(out.success, "{}", out.stderr);
    let (status, body) = agent.send(&[warning("a3").json()]).await;
    assert_eq!((status, code(&body)), (403, "agent_refused"), "{body}");

    let events = collector.admin().all_events("").await;
    assert_eq!(events.len(), 2, "nothing of the refused batch is stored");
    let out = collector.cli(&["agent", "list"]);
    assert!(
        out.stdout.contains(agent_id) && out.stdout.contains("prod-eu"),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_from_another_ca_and_expired_certificates_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    // Issued offline with a 6 s lifetime (test-only flag), before the server starts.
    let short = common::issue_cert_with(&dir, "prod-eu", &["--ttl", "6s", "--insecure-short-ttl"]);
    let foreign = common::issue_cert(&tmp.path().join("other-collector"), "prod-eu");
    let collector = Collector::start(&dir, &[]);

    let impostor = collector.agent(&foreign);
    let sent = impostor
        .client
        .post(format!("{}/v1/ingest", collector.url))
        .json(&json!({"events": [warning("f1").json()]}))
        .send()
        .await;
    assert!(sent.is_err(), "a certificate of another CA must fail the handshake");

    // Valid now, on a connection that stays open …
    let open = collector.agent(&short);
    assert_eq!(open.send(&[warning("ok").json()]).await.0, 200);
    let pem = std::fs::read(short.join("tls.crt")).unwrap();
    let der = rustls_pemfile::certs(&mut &pem[..]).next().unwrap().unwrap();
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
    let expires = parsed.validity().not_after.timestamp();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    tokio::time::sleep(Duration::from_secs((expires - now).max(0) as u64 + 2)).await;
    // … refused per request once expired, even on that connection …
    let (status, body) = open.send(&[warning("late").json()]).await;
    assert_eq!((status, code(&body)), (401, "certificate_expired"), "{body}");
    // … and a new connection with it fails the handshake.
    let expired = collector.agent(&short);
    let sent = expired
        .client
        .post(format!("{}/v1/ingest", collector.url))
        .json(&json!({"events": [warning("x1").json()]}))
        .send()
        .await;
    assert!(sent.is_err(), "an expired certificate must fail the handshake");
    let events = collector.admin().all_events("").await;
    assert_eq!(events.len(), 1, "only the batch sent while the certificate was valid");
}

#[tokio::test(flavor = "multi_thread")]
async fn read_keys_see_only_their_tenant_and_cannot_administer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let a_cert = common::issue_cert_with(&dir, "a-prod", &["--tenant", "team-a"]);
    let b_cert = common::issue_cert_with(&dir, "b-prod", &["--tenant", "team-b"]);
    let collector = Collector::start(&dir, &[]);
    assert_eq!(collector.agent(&a_cert).send(&[warning("a1").json()]).await.0, 200);
    let (status, _) = collector
        .agent(&b_cert)
        .send(&[warning("b1").reason("OOMKilling").json()])
        .await;
    assert_eq!(status, 200);
    let (_, b_incidents) = collector.admin().get("/v1/incidents?cluster=b-prod").await;
    let b_incident = b_incidents["items"][0]["id"].as_str().unwrap().to_owned();

    let read_a = collector.with_key(&collector.create_apikey(Some("team-a"), "read"));
    let events = read_a.all_events("").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["cluster"], "a-prod");
    assert!(read_a.all_events("&cluster=b-prod").await.is_empty());
    let (status, body) = read_a.get("/v1/incidents?cluster=b-prod").await;
    assert_eq!((status, body["items"].as_array().map(Vec::len)), (200, Some(0)));
    assert_eq!(read_a.get(&format!("/v1/incidents/{b_incident}")).await.0, 404);
    let (_, clusters) = read_a.get("/v1/clusters").await;
    assert_eq!(clusters["items"].as_array().unwrap().len(), 1);

    // Every admin endpoint refuses a read key.
    for path in ["/v1/admin/tokens", "/v1/admin/agents", "/v1/admin/apikeys", "/v1/audit"] {
        let (status, body) = read_a.get(path).await;
        assert_eq!((status, code(&body)), (403, "forbidden"), "GET {path}: {body}");
    }
    for (path, body) in [
        ("/v1/admin/tokens", json!({"cluster": "a-prod", "ttl_seconds": 60})),
        ("/v1/admin/agents/abc/revoke", json!({})),
        ("/v1/admin/clusters/a-prod/remove", json!({"purge": true})),
        ("/v1/admin/apikeys", json!({"role": "admin"})),
        ("/v1/admin/apikeys/abc/revoke", json!({})),
        ("/v1/admin/tokens/abc/revoke", json!({})),
        (
            "/v1/admin/certs",
            json!({"cluster": "a-prod", "csr": "x", "ttl_seconds": 60}),
        ),
    ] {
        let (status, reply) = read_a.post(path, body).await;
        assert_eq!((status, code(&reply)), (403, "forbidden"), "POST {path}: {reply}");
    }

    // A tenant admin administers its own tenant only.
    let admin_a = collector.with_key(&collector.create_apikey(Some("team-a"), "admin"));
    let (status, _) = admin_a
        .post(
            "/v1/admin/tokens",
            json!({"cluster": "a-dev", "tenant": "team-b", "ttl_seconds": 60}),
        )
        .await;
    assert_eq!(status, 403);
    let (status, created) = admin_a
        .post("/v1/admin/tokens", json!({"cluster": "a-dev", "ttl_seconds": 60}))
        .await;
    assert_eq!((status, created["tenant"].as_str()), (200, Some("team-a")), "{created}");
    // A cluster name of another tenant is refused: it would mix their data.
    let (status, reply) = admin_a
        .post("/v1/admin/tokens", json!({"cluster": "b-prod", "ttl_seconds": 60}))
        .await;
    assert_eq!((status, code(&reply)), (409, "conflict"), "{reply}");
    let (_, agents) = admin_a.get("/v1/admin/agents").await;
    let agents = agents["items"].as_array().unwrap();
    assert!(agents.iter().all(|a| a["tenant"] == "team-a") && agents.len() == 1);
    let (_, all_agents) = collector.admin().get("/v1/admin/agents").await;
    let b_agent = all_agents["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["tenant"] == "team-b")
        .unwrap()["agent_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = admin_a
        .post(&format!("/v1/admin/agents/{b_agent}/revoke"), json!({}))
        .await;
    assert_eq!(status, 404);
    assert_eq!(admin_a.post("/v1/admin/clusters/b-prod/remove", json!({})).await.0, 404);
    let (status, audit) = admin_a.get("/v1/audit").await;
    assert_eq!(status, 200);
    let entries = audit["items"].as_array().unwrap();
    assert!(
        !entries.is_empty() && entries.iter().all(|e| e["tenant"] == "team-a"),
        "{audit}"
    );

    // A revoked key stops working at once.
    let id = collector.cli(&["apikey", "list"]);
    let read_id = id
        .stdout
        .lines()
        .find(|l| l.contains(" read "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    assert!(collector.cli(&["apikey", "revoke", &read_id]).success);
    let (status, body) = read_a.get("/v1/events").await;
    assert_eq!((status, code(&body)), (401, "invalid_token"));
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_remove_revokes_its_agents_and_tokens_and_purge_deletes_only_its_data() {
    let tmp = tempfile::tempdir().unwrap();
    let collector = Collector::start(&tmp.path().join("data"), &[]);
    let doomed = collector.create_token("doomed", &[]);
    let kept = collector.create_token("kept", &[]);
    let (doomed_agent, _, _) = collector.enrolled_agent(&doomed).await;
    let (kept_agent, _, _) = collector.enrolled_agent(&kept).await;
    let batch: Vec<Value> = (0..50).map(|i| warning(&format!("e{i}")).json()).collect();
    assert_eq!(doomed_agent.send(&batch).await.0, 200);
    assert_eq!(kept_agent.send(&batch).await.0, 200);

    let out = collector.cli(&["cluster", "remove", "doomed", "--purge"]);
    assert!(out.success, "{}", out.stderr);
    assert!(out.stdout.contains("1 agents and 1 tokens revoked"), "{}", out.stdout);
    assert!(
        out.stdout.contains("purged 50 events and 1 incidents"),
        "{}",
        out.stdout
    );

    assert_eq!(doomed_agent.send(&batch).await.0, 403);
    assert_eq!(collector.enroll(&doomed).await.0, 403, "its tokens are revoked too");
    assert_eq!(kept_agent.send(&[warning("k").json()]).await.0, 200);
    let admin = collector.admin();
    assert!(admin.all_events("&cluster=doomed").await.is_empty());
    assert_eq!(admin.all_events("&cluster=kept").await.len(), 51);
    let (_, clusters) = admin.get("/v1/clusters").await;
    let names: Vec<&str> = clusters["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cluster"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["kept"]);
    let (_, audit) = admin.get("/v1/audit?limit=2").await;
    assert_eq!(audit["items"][0]["action"], "cluster.purge");
    assert_eq!(audit["items"][1]["action"], "cluster.remove");
    assert!(!collector.cli(&["cluster", "remove", "nope"]).success);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_commands_work_on_the_store_directly_when_no_server_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let run = |args: &[&str]| {
        let out = common::cli(&dir, args);
        assert!(out.success, "{args:?}: {}", out.stderr);
        out.stdout
    };
    let token = common::token_of(&common::cli(
        &dir,
        &["token", "create", "--cluster", "prod-eu", "--uses", "5"],
    ));
    let token_id = token.split('.').nth(1).unwrap().to_owned();
    let cert = common::issue_cert(&dir, "old-cluster");
    let listed = run(&["agent", "list"]);
    let agent_id = listed
        .lines()
        .find(|l| l.starts_with("old-cluster"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .to_owned();
    run(&["agent", "revoke", &agent_id]);
    let key_out = run(&["apikey", "create", "--role", "read"]);
    let key = key_out.lines().find(|l| l.starts_with("pwk_")).unwrap().to_owned();
    assert!(run(&["apikey", "list"]).contains(" read "));
    assert!(run(&["token", "list"]).contains(&token_id));
    assert!(run(&["cluster", "remove", "old-cluster"]).contains("0 agents and 0 tokens revoked"));
    // An invalid name is a configuration error.
    assert_eq!(
        std::process::Command::new(common::BIN)
            .args(["token", "create", "--cluster", "Prod EU", "--data-dir"])
            .arg(&dir)
            .status()
            .unwrap()
            .code(),
        Some(64)
    );

    // The server sees what the commands did.
    let collector = Collector::start(&dir, &[]);
    assert_eq!(collector.agent(&cert).send(&[warning("z").json()]).await.0, 403);
    let (agent, _, _) = collector.enrolled_agent(&token).await;
    assert_eq!(agent.send(&[warning("p").json()]).await.0, 200);
    assert_eq!(collector.with_key(&key).all_events("").await.len(), 1);
    let (_, audit) = collector.admin().get("/v1/audit").await;
    let actors: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert_eq!(actors[0], format!("token:{token_id}"));
    assert!(actors[1..].iter().all(|a| *a == "local-cli"), "{actors:?}");
    assert!(collector.cli(&["token", "revoke", &token_id]).success);
    assert_eq!(collector.enroll(&token).await.0, 403);
}
