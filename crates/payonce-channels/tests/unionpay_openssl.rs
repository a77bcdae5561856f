//! UnionPay `signMethod=01` checked against an independent implementation: the `openssl` CLI.
//! Our signature verifies with `openssl dgst -sha256 -verify`, and openssl's signature verifies
//! with ours — over the lower-case hex SHA-256 of the sorted `k=v&…` string.

use payonce_channels::crypto::{RsaSigner, b64, b64_decode};
use payonce_channels::unionpay::protocol;
use std::process::Command;

fn params() -> Vec<(String, String)> {
    [
        ("version", "5.1.0"),
        ("encoding", "UTF-8"),
        ("txnType", "01"),
        ("merId", "777290058110048"),
        ("orderId", "A1B2C3"),
        ("txnTime", "20261123100000"),
        ("txnAmt", "12345"),
        ("backUrl", "https://shop.example/notify/unionpay?x=1&y=2"),
        ("certId", "68759663125"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[test]
fn signatures_agree_with_openssl() {
    if Command::new("openssl").arg("version").output().is_err() {
        panic!("openssl CLI is required for this test");
    }
    let dir = tempfile::tempdir().unwrap();
    let key = RsaSigner::generate();
    std::fs::write(dir.path().join("key.pem"), key.to_pkcs8_pem()).unwrap();
    std::fs::write(dir.path().join("pub.pem"), key.public_key_pem()).unwrap();
    let p = params();
    let content = protocol::sign_content(&p);
    assert!(
        content.starts_with("backUrl=https://shop.example/notify/unionpay?x=1&y=2&certId="),
        "{content}"
    );

    // The digest is plain SHA-256 hex of the content.
    std::fs::write(dir.path().join("content"), &content).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-r"])
        .arg(dir.path().join("content"))
        .output()
        .unwrap();
    let openssl_hex = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(protocol::digest(&p), openssl_hex);

    // Ours → openssl.
    std::fs::write(dir.path().join("data"), protocol::digest(&p)).unwrap();
    std::fs::write(
        dir.path().join("sig.bin"),
        b64_decode(&protocol::sign(&key, &p)).unwrap(),
    )
    .unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(dir.path().join("pub.pem"))
        .arg("-signature")
        .arg(dir.path().join("sig.bin"))
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Verified OK");

    // openssl → ours.
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(dir.path().join("key.pem"))
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut signed = p.clone();
    signed.push(("signature".into(), b64(&out.stdout)));
    assert!(protocol::verify(&key.verifier(), &signed));
    signed[6].1 = "12346".into();
    assert!(
        !protocol::verify(&key.verifier(), &signed),
        "a changed amount fails"
    );
}

/// UnionPay hands merchants a PKCS#12 `.pfx`: built here by `openssl pkcs12 -export`, it loads,
/// its certificate's serial is the certId, and its key signs what the certificate verifies.
#[test]
fn pkcs12_signing_key_loads() {
    let dir = tempfile::tempdir().unwrap();
    let key = RsaSigner::generate();
    std::fs::write(dir.path().join("key.pem"), key.to_pkcs8_pem()).unwrap();
    let ok = Command::new("openssl")
        .args(["req", "-x509", "-new", "-key"])
        .arg(dir.path().join("key.pem"))
        .args([
            "-subj",
            "/CN=merchant 777290058110048",
            "-days",
            "2",
            "-set_serial",
            "68759663125",
            "-out",
        ])
        .arg(dir.path().join("cert.pem"))
        .status()
        .unwrap();
    assert!(ok.success());
    let ok = Command::new("openssl")
        .args(["pkcs12", "-export", "-inkey"])
        .arg(dir.path().join("key.pem"))
        .arg("-in")
        .arg(dir.path().join("cert.pem"))
        .args(["-passout", "pass:000000", "-out"])
        .arg(dir.path().join("acp.pfx"))
        .status()
        .unwrap();
    assert!(ok.success());
    let der = std::fs::read(dir.path().join("acp.pfx")).unwrap();
    let (signer, cert) = payonce_channels::crypto::load_pkcs12(&der, "000000").unwrap();
    assert_eq!(cert.serial_decimal, "68759663125");
    let mut p = params();
    p.push(("signature".into(), protocol::sign(&signer, &p)));
    assert!(protocol::verify(&cert.verifier, &p));
    assert!(
        payonce_channels::crypto::load_pkcs12(&der, "wrong").is_err(),
        "wrong password refused"
    );
}
