//! The poller: active query, the answer to lost notifications — asks the channel about every
//! attempt no notification settled, on a schedule, and keeps watching closed attempts whose
//! credential can still pay.

use super::{BATCH, at, lease_ms};
use crate::engine::payments::{self, order_ref};
use crate::state::AppState;
use payonce_channels::{ChannelError, TradeState};
use payonce_core::Attempt;
use payonce_core::{AttemptStatus, Timestamp};
use payonce_store::{OutcomeApplied, OutcomeSource};
use std::time::Duration;

/// Queries of an unknown attempt after which a person is told.
const UNKNOWN_ALERT_AFTER: usize = 12;

/// Active query: the answer to lost notifications.
pub(super) async fn poll_attempts(state: &AppState, owner: &str) {
    let now = state.clock.now();
    let claimed = match state
        .store
        .claim_due_attempts(now, lease_ms(state), owner, BATCH)
        .await
    {
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
            let _ = state
                .store
                .finish_attempt_check(
                    &a.id,
                    owner,
                    Some(a.created_at + deadline + Duration::from_millis(1)),
                    now,
                )
                .await;
            return;
        }
        match state
            .store
            .mark_stale_created(&a.id, now - deadline, now)
            .await
        {
            Ok(Some(updated)) => a = updated,
            _ => return,
        }
    }
    let Ok(channel) = crate::engine::payments::connector_of(state, &a) else {
        let _ = state
            .store
            .finish_attempt_check(&a.id, owner, Some(at(now, state.config.backoff(6))), now)
            .await;
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
        // "No such order" is read by core's one rule: an unscanned QR / unsubmitted form is
        // nothing to record until it can no longer be paid, then closed (never failed); where
        // the channel creates its order at prepay, absence proves the prepay never happened
        // only once no call can still be creating it.
        Ok(s) => payonce_channels::settle_query_answer(
            a.channel,
            s,
            payments::payable_until(&a) <= now,
            a.updated_at > now - deadline,
        ),
        Err(e) => {
            tracing::debug!(error = %e, "active query failed");
            payments::journal_unanswered(state, a.channel, a.out_trade_no.as_str(), "query", &e)
                .await;
            if matches!(e, ChannelError::Ambiguous(_) | ChannelError::Unreachable(_))
                && query_count == UNKNOWN_ALERT_AFTER
                && a.status == AttemptStatus::Unknown
            {
                let _ = state
                    .store
                    .insert_abnormal(
                        "unresolved_unknown",
                        a.id.as_str(),
                        "the channel could not be queried",
                        now,
                    )
                    .await;
            }
            None
        }
    };
    let mut status = a.status;
    if let Some(observed) = observed {
        match payments::apply(
            state,
            a.channel,
            Some(&a.account),
            a.out_trade_no.as_str(),
            observed,
            OutcomeSource::Query,
            None,
            None,
        )
        .await
        {
            Ok(OutcomeApplied::Applied { attempt, .. }) => status = attempt.status,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "applying a query answer failed"),
        }
    }
    let next = next_check(state, &a, status, query_count, now);
    if status == AttemptStatus::Unknown && query_count + 1 == UNKNOWN_ALERT_AFTER {
        let _ = state
            .store
            .insert_abnormal(
                "unresolved_unknown",
                a.id.as_str(),
                "still unknown after the query schedule",
                now,
            )
            .await;
    }
    let _ = state
        .store
        .finish_attempt_check(&a.id, owner, next, now)
        .await;
}

fn next_check(
    state: &AppState,
    a: &Attempt,
    status: AttemptStatus,
    n: usize,
    now: Timestamp,
) -> Option<Timestamp> {
    let grace = state.config.scaled(Duration::from_secs(60)).as_millis() as i64;
    match status {
        AttemptStatus::Succeeded | AttemptStatus::Failed => None,
        AttemptStatus::Closed => {
            // A payment can still land on a closed channel order — one in flight when the close
            // arrived, an unscanned Alipay QR that stays payable — and its notification can be
            // lost. So a closed attempt is watched, at growing intervals, until its credential
            // can no longer pay; whatever is found then is a late or duplicate payment.
            let until = payments::payable_until(a).0 + grace;
            if now.0 >= until {
                return None;
            }
            let k = n + 1;
            let gap = state
                .config
                .query_offset(a.channel, k)
                .saturating_sub(state.config.query_offset(a.channel, k - 1));
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
