//! The dispatcher: the outbox's due events, each delivered under a lease (webhook or broker).

use super::BATCH;
use crate::state::AppState;

/// The outbox: delivers due events, each under a lease.
pub(super) async fn dispatch_events(state: &AppState, http: &reqwest::Client, owner: &str) {
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
