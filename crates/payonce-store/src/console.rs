//! What the operator console reads and writes: the channel messages of the order timeline, the
//! audit log of operator actions, console sessions, abnormal-item resolution and search — the
//! `Console` trait of the store and its implementation for `SqlStore`.

use crate::db::{Tx, from_row, q, q_fmt};
use crate::sql::ORDER_COLS;
use crate::*;
use payonce_core::{ChannelName, OrderId, Timestamp};

/// One thing a channel told payonce (a notification, a query or close answer, a bill row) and
/// what payonce made of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelMessage {
    pub id: String,
    pub channel: String,
    /// out_trade_no (payments) or out_refund_no (refunds).
    pub reference: String,
    /// `notification`, `refund_notification`, `query`, `close_answer`, `statement`.
    pub source: String,
    /// What the channel said, in short (`paid 100 (4200…)`, `unpaid`, `closed`, …).
    pub observed: String,
    /// What payonce did with it (`order_paid`, `duplicate`, `replay`, `amount_mismatch`, …).
    pub verdict: String,
    /// The message as read; payer identifiers inside — masked on display, cleared after the
    /// retention (`None` then, and for sources that have no message of their own).
    pub content: Option<String>,
    pub received_at: i64,
    /// How many times this same answer came, and when it last did (`None`: once). Query and
    /// call answers repeat on a schedule; a repeat of the latest message about the same
    /// reference is counted here instead of written again.
    pub repeats: i64,
    pub last_at: Option<i64>,
}
from_row!(ChannelMessage {
    id,
    channel,
    reference,
    source,
    observed,
    verdict,
    content,
    received_at,
    repeats,
    last_at,
});

impl ChannelMessage {
    /// A message received once, now (`repeats` 1): the store counts a repeat of a query answer.
    pub fn new(
        channel: ChannelName,
        reference: &str,
        source: &str,
        observed: String,
        verdict: String,
        content: Option<String>,
        now: Timestamp,
    ) -> Self {
        ChannelMessage {
            id: payonce_core::EventId::new()
                .as_str()
                .replacen("evt_", "msg_", 1),
            channel: channel.as_str().to_owned(),
            reference: reference.to_owned(),
            source: source.to_owned(),
            observed,
            verdict,
            content,
            received_at: now.0,
            repeats: 1,
            last_at: None,
        }
    }

    /// Answers to payonce's own questions (queries, calls): these repeat, and are counted.
    pub fn is_answer(&self) -> bool {
        !self.source.ends_with("notification") && self.source != "statement"
    }
}

/// A channel's answer in a few words, for the timeline.
pub fn observed_summary(o: &Observed) -> String {
    match o {
        Observed::Paid {
            amount,
            channel_trade_no,
            paid_at,
        } => {
            format!(
                "paid {amount} at {} (trade no {})",
                paid_at.to_rfc3339(),
                channel_trade_no.as_deref().unwrap_or("-")
            )
        }
        Observed::Unpaid => "unpaid".into(),
        Observed::Closed => "closed".into(),
        Observed::Absent => "no such order".into(),
    }
}

/// The timeline message of a channel fact and its verdict (`apply_outcome` writes it in the
/// fact's own transaction). A bill row that changed nothing gets none: the reconciliation's
/// items are the bill's account.
pub(crate) fn outcome_message(
    outcome: &ChannelOutcome,
    verdict: String,
    changed: bool,
    now: Timestamp,
) -> Option<ChannelMessage> {
    let source = match &outcome.source {
        OutcomeSource::Notification { .. } => "notification",
        OutcomeSource::Query => "query",
        OutcomeSource::CloseAnswer => "close_answer",
        OutcomeSource::Statement { .. } if !changed => return None,
        OutcomeSource::Statement { .. } => "statement",
    };
    Some(ChannelMessage::new(
        outcome.channel,
        &outcome.out_trade_no,
        source,
        observed_summary(&outcome.observed),
        verdict,
        outcome.content.clone(),
        now,
    ))
}

/// The console's search: every order one of its numbers names, newest first (`$1` the number,
/// `$2` the limit). One index look-up per kind of number, joined by UNION: written as ORs,
/// PostgreSQL scanned the whole orders table (EXPLAIN: a seq scan filtered by hashed subplans,
/// even with `enable_seqscan` off); SQLite managed either way. Public so a test can ask the
/// planner (`tests/api/console.rs`).
pub fn find_orders_sql() -> String {
    format!(
        "SELECT {ORDER_COLS} FROM orders WHERE id IN (\
         SELECT id FROM orders WHERE id = $1 UNION SELECT id FROM orders WHERE merchant_order_no = $1 \
         UNION SELECT order_id FROM attempts WHERE id = $1 UNION SELECT order_id FROM attempts WHERE out_trade_no = $1 \
         UNION SELECT order_id FROM attempts WHERE channel_trade_no = $1 \
         UNION SELECT order_id FROM refunds WHERE id = $1 UNION SELECT order_id FROM refunds WHERE out_refund_no = $1) \
         ORDER BY created_at DESC, id DESC LIMIT $2"
    )
}

/// An operator action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: String,
    pub operator: String,
    /// `sign_in`, `retry_query`, `resolve`, `refund_duplicate`, `resend_event`, `rotate_webhook_secret`, …
    pub action: String,
    pub target: String,
    pub order_id: Option<String>,
    pub note: String,
    pub at: i64,
}
from_row!(AuditEntry {
    id,
    operator,
    action,
    target,
    order_id,
    note,
    at,
});

/// A console sign-in; looked up by the SHA-256 of the cookie's random id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    pub id_hash: String,
    pub operator: String,
    pub csrf_token: String,
    pub expires_at: i64,
    pub created_at: i64,
    /// A short hash of the admin token the session was opened with: a session of another token
    /// is no session.
    pub token_generation: String,
}
from_row!(ConsoleSession {
    id_hash,
    operator,
    csrf_token,
    expires_at,
    created_at,
    token_generation,
});

/// An abnormal item, open or resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbnormalItem {
    pub id: String,
    pub kind: String,
    pub reference: String,
    pub detail: String,
    pub created_at: i64,
    pub resolved_at: Option<i64>,
    pub resolved_by: Option<String>,
    pub resolution: Option<String>,
    /// The order it is about (set from id columns when the item is written).
    pub order_id: Option<String>,
}
from_row!(AbnormalItem {
    id,
    kind,
    reference,
    detail,
    created_at,
    resolved_at,
    resolved_by,
    resolution,
    order_id,
});

#[async_trait::async_trait]
pub trait Console: Send + Sync {
    /// Writes a message to the timeline; an answer to payonce's own question that repeats the
    /// latest message about the same reference (same source, answer and verdict, no content)
    /// is counted on that row instead.
    async fn record_channel_message(&self, m: &ChannelMessage) -> Result<()>;
    /// The messages about these references of one channel, oldest first.
    async fn channel_messages(
        &self,
        channel: ChannelName,
        references: &[String],
    ) -> Result<Vec<ChannelMessage>>;
    /// Clears the content of messages received before `before` (the rows and verdicts stay).
    async fn clear_message_contents(&self, before: Timestamp) -> Result<u64>;

    async fn insert_audit(&self, e: &AuditEntry) -> Result<()>;
    async fn audit_of_order(&self, order: &OrderId) -> Result<Vec<AuditEntry>>;
    async fn recent_audit(&self, limit: i64) -> Result<Vec<AuditEntry>>;

    async fn create_session(&self, s: &ConsoleSession) -> Result<()>;
    /// The session with this id hash, if it has not expired and belongs to this generation of
    /// the admin token.
    async fn session(
        &self,
        id_hash: &str,
        generation: &str,
        now: Timestamp,
    ) -> Result<Option<ConsoleSession>>;
    /// The live sessions of this token generation, newest first.
    async fn sessions(&self, generation: &str, now: Timestamp) -> Result<Vec<ConsoleSession>>;
    /// Ends every session opened with another admin token; how many ended.
    async fn end_sessions_of_other_tokens(&self, generation: &str) -> Result<u64>;
    async fn delete_session(&self, id_hash: &str) -> Result<()>;
    async fn purge_sessions(&self, now: Timestamp) -> Result<u64>;

    async fn abnormal_item(&self, id: &str) -> Result<Option<AbnormalItem>>;
    /// Open and resolved items about this order (by the order id written with each item).
    async fn abnormal_of_order(&self, order: &OrderId) -> Result<Vec<AbnormalItem>>;
    /// Marks an open item resolved; false when it was not open.
    async fn resolve_abnormal(
        &self,
        id: &str,
        by: &str,
        note: &str,
        now: Timestamp,
    ) -> Result<bool>;

    /// Orders matching `q` exactly as an order id, a merchant_order_no (any app), an attempt
    /// id, out_trade_no or channel trade number (any channel), a refund id or out_refund_no;
    /// newest first.
    async fn find_orders(&self, q: &str, limit: i64) -> Result<Vec<Order>>;
    async fn reconciliation_items_of_order(
        &self,
        order: &OrderId,
    ) -> Result<Vec<ReconciliationItem>>;
}

impl SqlStore {
    /// `record_channel_message` inside a transaction of the caller's (`apply_outcome`
    /// writes a fact's message with the fact).
    pub(crate) async fn tx_record_channel_message(tx: &mut Tx, m: &ChannelMessage) -> Result<()> {
        if m.is_answer() && m.content.is_none() {
            let latest: Option<(String, String, String, String, Option<String>)> = q(
                "SELECT id, source, observed, verdict, content FROM channel_messages WHERE channel = $1 AND reference = $2 \
                 ORDER BY received_at DESC, id DESC LIMIT 1",
            )
            .bind(&m.channel)
            .bind(&m.reference)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((id, source, observed, verdict, None)) = latest
                && (source.as_str(), observed.as_str(), verdict.as_str())
                    == (m.source.as_str(), m.observed.as_str(), m.verdict.as_str())
            {
                q("UPDATE channel_messages SET repeats = repeats + 1, last_at = $1 WHERE id = $2")
                    .bind(m.received_at)
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                return Ok(());
            }
        }
        q(
            "INSERT INTO channel_messages (id, channel, reference, source, observed, verdict, content, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&m.id)
        .bind(&m.channel)
        .bind(&m.reference)
        .bind(&m.source)
        .bind(&m.observed)
        .bind(&m.verdict)
        .bind(&m.content)
        .bind(m.received_at)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Console for SqlStore {
    async fn record_channel_message(&self, m: &ChannelMessage) -> Result<()> {
        let mut tx = self.begin_write().await?;
        Self::tx_record_channel_message(&mut tx, m).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn channel_messages(
        &self,
        channel: ChannelName,
        references: &[String],
    ) -> Result<Vec<ChannelMessage>> {
        if references.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT id, channel, reference, source, observed, verdict, content, received_at, repeats, last_at FROM channel_messages \
                     WHERE channel = $1 AND reference IN ({}) ORDER BY received_at, id",
            crate::sql::placeholders(2, references.len())
        );
        // Only numbered placeholders are formatted in; every value is bound.
        let mut query = q_fmt(sql).bind(channel.as_str());
        for r in references {
            query = query.bind(r);
        }
        Ok(query.fetch_all::<ChannelMessage>(&self.reader()).await?)
    }

    async fn clear_message_contents(&self, before: Timestamp) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let n = q("UPDATE channel_messages SET content = NULL WHERE content IS NOT NULL AND received_at < $1")
            .bind(before.0)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn insert_audit(&self, e: &AuditEntry) -> Result<()> {
        let mut tx = self.begin_write().await?;
        q("INSERT INTO audit_log (id, operator, action, target, order_id, note, at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&e.id)
            .bind(&e.operator)
            .bind(&e.action)
            .bind(&e.target)
            .bind(&e.order_id)
            .bind(&e.note)
            .bind(e.at)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn audit_of_order(&self, order: &OrderId) -> Result<Vec<AuditEntry>> {
        Ok(q(
            "SELECT id, operator, action, target, order_id, note, at FROM audit_log WHERE order_id = $1 ORDER BY at, id",
        )
        .bind(order.as_str())
        .fetch_all::<AuditEntry>(&self.reader())
        .await?)
    }

    async fn recent_audit(&self, limit: i64) -> Result<Vec<AuditEntry>> {
        Ok(q("SELECT id, operator, action, target, order_id, note, at FROM audit_log ORDER BY at DESC, id DESC LIMIT $1")
            .bind(limit)
            .fetch_all::<AuditEntry>(&self.reader())
            .await?)
    }

    async fn create_session(&self, s: &ConsoleSession) -> Result<()> {
        let mut tx = self.begin_write().await?;
        q("INSERT INTO console_sessions (id_hash, operator, csrf_token, expires_at, created_at, token_generation) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&s.id_hash)
            .bind(&s.operator)
            .bind(&s.csrf_token)
            .bind(s.expires_at)
            .bind(s.created_at)
            .bind(&s.token_generation)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn session(
        &self,
        id_hash: &str,
        generation: &str,
        now: Timestamp,
    ) -> Result<Option<ConsoleSession>> {
        Ok(q(
            "SELECT id_hash, operator, csrf_token, expires_at, created_at, token_generation FROM console_sessions \
             WHERE id_hash = $1 AND expires_at > $2 AND token_generation = $3",
        )
        .bind(id_hash)
        .bind(now.0)
        .bind(generation)
        .fetch_optional::<ConsoleSession>(&self.reader())
        .await?)
    }

    async fn sessions(&self, generation: &str, now: Timestamp) -> Result<Vec<ConsoleSession>> {
        Ok(q(
            "SELECT id_hash, operator, csrf_token, expires_at, created_at, token_generation FROM console_sessions \
             WHERE expires_at > $1 AND token_generation = $2 ORDER BY created_at DESC, id_hash",
        )
        .bind(now.0)
        .bind(generation)
        .fetch_all::<ConsoleSession>(&self.reader())
        .await?)
    }

    async fn end_sessions_of_other_tokens(&self, generation: &str) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let n = q("DELETE FROM console_sessions WHERE token_generation <> $1")
            .bind(generation)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn delete_session(&self, id_hash: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        q("DELETE FROM console_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn purge_sessions(&self, now: Timestamp) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let n = q("DELETE FROM console_sessions WHERE expires_at <= $1")
            .bind(now.0)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn abnormal_item(&self, id: &str) -> Result<Option<AbnormalItem>> {
        Ok(q(
            "SELECT id, kind, reference, detail, created_at, resolved_at, resolved_by, resolution, order_id FROM abnormal WHERE id = $1",
        )
        .bind(id)
        .fetch_optional::<AbnormalItem>(&self.reader())
        .await?)
    }

    async fn abnormal_of_order(&self, order: &OrderId) -> Result<Vec<AbnormalItem>> {
        Ok(q(
            "SELECT id, kind, reference, detail, created_at, resolved_at, resolved_by, resolution, order_id FROM abnormal WHERE order_id = $1 ORDER BY created_at, id",
        )
        .bind(order.as_str())
        .fetch_all::<AbnormalItem>(&self.reader())
        .await?)
    }

    async fn resolve_abnormal(
        &self,
        id: &str,
        by: &str,
        note: &str,
        now: Timestamp,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let n = q("UPDATE abnormal SET resolved_at = $1, resolved_by = $2, resolution = $3 WHERE id = $4 AND resolved_at IS NULL")
            .bind(now.0)
            .bind(by)
            .bind(note)
            .bind(id)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn find_orders(&self, q: &str, limit: i64) -> Result<Vec<Order>> {
        q_fmt(find_orders_sql())
            .bind(q)
            .bind(limit)
            .load_all::<Order>(&self.reader())
            .await
    }

    async fn reconciliation_items_of_order(
        &self,
        order: &OrderId,
    ) -> Result<Vec<ReconciliationItem>> {
        Ok(q(
            "SELECT id, reconciliation_id, class, reference, app_id, order_id, local_amount, channel_amount, detail, created_at \
             FROM reconciliation_items WHERE order_id = $1 ORDER BY created_at, id",
        )
        .bind(order.as_str())
        .fetch_all::<ReconciliationItem>(&self.reader())
        .await?)
    }
}
