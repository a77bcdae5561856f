//! The UnionPay gateway (UPACP 5.1.0): the payer's browser submits the front consume form,
//! queries answer signed forms carrying UnionPay's `signPubKeyCert`, and payments are
//! notified to `backUrl`.

use crate::keys::UNIONPAY_MER_ID;
use crate::ops::{self, CreateError, NewOrder, now_ms};
use crate::{Sim, SimOrder, SimStatus};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use payonce_channels::form::{encode as encode_form, parse as parse_form};
use payonce_channels::unionpay::protocol::{self, get, parse_txn_time};
use payonce_core::ChannelName;
use std::sync::Arc;

pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/gateway/api/frontTransReq.do", post(front_consume))
        .route("/gateway/api/queryTrans.do", post(query))
        .route("/gateway/api/backTransReq.do", post(back_trans))
}

fn p(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_owned(), v.into())
}

/// Signs a message as UnionPay: `signPubKeyCert` included in what is signed.
fn sign_as_unionpay(sim: &Sim, mut params: Vec<(String, String)>) -> Vec<(String, String)> {
    params.push(p("signPubKeyCert", sim.keys.unionpay_sign_cert.clone()));
    let sig = protocol::sign(&sim.keys.unionpay_sign, &params);
    params.push(p("signature", sig));
    params
}

fn merchant_authentic(sim: &Sim, params: &[(String, String)]) -> bool {
    get(params, "merId") == Some(UNIONPAY_MER_ID)
        && get(params, "certId") == Some(sim.keys.unionpay_merchant_cert_id.as_str())
        && protocol::verify(&sim.keys.unionpay_merchant, params)
}

fn form(status: StatusCode, params: &[(String, String)]) -> Response {
    (status, [("content-type", "application/x-www-form-urlencoded;charset=UTF-8")], encode_form(params)).into_response()
}

/// The payer's browser posts the consume form: the channel order now exists.
async fn front_consume(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let params = parse_form(&body);
    if !merchant_authentic(&sim, &params) {
        return (StatusCode::OK, "<html><body>验签失败 (signature verification failed)</body></html>").into_response();
    }
    let field = |k: &str| get(&params, k).unwrap_or_default().to_owned();
    let Some(amount) = field("txnAmt").parse::<i64>().ok().filter(|a| *a > 0) else {
        return (StatusCode::OK, "<html><body>txnAmt 不合法</body></html>").into_response();
    };
    let expire = parse_txn_time(&field("payTimeout")).unwrap_or(now_ms() + 3_600_000);
    let created = ops::create(
        &sim,
        NewOrder {
            channel: ChannelName::Unionpay,
            out_trade_no: field("orderId"),
            amount,
            subject: String::new(),
            notify_url: field("backUrl"),
            time_expire: expire,
            // The original txnTime: queries must name it.
            credential: field("txnTime"),
            initial: SimStatus::Unpaid,
        },
    );
    match created {
        Ok(o) => (StatusCode::OK, format!("<html><body>UnionPay cashier: order {} — {} fen</body></html>", o.out_trade_no, o.amount)).into_response(),
        Err(CreateError::Paid) => (StatusCode::OK, "<html><body>订单已支付</body></html>").into_response(),
        Err(CreateError::Used) => (StatusCode::OK, "<html><body>订单号重复</body></html>").into_response(),
    }
}

async fn query(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let params = parse_form(&body);
    let base = |resp: &str, msg: &str| {
        vec![
            p("version", protocol::VERSION),
            p("encoding", "UTF-8"),
            p("signMethod", "01"),
            p("txnType", "00"),
            p("txnSubType", "00"),
            p("bizType", "000000"),
            p("accessType", "0"),
            p("merId", UNIONPAY_MER_ID),
            p("orderId", get(&params, "orderId").unwrap_or_default()),
            p("txnTime", get(&params, "txnTime").unwrap_or_default()),
            p("respCode", resp),
            p("respMsg", msg),
        ]
    };
    if !merchant_authentic(&sim, &params) {
        return form(StatusCode::OK, &sign_as_unionpay(&sim, base("11", "验证签名失败")));
    }
    if sim.chance(sim.faults.lock().unwrap().query_error_rate) {
        return form(StatusCode::OK, &sign_as_unionpay(&sim, base("03", "交易通讯超时，请发起查询交易")));
    }
    // A refund is a transaction of its own, found by its orderId and txnTime.
    let refund = sim.ledger.lock().unwrap().refunds.iter()
        .find(|r| r.channel == ChannelName::Unionpay && Some(r.out_refund_no.as_str()) == get(&params, "orderId") && Some(r.txn_time.as_str()) == get(&params, "txnTime"))
        .cloned();
    if let Some(r) = refund {
        let mut answer = base("00", "成功[0000000]");
        answer.extend([p("origRespCode", "00"), p("origRespMsg", "成功[0000000]"), p("txnAmt", r.amount.to_string()), p("queryId", r.refund_id.clone())]);
        return form(StatusCode::OK, &sign_as_unionpay(&sim, answer));
    }
    let order = ops::find(&sim, ChannelName::Unionpay, get(&params, "orderId").unwrap_or_default())
        .filter(|o| Some(o.credential.as_str()) == get(&params, "txnTime"));
    let Some(o) = order else {
        return form(StatusCode::OK, &sign_as_unionpay(&sim, base("34", "查无此交易")));
    };
    let mut answer = base("00", "成功[0000000]");
    let (orig, msg) = match o.status {
        SimStatus::Paid => ("00", "成功[0000000]"),
        SimStatus::Closed => ("12", "交易超时"),
        _ => ("05", "交易处理中"),
    };
    answer.push(p("origRespCode", orig));
    answer.push(p("origRespMsg", msg));
    answer.push(p("txnAmt", o.amount.to_string()));
    answer.push(p("currencyCode", "156"));
    if let Some(q) = &o.trade_no {
        answer.push(p("queryId", q.clone()));
    }
    form(StatusCode::OK, &sign_as_unionpay(&sim, answer))
}

/// A refund (`txnType=04`): `origQryId` names the payment by its queryId.
async fn back_trans(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let params = parse_form(&body);
    let field = |k: &str| get(&params, k).unwrap_or_default().to_owned();
    let answer = |code: &str, msg: &str| {
        sign_as_unionpay(&sim, vec![
            p("version", protocol::VERSION), p("encoding", "UTF-8"), p("signMethod", "01"), p("txnType", field("txnType")),
            p("txnSubType", "00"), p("bizType", "000201"), p("accessType", "0"), p("merId", UNIONPAY_MER_ID),
            p("orderId", field("orderId")), p("txnTime", field("txnTime")), p("respCode", code), p("respMsg", msg),
        ])
    };
    if !merchant_authentic(&sim, &params) {
        return form(StatusCode::OK, &answer("11", "验证签名失败"));
    }
    if field("txnType") != "04" {
        return form(StatusCode::OK, &answer("12", "不支持的交易类型"));
    }
    let orig = field("origQryId");
    let Ok(amount) = field("txnAmt").parse::<i64>() else { return form(StatusCode::OK, &answer("30", "txnAmt 不合法")) };
    let mut ledger = sim.ledger.lock().unwrap();
    let Some(no) = ledger.orders.values().find(|o| o.channel == ChannelName::Unionpay && o.trade_no.as_deref() == Some(orig.as_str())).map(|o| o.out_trade_no.clone()) else {
        drop(ledger);
        return form(StatusCode::OK, &answer("35", "原交易不存在"));
    };
    let done = ledger.refund(ChannelName::Unionpay, &no, &field("orderId"), amount, now_ms());
    if done.is_ok()
        && let Some(r) = ledger.refunds.iter_mut().rev().find(|r| r.channel == ChannelName::Unionpay && r.out_refund_no == field("orderId"))
            && r.txn_time.is_empty() {
                r.txn_time = field("txnTime");
            }
    drop(ledger);
    match done {
        Ok(_) => form(StatusCode::OK, &answer("00", "成功[0000000]")),
        Err(e) => form(StatusCode::OK, &answer("32", &format!("{e:?}"))),
    }
}

/// The `backUrl` notification of a successful consume.
pub(crate) fn notify(sim: Arc<Sim>, order: SimOrder, _event_id: String) {
    let params = sign_as_unionpay(
        &sim,
        vec![
            p("version", protocol::VERSION),
            p("encoding", "UTF-8"),
            p("signMethod", "01"),
            p("txnType", "01"),
            p("txnSubType", "01"),
            p("bizType", "000201"),
            p("accessType", "0"),
            p("merId", UNIONPAY_MER_ID),
            p("orderId", order.out_trade_no.clone()),
            p("txnTime", order.credential.clone()),
            p("txnAmt", order.amount.to_string()),
            p("currencyCode", "156"),
            p("queryId", order.trade_no.clone().unwrap_or_default()),
            p("traceNo", "123456"),
            p("settleDate", "1123"),
            p("respCode", "00"),
            p("respMsg", "成功[0000000]"),
        ],
    );
    let body = encode_form(&params).into_bytes();
    crate::notify::spawn(
        sim,
        order.notify_url.clone(),
        move || crate::notify::Delivery { headers: vec![], content_type: "application/x-www-form-urlencoded;charset=UTF-8", body: body.clone() },
        |status, _| status == 200,
    );
}
