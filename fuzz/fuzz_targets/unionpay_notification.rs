//! UnionPay `backUrl` notifications (url-encoded forms): the field checks and their reading.
#![no_main]
use libfuzzer_sys::fuzz_target;
use payonce_channels::unionpay;

fuzz_target!(|data: &[u8]| {
    let fields = payonce_channels::form::parse(data);
    let _ = unionpay::read_notification(&fields);
    if let Some(pem) = unionpay::protocol::get(&fields, "signPubKeyCert") {
        let _ = payonce_channels::crypto::Certificate::from_pem(pem);
    }
});
