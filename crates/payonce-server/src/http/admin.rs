//! `/admin/v1/…`: the operator's API, behind `PAYONCE_ADMIN_TOKEN` (never an app secret).

use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match (&state.config.admin_token, given) {
        // Compared as hashes: equal-length, so the comparison time says nothing about the token.
        (Some(expected), Some(given)) if crate::crypto::sha256_hex(expected.as_bytes()) == crate::crypto::sha256_hex(given.as_bytes()) => Ok(()),
        _ => Err(ApiError::unauthorized()),
    }
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
