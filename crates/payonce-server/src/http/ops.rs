//! Liveness, readiness (the database answers) and Prometheus metrics.

use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "operations", security(()), responses((status = 200, description = "`ok`", body = String, content_type = "text/plain")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "operations", security(()),
    responses((status = 200, description = "`ready`", body = String, content_type = "text/plain"),
              (status = 503, description = "the database does not answer, or a background worker stopped", body = String, content_type = "text/plain")))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.failed_worker.lock().unwrap().is_some() {
        return (StatusCode::SERVICE_UNAVAILABLE, "a background worker stopped");
    }
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready"),
        Err(e) => {
            tracing::warn!(error = %e, "database not reachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
        }
    }
}

/// Prometheus metrics; behind `Authorization: Bearer <metrics token>` when one is configured.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operations", security((), ("metricsToken" = [])),
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"),
              (status = 401, description = "unauthorized (a metrics token is configured and was not sent)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> axum::response::Response {
    if state.config.metrics_token.is_some() && !crate::auth::bearer_matches(&headers, state.config.metrics_token.as_deref()) {
        return crate::error::ApiError::unauthorized().into_response();
    }
    ([("content-type", "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}
