//! The API's JSON body reader: strict JSON (a key given twice is an error) into an object.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = payonce_server::http::body::strict_json(data);
    let _ = payonce_server::http::body::parse_object(data);
});
