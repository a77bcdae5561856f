//! The seeded scenario runner is a judge worth having: against a deliberately broken engine
//! (duplicate payments recorded but never refunded) it finds a failing seed within the first
//! 500, and shrinks it to a smaller scenario that still fails. (Its own binary: the switch is
//! process-wide.) The correct engine's run over 200 seeds is in `scripts/test`.

use payonce_harness::scenario::{Scenario, run_settling, shrink};
use std::time::Duration;

/// Long enough for an unrefunded duplicate to be the verdict (refunds come within a second at
/// ×100), short of the full settle window a correct run may need: a failing run waits all of it.
const SETTLE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_engine_is_caught_within_500_seeds_and_shrunk() {
    payonce_core::decide::fault_injection::skip_duplicate_refund(true);
    // Seeds run eight at a time, as `payonce chaos` runs them (each mostly waits on its
    // simulated channels); the verdict is still the lowest failing seed, as if they had run one
    // by one.
    const AT_ONCE: u64 = 8;
    for first in (1..=500).step_by(AT_ONCE as usize) {
        let mut batch = tokio::task::JoinSet::new();
        for seed in first..(first + AT_ONCE).min(501) {
            batch.spawn(async move {
                let s = Scenario::generate(seed);
                let v = run_settling(&s, SETTLE).await;
                (seed, s, v)
            });
        }
        let mut failing: Vec<_> = batch
            .join_all()
            .await
            .into_iter()
            .filter(|(_, _, v)| !v.violations.is_empty())
            .collect();
        failing.sort_by_key(|(seed, _, _)| *seed);
        let Some((seed, s, v)) = failing.into_iter().next() else {
            continue;
        };
        eprintln!("seed {seed} caught the broken engine: {:?}", v.violations);
        assert!(
            v.violations
                .iter()
                .any(|l| l.starts_with("I1") || l.starts_with("I4")),
            "{:?}",
            v.violations
        );
        let small = shrink(&s).await;
        eprintln!("shrunk to: {}", small.summary());
        assert!(small.steps() <= s.steps() && small.orders.len() <= s.orders.len());
        assert!(
            !run_settling(&small, SETTLE).await.violations.is_empty(),
            "the shrunk scenario still fails"
        );
        return;
    }
    panic!("500 seeds did not catch an engine that never refunds a duplicate payment");
}
