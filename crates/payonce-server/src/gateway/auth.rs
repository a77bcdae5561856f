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
    let hash = sha256_hex(secret.as_bytes());
    let now = state.clock.now();
    if let Some(app) = state.known_apps.get(&hash, now) {
        return Ok(app);
    }
    let app = state
        .store
        .app_by_secret_hash(&hash)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    state.known_apps.put(hash, app.clone(), now);
    Ok(app)
}

/// Apps recently authenticated, by the hash of their secret: every business request names its
/// app, and reading it from the database each time was one of a duplicate prepay's two
/// statements. An entry lives `KNOWN_APP_TTL` of the server's clock, which bounds how stale an
/// app seen here can be (no API changes what a request reads of its app today — name, allowed
/// hosts, submission window — and a secret is never revoked; when one can be, this is where a
/// revocation must also land). A wrong secret is never remembered: each one is a database read,
/// and the failure budget per address limits those.
#[derive(Default)]
pub struct KnownApps {
    entries: std::sync::Mutex<std::collections::HashMap<String, (App, payonce_core::Timestamp)>>,
}

/// How long an authenticated app is believed without reading it again.
const KNOWN_APP_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// Entries kept at most (apps are few; a flood of distinct valid secrets cannot exist).
const KNOWN_APPS_MAX: usize = 10_000;

impl KnownApps {
    fn get(&self, hash: &str, now: payonce_core::Timestamp) -> Option<App> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(hash)
            .filter(|(_, until)| now < *until)
            .map(|(app, _)| app.clone())
    }

    /// Forgets every app this instance believed: after a change to an app (its account binding)
    /// the next request reads it again here; other instances within their TTL.
    pub fn forget_all(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn put(&self, hash: String, app: App, now: payonce_core::Timestamp) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= KNOWN_APPS_MAX {
            entries.retain(|_, (_, until)| now < *until);
        }
        entries.insert(hash, (app, now + KNOWN_APP_TTL));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use payonce_core::Timestamp;

    fn app() -> App {
        App {
            id: payonce_core::AppId::new(),
            name: "shop".into(),
            secret_hash: "h".into(),
            webhook_url: None,
            webhook_secret_enc: String::new(),
            webhook_secret_prev_enc: None,
            webhook_disabled: false,
            allowed_hosts: None,
            sink: Default::default(),
            submission_window_secs: 0,
            channel_accounts: Default::default(),
            created_at: Timestamp(0),
        }
    }

    #[test]
    fn an_authenticated_app_is_believed_for_its_ttl_and_read_again_after() {
        let known = KnownApps::default();
        let a = app();
        let t = Timestamp(1_000_000);
        assert!(known.get("h", t).is_none(), "nothing known at first");
        known.put("h".into(), a.clone(), t);
        assert_eq!(
            known
                .get("h", t + KNOWN_APP_TTL - std::time::Duration::from_millis(1))
                .map(|x| x.id),
            Some(a.id)
        );
        assert!(
            known.get("h", t + KNOWN_APP_TTL).is_none(),
            "past its TTL: read again"
        );
        assert!(
            known.get("other", t).is_none(),
            "only the secret that was checked"
        );
    }
}
