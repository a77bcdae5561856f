//! `Idempotency-Key` on every POST (IETF draft "The Idempotency-Key HTTP Header Field", with
//! Stripe's semantics): the first complete 2xx/4xx answer (not 401/409/429, never 5xx) is stored
//! with a fingerprint of the request; a replay returns it byte for byte with
//! `Idempotent-Replayed: true`; another body under the same key is a 422; a concurrent
//! duplicate waits for the first and returns its answer, or gets 409 if it takes too long.

use crate::crypto::sha256_hex;
use crate::error::ApiError;
use crate::gateway::auth::{Authed, authenticate};
use crate::gateway::waiting::Deadline;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use payonce_store::{IdempotencyBegin, IdempotencyKey, StoredResponse};
use std::time::Duration;

/// `Idempotency-Key` of every POST under `/v1`.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IdempotencyKeyHeader {
    /// Replays the first complete answer verbatim (with `Idempotent-Replayed: true`) for at
    /// least 24 h; another body under the same key → 422 `idempotency_key_reused`.
    #[serde(rename = "Idempotency-Key")]
    #[param(
        rename = "Idempotency-Key",
        min_length = 1,
        max_length = 255,
        pattern = r"^[\x21-\x7E]+$"
    )]
    idempotency_key: Option<String>,
}

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED: &str = "idempotent-replayed";
/// How long a key stays locked by a request that never finished (its process died): after
/// this, a retry may run the request again. Longer than any request can take.
const LOCK_MS: i64 = 60_000;

pub async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(raw) = req.headers().get(HEADER) else {
        return next.run(req).await;
    };
    let key = match raw.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()) => {
            k.to_owned()
        }
        _ => {
            return ApiError::field(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            )
            .into_response();
        }
    };
    let (mut parts, body) = req.into_parts();
    // Keys are scoped per app, so authentication comes first (done already by the rate
    // limiter, when one runs).
    let app = match parts.extensions.get::<Authed>() {
        Some(a) => a.0.clone(),
        None => match authenticate(&state, &parts.headers).await {
            Ok(a) => a,
            Err(e) => return e.into_response(),
        },
    };
    parts.extensions.insert(Authed(app.clone()));
    let limit = state.config.body_limit;
    let Ok(bytes) = crate::gateway::body_limit::read_limited(body, limit).await else {
        return ApiError::payload_too_large(limit).into_response();
    };
    let mut fp = format!(
        "{} {}\n",
        parts.method,
        parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("")
    )
    .into_bytes();
    fp.extend_from_slice(&bytes);
    let k = IdempotencyKey {
        app_id: app.id.clone(),
        key,
        fingerprint: sha256_hex(&fp),
    };

    // The request's one deadline: a duplicate waits for the first by it, and the request goes
    // on with it (`RequestDeadline`), three seconds longer than the first request's own wait so
    // that a duplicate outlasts it.
    let deadline = Deadline::after(
        &state.clock,
        state.config.prepay_wait() + Duration::from_secs(3),
    );
    let wait_key = format!("idempotency:{}:{}", k.app_id, k.key);
    let begun = state
        .waits
        .until(&wait_key, &deadline, || async {
            match state
                .store
                .idempotency_begin(&k, state.clock.now(), LOCK_MS)
                .await?
            {
                IdempotencyBegin::InFlight => Ok::<_, payonce_store::StoreError>(None),
                other => Ok(Some(other)),
            }
        })
        .await;
    match begun {
        Err(e) => return ApiError::from(e).into_response(),
        Ok(Some((IdempotencyBegin::Proceed, _))) => {}
        Ok(Some((IdempotencyBegin::Replay(stored), _))) => {
            metrics::counter!("payonce_idempotent_replays_total", "app" => app.id.to_string())
                .increment(1);
            return replay(stored);
        }
        Ok(Some((IdempotencyBegin::Mismatch, _))) => {
            return ApiError::idempotency_key_reused().into_response();
        }
        Ok(Some((IdempotencyBegin::InFlight, _))) | Ok(None) => {
            return ApiError::request_in_progress(
                "a request with this Idempotency-Key is still being processed",
            )
            .into_response();
        }
    }
    parts.extensions.insert(deadline);

    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let status = resp.status();
    let (rparts, rbody) = resp.into_parts();
    let rbytes = match axum::body::to_bytes(rbody, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            let _ = state.store.idempotency_release(&k).await;
            state.waits.signal(&wait_key);
            return ApiError::internal(e).into_response();
        }
    };
    let cacheable = (status.is_success() || status.is_client_error())
        && !matches!(
            status,
            StatusCode::UNAUTHORIZED | StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS
        );
    let outcome = if cacheable {
        let stored = StoredResponse {
            status: status.as_u16(),
            content_type: rparts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_owned(),
            body: String::from_utf8_lossy(&rbytes).into_owned(),
        };
        state.store.idempotency_complete(&k, &stored).await
    } else {
        // Not a final answer: free the key so the client's retry runs the request again.
        state.store.idempotency_release(&k).await
    };
    // Duplicates waiting on this key check again now.
    state.waits.signal(&wait_key);
    if let Err(e) = outcome {
        // The work itself is durable and safe to repeat (orders by merchant number, prepays by
        // the one-active-attempt rule); the key unlocks after LOCK_MS.
        tracing::warn!(error = %e, "could not record idempotency outcome");
    }
    Response::from_parts(rparts, Body::from(rbytes))
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut resp = (status, stored.body).into_response();
    let ct = HeaderValue::from_str(&stored.content_type)
        .unwrap_or(HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    resp.headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    resp
}

/// The request's one deadline for waiting on others: the idempotency layer's, when it ran
/// (the request continues on the deadline it waited by), else one begun now.
pub struct RequestDeadline(pub Deadline);

impl axum::extract::FromRequestParts<AppState> for RequestDeadline {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(RequestDeadline(
            parts
                .extensions
                .get::<Deadline>()
                .cloned()
                .unwrap_or_else(|| Deadline::after(&state.clock, state.config.prepay_wait())),
        ))
    }
}
