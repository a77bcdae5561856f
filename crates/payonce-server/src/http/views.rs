//! The JSON shapes of API.md: what an order, an attempt and a prepay answer look like.

use crate::state::AppState;
use payonce_store::{Attempt, Order, Refund, StoreError};
use serde_json::{Value, json};

pub fn attempt(a: &Attempt) -> Value {
    json!({
        "id": a.id,
        "channel": a.channel.as_str(),
        "method": a.method.as_str(),
        "out_trade_no": a.out_trade_no,
        "status": a.status.as_str(),
        "amount": a.amount.minor,
        "currency": a.amount.currency.as_str(),
        "credential": a.credential.as_deref().and_then(|c| serde_json::from_str::<Value>(c).ok()),
        "credential_expires_at": a.credential_expires_at.map(|t| t.to_rfc3339()),
        "channel_trade_no": a.channel_trade_no,
        "duplicate": a.is_duplicate,
        "paid_at": a.paid_at.map(|t| t.to_rfc3339()),
        "created_at": a.created_at.to_rfc3339(),
        "updated_at": a.updated_at.to_rfc3339(),
    })
}

pub fn refund(r: &Refund) -> Value {
    json!({
        "id": r.id,
        "order_id": r.order_id,
        "merchant_refund_no": r.merchant_refund_no,
        "kind": r.kind.as_str(),
        "amount": r.amount.minor,
        "currency": r.amount.currency.as_str(),
        "reason": r.reason,
        "status": r.status.as_str(),
        "failure_reason": r.failure_reason,
        "channel": r.channel.as_str(),
        "out_refund_no": r.out_refund_no,
        "created_at": r.created_at.to_rfc3339(),
        "updated_at": r.updated_at.to_rfc3339(),
    })
}

/// An order as the API shows it, with its attempts and refunds read from the store.
pub async fn load_order(state: &AppState, o: &Order) -> Result<Value, StoreError> {
    let attempts = state.store.attempts_of(&o.id).await?;
    let refunds = state.store.refunds_of(&o.id).await?;
    Ok(order(o, &attempts, &refunds))
}

pub fn order(o: &Order, attempts: &[Attempt], refunds: &[Refund]) -> Value {
    json!({
        "id": o.id,
        "merchant_order_no": o.merchant_order_no,
        "amount": o.amount.minor,
        "currency": o.amount.currency.as_str(),
        "subject": o.subject,
        "status": o.status.as_str(),
        "notify_url": o.notify_url,
        "metadata": o.metadata.as_deref().and_then(|m| serde_json::from_str::<Value>(m).ok()),
        "refunded_amount": o.refunded_amount,
        "paid_at": o.paid_at.map(|t| t.to_rfc3339()),
        "expires_at": o.expires_at.to_rfc3339(),
        "version": o.version,
        "created_at": o.created_at.to_rfc3339(),
        "updated_at": o.updated_at.to_rfc3339(),
        "attempts": attempts.iter().map(attempt).collect::<Vec<_>>(),
        "refunds": refunds.iter().map(refund).collect::<Vec<_>>(),
    })
}
