//! The sandbox wire protocol, shared by the connector and the simulator.
//!
//! Signature: `Sandbox-Signature: v1=<hex HMAC-SHA256(key, "{ts}\n{METHOD}\n{path}\n{body}")>`
//! with `Sandbox-Timestamp: {unix seconds}`. Responses and notifications are signed the same
//! way, with the method and path of the request they answer (notifications: `POST` and the
//! notify path). Timestamps more than five minutes off are refused, like WeChat Pay.

use crate::secret::SecretBytes;
use aws_lc_rs::hmac;
use serde::{Deserialize, Serialize};

pub const TS_HEADER: &str = "sandbox-timestamp";
pub const SIG_HEADER: &str = "sandbox-signature";
/// Allowed clock difference between the two sides.
pub const MAX_SKEW_SECS: i64 = 300;

pub fn sign(key: &SecretBytes, ts: i64, method: &str, path: &str, body: &[u8]) -> String {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key.expose());
    let mut ctx = hmac::Context::with_key(&k);
    ctx.update(format!("{ts}\n{method}\n{path}\n").as_bytes());
    ctx.update(body);
    format!("v1={}", hex::encode(ctx.sign().as_ref()))
}

#[derive(Debug, PartialEq, Eq)]
pub enum VerifyError {
    Missing,
    Stale,
    Bad,
}

/// Checks a signature in constant time and the timestamp's freshness.
pub fn verify(
    key: &SecretBytes,
    ts_header: Option<&str>,
    sig_header: Option<&str>,
    method: &str,
    path: &str,
    body: &[u8],
    now_secs: i64,
) -> Result<(), VerifyError> {
    let (Some(ts), Some(sig)) = (ts_header, sig_header) else {
        return Err(VerifyError::Missing);
    };
    let ts: i64 = ts.parse().map_err(|_| VerifyError::Bad)?;
    let sig = sig.strip_prefix("v1=").ok_or(VerifyError::Bad)?;
    let sig = hex::decode(sig).map_err(|_| VerifyError::Bad)?;
    let k = hmac::Key::new(hmac::HMAC_SHA256, key.expose());
    let mut msg = format!("{ts}\n{method}\n{path}\n").into_bytes();
    msg.extend_from_slice(body);
    hmac::verify(&k, &msg, &sig).map_err(|_| VerifyError::Bad)?;
    // Freshness after authenticity: an attacker cannot learn anything from which check failed.
    if (now_secs - ts).abs() > MAX_SKEW_SECS {
        return Err(VerifyError::Stale);
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateOrder {
    pub out_trade_no: String,
    /// Fen.
    pub amount: i64,
    pub currency: String,
    pub description: String,
    pub notify_url: String,
    /// Unix milliseconds after which the QR code no longer pays.
    pub time_expire: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Created {
    pub out_trade_no: String,
    pub code_url: String,
    pub time_expire: i64,
}

/// Trade states, named after WeChat Pay's.
pub const NOTPAY: &str = "NOTPAY";
pub const SUCCESS: &str = "SUCCESS";
pub const CLOSED: &str = "CLOSED";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderView {
    pub out_trade_no: String,
    pub trade_state: String,
    pub amount: i64,
    pub trade_no: Option<String>,
    /// Unix milliseconds.
    pub paid_at: Option<i64>,
}

/// Error body: `{code, message}`. Codes: `ORDER_NOT_EXIST`, `ORDER_PAID`, `ORDER_CLOSED`,
/// `OUT_TRADE_NO_USED`, `PARAM_ERROR`, `SIGN_ERROR`, `SYSTEM_ERROR`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentNotification {
    /// Stable across redeliveries of the same event.
    pub id: String,
    pub event_type: String,
    pub out_trade_no: String,
    pub trade_no: String,
    pub amount: i64,
    pub paid_at: i64,
}

pub const EVENT_PAID: &str = "TRANSACTION.SUCCESS";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_round_trip_and_tamper() {
        let key = SecretBytes::random32();
        let sig = sign(&key, 1000, "POST", "/x", b"{}");
        assert_eq!(
            verify(&key, Some("1000"), Some(&sig), "POST", "/x", b"{}", 1000),
            Ok(())
        );
        assert_eq!(
            verify(&key, Some("1000"), Some(&sig), "POST", "/x", b"{ }", 1000),
            Err(VerifyError::Bad)
        );
        assert_eq!(
            verify(&key, Some("1001"), Some(&sig), "POST", "/x", b"{}", 1000),
            Err(VerifyError::Bad)
        );
        assert_eq!(
            verify(
                &key,
                Some("1000"),
                Some(&sig),
                "POST",
                "/x",
                b"{}",
                1000 + 301
            ),
            Err(VerifyError::Stale)
        );
        let other = SecretBytes::random32();
        assert_eq!(
            verify(&other, Some("1000"), Some(&sig), "POST", "/x", b"{}", 1000),
            Err(VerifyError::Bad)
        );
        assert_eq!(
            verify(&key, None, Some(&sig), "POST", "/x", b"{}", 1000),
            Err(VerifyError::Missing)
        );
    }
}
