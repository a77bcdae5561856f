//! `/admin/v1/…`: the operator's API, behind `PAYONCE_ADMIN_TOKEN` (never an app secret).

use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if crate::auth::bearer_matches(headers, state.config.admin_token.as_deref()) { Ok(()) } else { Err(ApiError::unauthorized()) }
}

/// What the machinery could not settle alone, for a person to resolve.
pub async fn abnormal(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&state, &headers)?;
    let rows = state.store.abnormal_open().await?;
    Ok(Json(serde_json::json!({
        "items": rows.iter().map(|a| serde_json::json!({
            "id": a.id, "kind": a.kind, "reference": a.reference, "detail": a.detail, "created_at": a.created_at.to_rfc3339(),
        })).collect::<Vec<_>>(),
    })))
}

fn event_json(e: &payonce_store::EventRow) -> serde_json::Value {
    serde_json::json!({
        "id": e.id, "type": e.event_type, "app_id": e.app_id, "order_id": e.order_id,
        "created_at": e.created_at.to_rfc3339(), "delivery_status": e.delivery_status, "attempts": e.delivery_count,
        "next_attempt_at": e.next_attempt_at.map(|t| t.to_rfc3339()), "last_status": e.last_status, "last_error": e.last_error,
        "delivered_at": e.delivered_at.map(|t| t.to_rfc3339()),
        "payload": serde_json::from_str::<serde_json::Value>(&e.payload).unwrap_or_default(),
    })
}

#[derive(serde::Deserialize)]
pub struct EventsQuery {
    status: Option<String>,
    limit: Option<i64>,
}

/// Events and their delivery state, newest first (`?status=failed` for the resend queue).
pub async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<EventsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&state, &headers)?;
    let rows = state.store.list_events(q.status.as_deref(), q.limit.unwrap_or(100).clamp(1, 1000)).await?;
    Ok(Json(serde_json::json!({ "items": rows.iter().map(event_json).collect::<Vec<_>>() })))
}

/// One event with every delivery attempt and its answer.
pub async fn event(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&state, &headers)?;
    let e = state.store.event(&id).await?.ok_or_else(|| ApiError::not_found("event"))?;
    let attempts = state.store.delivery_attempts(&id).await?;
    let mut v = event_json(&e);
    v["deliveries"] = attempts
        .iter()
        .map(|a| serde_json::json!({"destination": a.destination, "status_code": a.status_code, "error": a.error, "duration_ms": a.duration_ms, "at": a.attempted_at.to_rfc3339()}))
        .collect();
    Ok(Json(v))
}

/// Puts one event back in the delivery queue (same id: receivers de-duplicate).
pub async fn resend(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&state, &headers)?;
    state.store.event(&id).await?.ok_or_else(|| ApiError::not_found("event"))?;
    let n = state.store.resend(Some(&id), state.clock.now()).await?;
    Ok(Json(serde_json::json!({ "requeued": n })))
}

/// Puts every failed event back in the queue.
pub async fn resend_failed(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&state, &headers)?;
    let n = state.store.resend(None, state.clock.now()).await?;
    Ok(Json(serde_json::json!({ "requeued": n })))
}

/// A new webhook secret (shown once). Until the receiver switches, webhooks carry signatures
/// with both the new and the previous secret.
pub async fn rotate_webhook_secret(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&state, &headers)?;
    let app_id = payonce_core::AppId::parse(&id).map_err(|_| ApiError::not_found("app"))?;
    let secret = crate::crypto::new_webhook_secret();
    let enc = state.master_key.encrypt(&secret, app_id.as_str());
    if !state.store.rotate_webhook_secret(&app_id, &enc).await? {
        return Err(ApiError::not_found("app"));
    }
    Ok(Json(serde_json::json!({ "app_id": app_id, "webhook_secret": secret })))
}
