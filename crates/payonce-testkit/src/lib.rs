//! Test support, a dev-dependency only: notifications forged with the simulator's keys (and
//! hostile variants), a TCP proxy that cuts connections, and `store_tests!`. The rest —
//! spawned apps, scratch databases, serve processes, the invariant checker — is
//! `payonce-harness` (shipped in the binary for demo, bench and chaos), re-exported here.

pub mod forge;
pub mod pg;
pub mod proxy;

pub use payonce_harness::{AppOptions, Backend, TestApp, TestDb, spawn_app, spawn_app_with};
pub use payonce_harness::{app, chaos, db, invariants, process};

/// A clock that reads noon in Beijing today and runs on (`AppOptions::clock`), and today's date
/// there: bill days end at Beijing midnight (UnionPay's at 23:00), so a test that pays and then
/// reconciles "today" must not depend on the hour the suite happens to run.
pub fn beijing_noon() -> (std::sync::Arc<dyn payonce_core::Clock>, String) {
    use payonce_core::Clock;
    let today = payonce_server::engine::reconcile::beijing_date(payonce_core::SystemClock.now());
    let (midnight, _) =
        payonce_server::engine::reconcile::beijing_day(&today).expect("a date just formatted");
    (
        std::sync::Arc::new(payonce_core::ShiftedClock::starting_at(
            midnight.0 + 12 * 3_600_000,
        )),
        today,
    )
}

/// Runs a scenario once per store: `store_tests!(name, …)` expands to
/// `sqlite::name` and `postgres::name` test functions calling `name(Backend)`.
#[macro_export]
macro_rules! store_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::Backend::Postgres).await
                }
            )*
        }
    };
}
