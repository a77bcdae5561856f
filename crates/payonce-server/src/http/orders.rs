//! `/v1/orders…`: create, read, prepay and close payment orders.

use crate::crypto::sha256_hex;
use crate::engine::payments::{self, PrepayParams};
use crate::error::ApiError;
use crate::gateway::auth::Authed;
use crate::gateway::idempotency::{IdempotencyKeyHeader, RequestDeadline};
use crate::http::request::{
    self, Amount, Body, Checked, Field, HttpUrl, Invalid, MerchantNo, Object, Problems, Text,
};
use crate::state::AppState;
use crate::views;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use payonce_core::coupon::CouponRefusal;
use payonce_core::{AppId, ChannelName, Currency, Money, OrderId, OrderStatus, PayMethod};
use payonce_store::{CreateOrder, Order};
use serde::Deserialize;

/// Default order lifetime (DESIGN.md: 30 minutes).
const DEFAULT_EXPIRE_SECS: i64 = 30 * 60;

// What reads the body (every problem reported by name at once) and what the document shows
// (`http::request`).
/// The body of `POST /v1/orders`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateOrder)]
pub struct CreateOrderRequest {
    /// The business's own order number, unique per app: the same number with the same content
    /// answers 200 with the existing order, with other content 409. Give it or `payer_ref`.
    #[schema(value_type = Option<String>, min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.:|*-]+$")]
    merchant_order_no: Checked<MerchantNo>,
    /// The payer (the business's user id), for a business with no order number yet: without
    /// `merchant_order_no`, the same payer_ref, amount, currency, subject and metadata within
    /// the app's submission window (default 10 s) answer 200 with the SAME order and
    /// `Submission-Replayed: true` (a cart submitted twice by a double click); after the window,
    /// a new order. With `merchant_order_no`, the number decides.
    #[schema(value_type = Option<String>, min_length = 1, max_length = 64, pattern = r"^[\x21-\x7E]+$")]
    payer_ref: Checked<PayerRef>,
    /// A coupon of this app: the order's `amount` becomes what is left after its discount
    /// (`original_amount`, `discount` in the order), and the coupon is reserved for the order
    /// until it is paid (redeemed), closed or expired (released). 409 `coupon_unavailable` with
    /// `reason` (`unknown`, `expired`, `not_yet_valid`, `exhausted`, `payer_limit`), 422
    /// `coupon_not_applicable` below its minimum amount; nothing is reserved on a failure.
    #[schema(value_type = Option<String>, min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.:|*-]+$")]
    coupon_code: Checked<Text<64>>,
    /// Minor units (fen).
    #[schema(value_type = i64, required = true, minimum = 1, maximum = 1000000000)]
    amount: Checked<Amount>,
    #[schema(value_type = String, required = true, pattern = "^CNY$")]
    currency: Checked<Cny>,
    #[schema(
        value_type = String,
        required = true,
        min_length = 1,
        max_length = 127,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    subject: Checked<Text<127>>,
    /// Default 1800 (30 minutes).
    #[schema(value_type = Option<i64>, minimum = 5, maximum = 604800)]
    expire_in_seconds: Checked<ExpireIn>,
    /// Where this order's webhooks go instead of the app's URL. Its host (and port) must be the
    /// app's webhook host or one the app allows, else 422 `notify_url_not_allowed`.
    #[schema(
        value_type = Option<String>,
        min_length = 1,
        max_length = 512,
        pattern = r"^https?://[^\u0000-\u0020\u007F-\u009F]+$"
    )]
    notify_url: Checked<HttpUrl<512>>,
    /// Anything the business wants back, at most 4096 bytes of JSON.
    #[schema(value_type = Option<Object>)]
    metadata: Checked<Object<4096>>,
}

/// A valid `POST /v1/orders` body.
struct NewOrder {
    merchant_order_no: Option<String>,
    payer_ref: Option<String>,
    coupon_code: Option<String>,
    amount: i64,
    currency: Currency,
    subject: String,
    expire_in: i64,
    notify_url: Option<String>,
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

impl CreateOrderRequest {
    fn validate(self, unknown: Vec<String>) -> Result<NewOrder, ApiError> {
        let mut p = Problems::new(unknown);
        let merchant_order_no = p.optional("merchant_order_no", self.merchant_order_no);
        let payer_ref = p.optional("payer_ref", self.payer_ref);
        let coupon_code = p.optional("coupon_code", self.coupon_code);
        let amount = p.required("amount", self.amount);
        let currency = p.required("currency", self.currency);
        let subject = p.required("subject", self.subject);
        let expire_in = p.optional("expire_in_seconds", self.expire_in_seconds);
        let notify_url = p.optional("notify_url", self.notify_url);
        let metadata = p.optional("metadata", self.metadata);
        if merchant_order_no.is_none() && payer_ref.is_none() {
            // Neither: nothing would tell a resubmission from a new order.
            p.error(
                "merchant_order_no",
                "is required (or payer_ref, to have payonce recognise a resubmission by its content)",
            );
        }
        p.finish()?;
        let (Some(amount), Some(currency), Some(subject)) = (amount, currency, subject) else {
            unreachable!("finish() reported every missing required field");
        };
        Ok(NewOrder {
            merchant_order_no: merchant_order_no.map(|n| n.0),
            payer_ref: payer_ref.map(|p| p.0),
            coupon_code: coupon_code.map(|c| c.0),
            amount: amount.0,
            currency: currency.0,
            subject: subject.0,
            expire_in: expire_in.map_or(DEFAULT_EXPIRE_SECS, |e| e.0),
            notify_url: notify_url.map(|u| u.0),
            metadata: metadata.map(|m| m.0),
        })
    }
}

/// A payer reference: 1 to 64 printable ASCII characters, no spaces.
struct PayerRef(String);

impl Field for PayerRef {
    fn check(v: serde_json::Value) -> Result<Self, Invalid> {
        let p = request::text(v, 64)?;
        if p.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(PayerRef(p))
        } else {
            Err("must be printable ASCII without spaces".into())
        }
    }
}

/// The order's currency: CNY, the only one the supported channels settle.
struct Cny(Currency);

impl Field for Cny {
    fn check(v: serde_json::Value) -> Result<Self, Invalid> {
        match Currency::parse(&request::text(v, 3)?) {
            Ok(c) if c == Currency::CNY => Ok(Cny(c)),
            _ => Err("must be CNY (the only currency the supported channels settle)".into()),
        }
    }
}

/// An order's lifetime in seconds: 5 s to 7 days.
struct ExpireIn(i64);

impl Field for ExpireIn {
    fn check(v: serde_json::Value) -> Result<Self, Invalid> {
        request::integer(v, 5, 7 * 24 * 3600).map(ExpireIn)
    }
}

async fn render(state: &AppState, order: &Order) -> Result<crate::views::OrderView, ApiError> {
    Ok(load_order(state, order).await?)
}

/// Remembers the trace a new order was created in, so its events continue it. Telemetry, not
/// a fact: after the order's transaction, and a failure is only logged.
async fn keep_trace(
    state: &AppState,
    order: &Order,
    trace: Option<&axum::Extension<crate::http::TraceParent>>,
) {
    if let Some(tp) = trace.and_then(|t| t.0.0.as_deref())
        && let Err(e) = state
            .store
            .save_trace_context(&order.id, tp, state.clock.now())
            .await
    {
        tracing::warn!(error = %e, "keeping the order's trace context failed");
    }
}

/// Create a payment order.
#[utoipa::path(post, path = "/v1/orders", operation_id = "create_order", tag = "orders", request_body = CreateOrderRequest, params(IdempotencyKeyHeader),
    responses((status = 201, description = "created", body = crate::views::OrderView),
              (status = 200, description = "an order with this merchant_order_no and the same content exists, or (without merchant_order_no) the same content was submitted within the app's submission window",
               body = crate::views::OrderView,
               headers(("Submission-Replayed" = String, description = "`true` when the submission guard answered an earlier order of the same content"))),
              (status = 409, description = "merchant_order_no_conflict (the body carries the existing order) | coupon_unavailable (with `reason`)", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 422, description = "notify_url_not_allowed | coupon_not_applicable | payer_ref_required (the coupon has a per-payer limit)", body = crate::error::Problem, content_type = "application/problem+json")))]
#[tracing::instrument(skip_all, fields(app_id = %app.id))]
pub async fn create(
    State(state): State<AppState>,
    Authed(app): Authed,
    trace: Option<axum::Extension<crate::http::TraceParent>>,
    Body { fields, unknown }: Body<CreateOrderRequest>,
) -> Result<Response, ApiError> {
    let NewOrder {
        merchant_order_no,
        payer_ref,
        coupon_code,
        amount,
        currency,
        subject,
        expire_in,
        notify_url,
        metadata,
    } = fields.validate(unknown)?;
    // A well-formed URL this app may not use: not a malformed request, a refusal (422).
    if notify_url
        .as_deref()
        .is_some_and(|u| !crate::engine::webhooks::notify_url_allowed(&app, u))
    {
        let mut e = ApiError::unprocessable(
            "notify_url_not_allowed",
            "notify_url: its host is neither the app's webhook host nor one the app allows",
        );
        e.errors.push(crate::error::FieldError {
            field: "notify_url".into(),
            message: "its host is neither the app's webhook host nor one the app allows".into(),
        });
        return Err(e);
    }
    let now = state.clock.now();
    // The coupon, if any: looked up and checked before anything is written; reserved in the
    // order's own transaction (the store's conditional update decides who gets the last one).
    let coupon = match &coupon_code {
        None => None,
        Some(code) => {
            let c = state
                .store
                .coupon(&app.id, code)
                .await?
                .ok_or_else(|| ApiError::coupon_unavailable("unknown"))?;
            match payonce_core::coupon::decide(&c, amount, payer_ref.is_some(), now) {
                Ok(used) => Some(used),
                Err(CouponRefusal::Unavailable(reason)) => {
                    return Err(ApiError::coupon_unavailable(reason));
                }
                Err(refusal @ CouponRefusal::BelowMinimum { .. }) => {
                    return Err(ApiError::unprocessable(
                        "coupon_not_applicable",
                        refusal.to_string(),
                    ));
                }
                Err(refusal @ CouponRefusal::PayerRefRequired) => {
                    // The body is well-formed; this coupon's own rule refuses it (issue 13 asked
                    // for a 400, but a schema-valid body is never a 400 here: see "400 means …"
                    // in README).
                    let mut e = ApiError::unprocessable("payer_ref_required", refusal.to_string());
                    e.errors.push(crate::error::FieldError {
                        field: "payer_ref".into(),
                        message: "is required with this coupon (it has a per-payer limit)".into(),
                    });
                    return Err(e);
                }
            }
        }
    };
    let payable = amount - coupon.as_ref().map_or(0, |c| c.discount);
    let amount = Money::new(payable, currency).map_err(|e| ApiError::field("amount", e.message))?;
    let metadata = metadata.map(|m| serde_json::Value::Object(m).to_string());
    let id = OrderId::new();
    // Same merchant_order_no with the same content is the same order; anything else conflicts.
    // Without one, the content itself is the key, for the app's submission window.
    let (merchant_order_no, guarded, content_hash) = match merchant_order_no {
        Some(no) => {
            let hash = sha256_hex(
                serde_json::json!([
                    no,
                    amount.minor,
                    amount.currency.as_str(),
                    subject,
                    expire_in,
                    notify_url,
                    metadata,
                    coupon_code
                ])
                .to_string()
                .as_bytes(),
            );
            (no, false, hash)
        }
        None => {
            let hash = sha256_hex(
                serde_json::json!([
                    "submission",
                    app.id.as_str(),
                    payer_ref,
                    amount.minor,
                    amount.currency.as_str(),
                    subject,
                    metadata,
                    coupon_code
                ])
                .to_string()
                .as_bytes(),
            );
            // payonce numbers the order itself: its id is unique.
            (id.as_str().to_owned(), app.submission_window_secs > 0, hash)
        }
    };
    let order = Order {
        id,
        app_id: app.id.clone(),
        merchant_order_no,
        amount,
        subject,
        notify_url,
        metadata,
        content_hash,
        status: OrderStatus::Unpaid,
        closed_by: None,
        paid_attempt_id: None,
        paid_at: None,
        refunded_amount: 0,
        expires_at: now.plus_secs(expire_in),
        version: 1,
        created_at: now,
        updated_at: now,
        coupon,
        payer_ref,
    };
    if guarded {
        return match state
            .store
            .create_guarded_order(&order, now.plus_secs(app.submission_window_secs))
            .await?
        {
            CreateOrder::Created(o) => {
                keep_trace(&state, &o, trace.as_ref()).await;
                Ok((StatusCode::CREATED, Json(render(&state, &o).await?)).into_response())
            }
            CreateOrder::Existing(o) | CreateOrder::Conflict(o) => {
                metrics::counter!("payonce_submission_guard_hits_total", "app" => app.id.to_string()).increment(1);
                Ok((
                    StatusCode::OK,
                    [("submission-replayed", "true")],
                    Json(render(&state, &o).await?),
                )
                    .into_response())
            }
            CreateOrder::CouponUnavailable(reason) => Err(ApiError::coupon_unavailable(reason)),
        };
    }
    match state.store.create_order(&order).await? {
        CreateOrder::Created(o) => {
            keep_trace(&state, &o, trace.as_ref()).await;
            Ok((StatusCode::CREATED, Json(render(&state, &o).await?)).into_response())
        }
        CreateOrder::Existing(o) => {
            Ok((StatusCode::OK, Json(render(&state, &o).await?)).into_response())
        }
        CreateOrder::Conflict(o) => Err(ApiError::merchant_order_no_conflict(
            render(&state, &o).await?,
        )),
        CreateOrder::CouponUnavailable(reason) => Err(ApiError::coupon_unavailable(reason)),
    }
}

/// Unknown, malformed or another app's id: all the same 404.
async fn load(state: &AppState, app: &AppId, id: &str) -> Result<Order, ApiError> {
    let id = OrderId::parse(id).map_err(|_| ApiError::not_found("order"))?;
    state
        .store
        .order(app, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("order"))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetQuery {
    /// Ask the channel about every open attempt before answering (client compensation).
    #[serde(default)]
    sync: bool,
}

/// An order with its attempts and refunds.
#[utoipa::path(get, path = "/v1/orders/{id}", operation_id = "get_order", tag = "orders", params(("id" = String, Path, description = "ord_…"), GetQuery),
    responses((status = 200, description = "the order", body = crate::views::OrderView),
              (status = 404, description = "not_found (unknown id, or another app's)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn get(
    State(state): State<AppState>,
    Authed(app): Authed,
    Path(id): Path<String>,
    crate::http::body::Query(q): crate::http::body::Query<GetQuery>,
) -> Result<Json<crate::views::OrderView>, ApiError> {
    let mut order = load(&state, &app.id, &id).await?;
    if q.sync {
        order = payments::sync_open_order(&state, order).await?;
    }
    Ok(Json(render(&state, &order).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FindQuery {
    #[param(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.:|*-]+$")]
    merchant_order_no: String,
}

/// Find an order by the business's number.
#[utoipa::path(get, path = "/v1/orders", operation_id = "find_order", tag = "orders", params(FindQuery),
    responses((status = 200, description = "the order", body = crate::views::OrderView),
              (status = 400, description = "validation_failed", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 404, description = "not_found", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn find_by_merchant_no(
    State(state): State<AppState>,
    Authed(app): Authed,
    crate::http::body::Query(q): crate::http::body::Query<FindQuery>,
) -> Result<Json<crate::views::OrderView>, ApiError> {
    let no = &q.merchant_order_no;
    if MerchantNo::check(serde_json::Value::String(no.clone())).is_err() {
        return Err(ApiError::field(
            "merchant_order_no",
            "must be 1 to 64 letters, digits or - _ . : | *",
        ));
    }
    let order = state
        .store
        .order_by_merchant_no(&app.id, no)
        .await?
        .ok_or_else(|| ApiError::not_found("order"))?;
    Ok(Json(render(&state, &order).await?))
}

/// The body of a prepay. The document shows, per configured channel, the methods it takes
/// (`http::openapi` writes that part from the server's configuration).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Prepay)]
pub struct PrepayRequest {
    #[schema(value_type = String, required = true)]
    channel: Checked<ChannelField>,
    #[schema(value_type = Option<String>)]
    method: Checked<Text<32>>,
    #[schema(value_type = Option<Object>)]
    payer: Checked<Object<1024>>,
}

/// A channel's name (`wechatpay`, `alipay`, …); whether this server has it configured is the
/// request's rule (`PrepayRequest::validate`).
struct ChannelField(ChannelName);

impl Field for ChannelField {
    fn check(v: serde_json::Value) -> Result<Self, Invalid> {
        ChannelName::parse(&request::text(v, 32)?)
            .map(ChannelField)
            .map_err(|e| Invalid(e.message))
    }
}

impl PrepayRequest {
    /// The channel (configured here), the method (one of the channel's; its first by default)
    /// and, for WeChat JSAPI, the payer's openid.
    fn validate(self, state: &AppState, unknown: Vec<String>) -> Result<PrepayParams, ApiError> {
        let mut p = Problems::new(unknown);
        let channel = p.required("channel", self.channel).map(|c| c.0);
        let method = p.optional("method", self.method).map(|m| m.0);
        let payer = p.optional("payer", self.payer).map(|o| o.0);
        let channel = channel.filter(|c| {
            let configured = state.channels.get(*c).is_some();
            if !configured {
                p.error("channel", "is not configured on this server");
            }
            configured
        });
        let method = match (channel, method) {
            (Some(c), None) => Some(c.methods()[0]),
            (Some(c), Some(m)) => match PayMethod::parse(&m) {
                Ok(m) if c.methods().contains(&m) => Some(m),
                _ => {
                    let names: Vec<_> = c.methods().iter().map(|m| m.as_str()).collect();
                    p.error(
                        "method",
                        format!("must be one of {} for {c}", names.join(", ")),
                    );
                    None
                }
            },
            (None, _) => None,
        };
        // WeChat JSAPI pays inside WeChat for one payer: without their openid the channel would
        // refuse it. Said here, before any attempt row exists, not as a 502 with a failed
        // attempt.
        if method == Some(PayMethod::Jsapi) {
            let openid = payer
                .as_ref()
                .and_then(|p| p.get("openid"))
                .and_then(|o| o.as_str());
            if !openid.is_some_and(|o| {
                !o.is_empty()
                    && o.len() <= 128
                    && o.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            }) {
                p.error(
                    "payer.openid",
                    "is required for wechatpay jsapi (1-128 letters, digits, '_' or '-')",
                );
            }
        }
        p.finish()?;
        let (Some(channel), Some(method)) = (channel, method) else {
            unreachable!("finish() reported missing fields")
        };
        Ok(PrepayParams {
            channel,
            method,
            payer: payer.map(serde_json::Value::Object),
        })
    }
}

/// Get a payment credential (the same one while it is valid).
#[utoipa::path(post, path = "/v1/orders/{id}/prepay", operation_id = "prepay_order", tag = "orders", request_body = PrepayRequest,
    params(("id" = String, Path, description = "ord_…"), IdempotencyKeyHeader),
    responses((status = 200, description = "the credential", body = crate::views::PrepaidView),
              (status = 404, description = "not_found", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 409, description = "order_already_paid | order_closed | request_in_progress", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 502, description = "channel_unavailable: the channel refused or failed; retrying is safe", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn prepay(
    State(state): State<AppState>,
    Authed(app): Authed,
    RequestDeadline(deadline): RequestDeadline,
    Path(id): Path<String>,
    Body { fields, unknown }: Body<PrepayRequest>,
) -> Result<Json<crate::views::PrepaidView>, ApiError> {
    let params = fields.validate(&state, unknown)?;
    // A duplicate of a prepay already answered reads its live credential and goes (one indexed
    // read); only a prepay that must change something loads the order and takes its turn.
    let fast = match OrderId::parse(&id) {
        Ok(order_id) => payments::live_credential(&state, &app, &order_id, &params).await?,
        Err(_) => None,
    };
    let answer = match fast {
        Some(answer) => answer,
        None => {
            let order = load(&state, &app.id, &id).await?;
            payments::prepay(&state, &app, &order.id, &params, &deadline).await?
        }
    };
    let a = &answer.attempt;
    Ok(Json(crate::views::PrepaidView {
        attempt_id: a.id.to_string(),
        out_trade_no: a.out_trade_no.to_string(),
        channel: a.channel.as_str(),
        method: a.method.as_str(),
        credential: answer.credential,
        expires_at: a.credential_expires_at.map(|t| t.to_rfc3339()),
        reused: answer.reused,
    }))
}

/// Close the order and every open channel order (at the channel first).
#[utoipa::path(post, path = "/v1/orders/{id}/close", operation_id = "close_order", tag = "orders", params(("id" = String, Path, description = "ord_…"), IdempotencyKeyHeader),
    responses((status = 200, description = "closed", body = crate::views::OrderView),
              (status = 404, description = "not_found", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 409, description = "order_already_paid | request_in_progress", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 502, description = "channel_unavailable: the channel could not confirm the close; retrying is safe", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn close(
    State(state): State<AppState>,
    Authed(app): Authed,
    RequestDeadline(deadline): RequestDeadline,
    Path(id): Path<String>,
) -> Result<Json<crate::views::OrderView>, ApiError> {
    let order = load(&state, &app.id, &id).await?;
    let closed = payments::close(&state, &app, &order.id, &deadline).await?;
    Ok(Json(render(&state, &closed).await?))
}

/// An order as the API shows it, with its attempts and refunds read from the store.
async fn load_order(
    state: &AppState,
    o: &Order,
) -> Result<views::OrderView, payonce_store::StoreError> {
    let attempts = state.store.attempts_of(&o.id).await?;
    let refunds = state.store.refunds_of(&o.id).await?;
    Ok(views::order(o, &attempts, &refunds))
}
