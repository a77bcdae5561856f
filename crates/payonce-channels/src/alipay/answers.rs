//! Reading Alipay's answers: verifying a gateway answer's signature over its raw `*_response`
//! text, reading its code, and what each answer (precreate, query, close, refund, refund query)
//! and each `trade_status_sync` notification means to payonce — the pure functions
//! docs/channels.md's ALI-* rows are tested against.

use super::protocol::{self, raw_response, response_name};
use crate::crypto::RsaVerifier;
use crate::money::yuan_to_fen;
use crate::{ChannelError, CloseAnswer, Notification, NotifyError, RefundState, TradeState};
use payonce_core::Timestamp;
use serde_json::Value;

/// The error an unscanned precreate answers to query and close: "not paid yet", not failure.
pub const TRADE_NOT_EXIST: &str = "ACQ.TRADE_NOT_EXIST";

/// Verifies a gateway answer to `method` and reads its code: the `*_response` object when
/// `code` is 10000; `Refused` for a definitive business failure; `Ambiguous` for anything that
/// does not prove an outcome (unsigned, mis-signed, 20000, a system error). Used by the
/// connector and by `payonce verify-message`.
pub fn verify_answer(
    text: &str,
    method: &str,
    alipay_public_key: &RsaVerifier,
) -> Result<Value, ChannelError> {
    read_code(verify_signed(text, method, alipay_public_key)?)
}

/// The verified `*_response` object of a gateway answer to `method`, whatever its code.
pub fn verify_signed(
    text: &str,
    method: &str,
    alipay_public_key: &RsaVerifier,
) -> Result<Value, ChannelError> {
    let name = response_name(method);
    let parsed: Value = serde_json::from_str(text)
        .map_err(|e| ChannelError::Ambiguous(format!("unparseable answer: {e}")))?;
    // Gateway-level failures come as `error_response`, unsigned: nothing vouches that Alipay
    // sent it, so it proves nothing about the call's effect (ALI-*-error_response).
    if let Some(err) = parsed.get("error_response") {
        return Err(ChannelError::Ambiguous(format!(
            "unsigned error_response {}",
            err["sub_code"]
                .as_str()
                .or(err["code"].as_str())
                .unwrap_or("?")
        )));
    }
    // The signature covers the exact raw text (with Alipay's `\/` escapes), never re-encoded JSON.
    let raw = raw_response(text, &name)
        .ok_or_else(|| ChannelError::Ambiguous(format!("answer without {name}")))?;
    let sign = parsed["sign"].as_str().unwrap_or_default();
    if !answer_signature_verifies(raw, sign, alipay_public_key) {
        return Err(ChannelError::Ambiguous(
            "response signature rejected".into(),
        ));
    }
    serde_json::from_str(raw).map_err(|e| ChannelError::Ambiguous(e.to_string()))
}

/// Whether `sign` is Alipay's signature of the raw `*_response` text. Alipay's own clients try
/// twice: over the text as it came, then — when it holds `\/` — over the text with every `\/`
/// written `/`, because some answers were signed before their slashes were escaped
/// (alipay-sdk-java-all `AbstractAlipayClient.checkResponseSign`: "针对JSON \/问题，替换/后再尝试做
/// 一次验证"; alipay-sdk-net does the same). Both texts are Alipay's bytes; nothing is re-encoded.
pub fn answer_signature_verifies(raw: &str, sign: &str, alipay_public_key: &RsaVerifier) -> bool {
    alipay_public_key.verify_b64(raw.as_bytes(), sign)
        || (raw.contains("\\/")
            && alipay_public_key.verify_b64(raw.replace("\\/", "/").as_bytes(), sign))
}

/// The code of a verified `*_response` object (table rows ALI-*-10000/20000/40004…).
pub fn read_code(body: Value) -> Result<Value, ChannelError> {
    let sub_code = body["sub_code"].as_str().unwrap_or_default().to_owned();
    match body["code"].as_str() {
        Some("10000") => Ok(body),
        // 20000 "service currently unavailable", and a business failure whose sub_code is a
        // system error (`ACQ.SYSTEM_ERROR`, `aop.ACQ.SYSTEM_ERROR`, `isp.*`): Alipay's answer
        // is "retry with the same parameters" — the outcome is unknown.
        Some("20000") => Err(ChannelError::Ambiguous(format!("20000: {sub_code}"))),
        _ if is_system_error(&sub_code) => Err(ChannelError::Ambiguous(format!(
            "{sub_code}: retry with the same parameters"
        ))),
        // A business failure we have no row for: unknown (ALI-ALL-UNKNOWN), never a refusal.
        Some("40004") if !KNOWN_SUB_CODES.contains(&sub_code.as_str()) => Err(
            ChannelError::Ambiguous(format!("undocumented sub_code {sub_code}")),
        ),
        // 20001 / 40001 / 40002 / 40006 (auth, missing, invalid, permission) and the known
        // business failures: definitive.
        Some(code @ ("20001" | "40001" | "40002" | "40004" | "40006")) => {
            Err(ChannelError::Refused {
                code: if sub_code.is_empty() { code } else { &sub_code }.into(),
                message: body["sub_msg"]
                    .as_str()
                    .or(body["msg"].as_str())
                    .unwrap_or_default()
                    .into(),
            })
        }
        Some(other) => Err(ChannelError::Ambiguous(format!(
            "undocumented code {other}"
        ))),
        None => Err(ChannelError::Ambiguous("answer without code".into())),
    }
}

/// What a `alipay.trade.precreate` answer says (ALI-P-*): the QR code, or why not. "Already
/// paid", "closed" and "inconsistent" cannot happen to a fresh out_trade_no; on a re-sent one
/// they mean the trade moved, and a query tells how.
pub fn precreate_outcome(answer: Result<Value, ChannelError>) -> Result<String, ChannelError> {
    match answer {
        Ok(b) => b["qr_code"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ChannelError::Ambiguous("precreate without qr_code".into())),
        Err(ChannelError::Refused { code, .. })
            if matches!(
                code.as_str(),
                "ACQ.TRADE_HAS_SUCCESS" | "ACQ.TRADE_HAS_CLOSE" | "ACQ.CONTEXT_INCONSISTENT"
            ) =>
        {
            Err(ChannelError::Ambiguous(format!("{code}: query the trade")))
        }
        Err(e) => Err(e),
    }
}

/// What a verified `trade_status_sync` notification says (ALI-N-*): for our app only.
///
/// "The signature verifies" is kept apart from "accepted for this merchant": Alipay's signed
/// string joins values with `&` and no escaping, so a genuine signature can be re-cut into
/// another field set (a `subject` holding `&out_trade_no=…`). Every known field must therefore
/// have its documented form: no field twice, `notify_type` exactly `trade_status_sync`,
/// `out_trade_no` of payonce's form (32 lower-case hex), `app_id` ours, amounts decimal, a
/// documented `trade_status`. Unknown extra fields are allowed.
pub fn read_notification(
    params: &[(String, String)],
    app_id: &str,
) -> Result<Notification, NotifyError> {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let bad = |m: String| Err(NotifyError::Malformed(m));
    let mut seen = std::collections::BTreeSet::new();
    if let Some((k, _)) = params.iter().find(|(k, _)| !seen.insert(k.as_str())) {
        return bad(format!("field {k} given twice"));
    }
    if get("app_id") != Some(app_id) {
        return bad("notification for another app".into());
    }
    if get("notify_type") != Some("trade_status_sync") {
        return bad("notify_type is not trade_status_sync".into());
    }
    let no = get("out_trade_no").unwrap_or_default();
    if no.len() != 32
        || !no
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return bad("out_trade_no is not of payonce's form".into());
    }
    for k in [
        "total_amount",
        "receipt_amount",
        "buyer_pay_amount",
        "invoice_amount",
        "point_amount",
        "refund_fee",
        "send_back_fee",
    ] {
        if let Some(v) = get(k)
            && yuan_to_fen(v).is_none()
        {
            return bad(format!("{k} is not a decimal amount"));
        }
    }
    if !matches!(
        get("trade_status"),
        Some("TRADE_SUCCESS" | "TRADE_FINISHED" | "TRADE_CLOSED" | "WAIT_BUYER_PAY")
    ) {
        return bad("undocumented trade_status".into());
    }
    let event_id = get("notify_id")
        .ok_or_else(|| NotifyError::Malformed("no notify_id".into()))?
        .to_owned();
    let out_trade_no = get("out_trade_no")
        .ok_or_else(|| NotifyError::Malformed("no out_trade_no".into()))?
        .to_owned();
    let state = trade_state(
        get("trade_status").unwrap_or_default(),
        get("total_amount").unwrap_or_default(),
        get("trade_no"),
        get("gmt_payment"),
    )
    .map_err(|e| NotifyError::Malformed(e.to_string()))?;
    Ok(Notification {
        event_id,
        out_trade_no,
        state,
        refund: None,
        content: None,
    })
}

/// Business-failure sub-codes the answer tables document as definitive (docs/channels.md);
/// any other sub-code of a 40004 is unknown, never a refusal.
const KNOWN_SUB_CODES: &[&str] = &[
    "ACQ.TRADE_NOT_EXIST",
    "ACQ.TRADE_STATUS_ERROR",
    "ACQ.TRADE_HAS_SUCCESS",
    "ACQ.TRADE_HAS_CLOSE",
    "ACQ.CONTEXT_INCONSISTENT",
    "ACQ.INVALID_PARAMETER",
    "ACQ.ACCESS_FORBIDDEN",
    "ACQ.PARTNER_ERROR",
    "ACQ.SELLER_BEEN_BLOCKED",
    "ACQ.TOTAL_FEE_EXCEED",
    "ACQ.EXIST_FORBIDDEN_WORD",
    "ACQ.REASON_ILLEGAL_STATUS",
    "ACQ.REASON_TRADE_STATUS_INVALID",
    "ACQ.SELLER_BALANCE_NOT_ENOUGH",
    "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL",
    "ACQ.REASON_TRADE_BEEN_FREEZEN",
    "ACQ.TRADE_HAS_FINISHED",
    "ACQ.TRADE_NOT_ALLOW_REFUND",
    "ACQ.REASON_TRADE_REFUND_FEE_ERR",
    "ACQ.DISCORDANT_REPEAT_REQUEST",
    "ACQ.REFUND_CHARGE_ERROR",
];

/// What a `alipay.trade.query` answer says (ALI-Q-*).
pub fn query_outcome(answer: Result<Value, ChannelError>) -> Result<TradeState, ChannelError> {
    match answer {
        Ok(b) => trade_state(
            b["trade_status"].as_str().unwrap_or_default(),
            b["total_amount"].as_str().unwrap_or_default(),
            b["trade_no"].as_str(),
            b["send_pay_date"].as_str(),
        ),
        // An unscanned precreate: no trade yet. Not a failure — the QR is still payable.
        Err(ChannelError::Refused { code, .. }) if code == TRADE_NOT_EXIST => {
            Ok(TradeState::Absent)
        }
        Err(e) => Err(e),
    }
}

/// What a `alipay.trade.close` answer says (ALI-C-*).
pub fn close_outcome(answer: Result<Value, ChannelError>) -> Result<CloseAnswer, ChannelError> {
    match answer {
        Ok(_) => Ok(CloseAnswer::Closed),
        Err(ChannelError::Refused { code, .. }) if code == TRADE_NOT_EXIST => {
            Ok(CloseAnswer::Absent)
        }
        // Closing a trade that is not waiting for payment (paid, or closed already): the caller
        // queries to learn which.
        Err(ChannelError::Refused { code, .. })
            if matches!(
                code.as_str(),
                "ACQ.TRADE_STATUS_ERROR"
                    | "ACQ.REASON_ILLEGAL_STATUS"
                    | "ACQ.REASON_TRADE_STATUS_INVALID"
            ) =>
        {
            Ok(CloseAnswer::AlreadyPaid)
        }
        Err(e) => Err(e),
    }
}

/// What a `alipay.trade.refund` answer says (ALI-R-*). A system error or an unsigned answer
/// arrives as `Ambiguous`: the refund's outcome is unknown, and the worker retries under the
/// SAME out_request_no or queries — never `failed`.
pub fn refund_outcome(answer: Result<Value, ChannelError>) -> Result<RefundState, ChannelError> {
    match answer {
        Ok(b) if b["fund_change"] == "Y" => Ok(RefundState::Succeeded),
        // "N" on a retry of a refund that already went through: ask the query to be sure.
        Ok(_) => Ok(RefundState::Processing),
        // Answers that contradict what we know (the number used with other parameters, the
        // trade missing or in another state, a charge error Alipay says to retry): unknown.
        Err(ChannelError::Refused { code, .. })
            if matches!(
                code.as_str(),
                "ACQ.DISCORDANT_REPEAT_REQUEST"
                    | "ACQ.TRADE_NOT_EXIST"
                    | "ACQ.TRADE_STATUS_ERROR"
                    | "ACQ.REFUND_CHARGE_ERROR"
            ) =>
        {
            Err(ChannelError::Ambiguous(format!("{code}: query the refund")))
        }
        Err(ChannelError::Refused { code, message }) => {
            Ok(RefundState::Failed(format!("{code}: {message}")))
        }
        Err(e) => Err(e),
    }
}

/// What a `alipay.trade.fastpay.refund.query` answer says (ALI-RQ-*).
pub fn refund_query_outcome(
    answer: Result<Value, ChannelError>,
) -> Result<RefundState, ChannelError> {
    let b = answer?;
    Ok(match b["refund_status"].as_str() {
        Some("REFUND_SUCCESS") => RefundState::Succeeded,
        // "Not returned: the refund was not received, or failed" — and a query too early can
        // come before the success. Asking again under the SAME out_request_no settles it
        // safely either way (a refund already made answers fund_change N).
        None => RefundState::Absent,
        Some(other) => {
            return Err(ChannelError::Ambiguous(format!(
                "undocumented refund_status {other}"
            )));
        }
    })
}

/// Sub-codes Alipay documents as "system busy, call again with the same parameters".
pub fn is_system_error(sub_code: &str) -> bool {
    sub_code.ends_with("SYSTEM_ERROR")
        || sub_code.starts_with("isp.")
        || sub_code == "ACQ.CONTEXT_INCONSISTENT_RETRY"
}

fn trade_state(
    status: &str,
    total_amount: &str,
    trade_no: Option<&str>,
    paid_at: Option<&str>,
) -> Result<TradeState, ChannelError> {
    Ok(match status {
        "TRADE_SUCCESS" | "TRADE_FINISHED" => TradeState::Paid {
            amount: yuan_to_fen(total_amount).ok_or_else(|| {
                ChannelError::Ambiguous(format!("bad total_amount {total_amount}"))
            })?,
            channel_trade_no: trade_no.map(str::to_owned),
            paid_at: Timestamp(paid_at.and_then(protocol::parse_beijing_time).unwrap_or(0)),
        },
        "WAIT_BUYER_PAY" => TradeState::Unpaid,
        // Unpaid and closed, or fully refunded after payment: a succeeded attempt stays succeeded.
        "TRADE_CLOSED" => TradeState::Closed,
        other => {
            return Err(ChannelError::Ambiguous(format!(
                "unknown trade_status {other}"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::RsaSigner;

    /// alipay-sdk-java-all's `checkResponseSign`: a signature that fails over the raw text is
    /// tried once more over the text with `\/` written `/`. (No real answer signed that way is
    /// at hand; the real sandbox answers, signed over their escaped text, are in
    /// tests/answer_vectors.rs and still verify on the first try.)
    #[test]
    fn an_answer_signed_before_its_slashes_were_escaped_verifies_as_the_sdk_retries() {
        let alipay = RsaSigner::generate();
        let inner = r#"{"code":"10000","msg":"Success","out_trade_no":"A1","qr_code":"https://qr.alipay.com/bax1","trade_status":"WAIT_BUYER_PAY"}"#;
        let sign = alipay.sign_b64(inner.as_bytes());
        let escaped = inner.replace('/', "\\/");
        let body = format!(r#"{{"alipay_trade_query_response":{escaped},"sign":"{sign}"}}"#);
        let verified = verify_answer(&body, "alipay.trade.query", &alipay.verifier());
        assert_eq!(verified.unwrap()["qr_code"], "https://qr.alipay.com/bax1");
        // The retry unescapes only `\/`: any other change still fails.
        let other = body.replacen("A1", "A2", 1);
        assert!(matches!(
            verify_answer(&other, "alipay.trade.query", &alipay.verifier()),
            Err(ChannelError::Ambiguous(_))
        ));
        // And without any `\/` there is no second try to make.
        let wrong = format!(
            r#"{{"alipay_trade_query_response":{inner},"sign":"{}"}}"#,
            alipay.sign_b64(b"something else")
        );
        assert!(verify_answer(&wrong, "alipay.trade.query", &alipay.verifier()).is_err());
    }
}
