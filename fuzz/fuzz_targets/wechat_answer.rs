//! WeChat Pay answers and notification resources: every reading of a body, by status.
#![no_main]
use libfuzzer_sys::fuzz_target;
use payonce_channels::wechatpay;

fuzz_target!(|data: &[u8]| {
    for status in [200u16, 204, 400, 403, 404, 429, 500] {
        let _ = wechatpay::prepay_outcome(status, data);
        let _ = wechatpay::query_outcome(status, data, "1900000001", "0190f1e2d3c4b5a69788796a5b4c3d2e");
        let _ = wechatpay::close_outcome(status, data);
        let _ = wechatpay::refund_outcome(status, data);
        let _ = wechatpay::refund_query_outcome(status, data);
    }
    let _ = wechatpay::protocol::decrypt_certificates(b"0123456789abcdef0123456789abcdef", data);
    let _ = wechatpay::protocol::decrypt_resource(b"0123456789abcdef0123456789abcdef", "0123456789ab", "transaction", &String::from_utf8_lossy(data));
});
