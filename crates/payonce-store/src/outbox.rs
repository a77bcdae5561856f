//! The outbox: events the business hears of, and their delivery attempts: the `Outbox` part of the store, and its SQL, expanded for each backend by
//! `sql::impl_store!` (SQLite and PostgreSQL accept the same statements).

#[allow(unused_imports)]
use crate::*;
#[allow(unused_imports)]
use payonce_core::{AppId, AttemptId, ChannelName, OrderId, Timestamp};

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

/// The SQL of `Outbox` for one backend (see `sql::impl_store!` for the parameters).
macro_rules! outbox_sql {
    ($Store:ty, $Db:ty, backend = $backend:expr, for_update = $for_update:literal, skip_locked = $skip_locked:literal, migrations = $migrations:expr) => {
        impl $Store {
            async fn tx_insert_event(
                tx: &mut sqlx::Transaction<'static, $Db>,
                kind: &str,
                order: &$crate::Order,
                attempt: Option<&$crate::Attempt>,
                now: payonce_core::Timestamp,
            ) -> $crate::Result<()> {
                let id = payonce_core::EventId::new();
                let payload = $crate::sql::event_payload(&id, kind, now, order, attempt);
                Self::tx_insert_event_payload(tx, &id, order, kind, payload, now).await
            }

            /// Writes an event about `order` whose body the caller made (under `id`).
            async fn tx_insert_event_payload(
                tx: &mut sqlx::Transaction<'static, $Db>,
                id: &payonce_core::EventId,
                order: &$crate::Order,
                kind: &str,
                payload: String,
                now: payonce_core::Timestamp,
            ) -> $crate::Result<()> {
                sqlx::query(
                    "INSERT INTO events (id, app_id, order_id, type, payload, created_at, next_attempt_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $6)",
                )
                .bind(id.as_str())
                .bind(order.app_id.as_str())
                .bind(order.id.as_str())
                .bind(kind)
                .bind(payload)
                .bind(now.0)
                .execute(&mut **tx)
                .await?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::Outbox for $Store {
            async fn save_trace_context(&self, order: &payonce_core::OrderId, traceparent: &str, now: payonce_core::Timestamp) -> $crate::Result<()> {
                let mut tx = self.begin_write().await?;
                sqlx::query("INSERT INTO trace_contexts (order_id, traceparent, created_at) VALUES ($1, $2, $3) ON CONFLICT (order_id) DO NOTHING")
                    .bind(order.as_str())
                    .bind(traceparent)
                    .bind(now.0)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn trace_context(&self, order: &str) -> $crate::Result<Option<String>> {
                Ok(sqlx::query_scalar::<_, String>("SELECT traceparent FROM trace_contexts WHERE order_id = $1").bind(order).fetch_optional(&self.reader()).await?)
            }

            async fn purge_trace_contexts(&self, before: payonce_core::Timestamp) -> $crate::Result<u64> {
                let mut tx = self.begin_write().await?;
                let n = sqlx::query("DELETE FROM trace_contexts WHERE created_at < $1").bind(before.0).execute(&mut *tx).await?.rows_affected();
                tx.commit().await?;
                Ok(n)
            }

            async fn record_delivery(&self, owner: &str, a: &$crate::DeliveryAttempt, outcome: &$crate::DeliveryOutcome) -> $crate::Result<bool> {
                use $crate::DeliveryOutcome;
                let mut tx = self.begin_write().await?;
                let (status, next, delivered) = match outcome {
                    DeliveryOutcome::Delivered => ($crate::DeliveryStatus::Delivered.as_str(), None, Some(a.attempted_at.0)),
                    DeliveryOutcome::Retry { next_attempt_at } => ($crate::DeliveryStatus::Pending.as_str(), Some(next_attempt_at.0), None),
                    DeliveryOutcome::Failed => ($crate::DeliveryStatus::Failed.as_str(), None, None),
                    DeliveryOutcome::Skipped => ($crate::DeliveryStatus::Skipped.as_str(), None, None),
                };
                // Fenced by the lease: a dispatcher that slept past its lease records nothing.
                let done = sqlx::query(
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
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Ok(false);
                }
                if !matches!(outcome, DeliveryOutcome::Skipped) {
                    sqlx::query("INSERT INTO delivery_attempts (id, event_id, destination, status_code, error, duration_ms, attempted_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                        .bind(payonce_core::EventId::new().as_str().replacen("evt_", "dlv_", 1))
                        .bind(&a.event_id)
                        .bind(&a.destination)
                        .bind(a.status_code.map(|c| c as i32))
                        .bind(&a.error)
                        .bind(a.duration_ms)
                        .bind(a.attempted_at.0)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn list_events(&self, status: Option<$crate::DeliveryStatus>, limit: i64) -> $crate::Result<Vec<$crate::EventRow>> {
                let rows = match status {
                    Some(s) => sqlx::query(concat!("SELECT ", $crate::sql::event_cols!(), " FROM events WHERE delivery_status = $1 ORDER BY id DESC LIMIT $2"))
                        .bind(s.as_str())
                        .bind(limit)
                        .fetch_all(&self.reader())
                        .await?,
                    None => sqlx::query(concat!("SELECT ", $crate::sql::event_cols!(), " FROM events ORDER BY id DESC LIMIT $1"))
                        .bind(limit)
                        .fetch_all(&self.reader())
                        .await?,
                };
                rows.iter().map($crate::rows::event_row).collect()
            }

            async fn event(&self, id: &str) -> $crate::Result<Option<$crate::EventRow>> {
                let row = sqlx::query(concat!("SELECT ", $crate::sql::event_cols!(), " FROM events WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.reader())
                    .await?;
                row.as_ref().map($crate::rows::event_row).transpose()
            }

            async fn delivery_attempts(&self, event_id: &str) -> $crate::Result<Vec<$crate::DeliveryAttempt>> {
                use sqlx::Row;
                let rows = sqlx::query("SELECT event_id, destination, status_code, error, duration_ms, attempted_at FROM delivery_attempts WHERE event_id = $1 ORDER BY attempted_at, id")
                    .bind(event_id)
                    .fetch_all(&self.reader())
                    .await?;
                rows.iter()
                    .map(|r| {
                        Ok($crate::DeliveryAttempt {
                            event_id: r.try_get("event_id")?,
                            destination: r.try_get("destination")?,
                            status_code: r.try_get::<Option<i32>, _>("status_code")?.map(i64::from),
                            error: r.try_get("error")?,
                            duration_ms: r.try_get("duration_ms")?,
                            attempted_at: payonce_core::Timestamp(r.try_get("attempted_at")?),
                        })
                    })
                    .collect()
            }

            async fn resend(&self, event_id: Option<&str>, now: payonce_core::Timestamp) -> $crate::Result<u64> {
                let mut tx = self.begin_write().await?;
                let done = match event_id {
                    Some(id) => sqlx::query("UPDATE events SET delivery_status = 'pending', next_attempt_at = $1, delivery_count = 0, lease_until = NULL, lease_owner = NULL WHERE id = $2 AND delivery_status <> 'pending'")
                        .bind(now.0)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?,
                    None => sqlx::query("UPDATE events SET delivery_status = 'pending', next_attempt_at = $1, delivery_count = 0, lease_until = NULL, lease_owner = NULL WHERE delivery_status = 'failed'")
                        .bind(now.0)
                        .execute(&mut *tx)
                        .await?,
                };
                tx.commit().await?;
                Ok(done.rows_affected())
            }

            async fn events_of(&self, order: &payonce_core::OrderId) -> $crate::Result<Vec<$crate::EventRow>> {
                let rows = sqlx::query(concat!("SELECT ", $crate::sql::event_cols!(), " FROM events WHERE order_id = $1 ORDER BY id"))
                    .bind(order.as_str())
                    .fetch_all(&self.reader())
                    .await?;
                rows.iter().map($crate::rows::event_row).collect()
            }
        }
    };
}

pub(crate) use outbox_sql;
