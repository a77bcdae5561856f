//! The dispatcher: the outbox's due events, each delivered under a lease (webhook or broker),
//! fairly between apps.
//!
//! One app's dead receiver must not delay another's events. So events are claimed app by app
//! (the longest-waiting apps first, a share of the round each), no app has more than
//! `PER_APP` deliveries in flight in this process, and deliveries run on their own: a round
//! starts them and returns, and the next round claims again while slow ones are still waiting
//! on their receivers (a batch-wide wait once held every app behind one app's 200 hanging
//! webhooks for 30 s).

use super::BATCH;
use crate::state::AppState;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Deliveries one app may have in flight in one process: enough for a healthy receiver to
/// drain a backlog, few enough that a hanging one holds only this many connections and leases.
const PER_APP: usize = 8;
/// Deliveries in flight in one process, all apps together: bounds connections and tasks.
const MAX_IN_FLIGHT: usize = 256;

/// The outbox loop's state across rounds: what is in flight, per app.
#[derive(Default)]
pub(super) struct Dispatcher {
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
    tasks: Mutex<tokio::task::JoinSet<()>>,
}

/// Counts one delivery out of its app's in-flight number when the delivery ends, however it
/// ends (done, panicked, aborted at shutdown).
struct InFlight {
    counts: Arc<Mutex<HashMap<String, usize>>>,
    app: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.app) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.app);
            }
        }
    }
}

impl Dispatcher {
    /// One round: claims what the caps leave room for, app by app, starts each delivery on its
    /// own task, and returns without waiting for them. How many it started.
    pub(super) async fn round(
        &self,
        state: &AppState,
        http: &reqwest::Client,
        owner: &str,
    ) -> usize {
        self.reap();
        let busy = self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let room = MAX_IN_FLIGHT
            .saturating_sub(busy.values().sum())
            .min(BATCH as usize);
        if room == 0 {
            return 0;
        }
        let now = state.clock.now();
        // Apps at their cap are listed too (they may be the longest waiting): ask for enough
        // that `room` apps with room are among them.
        let full = busy.values().filter(|n| **n >= PER_APP).count();
        let apps = match state
            .store
            .apps_with_due_events(now, (full + room) as i64)
            .await
        {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "listing apps with due events failed");
                return 0;
            }
        };
        let apps: Vec<(String, usize)> = apps
            .into_iter()
            .filter_map(|a| {
                let free = PER_APP.saturating_sub(busy.get(&a).copied().unwrap_or(0));
                (free > 0).then_some((a, free))
            })
            .collect();
        if apps.is_empty() {
            return 0;
        }
        // An equal share of the round per app (at least one), so the first apps listed cannot
        // take all of it; what is left after the list waits for the next round.
        let share = room.div_ceil(apps.len()).max(1);
        let lease = state.config.webhook_timeout.as_millis() as i64 * 3 + 5_000;
        let mut left = room;
        let mut started = 0;
        for (app, free) in apps {
            if left == 0 {
                break;
            }
            let want = share.min(free).min(left);
            let claimed = match state
                .store
                .claim_due_events(&app, now, lease, owner, want as i64)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, app_id = %app, "claiming events failed");
                    continue;
                }
            };
            left -= claimed.len();
            started += claimed.len();
            if claimed.is_empty() {
                continue;
            }
            *self
                .in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(app.clone())
                .or_default() += claimed.len();
            let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
            for ev in claimed {
                let (state, http, owner) = (state.clone(), http.clone(), owner.to_owned());
                let guard = InFlight {
                    counts: self.in_flight.clone(),
                    app: app.clone(),
                };
                tasks.spawn(async move {
                    let _guard = guard;
                    crate::engine::webhooks::deliver(&state, &http, &owner, ev).await
                });
            }
        }
        started
    }

    /// Collects deliveries that ended; a panic in one is logged (its lease lapses and another
    /// round retries the event).
    fn reap(&self) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(done) = tasks.try_join_next() {
            if let Err(e) = done
                && e.is_panic()
            {
                tracing::error!(error = %e, "a delivery panicked");
            }
        }
    }

    /// Waits for every delivery in flight (at shutdown, and in `run_round`). Each is bounded by
    /// the webhook timeout or the broker's.
    pub(super) async fn finish(&self) {
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        while tasks.join_next().await.is_some() {}
    }
}

/// Delivers every due event now and waits for the deliveries: `run_round`'s outbox step (tests
/// with a manual clock expect one round to settle what is due).
pub(super) async fn dispatch_due_events(state: &AppState, http: &reqwest::Client, owner: &str) {
    let d = Dispatcher::default();
    // Rounds until nothing is due; a failed delivery is due again only later, by the clock.
    for _ in 0..1000 {
        let started = d.round(state, http, owner).await;
        d.finish().await;
        if started == 0 {
            break;
        }
    }
}
