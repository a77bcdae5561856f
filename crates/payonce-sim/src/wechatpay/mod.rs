//! The WeChat Pay v3 gateway, written from WeChat's documents with the simulator's own codec
//! (`wire`): merchant `Authorization` signatures checked (timestamp against the channels' clock),
//! answers signed with the platform key — by `PUB_KEY_ID_…` or, in certificate mode, by a
//! platform certificate that can be rotated (`GET /v3/certificates` lists old and new) — and
//! notifications with AEAD_AES_256_GCM resources. A `code_url` / `prepay_id` lives 2 hours; a
//! repeat of a prepay with identical parameters re-issues it. Refunds answer `PROCESSING` and
//! succeed later, with a `REFUND.SUCCESS` notification.

//! This module holds the routes and WeChat's side of the signatures (which platform key signs,
//! signed answers and errors, the merchant's `Authorization`, `GET /v3/certificates`, the
//! notification envelope); payments, refunds and bills are in their own modules.

mod bills;
mod refunds;
mod trades;

pub(crate) use trades::notify;

use crate::Sim;
use crate::keys::MerchantRole;
use crate::wire::{
    parse_wechat_authorization, wechat_answer_message, wechat_encrypt, wechat_request_message,
    wechat_time,
};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bills::{bill_download, tradebill};
use refunds::{refund, refund_query};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use trades::{close, prepay, query};

pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/v3/pay/transactions/native", post(prepay))
        .route("/v3/pay/transactions/jsapi", post(prepay))
        .route("/v3/pay/transactions/out-trade-no/{no}", get(query))
        .route("/v3/pay/transactions/out-trade-no/{no}/close", post(close))
        // The service provider's (服务商) partner APIs: the same operations for a sub-merchant.
        .route("/v3/pay/partner/transactions/native", post(prepay))
        .route("/v3/pay/partner/transactions/jsapi", post(prepay))
        .route("/v3/pay/partner/transactions/out-trade-no/{no}", get(query))
        .route(
            "/v3/pay/partner/transactions/out-trade-no/{no}/close",
            post(close),
        )
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

/// Whose orders a call acts on. A direct call (`sub_mchid` `None`) acts for its signer, which
/// must be a merchant: a service provider has no order of its own. A partner call acts for the
/// sub-merchant it names, which must be one of the signer's (WeChat checks the binding of
/// 服务商 and 特约商户 on every partner call).
fn acting_for(sim: &Sim, signer: usize, sub_mchid: Option<&str>) -> Result<usize, Box<Response>> {
    let no_auth = |message: &str| Box::new(error(sim, StatusCode::FORBIDDEN, "NO_AUTH", message));
    match (sub_mchid, sim.keys.wechat[signer].role) {
        (None, MerchantRole::Merchant) => Ok(signer),
        (None, _) => Err(no_auth(
            "服务商商户号不能直接交易，请使用服务商接口并传入 sub_mchid",
        )),
        (Some(_), MerchantRole::Merchant) => Err(no_auth("商户号不是服务商，无权调用服务商接口")),
        (Some(""), _) => Err(Box::new(param_error(sim, "sub_mchid 不能为空"))),
        (Some(sub), _) => sim
            .keys
            .wechat_sub_merchant(signer, sub)
            .map_err(|_| no_auth("特约商户与服务商不存在绑定关系")),
    }
}

/// Checks the merchant's `Authorization` header as the real gateway does: the merchant it
/// names, that merchant's certificate serial and signature. `Some(i)`: merchant `i` signed it.
fn authentic(
    sim: &Sim,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<usize> {
    let fields = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_wechat_authorization)?;
    let get = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    let ts = get("timestamp").parse::<i64>().ok()?;
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let msg = wechat_request_message(
        method.as_str(),
        path,
        get("timestamp"),
        get("nonce_str"),
        body,
    );
    let (i, m) = sim.keys.wechat_by_mchid(get("mchid"))?;
    (get("serial_no").eq_ignore_ascii_case(&m.serial)
        && (sim.now_ms() - ts * 1000).abs() <= MAX_SKEW_MS
        && m.key.verify_b64(&msg, get("signature")))
    .then_some(i)
}

/// `GET /v3/certificates`: every platform certificate still valid, encrypted with the APIv3 key.
async fn certificates(
    State(sim): State<Arc<Sim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let Some(merchant) = authentic(&sim, &method, &uri, &headers, b"") else {
        return error(&sim, StatusCode::UNAUTHORIZED, "SIGN_ERROR", "签名错误");
    };
    let apiv3 = sim.keys.wechat[merchant].apiv3.expose();
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
                    "ciphertext": wechat_encrypt(apiv3, &nonce, "certificate", c.pem.as_bytes()),
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

/// An encrypted, platform-signed notification envelope, encrypted with `merchant`'s APIv3 key.
fn envelope(
    sim: &Sim,
    merchant: usize,
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
            "ciphertext": wechat_encrypt(sim.keys.wechat[merchant].apiv3.expose(), &nonce, original_type, resource.to_string().as_bytes()),
            "associated_data": original_type,
            "nonce": nonce,
        },
    })
    .to_string()
    .into_bytes()
}
