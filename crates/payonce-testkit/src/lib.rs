//! Test support shared by the test suites, `payonce demo`, `bench` and `chaos`: throwaway
//! databases on either store, an app and a simulator spawned on random ports, and the one
//! invariant checker every scenario ends with.

pub mod app;
pub mod chaos;
pub mod db;
pub mod forge;
pub mod invariants;
pub mod process;
pub mod proxy;

pub use app::{AppOptions, TestApp, spawn_app, spawn_app_with};
pub use db::{Backend, TestDb};

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
