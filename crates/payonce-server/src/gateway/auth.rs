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
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match (expected, given) {
        (Some(expected), Some(given)) => {
            sha256_hex(expected.as_bytes()) == sha256_hex(given.as_bytes())
        }
        _ => false,
    }
}

/// The client's address as the failure budgets key it: the connection's peer, or what a
/// `--trusted-proxies` peer says in `X-Forwarded-For`.
pub fn client_ip(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<std::net::SocketAddr>,
) -> Option<std::net::IpAddr> {
    let forwarded = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    crate::gateway::ratelimit::client_ip(
        peer.map(|p| p.ip()),
        forwarded,
        &state.limits.trusted_proxies,
    )
}

/// Why a presented secret was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretRefused {
    Wrong,
    /// The address spent its failure budget on this surface: refused without looking.
    OverBudget(std::time::Duration),
}

/// Checks a secret presented on `surface`: while the client's address is over that surface's
/// failure budget it is refused without being checked (the right secret too); otherwise
/// `matches` decides, and a failure is counted against the address.
pub fn check_secret(
    state: &AppState,
    surface: crate::gateway::ratelimit::Surface,
    ip: Option<std::net::IpAddr>,
    matches: impl FnOnce() -> bool,
) -> Result<(), SecretRefused> {
    let budget = state.limits.failures(surface);
    if let Some(wait) = ip.and_then(|ip| budget.over(ip)) {
        metrics::counter!("payonce_rate_limited_total", "kind" => format!("{}_failures", surface.as_str()), "app" => "").increment(1);
        return Err(SecretRefused::OverBudget(wait));
    }
    if matches() {
        return Ok(());
    }
    if let Some(ip) = ip {
        budget.fail(ip);
    }
    Err(SecretRefused::Wrong)
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
    state
        .store
        .app_by_secret_hash(&sha256_hex(secret.as_bytes()))
        .await?
        .ok_or_else(ApiError::unauthorized)
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
