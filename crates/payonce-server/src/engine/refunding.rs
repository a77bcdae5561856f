//! The refund engine: one step of one refund — make the channel call (under the refund's own
//! number, with call data stored before the first call), or query it — and what a channel's
//! refund state means for the refund row. The refund worker, the refund endpoint and refund
//! notifications all go through here.

use crate::engine::payments::order_ref;
use crate::state::AppState;
use payonce_channels::{ChannelError, RefundRef, RefundRequest, RefundState};
use payonce_core::{Refund, RefundKind, RefundResult};
use payonce_core::{RefundStatus, Timestamp};

/// How many "not on record yet" answers (UnionPay `34`) a sent refund gets before a person is
/// asked to look (reconciliation settles it otherwise). Querying goes on at the slow pace.
const REFUND_NOT_FOUND_ALERT_AFTER: i64 = 8;
/// How many unknown / absent rounds a refund gets before a person is asked to look.
const REFUND_UNRESOLVED_ALERT_AFTER: i64 = 12;

/// One step for one refund: ask for it (if the channel has not been asked), or query it.
pub async fn settle_refund(state: &AppState, r: Refund) -> Option<Refund> {
    let attempt = state.store.attempt(&r.attempt_id).await.ok()??;
    // The refund goes to the account that took the payment.
    let channel = crate::engine::payments::connector_of(state, &attempt)
        .ok()?
        .clone();
    let now = state.clock.now();
    let again = now + state.config.backoff(2);
    let mut r = r;
    if !r.requested
        && r.channel_data.is_none()
        && let Some(data) = channel.refund_call_data(now)
    {
        // Stored BEFORE the first call: a call whose answer is lost, and every later query,
        // name this same refund transaction (UnionPay's txnTime).
        match state.store.prepare_refund_call(&r.id, &data, now).await {
            Ok(Some(stored)) => r = stored,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "storing a refund's call data failed");
                return None;
            }
        }
    }
    // What the channel answered, in a few words, for the order timeline.
    use crate::engine::payments::no_answer;
    let source = if r.requested {
        "refund_query"
    } else {
        "refund_call"
    };
    let (result, data, observed) = if !r.requested {
        let total = attempt.amount;
        let req = RefundRequest {
            order: order_ref(&attempt),
            channel_trade_no: attempt.channel_trade_no.clone(),
            out_refund_no: r.out_refund_no.to_string(),
            amount: r.amount,
            total,
            reason: r.reason.clone(),
            notify_url: crate::engine::payments::notify_url(
                state,
                attempt.channel,
                &attempt.account,
            ),
            channel_data: r.channel_data.clone(),
        };
        match channel.refund(&req).await {
            Ok((s, data)) => (refund_result(s.clone(), again), data, format!("{s:?}")),
            // Nothing left this machine: ask again later, under the same number.
            Err(e @ ChannelError::Unreachable(_)) => (
                RefundResult::Absent {
                    next_query_at: again,
                },
                None,
                no_answer(&e),
            ),
            Err(e @ ChannelError::Ambiguous(_)) => (
                RefundResult::Unknown {
                    next_query_at: again,
                },
                None,
                no_answer(&e),
            ),
            Err(ChannelError::Refused { code, message }) => (
                RefundResult::Failed {
                    reason: format!("{code}: {message}"),
                },
                None,
                format!("refused ({code})"),
            ),
        }
    } else {
        let q = RefundRef {
            order: order_ref(&attempt),
            out_refund_no: r.out_refund_no.to_string(),
            channel_data: r.channel_data.clone(),
        };
        match channel.refund_query(&q).await {
            Ok(RefundState::Absent) => (
                RefundResult::Absent { next_query_at: now },
                None,
                "Absent".to_owned(),
            ),
            Ok(RefundState::NotFoundYet) => {
                if r.query_count + 1 == REFUND_NOT_FOUND_ALERT_AFTER {
                    let detail = "the channel still has no record of a refund that was sent; reconciliation or a person must settle it";
                    let _ = state
                        .store
                        .insert_abnormal("refund_not_found", r.id.as_str(), detail, now)
                        .await;
                }
                (
                    RefundResult::NotFoundYet {
                        next_query_at: now + state.config.backoff(r.query_count.max(0) as usize),
                    },
                    None,
                    "NotFoundYet".to_owned(),
                )
            }
            Ok(s) => (refund_result(s.clone(), again), None, format!("{s:?}")),
            Err(e) => (
                RefundResult::Unknown {
                    next_query_at: again,
                },
                None,
                no_answer(&e),
            ),
        }
    };
    if matches!(
        result,
        RefundResult::Unknown { .. } | RefundResult::Absent { .. }
    ) && r.query_count + 1 == REFUND_UNRESOLVED_ALERT_AFTER
    {
        // Liveness: a refund the channel keeps not settling is put in front of a person (and
        // reconciliation) instead of being retried silently forever.
        let _ = state
            .store
            .insert_abnormal(
                "refund_unresolved",
                r.id.as_str(),
                "the channel has not settled this refund after many tries",
                now,
            )
            .await;
    }
    let recorded = state
        .store
        .record_refund(&r.id, &result, data.as_deref(), state.clock.now())
        .await;
    match recorded {
        Ok(Some(updated)) => {
            let verdict = format!("refund {}", updated.status.as_str());
            crate::engine::payments::record(
                state,
                payonce_store::ChannelMessage::new(
                    r.channel,
                    r.out_refund_no.as_str(),
                    source,
                    observed,
                    verdict,
                    None,
                    state.clock.now(),
                ),
            )
            .await;
            if updated.status == RefundStatus::Succeeded && r.status != RefundStatus::Succeeded {
                metrics::counter!("payonce_refunds_total", "kind" => r.kind.as_str(), "outcome" => "succeeded").increment(1);
                if r.kind == RefundKind::Duplicate {
                    metrics::counter!("payonce_duplicate_refunds_total").increment(1);
                }
            }
            Some(updated)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "recording a refund failed");
            None
        }
    }
}

/// What a channel's refund state means for the refund row (`again`: when to look next).
pub fn refund_result(s: RefundState, again: Timestamp) -> RefundResult {
    match s {
        RefundState::Succeeded => RefundResult::Succeeded,
        RefundState::Processing => RefundResult::Processing {
            next_query_at: again,
        },
        RefundState::Abnormal => RefundResult::Abnormal {
            next_query_at: again,
        },
        RefundState::Failed(reason) => RefundResult::Failed { reason },
        RefundState::Absent => RefundResult::Absent {
            next_query_at: again,
        },
        RefundState::NotFoundYet => RefundResult::NotFoundYet {
            next_query_at: again,
        },
    }
}
