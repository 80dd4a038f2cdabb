//! Faults on the cluster side: the agent killed, watches dropped, 410 storms, API
//! server errors.

use super::Ctx;
use super::steps::*;
use podwarn_testkit::harness::eventually;
use rand::Rng as _;
use std::time::{Duration, Instant};

/// 5. Agent `kill -9` and restart, half of the times with batches in its disk spool
///    (collector down): the spool replays, the relist replays, nothing is duplicated.
pub(crate) async fn agent_kill9(ctx: Ctx) {
    let mut p = pipeline(&ctx).await;
    p.start_agent(&[]);
    flow(&p, &ctx, RATE);
    first_delivery(&p).await;
    let mut rng = ctx.rng();
    let kills = ctx.profile.pick(6, 24);
    let mut spools_replayed = 0;
    for i in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1000..4000))).await;
        let with_spool = i % 2 == 1;
        if with_spool {
            p.collector.take().expect("collector running").kill9();
            let a = agent(&p);
            eventually(Duration::from_secs(60), "the agent spooling", || async {
                (a.counter("podwarn_agent_spool_bytes").await > 0.0).then_some(())
            })
            .await;
        }
        p.agent.take().expect("agent running").kill9();
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..2000))).await;
        p.start_agent(&[]);
        if with_spool {
            // The collector is still down: the new agent finds the old spool on disk
            // (it opens it just after its ops server is up).
            let a = agent(&p);
            let found = tokio::time::timeout(Duration::from_secs(15), async {
                while a.counter("podwarn_agent_spool_bytes").await == 0.0 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
            .await;
            if found.is_ok() {
                spools_replayed += 1;
            }
            p.restart_collector();
        }
    }
    assert!(
        spools_replayed >= 1,
        "no restarted agent found a spool left by the killed one"
    );
    finish(&p, &ctx).await;
    ctx.say(&format!("{kills} kills, {spools_replayed} with a spool on disk"));
}

/// 6. Watches dropped every few seconds for a while.
pub(crate) async fn watch_drops(ctx: Ctx) {
    let mut p = pipeline(&ctx).await;
    p.start_agent(&[]);
    flow(&p, &ctx, RATE);
    first_delivery(&p).await;
    let faults = p.sim.faults();
    let before = faults.counts().watches;
    let until = Instant::now() + ctx.profile.pick(Duration::from_secs(30), Duration::from_secs(300));
    let mut rng = ctx.rng();
    let mut drops = 0;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1000..3000))).await;
        // Mostly clean ends of the stream, sometimes a cut connection.
        if drops % 4 == 3 {
            faults.reset_connections();
        } else {
            faults.drop_all_watches();
        }
        drops += 1;
    }
    let rewatched = faults.counts().watches - before;
    assert!(
        rewatched >= drops,
        "{drops} drops but only {rewatched} new watches: the agent did not come back"
    );
    finish(&p, &ctx).await;
    ctx.say(&format!("{drops} drops, {rewatched} re-watches"));
}

/// 7. Forced 410 storms: the agent's resourceVersion compacted away again and again.
pub(crate) async fn gone_410_storms(ctx: Ctx) {
    let mut p = pipeline(&ctx).await;
    p.start_agent(&[]);
    flow(&p, &ctx, RATE);
    first_delivery(&p).await;
    let faults = p.sim.faults();
    let before = faults.counts().watch_gone;
    let storms = ctx.profile.pick(12, 90);
    for i in 0..storms {
        // Let the agent fall behind (events keep coming), then compact past its version
        // and end its watches: it resumes from a version that is gone.
        faults.stall_watches(None);
        tokio::time::sleep(Duration::from_millis(400)).await;
        faults.expire_versions();
        if i % 3 == 2 {
            faults.reset_connections();
        } else {
            faults.drop_all_watches();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        faults.clear_stall();
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let gone = faults.counts().watch_gone - before;
    assert!(
        gone >= storms / 2,
        "only {gone} watches were answered 410 in {storms} storms"
    );
    finish(&p, &ctx).await;
    ctx.say(&format!("{storms} storms, {gone} watches answered 410"));
}

/// 8. API server 5xx and 429 bursts, with and without Retry-After; watches dropped in
///    each so that reconnects and relists meet them, as do enrichment lookups.
pub(crate) async fn api_error_bursts(ctx: Ctx) {
    let mut p = pipeline(&ctx).await;
    p.start_agent(&[]);
    flow(&p, &ctx, RATE);
    first_delivery(&p).await;
    let faults = p.sim.faults();
    let before = faults.counts().injected;
    let bursts: [(u16, Option<Duration>); 6] = [
        (500, None),
        (503, None),
        (429, Some(Duration::from_secs(1))),
        (429, None),
        (503, Some(Duration::from_secs(2))),
        (504, None),
    ];
    let length = ctx.profile.pick(Duration::from_secs(4), Duration::from_secs(20));
    let rounds = ctx.profile.pick(1, 3);
    for _ in 0..rounds {
        for (status, retry_after) in bursts {
            faults.fail_requests(status, length, retry_after);
            faults.drop_all_watches();
            tokio::time::sleep(length + Duration::from_secs(2)).await;
        }
    }
    let after = faults.counts().injected;
    for (status, _) in bursts {
        let served = after.get(&status).copied().unwrap_or(0) - before.get(&status).copied().unwrap_or(0);
        assert!(served >= 1, "no request met the injected {status}: {after:?}");
    }
    finish(&p, &ctx).await;
    ctx.say(&format!("injected failures served: {after:?}"));
}
