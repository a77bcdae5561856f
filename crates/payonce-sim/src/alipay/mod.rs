//! The Alipay OpenAPI gateway (`/gateway.do`), written from Alipay's documents with the
//! simulator's own codec (`wire`): RSA2 request signatures over the sorted non-empty
//! parameters, answers `{"<method>_response":{…},"sign":"…"}` signed over the exact inner text
//! with `/` escaped as `\/`, and the precreate QR's real life: no trade exists until the QR is
//! scanned; `time_expire` ends the trade; the QR itself is scannable until the earliest of
//! `time_expire`, `qr_code_timeout_express` after it was issued, and 2 hours; a repeat with
//! identical parameters re-issues it; a close before the first scan answers
//! `ACQ.TRADE_NOT_EXIST` and leaves the QR payable.
//!
//! This module holds the routes, the signed answers, the common parameters' checks and the
//! dispatch by `method`; payments and refunds are in their own modules.

mod refunds;
mod trades;

pub(crate) use trades::notify;

use crate::Sim;
use crate::wire::{
    alipay_answer, alipay_error_response, alipay_response_name, form_parse, parse_alipay_time,
    sorted_pairs,
};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use payonce_core::ChannelName;
use serde_json::{Value, json};
use std::sync::Arc;

pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/gateway.do", get(gateway).post(gateway))
        .route("/alipay-bill", get(bill))
}

/// An Alipay QR is never scannable for more than 2 hours.
const QR_MAX_LIFE_MS: i64 = 2 * 3_600_000;
/// Alipay rejects a request whose `timestamp` is this far from its clock.
const TIMESTAMP_WINDOW_MS: i64 = 10 * 60_000;

fn json_response(body: String) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json;charset=utf-8")],
        body,
    )
        .into_response()
}

fn signed(sim: &Sim, method: &str, inner: Value) -> Response {
    json_response(alipay_answer(
        &sim.keys.alipay_platform,
        &alipay_response_name(method),
        &inner,
    ))
}

fn business_error(sim: &Sim, method: &str, code: &str, sub_code: &str, sub_msg: &str) -> Response {
    let msg = match code {
        "40001" => "Missing Required Arguments",
        "40002" => "Invalid Arguments",
        "20000" => "Service Currently Unavailable",
        _ => "Business Failed",
    };
    signed(
        sim,
        method,
        json!({"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg}),
    )
}

/// The bill download (Alipay's URL carries its own short-lived token; the simulator's carries
/// the date and the app it was issued to): a zip of two GBK CSVs, as Alipay serves it.
async fn bill(State(sim): State<Arc<Sim>>, uri: Uri) -> Response {
    let query = |k: &str| {
        uri.query()
            .unwrap_or_default()
            .split('&')
            .find_map(|kv| kv.strip_prefix(k))
            .unwrap_or_default()
            .to_owned()
    };
    let date = query("date=");
    let date = date.as_str();
    let merchant = query("app=").parse::<usize>().unwrap_or(0);
    if merchant >= sim.merchants(ChannelName::Alipay) {
        return StatusCode::NOT_FOUND.into_response();
    }
    (
        [
            ("content-type", "application/oct-stream"),
            ("content-disposition", "attachment; filename=bill.csv.zip"),
        ],
        crate::statement::alipay_bill_zip(&sim, merchant, date),
    )
        .into_response()
}

/// Checks the common parameters Alipay requires of every call (its `40001`/`40002` answers).
/// `Ok(i)`: the app (merchant) `i` of the simulator signed it.
fn check_common(
    sim: &Sim,
    params: &[(String, String)],
) -> Result<usize, (&'static str, &'static str, String)> {
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    for k in [
        "app_id",
        "method",
        "charset",
        "sign_type",
        "sign",
        "timestamp",
        "version",
    ] {
        if get(k).is_empty() {
            return Err((
                "40001",
                "isv.missing-signature-config",
                format!("缺少参数 {k}"),
            ));
        }
    }
    let Some((merchant, app)) = sim.keys.alipay_by_app_id(get("app_id")) else {
        return Err(("40002", "isv.invalid-app-id", "无效的AppID参数".into()));
    };
    if !get("charset").eq_ignore_ascii_case("utf-8")
        || get("version") != "1.0"
        || !matches!(get("format"), "" | "JSON" | "json")
    {
        return Err((
            "40002",
            "isv.invalid-parameter",
            "charset/version/format 不合法".into(),
        ));
    }
    if get("sign_type") != "RSA2" {
        return Err((
            "40002",
            "isv.invalid-signature-type",
            "无效的签名类型".into(),
        ));
    }
    let Some(ts) = parse_alipay_time(get("timestamp")) else {
        return Err(("40002", "isv.invalid-timestamp", "非法的时间戳参数".into()));
    };
    if (ts - sim.now_ms()).abs() > TIMESTAMP_WINDOW_MS {
        return Err((
            "40002",
            "isv.invalid-timestamp",
            "非法的时间戳参数 (not current)".into(),
        ));
    }
    // RSA2 over every parameter but `sign`, sorted, empty values left out (Alipay's rule).
    let signed: Vec<(String, String)> = params
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .cloned()
        .collect();
    if !app
        .app_key
        .verify_b64(sorted_pairs(&signed, &["sign"]).as_bytes(), get("sign"))
    {
        return Err(("40002", "isv.invalid-signature", "验签出错".into()));
    }
    Ok(merchant)
}

/// Whose orders a call acts on. Without `app_auth_token` the signing app's own, which must be a
/// merchant's: an ISV's third-party app has no trade of its own. With one, the merchant that
/// gave that token to exactly this ISV (Alipay checks the authorisation on every call).
fn acting_for(
    sim: &Sim,
    signer: usize,
    app_auth_token: &str,
) -> Result<usize, (&'static str, &'static str, String)> {
    use crate::keys::MerchantRole;
    let invalid = || {
        (
            "20001",
            "aop.invalid-app-auth-token",
            "无效的应用授权令牌".to_owned(),
        )
    };
    match (app_auth_token, sim.keys.alipay[signer].role) {
        ("", MerchantRole::Merchant) => Ok(signer),
        ("", _) => Err((
            "40006",
            "isv.insufficient-isv-permissions",
            "ISV权限不足：第三方应用须以 app_auth_token 代商户调用".to_owned(),
        )),
        (_, MerchantRole::Merchant) => Err(invalid()),
        (token, _) => sim
            .keys
            .alipay
            .iter()
            .position(|m| {
                m.app_auth_token == token
                    && m.role == (MerchantRole::SubMerchant { provider: signer })
            })
            .ok_or_else(invalid),
    }
}

/// A precreate's `subject`: required, at most 256 characters, and without the characters
/// Alipay forbids in it (`/ = &`, which would also break its own signing string).
fn valid_subject(s: &str) -> bool {
    !s.is_empty() && s.chars().count() <= 256 && !s.contains(['/', '=', '&'])
}

fn valid_out_trade_no(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

async fn gateway(
    State(sim): State<Arc<Sim>>,
    headers: axum::http::HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    // The official SDK puts common parameters in the query and biz_content in the body;
    // others send everything in one or the other.
    let mut params = form_parse(uri.query().unwrap_or_default().as_bytes());
    params.extend(form_parse(&body));
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let method = get("method");
    if method.is_empty() {
        return json_response(alipay_error_response(
            "40001",
            "Missing Required Arguments",
            "isv.missing-method",
            "缺少方法名参数",
        ));
    }
    let merchant = match check_common(&sim, &params)
        .and_then(|signer| acting_for(&sim, signer, &get("app_auth_token")))
    {
        Ok(m) => m,
        Err((code, sub_code, msg)) => return business_error(&sim, &method, code, sub_code, &msg),
    };
    let Ok(Value::Object(biz)) = serde_json::from_str::<Value>(&get("biz_content")) else {
        return business_error(
            &sim,
            &method,
            "40002",
            "isv.invalid-parameter",
            "biz_content 不是JSON对象",
        );
    };
    let field = |k: &str| {
        biz.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let faults = sim.faults.lock().unwrap().clone();
    let now = sim.now_ms();
    match method.as_str() {
        "alipay.trade.precreate" => {
            trades::precreate(
                &sim,
                merchant,
                &method,
                &field,
                get("notify_url"),
                &faults,
                now,
            )
            .await
        }
        "alipay.trade.query" => trades::query(&sim, merchant, &method, &field, &faults),
        "alipay.trade.close" => trades::close(&sim, merchant, &method, &field, &faults),
        "alipay.trade.refund" => refunds::refund(&sim, merchant, &method, &field, &faults, now),
        "alipay.trade.fastpay.refund.query" => {
            refunds::refund_query(&sim, merchant, &method, &field)
        }
        "alipay.data.dataservice.bill.downloadurl.query" => {
            if !crate::statement::has_bill(&sim, ChannelName::Alipay, merchant, &field("bill_date"))
            {
                return business_error(&sim, &method, "40004", "isp.bill_not_exist", "账单不存在");
            }
            let host = headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("127.0.0.1");
            signed(
                &sim,
                &method,
                json!({"code": "10000", "msg": "Success",
                "bill_download_url": format!("http://{host}/alipay-bill?date={}&app={merchant}", field("bill_date"))}),
            )
        }
        _ => json_response(alipay_error_response(
            "40004",
            "Business Failed",
            "isv.invalid-method",
            "不存在的方法名",
        )),
    }
}
