//! `/v1/orders/{id}/refunds` and `/v1/refunds/{id}`: partial and full refunds, idempotent by
//! `merchant_refund_no`, never above what was paid.

use crate::crypto::sha256_hex;
use crate::error::ApiError;
use crate::gateway::auth::Authed;
use crate::http::request::{Amount, Body, Checked, MerchantNo, Problems, Text};
use crate::state::AppState;
use crate::views;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use payonce_core::{Money, OrderId, RefundId, RefundStatus};
use payonce_store::{CreateRefund, Refund, RefundKind};

// What reads the body and what the document shows (`http::request`).
/// The body of `POST /v1/orders/{id}/refunds`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateRefund)]
pub struct CreateRefundRequest {
    /// The business's refund number, unique per order: the same number with the same content
    /// answers 200 with the existing refund, with other content 409.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.:|*-]+$")]
    merchant_refund_no: Checked<MerchantNo>,
    /// Minor units (fen).
    #[schema(value_type = i64, required = true, minimum = 1, maximum = 1000000000)]
    amount: Checked<Amount>,
    #[schema(
        value_type = Option<String>,
        min_length = 1,
        max_length = 80,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    reason: Checked<Text<80>>,
}

/// Refund part or all of a paid order, idempotent by `merchant_refund_no`.
#[utoipa::path(post, path = "/v1/orders/{id}/refunds", operation_id = "create_refund", tag = "refunds", request_body = CreateRefundRequest,
    params(("id" = String, Path, description = "ord_…"), crate::gateway::idempotency::IdempotencyKeyHeader),
    responses((status = 201, description = "created", body = views::RefundView),
              (status = 200, description = "a refund with this merchant_refund_no and the same content exists", body = views::RefundView),
              (status = 404, description = "not_found", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 409, description = "order_not_paid | merchant_refund_no_conflict | request_in_progress", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 422, description = "refund_exceeds_paid", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn create(
    State(state): State<AppState>,
    Authed(app): Authed,
    Path(id): Path<String>,
    Body { fields, unknown }: Body<CreateRefundRequest>,
) -> Result<Response, ApiError> {
    let mut p = Problems::new(unknown);
    let merchant_refund_no = p.required("merchant_refund_no", fields.merchant_refund_no);
    let amount = p.required("amount", fields.amount);
    let reason = p.optional("reason", fields.reason).map(|r| r.0);
    p.finish()?;
    let (Some(MerchantNo(merchant_refund_no)), Some(Amount(amount))) = (merchant_refund_no, amount)
    else {
        unreachable!("finish() reported missing fields")
    };
    let order_id = OrderId::parse(&id).map_err(|_| ApiError::not_found("order"))?;
    let order = state
        .store
        .order(&app.id, &order_id)
        .await?
        .ok_or_else(|| ApiError::not_found("order"))?;
    let now = state.clock.now();
    let id = RefundId::new();
    let refund = Refund {
        // Our refund number at the channel: the refund id itself, so a retry reuses it.
        out_refund_no: payonce_core::RefundNo::for_refund(&id),
        id,
        order_id: order.id.clone(),
        app_id: app.id.clone(),
        attempt_id: order
            .paid_attempt_id
            .clone()
            .unwrap_or_else(|| payonce_core::AttemptId::from_trusted(String::new())),
        channel: payonce_core::ChannelName::Sandbox,
        out_trade_no: payonce_core::OutTradeNo::from_trusted(String::new()),
        merchant_refund_no: Some(merchant_refund_no.clone()),
        amount: Money {
            minor: amount,
            currency: order.amount.currency,
        },
        reason: reason.clone(),
        kind: RefundKind::Order,
        status: RefundStatus::Pending,
        failure_reason: None,
        content_hash: sha256_hex(
            serde_json::json!([merchant_refund_no, amount, reason])
                .to_string()
                .as_bytes(),
        ),
        requested: false,
        channel_data: None,
        // If this process dies during the channel call, the refund worker takes over then.
        next_query_at: Some(now + state.config.call_deadline()),
        query_count: 0,
        version: 1,
        created_at: now,
        updated_at: now,
    };
    match state.store.create_refund(&refund, now).await? {
        CreateRefund::Created(r) => {
            // Ask the channel now rather than at the next worker round.
            let settled = crate::engine::refunding::settle_refund(&state, r.clone())
                .await
                .unwrap_or(r);
            Ok((StatusCode::CREATED, Json(views::refund(&settled))).into_response())
        }
        CreateRefund::Existing(r) => Ok((StatusCode::OK, Json(views::refund(&r))).into_response()),
        CreateRefund::Conflict(r) => {
            let mut e = ApiError::conflict(
                "merchant_refund_no_conflict",
                "a refund with this merchant_refund_no exists with different content",
            );
            e.extra = Some(crate::error::Extra::Refund(views::to_value(
                &views::refund(&r),
            )));
            Err(e)
        }
        CreateRefund::NotPaid(_) => Err(ApiError::conflict(
            "order_not_paid",
            "the order has not been paid",
        )),
        CreateRefund::Exceeds { refundable } => {
            let mut e = ApiError::unprocessable(
                "refund_exceeds_paid",
                format!("at most {refundable} can still be refunded"),
            );
            e.extra = Some(crate::error::Extra::Refundable(refundable));
            Err(e)
        }
        CreateRefund::NoSuchOrder => Err(ApiError::not_found("order")),
    }
}

/// A refund.
#[utoipa::path(get, path = "/v1/refunds/{id}", operation_id = "get_refund", tag = "refunds", params(("id" = String, Path, description = "rfd_…")),
    responses((status = 200, description = "the refund", body = views::RefundView),
              (status = 404, description = "not_found", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn get(
    State(state): State<AppState>,
    Authed(app): Authed,
    Path(id): Path<String>,
) -> Result<Json<views::RefundView>, ApiError> {
    let id = RefundId::parse(&id).map_err(|_| ApiError::not_found("refund"))?;
    let r = state
        .store
        .refund(&app.id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("refund"))?;
    Ok(Json(views::refund(&r)))
}
