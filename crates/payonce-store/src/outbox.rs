//! The outbox: events the business hears of, and their delivery attempts: the `Outbox` trait of
//! the store and its implementation for `SqlStore`.

use crate::db::{Tx, q, q_fmt};
use crate::sql::EVENT_COLS;
use crate::*;
use payonce_core::{OrderId, Timestamp};

#[async_trait::async_trait]
pub trait Outbox: Send + Sync {
    async fn events_of(&self, order: &OrderId) -> Result<Vec<EventRow>>;
    /// Records one delivery attempt and its outcome — only if `owner` still holds the lease.
    async fn record_delivery(
        &self,
        owner: &str,
        attempt: &DeliveryAttempt,
        outcome: &DeliveryOutcome,
    ) -> Result<bool>;
    /// Events, newest first, optionally only those in one delivery status.
    async fn list_events(
        &self,
        status: Option<DeliveryStatus>,
        limit: i64,
    ) -> Result<Vec<EventRow>>;
    async fn event(&self, id: &str) -> Result<Option<EventRow>>;
    async fn delivery_attempts(&self, event_id: &str) -> Result<Vec<DeliveryAttempt>>;
    /// Puts an event (or, with `None`, every failed one) back in the delivery queue; how many.
    async fn resend(&self, event_id: Option<&str>, now: Timestamp) -> Result<u64>;
    /// Remembers the W3C `traceparent` an order was created in: the events announcing it
    /// continue that trace. Kept once (the first creation wins).
    async fn save_trace_context(
        &self,
        order: &OrderId,
        traceparent: &str,
        now: Timestamp,
    ) -> Result<()>;
    async fn trace_context(&self, order: &str) -> Result<Option<String>>;
    async fn purge_trace_contexts(&self, before: Timestamp) -> Result<u64>;
}

impl SqlStore {
    pub(crate) async fn tx_insert_event(
        tx: &mut Tx,
        kind: &str,
        order: &Order,
        attempt: Option<&Attempt>,
        now: Timestamp,
    ) -> Result<()> {
        let id = payonce_core::EventId::new();
        let payload = crate::sql::event_payload(&id, kind, now, order, attempt);
        Self::tx_insert_event_payload(tx, &id, order, kind, payload, now).await
    }

    /// Writes an event about `order` whose body the caller made (under `id`).
    pub(crate) async fn tx_insert_event_payload(
        tx: &mut Tx,
        id: &payonce_core::EventId,
        order: &Order,
        kind: &str,
        payload: String,
        now: Timestamp,
    ) -> Result<()> {
        q(
            "INSERT INTO events (id, app_id, order_id, type, payload, created_at, next_attempt_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(id.as_str())
        .bind(order.app_id.as_str())
        .bind(order.id.as_str())
        .bind(kind)
        .bind(payload)
        .bind(now.0)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Outbox for SqlStore {
    async fn save_trace_context(
        &self,
        order: &OrderId,
        traceparent: &str,
        now: Timestamp,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        q("INSERT INTO trace_contexts (order_id, traceparent, created_at) VALUES ($1, $2, $3) ON CONFLICT (order_id) DO NOTHING")
            .bind(order.as_str())
            .bind(traceparent)
            .bind(now.0)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn trace_context(&self, order: &str) -> Result<Option<String>> {
        Ok(
            q("SELECT traceparent FROM trace_contexts WHERE order_id = $1")
                .bind(order)
                .scalar_optional::<String>(&self.reader())
                .await?,
        )
    }

    async fn purge_trace_contexts(&self, before: Timestamp) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let n = q("DELETE FROM trace_contexts WHERE created_at < $1")
            .bind(before.0)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn record_delivery(
        &self,
        owner: &str,
        a: &DeliveryAttempt,
        outcome: &DeliveryOutcome,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let (status, next, delivered) = match outcome {
            DeliveryOutcome::Delivered => (
                DeliveryStatus::Delivered.as_str(),
                None,
                Some(a.attempted_at.0),
            ),
            DeliveryOutcome::Retry { next_attempt_at } => (
                DeliveryStatus::Pending.as_str(),
                Some(next_attempt_at.0),
                None,
            ),
            DeliveryOutcome::Failed => (DeliveryStatus::Failed.as_str(), None, None),
            DeliveryOutcome::Skipped => (DeliveryStatus::Skipped.as_str(), None, None),
        };
        // Fenced by the lease: a dispatcher that slept past its lease records nothing.
        let done = q(
            "UPDATE events SET delivery_status = $1, next_attempt_at = $2, delivered_at = COALESCE($3, delivered_at), \
             delivery_count = delivery_count + 1, last_status = $4, last_error = $5, lease_until = NULL, lease_owner = NULL \
             WHERE id = $6 AND lease_owner = $7",
        )
        .bind(status)
        .bind(next)
        .bind(delivered)
        .bind(a.status_code.map(|c| c as i32))
        .bind(&a.error)
        .bind(&a.event_id)
        .bind(owner)
        .execute(&mut tx)
        .await?;
        if done != 1 {
            return Ok(false);
        }
        if !matches!(outcome, DeliveryOutcome::Skipped) {
            q("INSERT INTO delivery_attempts (id, event_id, destination, status_code, error, duration_ms, attempted_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                .bind(payonce_core::EventId::new().as_str().replacen("evt_", "dlv_", 1))
                .bind(&a.event_id)
                .bind(&a.destination)
                .bind(a.status_code.map(|c| c as i32))
                .bind(&a.error)
                .bind(a.duration_ms)
                .bind(a.attempted_at.0)
                .execute(&mut tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn list_events(
        &self,
        status: Option<DeliveryStatus>,
        limit: i64,
    ) -> Result<Vec<EventRow>> {
        match status {
            Some(s) => q_fmt(format!("SELECT {EVENT_COLS} FROM events WHERE delivery_status = $1 ORDER BY id DESC LIMIT $2"))
                .bind(s.as_str())
                .bind(limit)
                .load_all::<EventRow>(&self.reader())
                .await,
            None => q_fmt(format!("SELECT {EVENT_COLS} FROM events ORDER BY id DESC LIMIT $1"))
                .bind(limit)
                .load_all::<EventRow>(&self.reader())
                .await,
        }
    }

    async fn event(&self, id: &str) -> Result<Option<EventRow>> {
        q_fmt(format!("SELECT {EVENT_COLS} FROM events WHERE id = $1"))
            .bind(id)
            .load_optional::<EventRow>(&self.reader())
            .await
    }

    async fn delivery_attempts(&self, event_id: &str) -> Result<Vec<DeliveryAttempt>> {
        let rows = q("SELECT event_id, destination, status_code, error, duration_ms, attempted_at FROM delivery_attempts WHERE event_id = $1 ORDER BY attempted_at, id")
            .bind(event_id)
            .fetch_all::<(String, String, Option<i32>, Option<String>, i64, i64)>(&self.reader())
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(event_id, destination, status_code, error, duration_ms, attempted_at)| {
                    DeliveryAttempt {
                        event_id,
                        destination,
                        status_code: status_code.map(i64::from),
                        error,
                        duration_ms,
                        attempted_at: Timestamp(attempted_at),
                    }
                },
            )
            .collect())
    }

    async fn resend(&self, event_id: Option<&str>, now: Timestamp) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let done = match event_id {
            Some(id) => q("UPDATE events SET delivery_status = 'pending', next_attempt_at = $1, delivery_count = 0, lease_until = NULL, lease_owner = NULL WHERE id = $2 AND delivery_status <> 'pending'")
                .bind(now.0)
                .bind(id)
                .execute(&mut tx)
                .await?,
            None => q("UPDATE events SET delivery_status = 'pending', next_attempt_at = $1, delivery_count = 0, lease_until = NULL, lease_owner = NULL WHERE delivery_status = 'failed'")
                .bind(now.0)
                .execute(&mut tx)
                .await?,
        };
        tx.commit().await?;
        Ok(done)
    }

    async fn events_of(&self, order: &OrderId) -> Result<Vec<EventRow>> {
        q_fmt(format!(
            "SELECT {EVENT_COLS} FROM events WHERE order_id = $1 ORDER BY id"
        ))
        .bind(order.as_str())
        .load_all::<EventRow>(&self.reader())
        .await
    }
}
