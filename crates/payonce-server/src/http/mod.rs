//! HTTP routes, mirroring the URL tree: `/v1/orders…`, `/notify/{channel}`, operations.

pub mod admin;
pub mod body;
pub mod console;
pub mod notify;
pub mod openapi;
pub mod ops;
pub mod orders;
pub mod refunds;
pub mod views;

use crate::state::AppState;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use axum::routing::{get, post};

pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/v1/orders", post(orders::create).get(orders::find_by_merchant_no))
        .route("/v1/orders/{id}", get(orders::get))
        .route("/v1/orders/{id}/prepay", post(orders::prepay))
        .route("/v1/orders/{id}/close", post(orders::close))
        .route("/v1/orders/{id}/refunds", post(refunds::create))
        .route("/v1/refunds/{id}", get(refunds::get))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::idempotency::layer));
    Router::new()
        .merge(v1)
        .route("/notify/{channel}", post(notify::receive))
        .route("/admin/v1/abnormal", get(admin::abnormal))
        .route("/admin/v1/events", get(admin::events))
        .route("/admin/v1/events/resend-failed", post(admin::resend_failed))
        .route("/admin/v1/events/{id}", get(admin::event))
        .route("/admin/v1/events/{id}/resend", post(admin::resend))
        .route("/admin/v1/apps/{id}/rotate-webhook-secret", post(admin::rotate_webhook_secret))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(openapi::openapi))
        .route("/docs", get(openapi::docs))
        .route("/console", get(console::console))
        .layer(DefaultBodyLimit::max(state.config.body_limit))
        .layer(axum::middleware::from_fn(run_to_completion))
        .with_state(state)
}

/// A client that hangs up must not cut a request off in the middle of a database transaction
/// or between a channel call and the recording of its outcome: each request runs in its own
/// task, which finishes (and commits, or rolls back) even if nobody waits for the answer.
async fn run_to_completion(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    match tokio::spawn(next.run(req)).await {
        Ok(resp) => resp,
        Err(e) => crate::error::ApiError::internal(e).into_response(),
    }
}
