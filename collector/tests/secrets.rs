//! No secret leaks: everything the collector printed while enrolling,
//! renewing, refusing and administering (serve's stdout and stderr at debug
//! level, every CLI command's output, the audit log, every error body) is
//! searched for every token secret, API key and private key of the test.
//! The only places a secret may appear are the one-time displays of
//! `token create` and `apikey create`.

mod common;

use common::{Collector, warning};
use serde_json::json;

/// Distinctive pieces of a PEM private key: each base64 line of its body.
fn key_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn no_token_secret_api_key_or_private_key_appears_in_anything_the_collector_prints() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    // One command before the server runs (it opens the store itself).
    let offline = common::cli(&dir, &["token", "create", "--cluster", "prod-eu"]);
    let offline_token = common::token_of(&offline);
    let cert_dir = common::issue_cert(&dir, "staging");
    let collector = Collector::start_logging(&dir, &[], "debug");

    let mut secrets: Vec<String> = Vec::new();
    let mut one_time_displays = vec![offline.stdout.clone()];
    let secret_of = |token: &str| token.rsplit('.').next().unwrap().to_owned();
    secrets.push(secret_of(&offline_token));

    let out = collector.cli(&["token", "create", "--cluster", "prod-eu", "--uses", "1"]);
    one_time_displays.push(out.stdout.clone());
    let online = common::token_of(&out);
    secrets.push(secret_of(&online));
    let (agent, enrolled, agent_key) = collector.enrolled_agent(&online).await;
    secrets.extend(key_lines(&agent_key));
    let (_, _, offline_agent_key) = collector.enrolled_agent(&offline_token).await;
    secrets.extend(key_lines(&offline_agent_key));
    assert_eq!(agent.send(&[warning("s1").json()]).await.0, 200);

    // Refusals: a guessed secret for a real id, a malformed token, a used-up token.
    let id = online.split('.').nth(1).unwrap();
    let guess = format!("pw1.{id}.GuessGuessGuessGuessGuessGuessGuessGuess");
    secrets.push(secret_of(&guess));
    let mut error_bodies = Vec::new();
    for token in [guess.clone(), "pw1.x.SecretLookingButMalformed0123456789".into()] {
        let (status, body, key) = collector.enroll(&token).await;
        assert!(status >= 400);
        secrets.extend(key_lines(&key));
        error_bodies.push(body.to_string());
    }
    secrets.push("SecretLookingButMalformed0123456789".into());
    let (status, body, key) = collector.enroll(&online).await;
    assert_eq!(status, 403, "used up: {body}");
    secrets.extend(key_lines(&key));
    error_bodies.push(body.to_string());

    // Renewal with a new key.
    let (new_key, csr) = podwarn_collector::tls::new_key_and_csr().unwrap();
    secrets.extend(key_lines(&new_key));
    let renewed = agent
        .client
        .post(format!("{}/v1/renew", collector.url))
        .json(&json!({ "csr": csr }))
        .send()
        .await
        .unwrap();
    assert_eq!(renewed.status().as_u16(), 200);

    // API keys: created, used, used wrongly, revoked.
    let out = collector.cli(&["apikey", "create", "--tenant", "default", "--role", "read"]);
    one_time_displays.push(out.stdout.clone());
    let key = out.stdout.lines().find(|l| l.starts_with("pwk_")).unwrap().to_owned();
    secrets.push(key.trim_start_matches("pwk_").to_owned());
    let reader = collector.with_key(&key);
    assert_eq!(reader.get("/v1/events").await.0, 200);
    let (status, body) = reader.get("/v1/audit").await;
    assert_eq!(status, 403);
    error_bodies.push(body.to_string());
    let forged = collector.with_key("pwk_ForgedForgedForgedForgedForgedForged");
    secrets.push("ForgedForgedForgedForgedForgedForged".into());
    error_bodies.push(forged.get("/v1/events").await.1.to_string());

    let agent_id = enrolled["agent_id"].as_str().unwrap();
    for args in [
        vec!["token", "list"],
        vec!["agent", "list"],
        vec!["apikey", "list"],
        vec!["agent", "revoke", agent_id],
        vec!["token", "revoke", id],
        vec!["cluster", "remove", "staging", "--purge"],
    ] {
        let out = collector.cli(&args);
        assert!(out.success, "{args:?}: {}", out.stderr);
    }
    let (_, audit) = collector.admin().get("/v1/audit?limit=1000").await;
    let audit = audit.to_string();
    assert!(audit.contains("agent.enroll") && audit.contains("apikey.create"));

    // The collector's own keys, and the key `cert issue` wrote.
    for file in ["tls/ca.key", "tls/server.key"] {
        secrets.extend(key_lines(&std::fs::read_to_string(dir.join(file)).unwrap()));
    }
    secrets.extend(key_lines(&std::fs::read_to_string(cert_dir.join("tls.key")).unwrap()));
    // Let the last log lines arrive, then look everywhere.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let printed = collector.output.lock().unwrap().clone();
    assert!(printed[0].stderr.contains("DEBUG") || printed[0].stderr.contains("INFO"));
    let mut searched = 0;
    for secret in &secrets {
        assert!(secret.len() >= 16, "{secret:?} is too short to search for");
        for p in &printed {
            let is_display = one_time_displays.contains(&p.stdout);
            assert!(
                is_display || !p.stdout.contains(secret.as_str()),
                "a secret appears in the stdout of `{}`",
                p.what
            );
            assert!(
                !p.stderr.contains(secret.as_str()),
                "a secret appears in the stderr of `{}`",
                p.what
            );
            searched += 1;
        }
        assert!(!offline.stderr.contains(secret.as_str()));
        assert!(!audit.contains(secret.as_str()), "a secret appears in the audit log");
        for body in &error_bodies {
            assert!(!body.contains(secret.as_str()), "a secret appears in an error: {body}");
        }
    }
    assert!(searched > 100);
    // The displays did show what they must.
    assert!(one_time_displays.iter().any(|d| d.contains(&secret_of(&online))));
    assert!(one_time_displays.iter().any(|d| d.contains(&key)));
}
