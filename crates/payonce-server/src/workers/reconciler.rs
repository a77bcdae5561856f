//! The reconciler: yesterday's bill of each channel account, fetched and reconciled at its hour.

use crate::state::AppState;
use std::time::Duration;

/// Reconciles yesterday's bill of each channel in `reconcile_at` once its time of day (Beijing)
/// has come, and again, ten minutes apart, until a run completes (the channel may not have the
/// bill yet). Leased: among many instances one runs it.
pub(super) async fn scheduled_reconciliations(state: &AppState, owner: &str) {
    if state.config.reconcile_at.is_empty() {
        return;
    }
    let now = state.clock.now();
    let today = crate::engine::reconcile::beijing_date(now);
    let Some((midnight, _)) = crate::engine::reconcile::beijing_day(&today) else {
        return;
    };
    let yesterday = crate::engine::reconcile::beijing_yesterday(now);
    let retry_after = state.config.scaled(Duration::from_secs(600)).as_millis() as i64;
    let due = state
        .config
        .reconcile_at
        .iter()
        .filter(|(_, at_minute)| now.0 >= midnight.0 + i64::from(**at_minute) * 60_000)
        .flat_map(|(&channel, _)| {
            state
                .channels
                .accounts(channel)
                .into_iter()
                // A service provider has no bill of its own: each sub-merchant has one.
                .filter(|a| a.takes_payments())
                .map(move |a| (channel, a.name.clone()))
        })
        .collect::<Vec<_>>();
    for (channel, account) in due {
        match state
            .store
            .reconciliation_for(channel, &account, &yesterday)
            .await
        {
            Ok(Some(run)) if run.status == "completed" => continue,
            Ok(Some(run))
                if run.finished_at.is_some_and(|t| now.0 - t < retry_after)
                    || run.status == "running" && now.0 - run.started_at < retry_after =>
            {
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "reading reconciliation runs failed");
                continue;
            }
        }
        match crate::engine::reconcile::reconcile(
            state,
            owner,
            channel.as_str(),
            Some(&account),
            &yesterday,
            false,
        )
        .await
        {
            Ok(r) => {
                tracing::info!(channel = %r.channel, account = %r.account, bill_date = %r.bill_date, status = %r.status, person = r.needs_a_person(), "scheduled reconciliation")
            }
            Err(crate::engine::reconcile::ReconcileError::Busy(..)) => {}
            Err(e) => tracing::warn!(error = %e, "scheduled reconciliation failed"),
        }
    }
}
