//! The isolation invariant (DESIGN.md I9) has a judge worth having: against an engine that
//! records an app's bound account on its attempts but sends the calls through the channel's
//! default account, the seeded runner reports I9 — a channel order at one merchant, its attempt
//! naming another — within the first seeds. (Its own binary: the switch is process-wide.)

use payonce_harness::scenario::{Scenario, run_settling};
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_engine_that_misroutes_accounts_is_caught_as_i9() {
    payonce_core::decide::fault_injection::misroute_accounts(true);
    // Every seed binds WeChat Pay and Alipay to a non-default account (m2, or a provider's
    // sub-merchant on odd seeds): any of them that pays through one of those channels is
    // misrouted. Eight at a time, as `payonce chaos` runs them.
    let mut batch = tokio::task::JoinSet::new();
    for seed in 1..=16u64 {
        batch.spawn(async move {
            let s = Scenario::generate(seed);
            (seed, run_settling(&s, SETTLE).await)
        });
    }
    let verdicts = batch.join_all().await;
    let caught: Vec<_> = verdicts
        .iter()
        .filter(|(_, v)| v.violations.iter().any(|l| l.starts_with("I9")))
        .collect();
    assert!(
        !caught.is_empty(),
        "16 seeds did not catch an engine that misroutes accounts: {:?}",
        verdicts
            .iter()
            .map(|(s, v)| (s, &v.violations))
            .collect::<Vec<_>>()
    );
    let (seed, v) = caught[0];
    eprintln!(
        "seed {seed} caught the misrouting engine: {:?}",
        v.violations
    );
}
