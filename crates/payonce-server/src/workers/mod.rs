//! Background work, run by every instance and shared through leases in the database:
//! - the poller asks channels about attempts no notification settled (active query), and keeps
//!   watching closed attempts whose credential can still pay;
//! - the expirer closes expired orders at the channel first, then locally;
//! - the refunder makes and settles refund calls (business refunds and automatic refunds of
//!   duplicate payments);
//! - the purge removes idempotency keys past their retention, expired submission guards and
//!   console sessions, and clears the content of timeline messages past the personal-data
//!   retention.
//!
//! - the dispatcher delivers the outbox's events (webhooks, brokers);
//! - the reconciler fetches and reconciles yesterday's bills at their hour;
//! - upkeep sets the operator's gauges.
//!
//! One module each; this one runs them, each in its own loop.
//!
//! Every claim is a lease owned by this process's token; writes about a claimed row are fenced
//! by that token or by the state machine, so a worker that sleeps past its lease (GC pause,
//! SIGSTOP) cannot overwrite what another did meanwhile.

mod dispatcher;
mod expirer;
mod poller;
mod reconciler;
mod refunder;
mod upkeep;

use crate::state::AppState;
use dispatcher::{Dispatcher, dispatch_due_events};
use expirer::expire_orders;
use payonce_core::Timestamp;
use poller::poll_attempts;
use reconciler::scheduled_reconciliations;
use refunder::settle_refunds;
use std::time::Duration;
use tokio::sync::watch;
use upkeep::{operator_gauges, purge_expired_keys};

/// Rows one worker round claims at most.
const BATCH: i64 = 64;

pub async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    if !state.config.workers {
        let _ = stop.changed().await;
        return;
    }
    let owner = payonce_core::EventId::new().as_str()[4..].to_owned();
    let tick = state
        .config
        .scaled(Duration::from_secs(1))
        .max(Duration::from_millis(10));
    let webhook_http = crate::engine::webhooks::webhook_client(
        state.config.webhook_timeout,
        state.config.allow_private_webhooks,
    );
    // Each kind of work runs in its own loop, so a backlog of one (ten thousand orders expiring
    // in the same minute of a flash sale) never makes the others wait behind it.
    let mut loops = tokio::task::JoinSet::new();
    let mut names = std::collections::HashMap::new();
    macro_rules! every_tick {
        ($name:literal, |$st:ident, $own:ident| $body:expr) => {
            every_tick!($name, tick, |$st, $own| $body)
        };
        ($name:literal, $period:expr, |$st:ident, $own:ident| $body:expr) => {{
            let ($st, $own, mut stop) = (state.clone(), owner.clone(), stop.clone());
            let period = $period;
            let task = loops.spawn(async move {
                let mut round = tokio::time::interval(period);
                round.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = round.tick() => {
                            // Each step logs its own failures; one failing never stops the others.
                            $body;
                            metrics::gauge!("payonce_worker_last_round_seconds", "worker" => $name)
                                .set(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0));
                        }
                    }
                }
            });
            names.insert(task.id(), $name);
        }};
    }
    // Accounts added, rotated or disabled on another instance: picked up within two seconds.
    every_tick!(
        "channel_accounts",
        Duration::from_secs(2).min(tick.max(Duration::from_millis(200))),
        |st, own| {
            let _ = &own;
            if let Err(e) = crate::engine::accounts::reload(&st, false).await {
                tracing::warn!(error = %e, "reading the channel accounts failed");
            }
        }
    );
    every_tick!("active_query", |st, own| poll_attempts(&st, &own).await);
    every_tick!("expiry", |st, own| expire_orders(&st, &own).await);
    every_tick!("refunds", |st, own| settle_refunds(&st, &own).await);
    // The dispatcher outlives its rounds: deliveries it started run on while it claims more.
    let dispatcher = std::sync::Arc::new(Dispatcher::default());
    let (http, d) = (webhook_http.clone(), dispatcher.clone());
    every_tick!("outbox", |st, own| d.round(&st, &http, &own).await);
    // A bill is a day's affair: looking once a minute (scaled) whether one is due is plenty.
    every_tick!(
        "reconciliation",
        state.config.scaled(Duration::from_secs(60)).max(tick),
        |st, own| scheduled_reconciliations(&st, &own).await
    );
    let mut purge = tokio::time::interval(state.config.scaled(Duration::from_secs(3600)));
    // The abnormal gauge reads the whole queue: every 15 s is plenty, not every round.
    let mut gauge = tokio::time::interval(
        state
            .config
            .scaled(Duration::from_secs(15))
            .max(Duration::from_millis(10)),
    );
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            // A loop only ends on stop; ending before is a panic: surfaced, never silent.
            Some(Err(e)) = loops.join_next_with_id() => {
                let name = names.get(&e.id()).copied().unwrap_or("worker");
                tracing::error!(worker = name, error = %e, "a worker loop stopped; /readyz now fails");
                metrics::counter!("payonce_worker_failures_total", "worker" => name).increment(1);
                *state.failed_worker.lock().unwrap() = Some(name.to_owned());
            }
            _ = purge.tick() => purge_expired_keys(&state).await,
            _ = gauge.tick() => {
                operator_gauges(&state).await;
                // Rate-limit buckets of addresses and apps gone quiet are forgotten.
                state.limits.shrink();
            }
        }
    }
    while loops.join_next().await.is_some() {}
    // Deliveries under way finish (each bounded by its timeout) rather than being cut off
    // mid-request: a cut one would be delivered again once its lease lapsed.
    dispatcher.finish().await;
}

/// One round of every worker, as `owner`, in the order the loops would run them: what one tick
/// does. Tests that move a `ManualClock` by hand call this instead of waiting for ticks, so a
/// schedule step is a clock step, never a sleep.
pub async fn run_round(state: &AppState, owner: &str) {
    poll_attempts(state, owner).await;
    expire_orders(state, owner).await;
    settle_refunds(state, owner).await;
    let http = crate::engine::webhooks::webhook_client(
        state.config.webhook_timeout,
        state.config.allow_private_webhooks,
    );
    dispatch_due_events(state, &http, owner).await;
    scheduled_reconciliations(state, owner).await;
}

/// The upkeep the loops do between rounds: the operator's gauges and the retention purge (a
/// test on virtual time calls it where it would otherwise wait for the gauges' 15 s).
pub async fn run_upkeep(state: &AppState) {
    operator_gauges(state).await;
    purge_expired_keys(state).await;
}

pub(super) fn lease_ms(state: &AppState) -> i64 {
    // Long enough for a channel call and its recording, with room to spare.
    i64::try_from((state.config.channel_timeout * 3 + Duration::from_secs(5)).as_millis())
        .unwrap_or(i64::MAX)
}

pub(super) fn at(now: Timestamp, d: Duration) -> Timestamp {
    now + d
}
