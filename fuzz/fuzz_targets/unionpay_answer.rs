//! UnionPay synchronous answers (raw `k=v&…`): parsing, and every reading of the fields.
#![no_main]
use libfuzzer_sys::fuzz_target;
use payonce_channels::unionpay;

fuzz_target!(|data: &[u8]| {
    if let Ok(fields) = unionpay::protocol::parse_answer(data) {
        let _ = unionpay::consume_state(&fields);
        let _ = unionpay::refund_answer_state(&fields);
        let _ = unionpay::refund_query_state(&fields);
        let _ = unionpay::protocol::sign_content(&fields);
        let _ = unionpay::protocol::digest(&fields);
    }
});
