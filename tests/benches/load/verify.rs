//! The end-of-run checks: what the collector stored against what the fleet
//! sent, cluster by cluster and, for one cluster, event by event.

use crate::fleet::Agent;
use podwarn_testkit::harness::Admin;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// Outcomes of the checks, in order.
#[derive(Debug, Default)]
pub struct Checks {
    /// (passed, what was checked and what was found).
    pub list: Vec<(bool, String)>,
}

impl Checks {
    /// Records and prints one check.
    pub fn check(&mut self, ok: bool, what: String) {
        println!("load: {} {what}", if ok { "ok:    " } else { "FAILED:" });
        self.list.push((ok, what));
    }

    /// How many passed.
    pub fn passed(&self) -> usize {
        self.list.iter().filter(|c| c.0).count()
    }

    /// How many failed.
    pub fn failed(&self) -> usize {
        self.list.len() - self.passed()
    }
}

/// Per cluster: (distinct events, occurrences).
fn expected_by_cluster(agents: &[Agent]) -> BTreeMap<String, (u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for a in agents {
        let e = out.entry(a.cluster.clone()).or_default();
        e.0 += a.distinct();
        e.1 += a.occurrences();
    }
    out
}

/// Compares the collector's `/v1/clusters` and, for the smallest cluster,
/// every stored event with what `agents` sent.
pub async fn stored(admin: &Admin, agents: &[Agent], checks: &mut Checks) {
    let expected = expected_by_cluster(agents);
    let (status, body) = admin.get("/v1/clusters").await;
    let items = body["items"].as_array().cloned().unwrap_or_default();
    checks.check(
        status == 200 && items.len() == expected.len(),
        format!(
            "/v1/clusters answers {status} with {} clusters ({} expected)",
            items.len(),
            expected.len()
        ),
    );
    let found: HashMap<&str, &Value> = items.iter().filter_map(|c| Some((c["cluster"].as_str()?, c))).collect();
    let field = |cluster: &str, name: &str| found.get(cluster).and_then(|c| c[name].as_u64()).unwrap_or(0);

    let distinct: u64 = expected.values().map(|e| e.0).sum();
    let stored: u64 = expected.keys().map(|c| field(c, "events_stored")).sum();
    checks.check(
        stored == distinct,
        format!("distinct events stored {stored} = distinct uids sent {distinct}"),
    );
    let occurrences: u64 = expected.values().map(|e| e.1).sum();
    let stored_occ: u64 = expected.keys().map(|c| field(c, "occurrences")).sum();
    checks.check(
        stored_occ == occurrences,
        format!("occurrences stored {stored_occ} = sum of highest counts sent {occurrences}"),
    );
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(c, e)| field(c, "events_stored") != e.0 || field(c, "occurrences") != e.1)
        .map(|(c, e)| {
            format!(
                "{c}: stored {}/{} sent {}/{}",
                field(c, "events_stored"),
                field(c, "occurrences"),
                e.0,
                e.1
            )
        })
        .collect();
    checks.check(
        wrong.is_empty(),
        format!(
            "each of the {} clusters stores its own events and occurrences{}",
            expected.len(),
            if wrong.is_empty() {
                String::new()
            } else {
                format!(": {}", wrong.join("; "))
            }
        ),
    );

    // Each certificate is its own agent, and each reported in.
    let seen = items
        .iter()
        .flat_map(|c| c["agents"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["version"] == crate::warnings::VERSION && a["last_seen"].is_string())
        .filter_map(|a| a["agent_id"].as_str().map(str::to_owned))
        .collect::<std::collections::HashSet<_>>()
        .len();
    checks.check(
        seen == agents.len(),
        format!(
            "{seen} distinct agents recorded with a last contact ({} certificates)",
            agents.len()
        ),
    );

    let Some((cluster, _)) = expected.iter().min_by_key(|(_, e)| e.0) else {
        return;
    };
    let sent: HashMap<String, u32> = agents
        .iter()
        .filter(|a| &a.cluster == cluster)
        .flat_map(Agent::expected)
        .collect();
    let events = admin.all_events(&format!("&cluster={cluster}")).await;
    let mut seen: HashMap<&str, u32> = HashMap::new();
    let mut problems = Vec::new();
    for e in &events {
        let uid = e["uid"].as_str().unwrap_or("");
        let count = e["count"].as_u64().unwrap_or(0) as u32;
        if seen.insert(uid, count).is_some() {
            problems.push(format!("{uid} listed twice"));
        }
        match sent.get(uid) {
            None => problems.push(format!("{uid} was never sent")),
            Some(&c) if c != count => problems.push(format!("{uid} has count {count}, highest sent {c}")),
            Some(_) => {}
        }
    }
    let missing = sent.keys().filter(|u| !seen.contains_key(u.as_str())).count();
    if missing > 0 {
        problems.push(format!("{missing} sent events missing"));
    }
    problems.truncate(5);
    checks.check(
        problems.is_empty(),
        format!(
            "event by event in {cluster}: {} listed, {} sent, each once with its highest count{}",
            events.len(),
            sent.len(),
            if problems.is_empty() {
                String::new()
            } else {
                format!(": {}", problems.join("; "))
            }
        ),
    );
}
