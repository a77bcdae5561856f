//! The simulator's control API (API.md): the payer's actions, the ledger, and fault knobs.

use crate::Sim;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use payonce_core::ChannelName;
use serde::Deserialize;
use std::sync::Arc;

pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/sim/pay", post(pay_handler))
        .route("/sim/orders", get(order))
        .route("/sim/ledger", get(ledger))
        .route("/sim/notifications", get(notifications))
        .route("/sim/faults", post(set_faults).get(get_faults))
        .route("/sim/statement", get(statement))
        .route("/sim/bill", post(adjust_bill).delete(clear_bill))
        .route("/sim/wechatpay/platform", post(wechat_platform))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PayRequest {
    channel: ChannelName,
    out_trade_no: String,
    #[serde(default)]
    force: bool,
    /// The credential the payer holds (a code_url, a QR): a stale or superseded one does not pay.
    #[serde(default)]
    credential: Option<String>,
}

async fn pay_handler(State(sim): State<Arc<Sim>>, Json(req): Json<PayRequest>) -> Response {
    match crate::ops::pay_with(
        &sim,
        req.channel,
        &req.out_trade_no,
        req.force,
        req.credential.as_deref(),
    ) {
        Ok(()) => (StatusCode::OK, Json(serde_json::json!({"paid": true}))).into_response(),
        Err(e) => (
            StatusCode::CONFLICT,
            Json(serde_json::json!({"paid": false, "error": format!("{e:?}")})),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct OrderQuery {
    channel: ChannelName,
    out_trade_no: String,
}

async fn order(State(sim): State<Arc<Sim>>, Query(q): Query<OrderQuery>) -> Response {
    let mut ledger = sim.ledger.lock().unwrap();
    match ledger.orders.get_mut(&(q.channel, q.out_trade_no)) {
        Some(o) => {
            o.expire_if_due(sim.now_ms());
            Json(o.view()).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": "no such channel order"})),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct StatementQuery {
    channel: ChannelName,
    date: String,
    /// The merchant (account name, as `/sim/ledger` names it); default: the first.
    merchant: Option<String>,
}

/// The day's statement in the channel's own bill format, of one merchant.
async fn statement(State(sim): State<Arc<Sim>>, Query(q): Query<StatementQuery>) -> Response {
    let m = match &q.merchant {
        None => 0,
        Some(name) => match (0..sim.merchants(q.channel))
            .find(|i| sim.merchant_name(q.channel, *i) == *name)
        {
            Some(i) => i,
            None => {
                return (
                    StatusCode::NOT_FOUND,
                    Json(serde_json::json!({"error": "no such merchant"})),
                )
                    .into_response();
            }
        },
    };
    match q.channel {
        ChannelName::Wechatpay => (
            [("content-type", "text/csv; charset=utf-8")],
            crate::statement::wechat_bill(&sim, m, &q.date),
        )
            .into_response(),
        ChannelName::Alipay => (
            [("content-type", "application/zip")],
            crate::statement::alipay_bill_zip(&sim, m, &q.date),
        )
            .into_response(),
        ChannelName::Sandbox => Json(crate::statement::sandbox_bill(&sim, &q.date)).into_response(),
        // The fileTransfer answer's fileContent, base64-decoded: zlib of the zip.
        ChannelName::Unionpay => (
            [("content-type", "application/octet-stream")],
            crate::statement::unionpay_file(&sim, m, &q.date).1,
        )
            .into_response(),
    }
}

async fn ledger(State(sim): State<Arc<Sim>>) -> Json<serde_json::Value> {
    Json(
        sim.ledger
            .lock()
            .unwrap()
            .to_json(|channel, name| sim.ledger_names(channel, name)),
    )
}

async fn set_faults(State(sim): State<Arc<Sim>>, Json(patch): Json<serde_json::Value>) -> Response {
    let mut faults = sim.faults.lock().unwrap();
    let mut current = serde_json::to_value(&*faults).unwrap();
    let Some(obj) = patch.as_object() else {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "expected an object"})),
        )
            .into_response();
    };
    for (k, v) in obj {
        current[k] = v.clone();
    }
    match serde_json::from_value(current) {
        Ok(f) => {
            *faults = f;
            Json(serde_json::to_value(&*faults).unwrap()).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

/// `{"outstanding": n}`: notifications still being delivered (waiting, retrying, duplicating).
async fn notifications(State(sim): State<Arc<Sim>>) -> Json<serde_json::Value> {
    Json(
        serde_json::json!({"outstanding": sim.notifications_outstanding.load(std::sync::atomic::Ordering::SeqCst)}),
    )
}

async fn get_faults(State(sim): State<Arc<Sim>>) -> Json<serde_json::Value> {
    Json(serde_json::to_value(&*sim.faults.lock().unwrap()).unwrap())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlatformRequest {
    /// `public_key` (answers announce `PUB_KEY_ID_…`) or `certificate` (a certificate serial).
    mode: String,
    /// Issue a new platform key and certificate and sign with it from now on; the old
    /// certificate stays listed by `/v3/certificates` (the overlap WeChat gives merchants).
    #[serde(default)]
    rotate: bool,
    /// With `rotate`: the previous certificates are retired at once (expired, no longer
    /// listed), so even an answer to a request naming one is signed by the new certificate —
    /// what a merchant that missed the overlap meets.
    #[serde(default)]
    retire: bool,
}

/// How the simulated WeChat Pay signs: by platform public key or by (rotating) certificate.
async fn wechat_platform(
    State(sim): State<Arc<Sim>>,
    Json(req): Json<PlatformRequest>,
) -> Response {
    let now = sim.now_ms();
    // A new key is generated off the runtime: RSA key generation takes from a tenth of a second
    // to seconds of CPU, and this runtime also serves the channels' answers.
    let key = if req.rotate {
        let generated =
            tokio::task::spawn_blocking(payonce_channels::crypto::RsaSigner::generate).await;
        Some(Arc::new(generated.expect("key generation")))
    } else {
        None
    };
    let mut certs = sim.keys.wechat_certificates.lock().unwrap();
    if let Some(key) = key {
        let serial = 0x5157_F09D_0E74_B8A2u64 + certs.len() as u64;
        if req.retire {
            for c in certs.iter_mut() {
                c.expire_at = now - 1;
            }
        }
        certs.push(crate::keys::platform_certificate(&key, serial, now));
    }
    let current = certs.last().expect("one certificate at least").clone();
    drop(certs);
    let mut signing = sim.keys.wechat_signing.lock().unwrap();
    match req.mode.as_str() {
        "certificate" => {
            *signing = crate::keys::WechatSigning { key: current.key.clone(), serial: current.serial.clone() };
        }
        "public_key" if !req.rotate => {
            let first = sim.keys.wechat_certificates.lock().unwrap()[0].key.clone();
            *signing = crate::keys::WechatSigning { key: first, serial: sim.keys.wechat_platform_key_id.clone() };
        }
        _ => return (StatusCode::BAD_REQUEST, Json(serde_json::json!({"error": "mode: public_key | certificate (rotate only with certificate)"}))).into_response(),
    }
    Json(serde_json::json!({"serial": signing.serial, "certificate": current.pem})).into_response()
}

/// `POST /sim/bill`: a bad day on the bills (see `statement::BillAdjustment`).
async fn adjust_bill(
    State(sim): State<Arc<Sim>>,
    Json(adj): Json<crate::statement::BillAdjustment>,
) -> StatusCode {
    sim.bill_adjustments.lock().unwrap().push(adj);
    StatusCode::NO_CONTENT
}

/// `DELETE /sim/bill`: the bills tell the truth again.
async fn clear_bill(State(sim): State<Arc<Sim>>) -> StatusCode {
    sim.bill_adjustments.lock().unwrap().clear();
    StatusCode::NO_CONTENT
}
