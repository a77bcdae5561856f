//! Real answers of Alipay (sandbox, signed by Alipay) and WeChat Pay (a Native prepay answer
//! and a `/v3/certificates` item): payonce's verifiers take them byte for byte, and each is read
//! per the answer table (docs/channels.md).

use payonce_channels::alipay::{self, protocol::response_name};
use payonce_channels::crypto::{Certificate, RsaVerifier};
use payonce_channels::wechatpay::protocol::{PlatformKeys, decrypt_certificate_item};
use payonce_channels::wechatpay::{PrepayCode, prepay_outcome};
use payonce_channels::{ChannelError, CloseAnswer, RefundState, TradeState};
use std::path::{Path, PathBuf};

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn alipay_key() -> RsaVerifier {
    RsaVerifier::from_pem(
        &std::fs::read_to_string(
            vectors().join("alipay-answers/alipay_public_cert_sandbox_2088721003899159.crt"),
        )
        .unwrap(),
    )
    .unwrap()
}

fn alipay_answer(method: &str) -> String {
    let file = format!(
        "alipay-answers/sync_{}.reconstructed.json",
        response_name(method)
    );
    std::fs::read_to_string(vectors().join(file)).unwrap()
}

#[test]
fn alipay_answers_verify_over_their_raw_text() {
    let key = alipay_key();
    for method in [
        "alipay.trade.precreate",
        "alipay.trade.query",
        "alipay.trade.close",
        "alipay.trade.refund",
        "alipay.trade.fastpay.refund.query",
        "alipay.trade.app.pay",
        "alipay.fund.trans.uni.transfer",
        "alipay.fund.trans.common.query",
    ] {
        let text = alipay_answer(method);
        let verified = alipay::verify_answer(&text, method, &key);
        assert!(verified.is_ok(), "{method}: {verified:?}");
        // One byte changed inside the signed object: not trusted, so unknown (never a refusal).
        let tampered = text.replacen("\"code\":\"10000\"", "\"code\":\"10000\",\"x\":\"1\"", 1);
        assert!(
            matches!(
                alipay::verify_answer(&tampered, method, &key),
                Err(ChannelError::Ambiguous(_))
            ),
            "{method}"
        );
    }
}

#[test]
fn alipay_answers_read_per_the_table() {
    let key = alipay_key();
    let read = |m: &str| alipay::verify_answer(&alipay_answer(m), m, &key);
    // ALI-P-10000: a QR code.
    assert!(
        read("alipay.trade.precreate").unwrap()["qr_code"]
            .as_str()
            .unwrap()
            .starts_with("https://qr.alipay.com/")
    );
    // ALI-Q-*: whatever the sandbox trade's status, it maps to a state (never an error).
    let q = alipay::query_outcome(read("alipay.trade.query")).unwrap();
    assert!(
        matches!(
            q,
            TradeState::Paid { .. } | TradeState::Unpaid | TradeState::Closed
        ),
        "{q:?}"
    );
    // ALI-C-10000: closed.
    assert_eq!(
        alipay::close_outcome(read("alipay.trade.close")).unwrap(),
        CloseAnswer::Closed
    );
    // ALI-R-10000 with fund_change=Y: refunded.
    assert_eq!(
        alipay::refund_outcome(read("alipay.trade.refund")).unwrap(),
        RefundState::Succeeded
    );
    let rq = alipay::refund_query_outcome(read("alipay.trade.fastpay.refund.query")).unwrap();
    assert!(
        matches!(rq, RefundState::Succeeded | RefundState::Processing),
        "{rq:?}"
    );
}

#[test]
fn alipay_slash_escapes_are_signed_as_sent() {
    // The gateway writes `/` as `\/`; the signature covers those bytes. Re-encoding the JSON
    // (which drops the escapes) must not verify.
    let key = alipay_key();
    let text = alipay_answer("alipay.trade.precreate");
    assert!(text.contains("\\/"), "the vector carries escaped slashes");
    let raw = alipay::protocol::raw_response(&text, "alipay_trade_precreate_response").unwrap();
    let reencoded =
        serde_json::to_string(&serde_json::from_str::<serde_json::Value>(raw).unwrap()).unwrap();
    let sign = serde_json::from_str::<serde_json::Value>(&text).unwrap()["sign"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(key.verify_b64(raw.as_bytes(), &sign));
    assert!(!key.verify_b64(reencoded.as_bytes(), &sign));
}

#[test]
fn wechat_native_answer_verifies_with_its_platform_certificate() {
    let dir = vectors().join("wechatpay/response_native_20201228_gopay");
    let cert = Certificate::from_pem(
        &std::fs::read_to_string(dir.join("platform_cert_60A862B1.pem")).unwrap(),
    )
    .unwrap();
    let body = std::fs::read(dir.join("body.json")).unwrap();
    let headers: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("headers.json")).unwrap()).unwrap();
    let h = |k: &str| headers[k].as_str();
    let mut keys = PlatformKeys::default();
    keys.0
        .insert(cert.serial_hex.clone(), cert.verifier.clone());
    let ts: i64 = h("Wechatpay-Timestamp").unwrap().parse().unwrap();
    keys.verify(
        h("Wechatpay-Serial"),
        h("Wechatpay-Timestamp"),
        h("Wechatpay-Nonce"),
        h("Wechatpay-Signature"),
        &body,
        ts + 10,
    )
    .unwrap();
    // Outside the ±5 min window it is stale; with a changed body it is not WeChat's.
    assert!(
        keys.verify(
            h("Wechatpay-Serial"),
            h("Wechatpay-Timestamp"),
            h("Wechatpay-Nonce"),
            h("Wechatpay-Signature"),
            &body,
            ts + 301
        )
        .is_err()
    );
    let mut changed = body.clone();
    changed[5] ^= 1;
    assert!(
        keys.verify(
            h("Wechatpay-Serial"),
            h("Wechatpay-Timestamp"),
            h("Wechatpay-Nonce"),
            h("Wechatpay-Signature"),
            &changed,
            ts
        )
        .is_err()
    );
    // WX-P-200: the code_url, byte for byte.
    assert_eq!(
        prepay_outcome(200, &body).unwrap(),
        PrepayCode::CodeUrl("weixin://wxpay/bizpayurl?pr=5zPMHa4zz".into())
    );
}

#[test]
fn wechat_certificate_download_decrypts_with_the_apiv3_key() {
    let dir = vectors().join("wechatpay/certificates_encrypt_certificate_20210716_yansongda");
    let key = std::fs::read_to_string(dir.join("apiv3_key.txt")).unwrap();
    let item: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("data_item.json")).unwrap()).unwrap();
    let got = decrypt_certificate_item(key.trim().as_bytes(), &item).unwrap();
    let expected = Certificate::from_pem(
        &std::fs::read_to_string(dir.join("expected_plaintext_cert.pem")).unwrap(),
    )
    .unwrap();
    assert_eq!(got.certificate.der(), expected.der());
    assert_eq!(got.serial_no, "45F59D4DABF31918AFCEC556D5D2C6E376675D57");
    assert!(got.expire_at.is_some());
    // Another APIv3 key does not open it.
    assert!(decrypt_certificate_item(b"00000000000000000000000000000000", &item).is_err());
}

#[test]
fn alipay_return_url_signature_verifies_and_tampering_does_not() {
    // The browser's return after a page payment, as Alipay signed it (navigation, never proof of
    // payment — but its signature is Alipay's, over everything but `sign` and `sign_type`).
    let url =
        std::fs::read_to_string(vectors().join("alipay-answers/return_url_page_pay_20231221.txt"))
            .unwrap();
    let query = url.trim().split_once('?').unwrap().1;
    let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let key = alipay_key();
    assert!(alipay::protocol::verify_notification(&key, &params));
    let mut tampered = params.clone();
    tampered
        .iter_mut()
        .find(|(k, _)| k == "total_amount")
        .unwrap()
        .1 = "100.00".into();
    assert!(!alipay::protocol::verify_notification(&key, &tampered));
}
