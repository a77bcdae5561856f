//! The simulated WeChat refunds: apply, query, and the `REFUND.SUCCESS` notification once the
//! money has moved.

use super::{acting_for, authentic, envelope, error, param_error, platform_headers, signed};
use crate::Sim;
use crate::keys::MerchantRole;
use crate::ops;
use crate::rng::Draw;
use crate::wire::wechat_time;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use payonce_core::ChannelName;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

fn refund_view(sim: &Sim, r: &crate::ledger::Refund, total: i64, transaction_id: &str) -> Value {
    let done = r.settled(sim.now_ms());
    let mut v = json!({
        "refund_id": r.refund_id,
        "out_refund_no": r.out_refund_no,
        "transaction_id": transaction_id,
        "out_trade_no": r.out_trade_no,
        "channel": "ORIGINAL",
        "user_received_account": "支付用户零钱",
        "create_time": wechat_time(r.at),
        "status": if done { "SUCCESS" } else { "PROCESSING" },
        "funds_account": "AVAILABLE",
        "amount": {"total": total, "refund": r.amount, "payer_total": total, "payer_refund": r.amount,
                   "settlement_refund": r.amount, "settlement_total": total, "discount_refund": 0, "currency": "CNY"},
    });
    if done {
        v["success_time"] = json!(wechat_time(r.settle_at));
    }
    v
}

pub(super) async fn refund(
    State(sim): State<Arc<Sim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(signer) = authentic(&sim, &method, &uri, &headers, &body) else {
        return error(&sim, StatusCode::UNAUTHORIZED, "SIGN_ERROR", "签名错误");
    };
    let Ok(req @ Value::Object(_)) = serde_json::from_slice::<Value>(&body) else {
        return param_error(&sim, "请求体不是JSON对象");
    };
    // A service provider refunds a sub-merchant's order by naming it (`sub_mchid`).
    let sub_mchid = req.get("sub_mchid").map(|v| v.as_str().unwrap_or_default());
    let merchant = match acting_for(&sim, signer, sub_mchid) {
        Ok(m) => m,
        Err(refused) => return *refused,
    };
    let s = |k: &str| req[k].as_str().unwrap_or_default().to_owned();
    let (no, refund_no) = (s("out_trade_no"), s("out_refund_no"));
    if no.is_empty() || !(1..=64).contains(&refund_no.len()) {
        return param_error(&sim, "out_trade_no/out_refund_no 不合法");
    }
    let (Some(amount), Some(total)) = (
        req["amount"]["refund"].as_i64().filter(|a| *a > 0),
        req["amount"]["total"].as_i64(),
    ) else {
        return param_error(&sim, "amount.refund/amount.total 不合法");
    };
    if req["amount"]["currency"] != "CNY" {
        return param_error(&sim, "amount.currency 须为 CNY");
    }
    let Some(order) = ops::find_for(&sim, ChannelName::Wechatpay, merchant, &no) else {
        return error(
            &sim,
            StatusCode::NOT_FOUND,
            "RESOURCE_NOT_EXISTS",
            "订单不存在",
        );
    };
    // amount.total must be what the order was.
    if total != order.amount {
        return param_error(&sim, "amount.total 与原订单金额不一致");
    }
    let faults = sim.faults.lock().unwrap().clone();
    sim.ledger.lock().unwrap().refund_requests += 1;
    if sim.chance(Draw::RefundError, faults.refund_error_rate) {
        // WeChat's rate limit: nothing was done; try again later with the same out_refund_no.
        return error(
            &sim,
            StatusCode::TOO_MANY_REQUESTS,
            "FREQUENCY_LIMITED",
            "频率超限",
        );
    }
    let now = sim.now_ms();
    let settle_at = now
        + sim.between(
            Draw::RefundDelay,
            faults.refund_delay_ms[0],
            faults.refund_delay_ms[1],
        ) as i64;
    let done = sim.ledger.lock().unwrap().refund(
        ChannelName::Wechatpay,
        merchant,
        &no,
        &refund_no,
        amount,
        now,
        settle_at,
    );
    match done {
        Ok(r) => {
            let tid = order.trade_no.clone().unwrap_or_default();
            if let Some(url) = req["notify_url"].as_str().filter(|u| !u.is_empty()) {
                notify_refund(
                    sim.clone(),
                    merchant,
                    url.to_owned(),
                    r.clone(),
                    total,
                    tid.clone(),
                );
            }
            signed(
                &sim,
                StatusCode::OK,
                refund_view(&sim, &r, total, &tid).to_string().into_bytes(),
            )
        }
        Err(crate::ledger::RefundError::NoSuchOrder | crate::ledger::RefundError::NotPaid) => {
            error(
                &sim,
                StatusCode::NOT_FOUND,
                "RESOURCE_NOT_EXISTS",
                "订单不存在或未支付",
            )
        }
        Err(crate::ledger::RefundError::Exceeds) => error(
            &sim,
            StatusCode::FORBIDDEN,
            "NOT_ENOUGH",
            "退款金额超过可退金额",
        ),
        Err(crate::ledger::RefundError::Conflict) => error(
            &sim,
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "退款单号已用于其他退款",
        ),
    }
}

pub(super) async fn refund_query(
    State(sim): State<Arc<Sim>>,
    Path(no): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let Some(signer) = authentic(&sim, &method, &uri, &headers, b"") else {
        return error(&sim, StatusCode::UNAUTHORIZED, "SIGN_ERROR", "签名错误");
    };
    let sub_mchid = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("sub_mchid="));
    let merchant = match acting_for(&sim, signer, sub_mchid) {
        Ok(m) => m,
        Err(refused) => return *refused,
    };
    if sim.chance(
        Draw::QueryError,
        sim.faults.lock().unwrap().query_error_rate,
    ) {
        return error(
            &sim,
            StatusCode::INTERNAL_SERVER_ERROR,
            "SYSTEM_ERROR",
            "系统错误",
        );
    }
    let ledger = sim.ledger.lock().unwrap();
    let found = ledger
        .refunds
        .iter()
        .find(|r| r.channel == ChannelName::Wechatpay && r.out_refund_no == no)
        .cloned();
    let order = found
        .as_ref()
        .and_then(|r| {
            ledger
                .orders
                .get(&(ChannelName::Wechatpay, r.out_trade_no.clone()))
        })
        .filter(|o| o.merchant == merchant)
        .cloned();
    drop(ledger);
    match (found, order) {
        (Some(r), Some(o)) => signed(
            &sim,
            StatusCode::OK,
            refund_view(
                &sim,
                &r,
                o.amount,
                o.trade_no.as_deref().unwrap_or_default(),
            )
            .to_string()
            .into_bytes(),
        ),
        _ => error(
            &sim,
            StatusCode::NOT_FOUND,
            "RESOURCE_NOT_EXISTS",
            "退款单不存在",
        ),
    }
}

/// `REFUND.SUCCESS`, once the refund's money has moved.
fn notify_refund(
    sim: Arc<Sim>,
    merchant: usize,
    url: String,
    r: crate::ledger::Refund,
    total: i64,
    transaction_id: String,
) {
    tokio::spawn(async move {
        let wait = (r.settle_at - sim.now_ms()).max(0) as u64;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let mut resource = json!({
            "out_trade_no": r.out_trade_no, "transaction_id": transaction_id, "out_refund_no": r.out_refund_no,
            "refund_id": r.refund_id, "refund_status": "SUCCESS", "success_time": wechat_time(r.settle_at),
            "user_received_account": "支付用户零钱",
            "amount": {"total": total, "refund": r.amount, "payer_total": total, "payer_refund": r.amount},
        });
        let m = &sim.keys.wechat[merchant];
        match m.role {
            MerchantRole::SubMerchant { provider } => {
                resource["sp_mchid"] = json!(sim.keys.wechat[provider].mchid);
                resource["sub_mchid"] = json!(m.mchid);
            }
            _ => resource["mchid"] = json!(m.mchid),
        }
        let body = envelope(
            &sim,
            merchant,
            format!("EV-R-{}", r.refund_id),
            "REFUND.SUCCESS",
            "退款成功",
            "refund",
            &resource,
        );
        let signer = sim.clone();
        crate::notify::spawn(
            sim,
            url,
            move || crate::notify::Delivery {
                headers: platform_headers(&signer, &body),
                content_type: "application/json",
                body: body.clone(),
            },
            |status, _| status == 200 || status == 204,
        );
    });
}
