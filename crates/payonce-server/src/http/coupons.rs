//! `/v1/coupons`: an app's coupons. A coupon is applied when an order is created with its
//! `coupon_code`, reserved in the order's transaction, redeemed in the transaction that makes the
//! order paid (once, whatever the number of charges), released when the order closes or
//! expires, restored by a full refund (`payonce_store::coupons`).

use crate::error::ApiError;
use crate::gateway::auth::Authed;
use crate::http::request::{self, Body, Checked, Field, Invalid, MerchantNo, Problems};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use payonce_core::Timestamp;
use payonce_store::Coupon;
use serde::{Deserialize, Serialize};

// What reads the body and what the document shows (`http::request`).
/// The body of `POST /v1/coupons`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateCoupon)]
pub struct CreateCouponRequest {
    /// Unique in the app: another coupon with this code → 409 `coupon_code_conflict`.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.:|*-]+$")]
    code: Checked<MerchantNo>,
    /// `fixed`: `value` fen off; `percent`: `value` whole percent off (floor, in fen).
    #[schema(value_type = String, required = true, pattern = "^(fixed|percent)$")]
    kind: Checked<Kind>,
    #[schema(value_type = i64, required = true, minimum = 1, maximum = 1000000000)]
    value: Checked<Count<1_000_000_000>>,
    /// Orders below this amount (fen) cannot use it: 422 `coupon_not_applicable`.
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1000000000)]
    min_amount: Checked<Count<1_000_000_000>>,
    /// Reservations of open orders count against it.
    #[schema(value_type = i64, required = true, minimum = 1, maximum = 1000000000)]
    max_redemptions: Checked<Count<1_000_000_000>>,
    /// Orders of one `payer_ref` (required on the order when set).
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1000000)]
    per_payer_limit: Checked<Count<1_000_000>>,
    #[schema(value_type = Option<String>, format = DateTime)]
    valid_from: Checked<DateTime>,
    #[schema(value_type = Option<String>, format = DateTime)]
    valid_until: Checked<DateTime>,
}

/// `fixed` or `percent`.
struct Kind(String);

impl Field for Kind {
    fn check(v: serde_json::Value) -> Result<Self, Invalid> {
        let k = request::text(v, 16)?;
        if k == "fixed" || k == "percent" {
            Ok(Kind(k))
        } else {
            Err("must be fixed or percent".into())
        }
    }
}

/// A whole number from 1 to MAX.
struct Count<const MAX: i64>(i64);

impl<const MAX: i64> Field for Count<MAX> {
    fn check(v: serde_json::Value) -> Result<Self, Invalid> {
        request::integer(v, 1, MAX).map(Count)
    }
}

/// An RFC 3339 date-time (at most 40 characters).
struct DateTime(Timestamp);

impl Field for DateTime {
    fn check(v: serde_json::Value) -> Result<Self, Invalid> {
        let s = request::text(v, 40)?;
        time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339)
            .map(|t| DateTime(Timestamp((t.unix_timestamp_nanos() / 1_000_000) as i64)))
            .map_err(|_| "must be an RFC 3339 date-time".into())
    }
}

/// A coupon and what is left of it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CouponView {
    pub code: String,
    pub kind: String,
    pub value: i64,
    pub min_amount: Option<i64>,
    pub max_redemptions: i64,
    pub per_payer_limit: Option<i64>,
    #[schema(format = DateTime)]
    pub valid_from: Option<String>,
    #[schema(format = DateTime)]
    pub valid_until: Option<String>,
    /// Held by open orders.
    pub reserved: i64,
    pub redeemed: i64,
    /// `max_redemptions - reserved - redeemed` (never below 0).
    pub remaining: i64,
}

fn view(c: &Coupon) -> CouponView {
    CouponView {
        code: c.code.clone(),
        kind: c.kind.clone(),
        value: c.value,
        min_amount: c.min_amount,
        max_redemptions: c.max_redemptions,
        per_payer_limit: c.per_payer_limit,
        valid_from: c.valid_from.map(|t| t.to_rfc3339()),
        valid_until: c.valid_until.map(|t| t.to_rfc3339()),
        reserved: c.reserved,
        redeemed: c.redeemed,
        remaining: (c.max_redemptions - c.reserved - c.redeemed).max(0),
    }
}

/// Create a coupon.
#[utoipa::path(post, path = "/v1/coupons", operation_id = "create_coupon", tag = "coupons", request_body = CreateCouponRequest,
    params(crate::gateway::idempotency::IdempotencyKeyHeader),
    responses((status = 201, description = "created", body = CouponView),
              (status = 409, description = "coupon_code_conflict", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 422, description = "coupon_invalid: a percent over 100, or valid_until not after valid_from", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn create(
    State(state): State<AppState>,
    Authed(app): Authed,
    Body { fields, unknown }: Body<CreateCouponRequest>,
) -> Result<Response, ApiError> {
    let mut p = Problems::new(unknown);
    let code = p.required("code", fields.code).map(|c| c.0);
    let kind = p.required("kind", fields.kind).map(|k| k.0);
    let value = p.required("value", fields.value).map(|v| v.0);
    let min_amount = p.optional("min_amount", fields.min_amount).map(|v| v.0);
    let max_redemptions = p
        .required("max_redemptions", fields.max_redemptions)
        .map(|v| v.0);
    let per_payer_limit = p
        .optional("per_payer_limit", fields.per_payer_limit)
        .map(|v| v.0);
    let valid_from = p.optional("valid_from", fields.valid_from).map(|t| t.0);
    let valid_until = p.optional("valid_until", fields.valid_until).map(|t| t.0);
    p.finish()?;
    // Well-formed, but not a coupon anyone could use (the schema cannot say this): 422.
    if kind.as_deref() == Some("percent") && value.is_some_and(|v| v > 100) {
        return Err(ApiError::unprocessable(
            "coupon_invalid",
            "value: a percent coupon takes at most 100",
        ));
    }
    if let (Some(a), Some(b)) = (valid_from, valid_until)
        && b <= a
    {
        return Err(ApiError::unprocessable(
            "coupon_invalid",
            "valid_until: must be after valid_from",
        ));
    }
    let (Some(code), Some(kind), Some(value), Some(max_redemptions)) =
        (code, kind, value, max_redemptions)
    else {
        unreachable!("finish() reported missing fields")
    };
    let coupon = Coupon {
        id: payonce_core::EventId::new()
            .as_str()
            .replacen("evt_", "cpn_", 1),
        app_id: app.id.clone(),
        code,
        kind,
        value,
        min_amount,
        max_redemptions,
        per_payer_limit,
        valid_from,
        valid_until,
        reserved: 0,
        redeemed: 0,
        created_at: state.clock.now(),
    };
    if !state.store.create_coupon(&coupon).await? {
        return Err(ApiError::conflict(
            "coupon_code_conflict",
            "this app already has a coupon with that code",
        ));
    }
    Ok((StatusCode::CREATED, Json(view(&coupon))).into_response())
}

/// A coupon, with its remaining redemptions.
#[utoipa::path(get, path = "/v1/coupons/{code}", operation_id = "get_coupon", tag = "coupons", params(("code" = String, Path, description = "the coupon's code")),
    responses((status = 200, description = "the coupon", body = CouponView),
              (status = 404, description = "not_found", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn get(
    State(state): State<AppState>,
    Authed(app): Authed,
    Path(code): Path<String>,
) -> Result<Json<CouponView>, ApiError> {
    let c = state
        .store
        .coupon(&app.id, &code)
        .await?
        .ok_or_else(|| ApiError::not_found("coupon"))?;
    Ok(Json(view(&c)))
}
