//! Access changes through the store's public API: no double spend of a
//! token, refusals write nothing, purge crosses transactions and leaves other
//! clusters alone, every change is audited.

use super::schema::{AgentRecord, TokenRecord};
use super::tests::{batch, event, identity, store_with_agent};
use super::*;

fn token(id: &str, cluster: &str, uses: Option<u64>) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        secret_sha256: [7; 32],
        cluster: cluster.into(),
        tenant: "default".into(),
        created_us: 0,
        expires_us: i64::MAX,
        uses_total: uses,
        used: 0,
        revoked_us: None,
        last_used_us: None,
    }
}

fn agent(id: &str, cluster: &str, tenant: &str) -> AgentRecord {
    AgentRecord {
        agent_id: id.into(),
        cluster: cluster.into(),
        tenant: tenant.into(),
        created_us: 0,
        cert_serial: "01".into(),
        cert_not_after_us: i64::MAX,
        revoked_us: None,
        last_seen_us: None,
        version: None,
        dropped_total: 0,
    }
}

fn job(op: AccessOp) -> AccessJob {
    AccessJob {
        op,
        actor: "test".into(),
        source: "local".into(),
    }
}

#[tokio::test]
async fn concurrent_enrollments_spend_each_use_once_and_refusals_write_nothing() {
    let (_dir, store) = store_with_agent().await;
    store
        .access(job(AccessOp::CreateToken(token("tok1", "edge", Some(3)))))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let op = AccessOp::Enroll {
                token_id: "tok1".into(),
                secret_sha256: [7; 32],
                agent: agent(&format!("e{i}"), "edge", "default"),
            };
            store.access(job(op)).await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::Refused(Refusal::TokenUsedUp)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok, 3);
    assert_eq!(store.token("tok1".into()).await.unwrap().unwrap().used, 3);
    assert_eq!(store.agents().await.unwrap().len(), 1 + 3);

    // A wrong secret, or a cluster name of another tenant: refused, nothing written.
    let wrong = AccessOp::Enroll {
        token_id: "tok1".into(),
        secret_sha256: [8; 32],
        agent: agent("w", "edge", "default"),
    };
    let err = store.access(job(wrong)).await.unwrap_err();
    assert!(matches!(err, StoreError::Refused(Refusal::TokenInvalid)), "{err}");
    let mut foreign = token("tok2", "prod", None);
    foreign.tenant = "other".into();
    let err = store.access(job(AccessOp::CreateToken(foreign))).await.unwrap_err();
    assert!(matches!(err, StoreError::Refused(Refusal::Conflict(_))), "{err}");
    let err = store
        .access(job(AccessOp::IssueCert(agent("x", "prod", "other"))))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Refused(Refusal::Conflict(_))), "{err}");
    assert!(store.token("tok2".into()).await.unwrap().is_none());
    assert_eq!(store.agents().await.unwrap().len(), 4);

    let audit = store
        .audit(AuditQuery {
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let actions: Vec<&str> = audit.items.iter().map(|(_, r)| r.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "agent.enroll",
            "agent.enroll",
            "agent.enroll",
            "token.create",
            "cert.issue"
        ]
    );
}

#[tokio::test]
async fn purge_deletes_a_cluster_across_transactions_and_keeps_the_others() {
    let (_dir, store) = store_with_agent().await;
    store.register_agent(agent("b1", "other", "default")).await.unwrap();
    let many: Vec<_> = (0..4500)
        .map(|i| event(&format!("p{i}"), "shop", "api", 1_000 + i))
        .collect();
    store.ingest(identity(), batch(many)).await.unwrap();
    let other = crate::tls::AgentIdentity {
        cluster: "other".into(),
        agent_id: "b1".into(),
        ..identity()
    };
    store
        .ingest(other.clone(), batch(vec![event("k", "shop", "api", 5)]))
        .await
        .unwrap();

    let remove = job(AccessOp::RemoveCluster {
        cluster: "prod".into(),
        tenant: None,
    });
    let (removed, purged) = store.remove_cluster(remove, true).await.unwrap();
    assert!(matches!(removed, AccessOutcome::ClusterRemoved { agents: 1, .. }));
    assert_eq!((purged.events, purged.incidents), (4500, 1));
    let err = store
        .ingest(identity(), batch(vec![event("z", "a", "b", 1)]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AgentRefused(_)));

    let left = store
        .events(EventQuery {
            limit: 1000,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(left.items.len(), 1);
    assert_eq!(left.items[0].cluster, "other");
    let clusters: Vec<String> = store.clusters().await.unwrap().into_iter().map(|c| c.cluster).collect();
    assert_eq!(clusters, ["other"]);
    // The other cluster's dedup keys are intact …
    let again = store
        .ingest(other, batch(vec![event("k", "shop", "api", 5)]))
        .await
        .unwrap();
    assert_eq!(again.duplicate, 1);
    // … and the purged cluster's are gone: a new agent of a new "prod" stores p7 again.
    store.register_agent(agent("a2", "prod", "default")).await.unwrap();
    let fresh = crate::tls::AgentIdentity {
        agent_id: "a2".into(),
        ..identity()
    };
    let again = store
        .ingest(fresh, batch(vec![event("p7", "shop", "api", 1_007)]))
        .await
        .unwrap();
    assert_eq!(again.accepted, 1);
}
