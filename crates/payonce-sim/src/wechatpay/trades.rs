//! The simulated WeChat payments: prepay (native and JSAPI) with its body checks, query, close,
//! and the `TRANSACTION.SUCCESS` notification.

use super::{acting_for, authentic, envelope, error, param_error, platform_headers, signed};
use crate::keys::MerchantRole;
use crate::ops::{self, CloseError, CreateError, NewOrder};
use crate::rng::Draw;
use crate::wire::{parse_wechat_time, wechat_time};
use crate::{Sim, SimOrder, SimStatus};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use payonce_core::ChannelName;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// WeChat: "prepay_id 有效期为2小时" (the code_url likewise).
const CREDENTIAL_LIFE_MS: i64 = 2 * 3_600_000;

/// What a prepay body gets wrong: the message of WeChat's `PARAM_ERROR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum ParamError {
    #[error("appid/mchid 不正确")]
    Merchant,
    #[error("description 长度不合法")]
    Description,
    #[error("out_trade_no 不合法")]
    OutTradeNo,
    #[error("notify_url 不合法")]
    NotifyUrl,
    #[error("amount 不合法")]
    Amount,
    #[error("time_expire 不合法")]
    TimeExpire,
    #[error("payer.openid 不能为空")]
    Openid,
    #[error("sp_appid/sp_mchid 不正确")]
    Provider,
    #[error("sub_appid 与特约商户不匹配")]
    SubAppid,
    #[error("payer.sp_openid 或 payer.sub_openid 不能为空（sub_openid 须同时传 sub_appid）")]
    PartnerOpenid,
}

/// The prepay body's checks (PARAM_ERROR on failure), per the native/jsapi documents and their
/// partner versions: `signer` signed the request, `m` is the merchant the order is for (the
/// signer itself, or the sub-merchant a partner body names).
fn check_prepay(
    signer: &crate::keys::WechatMerchant,
    m: &crate::keys::WechatMerchant,
    body: &Value,
    jsapi: bool,
    now: i64,
) -> Result<(), ParamError> {
    let s = |k: &str| body[k].as_str().unwrap_or_default();
    let partner = matches!(m.role, MerchantRole::SubMerchant { .. });
    if partner {
        if s("sp_appid") != signer.appid || s("sp_mchid") != signer.mchid {
            return Err(ParamError::Provider);
        }
        if body.get("sub_appid").is_some() && (m.appid.is_empty() || s("sub_appid") != m.appid) {
            return Err(ParamError::SubAppid);
        }
        let payer = |k: &str| body["payer"][k].as_str().is_some_and(|o| !o.is_empty());
        let sub_openid = payer("sub_openid") && body.get("sub_appid").is_some();
        if jsapi && !(payer("sp_openid") || sub_openid) {
            return Err(ParamError::PartnerOpenid);
        }
    } else if s("appid") != m.appid || s("mchid") != m.mchid {
        return Err(ParamError::Merchant);
    }
    let d = s("description");
    if d.is_empty() || d.chars().count() > 127 {
        return Err(ParamError::Description);
    }
    let no = s("out_trade_no");
    if !(6..=32).contains(&no.len())
        || !no
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-|*".contains(&b))
    {
        return Err(ParamError::OutTradeNo);
    }
    if s("notify_url").is_empty()
        || !(s("notify_url").starts_with("https://") || s("notify_url").starts_with("http://"))
    {
        return Err(ParamError::NotifyUrl);
    }
    if body["amount"]["total"].as_i64().is_none_or(|t| t <= 0)
        || !matches!(body["amount"]["currency"].as_str(), None | Some("CNY"))
    {
        return Err(ParamError::Amount);
    }
    if let Some(t) = body["time_expire"].as_str() {
        match parse_wechat_time(t) {
            Some(at) if at > now => {}
            _ => return Err(ParamError::TimeExpire),
        }
    }
    if jsapi && !partner && body["payer"]["openid"].as_str().is_none_or(str::is_empty) {
        return Err(ParamError::Openid);
    }
    Ok(())
}

pub(super) async fn prepay(
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
    let jsapi = uri.path().ends_with("/jsapi");
    let partner = uri.path().contains("/partner/");
    let sub_mchid = partner.then(|| req["sub_mchid"].as_str().unwrap_or_default());
    let merchant = match acting_for(&sim, signer, sub_mchid) {
        Ok(m) => m,
        Err(refused) => return *refused,
    };
    let now = sim.now_ms();
    let (signer_keys, keys) = (&sim.keys.wechat[signer], &sim.keys.wechat[merchant]);
    if let Err(e) = check_prepay(signer_keys, keys, &req, jsapi, now) {
        return param_error(&sim, &e.to_string());
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
            merchant,
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
            tokio::time::sleep(Duration::from_millis(faults.prepay_delay_ms)).await;
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

/// The transaction as query answers and notifications carry it; a sub-merchant's names its
/// provider (`sp_appid`, `sp_mchid`) and itself (`sub_mchid`, `sub_appid` when it has one).
fn transaction(sim: &Sim, o: &SimOrder) -> Value {
    let paid = o.status == SimStatus::Paid;
    let m = &sim.keys.wechat[o.merchant];
    let mut t = json!({
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
    let sub_merchant = match m.role {
        MerchantRole::SubMerchant { provider } => Some(&sim.keys.wechat[provider]),
        _ => None,
    };
    match sub_merchant {
        Some(sp) => {
            t["sp_appid"] = json!(sp.appid);
            t["sp_mchid"] = json!(sp.mchid);
            t["sub_mchid"] = json!(m.mchid);
            if !m.appid.is_empty() {
                t["sub_appid"] = json!(m.appid);
            }
        }
        None => {
            t["appid"] = json!(m.appid);
            t["mchid"] = json!(m.mchid);
        }
    }
    if paid {
        t["transaction_id"] = json!(o.trade_no);
        t["success_time"] = json!(wechat_time(o.paid_at.unwrap_or_default()));
        t["bank_type"] = json!("OTHERS");
        t["payer"] = match sub_merchant {
            Some(_) => json!({"sp_openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}),
            None => json!({"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}),
        };
        t["amount"]["payer_total"] = json!(o.amount);
        t["amount"]["payer_currency"] = json!("CNY");
    }
    t
}

pub(super) async fn query(
    State(sim): State<Arc<Sim>>,
    Path(no): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let Some(signer) = authentic(&sim, &method, &uri, &headers, b"") else {
        return error(&sim, StatusCode::UNAUTHORIZED, "SIGN_ERROR", "签名错误");
    };
    let query = uri.query().unwrap_or_default();
    let merchant = if uri.path().contains("/partner/") {
        // Exactly `sp_mchid=…&sub_mchid=…`.
        let mut fields = query.split('&');
        let sp = fields.next().and_then(|f| f.strip_prefix("sp_mchid="));
        let sub = fields.next().and_then(|f| f.strip_prefix("sub_mchid="));
        if sp != Some(sim.keys.wechat[signer].mchid.as_str()) || fields.next().is_some() {
            return param_error(&sim, "sp_mchid 不正确");
        }
        acting_for(&sim, signer, Some(sub.unwrap_or_default()))
    } else if query != format!("mchid={}", sim.keys.wechat[signer].mchid) {
        return param_error(&sim, "mchid 不正确");
    } else {
        acting_for(&sim, signer, None)
    };
    let merchant = match merchant {
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
    match ops::find_for(&sim, ChannelName::Wechatpay, merchant, &no) {
        Some(o) => signed(
            &sim,
            StatusCode::OK,
            transaction(&sim, &o).to_string().into_bytes(),
        ),
        None => error(&sim, StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在"),
    }
}

pub(super) async fn close(
    State(sim): State<Arc<Sim>>,
    Path(no): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(signer) = authentic(&sim, &method, &uri, &headers, &body) else {
        return error(&sim, StatusCode::UNAUTHORIZED, "SIGN_ERROR", "签名错误");
    };
    let fields = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    let own = sim.keys.wechat[signer].mchid.as_str();
    let merchant = if uri.path().contains("/partner/") {
        // Exactly `{"sp_mchid": "…", "sub_mchid": "…"}`.
        if fields.len() != 2 || fields.get("sp_mchid").and_then(Value::as_str) != Some(own) {
            return param_error(
                &sim,
                "请求体须为 {\"sp_mchid\": 服务商商户号, \"sub_mchid\": 特约商户号}",
            );
        }
        acting_for(
            &sim,
            signer,
            Some(fields["sub_mchid"].as_str().unwrap_or_default()),
        )
    } else {
        // Exactly `{"mchid": "…"}`.
        if fields.len() != 1 || fields.get("mchid").and_then(Value::as_str) != Some(own) {
            return param_error(&sim, "请求体须为 {\"mchid\": 商户号}");
        }
        acting_for(&sim, signer, None)
    };
    let merchant = match merchant {
        Ok(m) => m,
        Err(refused) => return *refused,
    };
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
    match ops::close(&sim, ChannelName::Wechatpay, merchant, &no) {
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

/// `TRANSACTION.SUCCESS`: the transaction encrypted with the APIv3 key, the envelope signed by
/// the platform key (re-signed per delivery, as its timestamp must be fresh).
pub(crate) fn notify(sim: Arc<Sim>, order: SimOrder, event_id: String) {
    let body = envelope(
        &sim,
        order.merchant,
        format!("EV-{event_id}"),
        "TRANSACTION.SUCCESS",
        "支付成功",
        "transaction",
        &transaction(&sim, &order),
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
