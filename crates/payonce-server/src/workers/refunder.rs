//! The refunder: makes the channel call of pending refunds (business refunds and the automatic
//! refunds of duplicate payments) and settles processing and unknown ones by query.

use super::{BATCH, lease_ms};
use crate::state::AppState;

/// Makes the channel call of pending refunds, and settles processing and unknown ones by query.
pub(super) async fn settle_refunds(state: &AppState, owner: &str) {
    let now = state.clock.now();
    let claimed = match state
        .store
        .claim_due_refunds(now, lease_ms(state), owner, BATCH)
        .await
    {
        Ok(c) => c,
        Err(e) => return tracing::warn!(error = %e, "claiming refunds failed"),
    };
    let mut set = tokio::task::JoinSet::new();
    for r in claimed {
        let state = state.clone();
        set.spawn(async move { crate::engine::refunding::settle_refund(&state, r).await });
    }
    while set.join_next().await.is_some() {}
}
