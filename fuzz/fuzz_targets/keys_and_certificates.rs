//! Key material an operator (or a message) supplies: PEM, DER certificates, public keys,
//! PKCS#12 files.
#![no_main]
use libfuzzer_sys::fuzz_target;
use payonce_channels::crypto::{Certificate, RsaSigner, RsaVerifier, load_pkcs12, pem_decode};

fuzz_target!(|data: &[u8]| {
    let _ = Certificate::from_der(data);
    let _ = RsaVerifier::from_der(data);
    let _ = load_pkcs12(data, "");
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = pem_decode(text);
        let _ = Certificate::from_pem(text);
        let _ = RsaVerifier::from_pem(text);
        let _ = RsaSigner::from_pem(text);
    }
});
