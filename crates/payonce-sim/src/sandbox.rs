//! The sandbox gateway: the other side of `payonce_channels::sandbox`, using the same
//! protocol module, so a change to the protocol breaks both sides at once.

use crate::{Sim, SimOrder};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use payonce_channels::sandbox::protocol::{self, CreateOrder, Created, ErrorBody, OrderView, PaymentNotification};
use payonce_core::ChannelName;
use std::sync::Arc;
use std::time::Duration;

pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/sandbox/v1/orders", post(create))
        .route("/sandbox/v1/orders/{no}", get(query))
        .route("/sandbox/v1/orders/{no}/close", post(close))
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Every answer is signed over the request's method and path, as the connector expects.
fn signed(sim: &Sim, method: &Method, path: &str, status: StatusCode, body: Vec<u8>) -> Response {
    let ts = now_ms() / 1000;
    let sig = protocol::sign(&sim.sandbox_key, ts, method.as_str(), path, &body);
    (
        status,
        [
            ("content-type", "application/json".to_owned()),
            (protocol::TS_HEADER, ts.to_string()),
            (protocol::SIG_HEADER, sig),
        ],
        body,
    )
        .into_response()
}

fn error(sim: &Sim, method: &Method, path: &str, status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::to_vec(&ErrorBody { code: code.into(), message: message.into() }).unwrap();
    signed(sim, method, path, status, body)
}

fn authentic(sim: &Sim, method: &Method, path: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let hv = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    protocol::verify(&sim.sandbox_key, hv(protocol::TS_HEADER), hv(protocol::SIG_HEADER), method.as_str(), path, body, now_ms() / 1000)
        .is_ok()
}

async fn create(State(sim): State<Arc<Sim>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path();
    if !authentic(&sim, &method, path, &headers, &body) {
        return error(&sim, &method, path, StatusCode::UNAUTHORIZED, "SIGN_ERROR", "signature verification failed");
    }
    let req: CreateOrder = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(&sim, &method, path, StatusCode::BAD_REQUEST, "PARAM_ERROR", &e.to_string()),
    };
    if req.amount <= 0 || req.out_trade_no.is_empty() || req.out_trade_no.len() > 32 {
        return error(&sim, &method, path, StatusCode::BAD_REQUEST, "PARAM_ERROR", "bad amount or out_trade_no");
    }
    let faults = sim.faults.lock().unwrap().clone();
    if sim.chance(faults.prepay_error_rate) {
        return error(&sim, &method, path, StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR", "injected prepay error");
    }
    let answer = {
        let mut ledger = sim.ledger.lock().unwrap();
        ledger.prepay_requests += 1;
        let key = (ChannelName::Sandbox, req.out_trade_no.clone());
        match ledger.orders.get(&key) {
            // Like WeChat Pay: the same order number with the same content returns the same
            // code; with other content it is refused.
            Some(o) if o.amount == req.amount && o.state == protocol::NOTPAY => {
                Ok(Created { out_trade_no: o.out_trade_no.clone(), code_url: o.code_url.clone(), time_expire: o.time_expire })
            }
            Some(o) if o.state == protocol::SUCCESS => Err(("ORDER_PAID", "order already paid")),
            Some(_) => Err(("OUT_TRADE_NO_USED", "out_trade_no already used")),
            None => {
                let code_url = format!("sandbox://pay/{}", req.out_trade_no);
                ledger.orders.insert(
                    key,
                    SimOrder {
                        channel: ChannelName::Sandbox,
                        out_trade_no: req.out_trade_no.clone(),
                        state: protocol::NOTPAY.into(),
                        amount: req.amount,
                        charges: 0,
                        refunded: 0,
                        notify_url: req.notify_url.clone(),
                        code_url: code_url.clone(),
                        time_expire: req.time_expire,
                        trade_no: None,
                        paid_at: None,
                    },
                );
                Ok(Created { out_trade_no: req.out_trade_no.clone(), code_url, time_expire: req.time_expire })
            }
        }
    };
    match answer {
        Ok(created) => {
            if sim.chance(faults.prepay_timeout_rate) {
                // The order exists; the answer never arrives in time.
                tokio::time::sleep(Duration::from_secs(120)).await;
            }
            signed(&sim, &method, path, StatusCode::OK, serde_json::to_vec(&created).unwrap())
        }
        Err((code, msg)) => error(&sim, &method, path, StatusCode::BAD_REQUEST, code, msg),
    }
}

fn view(o: &SimOrder) -> OrderView {
    OrderView {
        out_trade_no: o.out_trade_no.clone(),
        trade_state: o.state.clone(),
        amount: o.amount,
        trade_no: o.trade_no.clone(),
        paid_at: o.paid_at,
    }
}

/// An unpaid order past its expiry is closed by the channel itself.
fn expire_if_due(o: &mut SimOrder, now: i64) {
    if o.state == protocol::NOTPAY && o.time_expire <= now {
        o.state = protocol::CLOSED.into();
    }
}

async fn query(State(sim): State<Arc<Sim>>, Path(no): Path<String>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    if !authentic(&sim, &method, path, &headers, b"") {
        return error(&sim, &method, path, StatusCode::UNAUTHORIZED, "SIGN_ERROR", "signature verification failed");
    }
    if sim.chance(sim.faults.lock().unwrap().query_error_rate) {
        return error(&sim, &method, path, StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR", "injected query error");
    }
    let found = {
        let mut ledger = sim.ledger.lock().unwrap();
        ledger.orders.get_mut(&(ChannelName::Sandbox, no)).map(|o| {
            expire_if_due(o, now_ms());
            view(o)
        })
    };
    match found {
        Some(v) => signed(&sim, &method, path, StatusCode::OK, serde_json::to_vec(&v).unwrap()),
        None => error(&sim, &method, path, StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "no such order"),
    }
}

async fn close(State(sim): State<Arc<Sim>>, Path(no): Path<String>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    if !authentic(&sim, &method, path, &headers, b"") {
        return error(&sim, &method, path, StatusCode::UNAUTHORIZED, "SIGN_ERROR", "signature verification failed");
    }
    let faults = sim.faults.lock().unwrap().clone();
    if sim.chance(faults.close_error_rate) {
        return error(&sim, &method, path, StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR", "injected close error");
    }
    if faults.pay_before_close {
        // The payer's payment lands a moment before the close does.
        let _ = crate::control::pay(&sim, ChannelName::Sandbox, &no, false);
    }
    let mut ledger = sim.ledger.lock().unwrap();
    let Some(o) = ledger.orders.get_mut(&(ChannelName::Sandbox, no)) else {
        drop(ledger);
        return error(&sim, &method, path, StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "no such order");
    };
    if o.state == protocol::SUCCESS {
        drop(ledger);
        return error(&sim, &method, path, StatusCode::BAD_REQUEST, "ORDER_PAID", "order paid, cannot close");
    }
    o.state = protocol::CLOSED.into();
    drop(ledger);
    signed(&sim, &method, path, StatusCode::NO_CONTENT, Vec::new())
}

/// Delivers a payment notification on the sandbox retry schedule until payonce acknowledges,
/// subject to the drop/delay/duplicate faults.
pub(crate) fn spawn_notify(sim: Arc<Sim>, order: SimOrder, event_id: String) {
    tokio::spawn(async move {
        let n = PaymentNotification {
            id: event_id,
            event_type: protocol::EVENT_PAID.into(),
            out_trade_no: order.out_trade_no.clone(),
            trade_no: order.trade_no.clone().unwrap_or_default(),
            amount: order.amount,
            paid_at: order.paid_at.unwrap_or_default(),
        };
        let body = serde_json::to_vec(&n).unwrap();
        let path = reqwest::Url::parse(&order.notify_url).map(|u| u.path().to_owned()).unwrap_or_default();
        // Seconds after the payment: WeChat-like, short at first, then backing off.
        const SCHEDULE_MS: [u64; 10] = [0, 1_000, 2_000, 4_000, 8_000, 15_000, 30_000, 60_000, 180_000, 600_000];
        let mut acked = false;
        for (i, wait) in SCHEDULE_MS.iter().enumerate() {
            let f = sim.faults.lock().unwrap().clone();
            let scale = if f.time_scale > 0.0 { f.time_scale } else { 1.0 };
            let mut delay = (*wait as f64 / scale) as u64 + sim.between(f.notify_delay_ms[0], f.notify_delay_ms[1]);
            if f.notify_reorder {
                delay += sim.between(0, 200);
            }
            tokio::time::sleep(Duration::from_millis(delay)).await;
            if sim.chance(f.notify_drop_rate) {
                tracing::debug!(attempt = i, "notification dropped (fault)");
                continue;
            }
            if send(&sim, &order.notify_url, &path, &body).await {
                acked = true;
                break;
            }
        }
        if acked {
            let extra = sim.faults.lock().unwrap().notify_duplicates;
            for _ in 0..extra {
                send(&sim, &order.notify_url, &path, &body).await;
            }
        }
    });
}

async fn send(sim: &Sim, url: &str, path: &str, body: &[u8]) -> bool {
    let ts = now_ms() / 1000;
    let sig = protocol::sign(&sim.sandbox_key, ts, "POST", path, body);
    let resp = sim
        .http
        .post(url)
        .header("content-type", "application/json")
        .header(protocol::TS_HEADER, ts.to_string())
        .header(protocol::SIG_HEADER, sig)
        .body(body.to_vec())
        .send()
        .await;
    match resp {
        Ok(r) if r.status().is_success() => r.text().await.map(|t| t.contains("SUCCESS")).unwrap_or(false),
        _ => false,
    }
}
