//! The API's one error type: RFC 9457 problem+json with the stable codes of API.md. Internal
//! causes are logged here and never shown to the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// One field that failed validation.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// An error answer (RFC 9457 problem details). `code` is the stable part to branch on.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// `https://payonce.dev/problems/<code with dashes>`.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: &'static str,
    /// The HTTP status, repeated.
    pub status: u16,
    pub detail: String,
    /// API.md's stable error code, e.g. `validation_failed`, `order_already_paid`.
    pub code: &'static str,
    /// On `validation_failed`: every field that failed, by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// On `order_already_paid`, `order_closed`, `merchant_order_no_conflict`: the order as it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::views::OrderView>)]
    pub order: Option<serde_json::Value>,
    /// On `merchant_refund_no_conflict`: the existing refund.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::views::RefundView>)]
    pub refund: Option<serde_json::Value>,
    /// On `refund_exceeds_paid`: what can still be refunded, in minor units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refundable: Option<i64>,
    /// On `coupon_unavailable`: `unknown`, `expired`, `not_yet_valid`, `exhausted` or `payer_limit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// `urn:payonce:request:{id}`: this answer's request id (also in `X-Request-Id` and in every
    /// log line of the request).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// The member a problem may carry besides the standard ones.
#[derive(Debug)]
pub enum Extra {
    Order(serde_json::Value),
    Refund(serde_json::Value),
    Refundable(i64),
    Reason(&'static str),
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub errors: Vec<FieldError>,
    /// One more member that helps the client (e.g. the order on `order_already_paid`).
    pub extra: Option<Extra>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(
        status: StatusCode,
        code: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            code,
            title,
            detail: detail.into(),
            errors: Vec::new(),
            extra: None,
            retry_after: None,
        }
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "Validation failed",
            detail,
        );
        e.errors = errors;
        e
    }

    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            "missing or invalid bearer secret",
        )
    }

    pub fn unauthorized_because(detail: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            detail,
        )
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "Not found",
            format!("no such {what}"),
        )
    }

    pub fn order_already_paid(order: crate::views::OrderView) -> Self {
        let mut e = Self::new(
            StatusCode::CONFLICT,
            "order_already_paid",
            "Order already paid",
            "the order has been paid",
        );
        e.extra = Some(Extra::Order(crate::views::to_value(&order)));
        e
    }

    pub fn order_closed(order: crate::views::OrderView) -> Self {
        let mut e = Self::new(
            StatusCode::CONFLICT,
            "order_closed",
            "Order closed",
            "the order is closed or expired",
        );
        e.extra = Some(Extra::Order(crate::views::to_value(&order)));
        e
    }

    pub fn merchant_order_no_conflict(order: crate::views::OrderView) -> Self {
        let mut e = Self::new(
            StatusCode::CONFLICT,
            "merchant_order_no_conflict",
            "merchant_order_no already used",
            "an order with this merchant_order_no exists with different content",
        );
        e.extra = Some(Extra::Order(crate::views::to_value(&order)));
        e
    }

    pub fn conflict(code: &'static str, detail: &str) -> Self {
        Self::new(StatusCode::CONFLICT, code, "Conflict", detail)
    }

    /// A coupon that cannot be used now (409), with why.
    pub fn coupon_unavailable(reason: &'static str) -> Self {
        let mut e = Self::new(
            StatusCode::CONFLICT,
            "coupon_unavailable",
            "Coupon unavailable",
            format!("the coupon cannot be used: {reason}"),
        );
        e.extra = Some(Extra::Reason(reason));
        e
    }

    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
            "Unprocessable",
            detail,
        )
    }

    pub fn request_in_progress(detail: &str) -> Self {
        let mut e = Self::new(
            StatusCode::CONFLICT,
            "request_in_progress",
            "Request in progress",
            detail,
        );
        e.retry_after = Some(1);
        e
    }

    /// Too many wrong secrets from this address: refused, whatever it sends, until the wait.
    pub fn too_many_failures(wait: std::time::Duration) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "Rate limited",
            "too many failed attempts from this address; retry after the indicated time",
        );
        e.retry_after = Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).map(|s| s.max(1));
        e
    }

    pub fn rate_limited(wait: std::time::Duration) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "Rate limited",
            "over this app's request rate; retry after the indicated time",
        );
        e.retry_after = Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).map(|s| s.max(1));
        e
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Unsupported media type",
            "send the body as application/json",
        )
    }

    pub fn overloaded() -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "Overloaded",
            "this instance is shedding load; retry shortly",
        );
        e.retry_after = Some(1);
        e
    }

    /// The request did not arrive whole (headers and body) within the request timeout.
    pub fn request_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "Request timeout",
            "the request was not received whole in time; send it again",
        )
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "Payload too large",
            format!("the body exceeds {limit} bytes"),
        )
    }

    pub fn idempotency_key_reused() -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "Idempotency-Key reused",
            "this Idempotency-Key was used with a different request",
        )
    }

    pub fn channel_unavailable(status: StatusCode, detail: impl Into<String>) -> Self {
        let mut e = Self::new(status, "channel_unavailable", "Channel unavailable", detail);
        e.retry_after = Some(1);
        e
    }

    /// Logs the cause with its details; the client sees only that something failed inside.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Internal error",
            "an internal error occurred; retrying is safe",
        )
    }
}

impl From<payonce_store::StoreError> for ApiError {
    fn from(e: payonce_store::StoreError) -> Self {
        if e.is_unavailable() {
            // Logged with its cause; the client hears only that retrying later is safe.
            tracing::warn!(error = %e, "database unavailable");
            let mut a = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "Database unavailable",
                "the database cannot be reached right now; retrying is safe",
            );
            a.retry_after = Some(1);
            return a;
        }
        ApiError::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Problem {
            problem_type: format!(
                "https://payonce.dev/problems/{}",
                self.code.replace('_', "-")
            ),
            title: self.title,
            status: self.status.as_u16(),
            detail: self.detail,
            code: self.code,
            errors: self.errors,
            order: None,
            refund: None,
            refundable: None,
            reason: None,
            // Set on the way out by the request-id layer.
            instance: None,
        };
        match self.extra {
            Some(Extra::Order(o)) => body.order = Some(o),
            Some(Extra::Refund(r)) => body.refund = Some(r),
            Some(Extra::Refundable(n)) => body.refundable = Some(n),
            Some(Extra::Reason(r)) => body.reason = Some(r),
            None => {}
        }
        let body = serde_json::to_string(&body).expect("a problem serializes");
        let mut resp = (self.status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}
