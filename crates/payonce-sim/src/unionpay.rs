//! The UnionPay gateway (UPACP 5.1.0), written from UnionPay's documents with the simulator's
//! own codec (`wire`): the payer's browser submits the front consume form; `queryTrans.do` and
//! `backTransReq.do` answer RAW `k=v&…` text (not url-encoded, as the real gateway does) signed
//! with `signPubKeyCert` included; refunds are accepted first and finish later with a
//! `backUrl` notification. Requests are checked as strictly as the gateway checks them.

use crate::ops::{self, CreateError, NewOrder};
use crate::rng::Draw;
use crate::wire::{
    field, form_encode, form_parse, parse_unionpay_time, unionpay_raw_answer, unionpay_sign,
    unionpay_time, unionpay_verify,
};
use crate::{Sim, SimOrder, SimStatus};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use payonce_core::ChannelName;
use std::sync::Arc;
use std::time::Duration;

pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/gateway/api/frontTransReq.do", post(front_consume))
        .route("/gateway/api/queryTrans.do", post(query))
        .route("/gateway/api/backTransReq.do", post(back_trans))
        // The file-transfer host (filedownload.95516.com) takes fileTransfer at its root.
        .route("/", post(file_transfer))
}

const VERSION: &str = "5.1.0";
/// How far a back-end request's `txnTime` may be from the gateway's clock.
const TXN_TIME_WINDOW_MS: i64 = 3_600_000;

fn p(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_owned(), v.into())
}

/// Signs a message as UnionPay: `signPubKeyCert` is part of what is signed.
fn sign_as_unionpay(sim: &Sim, mut params: Vec<(String, String)>) -> Vec<(String, String)> {
    params.push(p("signPubKeyCert", sim.keys.unionpay_sign_cert.clone()));
    let sig = unionpay_sign(&sim.keys.unionpay_sign, &params);
    params.push(p("signature", sig));
    params
}

/// A synchronous answer: raw `k=v&…`, as the gateway writes it.
fn raw(params: &[(String, String)]) -> Response {
    (
        StatusCode::OK,
        [("content-type", "text/plain;charset=UTF-8")],
        unionpay_raw_answer(params),
    )
        .into_response()
}

/// What every merchant request must carry, and its signature (respCode on failure).
/// `Ok(i)`: merchant `i` of the simulator sent it.
fn check_request(
    sim: &Sim,
    params: &[(String, String)],
    txn: (&str, &str, &str),
) -> Result<usize, (&'static str, String)> {
    let f = |k: &str| field(params, k).unwrap_or_default();
    let required = [
        "version",
        "encoding",
        "signMethod",
        "txnType",
        "txnSubType",
        "bizType",
        "accessType",
        "channelType",
        "merId",
        "orderId",
        "txnTime",
        "certId",
        "signature",
    ];
    if let Some(missing) = required.iter().find(|k| f(k).is_empty()) {
        return Err(("10", format!("{missing} 不能为空")));
    }
    if f("version") != VERSION {
        return Err(("10", format!("version 不合法: {}", f("version"))));
    }
    if !f("encoding").eq_ignore_ascii_case("UTF-8") {
        return Err(("10", "encoding 不合法".into()));
    }
    if f("signMethod") != "01" {
        return Err(("10", "signMethod 不合法".into()));
    }
    if (f("txnType"), f("txnSubType"), f("bizType")) != txn {
        return Err((
            "10",
            format!(
                "txnType/txnSubType/bizType 不合法: {}/{}/{}",
                f("txnType"),
                f("txnSubType"),
                f("bizType")
            ),
        ));
    }
    if f("accessType") != "0" || !matches!(f("channelType"), "07" | "08") {
        return Err(("10", "accessType/channelType 不合法".into()));
    }
    let order_id = f("orderId");
    if !(8..=40).contains(&order_id.len()) || !order_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(("10", "orderId 不合法".into()));
    }
    if parse_unionpay_time(f("txnTime")).is_none() {
        return Err(("10", "txnTime 不合法".into()));
    }
    merchant_signed(sim, params)
}

/// The merchant a request names in `merId`, if its `certId` and signature are that merchant's.
fn merchant_signed(
    sim: &Sim,
    params: &[(String, String)],
) -> Result<usize, (&'static str, String)> {
    let f = |k: &str| field(params, k).unwrap_or_default();
    let Some((i, m)) = sim.keys.unionpay_by_mer_id(f("merId")) else {
        return Err(("31", "商户号不存在".into()));
    };
    if f("certId") != m.cert_id || !unionpay_verify(&m.key, params) {
        return Err(("11", "验证签名失败".into()));
    }
    Ok(i)
}

fn amount_of(params: &[(String, String)]) -> Option<i64> {
    let a = field(params, "txnAmt")?;
    (!a.is_empty() && a.len() <= 12 && a.bytes().all(|b| b.is_ascii_digit()) && !a.starts_with('0'))
        .then(|| a.parse().ok())
        .flatten()
}

/// The payer's browser posts the consume form: the channel order now exists.
async fn front_consume(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let params = form_parse(&body);
    let page =
        |msg: &str| (StatusCode::OK, format!("<html><body>{msg}</body></html>")).into_response();
    let merchant = match check_request(&sim, &params, ("01", "01", "000201")) {
        Ok(m) => m,
        Err((code, msg)) => return page(&format!("{code}: {msg}")),
    };
    let f = |k: &str| field(&params, k).unwrap_or_default().to_owned();
    let Some(amount) = amount_of(&params) else {
        return page("txnAmt 不合法");
    };
    if f("currencyCode") != "156" {
        return page("currencyCode 不合法");
    }
    if f("backUrl").is_empty() {
        return page("backUrl 不能为空");
    }
    let now = sim.now_ms();
    // The form expires at payTimeout (UnionPay's default without one: txnTime + 1 day).
    let txn = parse_unionpay_time(&f("txnTime")).unwrap_or(now);
    if txn > now + 300_000 {
        return page("txnTime 不合法 (in the future)");
    }
    let expire = match f("payTimeout").as_str() {
        "" => txn + 86_400_000,
        t => match parse_unionpay_time(t) {
            Some(t) => t,
            None => return page("payTimeout 不合法"),
        },
    };
    if expire <= now {
        return page("订单已超时 (payTimeout passed)");
    }
    let created = ops::create(
        &sim,
        NewOrder {
            channel: ChannelName::Unionpay,
            merchant,
            out_trade_no: f("orderId"),
            amount,
            subject: f("orderDesc"),
            notify_url: f("backUrl"),
            time_expire: expire,
            credential_valid_until: None,
            // The original txnTime: queries must name it.
            credential: f("txnTime"),
            fingerprint: format!("{}|{}|{}", f("txnTime"), amount, f("payTimeout")),
            initial: SimStatus::Unpaid,
        },
    );
    match created {
        Ok(o) => page(&format!(
            "UnionPay cashier: order {} — {} fen",
            o.out_trade_no, o.amount
        )),
        Err(CreateError::Paid) => page("订单已支付"),
        Err(CreateError::Used) => page("订单号重复"),
    }
}

/// The fields every synchronous answer echoes.
fn answer_base(params: &[(String, String)], resp: &str, msg: &str) -> Vec<(String, String)> {
    let f = |k: &str| field(params, k).unwrap_or_default().to_owned();
    vec![
        p("version", VERSION),
        p("encoding", "UTF-8"),
        p("signMethod", "01"),
        p("txnType", f("txnType")),
        p("txnSubType", f("txnSubType")),
        p("bizType", f("bizType")),
        p("accessType", "0"),
        // The request's own merchant (checked with its certificate before any answer).
        p("merId", f("merId")),
        p("orderId", f("orderId")),
        p("txnTime", f("txnTime")),
        p("respCode", resp),
        p("respMsg", msg),
    ]
}

/// `fileTransfer` (txnType=76): the clearing day `settleDate` (MMDD, the latest such day not in
/// the future) as `fileContent`: base64 of the zlib-deflated zip (`statement::unionpay_file`).
/// `respCode=98` when the day has no file (nothing moved, or the day has not been cleared).
async fn file_transfer(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let params = form_parse(&body);
    let f = |k: &str| field(&params, k).unwrap_or_default().to_owned();
    let answer = |code: &str, msg: &str, extra: Vec<(String, String)>| {
        let mut a = vec![
            p("version", VERSION),
            p("encoding", "UTF-8"),
            p("signMethod", "01"),
            p("txnType", "76"),
            p("txnSubType", "01"),
            p("bizType", "000000"),
            p("accessType", "0"),
            p("merId", f("merId")),
            p("txnTime", f("txnTime")),
            p("settleDate", f("settleDate")),
            p("fileType", f("fileType")),
            p("respCode", code),
            p("respMsg", msg),
        ];
        a.extend(extra);
        raw(&sign_as_unionpay(&sim, a))
    };
    let required = [
        "version",
        "encoding",
        "signMethod",
        "txnType",
        "txnSubType",
        "bizType",
        "accessType",
        "merId",
        "settleDate",
        "txnTime",
        "fileType",
        "certId",
        "signature",
    ];
    if let Some(missing) = required.iter().find(|k| f(k).is_empty()) {
        return answer("10", &format!("{missing} 不能为空"), vec![]);
    }
    if (
        f("version"),
        f("txnType"),
        f("txnSubType"),
        f("bizType"),
        f("accessType"),
        f("fileType"),
    ) != (
        VERSION.into(),
        "76".into(),
        "01".into(),
        "000000".into(),
        "0".into(),
        "00".into(),
    ) {
        return answer("10", "报文要素不合法", vec![]);
    }
    let merchant = match merchant_signed(&sim, &params) {
        Ok(m) => m,
        Err((code, msg)) => return answer(code, &msg, vec![]),
    };
    // The most recent calendar day with that MMDD, up to today (Beijing).
    let settle = f("settleDate");
    let now = sim.now_ms();
    let Some(date) = (0..400)
        .map(|d| crate::wire::beijing_date(now - d * 86_400_000))
        .find(|d| {
            d.get(5..7)
                .zip(d.get(8..10))
                .is_some_and(|(m, dd)| format!("{m}{dd}") == settle)
        })
    else {
        return answer("10", "settleDate 不合法", vec![]);
    };
    if !crate::statement::has_bill(&sim, ChannelName::Unionpay, merchant, &date) {
        return answer("98", "文件不存在", vec![]);
    }
    let (name, zlib) = crate::statement::unionpay_file(&sim, merchant, &date);
    use base64::Engine as _;
    answer(
        "00",
        "成功[0000000]",
        vec![
            p("fileName", name),
            p(
                "fileContent",
                base64::engine::general_purpose::STANDARD.encode(zlib),
            ),
        ],
    )
}

async fn query(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let params = form_parse(&body);
    let merchant = match check_request(&sim, &params, ("00", "00", "000000")) {
        Ok(m) => m,
        Err((code, msg)) => return raw(&sign_as_unionpay(&sim, answer_base(&params, code, &msg))),
    };
    if sim.chance(
        Draw::QueryError,
        sim.faults.lock().unwrap().query_error_rate,
    ) {
        return raw(&sign_as_unionpay(
            &sim,
            answer_base(&params, "03", "交易通讯超时，请发起查询交易"),
        ));
    }
    let (order_id, txn_time) = (
        field(&params, "orderId").unwrap_or_default(),
        field(&params, "txnTime").unwrap_or_default(),
    );
    let now = sim.now_ms();
    let merchant_name = sim.merchant_name(ChannelName::Unionpay, merchant);
    // A refund is a transaction of its own, found by its orderId and txnTime.
    let refund = sim
        .ledger
        .lock()
        .unwrap()
        .refunds
        .iter()
        .find(|r| {
            r.channel == ChannelName::Unionpay
                && r.merchant == merchant_name
                && r.out_refund_no == order_id
                && r.txn_time == txn_time
        })
        .cloned();
    // The answer echoes the ORIGINAL transaction's txnType / txnSubType / bizType, as the real
    // gateway does (01/01/000201 for a consume, 04/00/000201 for a refund).
    let echo_original = |answer: &mut Vec<(String, String)>, t: (&str, &str, &str)| {
        for (k, v) in [("txnType", t.0), ("txnSubType", t.1), ("bizType", t.2)] {
            if let Some(f) = answer.iter_mut().find(|(n, _)| n == k) {
                f.1 = v.to_owned();
            }
        }
    };
    if let Some(r) = refund {
        let (orig, msg) = if r.settled(now) {
            ("00", "成功[0000000]")
        } else {
            ("05", "交易处理中")
        };
        let mut answer = answer_base(&params, "00", "成功[0000000]");
        echo_original(&mut answer, ("04", "00", "000201"));
        answer.extend([
            p("origRespCode", orig),
            p("origRespMsg", msg),
            p("txnAmt", r.amount.to_string()),
            p("queryId", r.refund_id.clone()),
        ]);
        return raw(&sign_as_unionpay(&sim, answer));
    }
    let order = ops::find_for(&sim, ChannelName::Unionpay, merchant, order_id)
        .filter(|o| o.credential == txn_time);
    let Some(o) = order else {
        return raw(&sign_as_unionpay(
            &sim,
            answer_base(&params, "34", "查无此交易"),
        ));
    };
    let mut answer = answer_base(&params, "00", "成功[0000000]");
    echo_original(&mut answer, ("01", "01", "000201"));
    let (orig, msg) = match o.status {
        SimStatus::Paid => ("00", "成功[0000000]"),
        SimStatus::Closed => ("12", "交易超时"),
        _ => ("05", "交易处理中"),
    };
    answer.extend([
        p("origRespCode", orig),
        p("origRespMsg", msg),
        p("txnAmt", o.amount.to_string()),
        p("currencyCode", "156"),
    ]);
    if let Some(q) = o.trade_no.clone().filter(|_| o.status == SimStatus::Paid) {
        answer.extend([
            p("queryId", q),
            p(
                "settleDate",
                crate::wire::unionpay_time(o.paid_at.unwrap_or(now))[4..8].to_owned(),
            ),
        ]);
    }
    raw(&sign_as_unionpay(&sim, answer))
}

/// A refund (`txnType=04`): `origQryId` names the payment by its queryId. Accepted now
/// (respCode 00); the money moves later, then UnionPay notifies `backUrl`.
async fn back_trans(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let params = form_parse(&body);
    let f = |k: &str| field(&params, k).unwrap_or_default().to_owned();
    if f("txnType") != "04" {
        return raw(&sign_as_unionpay(
            &sim,
            answer_base(&params, "12", "不支持的交易类型"),
        ));
    }
    let merchant = match check_request(&sim, &params, ("04", "00", "000201")) {
        Ok(m) => m,
        Err((code, msg)) => return raw(&sign_as_unionpay(&sim, answer_base(&params, code, &msg))),
    };
    let answer =
        |code: &str, msg: &str| raw(&sign_as_unionpay(&sim, answer_base(&params, code, msg)));
    let faults = sim.faults.lock().unwrap().clone();
    if sim.chance(Draw::RefundDrop, faults.refund_drop_rate) {
        // Lost on the way in: UnionPay never saw it; the caller times out.
        tokio::time::sleep(Duration::from_secs(120)).await;
        return answer("03", "交易通讯超时");
    }
    sim.ledger.lock().unwrap().refund_requests += 1;
    let now = sim.now_ms();
    let txn = parse_unionpay_time(&f("txnTime")).unwrap_or(0);
    if (txn - now).abs() > TXN_TIME_WINDOW_MS {
        return answer("30", "txnTime 不合法 (not current)");
    }
    if f("currencyCode") != "156" {
        return answer("30", "currencyCode 不合法");
    }
    if f("backUrl").is_empty() || f("origQryId").is_empty() {
        return answer("30", "backUrl/origQryId 不能为空");
    }
    let Some(amount) = amount_of(&params) else {
        return answer("30", "txnAmt 不合法");
    };
    let delay = {
        let d = sim.faults.lock().unwrap().refund_delay_ms;
        sim.between(Draw::RefundDelay, d[0], d[1]) as i64
    };
    // The ledger's lock is held in this block only (never across an await).
    let made: Result<crate::ledger::Refund, (&str, String)> = (|| {
        let mut ledger = sim.ledger.lock().unwrap();
        // The same refund transaction again (same orderId): 12, duplicate.
        if ledger
            .refunds
            .iter()
            .any(|r| r.channel == ChannelName::Unionpay && r.out_refund_no == f("orderId"))
        {
            return Err(("12", "重复交易".to_owned()));
        }
        let Some(no) = ledger
            .orders
            .values()
            .find(|o| {
                o.channel == ChannelName::Unionpay
                    && o.merchant == merchant
                    && o.trade_no.as_deref() == Some(f("origQryId").as_str())
            })
            .map(|o| o.out_trade_no.clone())
        else {
            return Err(("35", "原交易不存在".to_owned()));
        };
        ledger
            .refund(
                ChannelName::Unionpay,
                merchant,
                &no,
                &f("orderId"),
                amount,
                now,
                now + delay,
            )
            .map_err(|e| ("32", format!("{e:?}")))?;
        let r = ledger
            .refunds
            .iter_mut()
            .rev()
            .find(|r| r.channel == ChannelName::Unionpay && r.out_refund_no == f("orderId"))
            .expect("just made");
        r.txn_time = f("txnTime");
        Ok(r.clone())
    })();
    let refund = match made {
        Ok(r) => r,
        Err((code, msg)) => return answer(code, &msg),
    };
    notify_refund(
        sim.clone(),
        merchant,
        f("backUrl"),
        refund,
        f("origQryId"),
        delay,
    );
    if sim.chance(Draw::RefundTimeout, faults.refund_timeout_rate) {
        // Made, but the answer is lost: the caller times out.
        tokio::time::sleep(Duration::from_secs(120)).await;
    }
    answer("00", "成功[0000000]")
}

/// The fields every `backUrl` notification starts with, for merchant `mer_id`.
fn notification_head(mer_id: &str, txn_type: &str, txn_sub_type: &str) -> Vec<(String, String)> {
    vec![
        p("version", VERSION),
        p("encoding", "UTF-8"),
        p("signMethod", "01"),
        p("txnType", txn_type),
        p("txnSubType", txn_sub_type),
        p("bizType", "000201"),
        p("accessType", "0"),
        p("merId", mer_id),
    ]
}

/// The `backUrl` notification of a refund, once its money moved.
fn notify_refund(
    sim: Arc<Sim>,
    merchant: usize,
    url: String,
    r: crate::ledger::Refund,
    orig_qry_id: String,
    delay_ms: i64,
) {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(delay_ms.max(0) as u64)).await;
        let mer_id = sim.keys.unionpay[merchant].mer_id.clone();
        let mut fields = notification_head(&mer_id, "04", "00");
        fields.extend([
            p("orderId", r.out_refund_no.clone()),
            p("txnTime", r.txn_time.clone()),
            p("txnAmt", r.amount.to_string()),
            p("currencyCode", "156"),
            p("origQryId", orig_qry_id),
            p("queryId", r.refund_id.clone()),
            p("respCode", "00"),
            p("respMsg", "成功[0000000]"),
        ]);
        send_notification(sim, url, fields);
    });
}

/// The `backUrl` notification of a successful consume (an ordinary form POST).
pub(crate) fn notify(sim: Arc<Sim>, order: SimOrder, _event_id: String) {
    let paid_at = order.paid_at.unwrap_or_else(|| sim.now_ms());
    let mer_id = sim.keys.unionpay[order.merchant].mer_id.clone();
    let mut fields = notification_head(&mer_id, "01", "01");
    fields.extend([
        p("orderId", order.out_trade_no.clone()),
        p("txnTime", order.credential.clone()),
        p("txnAmt", order.amount.to_string()),
        p("currencyCode", "156"),
        p("queryId", order.trade_no.clone().unwrap_or_default()),
        p("traceNo", "123456"),
        p("traceTime", unionpay_time(paid_at)[4..].to_owned()),
        p("settleDate", unionpay_time(paid_at)[4..8].to_owned()),
        p("respCode", "00"),
        p("respMsg", "成功[0000000]"),
    ]);
    send_notification(sim, order.notify_url.clone(), fields);
}

/// Signs a `backUrl` notification and posts it as a form, retried until the merchant answers 200.
fn send_notification(sim: Arc<Sim>, url: String, fields: Vec<(String, String)>) {
    let params = sign_as_unionpay(&sim, fields);
    let body = form_encode(&params).into_bytes();
    crate::notify::spawn(
        sim,
        url,
        move || crate::notify::Delivery {
            headers: vec![],
            content_type: "application/x-www-form-urlencoded;charset=UTF-8",
            body: body.clone(),
        },
        |status, _| status == 200,
    );
}
