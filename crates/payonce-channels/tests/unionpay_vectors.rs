//! UnionPay's own test-environment answers (signed by UnionPay's test key, captured by
//! yansongda/pay): payonce's raw-answer parser takes them byte for byte, the chain
//! signPubKeyCert → CFCA TEST OCA1 → CFCA TEST CS CA verifies "as of" a time inside the leaf's
//! validity, the owner check reads the CN's third `@` field, and each answer is read per the
//! answer table (docs/channels.md, UP-*).

use payonce_channels::crypto::Certificate;
use payonce_channels::unionpay::protocol::{self, get, parse_answer};
use payonce_channels::unionpay::{consume_state, refund_answer_state, verify_unionpay_message};
use payonce_channels::{NotifyError, RefundState, TradeState};
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/unionpay")
}

fn cert(name: &str) -> Certificate {
    let bytes = std::fs::read(dir().join("certs").join(name)).unwrap();
    match std::str::from_utf8(&bytes) {
        Ok(text) if text.contains("-----BEGIN") => Certificate::from_pem(text).unwrap(),
        _ => Certificate::from_der(&bytes).unwrap(),
    }
}

fn answer(name: &str) -> Vec<(String, String)> {
    parse_answer(&std::fs::read(dir().join("yansongda_pay").join(name)).unwrap()).unwrap()
}

/// 2024-01-05 12:00 UTC: inside the 2020–2025 leaf's validity (it expired on 2025-07-31).
const AS_OF: i64 = 1_704_456_000;

fn chain() -> (Certificate, Certificate) {
    (cert("acp_test_root.cer"), cert("acp_test_middle.cer"))
}

#[test]
fn every_raw_answer_verifies_as_of_its_time() {
    let (root, middle) = chain();
    for name in [
        "sync_query_20240105145046.txt",
        "sync_cancel_20240105164725.txt",
        "sync_refund_20240105165842.txt",
    ] {
        let fields = answer(name);
        let leaf = verify_unionpay_message(&fields, &root, Some(&middle), AS_OF, false)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            leaf.common_name.as_deref().unwrap().split('@').nth(2),
            Some(protocol::UNIONPAY_OWNER),
            "{name}"
        );
        assert_eq!(get(&fields, "merId"), Some("777290058167151"), "{name}");
    }
}

#[test]
fn raw_fields_keep_their_bytes() {
    let f = answer("sync_query_20240105145046.txt");
    assert_eq!(
        get(&f, "respMsg"),
        Some("成功[0000000]"),
        "raw UTF-8, not url-decoded"
    );
    assert!(
        get(&f, "accNo").unwrap().contains('+') && get(&f, "accNo").unwrap().contains('/'),
        "base64 kept literally"
    );
    assert!(
        get(&f, "signPubKeyCert").unwrap().contains("\r\n"),
        "the PEM's CRLFs are part of the signed string"
    );
    assert_eq!(get(&f, "orderId"), Some("pay20240105145046"));
    // The same bytes url-decoded (what payonce used to do) no longer verify: `+` became a space.
    let decoded: Vec<(String, String)> = form_urlencoded::parse(
        &std::fs::read(dir().join("yansongda_pay/sync_query_20240105145046.txt")).unwrap(),
    )
    .into_owned()
    .collect();
    let (root, middle) = chain();
    assert!(verify_unionpay_message(&decoded, &root, Some(&middle), AS_OF, false).is_err());
}

#[test]
fn outcomes_per_the_answer_table() {
    // UP-Q-00/00: the consume was paid.
    match consume_state(&answer("sync_query_20240105145046.txt")).unwrap() {
        TradeState::Paid {
            amount,
            channel_trade_no,
            ..
        } => {
            assert_eq!(
                amount,
                get(&answer("sync_query_20240105145046.txt"), "txnAmt")
                    .unwrap()
                    .parse::<i64>()
                    .unwrap()
            );
            assert_eq!(
                channel_trade_no.as_deref(),
                get(&answer("sync_query_20240105145046.txt"), "queryId")
            );
        }
        other => panic!("{other:?}"),
    }
    // UP-R-00: a refund accepted; its result comes later.
    assert_eq!(
        refund_answer_state(&answer("sync_refund_20240105165842.txt")).unwrap(),
        RefundState::Processing
    );
    assert_eq!(
        get(&answer("sync_refund_20240105165842.txt"), "txnType"),
        Some("04")
    );
    assert_eq!(
        get(&answer("sync_cancel_20240105164725.txt"), "txnType"),
        Some("31")
    );
}

#[test]
fn tampering_expiry_and_owner_are_refused() {
    let (root, middle) = chain();
    let mut f = answer("sync_query_20240105145046.txt");
    f.iter_mut()
        .find(|(k, _)| k == "txnAmt")
        .unwrap()
        .1
        .push('0');
    assert_eq!(
        verify_unionpay_message(&f, &root, Some(&middle), AS_OF, false).unwrap_err(),
        NotifyError::BadSignature
    );
    // After the leaf expired (2025-07-31) it is no longer trusted.
    let f = answer("sync_query_20240105145046.txt");
    assert_eq!(
        verify_unionpay_message(&f, &root, Some(&middle), 1_764_000_000, false).unwrap_err(),
        NotifyError::UnknownKey
    );
    // Without the middle certificate the leaf does not chain to the root.
    assert!(verify_unionpay_message(&f, &root, None, AS_OF, false).is_err());
}

#[test]
fn the_older_test_owner_needs_the_switch() {
    // The 2017–2020 test certificate's owner field is `00040000:SIGN`.
    let old = cert("signPubKeyCert_test_2017-2020.pem");
    let (root, middle) = chain();
    assert!(
        old.issued_by(&middle, 1_546_300_800) && middle.issued_by(&root, 1_546_300_800),
        "chains as of 2019"
    );
    assert!(!protocol::owner_is_unionpay(&old, false));
    assert!(protocol::owner_is_unionpay(&old, true));
    assert!(protocol::owner_is_unionpay(
        &cert("signPubKeyCert_test_2020-2025.pem"),
        false
    ));
}

#[test]
fn notification_fields_and_signing_string() {
    let fields: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(dir().join("yansongda_pay/notify_fields_20220908132206.json"))
            .unwrap(),
    )
    .unwrap();
    let params: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    let expected = std::fs::read_to_string(
        dir().join("yansongda_pay/notify_signing_string_20220908132206.txt"),
    )
    .unwrap();
    assert_eq!(
        protocol::sign_content(&params),
        expected.trim_end_matches(['\n'])
    );
    let (root, middle) = chain();
    // As of 2022-09-08: the notification verifies through the real chain and reads as paid.
    verify_unionpay_message(&params, &root, Some(&middle), 1_662_600_000, false).unwrap();
    let q: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(dir().join("yansongda_pay/sync_query_fields_20220911041647.json"))
            .unwrap(),
    )
    .unwrap();
    let q: Vec<(String, String)> = q
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    verify_unionpay_message(&q, &root, Some(&middle), 1_662_860_000, false).unwrap();
    assert!(matches!(
        consume_state(&q).unwrap(),
        TradeState::Paid { amount: 1, .. }
    ));
}
