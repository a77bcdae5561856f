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
        .with_state(state)
}
