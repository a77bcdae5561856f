//! The WeChat Pay v3 gateway: verifies merchant signatures, answers signed with the platform
//! public key (`PUB_KEY_ID_…`), and notifies with AEAD_AES_256_GCM-encrypted resources.

use crate::keys::{WECHAT_APPID, WECHAT_MCHID};
use crate::ops::{self, CloseError, CreateError, NewOrder, now_ms};
use crate::{Sim, SimOrder, SimStatus};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use payonce_channels::crypto::nonce;
use payonce_channels::wechatpay::protocol::{self, Amount, EncryptedResource, NotifyEnvelope, PrepayBody, RefundBody, Transaction};
use payonce_core::ChannelName;
use std::sync::Arc;
use std::time::Duration;

pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/v3/pay/transactions/native", post(prepay))
        .route("/v3/pay/transactions/jsapi", post(prepay))
        .route("/v3/pay/transactions/out-trade-no/{no}", get(query))
        .route("/v3/pay/transactions/out-trade-no/{no}/close", post(close))
        .route("/v3/refund/domestic/refunds", post(refund))
        .route("/v3/refund/domestic/refunds/{no}", get(refund_query))
        .route("/v3/bill/tradebill", get(tradebill))
        .route("/v3/billdownload/file", get(bill_download))
}

/// Headers of a platform-signed message: `TS\nNONCE\nBODY\n` under the platform key.
fn platform_headers(sim: &Sim, body: &[u8]) -> Vec<(String, String)> {
    let ts = (now_ms() / 1000).to_string();
    let n = nonce(32);
    let sig = sim.keys.wechat_platform.sign_b64(&protocol::response_message(&ts, &n, body));
    vec![
        ("Wechatpay-Timestamp".into(), ts),
        ("Wechatpay-Nonce".into(), n),
        ("Wechatpay-Signature".into(), sig),
        ("Wechatpay-Serial".into(), sim.keys.wechat_platform_key_id.clone()),
        ("Wechatpay-Signature-Type".into(), protocol::SIGNATURE_TYPE.into()),
    ]
}

fn signed(sim: &Sim, status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = (status, body.clone()).into_response();
    let h = resp.headers_mut();
    h.insert("content-type", "application/json".parse().unwrap());
    h.insert("request-id", nonce(24).parse().unwrap());
    for (k, v) in platform_headers(sim, &body) {
        h.insert(axum::http::HeaderName::try_from(k).unwrap(), v.parse().unwrap());
    }
    resp
}

fn error(sim: &Sim, status: StatusCode, code: &str, message: &str) -> Response {
    signed(sim, status, serde_json::json!({"code": code, "message": message}).to_string().into_bytes())
}

/// Checks the merchant's `Authorization` header as the real gateway does.
fn authentic(sim: &Sim, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(fields) = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(protocol::parse_authorization) else {
        return false;
    };
    let get = |k: &str| fields.get(k).map(String::as_str).unwrap_or_default();
    let Ok(ts) = get("timestamp").parse::<i64>() else { return false };
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let msg = protocol::request_message(method.as_str(), path, ts, get("nonce_str"), &String::from_utf8_lossy(body));
    get("mchid") == WECHAT_MCHID
        && get("serial_no").eq_ignore_ascii_case(&sim.keys.wechat_merchant_serial)
        && (now_ms() / 1000 - ts).abs() <= protocol::MAX_SKEW_SECS
        && sim.keys.wechat_merchant.verify_b64(msg.as_bytes(), get("signature"))
}

async fn prepay(State(sim): State<Arc<Sim>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    if !authentic(&sim, &method, &uri, &headers, &body) {
        return error(&sim, StatusCode::UNAUTHORIZED, "SIGN_ERROR", "签名错误");
    }
    let req: PrepayBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(&sim, StatusCode::BAD_REQUEST, "PARAM_ERROR", &e.to_string()),
    };
    let jsapi = uri.path().ends_with("/jsapi");
    let openid = req.payer.as_ref().and_then(|p| p.get("openid")).and_then(|v| v.as_str());
    if req.mchid != WECHAT_MCHID || req.appid != WECHAT_APPID {
        return error(&sim, StatusCode::BAD_REQUEST, "PARAM_ERROR", "mchid或appid不正确");
    }
    if req.amount.total <= 0 || req.out_trade_no.len() < 6 || req.out_trade_no.len() > 32 || (jsapi && openid.is_none()) {
        return error(&sim, StatusCode::BAD_REQUEST, "PARAM_ERROR", "参数错误");
    }
    let faults = sim.faults.lock().unwrap().clone();
    if sim.chance(faults.prepay_error_rate) {
        return error(&sim, StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR", "系统错误");
    }
    let time_expire = req.time_expire.as_deref().and_then(protocol::parse_rfc3339_ms).unwrap_or(now_ms() + 2 * 3600 * 1000);
    let credential = if jsapi { format!("wx{}", nonce(30).to_lowercase()) } else { format!("weixin://wxpay/bizpayurl?pr={}", nonce(10)) };
    let created = ops::create(
        &sim,
        NewOrder {
            channel: ChannelName::Wechatpay,
            out_trade_no: req.out_trade_no.clone(),
            amount: req.amount.total,
            subject: req.description.clone(),
            notify_url: req.notify_url.clone(),
            time_expire,
            credential,
            initial: SimStatus::Unpaid,
        },
    );
    match created {
        Ok(o) => {
            if sim.chance(faults.prepay_timeout_rate) {
                tokio::time::sleep(Duration::from_secs(120)).await;
            }
            let body = if o.credential.starts_with("weixin://") {
                serde_json::json!({ "code_url": o.credential })
            } else {
                serde_json::json!({ "prepay_id": o.credential })
            };
            signed(&sim, StatusCode::OK, body.to_string().into_bytes())
        }
        Err(CreateError::Paid) => error(&sim, StatusCode::FORBIDDEN, "ORDERPAID", "该订单已支付"),
        Err(CreateError::Used) => error(&sim, StatusCode::BAD_REQUEST, "OUT_TRADE_NO_USED", "商户订单号重复"),
    }
}

fn transaction(o: &SimOrder) -> Transaction {
    let paid = o.status == SimStatus::Paid;
    Transaction {
        appid: WECHAT_APPID.into(),
        mchid: WECHAT_MCHID.into(),
        out_trade_no: o.out_trade_no.clone(),
        transaction_id: o.trade_no.clone().filter(|_| paid),
        trade_type: Some(if o.credential.starts_with("weixin://") { "NATIVE" } else { "JSAPI" }.into()),
        trade_state: o.state_name().into(),
        trade_state_desc: match o.state_name() {
            "SUCCESS" => "支付成功",
            "REFUND" => "转入退款",
            "CLOSED" => "已关闭",
            _ => "未支付",
        }
        .into(),
        success_time: o.paid_at.filter(|_| paid).map(protocol::beijing_rfc3339),
        amount: Amount {
            total: o.amount,
            currency: Some("CNY".into()),
            payer_total: paid.then_some(o.amount),
            payer_currency: paid.then(|| "CNY".into()),
        },
    }
}

async fn query(State(sim): State<Arc<Sim>>, Path(no): Path<String>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if !authentic(&sim, &method, &uri, &headers, b"") {
        return error(&sim, StatusCode::UNAUTHORIZED, "SIGN_ERROR", "签名错误");
    }
    if !uri.query().unwrap_or_default().contains(&format!("mchid={WECHAT_MCHID}")) {
        return error(&sim, StatusCode::BAD_REQUEST, "PARAM_ERROR", "缺少mchid");
    }
    if sim.chance(sim.faults.lock().unwrap().query_error_rate) {
        return error(&sim, StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR", "系统错误");
    }
    match ops::find(&sim, ChannelName::Wechatpay, &no) {
        Some(o) => signed(&sim, StatusCode::OK, serde_json::to_vec(&transaction(&o)).unwrap()),
        None => error(&sim, StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在"),
    }
}

async fn close(State(sim): State<Arc<Sim>>, Path(no): Path<String>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    if !authentic(&sim, &method, &uri, &headers, &body) {
        return error(&sim, StatusCode::UNAUTHORIZED, "SIGN_ERROR", "签名错误");
    }
    if sim.chance(sim.faults.lock().unwrap().close_error_rate) {
        return error(&sim, StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR", "系统错误");
    }
    match ops::close(&sim, ChannelName::Wechatpay, &no) {
        Ok(()) => signed(&sim, StatusCode::NO_CONTENT, Vec::new()),
        Err(CloseError::NotExist) => error(&sim, StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在"),
        Err(CloseError::Paid) => error(&sim, StatusCode::BAD_REQUEST, "ORDERPAID", "订单已支付，不能关单"),
    }
}

/// `GET /v3/bill/tradebill`: where to download the day's bill, and its SHA-1.
async fn tradebill(State(sim): State<Arc<Sim>>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if !authentic(&sim, &method, &uri, &headers, b"") {
        return error(&sim, StatusCode::UNAUTHORIZED, "SIGN_ERROR", "签名错误");
    }
    let date = uri.query().unwrap_or_default().split('&').find_map(|kv| kv.strip_prefix("bill_date=")).unwrap_or_default().to_owned();
    let bill = crate::statement::wechat_bill(&sim, &date);
    let sha1 = hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, bill.as_bytes()).as_ref());
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    let body = serde_json::json!({"hash_type": "SHA1", "hash_value": sha1, "download_url": format!("http://{host}/v3/billdownload/file?token={date}")});
    signed(&sim, StatusCode::OK, body.to_string().into_bytes())
}

/// The bill itself: a signed request, an unsigned CSV answer (its hash was in the signed one).
async fn bill_download(State(sim): State<Arc<Sim>>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if !authentic(&sim, &method, &uri, &headers, b"") {
        return error(&sim, StatusCode::UNAUTHORIZED, "SIGN_ERROR", "签名错误");
    }
    let date = uri.query().and_then(|q| q.strip_prefix("token=")).unwrap_or_default();
    ([("content-type", "text/plain; charset=utf-8")], crate::statement::wechat_bill(&sim, date)).into_response()
}

fn refund_view(r: &crate::ledger::Refund, total: i64) -> serde_json::Value {
    serde_json::json!({
        "refund_id": r.refund_id,
        "out_refund_no": r.out_refund_no,
        "transaction_id": "",
        "out_trade_no": r.out_trade_no,
        "channel": "ORIGINAL",
        "user_received_account": "支付用户零钱",
        "success_time": protocol::beijing_rfc3339(r.at),
        "create_time": protocol::beijing_rfc3339(r.at),
        "status": "SUCCESS",
        "funds_account": "AVAILABLE",
        "amount": {"total": total, "refund": r.amount, "payer_total": total, "payer_refund": r.amount,
                   "settlement_refund": r.amount, "settlement_total": total, "discount_refund": 0, "currency": "CNY"},
    })
}

async fn refund(State(sim): State<Arc<Sim>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    if !authentic(&sim, &method, &uri, &headers, &body) {
        return error(&sim, StatusCode::UNAUTHORIZED, "SIGN_ERROR", "签名错误");
    }
    let req: RefundBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(&sim, StatusCode::BAD_REQUEST, "PARAM_ERROR", &e.to_string()),
    };
    let done = sim.ledger.lock().unwrap().refund(ChannelName::Wechatpay, &req.out_trade_no, &req.out_refund_no, req.amount.refund, now_ms());
    match done {
        Ok(r) => {
            if let Some(url) = req.notify_url.clone().filter(|u| !u.is_empty()) {
                notify_refund(sim.clone(), url, &r, req.amount.total);
            }
            signed(&sim, StatusCode::OK, refund_view(&r, req.amount.total).to_string().into_bytes())
        }
        Err(crate::ledger::RefundError::NoSuchOrder | crate::ledger::RefundError::NotPaid) => {
            error(&sim, StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "订单不存在或未支付")
        }
        Err(crate::ledger::RefundError::Exceeds) => error(&sim, StatusCode::FORBIDDEN, "NOT_ENOUGH", "退款金额超过可退金额"),
        Err(crate::ledger::RefundError::Conflict) => error(&sim, StatusCode::BAD_REQUEST, "INVALID_REQUEST", "退款单号已用于其他退款"),
    }
}

async fn refund_query(State(sim): State<Arc<Sim>>, Path(no): Path<String>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if !authentic(&sim, &method, &uri, &headers, b"") {
        return error(&sim, StatusCode::UNAUTHORIZED, "SIGN_ERROR", "签名错误");
    }
    let ledger = sim.ledger.lock().unwrap();
    let found = ledger.refunds.iter().find(|r| r.channel == ChannelName::Wechatpay && r.out_refund_no == no).cloned();
    let total = found.as_ref().and_then(|r| ledger.orders.get(&(ChannelName::Wechatpay, r.out_trade_no.clone()))).map(|o| o.amount);
    drop(ledger);
    match found {
        Some(r) => signed(&sim, StatusCode::OK, refund_view(&r, total.unwrap_or(r.amount)).to_string().into_bytes()),
        None => error(&sim, StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "退款单不存在"),
    }
}

/// `REFUND.SUCCESS` for a refund that was requested with a `notify_url`.
fn notify_refund(sim: Arc<Sim>, url: String, r: &crate::ledger::Refund, total: i64) {
    let resource = serde_json::json!({
        "mchid": WECHAT_MCHID, "out_trade_no": r.out_trade_no, "transaction_id": "", "out_refund_no": r.out_refund_no,
        "refund_id": r.refund_id, "refund_status": "SUCCESS", "success_time": protocol::beijing_rfc3339(r.at),
        "user_received_account": "支付用户零钱",
        "amount": {"total": total, "refund": r.amount, "payer_total": total, "payer_refund": r.amount},
    });
    let (n, ct) = protocol::encrypt_resource(sim.keys.wechat_apiv3.expose(), "refund", resource.to_string().as_bytes());
    let env = NotifyEnvelope {
        id: format!("EV-R-{}", r.refund_id),
        create_time: protocol::beijing_rfc3339(now_ms()),
        resource_type: "encrypt-resource".into(),
        event_type: "REFUND.SUCCESS".into(),
        summary: "退款成功".into(),
        resource: EncryptedResource { original_type: "refund".into(), algorithm: "AEAD_AES_256_GCM".into(), ciphertext: ct, associated_data: "refund".into(), nonce: n },
    };
    let body = serde_json::to_vec(&env).unwrap();
    let signer = sim.clone();
    crate::notify::spawn(
        sim,
        url,
        move || crate::notify::Delivery { headers: platform_headers(&signer, &body), content_type: "application/json", body: body.clone() },
        |status, _| status == 200 || status == 204,
    );
}

/// `TRANSACTION.SUCCESS`: the transaction encrypted with the APIv3 key, the envelope signed
/// by the platform key (re-signed per delivery, as its timestamp must be fresh).
pub(crate) fn notify(sim: Arc<Sim>, order: SimOrder, event_id: String) {
    let t = transaction(&order);
    let (n, ct) = protocol::encrypt_resource(sim.keys.wechat_apiv3.expose(), "transaction", serde_json::to_string(&t).unwrap().as_bytes());
    let env = NotifyEnvelope {
        id: format!("EV-{event_id}"),
        create_time: protocol::beijing_rfc3339(now_ms()),
        resource_type: "encrypt-resource".into(),
        event_type: "TRANSACTION.SUCCESS".into(),
        summary: "支付成功".into(),
        resource: EncryptedResource {
            original_type: "transaction".into(),
            algorithm: "AEAD_AES_256_GCM".into(),
            ciphertext: ct,
            associated_data: "transaction".into(),
            nonce: n,
        },
    };
    let body = serde_json::to_vec(&env).unwrap();
    let signer = sim.clone();
    crate::notify::spawn(
        sim,
        order.notify_url.clone(),
        move || crate::notify::Delivery { headers: platform_headers(&signer, &body), content_type: "application/json", body: body.clone() },
        |status, _| status == 200 || status == 204,
    );
}
