//! An order's timeline: every fact about the order, its attempts, refunds, channel messages,
//! events and deliveries, reconciliation items, abnormal items and operator actions, in time order.

use super::*;

/// One line of an order's timeline.
pub(super) struct Entry {
    pub(super) at_ms: i64,
    pub(super) at: String,
    /// `order`, `attempt`, `channel`, `refund`, `event`, `delivery`, `reconciliation`, `abnormal`, `audit`.
    pub(super) kind: &'static str,
    pub(super) title: String,
    pub(super) detail: String,
    /// The channel's message, payer identifiers masked.
    pub(super) content: Option<String>,
}

pub(super) fn entry(at_ms: i64, kind: &'static str, title: String, detail: String) -> Entry {
    Entry {
        at_ms,
        at: when(at_ms),
        kind,
        title,
        detail,
        content: None,
    }
}

type Timeline = (Order, Vec<Entry>, Vec<AbnormalView>, Vec<EventView>);

/// Everything that happened to an order, in time order.
pub(super) async fn timeline(
    state: &AppState,
    id: &OrderId,
) -> Result<Option<Timeline>, payonce_store::StoreError> {
    let Some(order) = state.store.order_by_id(id).await? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    out.push(entry(
        order.created_at.0,
        "order",
        format!(
            "order created: {} for {}",
            yuan(order.amount.minor),
            order.merchant_order_no
        ),
        match &order.coupon {
            Some(c) => format!("coupon {}; expires {}", c.code, when(order.expires_at.0)),
            None => format!("expires {}", when(order.expires_at.0)),
        },
    ));
    if let Some(paid) = order.paid_at {
        out.push(entry(
            paid.0,
            "order",
            "order paid".into(),
            order
                .paid_attempt_id
                .as_ref()
                .map(|a| format!("by {a}"))
                .unwrap_or_default(),
        ));
    }
    if matches!(order.status, payonce_core::OrderStatus::Closed) {
        let by = order
            .closed_by
            .map(|b| format!("{b:?}").to_lowercase())
            .unwrap_or_default();
        out.push(entry(
            order.updated_at.0,
            "order",
            "order closed".into(),
            format!("by {by}"),
        ));
    }
    let attempts = state.store.attempts_of(id).await?;
    let refunds = state.store.refunds_of(id).await?;
    for a in &attempts {
        out.push(entry(
            a.created_at.0,
            "attempt",
            format!(
                "prepay via {} account {} ({})",
                a.channel.as_str(),
                a.account,
                a.method.as_str()
            ),
            format!(
                "{} · out_trade_no {} · now {} · channel asked {} times{}{}",
                a.id,
                a.out_trade_no,
                a.status.as_str(),
                a.query_count,
                if a.is_duplicate { " · DUPLICATE" } else { "" },
                a.channel_trade_no
                    .as_deref()
                    .map(|t| format!(" · trade no {t}"))
                    .unwrap_or_default()
            ),
        ));
        // The channel order's messages and its refunds' (they share the channel): one read.
        let about: Vec<String> = std::iter::once(a.out_trade_no.to_string())
            .chain(
                refunds
                    .iter()
                    .filter(|r| r.attempt_id == a.id)
                    .map(|r| r.out_refund_no.to_string()),
            )
            .collect();
        for m in state.store.channel_messages(a.channel, &about).await? {
            // The same answer again and again (a payer's page polling, the query schedule) is
            // one line with how often and until when.
            let repeated = match (m.repeats, m.last_at) {
                (n, Some(last)) if n > 1 => format!(" · {n} times, the last at {}", when(last)),
                _ => String::new(),
            };
            let mut e = entry(
                m.received_at,
                "channel",
                format!(
                    "{} from {}: {}",
                    m.source.replace('_', " "),
                    m.channel,
                    m.observed
                ),
                format!("→ {}{repeated}", m.verdict),
            );
            e.content = match m.content.as_deref() {
                Some(c) => Some(
                    crate::privacy::masked(c)
                        .unwrap_or_else(|| "(not shown: neither JSON nor a form)".into()),
                ),
                None if m.source.ends_with("notification") => {
                    Some("(content cleared after the retention)".into())
                }
                None => None,
            };
            out.push(e);
        }
    }
    for r in &refunds {
        out.push(entry(
            r.created_at.0,
            "refund",
            format!("{} refund of {}", r.kind.as_str(), yuan(r.amount.minor)),
            format!(
                "{} · out_refund_no {} · now {}{}",
                r.id,
                r.out_refund_no,
                r.status.as_str(),
                r.failure_reason
                    .as_deref()
                    .map(|f| format!(" ({f})"))
                    .unwrap_or_default()
            ),
        ));
    }
    let mut failed_events = Vec::new();
    for e in state.store.events_of(id).await? {
        out.push(entry(
            e.created_at.0,
            "event",
            format!("event {}", e.event_type),
            format!("{} · {}", e.id, e.delivery_status.as_str()),
        ));
        for d in state.store.delivery_attempts(&e.id).await? {
            let result = answer_of(d.status_code, d.error.as_deref()).unwrap_or_else(|| "?".into());
            out.push(entry(
                d.attempted_at.0,
                "delivery",
                format!("delivery of {} to {}", e.event_type, d.destination),
                format!("{result} in {} ms", d.duration_ms),
            ));
        }
        if e.delivery_status == payonce_store::DeliveryStatus::Failed {
            failed_events.push(EventView {
                id: e.id,
                kind: e.event_type,
                status: "failed".into(),
                tries: e.delivery_count,
                last: e.last_error.unwrap_or_default(),
                order_id: e.order_id,
            });
        }
    }
    for i in state.store.reconciliation_items_of_order(id).await? {
        out.push(entry(
            i.created_at,
            "reconciliation",
            format!("reconciliation: {}", i.class),
            format!("{} · {} ({})", i.reference, i.detail, i.reconciliation_id),
        ));
    }
    let mut open_items = Vec::new();
    for a in state.store.abnormal_of_order(id).await? {
        out.push(entry(
            a.created_at,
            "abnormal",
            format!("needs a person: {}", a.kind),
            format!("{} · {}", a.reference, a.detail),
        ));
        if let Some(at) = a.resolved_at {
            let by = a.resolved_by.clone().unwrap_or_default();
            out.push(entry(
                at,
                "abnormal",
                format!("resolved by {by}: {}", a.kind),
                a.resolution.clone().unwrap_or_default(),
            ));
        } else {
            open_items.push(AbnormalView {
                since: when(a.created_at),
                id: a.id,
                kind: a.kind,
                reference: a.reference,
                detail: a.detail,
                order_id: Some(id.to_string()),
            });
        }
    }
    for e in state.store.audit_of_order(id).await? {
        out.push(entry(
            e.at,
            "audit",
            format!("{} by {}", e.action.replace('_', " "), e.operator),
            if e.note.is_empty() {
                e.target
            } else {
                format!("{} · “{}”", e.target, e.note)
            },
        ));
    }
    // Same instant: the order of kinds above (an order before its attempt, a fact before its event).
    out.sort_by_key(|e| e.at_ms);
    Ok(Some((order, out, open_items, failed_events)))
}
