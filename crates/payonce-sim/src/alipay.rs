//! The Alipay OpenAPI gateway (`/gateway.do`): verifies RSA2 request signatures, answers
//! `{"<method>_response":{…},"sign":"…"}` signed over the exact inner text, and models the
//! precreate QR: no trade exists until it is scanned, a close before that answers
//! `ACQ.TRADE_NOT_EXIST` and leaves the QR payable until its timeout.

use crate::keys::ALIPAY_APP_ID;
use crate::ops::{self, CloseError, CreateError, NewOrder, now_ms};
use crate::{Sim, SimOrder, SimStatus};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use payonce_channels::alipay::protocol::{self, beijing_time, response_name};
use payonce_channels::money::{fen_to_yuan, yuan_to_fen};
use payonce_core::ChannelName;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

pub fn routes() -> Router<Arc<Sim>> {
    Router::new().route("/gateway.do", get(gateway).post(gateway)).route("/alipay-bill", get(bill))
}

fn signed(sim: &Sim, method: &str, inner: Value) -> Response {
    let inner = inner.to_string();
    let sign = sim.keys.alipay_platform.sign_b64(inner.as_bytes());
    let body = format!("{{\"{}\":{inner},\"sign\":\"{sign}\"}}", response_name(method));
    (StatusCode::OK, [("content-type", "application/json;charset=utf-8")], body).into_response()
}

fn business_error(sim: &Sim, method: &str, code: &str, sub_code: &str, sub_msg: &str) -> Response {
    let msg = match code {
        "40002" => "Invalid Arguments",
        "20000" => "Service Currently Unavailable",
        _ => "Business Failed",
    };
    signed(sim, method, json!({"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg}))
}

/// `30m`, `2h`, `1d`, `1c` (until midnight: treated as a day).
fn timeout_ms(s: &str) -> Option<i64> {
    let (n, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: i64 = n.parse().ok()?;
    Some(n * match unit {
        "m" => 60_000,
        "h" => 3_600_000,
        "d" | "c" => 86_400_000,
        _ => return None,
    })
}

/// The bill download (Alipay's URL carries its own short-lived token; the simulator's carries
/// the date).
async fn bill(State(sim): State<Arc<Sim>>, uri: Uri) -> Response {
    let date = uri.query().and_then(|q| q.strip_prefix("date=")).unwrap_or_default();
    ([("content-type", "text/csv; charset=GBK")], crate::statement::alipay_bill(&sim, date)).into_response()
}

async fn gateway(State(sim): State<Arc<Sim>>, headers: axum::http::HeaderMap, uri: Uri, body: Bytes) -> Response {
    // The official SDK puts common parameters in the query and biz_content in the body;
    // others send everything in one or the other.
    let mut params = protocol::parse_form(uri.query().unwrap_or_default().as_bytes());
    params.extend(protocol::parse_form(&body));
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    let method = get("method");
    if method.is_empty() {
        let inner = json!({"code": "40001", "msg": "Missing Required Arguments", "sub_code": "isv.missing-method", "sub_msg": "缺少方法名参数"});
        return (StatusCode::OK, [("content-type", "application/json;charset=utf-8")], json!({"error_response": inner}).to_string()).into_response();
    }
    if get("app_id") != ALIPAY_APP_ID {
        return business_error(&sim, &method, "40002", "isv.invalid-app-id", "无效的AppID参数");
    }
    let sign = get("sign");
    if get("sign_type") != "RSA2" || !sim.keys.alipay_app.verify_b64(protocol::sign_content(&params, &[]).as_bytes(), &sign) {
        return business_error(&sim, &method, "40002", "isv.invalid-signature", "验签出错");
    }
    let biz: Value = serde_json::from_str(&get("biz_content")).unwrap_or(Value::Null);
    let field = |k: &str| biz[k].as_str().unwrap_or_default().to_owned();
    let faults = sim.faults.lock().unwrap().clone();
    match method.as_str() {
        "alipay.trade.precreate" => {
            if sim.chance(faults.prepay_error_rate) {
                return business_error(&sim, &method, "20000", "isp.unknow-error", "系统繁忙");
            }
            let Some(amount) = yuan_to_fen(&field("total_amount")).filter(|a| *a > 0) else {
                return business_error(&sim, &method, "40004", "ACQ.INVALID_PARAMETER", "total_amount 不合法");
            };
            let no = field("out_trade_no");
            let ttl = timeout_ms(&field("timeout_express")).unwrap_or(2 * 3_600_000);
            let created = ops::create(
                &sim,
                NewOrder {
                    channel: ChannelName::Alipay,
                    out_trade_no: no.clone(),
                    amount,
                    subject: field("subject"),
                    notify_url: get("notify_url"),
                    time_expire: now_ms() + ttl,
                    credential: format!("https://qr.alipay.com/bax0{}", no.to_lowercase()),
                    initial: SimStatus::Unscanned,
                },
            );
            match created {
                Ok(o) => {
                    if sim.chance(faults.prepay_timeout_rate) {
                        tokio::time::sleep(Duration::from_secs(120)).await;
                    }
                    signed(&sim, &method, json!({"code": "10000", "msg": "Success", "out_trade_no": no, "qr_code": o.credential}))
                }
                Err(CreateError::Paid) => business_error(&sim, &method, "40004", "ACQ.TRADE_HAS_SUCCESS", "交易已被支付"),
                Err(CreateError::Used) => business_error(&sim, &method, "40004", "ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改"),
            }
        }
        "alipay.trade.query" => {
            if sim.chance(faults.query_error_rate) {
                return business_error(&sim, &method, "20000", "isp.unknow-error", "系统繁忙");
            }
            match ops::find(&sim, ChannelName::Alipay, &field("out_trade_no")) {
                Some(o) if o.status != SimStatus::Unscanned => signed(&sim, &method, trade_view(&o)),
                _ => business_error(&sim, &method, "40004", "ACQ.TRADE_NOT_EXIST", "交易不存在"),
            }
        }
        "alipay.trade.close" => {
            if sim.chance(faults.close_error_rate) {
                return business_error(&sim, &method, "20000", "isp.unknow-error", "系统繁忙");
            }
            let no = field("out_trade_no");
            match ops::close(&sim, ChannelName::Alipay, &no) {
                Ok(()) => signed(&sim, &method, json!({"code": "10000", "msg": "Success", "out_trade_no": no})),
                Err(CloseError::NotExist) => business_error(&sim, &method, "40004", "ACQ.TRADE_NOT_EXIST", "交易不存在"),
                Err(CloseError::Paid) => business_error(&sim, &method, "40004", "ACQ.TRADE_STATUS_ERROR", "交易状态不合法"),
            }
        }
        "alipay.trade.refund" => {
            let no = field("out_trade_no");
            let Some(amount) = yuan_to_fen(&field("refund_amount")) else {
                return business_error(&sim, &method, "40004", "ACQ.INVALID_PARAMETER", "refund_amount 不合法");
            };
            let done = sim.ledger.lock().unwrap().refund(ChannelName::Alipay, &no, &field("out_request_no"), amount, now_ms());
            match done {
                Ok(_) => {
                    let o = ops::find(&sim, ChannelName::Alipay, &no).expect("refunded order exists");
                    signed(&sim, &method, json!({"code": "10000", "msg": "Success", "out_trade_no": no,
                        "trade_no": o.trade_no, "buyer_logon_id": "abc***@example.com", "fund_change": "Y",
                        "refund_fee": fen_to_yuan(o.refunded), "gmt_refund_pay": beijing_time(now_ms())}))
                }
                Err(crate::ledger::RefundError::NoSuchOrder) => business_error(&sim, &method, "40004", "ACQ.TRADE_NOT_EXIST", "交易不存在"),
                Err(crate::ledger::RefundError::NotPaid) => business_error(&sim, &method, "40004", "ACQ.TRADE_STATUS_ERROR", "交易状态不合法"),
                Err(_) => business_error(&sim, &method, "40004", "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限"),
            }
        }
        "alipay.trade.fastpay.refund.query" => {
            let (no, req_no) = (field("out_trade_no"), field("out_request_no"));
            let ledger = sim.ledger.lock().unwrap();
            let found = ledger.refunds.iter().find(|r| r.channel == ChannelName::Alipay && r.out_trade_no == no && r.out_request_no() == req_no);
            let total = ledger.orders.get(&(ChannelName::Alipay, no.clone())).map(|o| o.amount).unwrap_or(0);
            // Alipay answers success with no refund fields when the refund does not exist.
            let inner = match found {
                Some(r) => json!({"code": "10000", "msg": "Success", "out_trade_no": no, "out_request_no": req_no,
                    "refund_amount": fen_to_yuan(r.amount), "total_amount": fen_to_yuan(total), "refund_status": "REFUND_SUCCESS"}),
                None => json!({"code": "10000", "msg": "Success"}),
            };
            drop(ledger);
            signed(&sim, &method, inner)
        }
        "alipay.data.dataservice.bill.downloadurl.query" => {
            let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
            signed(&sim, &method, json!({"code": "10000", "msg": "Success",
                "bill_download_url": format!("http://{host}/alipay-bill?date={}", field("bill_date"))}))
        }
        _ => business_error(&sim, &method, "40004", "isv.invalid-method", "不存在的方法名"),
    }
}

impl crate::ledger::Refund {
    /// Alipay calls the refund number `out_request_no`.
    fn out_request_no(&self) -> &str {
        &self.out_refund_no
    }
}

fn trade_view(o: &SimOrder) -> Value {
    let mut v = json!({
        "code": "10000", "msg": "Success",
        "out_trade_no": o.out_trade_no,
        "trade_no": o.trade_no,
        "buyer_logon_id": "abc***@example.com",
        "trade_status": o.state_name(),
        "total_amount": fen_to_yuan(o.amount),
    });
    if let Some(at) = o.paid_at {
        v["buyer_pay_amount"] = json!(fen_to_yuan(o.amount));
        v["send_pay_date"] = json!(beijing_time(at));
    }
    v
}

/// `trade_status_sync` form POST, signed (as Alipay documents) over every parameter but `sign`
/// and `sign_type`; `notify_time` is the time of each delivery, `notify_id` stays the same.
pub(crate) fn notify(sim: Arc<Sim>, order: SimOrder, event_id: String) {
    let signer = sim.clone();
    let paid_at = beijing_time(order.paid_at.unwrap_or_default());
    let base: Vec<(String, String)> = vec![
        ("notify_type", "trade_status_sync".to_owned()),
        ("notify_id", format!("2026{}", event_id.replace('-', ""))),
        ("app_id", ALIPAY_APP_ID.to_owned()),
        ("auth_app_id", ALIPAY_APP_ID.to_owned()),
        ("charset", "utf-8".to_owned()),
        ("version", "1.0".to_owned()),
        ("trade_no", order.trade_no.clone().unwrap_or_default()),
        ("out_trade_no", order.out_trade_no.clone()),
        ("trade_status", "TRADE_SUCCESS".to_owned()),
        ("total_amount", fen_to_yuan(order.amount)),
        ("receipt_amount", fen_to_yuan(order.amount)),
        ("buyer_pay_amount", fen_to_yuan(order.amount)),
        ("invoice_amount", fen_to_yuan(order.amount)),
        ("point_amount", "0.00".to_owned()),
        ("subject", order.subject.clone()),
        ("buyer_id", "2088102534368455".to_owned()),
        ("seller_id", "2088531891668739".to_owned()),
        ("gmt_create", beijing_time(order.created_at)),
        ("gmt_payment", paid_at),
        ("fund_bill_list", format!("[{{\"amount\":\"{}\",\"fundChannel\":\"ALIPAYACCOUNT\"}}]", fen_to_yuan(order.amount))),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    crate::notify::spawn(
        sim,
        order.notify_url.clone(),
        move || {
            let mut p = base.clone();
            p.push(("notify_time".into(), beijing_time(now_ms())));
            let sign = signer.keys.alipay_platform.sign_b64(protocol::sign_content(&p, &["sign_type"]).as_bytes());
            p.push(("sign_type".into(), "RSA2".into()));
            p.push(("sign".into(), sign));
            crate::notify::Delivery {
                headers: vec![],
                content_type: "application/x-www-form-urlencoded; charset=utf-8",
                body: protocol::encode_form(&p).into_bytes(),
            }
        },
        |status, text| status == 200 && text.trim() == "success",
    );
}
