//! Alipay (OpenAPI gateway): RSA2 over sorted `k=v&…`, response verification over the exact raw
//! `*_response` JSON text, precreate/query/close/refund/refund query, the form-encoded async
//! notification answered with the literal `success`.

mod answers;
pub mod bill;
mod client;
pub mod protocol;

pub use answers::{
    close_outcome, precreate_outcome, query_outcome, read_code, read_notification, refund_outcome,
    refund_query_outcome, verify_answer,
};
pub use client::{
    AlipayClient, AlipayKeys, IsvGrant, QR_MAX_LIFE_MS, QrLifetimes, alipay_text,
    precreate_lifetimes,
};
