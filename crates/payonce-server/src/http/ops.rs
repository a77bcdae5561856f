//! Liveness, readiness (the database answers) and Prometheus metrics.

use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready"),
        Err(e) => {
            tracing::warn!(error = %e, "database not reachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
        }
    }
}

/// Prometheus metrics; behind `Authorization: Bearer <metrics token>` when one is configured.
pub async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> axum::response::Response {
    if let Some(token) = &state.config.metrics_token {
        let given = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        let ok = given.is_some_and(|g| aws_lc_rs::constant_time::verify_slices_are_equal(g.as_bytes(), token.as_bytes()).is_ok());
        if !ok {
            return crate::error::ApiError::unauthorized().into_response();
        }
    }
    ([("content-type", "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}
