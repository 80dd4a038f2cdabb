//! Steps the fault scenarios share: a logged pipeline, the warnings flowing, the
//! queries, and the end-state check of invariants 3 and 4.

use super::Ctx;
use podwarn_testkit::Scenario;
use podwarn_testkit::harness::{self, Agent, eventually};
use podwarn_testkit::pipeline::{DELIVERY, Pipeline};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// Warnings per second the simulator emits in most scenarios.
pub(crate) const RATE: f64 = 30.0;

pub(crate) async fn pipeline(ctx: &Ctx) -> Pipeline {
    Pipeline::without_agent_logged(ctx.log_dir()).await
}

/// Starts the simulator's `mixed` scenario: crash loops, OOM kills, image pulls, probes …
/// with counts growing on repeated Events.
pub(crate) fn flow(p: &Pipeline, ctx: &Ctx, rate: f64) {
    p.sim
        .cluster()
        .start_scenario(Scenario::Mixed, ctx.seed, Some(rate))
        .expect("start the mixed scenario");
}

/// Starts the main agent with its collector URL pointing at `collector` (a proxy).
pub(crate) fn start_agent_via(p: &mut Pipeline, collector: SocketAddr) {
    let mut args = p.agent_args(&[]);
    let at = args.iter().position(|a| a == "--collector").expect("--collector") + 1;
    args[at] = format!("https://{collector}");
    let log = p.log_path("agent").expect("a logged pipeline");
    p.agent = Some(Agent::start_logged(&harness::binary("podwarn-agent"), &args, &[], &log));
}

pub(crate) fn agent(p: &Pipeline) -> &Agent {
    p.agent.as_ref().expect("agent running")
}

/// uid → count of what the collector stored from the Event path; `Err` when it does not
/// answer 200 (the harness's query panics instead, which would hide the status).
pub(crate) async fn try_stored(p: &Pipeline) -> Result<BTreeMap<String, u64>, String> {
    let admin = p.admin();
    let mut out = BTreeMap::new();
    let mut cursor = String::new();
    loop {
        let resp = admin
            .client
            .get(format!("{}/v1/events?limit=1000{cursor}", admin.url))
            .bearer_auth(&admin.token)
            .send()
            .await
            .map_err(|e| format!("query: {e}"))?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status != 200 {
            return Err(format!("query answered {status}: {body}"));
        }
        for e in body["items"].as_array().into_iter().flatten() {
            if e["source"] != "podwarn-agent/pod-status" {
                out.insert(
                    e["uid"].as_str().unwrap_or_default().to_owned(),
                    e["count"].as_u64().unwrap_or(0),
                );
            }
        }
        match body["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return Ok(out),
        }
    }
}

/// Sum of the stored counts: occurrences that reached the store.
pub(crate) fn total(stored: &BTreeMap<String, u64>) -> u64 {
    stored.values().sum()
}

/// What differs between what was emitted and what was stored, briefly.
pub(crate) fn diff(expected: &BTreeMap<String, u64>, stored: &BTreeMap<String, u64>) -> String {
    let missing = expected.keys().filter(|k| !stored.contains_key(*k)).count();
    let unknown = stored.keys().filter(|k| !expected.contains_key(*k)).count();
    let wrong: Vec<String> = expected
        .iter()
        .filter_map(|(uid, &want)| {
            let got = *stored.get(uid)?;
            (got != want).then(|| format!("{uid}: stored {got}, emitted {want}"))
        })
        .collect();
    format!(
        "{} warnings emitted ({} occurrences), {} stored ({} occurrences): {missing} missing, {unknown} never emitted, \
         {} with another count{}",
        expected.len(),
        total(expected),
        stored.len(),
        total(stored),
        wrong.len(),
        wrong.first().map(|w| format!(", e.g. {w}")).unwrap_or_default()
    )
}

/// Waits until the collector holds exactly what the simulator emitted (invariant 3)
/// with the right counts, and each occurrence in exactly one incident (invariant 4).
pub(crate) async fn delivered_exactly_once(p: &Pipeline, within: Duration) -> Result<(), String> {
    let expected = p.emitted_warnings();
    if expected.is_empty() {
        return Err("the scenario emitted no warning at all".into());
    }
    let deadline = Instant::now() + within;
    let mut last = Err("not queried yet".to_owned());
    while Instant::now() < deadline {
        last = try_stored(p).await;
        if last.as_ref().is_ok_and(|s| *s == expected) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    match last {
        Ok(stored) if stored == expected => {}
        Ok(stored) => {
            return Err(format!(
                "not delivered exactly within {}s: {}",
                within.as_secs(),
                diff(&expected, &stored)
            ));
        }
        Err(e) => {
            return Err(format!(
                "the collector did not answer within {}s: {e}",
                within.as_secs()
            ));
        }
    }
    // Exactly once: every stored occurrence (Event path and pod-status records alike)
    // counted in exactly one incident.
    let admin = p.admin();
    let counted: u64 = admin
        .all_events("")
        .await
        .iter()
        .map(|e| e["count"].as_u64().unwrap_or(0))
        .sum();
    let occurrences: u64 = admin
        .all_incidents("")
        .await
        .iter()
        .map(|i| i["occurrences"].as_u64().unwrap_or(0))
        .sum();
    if occurrences != counted {
        return Err(format!(
            "incidents count {occurrences} occurrences for {counted} stored: occurrences counted more than once"
        ));
    }
    Ok(())
}

/// Stops the warnings and checks the end state every scenario must reach.
pub(crate) async fn finish(p: &Pipeline, ctx: &Ctx) {
    p.sim.cluster().stop_scenario();
    let within = ctx.profile.pick(Duration::from_secs(150), Duration::from_secs(600));
    if let Err(e) = delivered_exactly_once(p, within).await {
        panic!("{e}");
    }
    let agent = agent(p);
    let dropped = agent.counter("podwarn_agent_events_dropped").await;
    assert_eq!(dropped, 0.0, "the agent dropped {dropped} events (spool overflow?)");
    let rejected = agent.counter("podwarn_agent_events_rejected").await;
    assert_eq!(rejected, 0.0, "the collector refused {rejected} events for good");
    let emitted = p.emitted_warnings();
    ctx.say(&format!(
        "{} warnings, {} occurrences, each stored exactly once",
        emitted.len(),
        total(&emitted)
    ));
}

pub(crate) async fn first_delivery(p: &Pipeline) {
    eventually(DELIVERY, "the first warnings stored", || async {
        try_stored(p).await.ok().filter(|s| !s.is_empty()).map(|_| ())
    })
    .await;
}

/// A counter or gauge of the collector's `/metrics`, e.g. `podwarn_ingest_requests_total{outcome="failed"}`.
pub(crate) async fn collector_metric(p: &Pipeline, series: &str) -> f64 {
    let admin = p.admin();
    let text = admin
        .client
        .get(format!("{}/metrics", admin.url))
        .bearer_auth(&admin.token)
        .send()
        .await
        .expect("collector metrics")
        .text()
        .await
        .expect("collector metrics body");
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Invariant 2 across a kill: every uid stored before is still stored, with no lower count.
pub(crate) fn nothing_lost(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> Result<(), String> {
    let lost: Vec<String> = before
        .iter()
        .filter(|(uid, n)| after.get(*uid).is_none_or(|m| m < n))
        .map(|(uid, n)| format!("{uid} (count {n} → {:?})", after.get(uid)))
        .collect();
    if lost.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} stored warnings lost or shrunk, e.g. {}",
            lost.len(),
            lost[0]
        ))
    }
}

/// Kill -9 the collector, start it again on the same data dir: the store opens cleanly
/// and holds what it held.
pub(crate) async fn store_survives_kill9(p: &mut Pipeline) {
    let before = try_stored(p).await.expect("the store answers before the kill");
    p.collector.take().expect("collector running").kill9();
    p.restart_collector();
    let after = try_stored(p).await.expect("the store opens cleanly after kill -9");
    assert_eq!(
        after, before,
        "the store changed across a kill -9 with nothing in flight"
    );
}

/// The last `n` lines of `log` containing any of `needles`, joined.
pub(crate) fn log_lines(log: &Path, needles: &[&str], n: usize) -> String {
    let text = strip_ansi(&std::fs::read_to_string(log).unwrap_or_default());
    let hits: Vec<&str> = text
        .lines()
        .filter(|l| needles.iter().any(|needle| l.contains(needle)))
        .collect();
    let tail = &hits[hits.len().saturating_sub(n)..];
    if tail.is_empty() {
        "(nothing relevant)".into()
    } else {
        tail.join(" | ")
    }
}

/// `text` without terminal colour sequences (`ESC [ … m`).
pub(crate) fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
