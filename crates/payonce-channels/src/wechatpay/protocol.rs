//! The WeChat Pay v3 wire format, shared by the connector and the simulator.

use crate::crypto::{RsaSigner, RsaVerifier, b64, b64_decode, nonce};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const SIGNATURE_TYPE: &str = "WECHATPAY2-SHA256-RSA2048";
/// WeChat Pay refuses, and so do we, timestamps more than five minutes off.
pub const MAX_SKEW_SECS: i64 = 300;

pub const H_TIMESTAMP: &str = "wechatpay-timestamp";
pub const H_NONCE: &str = "wechatpay-nonce";
pub const H_SIGNATURE: &str = "wechatpay-signature";
pub const H_SERIAL: &str = "wechatpay-serial";
pub const H_SIGNATURE_TYPE: &str = "wechatpay-signature-type";
/// How a platform public key's id starts (a certificate serial is hex).
pub const PUBLIC_KEY_ID_PREFIX: &str = "PUB_KEY_ID_";

/// The string a merchant signs for a request: `METHOD\nPATH?QUERY\nTS\nNONCE\nBODY\n`.
pub fn request_message(
    method: &str,
    path_and_query: &str,
    ts: i64,
    nonce: &str,
    body: &str,
) -> String {
    format!("{method}\n{path_and_query}\n{ts}\n{nonce}\n{body}\n")
}

/// The string the platform signs for a response or notification: `TS\nNONCE\nBODY\n`.
pub fn response_message(ts: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut m = format!("{ts}\n{nonce}\n").into_bytes();
    m.extend_from_slice(body);
    m.push(b'\n');
    m
}

/// The `Authorization` header of a merchant request.
pub fn authorization(
    signer: &RsaSigner,
    mchid: &str,
    serial_no: &str,
    method: &str,
    path_and_query: &str,
    body: &str,
    ts: i64,
) -> String {
    let nonce_str = nonce(32);
    let sig =
        signer.sign_b64(request_message(method, path_and_query, ts, &nonce_str, body).as_bytes());
    format!(
        "{SIGNATURE_TYPE} mchid=\"{mchid}\",nonce_str=\"{nonce_str}\",signature=\"{sig}\",timestamp=\"{ts}\",serial_no=\"{serial_no}\""
    )
}

/// The fields of an `Authorization` header; `None` if it is not a v3 header.
pub fn parse_authorization(header: &str) -> Option<BTreeMap<String, String>> {
    let rest = header.strip_prefix(SIGNATURE_TYPE)?.trim();
    let mut out = BTreeMap::new();
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        out.insert(k.to_owned(), v.trim_matches('"').to_owned());
    }
    Some(out)
}

/// The platform keys a merchant trusts, by the serial the platform announces in
/// `Wechatpay-Serial`: certificate serials (hex) and/or a public key id (`PUB_KEY_ID_…`).
#[derive(Debug, Clone, Default)]
pub struct PlatformKeys(pub BTreeMap<String, RsaVerifier>);

#[derive(Debug, PartialEq, Eq)]
pub enum VerifyError {
    Missing,
    UnknownSerial,
    Stale,
    BadSignature,
}

impl PlatformKeys {
    pub fn verify(
        &self,
        serial: Option<&str>,
        ts: Option<&str>,
        nonce: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now_secs: i64,
    ) -> Result<(), VerifyError> {
        let (Some(serial), Some(ts), Some(nonce), Some(sig)) = (serial, ts, nonce, signature)
        else {
            return Err(VerifyError::Missing);
        };
        // Certificate serials are compared case-insensitively (hex).
        let key = self
            .0
            .get(serial)
            .or_else(|| {
                self.0
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(serial))
                    .map(|(_, v)| v)
            })
            .ok_or(VerifyError::UnknownSerial)?;
        if !key.verify_b64(&response_message(ts, nonce, body), sig) {
            return Err(VerifyError::BadSignature);
        }
        let ts: i64 = ts.parse().map_err(|_| VerifyError::BadSignature)?;
        if (now_secs - ts).abs() > MAX_SKEW_SECS {
            return Err(VerifyError::Stale);
        }
        Ok(())
    }
}

/// AEAD_AES_256_GCM with the APIv3 key: `ciphertext` is base64 of ciphertext ‖ tag.
pub fn decrypt_resource(
    apiv3_key: &[u8],
    nonce_str: &str,
    associated_data: &str,
    ciphertext_b64: &str,
) -> Option<Vec<u8>> {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, apiv3_key).ok()?);
    let nonce = Nonce::try_assume_unique_for_key(nonce_str.as_bytes()).ok()?;
    let mut buf = b64_decode(ciphertext_b64)?;
    let plain = key
        .open_in_place(nonce, Aad::from(associated_data.as_bytes()), &mut buf)
        .ok()?;
    Some(plain.to_vec())
}

/// One platform certificate from `GET /v3/certificates`, decrypted with the APIv3 key.
#[derive(Debug, Clone)]
pub struct DownloadedCertificate {
    pub serial_no: String,
    pub certificate: crate::crypto::Certificate,
    /// `expire_time` (ms): the certificate is dropped from the trusted set after it.
    pub expire_at: Option<i64>,
}

/// Why a `/v3/certificates` answer, or one certificate of it, is refused.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("certificates answer: {0}")]
    NotJson(serde_json::Error),
    #[error("certificates answer without data[]")]
    NoData,
    #[error("encrypt_certificate without {0}")]
    MissingField(String),
    #[error("unsupported certificate algorithm")]
    Algorithm,
    /// The APIv3 key is wrong, or the ciphertext was altered.
    #[error("certificate does not decrypt with the APIv3 key")]
    Decrypt,
    #[error("certificate is not text")]
    NotText,
    #[error("{0}")]
    NotACertificate(crate::crypto::KeyError),
    #[error("serial_no {announced} is not the certificate's {actual}")]
    Serial { announced: String, actual: String },
}

/// Decrypts every `data[].encrypt_certificate` of a `/v3/certificates` answer. A certificate
/// whose plaintext does not parse, or whose serial is not the one announced, is refused.
pub fn decrypt_certificates(
    apiv3_key: &[u8],
    answer: &[u8],
) -> Result<Vec<DownloadedCertificate>, CertificateError> {
    let v: serde_json::Value = serde_json::from_slice(answer).map_err(CertificateError::NotJson)?;
    let data = v["data"].as_array().ok_or(CertificateError::NoData)?;
    data.iter()
        .map(|item| decrypt_certificate_item(apiv3_key, item))
        .collect()
}

/// One `data[]` item of `/v3/certificates`.
pub fn decrypt_certificate_item(
    apiv3_key: &[u8],
    item: &serde_json::Value,
) -> Result<DownloadedCertificate, CertificateError> {
    let enc = &item["encrypt_certificate"];
    let field = |k: &str| {
        enc[k]
            .as_str()
            .ok_or_else(|| CertificateError::MissingField(k.to_owned()))
    };
    if field("algorithm")? != "AEAD_AES_256_GCM" {
        return Err(CertificateError::Algorithm);
    }
    let plain = decrypt_resource(
        apiv3_key,
        field("nonce")?,
        field("associated_data")?,
        field("ciphertext")?,
    )
    .ok_or(CertificateError::Decrypt)?;
    let pem = String::from_utf8(plain).map_err(|_| CertificateError::NotText)?;
    let certificate =
        crate::crypto::Certificate::from_pem(&pem).map_err(CertificateError::NotACertificate)?;
    let serial_no = item["serial_no"].as_str().unwrap_or_default().to_owned();
    if !serial_no.eq_ignore_ascii_case(&certificate.serial_hex) {
        return Err(CertificateError::Serial {
            announced: serial_no,
            actual: certificate.serial_hex,
        });
    }
    let expire_at = item["expire_time"].as_str().and_then(parse_rfc3339_ms);
    Ok(DownloadedCertificate {
        serial_no,
        certificate,
        expire_at,
    })
}

/// The simulator's side of `decrypt_resource`. Returns (nonce, ciphertext base64).
pub fn encrypt_resource(
    apiv3_key: &[u8],
    associated_data: &str,
    plaintext: &[u8],
) -> (String, String) {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, apiv3_key).expect("32-byte key"));
    let nonce_str = nonce(12);
    let mut buf = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::try_assume_unique_for_key(nonce_str.as_bytes()).unwrap(),
        Aad::from(associated_data.as_bytes()),
        &mut buf,
    )
    .expect("AES-GCM seal");
    (nonce_str, b64(&buf))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Amount {
    pub total: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_total: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_currency: Option<String>,
}

/// `POST /v3/pay/transactions/{native,jsapi}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrepayBody {
    pub appid: String,
    pub mchid: String,
    pub description: String,
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_expire: Option<String>,
    pub notify_url: String,
    pub amount: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<serde_json::Value>,
}

/// A transaction as query answers and notification resources carry it: a direct merchant's
/// names `appid` / `mchid`; a sub-merchant's (partner APIs) names `sp_appid` / `sp_mchid` and
/// `sub_mchid` (and `sub_appid` when it has one) instead.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Transaction {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub appid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mchid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sp_appid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sp_mchid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_appid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<String>,
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_type: Option<String>,
    pub trade_state: String,
    #[serde(default)]
    pub trade_state_desc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    pub amount: Amount,
}

impl Transaction {
    /// The merchant whose order this is: the sub-merchant of a partner transaction, else the
    /// direct merchant.
    pub fn merchant(&self) -> &str {
        self.sub_mchid.as_deref().unwrap_or(&self.mchid)
    }

    /// Whether the transaction belongs to the merchant `keys` act for: the direct merchant
    /// (`mchid` and `appid` both), or the sub-merchant under exactly that provider.
    pub fn belongs_to(&self, mchid: &str, appid: &str, sub_mchid: Option<&str>) -> bool {
        match sub_mchid {
            None => self.sp_mchid.is_none() && self.mchid == mchid && self.appid == appid,
            Some(sub) => {
                self.sp_mchid.as_deref() == Some(mchid)
                    && self.sp_appid.as_deref() == Some(appid)
                    && self.sub_mchid.as_deref() == Some(sub)
            }
        }
    }
}

/// `POST /v3/refund/domestic/refunds`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefundBody {
    /// Service-provider mode: the sub-merchant whose order is refunded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<String>,
    pub out_trade_no: String,
    pub out_refund_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    pub amount: RefundAmount,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefundAmount {
    pub refund: i64,
    pub total: i64,
    pub currency: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refund {
    pub refund_id: String,
    pub out_refund_no: String,
    pub out_trade_no: String,
    #[serde(default)]
    pub transaction_id: String,
    /// SUCCESS, CLOSED, PROCESSING, ABNORMAL.
    pub status: String,
    pub amount: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
}

/// The notification envelope; `resource` is encrypted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotifyEnvelope {
    pub id: String,
    pub create_time: String,
    pub resource_type: String,
    pub event_type: String,
    #[serde(default)]
    pub summary: String,
    pub resource: EncryptedResource,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EncryptedResource {
    pub original_type: String,
    pub algorithm: String,
    pub ciphertext: String,
    #[serde(default)]
    pub associated_data: String,
    pub nonce: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// RFC 3339 in Beijing time, as WeChat Pay writes times (`2026-11-23T22:01:02+08:00`).
pub fn beijing_rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(time::macros::offset!(+8));
    t.format(&time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]+08:00"
    ))
    .unwrap()
}

pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_round_trip_and_tamper() {
        let key = b"0123456789abcdef0123456789abcdef";
        let (n, ct) = encrypt_resource(key, "transaction", b"{\"a\":1}");
        assert_eq!(
            decrypt_resource(key, &n, "transaction", &ct).unwrap(),
            b"{\"a\":1}"
        );
        assert!(
            decrypt_resource(key, &n, "other", &ct).is_none(),
            "associated data is authenticated"
        );
        let mut raw = b64_decode(&ct).unwrap();
        raw[0] ^= 1;
        assert!(decrypt_resource(key, &n, "transaction", &b64(&raw)).is_none());
    }

    #[test]
    fn authorization_verifies_with_merchant_key() {
        let k = RsaSigner::generate();
        let h = authorization(
            &k,
            "1900000001",
            "ABC",
            "POST",
            "/v3/x?y=1",
            "{}",
            1700000000,
        );
        let f = parse_authorization(&h).unwrap();
        let msg = request_message("POST", "/v3/x?y=1", 1700000000, &f["nonce_str"], "{}");
        assert!(k.verifier().verify_b64(msg.as_bytes(), &f["signature"]));
        assert_eq!(f["mchid"], "1900000001");
    }

    #[test]
    fn times_are_beijing() {
        assert_eq!(beijing_rfc3339(0), "1970-01-01T08:00:00+08:00");
        assert_eq!(parse_rfc3339_ms("1970-01-01T08:00:00+08:00"), Some(0));
    }
}
