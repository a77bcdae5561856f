//! Alipay gateway answers: finding the raw `*_response` text, verifying, reading every code.
#![no_main]
use libfuzzer_sys::fuzz_target;
use payonce_channels::alipay;
use std::sync::OnceLock;

fn key() -> &'static payonce_channels::crypto::RsaVerifier {
    static KEY: OnceLock<payonce_channels::crypto::RsaVerifier> = OnceLock::new();
    KEY.get_or_init(|| payonce_channels::crypto::RsaSigner::generate().verifier())
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = alipay::protocol::raw_response(text, "alipay_trade_query_response");
    for method in ["alipay.trade.precreate", "alipay.trade.query", "alipay.trade.refund"] {
        let _ = alipay::verify_answer(text, method, key());
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = alipay::query_outcome(alipay::read_code(v.clone()));
        let _ = alipay::refund_outcome(alipay::read_code(v.clone()));
        let _ = alipay::refund_query_outcome(alipay::read_code(v.clone()));
        let _ = alipay::close_outcome(alipay::read_code(v.clone()));
        let _ = alipay::precreate_outcome(alipay::read_code(v));
    }
});
