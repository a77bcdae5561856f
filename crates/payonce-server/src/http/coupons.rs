//! `/v1/coupons`: an app's coupons. A coupon is applied when an order is created with its
//! `coupon_code`, reserved in the order's transaction, redeemed in the transaction that makes the
//! order paid (once, whatever the number of charges), released when the order closes or
//! expires, restored by a full refund (`payonce_store::coupons`).

use crate::error::ApiError;
use crate::gateway::auth::Authed;
use crate::http::body::{Fields, JsonObject};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use payonce_core::Timestamp;
use payonce_store::Coupon;
use serde::{Deserialize, Serialize};

/// The body of `POST /v1/coupons`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateCoupon)]
#[allow(dead_code)]
pub struct CreateCouponRequest {
    /// Unique in the app: another coupon with this code → 409 `coupon_code_conflict`.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.:|*-]+$")]
    code: String,
    /// `fixed`: `value` fen off; `percent`: `value` whole percent off (floor, in fen).
    #[schema(pattern = "^(fixed|percent)$")]
    kind: String,
    #[schema(minimum = 1, maximum = 1000000000)]
    value: i64,
    /// Orders below this amount (fen) cannot use it: 422 `coupon_not_applicable`.
    #[schema(minimum = 1, maximum = 1000000000)]
    min_amount: Option<i64>,
    /// Reservations of open orders count against it.
    #[schema(minimum = 1, maximum = 1000000000)]
    max_redemptions: i64,
    /// Orders of one `payer_ref` (required on the order when set).
    #[schema(minimum = 1, maximum = 1000000)]
    per_payer_limit: Option<i64>,
    #[schema(format = DateTime)]
    valid_from: Option<String>,
    #[schema(format = DateTime)]
    valid_until: Option<String>,
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

fn time_field(f: &mut Fields, name: &str) -> Option<Timestamp> {
    let s = f.string(name, 40, false)?;
    match time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339) {
        Ok(t) => Some(Timestamp((t.unix_timestamp_nanos() / 1_000_000) as i64)),
        Err(_) => {
            f.error(name, "must be an RFC 3339 date-time");
            None
        }
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
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let mut f = Fields::new(body);
    let code = f.string("code", 64, true);
    let kind = f.string("kind", 16, true);
    let value = f.integer("value", 1, 1_000_000_000, true);
    let min_amount = f.integer("min_amount", 1, 1_000_000_000, false);
    let max_redemptions = f.integer("max_redemptions", 1, 1_000_000_000, true);
    let per_payer_limit = f.integer("per_payer_limit", 1, 1_000_000, false);
    let valid_from = time_field(&mut f, "valid_from");
    let valid_until = time_field(&mut f, "valid_until");
    if code.as_deref().is_some_and(|c| {
        !c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:|*".contains(&b))
    }) {
        f.error("code", "may contain only letters, digits and - _ . : | *");
    }
    if kind
        .as_deref()
        .is_some_and(|k| k != "fixed" && k != "percent")
    {
        f.error("kind", "must be fixed or percent");
    }
    f.finish()?;
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
