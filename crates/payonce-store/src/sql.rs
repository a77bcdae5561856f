//! Pieces of SQL and of the rows' meaning that several aggregates share: the column lists the
//! row types read, numbered placeholders, event bodies, and small conversions.

/// Columns of `orders`, in the order `OrderRow` reads them.
pub(crate) const ORDER_COLS: &str = "id, app_id, merchant_order_no, amount, currency, subject, notify_url, metadata, content_hash, \
     status, closed_by, paid_attempt_id, paid_at, refunded_amount, expires_at, version, created_at, updated_at, \
     original_amount, discount, coupon_code, coupon_id, payer_ref";

/// Columns of `attempts`, in the order `AttemptRow` reads them.
pub(crate) const ATTEMPT_COLS: &str = "id, order_id, channel, method, out_trade_no, amount, currency, status, is_duplicate, credential, \
     credential_expires_at, payable_until, prepay_request, channel_trade_no, channel_data, paid_at, next_query_at, query_count, \
     version, created_at, updated_at, account";

/// Columns of `refunds`, in the order `RefundRow` reads them.
pub(crate) const REFUND_COLS: &str = "id, order_id, app_id, attempt_id, channel, out_trade_no, merchant_refund_no, out_refund_no, amount, currency, reason, \
     kind, status, failure_reason, content_hash, requested, channel_data, next_query_at, query_count, version, created_at, updated_at";

/// Columns of `events`, in the order `EventDbRow` reads them.
pub(crate) const EVENT_COLS: &str = "id, app_id, order_id, type, payload, created_at, delivery_status, delivery_count, next_attempt_at, last_status, last_error, delivered_at";

/// Columns of `apps`, in the order `AppRow` reads them.
pub(crate) const APP_COLS: &str = "id, name, secret_hash, webhook_url, webhook_secret_enc, webhook_secret_prev_enc, webhook_disabled, allowed_hosts, sink, submission_window_secs, created_at, channel_accounts";

/// `$first, $first+1, …` — `n` numbered parameters for an `IN (…)` list.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The body of a refund event.
pub(crate) fn refund_event_payload(
    id: &EventId,
    kind: &str,
    now: Timestamp,
    r: &crate::Refund,
    order_version: i64,
) -> String {
    serde_json::json!({"id": id, "type": kind, "created_at": now.to_rfc3339(), "data": {
        "refund_id": r.id, "order_id": r.order_id, "merchant_refund_no": r.merchant_refund_no, "amount": r.amount.minor,
        "currency": r.amount.currency.as_str(), "kind": r.kind.as_str(), "status": r.status.as_str(),
        "failure_reason": r.failure_reason, "version": order_version,
    }})
    .to_string()
}

use crate::{Attempt, Order, Result, StoreError};
use payonce_core::order::ClosedBy;
use payonce_core::{Timestamp, *};

pub(crate) fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what}: {value:?}"))
}

pub(crate) fn closed_by_str(c: ClosedBy) -> &'static str {
    match c {
        ClosedBy::Business => "business",
        ClosedBy::Expiry => "expiry",
    }
}

pub(crate) fn parse_closed_by(s: Option<String>) -> Result<Option<ClosedBy>> {
    match s.as_deref() {
        None => Ok(None),
        Some("business") => Ok(Some(ClosedBy::Business)),
        Some("expiry") => Ok(Some(ClosedBy::Expiry)),
        Some(other) => Err(corrupt("closed_by", other)),
    }
}

/// The body of an outbox event, exactly what the business system will receive.
pub(crate) fn event_payload(
    id: &EventId,
    kind: &str,
    now: Timestamp,
    order: &Order,
    attempt: Option<&Attempt>,
) -> String {
    let mut data = serde_json::json!({
        "order_id": order.id,
        "merchant_order_no": order.merchant_order_no,
        "status": order.status.as_str(),
        "amount": order.amount.minor,
        "currency": order.amount.currency.as_str(),
        // Receivers discard anything older than what they have seen for this order.
        "version": order.version,
    });
    if let Some(a) = attempt {
        data["attempt_id"] = serde_json::json!(a.id);
        data["channel"] = serde_json::json!(a.channel.as_str());
        data["out_trade_no"] = serde_json::json!(a.out_trade_no);
        data["paid_amount"] = serde_json::json!(a.amount.minor);
    }
    serde_json::json!({"id": id, "type": kind, "created_at": now.to_rfc3339(), "data": data})
        .to_string()
}

/// One static query per table (sqlx takes only static SQL without an explicit assertion).
pub(crate) const COUNT_QUERIES: &[(&str, &str)] = &[
    ("apps", "SELECT COUNT(*) FROM apps"),
    ("orders", "SELECT COUNT(*) FROM orders"),
    ("attempts", "SELECT COUNT(*) FROM attempts"),
    ("channel_events", "SELECT COUNT(*) FROM channel_events"),
    ("events", "SELECT COUNT(*) FROM events"),
    ("idempotency_keys", "SELECT COUNT(*) FROM idempotency_keys"),
    ("abnormal", "SELECT COUNT(*) FROM abnormal"),
    ("refunds", "SELECT COUNT(*) FROM refunds"),
    (
        "delivery_attempts",
        "SELECT COUNT(*) FROM delivery_attempts",
    ),
    ("reconciliations", "SELECT COUNT(*) FROM reconciliations"),
    (
        "reconciliation_items",
        "SELECT COUNT(*) FROM reconciliation_items",
    ),
    ("bills", "SELECT COUNT(*) FROM bills"),
    (
        "submission_guards",
        "SELECT COUNT(*) FROM submission_guards",
    ),
    ("coupons", "SELECT COUNT(*) FROM coupons"),
    ("coupon_uses", "SELECT COUNT(*) FROM coupon_uses"),
    ("bill_parts", "SELECT COUNT(*) FROM bill_parts"),
    // Answers to payonce's own queries and calls come on the workers' schedule, beside whatever
    // else happens; what a request or a notification wrote is counted.
    (
        "channel_messages (notifications, bill rows)",
        "SELECT COUNT(*) FROM channel_messages WHERE source IN ('notification', 'refund_notification', 'statement')",
    ),
    ("audit_log", "SELECT COUNT(*) FROM audit_log"),
    ("console_sessions", "SELECT COUNT(*) FROM console_sessions"),
    ("trace_contexts", "SELECT COUNT(*) FROM trace_contexts"),
];

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}
