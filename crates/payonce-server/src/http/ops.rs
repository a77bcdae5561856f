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
    if state.config.metrics_token.is_some() && !crate::auth::bearer_matches(&headers, state.config.metrics_token.as_deref()) {
        return crate::error::ApiError::unauthorized().into_response();
    }
    ([("content-type", "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}
