//! Upkeep: the operator's gauges (is anything stuck?) and the purge of what has outlived its
//! retention.

use crate::state::AppState;

/// The gauges that answer "is anything stuck?": open attempts by state and the age of the
/// oldest, the webhook backlog and its oldest event, the abnormal queue by kind and its oldest
/// item. Every label seen once is set on every reading (to 0 when its group is gone), so an
/// alert sees a queue drain.
pub(super) async fn operator_gauges(state: &AppState) {
    let Ok(groups) = state.store.gauges().await else {
        return;
    };
    let now = state.clock.now().0;
    let age = |oldest: Option<i64>| oldest.map_or(0.0, |t| ((now - t).max(0)) as f64 / 1000.0);
    let find = |what: &str, label: &str| groups.iter().find(|g| g.what == what && g.label == label);
    for status in ["created", "pending", "unknown"] {
        let g = find("attempt", status);
        metrics::gauge!("payonce_attempts_open", "state" => status)
            .set(g.map_or(0, |g| g.count) as f64);
        metrics::gauge!("payonce_attempt_oldest_age_seconds", "state" => status)
            .set(age(g.and_then(|g| g.oldest)));
    }
    let backlog = find("event", "pending");
    metrics::gauge!("payonce_webhook_backlog").set(backlog.map_or(0, |g| g.count) as f64);
    metrics::gauge!("payonce_webhook_oldest_pending_age_seconds")
        .set(age(backlog.and_then(|g| g.oldest)));
    let abnormal: Vec<_> = groups.iter().filter(|g| g.what == "abnormal").collect();
    metrics::gauge!("payonce_abnormal_open")
        .set(abnormal.iter().map(|g| g.count).sum::<i64>() as f64);
    metrics::gauge!("payonce_abnormal_oldest_age_seconds")
        .set(age(abnormal.iter().filter_map(|g| g.oldest).min()));
    let mut seen = state.gauge_labels.lock().unwrap_or_else(|e| e.into_inner());
    for g in &abnormal {
        seen.insert(g.label.clone());
    }
    for kind in seen.iter() {
        let n = abnormal
            .iter()
            .find(|g| &g.label == kind)
            .map_or(0, |g| g.count);
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
pub(super) async fn purge_expired_keys(state: &AppState) {
    let now = state.clock.now();
    log_purge(
        "idempotency keys",
        state
            .store
            .idempotency_purge(now - state.config.idempotency_retention)
            .await,
    );
    log_purge(
        "submission guards",
        state.store.purge_submission_guards(now).await,
    );
    log_purge(
        "channel message contents past their retention",
        state
            .store
            .clear_message_contents(now - state.config.message_retention)
            .await,
    );
    log_purge(
        "old trace contexts",
        state
            .store
            .purge_trace_contexts(now - state.config.message_retention)
            .await,
    );
    log_purge(
        "expired console sessions",
        state.store.purge_sessions(now).await,
    );
}
