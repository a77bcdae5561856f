//! WeChat Pay's older verification mode: a platform *certificate* (announced by its hex serial
//! in `Wechatpay-Serial`) instead of a `PUB_KEY_ID_…` public key. The certificate is made by
//! the `openssl` CLI; payonce must find it by serial and verify with it.

use payonce_channels::crypto::{Certificate, RsaSigner};
use payonce_channels::wechatpay::protocol::{PlatformKeys, VerifyError, response_message};
use std::process::Command;

#[test]
fn verifies_with_a_platform_certificate_by_serial() {
    let dir = tempfile::tempdir().unwrap();
    let platform = RsaSigner::generate();
    std::fs::write(dir.path().join("key.pem"), platform.to_pkcs8_pem()).unwrap();
    let ok = Command::new("openssl")
        .args(["req", "-x509", "-new", "-key"])
        .arg(dir.path().join("key.pem"))
        .args([
            "-subj",
            "/CN=Tenpay.com Root CA",
            "-days",
            "2",
            "-set_serial",
            "0x5157F09D0E74B8A2B3E0D1C5F0E6A7B8C9D0E1F2",
            "-out",
        ])
        .arg(dir.path().join("cert.pem"))
        .status()
        .unwrap();
    assert!(ok.success());
    let cert =
        Certificate::from_pem(&std::fs::read_to_string(dir.path().join("cert.pem")).unwrap())
            .unwrap();
    assert_eq!(cert.serial_hex, "5157F09D0E74B8A2B3E0D1C5F0E6A7B8C9D0E1F2");
    let mut keys = PlatformKeys::default();
    keys.0
        .insert(cert.serial_hex.clone(), cert.verifier.clone());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let ts = now.to_string();
    let body = br#"{"code_url":"weixin://wxpay/bizpayurl?pr=abc"}"#;
    let sig = platform.sign_b64(&response_message(&ts, "NONCE", body));
    // WeChat sends the serial in upper case; lower case must match too.
    assert_eq!(
        keys.verify(
            Some("5157f09d0e74b8a2b3e0d1c5f0e6a7b8c9d0e1f2"),
            Some(&ts),
            Some("NONCE"),
            Some(&sig),
            body,
            now
        ),
        Ok(())
    );
    assert_eq!(
        keys.verify(
            Some("ABCDEF"),
            Some(&ts),
            Some("NONCE"),
            Some(&sig),
            body,
            now
        ),
        Err(VerifyError::UnknownSerial)
    );
    assert_eq!(
        keys.verify(
            Some(&cert.serial_hex),
            Some(&ts),
            Some("NONCE"),
            Some(&sig),
            b"{}",
            now
        ),
        Err(VerifyError::BadSignature)
    );
    assert_eq!(
        keys.verify(
            Some(&cert.serial_hex),
            Some(&ts),
            Some("NONCE"),
            Some(&sig),
            body,
            now + 301
        ),
        Err(VerifyError::Stale)
    );
}
