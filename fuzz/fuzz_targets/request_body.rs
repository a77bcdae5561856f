//! The API's JSON body reader: strict JSON (a key given twice is an error).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = payonce_core::json::strict(data) {
        // What was accepted is what serde_json itself reads (keys once each).
        assert_eq!(serde_json::from_slice::<serde_json::Value>(data).ok(), Some(v));
    }
});
