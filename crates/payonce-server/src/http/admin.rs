//! `/admin/v1/…`: the operator's API, behind `PAYONCE_ADMIN_TOKEN` (never an app secret).

use crate::error::ApiError;
use crate::http::request::{Body, Checked, Field, Invalid, Object, Problems, Text};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use payonce_store::DeliveryStatus;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if crate::gateway::auth::bearer_matches(headers, state.config.admin_token.as_deref()) {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

/// In front of every `/admin/v1` route: the admin token against the client address's failure
/// budget (shared with console sign-in: one token guessed). Over it, `429` whatever the token.
pub async fn gate(
    State(state): State<AppState>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let ip = crate::gateway::auth::client_ip(&state, req.headers(), peer.map(|p| p.0.0));
    match crate::gateway::auth::check_secret(
        &state,
        crate::gateway::ratelimit::Surface::Admin,
        ip,
        || crate::gateway::auth::bearer_matches(req.headers(), state.config.admin_token.as_deref()),
    ) {
        Ok(()) => next.run(req).await,
        Err(crate::gateway::auth::SecretRefused::Wrong) => ApiError::unauthorized().into_response(),
        Err(crate::gateway::auth::SecretRefused::OverBudget(wait)) => {
            ApiError::too_many_failures(wait).into_response()
        }
    }
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
    crate::views::one_of_names(DeliveryStatus::ALL.iter().map(|d| d.as_str()))
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
pub async fn abnormal(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<AbnormalList>, ApiError> {
    authorize(&state, &headers)?;
    let rows = state.store.abnormal_open().await?;
    Ok(Json(AbnormalList {
        items: rows
            .iter()
            .map(|a| AbnormalItem {
                id: a.id.clone(),
                kind: a.kind.clone(),
                reference: a.reference.clone(),
                detail: a.detail.clone(),
                created_at: a.created_at.to_rfc3339(),
            })
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
    let rows = state
        .store
        .list_events(status, q.limit.unwrap_or(100))
        .await?;
    Ok(Json(EventList {
        items: rows.iter().map(event_view).collect(),
    }))
}

/// One event with every delivery attempt and its answer.
#[utoipa::path(get, path = "/admin/v1/events/{id}", operation_id = "get_event", tag = "admin", security(("adminToken" = [])), params(("id" = String, Path, description = "evt_…")),
    responses((status = 200, description = "the event with its deliveries", body = Event),
              (status = 404, description = "not_found", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn event(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Event>, ApiError> {
    authorize(&state, &headers)?;
    let e = state
        .store
        .event(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("event"))?;
    let attempts = state.store.delivery_attempts(&id).await?;
    let mut v = event_view(&e);
    v.deliveries = Some(
        attempts
            .iter()
            .map(|a| Delivery {
                destination: a.destination.clone(),
                status_code: a.status_code,
                error: a.error.clone(),
                duration_ms: a.duration_ms,
                at: a.attempted_at.to_rfc3339(),
            })
            .collect(),
    );
    Ok(Json(v))
}

/// Puts one event back in the delivery queue (same id: receivers de-duplicate).
#[utoipa::path(post, path = "/admin/v1/events/{id}/resend", operation_id = "resend_event", tag = "admin", security(("adminToken" = [])), params(("id" = String, Path, description = "evt_…")),
    responses((status = 200, description = "requeued", body = Requeued),
              (status = 404, description = "not_found", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn resend(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Requeued>, ApiError> {
    authorize(&state, &headers)?;
    state
        .store
        .event(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("event"))?;
    let n = state.store.resend(Some(&id), state.clock.now()).await?;
    Ok(Json(Requeued { requeued: n }))
}

/// Puts every failed event back in the queue.
#[utoipa::path(post, path = "/admin/v1/events/resend-failed", operation_id = "resend_failed_events", tag = "admin", security(("adminToken" = [])),
    responses((status = 200, description = "requeued", body = Requeued)))]
pub async fn resend_failed(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Requeued>, ApiError> {
    authorize(&state, &headers)?;
    let n = state.store.resend(None, state.clock.now()).await?;
    Ok(Json(Requeued { requeued: n }))
}

/// A new webhook secret (shown once). Until the receiver switches, webhooks carry signatures
/// with both the new and the previous secret.
#[utoipa::path(post, path = "/admin/v1/apps/{id}/rotate-webhook-secret", operation_id = "rotate_webhook_secret", tag = "admin", security(("adminToken" = [])), params(("id" = String, Path, description = "app_…")),
    responses((status = 200, description = "the new secret, shown once", body = RotatedSecret),
              (status = 404, description = "not_found", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn rotate_webhook_secret(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<RotatedSecret>, ApiError> {
    authorize(&state, &headers)?;
    let app_id = payonce_core::AppId::parse(&id).map_err(|_| ApiError::not_found("app"))?;
    let secret = crate::crypto::new_webhook_secret();
    let enc = state.master_key.encrypt(&secret, app_id.as_str());
    if !state.store.rotate_webhook_secret(&app_id, &enc).await? {
        return Err(ApiError::not_found("app"));
    }
    Ok(Json(RotatedSecret {
        app_id: app_id.to_string(),
        webhook_secret: secret,
    }))
}

/// One reconciliation run of a channel's bill of one day.
#[derive(Serialize, ToSchema)]
pub struct ReconciliationView {
    /// `rec_…`
    pub id: String,
    pub channel: String,
    /// The channel account whose bill the run read.
    pub account: String,
    /// `YYYY-MM-DD`, Asia/Shanghai.
    pub bill_date: String,
    /// `running`, `completed` or `failed`.
    pub status: String,
    /// Counts: `rows`, `matched`, `classes` (items by class), `totals` (the bill's own sums:
    /// `payments`, `paid`, `settled`, `refunds`, `refunded` in fen, `fees_millifen` in
    /// thousandths of a fen, `unrecognised` rows) and `bill_source` (`downloaded`, or `stored`:
    /// a re-run reads the bill kept by the first).
    #[schema(value_type = Object)]
    pub summary: serde_json::Value,
    pub reason: Option<String>,
    #[schema(format = DateTime)]
    pub started_at: String,
    #[schema(format = DateTime)]
    pub finished_at: Option<String>,
}

/// A difference between a bill and payonce's records.
#[derive(Serialize, ToSchema)]
pub struct ReconciliationItemView {
    pub id: String,
    /// `repaired_paid`, `repaired_refund`, `missing_at_channel`, `amount_mismatch`, `unknown_trade`, `unknown_refund`.
    pub class: String,
    /// The out_trade_no or out_refund_no.
    pub reference: String,
    pub app_id: Option<String>,
    pub order_id: Option<String>,
    /// Fen, as payonce has it.
    pub local_amount: Option<i64>,
    /// Fen, as the bill has it.
    pub channel_amount: Option<i64>,
    pub detail: String,
}

#[derive(Serialize, ToSchema)]
pub struct ReconciliationList {
    pub items: Vec<ReconciliationView>,
}

/// A run and one page of its items.
#[derive(Serialize, ToSchema)]
pub struct ReconciliationDetail {
    #[serde(flatten)]
    pub run: ReconciliationView,
    pub items: Vec<ReconciliationItemView>,
    /// Pass as `after` for the next page; absent on the last.
    pub next_after: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ItemsQuery {
    /// Only items of this class.
    #[param(schema_with = item_class)]
    class: Option<String>,
    /// The `next_after` of the previous page.
    after: Option<String>,
    /// Items per page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// The body of `POST /admin/v1/reconciliations`.
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconcileRequest {
    /// A configured channel: `wechatpay`, `alipay`, `unionpay`, `sandbox`.
    #[schema(
        value_type = String,
        required = true,
        min_length = 1,
        max_length = 32,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    channel: Checked<Text<32>>,
    /// `YYYY-MM-DD` (Asia/Shanghai).
    #[schema(value_type = String, required = true, pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
    date: Checked<BillDate>,
    /// The channel account whose bill to read (`GET /admin/v1/channel-accounts`); default: the
    /// channel's default account.
    #[schema(value_type = Option<String>, max_length = 32, pattern = r"^[a-z0-9_-]{1,32}$")]
    account: Checked<Text<32>>,
}

/// A bill's day as written, `YYYY-MM-DD` (whether it is a day of the calendar is the
/// handler's 422 `invalid_date`: the schema cannot say so).
struct BillDate(String);

impl Field for BillDate {
    fn check(v: serde_json::Value) -> Result<Self, Invalid> {
        let d = v.as_str().ok_or("must be a string, YYYY-MM-DD")?;
        let shaped = d.len() == 10
            && d.bytes().enumerate().all(|(i, b)| {
                if i == 4 || i == 7 {
                    b == b'-'
                } else {
                    b.is_ascii_digit()
                }
            });
        if shaped {
            Ok(BillDate(d.to_owned()))
        } else {
            Err("must be YYYY-MM-DD".into())
        }
    }
}

fn item_class() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::views::one_of_names(crate::engine::reconcile::CLASSES.iter().copied())
}

fn run_view(r: &payonce_store::Reconciliation) -> ReconciliationView {
    ReconciliationView {
        id: r.id.clone(),
        channel: r.channel.clone(),
        account: r.account.clone(),
        bill_date: r.bill_date.clone(),
        status: r.status.clone(),
        summary: serde_json::from_str(&r.summary).unwrap_or_default(),
        reason: r.reason.clone(),
        started_at: payonce_core::Timestamp(r.started_at).to_rfc3339(),
        finished_at: r
            .finished_at
            .map(|t| payonce_core::Timestamp(t).to_rfc3339()),
    }
}

/// Reconciliation runs, newest bill date first.
#[utoipa::path(get, path = "/admin/v1/reconciliations", operation_id = "list_reconciliations", tag = "admin", security(("adminToken" = [])),
    responses((status = 200, description = "runs", body = ReconciliationList)))]
pub async fn reconciliations(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<ReconciliationList>, ApiError> {
    authorize(&state, &headers)?;
    let runs = state.store.reconciliations(100).await?;
    Ok(Json(ReconciliationList {
        items: runs.iter().map(run_view).collect(),
    }))
}

/// One run with its items, by class if asked, a page at a time.
#[utoipa::path(get, path = "/admin/v1/reconciliations/{id}", operation_id = "get_reconciliation", tag = "admin", security(("adminToken" = [])),
    params(("id" = String, Path, description = "rec_…"), ItemsQuery),
    responses((status = 200, description = "the run and a page of its items", body = ReconciliationDetail),
              (status = 400, description = "validation_failed", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 404, description = "not_found", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn reconciliation(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    crate::http::body::Query(q): crate::http::body::Query<ItemsQuery>,
) -> Result<Json<ReconciliationDetail>, ApiError> {
    authorize(&state, &headers)?;
    if q.limit.is_some_and(|l| !(1..=1000).contains(&l)) {
        return Err(ApiError::field("limit", "must be between 1 and 1000"));
    }
    if let Some(c) = q
        .class
        .as_deref()
        .filter(|c| !crate::engine::reconcile::CLASSES.contains(c))
    {
        return Err(ApiError::field(
            "class",
            format!(
                "{c:?} is not one of {}",
                crate::engine::reconcile::CLASSES.join(", ")
            ),
        ));
    }
    let run = state
        .store
        .reconciliation(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("reconciliation"))?;
    let limit = q.limit.unwrap_or(100);
    let items = state
        .store
        .reconciliation_items(&id, q.class.as_deref(), q.after.as_deref(), limit)
        .await?;
    let next_after = (items.len() as i64 == limit)
        .then(|| items.last().map(|i| i.id.clone()))
        .flatten();
    Ok(Json(ReconciliationDetail {
        run: run_view(&run),
        items: items
            .into_iter()
            .map(|i| ReconciliationItemView {
                id: i.id,
                class: i.class,
                reference: i.reference,
                app_id: i.app_id,
                order_id: i.order_id,
                local_amount: i.local_amount,
                channel_amount: i.channel_amount,
                detail: i.detail,
            })
            .collect(),
        next_after,
    }))
}

/// Runs (or re-runs) one channel's reconciliation of one day now; answers the finished run.
/// Re-running repairs nothing twice and ends with the same counts.
#[utoipa::path(post, path = "/admin/v1/reconciliations", operation_id = "run_reconciliation", tag = "admin", security(("adminToken" = [])),
    request_body = ReconcileRequest,
    responses((status = 200, description = "the finished run (status `failed` with its reason when the bill could not be used)", body = ReconciliationView),
              (status = 409, description = "reconciliation_running: another instance is running it", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 400, description = "validation_failed", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 422, description = "unknown_channel: not configured here; unknown_account: no such account of the channel (or several and none the default); invalid_date: not a calendar day", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn run_reconciliation(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body { fields, unknown }: Body<ReconcileRequest>,
) -> Result<Json<ReconciliationView>, ApiError> {
    authorize(&state, &headers)?;
    let mut p = Problems::new(unknown);
    let channel = p.required("channel", fields.channel);
    let date = p.required("date", fields.date);
    let account = p.optional("account", fields.account).map(|Text(a)| a);
    p.finish()?;
    let (Some(Text(channel)), Some(BillDate(date))) = (channel, date) else {
        unreachable!("finish() reported missing fields")
    };
    if crate::engine::reconcile::beijing_day(&date).is_none() {
        // Well-formed but not a day of the calendar (2026-02-30): the schema cannot say so.
        return Err(ApiError::unprocessable(
            "invalid_date",
            format!("{date} is not a calendar day"),
        ));
    }
    let owner = format!("admin-{}", payonce_core::EventId::new().as_str());
    let report = match crate::engine::reconcile::reconcile(
        &state,
        &owner,
        &channel,
        account.as_deref(),
        &date,
        false,
    )
    .await
    {
        Ok(r) => r,
        Err(crate::engine::reconcile::ReconcileError::NoChannel(c)) => {
            return Err(ApiError::unprocessable(
                "unknown_channel",
                format!("{c} is not configured here"),
            ));
        }
        Err(e @ crate::engine::reconcile::ReconcileError::NoAccount(..)) => {
            return Err(ApiError::unprocessable("unknown_account", e.to_string()));
        }
        Err(e @ crate::engine::reconcile::ReconcileError::Provider(..)) => {
            return Err(ApiError::unprocessable("provider_account", e.to_string()));
        }
        Err(crate::engine::reconcile::ReconcileError::BadDate(d)) => {
            return Err(ApiError::unprocessable(
                "invalid_date",
                format!("{d} is not a calendar day"),
            ));
        }
        Err(crate::engine::reconcile::ReconcileError::Busy(..)) => {
            return Err(ApiError::conflict(
                "reconciliation_running",
                "another instance is reconciling this channel and day",
            ));
        }
        Err(crate::engine::reconcile::ReconcileError::Store(e)) => return Err(e.into()),
    };
    let run = state
        .store
        .reconciliation(report.id.as_deref().unwrap_or_default())
        .await?
        .ok_or_else(|| ApiError::not_found("reconciliation"))?;
    Ok(Json(run_view(&run)))
}

/// One channel account: public facts only — never a key, a secret or anything derived from one
/// but the fingerprints of public keys and certificates.
#[derive(Serialize, ToSchema)]
pub struct ChannelAccountView {
    pub channel: String,
    pub name: String,
    /// `file`: from `channels.toml`, recorded by `serve` at start.
    pub source: String,
    /// WeChat `mchid`, Alipay `app_id`, UnionPay `merId` (empty for the sandbox).
    pub merchant_id: String,
    /// Apps without a binding on this channel use it.
    pub is_default: bool,
    /// A file account no longer in the file is disabled (its attempts still name it).
    pub enabled: bool,
    /// Whether the instance answering holds its keys now.
    pub loaded: bool,
    /// `merchant` (its own number), `provider` (a WeChat service provider: signs for its
    /// sub-merchants, takes no payment) or `sub_merchant` (of `provider`). As loaded here;
    /// `merchant` for an account this instance has not loaded.
    pub role: String,
    /// The provider account of a sub-merchant.
    pub provider: Option<String>,
    /// `{what, sha256}` of each public key and certificate.
    pub fingerprints: Vec<Fingerprint>,
    /// Where the channel must send this account's notifications.
    pub notify_url: String,
    /// The last self-check (`api` accounts): when, whether it passed, and what it said.
    pub last_check: Option<AccountCheck>,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct AccountCheck {
    #[schema(format = DateTime)]
    pub at: String,
    pub ok: bool,
    pub message: String,
}

fn account_view(state: &AppState, a: payonce_store::ChannelAccountRecord) -> ChannelAccountView {
    let loaded = state.channels.account(a.channel, &a.name);
    let role = loaded
        .as_ref()
        .map(|l| l.role.clone())
        .unwrap_or(payonce_channels::AccountRole::Merchant);
    ChannelAccountView {
        loaded: loaded.is_some(),
        role: role.as_str().to_owned(),
        provider: role.provider().map(str::to_owned),
        notify_url: crate::engine::payments::notify_url(state, a.channel, &a.name),
        channel: a.channel.to_string(),
        fingerprints: a
            .fingerprints
            .into_iter()
            .map(|(what, sha256)| Fingerprint { what, sha256 })
            .collect(),
        last_check: a.last_check.map(|(at, ok, message)| AccountCheck {
            at: at.to_rfc3339(),
            ok,
            message,
        }),
        name: a.name,
        source: a.source,
        merchant_id: a.merchant_id,
        is_default: a.is_default,
        enabled: a.enabled,
        updated_at: a.updated_at.to_rfc3339(),
    }
}

#[derive(Serialize, ToSchema)]
pub struct Fingerprint {
    pub what: String,
    pub sha256: String,
}

#[derive(Serialize, ToSchema)]
pub struct ChannelAccountList {
    pub items: Vec<ChannelAccountView>,
}

/// Every channel account the deployment knows, by channel then name.
#[utoipa::path(get, path = "/admin/v1/channel-accounts", operation_id = "list_channel_accounts", tag = "admin", security(("adminToken" = [])),
    responses((status = 200, description = "accounts", body = ChannelAccountList)))]
pub async fn channel_accounts(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<ChannelAccountList>, ApiError> {
    authorize(&state, &headers)?;
    let items = state
        .store
        .channel_accounts()
        .await?
        .into_iter()
        .map(|a| account_view(&state, a))
        .collect();
    Ok(Json(ChannelAccountList { items }))
}

/// The body of `PUT /admin/v1/apps/{id}/channel-accounts/{channel}`.
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindAccountRequest {
    /// An account of the channel (`GET /admin/v1/channel-accounts`); `null`: back to the
    /// channel's default account.
    #[schema(value_type = Option<String>, max_length = 32, pattern = r"^[a-z0-9_-]{1,32}$")]
    account: Checked<Text<32>>,
}

/// The app's account on one channel.
#[derive(Serialize, ToSchema)]
pub struct AppAccountBinding {
    pub app_id: String,
    pub channel: String,
    /// `null`: the channel's default account.
    pub account: Option<String>,
}

/// Binds an app's NEW payments on a channel to one of its accounts. Attempts already made keep
/// theirs: their queries, closes and refunds go to the account that made them.
#[utoipa::path(put, path = "/admin/v1/apps/{id}/channel-accounts/{channel}", operation_id = "bind_channel_account", tag = "admin", security(("adminToken" = [])),
    params(("id" = String, Path, description = "app_…"), ("channel" = String, Path, description = "wechatpay, alipay, unionpay, sandbox")),
    request_body = BindAccountRequest,
    responses((status = 200, description = "the binding now", body = AppAccountBinding),
              (status = 400, description = "validation_failed", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 404, description = "not_found: no such app or channel", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 422, description = "unknown_account: no such account of the channel; account_disabled; provider_account: a service provider takes no payments", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn bind_channel_account(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, channel)): Path<(String, String)>,
    Body { fields, unknown }: Body<BindAccountRequest>,
) -> Result<Json<AppAccountBinding>, ApiError> {
    authorize(&state, &headers)?;
    let mut p = Problems::new(unknown);
    let account = p.optional("account", fields.account);
    if let Some(Text(a)) = &account
        && !payonce_channels::config::valid_account_name(a)
    {
        p.error("account", "1-32 of a-z, 0-9, '-' and '_'");
    }
    p.finish()?;
    let app_id = payonce_core::AppId::parse(&id).map_err(|_| ApiError::not_found("app"))?;
    let channel =
        payonce_core::ChannelName::parse(&channel).map_err(|_| ApiError::not_found("channel"))?;
    let account = account.map(|Text(a)| a);
    if let Some(a) = &account
        && state
            .channels
            .account(channel, a)
            .is_some_and(|l| !l.takes_payments())
    {
        return Err(ApiError::unprocessable(
            "provider_account",
            format!(
                "the {channel} account {a:?} is a service provider: it takes no payments itself; bind one of its sub-merchants"
            ),
        ));
    }
    use crate::engine::accounts::{BindError, bind};
    match bind(state.store.as_ref(), &app_id, channel, account.as_deref()).await {
        Ok(()) => {
            state.known_apps.forget_all();
            Ok(Json(AppAccountBinding {
                app_id: app_id.to_string(),
                channel: channel.to_string(),
                account,
            }))
        }
        Err(BindError::NoSuchApp) => Err(ApiError::not_found("app")),
        Err(e @ BindError::UnknownAccount { .. }) => {
            Err(ApiError::unprocessable("unknown_account", e.to_string()))
        }
        Err(e @ BindError::Disabled { .. }) => {
            Err(ApiError::unprocessable("account_disabled", e.to_string()))
        }
        Err(BindError::Store(e)) => Err(e.into()),
    }
}

/// The body of `POST /admin/v1/channel-accounts`.
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SaveAccountRequest {
    /// 1-32 of a-z, 0-9, `-`, `_`.
    #[schema(value_type = String, required = true, max_length = 32, pattern = r"^[a-z0-9_-]{1,32}$")]
    name: Checked<Text<32>>,
    /// Apps without a binding on this channel use it.
    #[schema(value_type = Option<bool>)]
    default: Checked<Flag>,
    /// The channel's identifiers and keys, inline: `{"channel": "wechatpay", "gateway", "mchid",
    /// "appid", "merchant_serial_no", "merchant_key_pem", "merchant_cert_pem"?, "apiv3_key",
    /// "platform_public_key_pem"?, "platform_public_key_id"?, "platform_cert_pems"?}`;
    /// `{"channel": "alipay", "gateway", "app_id", "app_private_key_pem",
    /// "alipay_public_key_pem"}`; `{"channel": "unionpay", "gateway", "mer_id", "sign_key_pem",
    /// "sign_cert_pem", "root_cert_pem", "middle_cert_pem"?}`; a sub-merchant of a service
    /// provider of `channels.toml`: `{"channel": "wechatpay_sub_merchant", "provider",
    /// "sub_mchid", "sub_appid"?}` or `{"channel": "alipay_sub_merchant", "provider",
    /// "auth_app_id", "app_auth_token"}`. Sealed at rest; never returned.
    #[schema(value_type = Object, required = true)]
    config: Checked<Object<65536>>,
}

/// The body of `PUT /admin/v1/channel-accounts/{channel}/{name}` (the path names the account).
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateAccountRequest {
    /// Apps without a binding on this channel use it.
    #[schema(value_type = Option<bool>)]
    default: Checked<Flag>,
    /// As in `POST /admin/v1/channel-accounts`.
    #[schema(value_type = Object, required = true)]
    config: Checked<Object<65536>>,
}

/// `true` or `false`.
struct Flag(bool);

impl Field for Flag {
    fn check(v: serde_json::Value) -> Result<Self, Invalid> {
        v.as_bool()
            .map(Flag)
            .ok_or_else(|| Invalid("must be true or false".into()))
    }
}

fn saved(
    state: &AppState,
    outcome: Result<crate::engine::accounts::SaveOutcome, crate::engine::accounts::SaveError>,
    created: bool,
) -> Result<(axum::http::StatusCode, Json<ChannelAccountView>), ApiError> {
    use crate::engine::accounts::{SaveError, SaveOutcome};
    match outcome {
        Ok(SaveOutcome::Enabled(r)) => Ok((
            if created {
                axum::http::StatusCode::CREATED
            } else {
                axum::http::StatusCode::OK
            },
            Json(account_view(state, r)),
        )),
        // Kept, disabled: the answer says exactly what is wrong.
        Ok(SaveOutcome::Disabled(_, why)) => {
            Err(ApiError::unprocessable("account_check_failed", why))
        }
        Err(e @ SaveError::FileAccount(..)) => {
            Err(ApiError::conflict("file_account", &e.to_string()))
        }
        Err(SaveError::NoSuchAccount(..)) => Err(ApiError::not_found("channel account")),
        Err(e @ (SaveError::BadName | SaveError::Sealed(_))) => {
            Err(ApiError::unprocessable("invalid_account", e.to_string()))
        }
        Err(SaveError::Store(e)) => Err(e.into()),
    }
}

/// The account's fields, read from `config`. The document describes `config` as an object
/// only, so an object that is not a channel account is `422 invalid_account` (never a 400: the
/// request met its schema); serde's message names the field, never a value.
fn inline_config(
    config: Object<65536>,
) -> Result<payonce_channels::inline::InlineAccount, ApiError> {
    serde_json::from_value(serde_json::Value::Object(config.0))
        .map_err(|e| ApiError::unprocessable("invalid_account", format!("config: {e}")))
}

/// Adds a channel account at runtime: checked (keys, certificate, one harmless signed call),
/// sealed at rest under its own data key, used by every instance within seconds. A failed check
/// keeps it disabled and answers `422 account_check_failed` with exactly what is wrong.
#[utoipa::path(post, path = "/admin/v1/channel-accounts", operation_id = "add_channel_account", tag = "admin", security(("adminToken" = [])),
    request_body = SaveAccountRequest,
    responses((status = 201, description = "checked and enabled", body = ChannelAccountView),
              (status = 400, description = "validation_failed", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 409, description = "file_account: channels.toml has an account of that name", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 422, description = "account_check_failed (kept disabled), invalid_account", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn add_channel_account(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body { fields, unknown }: Body<SaveAccountRequest>,
) -> Result<(axum::http::StatusCode, Json<ChannelAccountView>), ApiError> {
    authorize(&state, &headers)?;
    let mut p = Problems::new(unknown);
    let name = p.required("name", fields.name);
    let default = p.optional("default", fields.default);
    let config = p.required("config", fields.config);
    p.finish()?;
    let (Some(Text(name)), Some(config)) = (name, config) else {
        unreachable!("finish() reported missing fields")
    };
    let inline = inline_config(config)?;
    let outcome =
        crate::engine::accounts::save(&state, &name, default.is_some_and(|Flag(d)| d), &inline)
            .await;
    saved(&state, outcome, true)
}

/// Rotates an account's keys (or changes its identifiers): the same checks as adding it. A
/// failed check leaves it disabled.
#[utoipa::path(put, path = "/admin/v1/channel-accounts/{channel}/{name}", operation_id = "rotate_channel_account", tag = "admin", security(("adminToken" = [])),
    params(("channel" = String, Path, description = "wechatpay, alipay, unionpay, sandbox"), ("name" = String, Path, description = "the account")),
    request_body = RotateAccountRequest,
    responses((status = 200, description = "checked and enabled", body = ChannelAccountView),
              (status = 400, description = "validation_failed", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 404, description = "not_found", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 409, description = "file_account: change it in channels.toml", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 422, description = "account_check_failed (now disabled), invalid_account", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn rotate_channel_account(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((channel, name)): Path<(String, String)>,
    Body { fields, unknown }: Body<RotateAccountRequest>,
) -> Result<(axum::http::StatusCode, Json<ChannelAccountView>), ApiError> {
    authorize(&state, &headers)?;
    let mut p = Problems::new(unknown);
    let default = p.optional("default", fields.default);
    let config = p.required("config", fields.config);
    p.finish()?;
    let channel =
        payonce_core::ChannelName::parse(&channel).map_err(|_| ApiError::not_found("channel"))?;
    let Some(config) = config else {
        unreachable!("finish() reported missing fields")
    };
    let inline = inline_config(config)?;
    if inline.channel() != channel {
        return Err(ApiError::unprocessable(
            "invalid_account",
            "config: its channel is not the path's",
        ));
    }
    let known = state.store.channel_accounts().await?;
    if !known.iter().any(|a| a.channel == channel && a.name == name) {
        return Err(ApiError::not_found("channel account"));
    }
    let outcome =
        crate::engine::accounts::save(&state, &name, default.is_some_and(|Flag(d)| d), &inline)
            .await;
    saved(&state, outcome, false)
}

/// Stops using an account for new payments (attempts already made keep naming it; their calls
/// are refused while it is disabled), or uses it again after a passing self-check.
#[utoipa::path(post, path = "/admin/v1/channel-accounts/{channel}/{name}/{action}", operation_id = "enable_or_disable_channel_account", tag = "admin", security(("adminToken" = [])),
    params(("channel" = String, Path, description = "wechatpay, alipay, unionpay, sandbox"), ("name" = String, Path, description = "the account"), ("action" = String, Path, description = "`enable` or `disable`")),
    responses((status = 200, description = "the account now", body = ChannelAccountView),
              (status = 404, description = "not_found", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 409, description = "file_account: change it in channels.toml", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 422, description = "account_check_failed: stays disabled", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn enable_or_disable_channel_account(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((channel, name, action)): Path<(String, String, String)>,
) -> Result<Json<ChannelAccountView>, ApiError> {
    authorize(&state, &headers)?;
    let channel =
        payonce_core::ChannelName::parse(&channel).map_err(|_| ApiError::not_found("channel"))?;
    let enable = match action.as_str() {
        "enable" => true,
        "disable" => false,
        _ => return Err(ApiError::not_found("action")),
    };
    let outcome = crate::engine::accounts::set_enabled(&state, channel, &name, enable).await;
    use crate::engine::accounts::SaveOutcome;
    match outcome {
        Ok(SaveOutcome::Disabled(r, _)) if !enable => Ok(Json(account_view(&state, r))),
        other => saved(&state, other, false).map(|(_, j)| j),
    }
}
