//! WeChat Pay API v3: `WECHATPAY2-SHA256-RSA2048` request signing, response and notification
//! verification against the platform certificate or the newer platform public key
//! (`PUB_KEY_ID_…`), AEAD_AES_256_GCM notification resources, native and JSAPI prepay, query,
//! close, refund and refund query. The simulator imports `protocol` to play the other side.

mod answers;
pub mod bill;
mod client;
pub mod protocol;
mod trust;

pub use answers::{
    PrepayCode, close_outcome, is_definitive, is_retryable, prepay_outcome, query_outcome,
    refund_outcome, refund_query_outcome, refund_state_of, refund_status_checked,
    trade_state_checked, trade_state_of,
};
pub use client::{CREDENTIAL_LIFE_MS, SubMerchant, WechatpayClient, WechatpayKeys};
