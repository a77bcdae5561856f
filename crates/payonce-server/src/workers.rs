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
//! Every claim is a lease owned by this process's token; writes about a claimed row are fenced
//! by that token or by the state machine, so a worker that sleeps past its lease (GC pause,
//! SIGSTOP) cannot overwrite what another did meanwhile.

use crate::payments::{self, order_ref};
use crate::state::AppState;
use payonce_channels::{ChannelError, TradeState};
use payonce_core::{AttemptStatus, Timestamp};
use payonce_store::{Attempt, CloseOrder, OutcomeApplied, OutcomeSource};
use std::time::Duration;
use tokio::sync::watch;

/// Rows one worker round claims at most.
const BATCH: i64 = 64;
/// Queries of an unknown attempt after which a person is told.
const UNKNOWN_ALERT_AFTER: usize = 12;

pub async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    if !state.config.workers {
        let _ = stop.changed().await;
        return;
    }
    let owner = payonce_core::EventId::new().as_str()[4..].to_owned();
    let tick = state.config.scaled(Duration::from_secs(1)).max(Duration::from_millis(10));
    let webhook_http = crate::webhooks::webhook_client(state.config.webhook_timeout, state.config.allow_private_webhooks);
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
    every_tick!("active_query", |st, own| poll_attempts(&st, &own).await);
    every_tick!("expiry", |st, own| expire_orders(&st, &own).await);
    every_tick!("refunds", |st, own| settle_refunds(&st, &own).await);
    let http = webhook_http.clone();
    every_tick!("outbox", |st, own| dispatch_events(&st, &http, &own).await);
    // A bill is a day's affair: looking once a minute (scaled) whether one is due is plenty.
    every_tick!("reconciliation", state.config.scaled(Duration::from_secs(60)).max(tick), |st, own| scheduled_reconciliations(&st, &own).await);
    let mut purge = tokio::time::interval(state.config.scaled(Duration::from_secs(3600)));
    // The abnormal gauge reads the whole queue: every 15 s is plenty, not every round.
    let mut gauge = tokio::time::interval(state.config.scaled(Duration::from_secs(15)).max(Duration::from_millis(10)));
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
}

/// One round of every worker, as `owner`, in the order the loops would run them: what one tick
/// does. Tests that move a `ManualClock` by hand call this instead of waiting for ticks, so a
/// schedule step is a clock step, never a sleep.
pub async fn run_round(state: &AppState, owner: &str) {
    poll_attempts(state, owner).await;
    expire_orders(state, owner).await;
    settle_refunds(state, owner).await;
    let http = crate::webhooks::webhook_client(state.config.webhook_timeout, state.config.allow_private_webhooks);
    dispatch_events(state, &http, owner).await;
    scheduled_reconciliations(state, owner).await;
}

/// Reconciles yesterday's bill of each channel in `reconcile_at` once its time of day (Beijing)
/// has come, and again, ten minutes apart, until a run completes (the channel may not have the
/// bill yet). Leased: among many instances one runs it.
async fn scheduled_reconciliations(state: &AppState, owner: &str) {
    if state.config.reconcile_at.is_empty() {
        return;
    }
    let now = state.clock.now();
    let today = crate::reconcile::beijing_date(now);
    let Some((midnight, _)) = crate::reconcile::beijing_day(&today) else { return };
    let yesterday = crate::reconcile::beijing_yesterday(now);
    let retry_after = state.config.scaled(Duration::from_secs(600)).as_millis() as i64;
    for (&channel, &at_minute) in &state.config.reconcile_at {
        if now.0 < midnight.0 + i64::from(at_minute) * 60_000 {
            continue;
        }
        match state.store.reconciliation_for(channel, &yesterday).await {
            Ok(Some(run)) if run.status == "completed" => continue,
            Ok(Some(run)) if run.finished_at.is_some_and(|t| now.0 - t < retry_after) || run.status == "running" && now.0 - run.started_at < retry_after => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "reading reconciliation runs failed");
                continue;
            }
        }
        match crate::reconcile::reconcile(state, owner, channel.as_str(), &yesterday, false).await {
            Ok(r) => tracing::info!(channel = %r.channel, bill_date = %r.bill_date, status = %r.status, person = r.needs_a_person(), "scheduled reconciliation"),
            Err(crate::reconcile::ReconcileError::Busy(..)) => {}
            Err(e) => tracing::warn!(error = %e, "scheduled reconciliation failed"),
        }
    }
}

fn lease_ms(state: &AppState) -> i64 {
    // Long enough for a channel call and its recording, with room to spare.
    i64::try_from((state.config.channel_timeout * 3 + Duration::from_secs(5)).as_millis()).unwrap_or(i64::MAX)
}

fn at(now: Timestamp, d: Duration) -> Timestamp {
    now + d
}

/// Active query: the answer to lost notifications.
async fn poll_attempts(state: &AppState, owner: &str) {
    let now = state.clock.now();
    let claimed = match state.store.claim_due_attempts(now, lease_ms(state), owner, BATCH).await {
        Ok(c) => c,
        Err(e) => return tracing::warn!(error = %e, "claiming attempts failed"),
    };
    let mut set = tokio::task::JoinSet::new();
    for a in claimed {
        let (state, owner) = (state.clone(), owner.to_owned());
        set.spawn(async move { check_attempt(&state, &owner, a).await });
    }
    while set.join_next().await.is_some() {}
}

#[tracing::instrument(skip_all, fields(attempt_id = %a.id, channel = %a.channel))]
async fn check_attempt(state: &AppState, owner: &str, mut a: Attempt) {
    let now = state.clock.now();
    let deadline = state.config.call_deadline();
    if a.status == AttemptStatus::Created {
        // Its prepay call may still be running: look again once it must have ended; if it has
        // not recorded anything by then, its caller died and the outcome is unknown.
        if a.created_at > now - deadline {
            let _ = state.store.finish_attempt_check(&a.id, owner, Some(a.created_at + deadline + Duration::from_millis(1)), now).await;
            return;
        }
        match state.store.mark_stale_created(&a.id, now - deadline, now).await {
            Ok(Some(updated)) => a = updated,
            _ => return,
        }
    }
    let Some(channel) = state.channels.get(a.channel).cloned() else {
        let _ = state.store.finish_attempt_check(&a.id, owner, Some(at(now, state.config.backoff(6))), now).await;
        return;
    };
    let query_count = a.query_count as usize;
    let answer = channel.query(&order_ref(&a)).await;
    metrics::counter!("payonce_active_queries_total", "channel" => a.channel.as_str(), "outcome" => match &answer {
        Ok(TradeState::Paid { .. }) => "paid",
        Ok(TradeState::Unpaid) => "unpaid",
        Ok(TradeState::Closed) => "closed",
        Ok(TradeState::Absent) => "absent",
        Err(_) => "error",
    })
    .increment(1);
    let now = state.clock.now();
    let observed = match answer {
        // An unscanned QR / unsubmitted form: nothing to record until it can no longer be
        // paid, then it is closed (never failed).
        Ok(s) if !a.channel.creates_order_at_prepay() => payonce_channels::settle_query_answer(a.channel, s, payable_until(&a) <= now),
        // "Absent" proves the prepay never happened only once no call can still be creating it.
        Ok(TradeState::Absent) if a.updated_at > now - deadline => None,
        Ok(s) => Some(s),
        Err(e) => {
            tracing::debug!(error = %e, "active query failed");
            payments::journal_unanswered(state, a.channel, &a.out_trade_no, "query", &e).await;
            if matches!(e, ChannelError::Ambiguous(_) | ChannelError::Unreachable(_)) && query_count == UNKNOWN_ALERT_AFTER && a.status == AttemptStatus::Unknown {
                let _ = state.store.insert_abnormal("unresolved_unknown", a.id.as_str(), "the channel could not be queried", now).await;
            }
            None
        }
    };
    let mut status = a.status;
    if let Some(observed) = observed {
        match payments::apply(state, a.channel, &a.out_trade_no, observed, OutcomeSource::Query, None, None).await {
            Ok(OutcomeApplied::Applied { attempt, .. }) => status = attempt.status,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "applying a query answer failed"),
        }
    }
    let next = next_check(state, &a, status, query_count, now);
    if status == AttemptStatus::Unknown && query_count + 1 == UNKNOWN_ALERT_AFTER {
        let _ = state.store.insert_abnormal("unresolved_unknown", a.id.as_str(), "still unknown after the query schedule", now).await;
    }
    let _ = state.store.finish_attempt_check(&a.id, owner, next, now).await;
}

/// The latest moment the channel could still take a payment on this attempt's channel order
/// (stored at prepay; older rows: the credential's expiry; no credential ever issued: the longest
/// any channel's credential lives, counted from the attempt).
fn payable_until(a: &Attempt) -> Timestamp {
    a.payable_until.or(a.credential_expires_at).unwrap_or(a.created_at.plus_ms(LONGEST_CREDENTIAL_MS))
}

/// The longest any channel's credential lives (WeChat's code_url / prepay_id, an Alipay QR).
const LONGEST_CREDENTIAL_MS: i64 = {
    let (a, b) = (payonce_channels::alipay::QR_MAX_LIFE_MS, payonce_channels::wechatpay::CREDENTIAL_LIFE_MS);
    if a > b { a } else { b }
};

fn next_check(state: &AppState, a: &Attempt, status: AttemptStatus, n: usize, now: Timestamp) -> Option<Timestamp> {
    let grace = state.config.scaled(Duration::from_secs(60)).as_millis() as i64;
    match status {
        AttemptStatus::Succeeded | AttemptStatus::Failed => None,
        AttemptStatus::Closed => {
            // A payment can still land on a closed channel order — one in flight when the close
            // arrived, an unscanned Alipay QR that stays payable — and its notification can be
            // lost. So a closed attempt is watched, at growing intervals, until its credential
            // can no longer pay; whatever is found then is a late or duplicate payment.
            let until = payable_until(a).0 + grace;
            if now.0 >= until {
                return None;
            }
            let k = n + 1;
            let gap = state.config.query_offset(a.channel, k).saturating_sub(state.config.query_offset(a.channel, k - 1));
            let gap = gap.max(state.config.query_offset(a.channel, 0)).as_millis() as i64;
            Some(Timestamp((now.0 + gap).min(until)))
        }
        _ => {
            let mut k = n + 1;
            let mut next = a.created_at + state.config.query_offset(a.channel, k);
            while next <= now && k < 64 {
                k += 1;
                next = a.created_at + state.config.query_offset(a.channel, k);
            }
            Some(next)
        }
    }
}

/// Expiry with a final check: close every open channel order at the channel, then the order.
/// Orders are closed concurrently (each close is a channel round trip), and a full batch is
/// followed at once by the next, so a flash sale's expiries drain in seconds, not minutes.
async fn expire_orders(state: &AppState, owner: &str) {
    const CONCURRENT_CLOSES: usize = 32;
    for _ in 0..EXPIRY_BATCHES_PER_ROUND {
        let now = state.clock.now();
        let claimed = match state.store.claim_expired_orders(now, lease_ms(state), owner, EXPIRY_BATCH).await {
            Ok(c) => c,
            Err(e) => return tracing::warn!(error = %e, "claiming expired orders failed"),
        };
        let full = claimed.len() as i64 == EXPIRY_BATCH;
        let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(CONCURRENT_CLOSES));
        let mut set = tokio::task::JoinSet::new();
        for order in claimed {
            let (state, owner, permits) = (state.clone(), owner.to_owned(), permits.clone());
            set.spawn(async move {
                let _permit = permits.acquire_owned().await;
                expire_one(&state, &order).await;
                let _ = state.store.release_order(&order.id, &owner).await;
            });
        }
        while set.join_next().await.is_some() {}
        if !full {
            return;
        }
    }
}

/// Expired orders claimed at once, and how many such batches one round may take.
const EXPIRY_BATCH: i64 = 256;
const EXPIRY_BATCHES_PER_ROUND: usize = 8;

#[tracing::instrument(skip_all, fields(order_id = %order.id))]
async fn expire_one(state: &AppState, order: &payonce_store::Order) {
    for _ in 0..4 {
        let now = state.clock.now();
        match state.store.close_order(&order.id, payonce_core::order::ClosedBy::Expiry, now).await {
            Ok(CloseOrder::Closed(_)) => {
                metrics::counter!("payonce_orders_expired_total").increment(1);
                return;
            }
            Ok(CloseOrder::ActiveAttempt(a)) if a.status == AttemptStatus::Created => {
                // A prepay mid-call: wait for it (next round). One whose caller died (past the
                // call deadline) is `unknown` from now on and closed at the channel like any
                // other — exactly what a business close does; never waited on forever.
                let stale_before = now - state.config.call_deadline();
                if a.created_at >= stale_before {
                    return;
                }
                if let Err(e) = state.store.mark_stale_created(&a.id, stale_before, now).await {
                    return tracing::warn!(error = %e, "marking an orphaned intent unknown failed");
                }
            }
            Ok(CloseOrder::ActiveAttempt(a)) => {
                if let Err(e) = payments::retire(state, &a).await {
                    // The close did not go through: the lease lapses and a later round retries.
                    tracing::warn!(code = e.code(), "closing an expired order's channel order failed");
                    return;
                }
            }
            Ok(_) => return,
            Err(e) => return tracing::warn!(error = %e, "expiring an order failed"),
        }
    }
}

/// Makes the channel call of pending refunds, and settles processing and unknown ones by query.
async fn settle_refunds(state: &AppState, owner: &str) {
    let now = state.clock.now();
    let claimed = match state.store.claim_due_refunds(now, lease_ms(state), owner, BATCH).await {
        Ok(c) => c,
        Err(e) => return tracing::warn!(error = %e, "claiming refunds failed"),
    };
    let mut set = tokio::task::JoinSet::new();
    for r in claimed {
        let state = state.clone();
        set.spawn(async move { crate::refunding::settle_refund(&state, r).await });
    }
    while set.join_next().await.is_some() {}
}

/// The outbox: delivers due events, each under a lease.
async fn dispatch_events(state: &AppState, http: &reqwest::Client, owner: &str) {
    let lease = state.config.webhook_timeout.as_millis() as i64 * 3 + 5_000;
    let claimed = match state.store.claim_due_events(state.clock.now(), lease, owner, BATCH).await {
        Ok(c) => c,
        Err(e) => return tracing::warn!(error = %e, "claiming events failed"),
    };
    let mut set = tokio::task::JoinSet::new();
    for ev in claimed {
        let (state, http, owner) = (state.clone(), http.clone(), owner.to_owned());
        set.spawn(async move { crate::webhooks::deliver(&state, &http, &owner, ev).await });
    }
    while set.join_next().await.is_some() {}
}

/// The gauges that answer "is anything stuck?": open attempts by state and the age of the
/// oldest, the webhook backlog and its oldest event, the abnormal queue by kind and its oldest
/// item. Every label seen once is set on every reading (to 0 when its group is gone), so an
/// alert sees a queue drain.
async fn operator_gauges(state: &AppState) {
    let Ok(groups) = state.store.gauges().await else { return };
    let now = state.clock.now().0;
    let age = |oldest: Option<i64>| oldest.map_or(0.0, |t| ((now - t).max(0)) as f64 / 1000.0);
    let find = |what: &str, label: &str| groups.iter().find(|g| g.what == what && g.label == label);
    for status in ["created", "pending", "unknown"] {
        let g = find("attempt", status);
        metrics::gauge!("payonce_attempts_open", "state" => status).set(g.map_or(0, |g| g.count) as f64);
        metrics::gauge!("payonce_attempt_oldest_age_seconds", "state" => status).set(age(g.and_then(|g| g.oldest)));
    }
    let backlog = find("event", "pending");
    metrics::gauge!("payonce_webhook_backlog").set(backlog.map_or(0, |g| g.count) as f64);
    metrics::gauge!("payonce_webhook_oldest_pending_age_seconds").set(age(backlog.and_then(|g| g.oldest)));
    let abnormal: Vec<_> = groups.iter().filter(|g| g.what == "abnormal").collect();
    metrics::gauge!("payonce_abnormal_open").set(abnormal.iter().map(|g| g.count).sum::<i64>() as f64);
    metrics::gauge!("payonce_abnormal_oldest_age_seconds").set(age(abnormal.iter().filter_map(|g| g.oldest).min()));
    let mut seen = state.gauge_labels.lock().unwrap_or_else(|e| e.into_inner());
    for g in &abnormal {
        seen.insert(g.label.clone());
    }
    for kind in seen.iter() {
        let n = abnormal.iter().find(|g| &g.label == kind).map_or(0, |g| g.count);
        metrics::gauge!("payonce_abnormal_open_by_kind", "kind" => kind.clone()).set(n as f64);
    }
}

/// What a purge removed, in the log (silent when nothing was due).
fn log_purge(what: &str, result: Result<u64, payonce_store::StoreError>) {
    match result {
        Ok(0) => {}
        Ok(n) => tracing::info!(purged = n, "{what} purged"),
        Err(e) => tracing::warn!(error = %e, "purging {what} failed"),
    }
}

/// Keys older than the retention (≥ 24 h, API.md) are deleted, their replays ending there;
/// submission guards whose window has passed (they decide nothing: without this the table only
/// grows) and expired console sessions too. Personal data has a shelf life: the contents of
/// timeline messages past the retention are cleared, and the trace contexts with them.
async fn purge_expired_keys(state: &AppState) {
    let now = state.clock.now();
    log_purge("idempotency keys", state.store.idempotency_purge(now - state.config.idempotency_retention).await);
    log_purge("submission guards", state.store.purge_submission_guards(now).await);
    log_purge("channel message contents past their retention", state.store.clear_message_contents(now - state.config.message_retention).await);
    log_purge("old trace contexts", state.store.purge_trace_contexts(now - state.config.message_retention).await);
    log_purge("expired console sessions", state.store.purge_sessions(now).await);
}
