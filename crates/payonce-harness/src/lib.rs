//! What `payonce demo`, `bench`, `chaos` and `storm` run on, and what the test suites build on
//! (through `payonce-testkit`): scratch databases on either store, an app and a simulator
//! spawned on random ports, `serve` processes, and the one invariant checker every scenario
//! ends with. Nothing here forges a channel's message: that is `payonce-testkit`, a
//! dev-dependency only.

pub mod app;
pub mod chaos;
pub mod db;
pub mod invariants;
pub mod process;
pub mod scenario;
pub mod scratch;

pub use app::{AppOptions, TestApp, spawn_app, spawn_app_with};
pub use db::{Backend, TestDb};
