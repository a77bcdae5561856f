//! Work leases of the background workers, fenced by an owner token: the `Leases` part of the store, and its SQL, expanded for each backend by
//! `sql::impl_store!` (SQLite and PostgreSQL accept the same statements).

#[allow(unused_imports)]
use crate::*;
#[allow(unused_imports)]
use payonce_core::{AppId, AttemptId, ChannelName, OrderId, Timestamp};

#[async_trait::async_trait]
pub trait Leases: Send + Sync {
    /// Before re-asking the channel about an `unknown` attempt: pushes its next check past the
    /// call, and marks it touched, so no query reads "absent" while the re-ask is in flight.
    async fn defer_unknown(
        &self,
        attempt: &AttemptId,
        until: Timestamp,
        now: Timestamp,
    ) -> Result<()>;
    /// Claims attempts whose `next_query_at` is due (active ones, and closed ones still being
    /// watched), leasing them to `owner` for `lease_ms`.
    async fn claim_due_attempts(
        &self,
        now: Timestamp,
        lease_ms: i64,
        owner: &str,
        limit: i64,
    ) -> Result<Vec<Attempt>>;
    /// Sets the next check of a claimed attempt and releases it — only if `owner` still holds
    /// the lease (a worker that slept past its lease writes nothing).
    async fn finish_attempt_check(
        &self,
        id: &AttemptId,
        owner: &str,
        next_query_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<bool>;
    /// Claims open orders past their expiry.
    async fn claim_expired_orders(
        &self,
        now: Timestamp,
        lease_ms: i64,
        owner: &str,
        limit: i64,
    ) -> Result<Vec<Order>>;
    async fn release_order(&self, id: &OrderId, owner: &str) -> Result<()>;
    /// Claims refunds due for a channel call or query.
    async fn claim_due_refunds(
        &self,
        now: Timestamp,
        lease_ms: i64,
        owner: &str,
        limit: i64,
    ) -> Result<Vec<Refund>>;
    /// The apps with outbox events due and not leased, the longest-waiting first, at most
    /// `limit`. The dispatcher claims app by app from this list: claiming the oldest events
    /// across apps let one app's backlog to a dead receiver fill every claim.
    async fn apps_with_due_events(&self, now: Timestamp, limit: i64) -> Result<Vec<String>>;
    /// Claims up to `limit` due events of one app, oldest first, leasing them to `owner`.
    async fn claim_due_events(
        &self,
        app: &str,
        now: Timestamp,
        lease_ms: i64,
        owner: &str,
        limit: i64,
    ) -> Result<Vec<EventRow>>;
}

/// The SQL of `Leases` for one backend (see `sql::impl_store!` for the parameters).
macro_rules! leases_sql {
    ($Store:ty, $Db:ty, backend = $backend:expr, for_update = $for_update:literal, skip_locked = $skip_locked:literal, migrations = $migrations:expr) => {
        impl $Store {
            /// Leases up to `limit` due rows to `owner`: `sql` is an `UPDATE … SET lease_until = $1,
            /// lease_owner = $2 WHERE id IN (SELECT … due at $3 … LIMIT $4 [SKIP LOCKED]) RETURNING …`.
            async fn claim<T>(
                &self,
                sql: &'static str,
                now: payonce_core::Timestamp,
                lease_ms: i64,
                owner: &str,
                limit: i64,
                row: fn(&<$Db as sqlx::Database>::Row) -> $crate::Result<T>,
            ) -> $crate::Result<Vec<T>> {
                let mut tx = self.begin_write().await?;
                let rows = sqlx::query(sql).bind(now.0 + lease_ms).bind(owner).bind(now.0).bind(limit).fetch_all(&mut *tx).await?;
                tx.commit().await?;
                rows.iter().map(row).collect()
            }
        }

        #[async_trait::async_trait]
        impl $crate::Leases for $Store {
            async fn apps_with_due_events(&self, now: payonce_core::Timestamp, limit: i64) -> $crate::Result<Vec<String>> {
                use sqlx::Row;
                let rows = sqlx::query(
                    "SELECT app_id FROM events WHERE delivery_status = 'pending' AND next_attempt_at <= $1 \
                     AND (lease_until IS NULL OR lease_until < $1) GROUP BY app_id ORDER BY MIN(next_attempt_at) LIMIT $2",
                )
                .bind(now.0)
                .bind(limit)
                .fetch_all(&self.reader())
                .await?;
                rows.iter().map(|r| Ok(r.try_get("app_id")?)).collect()
            }

            async fn claim_due_events(&self, app: &str, now: payonce_core::Timestamp, lease_ms: i64, owner: &str, limit: i64) -> $crate::Result<Vec<$crate::EventRow>> {
                // As `claim`, for one app: instances claiming at once skip each other's rows
                // (SKIP LOCKED on PostgreSQL; SQLite has one writer).
                let sql = concat!(
                    "UPDATE events SET lease_until = $1, lease_owner = $2 WHERE id IN (SELECT id FROM events \
                     WHERE app_id = $5 AND delivery_status = 'pending' AND next_attempt_at <= $3 AND (lease_until IS NULL OR lease_until < $3) \
                     ORDER BY next_attempt_at LIMIT $4", $skip_locked, ") RETURNING ", $crate::sql::event_cols!()
                );
                let mut tx = self.begin_write().await?;
                let rows = sqlx::query(sql).bind(now.0 + lease_ms).bind(owner).bind(now.0).bind(limit).bind(app).fetch_all(&mut *tx).await?;
                tx.commit().await?;
                rows.iter().map($crate::rows::event_row).collect()
            }

            async fn defer_unknown(&self, id: &payonce_core::AttemptId, until: payonce_core::Timestamp, now: payonce_core::Timestamp) -> $crate::Result<()> {
                let mut tx = self.begin_write().await?;
                sqlx::query("UPDATE attempts SET next_query_at = $1, updated_at = $2 WHERE id = $3 AND status IN ('unknown', 'pending')")
                    .bind(until.0)
                    .bind(now.0)
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn claim_due_attempts(&self, now: payonce_core::Timestamp, lease_ms: i64, owner: &str, limit: i64) -> $crate::Result<Vec<$crate::Attempt>> {
                self.claim(concat!(
                    "UPDATE attempts SET lease_until = $1, lease_owner = $2 WHERE id IN (SELECT id FROM attempts \
                     WHERE next_query_at IS NOT NULL AND next_query_at <= $3 AND status NOT IN ('succeeded', 'failed') \
                     AND (lease_until IS NULL OR lease_until < $3) ORDER BY next_query_at LIMIT $4", $skip_locked, ") RETURNING ",
                    $crate::sql::attempt_cols!()
                ), now, lease_ms, owner, limit, $crate::rows::attempt_row).await
            }

            async fn finish_attempt_check(&self, id: &payonce_core::AttemptId, owner: &str, next: Option<payonce_core::Timestamp>, now: payonce_core::Timestamp) -> $crate::Result<bool> {
                let mut tx = self.begin_write().await?;
                let done = sqlx::query(
                    "UPDATE attempts SET next_query_at = CASE WHEN status IN ('succeeded', 'failed') THEN NULL ELSE $1 END, \
                     query_count = query_count + 1, lease_until = NULL, lease_owner = NULL, updated_at = $2 \
                     WHERE id = $3 AND lease_owner = $4",
                )
                .bind(next.map(|t| t.0))
                .bind(now.0)
                .bind(id.as_str())
                .bind(owner)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }

            async fn claim_expired_orders(&self, now: payonce_core::Timestamp, lease_ms: i64, owner: &str, limit: i64) -> $crate::Result<Vec<$crate::Order>> {
                self.claim(concat!(
                    "UPDATE orders SET lease_until = $1, lease_owner = $2 WHERE id IN (SELECT id FROM orders \
                     WHERE status IN ('unpaid', 'paying') AND expires_at <= $3 AND (lease_until IS NULL OR lease_until < $3) \
                     ORDER BY expires_at LIMIT $4", $skip_locked, ") RETURNING ", $crate::sql::order_cols!()
                ), now, lease_ms, owner, limit, $crate::rows::order_row).await
            }

            async fn release_order(&self, id: &payonce_core::OrderId, owner: &str) -> $crate::Result<()> {
                let mut tx = self.begin_write().await?;
                sqlx::query("UPDATE orders SET lease_until = NULL, lease_owner = NULL WHERE id = $1 AND lease_owner = $2")
                    .bind(id.as_str())
                    .bind(owner)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn claim_due_refunds(&self, now: payonce_core::Timestamp, lease_ms: i64, owner: &str, limit: i64) -> $crate::Result<Vec<$crate::Refund>> {
                self.claim(concat!(
                    "UPDATE refunds SET lease_until = $1, lease_owner = $2 WHERE id IN (SELECT id FROM refunds \
                     WHERE status IN ('pending', 'unknown') AND next_query_at IS NOT NULL AND next_query_at <= $3 \
                     AND (lease_until IS NULL OR lease_until < $3) ORDER BY next_query_at LIMIT $4", $skip_locked, ") RETURNING ",
                    $crate::sql::refund_cols!()
                ), now, lease_ms, owner, limit, $crate::rows::refund_row).await
            }
        }
    };
}

pub(crate) use leases_sql;
