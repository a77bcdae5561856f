//! The expirer: an expired order is closed at the channel first (every open channel order),
//! then locally; a payment that lands meanwhile wins.

use super::lease_ms;
use crate::engine::payments;
use crate::state::AppState;
use payonce_core::AttemptStatus;
use payonce_store::CloseOrder;

/// Expiry with a final check: close every open channel order at the channel, then the order.
/// Orders are closed concurrently (each close is a channel round trip), and a full batch is
/// followed at once by the next, so a flash sale's expiries drain in seconds, not minutes.
pub(super) async fn expire_orders(state: &AppState, owner: &str) {
    const CONCURRENT_CLOSES: usize = 32;
    for _ in 0..EXPIRY_BATCHES_PER_ROUND {
        let now = state.clock.now();
        let claimed = match state
            .store
            .claim_expired_orders(now, lease_ms(state), owner, EXPIRY_BATCH)
            .await
        {
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
async fn expire_one(state: &AppState, order: &payonce_core::Order) {
    for _ in 0..4 {
        let now = state.clock.now();
        match state
            .store
            .close_order(&order.id, payonce_core::order::ClosedBy::Expiry, now)
            .await
        {
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
                if let Err(e) = state
                    .store
                    .mark_stale_created(&a.id, stale_before, now)
                    .await
                {
                    return tracing::warn!(error = %e, "marking an orphaned intent unknown failed");
                }
            }
            Ok(CloseOrder::ActiveAttempt(a)) => {
                if let Err(e) = payments::retire(state, &a).await {
                    // The close did not go through: the lease lapses and a later round retries.
                    tracing::warn!(
                        code = e.code(),
                        "closing an expired order's channel order failed"
                    );
                    return;
                }
            }
            Ok(_) => return,
            Err(e) => return tracing::warn!(error = %e, "expiring an order failed"),
        }
    }
}
