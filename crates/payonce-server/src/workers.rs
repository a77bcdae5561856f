//! Background work that keeps the database tidy. (Active queries, expiry and webhook dispatch
//! join here as they are built.)

use crate::state::AppState;
use std::time::Duration;
use tokio::sync::watch;

pub async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut purge = tokio::time::interval(state.config.scaled(Duration::from_secs(3600)));
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = purge.tick() => purge_idempotency_keys(&state).await,
        }
    }
}

/// Keys older than the retention (≥ 24 h, API.md) are deleted; their replays end there.
async fn purge_idempotency_keys(state: &AppState) {
    let cutoff = state.clock.now().plus_ms(-(state.config.idempotency_retention.as_millis() as i64));
    match state.store.idempotency_purge(cutoff).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(purged = n, "idempotency keys purged"),
        Err(e) => tracing::warn!(error = %e, "idempotency purge failed"),
    }
}
