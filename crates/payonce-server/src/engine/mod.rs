//! The engine: what happens to money. Payments (prepay, channel facts applied through one
//! door, close), refunds, reconciliation against the channels' bills, and the outbox that tells
//! the businesses. Every decision is core's (`payonce_core::decide`); the engine gathers the
//! facts, calls the channels outside any transaction, and has the store write the plan.

pub mod accounts;
pub mod apps;
pub mod payments;
pub mod reconcile;
pub mod refunding;
pub mod webhooks;
