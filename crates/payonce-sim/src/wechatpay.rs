//! The WeChat Pay v3 gateway, written from WeChat's documents with the simulator's own codec
//! (`wire`): merchant `Authorization` signatures checked (timestamp against the channels' clock),
//! answers signed with the platform key — by `PUB_KEY_ID_…` or, in certificate mode, by a
//! platform certificate that can be rotated (`GET /v3/certificates` lists old and new) — and
//! notifications with AEAD_AES_256_GCM resources. A `code_url` / `prepay_id` lives 2 hours; a
//! repeat of a prepay with identical parameters re-issues it. Refunds answer `PROCESSING` and
//! succeed later, with a `REFUND.SUCCESS` notification.

use crate::keys::{WECHAT_APPID, WECHAT_MCHID};
use crate::ops::{self, CloseError, CreateError, NewOrder};
use crate::rng::Draw;
use crate::wire::{
    parse_wechat_authorization, parse_wechat_time, wechat_answer_message, wechat_encrypt,
    wechat_request_message, wechat_time,
};
use crate::{Sim, SimOrder, SimStatus};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use payonce_core::ChannelName;
use serde_json::{Value, json};
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
        .route("/v3/certificates", get(certificates))
        .layer(axum::middleware::from_fn(remember_requested_serial))
}

tokio::task_local! {
    /// The `Wechatpay-Serial` of the request being answered: the key the merchant asks WeChat
    /// to sign the answer with.
    static REQUESTED_SERIAL: Option<String>;
}

async fn remember_requested_serial(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let serial = req
        .headers()
        .get("wechatpay-serial")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    REQUESTED_SERIAL.scope(serial, next.run(req)).await
}

/// The key and serial WeChat signs a message with. A merchant that completed the switch to the
/// platform public key (`public_key` mode) gets everything signed by it. Otherwise an answer is
/// signed by the key its request names in `Wechatpay-Serial` — the public key id or a listed
/// certificate — and, when none is named (a notification, an old client), by the current
/// platform certificate: WeChat's rule during the switch from certificates to the public key.
fn signing_key(sim: &Sim) -> (Arc<payonce_channels::crypto::RsaSigner>, String) {
    let current = sim.keys.wechat_signing.lock().unwrap();
    if current.serial == sim.keys.wechat_platform_key_id {
        return (current.key.clone(), current.serial.clone());
    }
    let named = REQUESTED_SERIAL.try_with(Clone::clone).ok().flatten();
    let certs = sim.keys.wechat_certificates.lock().unwrap();
    match named {
        // The public key is the key of the first certificate (keys.rs).
        Some(n) if n == sim.keys.wechat_platform_key_id => (certs[0].key.clone(), n),
        // A retired (expired) certificate is not used, whatever the request names.
        Some(n) => match certs
            .iter()
            .find(|c| c.serial.eq_ignore_ascii_case(&n) && c.expire_at > sim.now_ms())
        {
            Some(c) => (c.key.clone(), c.serial.clone()),
            None => (current.key.clone(), current.serial.clone()),
        },
        None => (current.key.clone(), current.serial.clone()),
    }
}

/// WeChat: "prepay_id 有效期为2小时" (the code_url likewise).
const CREDENTIAL_LIFE_MS: i64 = 2 * 3_600_000;
/// A request's `timestamp` may be this far from WeChat's clock.
const MAX_SKEW_MS: i64 = 300_000;

/// Headers of a platform-signed message: `TS\nNONCE\nBODY\n` under the key `signing_key` picks.
fn platform_headers(sim: &Sim, body: &[u8]) -> Vec<(String, String)> {
    let ts = (sim.now_ms() / 1000).to_string();
    let n = sim.nonce(32);
    let (key, serial) = signing_key(sim);
    let sig = key.sign_b64(&wechat_answer_message(&ts, &n, body));
    vec![
        ("Wechatpay-Timestamp".into(), ts),
        ("Wechatpay-Nonce".into(), n),
        ("Wechatpay-Signature".into(), sig),
        ("Wechatpay-Serial".into(), serial),
        (
            "Wechatpay-Signature-Type".into(),
            "WECHATPAY2-SHA256-RSA2048".into(),
        ),
    ]
}

fn signed(sim: &Sim, status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = (status, body.clone()).into_response();
    let h = resp.headers_mut();
    h.insert("content-type", "application/json".parse().unwrap());
    h.insert("request-id", sim.nonce(24).parse().unwrap());
    for (k, v) in platform_headers(sim, &body) {
        h.insert(
            axum::http::HeaderName::try_from(k).unwrap(),
            v.parse().unwrap(),
        );
    }
    resp
}

fn error(sim: &Sim, status: StatusCode, code: &str, message: &str) -> Response {
    signed(
        sim,
        status,
        json!({"code": code, "message": message})
            .to_string()
            .into_bytes(),
    )
}

fn param_error(sim: &Sim, message: &str) -> Response {
    error(sim, StatusCode::BAD_REQUEST, "PARAM_ERROR", message)
}

/// Checks the merchant's `Authorization` header as the real gateway does.
fn authentic(sim: &Sim, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(fields) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_wechat_authorization)
    else {
        return false;
    };
    let get = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    let Ok(ts) = get("timestamp").parse::<i64>() else {
        return false;
    };
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let msg = wechat_request_message(
        method.as_str(),
        path,
        get("timestamp"),
        get("nonce_str"),
        body,
    );
    get("mchid") == WECHAT_MCHID
        && get("serial_no").eq_ignore_ascii_case(&sim.keys.wechat_merchant_serial)
        && (sim.now_ms() - ts * 1000).abs() <= MAX_SKEW_MS
        && sim.keys.wechat_merchant.verify_b64(&msg, get("signature"))
}

/// The prepay body's checks (PARAM_ERROR on failure), per the native/jsapi documents.
fn check_prepay(body: &Value, jsapi: bool, now: i64) -> Result<(), String> {
    let s = |k: &str| body[k].as_str().unwrap_or_default();
    if s("appid") != WECHAT_APPID || s("mchid") != WECHAT_MCHID {
        return Err("appid/mchid 不正确".into());
    }
    let d = s("description");
    if d.is_empty() || d.chars().count() > 127 {
        return Err("description 长度不合法".into());
    }
    let no = s("out_trade_no");
    if !(6..=32).contains(&no.len())
        || !no
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-|*".contains(&b))
    {
        return Err("out_trade_no 不合法".into());
    }
    if s("notify_url").is_empty()
        || !(s("notify_url").starts_with("https://") || s("notify_url").starts_with("http://"))
    {
        return Err("notify_url 不合法".into());
    }
    if body["amount"]["total"].as_i64().is_none_or(|t| t <= 0)
        || !matches!(body["amount"]["currency"].as_str(), None | Some("CNY"))
    {
        return Err("amount 不合法".into());
    }
    if let Some(t) = body["time_expire"].as_str() {
        match parse_wechat_time(t) {
            Some(at) if at > now => {}
            _ => return Err("time_expire 不合法".into()),
        }
    }
    if jsapi && body["payer"]["openid"].as_str().is_none_or(str::is_empty) {
        return Err("payer.openid 不能为空".into());
    }
    Ok(())
}

async fn prepay(
    State(sim): State<Arc<Sim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authentic(&sim, &method, &uri, &headers, &body) {
        return error(&sim, StatusCode::UNAUTHORIZED, "SIGN_ERROR", "签名错误");
    }
    let Ok(req @ Value::Object(_)) = serde_json::from_slice::<Value>(&body) else {
        return param_error(&sim, "请求体不是JSON对象");
    };
    let jsapi = uri.path().ends_with("/jsapi");
    let now = sim.now_ms();
    if let Err(msg) = check_prepay(&req, jsapi, now) {
        return param_error(&sim, &msg);
    }
    let faults = sim.faults.lock().unwrap().clone();
    if sim.chance(Draw::PrepayError, faults.prepay_error_rate) {
        return error(
            &sim,
            StatusCode::INTERNAL_SERVER_ERROR,
            "SYSTEM_ERROR",
            "系统错误",
        );
    }
    let time_expire = req["time_expire"]
        .as_str()
        .and_then(parse_wechat_time)
        .unwrap_or(now + 7 * 86_400_000);
    let credential = if jsapi {
        format!("wx{}", sim.nonce(30).to_lowercase())
    } else {
        format!("weixin://wxpay/bizpayurl?pr={}", sim.nonce(10))
    };
    // Every parameter of a repeat must match the first request (WeChat's rule).
    let mut fingerprint = req.clone();
    fingerprint["out_trade_no"] = Value::Null;
    let created = ops::create(
        &sim,
        NewOrder {
            channel: ChannelName::Wechatpay,
            out_trade_no: req["out_trade_no"].as_str().unwrap_or_default().to_owned(),
            amount: req["amount"]["total"].as_i64().unwrap_or_default(),
            subject: req["description"].as_str().unwrap_or_default().to_owned(),
            notify_url: req["notify_url"].as_str().unwrap_or_default().to_owned(),
            time_expire,
            credential_valid_until: Some(time_expire.min(now + CREDENTIAL_LIFE_MS)),
            credential,
            fingerprint: format!("{}{}", if jsapi { "jsapi" } else { "native" }, fingerprint),
            initial: SimStatus::Unpaid,
        },
    );
    match created {
        Ok(o) => {
            if sim.chance(Draw::PrepayTimeout, faults.prepay_timeout_rate) {
                tokio::time::sleep(Duration::from_secs(120)).await;
            }
            let body = if jsapi {
                json!({ "prepay_id": o.credential })
            } else {
                json!({ "code_url": o.credential })
            };
            signed(&sim, StatusCode::OK, body.to_string().into_bytes())
        }
        Err(CreateError::Paid) => error(&sim, StatusCode::FORBIDDEN, "ORDERPAID", "该订单已支付"),
        Err(CreateError::Used) => error(
            &sim,
            StatusCode::BAD_REQUEST,
            "OUT_TRADE_NO_USED",
            "商户订单号重复",
        ),
    }
}

fn transaction(o: &SimOrder) -> Value {
    let paid = o.status == SimStatus::Paid;
    let mut t = json!({
        "appid": WECHAT_APPID,
        "mchid": WECHAT_MCHID,
        "out_trade_no": o.out_trade_no,
        "trade_type": if o.credential.starts_with("weixin://") { "NATIVE" } else { "JSAPI" },
        "trade_state": o.state_name(),
        "trade_state_desc": match o.state_name() {
            "SUCCESS" => "支付成功",
            "REFUND" => "转入退款",
            "CLOSED" => "已关闭",
            _ => "未支付",
        },
        "amount": {"total": o.amount, "currency": "CNY"},
    });
    if paid {
        t["transaction_id"] = json!(o.trade_no);
        t["success_time"] = json!(wechat_time(o.paid_at.unwrap_or_default()));
        t["bank_type"] = json!("OTHERS");
        t["payer"] = json!({"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"});
        t["amount"]["payer_total"] = json!(o.amount);
        t["amount"]["payer_currency"] = json!("CNY");
    }
    t
}

async fn query(
    State(sim): State<Arc<Sim>>,
    Path(no): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if !authentic(&sim, &method, &uri, &headers, b"") {
        return error(&sim, StatusCode::UNAUTHORIZED, "SIGN_ERROR", "签名错误");
    }
    if uri.query().unwrap_or_default() != format!("mchid={WECHAT_MCHID}") {
        return param_error(&sim, "mchid 不正确");
    }
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
    match ops::find(&sim, ChannelName::Wechatpay, &no) {
        Some(o) => signed(
            &sim,
            StatusCode::OK,
            transaction(&o).to_string().into_bytes(),
        ),
        None => error(&sim, StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在"),
    }
}

async fn close(
    State(sim): State<Arc<Sim>>,
    Path(no): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authentic(&sim, &method, &uri, &headers, &body) {
        return error(&sim, StatusCode::UNAUTHORIZED, "SIGN_ERROR", "签名错误");
    }
    // The close body is exactly `{"mchid": "…"}`.
    let ok = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .is_some_and(|o| o.len() == 1 && o["mchid"] == WECHAT_MCHID);
    if !ok {
        return param_error(&sim, "请求体须为 {\"mchid\": 商户号}");
    }
    if sim.chance(
        Draw::CloseError,
        sim.faults.lock().unwrap().close_error_rate,
    ) {
        return error(
            &sim,
            StatusCode::INTERNAL_SERVER_ERROR,
            "SYSTEM_ERROR",
            "系统错误",
        );
    }
    match ops::close(&sim, ChannelName::Wechatpay, &no) {
        Ok(()) => signed(&sim, StatusCode::NO_CONTENT, Vec::new()),
        Err(CloseError::NotExist) => {
            error(&sim, StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在")
        }
        Err(CloseError::Paid) => error(
            &sim,
            StatusCode::BAD_REQUEST,
            "ORDERPAID",
            "订单已支付，不能关单",
        ),
    }
}

/// `GET /v3/bill/tradebill`: where to download the day's bill, and its SHA-1.
async fn tradebill(
    State(sim): State<Arc<Sim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if !authentic(&sim, &method, &uri, &headers, b"") {
        return error(&sim, StatusCode::UNAUTHORIZED, "SIGN_ERROR", "签名错误");
    }
    let query = |k: &str| {
        uri.query()
            .unwrap_or_default()
            .split('&')
            .find_map(|kv| kv.strip_prefix(k))
            .unwrap_or_default()
            .to_owned()
    };
    let date = query("bill_date=");
    if !crate::statement::has_bill(&sim, ChannelName::Wechatpay, &date) {
        return error(
            &sim,
            StatusCode::BAD_REQUEST,
            "NO_STATEMENT_EXIST",
            "账单文件不存在",
        );
    }
    let bill = crate::statement::wechat_bill(&sim, &date);
    // The hash of the ORIGINAL bill, also when it is downloaded gzip-compressed.
    let sha1 = hex::encode(
        aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
            bill.as_bytes(),
        )
        .as_ref(),
    );
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let tar = if query("tar_type=") == "GZIP" {
        "&tar_type=GZIP"
    } else {
        ""
    };
    let body = json!({"hash_type": "SHA1", "hash_value": sha1, "download_url": format!("http://{host}/v3/billdownload/file?token={date}{tar}")});
    signed(&sim, StatusCode::OK, body.to_string().into_bytes())
}

/// The bill itself: a signed request, an unsigned answer (its hash was in the signed one).
async fn bill_download(
    State(sim): State<Arc<Sim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if !authentic(&sim, &method, &uri, &headers, b"") {
        return error(&sim, StatusCode::UNAUTHORIZED, "SIGN_ERROR", "签名错误");
    }
    let query = uri.query().unwrap_or_default();
    let date = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .unwrap_or_default();
    let mut bill = crate::statement::wechat_bill(&sim, date);
    if crate::statement::corrupted(&sim, ChannelName::Wechatpay) {
        // One payment's amount changed on the way: the file no longer has the hash announced.
        bill = bill.replacen(".00", ".01", 1);
    }
    if query.split('&').any(|kv| kv == "tar_type=GZIP") {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bill.as_bytes()).expect("in-memory gzip");
        return (
            [("content-type", "application/octet-stream")],
            gz.finish().expect("in-memory gzip"),
        )
            .into_response();
    }
    ([("content-type", "text/plain; charset=utf-8")], bill).into_response()
}

/// `GET /v3/certificates`: every platform certificate still valid, encrypted with the APIv3 key.
async fn certificates(
    State(sim): State<Arc<Sim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if !authentic(&sim, &method, &uri, &headers, b"") {
        return error(&sim, StatusCode::UNAUTHORIZED, "SIGN_ERROR", "签名错误");
    }
    let delay = sim.faults.lock().unwrap().certificates_delay_ms;
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let now = sim.now_ms();
    let certs: Vec<_> = sim
        .keys
        .wechat_certificates
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.expire_at > now)
        .cloned()
        .collect();
    let data: Vec<Value> = certs
        .iter()
        .map(|c| {
            let nonce = sim.nonce(12);
            json!({
                "serial_no": c.serial,
                "effective_time": wechat_time(c.effective_at),
                "expire_time": wechat_time(c.expire_at),
                "encrypt_certificate": {
                    "algorithm": "AEAD_AES_256_GCM",
                    "nonce": nonce,
                    "associated_data": "certificate",
                    "ciphertext": wechat_encrypt(sim.keys.wechat_apiv3.expose(), &nonce, "certificate", c.pem.as_bytes()),
                },
            })
        })
        .collect();
    signed(
        &sim,
        StatusCode::OK,
        json!({ "data": data }).to_string().into_bytes(),
    )
}

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

async fn refund(
    State(sim): State<Arc<Sim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authentic(&sim, &method, &uri, &headers, &body) {
        return error(&sim, StatusCode::UNAUTHORIZED, "SIGN_ERROR", "签名错误");
    }
    let Ok(req @ Value::Object(_)) = serde_json::from_slice::<Value>(&body) else {
        return param_error(&sim, "请求体不是JSON对象");
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
    let Some(order) = ops::find(&sim, ChannelName::Wechatpay, &no) else {
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
                notify_refund(sim.clone(), url.to_owned(), r.clone(), total, tid.clone());
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

async fn refund_query(
    State(sim): State<Arc<Sim>>,
    Path(no): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if !authentic(&sim, &method, &uri, &headers, b"") {
        return error(&sim, StatusCode::UNAUTHORIZED, "SIGN_ERROR", "签名错误");
    }
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

/// An encrypted, platform-signed notification envelope.
fn envelope(
    sim: &Sim,
    id: String,
    event_type: &str,
    summary: &str,
    original_type: &str,
    resource: &Value,
) -> Vec<u8> {
    let nonce = sim.nonce(12);
    json!({
        "id": id,
        "create_time": wechat_time(sim.now_ms()),
        "resource_type": "encrypt-resource",
        "event_type": event_type,
        "summary": summary,
        "resource": {
            "original_type": original_type,
            "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": wechat_encrypt(sim.keys.wechat_apiv3.expose(), &nonce, original_type, resource.to_string().as_bytes()),
            "associated_data": original_type,
            "nonce": nonce,
        },
    })
    .to_string()
    .into_bytes()
}

/// `REFUND.SUCCESS`, once the refund's money has moved.
fn notify_refund(
    sim: Arc<Sim>,
    url: String,
    r: crate::ledger::Refund,
    total: i64,
    transaction_id: String,
) {
    tokio::spawn(async move {
        let wait = (r.settle_at - sim.now_ms()).max(0) as u64;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let resource = json!({
            "mchid": WECHAT_MCHID, "out_trade_no": r.out_trade_no, "transaction_id": transaction_id, "out_refund_no": r.out_refund_no,
            "refund_id": r.refund_id, "refund_status": "SUCCESS", "success_time": wechat_time(r.settle_at),
            "user_received_account": "支付用户零钱",
            "amount": {"total": total, "refund": r.amount, "payer_total": total, "payer_refund": r.amount},
        });
        let body = envelope(
            &sim,
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

/// `TRANSACTION.SUCCESS`: the transaction encrypted with the APIv3 key, the envelope signed by
/// the platform key (re-signed per delivery, as its timestamp must be fresh).
pub(crate) fn notify(sim: Arc<Sim>, order: SimOrder, event_id: String) {
    let body = envelope(
        &sim,
        format!("EV-{event_id}"),
        "TRANSACTION.SUCCESS",
        "支付成功",
        "transaction",
        &transaction(&order),
    );
    let signer = sim.clone();
    crate::notify::spawn(
        sim,
        order.notify_url.clone(),
        move || crate::notify::Delivery {
            headers: platform_headers(&signer, &body),
            content_type: "application/json",
            body: body.clone(),
        },
        |status, _| status == 200 || status == 204,
    );
}
