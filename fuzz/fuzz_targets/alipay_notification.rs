//! Alipay notifications (url-encoded forms): signature check and the field rules.
#![no_main]
use libfuzzer_sys::fuzz_target;
use payonce_channels::alipay;
use std::sync::OnceLock;

fn key() -> &'static payonce_channels::crypto::RsaVerifier {
    static KEY: OnceLock<payonce_channels::crypto::RsaVerifier> = OnceLock::new();
    KEY.get_or_init(|| payonce_channels::crypto::RsaSigner::generate().verifier())
}

fuzz_target!(|data: &[u8]| {
    let params = payonce_channels::form::parse(data);
    let _ = alipay::protocol::verify_notification(key(), &params);
    let _ = alipay::read_notification(&params, "2021000000000001");
    let _ = payonce_channels::form::encode(&params);
});
