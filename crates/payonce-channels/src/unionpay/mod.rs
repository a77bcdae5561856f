//! UnionPay online payment (UPACP 5.1.0): form messages signed with `signMethod=01` (SHA-256
//! hex digest of the sorted `k=v&…` string, then SHA256withRSA), the front-end consume form as
//! the payer's credential, `queryTrans` for queries, and the `backUrl` notification whose
//! `signPubKeyCert` must chain to the configured UnionPay root before it is trusted.

pub mod bill;
mod client;
pub mod protocol;

pub use client::{
    UnionpayClient, UnionpayKeys, close_from_query, consume_state, read_notification,
    refund_answer_state, refund_query_state, verify_unionpay_message,
};
