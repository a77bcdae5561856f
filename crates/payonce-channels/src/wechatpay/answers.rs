//! Reading WeChat's answers: which error codes are definitive or "try again", and what each
//! verified answer (prepay, query, close, refund, refund query) means to payonce — the pure
//! functions docs/channels.md's WX-* rows are tested against.

use super::protocol::{self, ErrorBody, Transaction};
use crate::{ChannelError, CloseAnswer, RefundState, TradeState};
use payonce_core::Timestamp;

/// An answer of WeChat's: its status and body, and whether its platform signature verified
/// (always, for a 2xx; a 4xx may come unsigned).
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) bytes: Vec<u8>,
    pub(super) signed: bool,
}

impl Answer {
    /// The answer, when it is signed or a 2xx; an unsigned 4xx as what its code may say of a
    /// call where a refusal moves no money (`refusal`: refused when WeChat documents the code as
    /// "rejected, nothing done", else unknown) — never a state of an order or a refund (an
    /// unsigned 404 ORDER_NOT_EXIST is not "absent").
    pub(super) fn vouched(self) -> Result<(u16, Vec<u8>), ChannelError> {
        if self.signed {
            return Ok((self.status, self.bytes));
        }
        Err(refusal(self.status, &self.bytes))
    }

    /// As `vouched`, for calls where even a refusal would move money (a refused refund is
    /// failed, its amount released): an unsigned 4xx is unknown.
    pub(super) fn vouched_or_unknown(self) -> Result<(u16, Vec<u8>), ChannelError> {
        if self.signed {
            return Ok((self.status, self.bytes));
        }
        let e = error_of(self.status, &self.bytes);
        Err(ChannelError::Ambiguous(format!(
            "unsigned {} {}",
            self.status, e.code
        )))
    }
}

pub(super) fn error_of(status: u16, body: &[u8]) -> ErrorBody {
    serde_json::from_slice(body).unwrap_or_else(|_| ErrorBody {
        code: format!("HTTP_{status}"),
        message: String::new(),
    })
}

/// A non-success answer: refused only when WeChat documents the code as a definitive
/// rejection; "try again" codes and anything undocumented are unknown (WX-ALL-*).
pub(super) fn refusal(status: u16, body: &[u8]) -> ChannelError {
    let e = error_of(status, body);
    if is_definitive(status, &e.code) {
        ChannelError::Refused {
            code: e.code,
            message: e.message,
        }
    } else {
        ChannelError::Ambiguous(format!("{status} {}", e.code))
    }
}

/// Errors WeChat documents as "try again with the same request": the outcome is unknown, never
/// a failure (WX-R-429, WX-*-SYSTEM_ERROR).
pub fn is_retryable(status: u16, code: &str) -> bool {
    // 202: "accepted, not yet processed — repeat with the same parameters" (WX-ALL-202).
    status == 202
        || status == 429
        || status >= 500
        || matches!(
            code,
            "FREQUENCY_LIMITED" | "RATELIMIT_EXCEEDED" | "SYSTEM_ERROR" | "BANKERROR"
        )
}

/// Codes WeChat documents as "rejected, nothing done" (docs/channels.md WX-*-400/401/403).
pub fn is_definitive(status: u16, code: &str) -> bool {
    matches!(status, 400 | 401 | 403)
        && matches!(
            code,
            "PARAM_ERROR"
                | "INVALID_REQUEST"
                | "APPID_MCHID_NOT_MATCH"
                | "MCH_NOT_EXISTS"
                | "SIGN_ERROR"
                | "NO_AUTH"
                | "RULE_LIMIT"
                | "TRADE_ERROR"
                | "NOT_ENOUGH"
                | "ACCOUNT_ERROR"
                | "USER_ACCOUNT_ABNORMAL"
        )
}

/// Maps `trade_state` (and the amount, for payments) to what payonce understands.
pub fn trade_state_of(t: &Transaction) -> TradeState {
    match t.trade_state.as_str() {
        // REFUND: paid, then (partly) refunded — it was paid.
        "SUCCESS" | "REFUND" => TradeState::Paid {
            amount: t.amount.total,
            channel_trade_no: t.transaction_id.clone(),
            paid_at: Timestamp(
                t.success_time
                    .as_deref()
                    .and_then(protocol::parse_rfc3339_ms)
                    .unwrap_or(0),
            ),
        },
        "CLOSED" | "REVOKED" => TradeState::Closed,
        // NOTPAY, USERPAYING (payer entering a password), PAYERROR (can be retried by the payer).
        _ => TradeState::Unpaid,
    }
}

/// SUCCESS / PROCESSING / ABNORMAL / CLOSED (WX-RQ-*). A status WeChat does not document is
/// read as "still processing" (query again), never as failed.
pub fn refund_state_of(status: &str) -> RefundState {
    match status {
        "SUCCESS" => RefundState::Succeeded,
        "PROCESSING" => RefundState::Processing,
        "ABNORMAL" => RefundState::Abnormal,
        // Closed by WeChat: nothing was refunded.
        "CLOSED" => RefundState::Failed("CLOSED".to_owned()),
        other => {
            tracing::warn!(
                status = other,
                "undocumented wechatpay refund status: querying again"
            );
            RefundState::Processing
        }
    }
}

/// What a prepay answer carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrepayCode {
    CodeUrl(String),
    PrepayId(String),
}

/// A verified prepay answer (WX-P-*). "Already paid", "number used" and "closed" cannot happen
/// to a fresh out_trade_no; on a re-sent or refreshed one they mean the channel order moved:
/// a query tells how, so they are unknown, not refusals.
pub fn prepay_outcome(status: u16, body: &[u8]) -> Result<PrepayCode, ChannelError> {
    if status != 200 {
        let e = error_of(status, body);
        // INVALID_REQUEST includes "a repeat whose parameters differ from the first" (WX-P-400-
        // INVALID_REQUEST); a 404 is not a documented prepay answer (WX-P-404).
        if status == 404
            || matches!(
                e.code.as_str(),
                "ORDERPAID"
                    | "ORDER_PAID"
                    | "OUT_TRADE_NO_USED"
                    | "ORDER_CLOSED"
                    | "ORDERCLOSED"
                    | "INVALID_REQUEST"
            )
        {
            return Err(ChannelError::Ambiguous(format!(
                "{status} {}: query the order",
                e.code
            )));
        }
        return Err(refusal(status, body));
    }
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ChannelError::Ambiguous(e.to_string()))?;
    if let Some(code_url) = v["code_url"].as_str() {
        Ok(PrepayCode::CodeUrl(code_url.to_owned()))
    } else if let Some(prepay_id) = v["prepay_id"].as_str() {
        Ok(PrepayCode::PrepayId(prepay_id.to_owned()))
    } else {
        Err(ChannelError::Ambiguous(
            "prepay answer without code_url or prepay_id".into(),
        ))
    }
}

/// A verified query answer about `out_trade_no` of `mchid` (WX-Q-*); in service-provider mode
/// `mchid` is the sub-merchant's (`sub_mchid`).
pub fn query_outcome(
    status: u16,
    body: &[u8],
    mchid: &str,
    out_trade_no: &str,
) -> Result<TradeState, ChannelError> {
    if status == 404 {
        return Ok(TradeState::Absent);
    }
    if status != 200 {
        let e = error_of(status, body);
        if e.code == "ORDER_NOT_EXIST" || e.code == "ORDERNOTEXIST" {
            return Ok(TradeState::Absent);
        }
        return Err(refusal(status, body));
    }
    let t: Transaction = serde_json::from_slice(body)
        .map_err(|e| ChannelError::Ambiguous(format!("bad query answer: {e}")))?;
    if t.merchant() != mchid || t.out_trade_no != out_trade_no {
        return Err(ChannelError::Ambiguous(
            "query answer about another merchant or order".into(),
        ));
    }
    trade_state_checked(&t)
}

/// `trade_state_of`, refusing states WeChat does not document (never guessed as unpaid).
pub fn trade_state_checked(t: &Transaction) -> Result<TradeState, ChannelError> {
    match t.trade_state.as_str() {
        "SUCCESS" | "REFUND" | "CLOSED" | "REVOKED" | "NOTPAY" | "USERPAYING" | "PAYERROR" => {
            Ok(trade_state_of(t))
        }
        other => Err(ChannelError::Ambiguous(format!(
            "undocumented trade_state {other}"
        ))),
    }
}

/// A verified close answer (WX-C-*).
pub fn close_outcome(status: u16, body: &[u8]) -> Result<CloseAnswer, ChannelError> {
    if status == 204 || status == 200 {
        return Ok(CloseAnswer::Closed);
    }
    let e = error_of(status, body);
    match e.code.as_str() {
        "ORDER_PAID" | "ORDERPAID" | "TRADE_PAID" => Ok(CloseAnswer::AlreadyPaid),
        "ORDER_NOT_EXIST" | "ORDERNOTEXIST" => Ok(CloseAnswer::Absent),
        "ORDER_CLOSED" | "ORDERCLOSED" => Ok(CloseAnswer::Closed),
        _ if status == 404 => Ok(CloseAnswer::Absent),
        _ => Err(refusal(status, body)),
    }
}

/// A verified refund answer (WX-R-*): 429 / SYSTEM_ERROR / 5xx are unknown (retried under the
/// same out_refund_no, which WeChat refunds at most once), other 4xx are definitive refusals.
pub fn refund_outcome(status: u16, body: &[u8]) -> Result<RefundState, ChannelError> {
    if status != 200 {
        let e = error_of(status, body);
        // 404 RESOURCE_NOT_EXISTS contradicts our paid record (seen transiently): query, retry
        // the same out_refund_no, and past a bounded run a person looks (WX-R-404).
        if is_definitive(status, &e.code) {
            return Ok(RefundState::Failed(format!("{}: {}", e.code, e.message)));
        }
        return Err(ChannelError::Ambiguous(format!("{status} {}", e.code)));
    }
    let r: protocol::Refund =
        serde_json::from_slice(body).map_err(|e| ChannelError::Ambiguous(e.to_string()))?;
    refund_status_checked(&r.status)
}

/// `refund_state_of` for answers: a status WeChat does not document is unknown (WX-R-200-OTHER).
pub fn refund_status_checked(status: &str) -> Result<RefundState, ChannelError> {
    match status {
        "SUCCESS" | "PROCESSING" | "ABNORMAL" | "CLOSED" => Ok(refund_state_of(status)),
        other => Err(ChannelError::Ambiguous(format!(
            "undocumented refund status {other}"
        ))),
    }
}

/// A verified refund-query answer (WX-RQ-*).
pub fn refund_query_outcome(status: u16, body: &[u8]) -> Result<RefundState, ChannelError> {
    match status {
        200 => {
            let r: protocol::Refund =
                serde_json::from_slice(body).map_err(|e| ChannelError::Ambiguous(e.to_string()))?;
            refund_status_checked(&r.status)
        }
        404 => Ok(RefundState::Absent),
        _ => Err(refusal(status, body)),
    }
}
