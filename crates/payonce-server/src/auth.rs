//! Bearer authentication of business systems: the secret's SHA-256 finds the app.

use crate::crypto::sha256_hex;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use payonce_store::App;

/// Whether the request carries `Authorization: Bearer <expected>`; `None` expected → never.
/// Compared as SHA-256 digests (equal length), so the time taken says nothing about the token.
pub fn bearer_matches(headers: &HeaderMap, expected: Option<&str>) -> bool {
    let given = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match (expected, given) {
        (Some(expected), Some(given)) => sha256_hex(expected.as_bytes()) == sha256_hex(given.as_bytes()),
        _ => false,
    }
}

/// The authenticated app of a request.
#[derive(Clone, Debug)]
pub struct Authed(pub App);

pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<App, ApiError> {
    let secret = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= 256)
        .ok_or_else(ApiError::unauthorized)?;
    state.store.app_by_secret_hash(&sha256_hex(secret.as_bytes())).await?.ok_or_else(ApiError::unauthorized)
}

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // The idempotency layer may have authenticated already.
        if let Some(a) = parts.extensions.get::<Authed>() {
            return Ok(a.clone());
        }
        let app = authenticate(state, &parts.headers).await?;
        parts.extensions.insert(Authed(app.clone()));
        Ok(Authed(app))
    }
}
