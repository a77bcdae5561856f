//! The API suite: every scenario runs on SQLite and on PostgreSQL (`store_tests!`), against a
//! real server on a random port and the channel simulator as ground truth.

mod accounts;
mod attack_suite;
mod attacks;
mod attacks_gateway;
mod bad_input;
mod channel_truth;
mod channels;
mod checkout;
mod console;
mod coupons;
mod faults;
mod gateway;
mod idempotency;
mod liveness;
mod notify;
mod openapi;
mod orders;
mod prepay;
mod reconciliation;
mod recovery;
mod request_ids;
mod statements;
mod submission;
mod unionpay;
mod virtual_time;
mod webhooks;

use payonce_testkit::{Backend, TestApp};

/// Spawns the app or, when the backend is unavailable off CI, returns `None` (already logged).
pub async fn app(backend: Backend) -> Option<TestApp> {
    payonce_testkit::spawn_app(backend).await
}

#[track_caller]
pub fn assert_invariants(v: Vec<String>) {
    assert!(v.is_empty(), "invariant violations:\n{}", v.join("\n"));
}
