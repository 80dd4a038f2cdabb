//! Cluster-wide access changes: a cluster name belongs to one tenant; removing
//! a cluster revokes its agents and tokens; purging deletes its data in
//! bounded steps.

use super::Result;
use super::access::{AccessOutcome, Audit, PurgeOutcome, Refusal, not_found, put};
use super::postings;
use super::schema::*;
use super::writer::{State, Tables, Work, delete_event, delete_incident, segment_events};
use redb::ReadableTable;

/// Most records one purge transaction deletes, so ingest never waits long.
const PURGE_BUDGET: usize = 2000;

/// A cluster name is global: refuse to bind it to a second tenant, which
/// would let that tenant's agents write into (and read) the first one's data.
pub(super) fn cluster_is_free(t: &Tables<'_>, state: &State, cluster: &str, tenant: &str) -> Result<()> {
    let taken = |other: &str| {
        Refusal::Conflict(format!(
            "cluster {cluster:?} belongs to tenant {other:?}: cluster names are unique across tenants, choose another"
        ))
    };
    if let Some((_, rec)) = state.clusters.get(cluster)
        && rec.tenant != tenant
    {
        return Err(taken(&rec.tenant).into());
    }
    for row in t.tokens.iter()? {
        let tok: TokenRecord = decode(row?.1.value())?;
        if tok.cluster == cluster && tok.tenant != tenant && tok.revoked_us.is_none() {
            return Err(taken(&tok.tenant).into());
        }
    }
    Ok(())
}

pub(super) fn remove_cluster(
    t: &mut Tables<'_>,
    state: &mut State,
    log: &mut Audit,
    cluster: &str,
    scope: &Option<String>,
) -> Result<AccessOutcome> {
    let mut agents = Vec::new();
    for row in t.agents.iter()? {
        let agent: AgentRecord = decode(row?.1.value())?;
        if agent.cluster == cluster {
            agents.push(agent);
        }
    }
    let mut tokens = Vec::new();
    for row in t.tokens.iter()? {
        let tok: TokenRecord = decode(row?.1.value())?;
        if tok.cluster == cluster {
            tokens.push(tok);
        }
    }
    let tenant = state
        .clusters
        .get(cluster)
        .map(|(_, c)| c.tenant.clone())
        .or_else(|| agents.first().map(|a| a.tenant.clone()))
        .or_else(|| tokens.first().map(|t| t.tenant.clone()));
    let Some(tenant) = tenant.filter(|t| scope.as_ref().is_none_or(|s| s == t)) else {
        return Err(not_found("cluster", cluster));
    };
    let (mut revoked_agents, mut revoked_tokens) = (0, 0);
    for mut agent in agents.into_iter().filter(|a| a.revoked_us.is_none()) {
        agent.revoked_us = Some(log.now);
        put(&mut t.agents, &agent.agent_id, &agent)?;
        revoked_agents += 1;
    }
    for mut tok in tokens.into_iter().filter(|t| t.revoked_us.is_none()) {
        tok.revoked_us = Some(log.now);
        put(&mut t.tokens, &tok.id, &tok)?;
        revoked_tokens += 1;
    }
    let detail = format!("{revoked_agents} agents and {revoked_tokens} tokens revoked");
    log.write(
        t,
        state,
        "cluster.remove",
        &tenant,
        Some(cluster),
        cluster,
        Some(detail),
    )?;
    Ok(AccessOutcome::ClusterRemoved {
        tenant,
        agents: revoked_agents,
        tokens: revoked_tokens,
    })
}

/// Deletes up to [`PURGE_BUDGET`] events, then incidents, of a cluster; when
/// none are left, the cluster record itself.
pub(super) fn purge_step(
    t: &mut Tables<'_>,
    state: &mut State,
    w: &mut Work<'_>,
    cluster: &str,
) -> Result<PurgeOutcome> {
    let mut out = PurgeOutcome::default();
    let Some((id, _)) = state.clusters.get(cluster).cloned() else {
        return Ok(out);
    };
    'segments: for (segment, _) in postings::segments(&t.segments)? {
        for (_, entry) in segment_events(t, segment, Some(id))? {
            if out.events as usize == PURGE_BUDGET {
                out.more = true;
                break 'segments;
            }
            if delete_event(t, w, segment, entry)?.is_some() {
                out.events += 1;
            }
        }
    }
    let lo = index_key(Dim::Time, id, 0, i64::MIN, 0);
    let hi = index_key(Dim::Time, id, 0, i64::MAX, u64::MAX);
    if out.more {
        return Ok(out);
    }
    let mut doomed = Vec::new();
    for row in t.incident_index.range(lo..=hi)? {
        if doomed.len() == PURGE_BUDGET {
            out.more = true;
            break;
        }
        doomed.push(position_of(&row?.0.value()));
    }
    for (bucket, incident) in doomed {
        if delete_incident(t, w, incident, bucket)? {
            out.incidents += 1;
        }
    }
    if !out.more {
        t.clusters.remove(id)?;
        t.cluster_ids.remove(cluster)?;
        state.clusters.remove(cluster);
    }
    Ok(out)
}
