//! The simulated Alipay refunds: `alipay.trade.refund` (synchronous: the money is back when it
//! answers) and `alipay.trade.fastpay.refund.query`.

use super::{business_error, signed};
use crate::Sim;
use crate::ledger::Faults;
use crate::ops;
use crate::rng::Draw;
use crate::wire::{alipay_time, parse_yuan, yuan};
use axum::response::Response;
use payonce_core::ChannelName;
use serde_json::json;
use std::sync::Arc;

/// `alipay.trade.refund`.
pub(super) fn refund(
    sim: &Arc<Sim>,
    merchant: usize,
    method: &str,
    field: &dyn Fn(&str) -> String,
    faults: &Faults,
    now: i64,
) -> Response {
    let (no, req_no) = (field("out_trade_no"), field("out_request_no"));
    let Some(amount) = parse_yuan(&field("refund_amount")) else {
        return business_error(
            sim,
            method,
            "40004",
            "ACQ.INVALID_PARAMETER",
            "refund_amount 不合法",
        );
    };
    let mut ledger = sim.ledger.lock().unwrap();
    ledger.refund_requests += 1;
    if sim.chance(Draw::RefundError, faults.refund_error_rate) {
        drop(ledger);
        return business_error(sim, method, "40004", "ACQ.SYSTEM_ERROR", "系统错误");
    }
    let repeat = ledger.refunds.iter().any(|r| {
        r.channel == ChannelName::Alipay && r.out_trade_no == no && r.out_refund_no == req_no
    });
    // Alipay's refund is synchronous: the money is back when it answers.
    let done = ledger.refund(
        ChannelName::Alipay,
        merchant,
        &no,
        &req_no,
        amount,
        now,
        now,
    );
    drop(ledger);
    match done {
        Ok(_) => {
            let o = ops::find(sim, ChannelName::Alipay, &no).expect("refunded order exists");
            // A repeat of a refund that went through answers success with fund_change N.
            signed(
                sim,
                method,
                json!({"code": "10000", "msg": "Success", "out_trade_no": no,
                "trade_no": o.trade_no, "buyer_logon_id": "abc***@example.com", "fund_change": if repeat { "N" } else { "Y" },
                "refund_fee": yuan(o.refunded), "gmt_refund_pay": alipay_time(now)}),
            )
        }
        Err(crate::ledger::RefundError::NoSuchOrder) => {
            business_error(sim, method, "40004", "ACQ.TRADE_NOT_EXIST", "交易不存在")
        }
        Err(crate::ledger::RefundError::NotPaid) => business_error(
            sim,
            method,
            "40004",
            "ACQ.TRADE_STATUS_ERROR",
            "交易状态不合法",
        ),
        Err(crate::ledger::RefundError::Conflict) => business_error(
            sim,
            method,
            "40004",
            "ACQ.DISCORDANT_REPEAT_REQUEST",
            "不一致的请求",
        ),
        Err(crate::ledger::RefundError::Exceeds) => business_error(
            sim,
            method,
            "40004",
            "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL",
            "退款金额超限",
        ),
    }
}

/// `alipay.trade.fastpay.refund.query`.
pub(super) fn refund_query(
    sim: &Arc<Sim>,
    merchant: usize,
    method: &str,
    field: &dyn Fn(&str) -> String,
) -> Response {
    let (no, req_no) = (field("out_trade_no"), field("out_request_no"));
    let ledger = sim.ledger.lock().unwrap();
    let merchant_name = sim.merchant_name(ChannelName::Alipay, merchant);
    let found = ledger.refunds.iter().find(|r| {
        r.channel == ChannelName::Alipay
            && r.merchant == merchant_name
            && r.out_trade_no == no
            && r.out_refund_no == req_no
    });
    let total = ledger
        .orders
        .get(&(ChannelName::Alipay, no.clone()))
        .map(|o| o.amount)
        .unwrap_or(0);
    // Alipay answers success with no refund fields when the refund does not exist.
    let inner = match found {
        Some(r) => {
            json!({"code": "10000", "msg": "Success", "out_trade_no": no, "out_request_no": req_no,
            "refund_amount": yuan(r.amount), "total_amount": yuan(total), "refund_status": "REFUND_SUCCESS"})
        }
        None => json!({"code": "10000", "msg": "Success"}),
    };
    drop(ledger);
    signed(sim, method, inner)
}
