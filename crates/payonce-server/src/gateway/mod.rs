//! The gateway: who may ask, how often and how much at once. Authentication, failure budgets
//! and rate limits, `Idempotency-Key`, the per-order turns a prepay waits in (in-process and,
//! with Redis, across instances), and the connection-level defences (whole-request deadlines,
//! eviction at the connection cap).

pub mod accelerator;
pub mod auth;
pub mod body_limit;
pub mod connections;
pub mod idempotency;
pub mod ratelimit;
pub mod waiting;
