//! Crash safety: real `payonce serve` processes SIGKILLed at random moments (≥ 30 times) under
//! a mixed load of prepays, payments, closes and (lost, duplicated, reordered) notifications,
//! restarted, and left to settle: every invariant must hold against the simulator's ledger.
//! Then three instances on one PostgreSQL, one frozen with SIGSTOP past its leases.

use payonce_testkit::chaos::{ChaosConfig, run};
use payonce_testkit::{Backend, TestDb};
use std::path::PathBuf;
use std::time::Duration;

fn config(db: &TestDb, instances: usize, kills: usize, freeze: bool) -> ChaosConfig {
    let kills = std::env::var("PAYONCE_CHAOS_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(kills);
    ChaosConfig {
        exe: PathBuf::from(env!("CARGO_BIN_EXE_payonce")),
        database_url: db.url.clone(),
        instances,
        kills,
        freeze,
        time_scale: 100.0,
        settle: Duration::from_secs(100),
    }
}

async fn crash(backend: Backend, instances: usize, kills: usize, freeze: bool) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let report = run(config(&db, instances, kills, freeze))
        .await
        .expect("chaos run");
    eprintln!("{backend:?} ×{instances}: {report:?}");
    assert!(report.kills >= kills);
    assert!(
        report.payments > 0 && report.charges > 0,
        "the load paid something"
    );
    assert!(
        report.violations.is_empty(),
        "invariants violated after {} kills:\n{}",
        report.kills,
        report.violations.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_load_sqlite() {
    crash(Backend::Sqlite, 1, 30, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_load_postgres() {
    crash(Backend::Postgres, 1, 30, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_sigkill_and_sigstop_postgres() {
    crash(Backend::Postgres, 3, 30, true).await
}
