//! The sandbox gateway: the other side of `payonce_channels::sandbox`. Sandbox is payonce's own
//! protocol (no outside party defines it), so here — unlike the real channels — the simulator
//! shares the protocol module with the connector: a change to it breaks both sides at once.

use crate::ops::{self, CloseError, CreateError, NewOrder};
use crate::rng::Draw;
use crate::{Sim, SimOrder, SimStatus};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use payonce_channels::sandbox::protocol::{
    self, CreateOrder, Created, ErrorBody, OrderView, PaymentNotification,
};
use payonce_core::ChannelName;
use std::sync::Arc;
use std::time::Duration;

pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/sandbox/v1/orders", post(create))
        .route("/sandbox/v1/orders/{no}", get(query))
        .route("/sandbox/v1/orders/{no}/close", post(close))
        .route("/sandbox/v1/refunds", post(refund))
        .route("/sandbox/v1/refunds/{no}", get(refund_query))
        .route("/sandbox/v1/statement", get(statement))
        // The payer's page: one button that pays the order (what a wallet app would do).
        .route("/sandbox/v1/pay/{no}", get(pay_page).post(pay_by_hand))
}

/// Every answer is signed over the request's method and path, as the connector expects.
fn signed(sim: &Sim, method: &Method, path: &str, status: StatusCode, body: Vec<u8>) -> Response {
    let ts = sim.now_ms() / 1000;
    let sig = protocol::sign(&sim.keys.sandbox, ts, method.as_str(), path, &body);
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

fn error(
    sim: &Sim,
    method: &Method,
    path: &str,
    status: StatusCode,
    code: &str,
    message: &str,
) -> Response {
    let body = serde_json::to_vec(&ErrorBody {
        code: code.into(),
        message: message.into(),
    })
    .unwrap();
    signed(sim, method, path, status, body)
}

fn authentic(sim: &Sim, method: &Method, path: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let hv = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    protocol::verify(
        &sim.keys.sandbox,
        hv(protocol::TS_HEADER),
        hv(protocol::SIG_HEADER),
        method.as_str(),
        path,
        body,
        sim.now_ms() / 1000,
    )
    .is_ok()
}

async fn create(
    State(sim): State<Arc<Sim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    if !authentic(&sim, &method, path, &headers, &body) {
        return error(
            &sim,
            &method,
            path,
            StatusCode::UNAUTHORIZED,
            "SIGN_ERROR",
            "signature verification failed",
        );
    }
    let req: CreateOrder = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                &sim,
                &method,
                path,
                StatusCode::BAD_REQUEST,
                "PARAM_ERROR",
                &e.to_string(),
            );
        }
    };
    if req.amount <= 0 || req.out_trade_no.is_empty() || req.out_trade_no.len() > 32 {
        return error(
            &sim,
            &method,
            path,
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "bad amount or out_trade_no",
        );
    }
    let faults = sim.faults.lock().unwrap().clone();
    if sim.chance(Draw::PrepayError, faults.prepay_error_rate) {
        return error(
            &sim,
            &method,
            path,
            StatusCode::INTERNAL_SERVER_ERROR,
            "SYSTEM_ERROR",
            "injected prepay error",
        );
    }
    let created = ops::create(
        &sim,
        NewOrder {
            channel: ChannelName::Sandbox,
            merchant: 0,
            out_trade_no: req.out_trade_no.clone(),
            amount: req.amount,
            subject: req.description.clone(),
            notify_url: req.notify_url.clone(),
            time_expire: req.time_expire,
            credential_valid_until: None,
            credential: format!("sandbox://pay/{}", req.out_trade_no),
            fingerprint: format!("{}|{}", req.amount, req.time_expire),
            initial: SimStatus::Unpaid,
        },
    );
    match created {
        Ok(o) => {
            tokio::time::sleep(Duration::from_millis(faults.prepay_delay_ms)).await;
            if sim.chance(Draw::PrepayTimeout, faults.prepay_timeout_rate) {
                // The order exists; the answer never arrives in time.
                tokio::time::sleep(Duration::from_secs(120)).await;
            }
            let c = Created {
                out_trade_no: o.out_trade_no,
                code_url: o.credential,
                time_expire: o.time_expire,
            };
            signed(
                &sim,
                &method,
                path,
                StatusCode::OK,
                serde_json::to_vec(&c).unwrap(),
            )
        }
        Err(CreateError::Paid) => error(
            &sim,
            &method,
            path,
            StatusCode::BAD_REQUEST,
            "ORDER_PAID",
            "order already paid",
        ),
        Err(CreateError::Used) => error(
            &sim,
            &method,
            path,
            StatusCode::BAD_REQUEST,
            "OUT_TRADE_NO_USED",
            "out_trade_no already used",
        ),
    }
}

fn view(o: &SimOrder) -> OrderView {
    OrderView {
        out_trade_no: o.out_trade_no.clone(),
        trade_state: o.state_name().into(),
        amount: o.amount,
        trade_no: o.trade_no.clone(),
        paid_at: o.paid_at,
    }
}

async fn query(
    State(sim): State<Arc<Sim>>,
    Path(no): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path();
    if !authentic(&sim, &method, path, &headers, b"") {
        return error(
            &sim,
            &method,
            path,
            StatusCode::UNAUTHORIZED,
            "SIGN_ERROR",
            "signature verification failed",
        );
    }
    if sim.chance(
        Draw::QueryError,
        sim.faults.lock().unwrap().query_error_rate,
    ) {
        return error(
            &sim,
            &method,
            path,
            StatusCode::INTERNAL_SERVER_ERROR,
            "SYSTEM_ERROR",
            "injected query error",
        );
    }
    match ops::find(&sim, ChannelName::Sandbox, &no) {
        Some(o) => signed(
            &sim,
            &method,
            path,
            StatusCode::OK,
            serde_json::to_vec(&view(&o)).unwrap(),
        ),
        None => error(
            &sim,
            &method,
            path,
            StatusCode::NOT_FOUND,
            "ORDER_NOT_EXIST",
            "no such order",
        ),
    }
}

async fn close(
    State(sim): State<Arc<Sim>>,
    Path(no): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path();
    if !authentic(&sim, &method, path, &headers, b"") {
        return error(
            &sim,
            &method,
            path,
            StatusCode::UNAUTHORIZED,
            "SIGN_ERROR",
            "signature verification failed",
        );
    }
    if sim.chance(
        Draw::CloseError,
        sim.faults.lock().unwrap().close_error_rate,
    ) {
        return error(
            &sim,
            &method,
            path,
            StatusCode::INTERNAL_SERVER_ERROR,
            "SYSTEM_ERROR",
            "injected close error",
        );
    }
    match ops::close(&sim, ChannelName::Sandbox, 0, &no) {
        Ok(()) => signed(&sim, &method, path, StatusCode::NO_CONTENT, Vec::new()),
        Err(CloseError::NotExist) => error(
            &sim,
            &method,
            path,
            StatusCode::NOT_FOUND,
            "ORDER_NOT_EXIST",
            "no such order",
        ),
        Err(CloseError::Paid) => error(
            &sim,
            &method,
            path,
            StatusCode::BAD_REQUEST,
            "ORDER_PAID",
            "order paid, cannot close",
        ),
    }
}

#[derive(serde::Deserialize)]
struct RefundBody {
    out_trade_no: String,
    out_refund_no: String,
    amount: i64,
}

async fn refund(
    State(sim): State<Arc<Sim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    if !authentic(&sim, &method, path, &headers, &body) {
        return error(
            &sim,
            &method,
            path,
            StatusCode::UNAUTHORIZED,
            "SIGN_ERROR",
            "signature verification failed",
        );
    }
    let Ok(req) = serde_json::from_slice::<RefundBody>(&body) else {
        return error(
            &sim,
            &method,
            path,
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "bad refund body",
        );
    };
    let done = sim.ledger.lock().unwrap().refund(
        ChannelName::Sandbox,
        0,
        &req.out_trade_no,
        &req.out_refund_no,
        req.amount,
        sim.now_ms(),
        sim.now_ms(),
    );
    match done {
        Ok(r) => signed(&sim, &method, path, StatusCode::OK, serde_json::json!({"out_refund_no": r.out_refund_no, "status": "SUCCESS", "amount": r.amount}).to_string().into_bytes()),
        Err(e) => error(&sim, &method, path, StatusCode::BAD_REQUEST, "REFUND_REFUSED", &format!("{e:?}")),
    }
}

async fn statement(
    State(sim): State<Arc<Sim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    if !authentic(&sim, &method, path, &headers, b"") {
        return error(
            &sim,
            &method,
            path,
            StatusCode::UNAUTHORIZED,
            "SIGN_ERROR",
            "signature verification failed",
        );
    }
    let date = uri
        .query()
        .and_then(|q| q.strip_prefix("date="))
        .unwrap_or_default();
    signed(
        &sim,
        &method,
        path,
        StatusCode::OK,
        crate::statement::sandbox_bill(&sim, date)
            .to_string()
            .into_bytes(),
    )
}

async fn refund_query(
    State(sim): State<Arc<Sim>>,
    Path(no): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path();
    if !authentic(&sim, &method, path, &headers, b"") {
        return error(
            &sim,
            &method,
            path,
            StatusCode::UNAUTHORIZED,
            "SIGN_ERROR",
            "signature verification failed",
        );
    }
    let found = sim
        .ledger
        .lock()
        .unwrap()
        .refunds
        .iter()
        .find(|r| r.channel == ChannelName::Sandbox && r.out_refund_no == no)
        .cloned();
    match found {
        Some(r) => signed(&sim, &method, path, StatusCode::OK, serde_json::json!({"out_refund_no": r.out_refund_no, "status": "SUCCESS", "amount": r.amount}).to_string().into_bytes()),
        None => error(&sim, &method, path, StatusCode::NOT_FOUND, "REFUND_NOT_EXIST", "no such refund"),
    }
}

/// The payment notification, signed per delivery with a fresh timestamp.
pub(crate) fn notify(sim: Arc<Sim>, order: SimOrder, event_id: String) {
    let n = PaymentNotification {
        id: event_id,
        event_type: protocol::EVENT_PAID.into(),
        out_trade_no: order.out_trade_no.clone(),
        trade_no: order.trade_no.clone().unwrap_or_default(),
        amount: order.amount,
        paid_at: order.paid_at.unwrap_or_default(),
    };
    let body = serde_json::to_vec(&n).unwrap();
    let path = reqwest::Url::parse(&order.notify_url)
        .map(|u| u.path().to_owned())
        .unwrap_or_default();
    let signer = sim.clone();
    crate::notify::spawn(
        sim,
        order.notify_url.clone(),
        move || {
            let ts = signer.now_ms() / 1000;
            let sig = protocol::sign(&signer.keys.sandbox, ts, "POST", &path, &body);
            crate::notify::Delivery {
                headers: vec![
                    (protocol::TS_HEADER.into(), ts.to_string()),
                    (protocol::SIG_HEADER.into(), sig),
                ],
                content_type: "application/json",
                body: body.clone(),
            }
        },
        |status, text| (200..300).contains(&status) && text.contains("SUCCESS"),
    );
}

/// `GET /sandbox/v1/pay/{no}`: a page with one "pay" button (a form: no script).
async fn pay_page(axum::extract::Path(no): axum::extract::Path<String>) -> Response {
    let no = no.replace(
        |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_',
        "",
    );
    axum::response::Html(format!(
        "<!doctype html><html><head><meta name=viewport content=\"width=device-width\"><title>Sandbox pay</title></head>\
         <body><h1>Sandbox wallet</h1><p>Order {no}</p><form method=post action=\"/sandbox/v1/pay/{no}\"><button id=pay type=submit>Pay</button></form></body></html>"
    ))
    .into_response()
}

/// `POST /sandbox/v1/pay/{no}`: the payer pays.
async fn pay_by_hand(
    State(sim): State<Arc<Sim>>,
    axum::extract::Path(no): axum::extract::Path<String>,
) -> Response {
    match crate::ops::pay_with(&sim, ChannelName::Sandbox, &no, false, None) {
        Ok(()) => axum::response::Html(
            "<!doctype html><html><body><p id=result>paid</p></body></html>".to_owned(),
        )
        .into_response(),
        Err(e) => (
            StatusCode::CONFLICT,
            axum::response::Html(format!(
                "<!doctype html><html><body><p id=result>not paid: {e:?}</p></body></html>"
            )),
        )
            .into_response(),
    }
}
