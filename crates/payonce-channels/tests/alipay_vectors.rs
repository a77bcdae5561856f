//! payonce's Alipay notification verifier against real Alipay-signed vectors (from Alipay's own
//! Node SDK test suite, MIT): the valid ones verify, the tampered and dummy ones do not.

use payonce_channels::alipay::protocol::{names_merchant, verify_notification};
use payonce_channels::crypto::RsaVerifier;
use std::path::Path;

#[test]
fn real_alipay_vectors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/alipay");
    let vectors: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("notify_vectors.json")).unwrap())
            .unwrap();
    let vectors = vectors.as_array().unwrap();
    assert_eq!(vectors.len(), 9);
    let (mut valid, mut invalid) = (0, 0);
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let key = RsaVerifier::from_pem(
            &std::fs::read_to_string(dir.join(v["public_key_file"].as_str().unwrap())).unwrap(),
        )
        .unwrap();
        let params: Vec<(String, String)> = v["params"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        let expected = v["expect_valid"].as_bool().unwrap();
        assert_eq!(verify_notification(&key, &params), expected, "{name}");
        if expected {
            // Alipay's real messages pass the account rule for their own app, and fail it for
            // an ISV account acting for another merchant.
            let app_id = v["params"]["app_id"].as_str().unwrap_or_default();
            assert!(names_merchant(&params, app_id, None), "{name}");
            assert!(
                !names_merchant(&params, app_id, Some("2021000000000901")),
                "{name}"
            );
        }
        if expected { valid += 1 } else { invalid += 1 }
    }
    assert_eq!((valid, invalid), (6, 3));
}
