//! Faults of the network between agent and collector, through the proxy: a black
//! hole, resets, slow responses.

use super::Ctx;
use super::steps::*;
use podwarn_testkit::proxy::{Proxy, ProxyMode};
use std::time::Duration;

/// 3. Network black hole between agent and collector (the proxy stalls), then every
///    connection reset, then the path is back.
pub(crate) async fn network_blackhole_then_reset(ctx: Ctx) {
    let mut p = pipeline(&ctx).await;
    let proxy = Proxy::start(p.collector_addr.parse().expect("collector address"))
        .await
        .expect("start the proxy");
    start_agent_via(&mut p, proxy.addr());
    flow(&p, &ctx, RATE);
    first_delivery(&p).await;

    proxy.set_mode(ProxyMode::Stall);
    let spooled_before = agent(&p).counter("podwarn_agent_events_spooled").await;
    // Batches already inside the collector when the stall began may still commit.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = total(&try_stored(&p).await.expect("query"));
    ctx.hold(
        "black hole",
        ctx.profile.pick(Duration::from_secs(20), Duration::from_secs(180)),
    )
    .await;
    let now = total(&try_stored(&p).await.expect("query"));
    assert_eq!(now, held, "occurrences reached the collector through the black hole");
    let stats = proxy.stats();
    assert!(stats.stalled >= 1, "the proxy held no connection: {stats:?}");
    let spooled = agent(&p).counter("podwarn_agent_events_spooled").await;
    assert!(
        spooled > spooled_before,
        "the agent did not spool while the network was a black hole ({spooled} events spooled)"
    );

    proxy.set_mode(ProxyMode::Reset);
    ctx.hold(
        "resets",
        ctx.profile.pick(Duration::from_secs(10), Duration::from_secs(60)),
    )
    .await;
    let stats = proxy.stats();
    assert!(stats.reset >= 1, "no connection was reset: {stats:?}");
    let now = total(&try_stored(&p).await.expect("query"));
    assert_eq!(now, held, "occurrences reached the collector through reset connections");

    proxy.set_mode(ProxyMode::Pass);
    tokio::time::sleep(Duration::from_secs(3)).await;
    finish(&p, &ctx).await;
    ctx.say(&format!("proxy: {:?}", proxy.stats()));
}

/// 9. A slow collector: every response held back by the proxy, first for less than the
///    agent's live retry budget (5 s), then for more, so the live path gives batches up
///    to the spool while the collector may well have stored them: their replay must
///    change nothing.
pub(crate) async fn slow_collector(ctx: Ctx) {
    let mut p = pipeline(&ctx).await;
    let proxy = Proxy::start(p.collector_addr.parse().expect("collector address"))
        .await
        .expect("start the proxy");
    start_agent_via(&mut p, proxy.addr());
    flow(&p, &ctx, RATE);
    first_delivery(&p).await;

    proxy.set_mode(ProxyMode::Delay(Duration::from_secs(3)));
    let before = total(&try_stored(&p).await.expect("query"));
    ctx.hold(
        "3 s responses",
        ctx.profile.pick(Duration::from_secs(25), Duration::from_secs(120)),
    )
    .await;
    let during = total(&try_stored(&p).await.expect("query"));
    assert!(
        during > before,
        "nothing was stored through the slow path ({before} occurrences before and after)"
    );
    proxy.set_mode(ProxyMode::Delay(Duration::from_secs(7)));
    ctx.hold(
        "7 s responses",
        ctx.profile.pick(Duration::from_secs(20), Duration::from_secs(120)),
    )
    .await;
    let stats = proxy.stats();
    assert!(stats.delayed >= 1, "the proxy delayed nothing: {stats:?}");
    proxy.set_mode(ProxyMode::Pass);
    finish(&p, &ctx).await;
    ctx.say(&format!("proxy: {stats:?}"));
}
