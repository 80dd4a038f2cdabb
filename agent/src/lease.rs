//! Leader election on a coordination.k8s.io/v1 Lease, with client-go's
//! LeaseLock semantics: get, then create or update with the resourceVersion
//! read (a concurrent writer gets 409 Conflict and loses the round).
//!
//! Expiry is judged by when *this* agent last saw the lease record change,
//! never by comparing the holder's clock with ours, so skewed node clocks
//! cannot make two agents lead at once. Only these verbs are used: get,
//! create, update on one Lease in the agent's own namespace.

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How the agent takes part in the election.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// The Lease's name.
    pub name: String,
    /// Its namespace (the agent's own).
    pub namespace: String,
    /// This agent's identity (its Pod name).
    pub identity: String,
    /// How long a lease stays valid after its last renewal.
    pub duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leading.
    pub renew_deadline: Duration,
    /// Pause between attempts.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// client-go's defaults scaled to `duration`: renew deadline 2/3, retry period 2/15.
    pub fn with_duration(name: String, namespace: String, identity: String, duration: Duration) -> Self {
        Self {
            name,
            namespace,
            identity,
            duration,
            renew_deadline: duration * 2 / 3,
            retry_period: (duration * 2 / 15).max(Duration::from_millis(200)),
        }
    }
}

/// The record as last observed, and when.
struct Observed {
    holder: Option<String>,
    renew: Option<Timestamp>,
    at: Instant,
}

/// Starts electing. The receiver holds `true` while this agent leads. On
/// `shutdown` a leader releases the lease so a standby takes over at once.
pub fn spawn(client: kube::Client, config: LeaseConfig, shutdown: CancellationToken) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &config.namespace);
        let mut observed: Option<Observed> = None;
        let mut last_renewed: Option<Instant> = None;
        loop {
            match try_acquire_or_renew(&api, &config, &mut observed).await {
                Ok(true) => last_renewed = Some(Instant::now()),
                Ok(false) => last_renewed = None,
                Err(e) => tracing::warn!(lease = %config.name, error = %e, "lease renewal failed"),
            }
            let leading = last_renewed.is_some_and(|t| t.elapsed() < config.renew_deadline);
            crate::ops::metrics().leader.set(i64::from(leading));
            if *tx.borrow() != leading {
                tracing::info!(lease = %config.name, identity = %config.identity, leading, "leadership changed");
                let _ = tx.send(leading);
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(config.retry_period) => {}
            }
        }
        crate::ops::metrics().leader.set(0);
        if *tx.borrow() {
            release(&api, &config).await;
            let _ = tx.send(false);
        }
    });
    rx
}

async fn try_acquire_or_renew(
    api: &Api<Lease>,
    config: &LeaseConfig,
    observed: &mut Option<Observed>,
) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(config.duration.as_secs().max(1) as i32),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let renew = spec.renew_time.as_ref().map(|t| t.0);
    let changed = observed.as_ref().is_none_or(|o| o.holder != holder || o.renew != renew);
    if changed {
        *observed = Some(Observed {
            holder: holder.clone(),
            renew,
            at: Instant::now(),
        });
    }
    let mine = holder.as_deref() == Some(config.identity.as_str());
    let held_by_other = holder.is_some() && !mine;
    let duration = spec
        .lease_duration_seconds
        .map_or(config.duration, |s| Duration::from_secs(s.max(1) as u64));
    let expired = observed.as_ref().is_some_and(|o| o.at.elapsed() > duration);
    if held_by_other && !expired {
        return Ok(false);
    }
    let mut spec = spec;
    if !mine {
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.holder_identity = Some(config.identity.clone());
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(config.duration.as_secs().max(1) as i32);
    lease.spec = Some(spec);
    // The resourceVersion read above makes this a compare-and-swap.
    match api.replace(&config.name, &PostParams::default(), &lease).await {
        Ok(_) => {
            *observed = Some(Observed {
                holder: Some(config.identity.clone()),
                renew: Some(now),
                at: Instant::now(),
            });
            Ok(true)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the lease up (holder cleared, one-second duration), as client-go's
/// ReleaseOnCancel does.
async fn release(api: &Api<Lease>, config: &LeaseConfig) {
    let Ok(Some(mut lease)) = api.get_opt(&config.name).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else { return };
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    match api.replace(&config.name, &PostParams::default(), &lease).await {
        Ok(_) => tracing::info!(lease = %config.name, "lease released"),
        Err(e) => tracing::warn!(lease = %config.name, error = %e, "releasing the lease failed; it expires by itself"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_follow_client_go_ratios() {
        let c = LeaseConfig::with_duration("l".into(), "ns".into(), "me".into(), Duration::from_secs(15));
        assert_eq!(c.renew_deadline, Duration::from_secs(10));
        assert_eq!(c.retry_period, Duration::from_secs(2));
        let fast = LeaseConfig::with_duration("l".into(), "ns".into(), "me".into(), Duration::from_secs(1));
        assert!(fast.retry_period >= Duration::from_millis(200));
    }
}
