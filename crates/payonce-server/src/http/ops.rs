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
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "a background worker stopped",
        );
    }
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready"),
        Err(e) => {
            tracing::warn!(error = %e, "database not reachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
        }
    }
}

/// Prometheus metrics: behind `Authorization: Bearer <metrics token>`, or open with
/// `--metrics-public`; closed otherwise (they name every app and its traffic). Wrong tokens
/// draw from the address's own failure budget (`429` past it, the right token too).
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operations", security((), ("metricsToken" = [])),
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"),
              (status = 401, description = "unauthorized (no metrics token sent, or a wrong one; or metrics are closed: no token configured and not public)", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 429, description = "too many wrong tokens from this address (`Retry-After`)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn metrics(
    State(state): State<AppState>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    match state.config.metrics_token.as_deref() {
        None if state.config.metrics_public => {}
        None => {
            return crate::error::ApiError::unauthorized_because(
                "metrics are closed: start payonce with --metrics-token (or --metrics-public)",
            )
            .into_response();
        }
        Some(token) => {
            let ip = crate::gateway::auth::client_ip(&state, &headers, peer.map(|p| p.0.0));
            match crate::gateway::auth::check_secret(
                &state,
                crate::gateway::ratelimit::Surface::Metrics,
                ip,
                || crate::gateway::auth::bearer_matches(&headers, Some(token)),
            ) {
                Ok(()) => {}
                Err(crate::gateway::auth::SecretRefused::Wrong) => {
                    return crate::error::ApiError::unauthorized().into_response();
                }
                Err(crate::gateway::auth::SecretRefused::OverBudget(wait)) => {
                    return crate::error::ApiError::too_many_failures(wait).into_response();
                }
            }
        }
    }
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
