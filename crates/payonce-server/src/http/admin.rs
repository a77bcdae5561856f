//! `/admin/v1/…`: the operator's API, behind `PAYONCE_ADMIN_TOKEN` (never an app secret).

use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use payonce_store::DeliveryStatus;
use utoipa::ToSchema;

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if crate::auth::bearer_matches(headers, state.config.admin_token.as_deref()) { Ok(()) } else { Err(ApiError::unauthorized()) }
}

/// Something the machinery could not settle alone, for a person to resolve.
#[derive(Serialize, ToSchema)]
pub struct AbnormalItem {
    pub id: String,
    /// e.g. `late_payment_refund_failed`, `refund_not_found`.
    pub kind: String,
    /// The attempt, refund or order concerned.
    pub reference: String,
    pub detail: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct AbnormalList {
    pub items: Vec<AbnormalItem>,
}

fn delivery_state() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::http::views::one_of_names(DeliveryStatus::ALL.iter().map(|d| d.as_str()))
}

/// An outbox event (what the business hears) and its delivery state.
#[derive(Serialize, ToSchema)]
pub struct Event {
    pub id: String,
    /// e.g. `order.paid`, `refund.succeeded`.
    #[serde(rename = "type")]
    pub event_type: String,
    pub app_id: String,
    pub order_id: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(schema_with = delivery_state)]
    pub delivery_status: &'static str,
    /// Delivery attempts so far.
    pub attempts: i64,
    #[schema(format = DateTime)]
    pub next_attempt_at: Option<String>,
    /// The receiver's last HTTP status.
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    #[schema(format = DateTime)]
    pub delivered_at: Option<String>,
    /// The event as it is sent.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// Only on `GET /admin/v1/events/{id}`: every delivery attempt and its answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<Vec<Delivery>>,
}

/// One delivery attempt of an event.
#[derive(Serialize, ToSchema)]
pub struct Delivery {
    pub destination: String,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
    #[schema(format = DateTime)]
    pub at: String,
}

#[derive(Serialize, ToSchema)]
pub struct EventList {
    pub items: Vec<Event>,
}

/// How many events went back into the delivery queue.
#[derive(Serialize, ToSchema)]
pub struct Requeued {
    pub requeued: u64,
}

/// A new webhook secret, shown this once.
#[derive(Serialize, ToSchema)]
pub struct RotatedSecret {
    pub app_id: String,
    pub webhook_secret: String,
}

/// What the machinery could not settle alone, for a person to resolve.
#[utoipa::path(get, path = "/admin/v1/abnormal", operation_id = "list_abnormal", tag = "admin", security(("adminToken" = [])),
    responses((status = 200, description = "open items, oldest first", body = AbnormalList)))]
pub async fn abnormal(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<AbnormalList>, ApiError> {
    authorize(&state, &headers)?;
    let rows = state.store.abnormal_open().await?;
    Ok(Json(AbnormalList {
        items: rows
            .iter()
            .map(|a| AbnormalItem { id: a.id.clone(), kind: a.kind.clone(), reference: a.reference.clone(), detail: a.detail.clone(), created_at: a.created_at.to_rfc3339() })
            .collect(),
    }))
}

fn event_view(e: &payonce_store::EventRow) -> Event {
    Event {
        id: e.id.clone(),
        event_type: e.event_type.clone(),
        app_id: e.app_id.clone(),
        order_id: e.order_id.clone(),
        created_at: e.created_at.to_rfc3339(),
        delivery_status: e.delivery_status.as_str(),
        attempts: e.delivery_count,
        next_attempt_at: e.next_attempt_at.map(|t| t.to_rfc3339()),
        last_status: e.last_status,
        last_error: e.last_error.clone(),
        delivered_at: e.delivered_at.map(|t| t.to_rfc3339()),
        payload: serde_json::from_str(&e.payload).unwrap_or_default(),
        deliveries: None,
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events in this delivery state (`failed` is the resend queue).
    #[param(schema_with = delivery_state)]
    status: Option<String>,
    /// At most this many, newest first (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// Outbox events and their delivery state, newest first.
#[utoipa::path(get, path = "/admin/v1/events", operation_id = "list_events", tag = "admin", security(("adminToken" = [])), params(EventsQuery),
    responses((status = 200, description = "events", body = EventList),
              (status = 400, description = "validation_failed", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    crate::http::body::Query(q): crate::http::body::Query<EventsQuery>,
) -> Result<Json<EventList>, ApiError> {
    authorize(&state, &headers)?;
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(DeliveryStatus::parse(s).ok_or_else(|| {
            let names: Vec<&str> = DeliveryStatus::ALL.iter().map(|d| d.as_str()).collect();
            ApiError::field("status", format!("must be one of {}", names.join(", ")))
        })?),
    };
    if q.limit.is_some_and(|l| !(1..=1000).contains(&l)) {
        return Err(ApiError::field("limit", "must be between 1 and 1000"));
    }
    let rows = state.store.list_events(status, q.limit.unwrap_or(100)).await?;
    Ok(Json(EventList { items: rows.iter().map(event_view).collect() }))
}

/// One event with every delivery attempt and its answer.
#[utoipa::path(get, path = "/admin/v1/events/{id}", operation_id = "get_event", tag = "admin", security(("adminToken" = [])), params(("id" = String, Path, description = "evt_…")),
    responses((status = 200, description = "the event with its deliveries", body = Event),
              (status = 404, description = "not_found", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn event(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<Event>, ApiError> {
    authorize(&state, &headers)?;
    let e = state.store.event(&id).await?.ok_or_else(|| ApiError::not_found("event"))?;
    let attempts = state.store.delivery_attempts(&id).await?;
    let mut v = event_view(&e);
    v.deliveries = Some(
        attempts
            .iter()
            .map(|a| Delivery { destination: a.destination.clone(), status_code: a.status_code, error: a.error.clone(), duration_ms: a.duration_ms, at: a.attempted_at.to_rfc3339() })
            .collect(),
    );
    Ok(Json(v))
}

/// Puts one event back in the delivery queue (same id: receivers de-duplicate).
#[utoipa::path(post, path = "/admin/v1/events/{id}/resend", operation_id = "resend_event", tag = "admin", security(("adminToken" = [])), params(("id" = String, Path, description = "evt_…")),
    responses((status = 200, description = "requeued", body = Requeued),
              (status = 404, description = "not_found", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn resend(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<Requeued>, ApiError> {
    authorize(&state, &headers)?;
    state.store.event(&id).await?.ok_or_else(|| ApiError::not_found("event"))?;
    let n = state.store.resend(Some(&id), state.clock.now()).await?;
    Ok(Json(Requeued { requeued: n }))
}

/// Puts every failed event back in the queue.
#[utoipa::path(post, path = "/admin/v1/events/resend-failed", operation_id = "resend_failed_events", tag = "admin", security(("adminToken" = [])),
    responses((status = 200, description = "requeued", body = Requeued)))]
pub async fn resend_failed(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Requeued>, ApiError> {
    authorize(&state, &headers)?;
    let n = state.store.resend(None, state.clock.now()).await?;
    Ok(Json(Requeued { requeued: n }))
}

/// A new webhook secret (shown once). Until the receiver switches, webhooks carry signatures
/// with both the new and the previous secret.
#[utoipa::path(post, path = "/admin/v1/apps/{id}/rotate-webhook-secret", operation_id = "rotate_webhook_secret", tag = "admin", security(("adminToken" = [])), params(("id" = String, Path, description = "app_…")),
    responses((status = 200, description = "the new secret, shown once", body = RotatedSecret),
              (status = 404, description = "not_found", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn rotate_webhook_secret(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<RotatedSecret>, ApiError> {
    authorize(&state, &headers)?;
    let app_id = payonce_core::AppId::parse(&id).map_err(|_| ApiError::not_found("app"))?;
    let secret = crate::crypto::new_webhook_secret();
    let enc = state.master_key.encrypt(&secret, app_id.as_str());
    if !state.store.rotate_webhook_secret(&app_id, &enc).await? {
        return Err(ApiError::not_found("app"));
    }
    Ok(Json(RotatedSecret { app_id: app_id.to_string(), webhook_secret: secret }))
}
