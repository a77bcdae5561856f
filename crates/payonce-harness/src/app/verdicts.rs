//! What the invariant checker says of a running app: safety and liveness, judged once the
//! channels and workers have had time to settle.

use super::TestApp;
use std::time::Duration;

impl TestApp {
    /// Every invariant of DESIGN.md that the data can show, once settled (up to 15 s).
    pub async fn violations(&self) -> Vec<String> {
        self.settled_violations(Duration::from_secs(15)).await
    }

    /// Safety (I1–I4, against the simulator's ledger) and liveness (I7) judged together, again
    /// and again, until both hold or `settle` has passed; what is left then is the verdict.
    /// Judged at once, a payment made a moment ago whose notification is still on its way (or
    /// waits for a retry after a fault) would count as lost; a real violation stays.
    pub async fn settled_violations(&self, settle: Duration) -> Vec<String> {
        let mut waiting = self.waiting(settle);
        loop {
            let mut v = crate::invariants::check(self.store.as_ref(), &self.ledger().await).await;
            v.extend(
                crate::invariants::liveness(
                    self.store.as_ref(),
                    self.state.clock.now(),
                    self.liveness_grace(),
                )
                .await,
            );
            // A final violation (see `invariants::is_final`) is the verdict already.
            if v.is_empty()
                || v.iter().any(|l| crate::invariants::is_final(l))
                || !waiting.pass(Duration::from_millis(100)).await
            {
                return v;
            }
        }
    }

    /// I7 alone, after letting the workers catch up (up to 15 s).
    pub async fn liveness_violations(&self) -> Vec<String> {
        let mut waiting = self.waiting(Duration::from_secs(15));
        loop {
            let stuck = crate::invariants::liveness(
                self.store.as_ref(),
                self.state.clock.now(),
                self.liveness_grace(),
            )
            .await;
            if stuck.is_empty() || !waiting.pass(Duration::from_millis(100)).await {
                return stuck;
            }
        }
    }

    /// How late past its due time a worker may be: a minute of schedule time, plus 5 s.
    fn liveness_grace(&self) -> i64 {
        self.state
            .config
            .scaled(Duration::from_secs(60))
            .as_millis() as i64
            + 5_000
    }
}
