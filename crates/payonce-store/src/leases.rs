//! Work leases of the background workers, fenced by an owner token: the `Leases` trait of the
//! store and its implementation for `SqlStore`.

use crate::db::{Model, q, q_fmt};
use crate::sql::{ATTEMPT_COLS, EVENT_COLS, ORDER_COLS, REFUND_COLS};
use crate::*;
use payonce_core::{AttemptId, OrderId, Timestamp};

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

impl SqlStore {
    /// Leases up to `limit` due rows to `owner`: `sql` is an `UPDATE … SET lease_until = $1,
    /// lease_owner = $2 WHERE id IN (SELECT … due at $3 … LIMIT $4 [SKIP LOCKED]) RETURNING …`.
    async fn claim<M: Model>(
        &self,
        sql: String,
        now: Timestamp,
        lease_ms: i64,
        owner: &str,
        limit: i64,
    ) -> Result<Vec<M>> {
        let mut tx = self.begin_write().await?;
        let claimed = q_fmt(sql)
            .bind(now.0 + lease_ms)
            .bind(owner)
            .bind(now.0)
            .bind(limit)
            .load_all::<M>(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(claimed)
    }
}

#[async_trait::async_trait]
impl Leases for SqlStore {
    async fn apps_with_due_events(&self, now: Timestamp, limit: i64) -> Result<Vec<String>> {
        let rows = q(
            "SELECT app_id FROM events WHERE delivery_status = 'pending' AND next_attempt_at <= $1 \
             AND (lease_until IS NULL OR lease_until < $1) GROUP BY app_id ORDER BY MIN(next_attempt_at) LIMIT $2",
        )
        .bind(now.0)
        .bind(limit)
        .fetch_all::<(String,)>(&self.reader())
        .await?;
        Ok(rows.into_iter().map(|(app_id,)| app_id).collect())
    }

    async fn claim_due_events(
        &self,
        app: &str,
        now: Timestamp,
        lease_ms: i64,
        owner: &str,
        limit: i64,
    ) -> Result<Vec<EventRow>> {
        // As `claim`, for one app: instances claiming at once skip each other's rows
        // (SKIP LOCKED on PostgreSQL; SQLite has one writer).
        let sql = format!(
            "UPDATE events SET lease_until = $1, lease_owner = $2 WHERE id IN (SELECT id FROM events \
                     WHERE app_id = $5 AND delivery_status = 'pending' AND next_attempt_at <= $3 AND (lease_until IS NULL OR lease_until < $3) \
                     ORDER BY next_attempt_at LIMIT $4{}) RETURNING {EVENT_COLS}",
            self.dialect().skip_locked()
        );
        let mut tx = self.begin_write().await?;
        let claimed = q_fmt(sql)
            .bind(now.0 + lease_ms)
            .bind(owner)
            .bind(now.0)
            .bind(limit)
            .bind(app)
            .load_all::<EventRow>(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(claimed)
    }

    async fn defer_unknown(&self, id: &AttemptId, until: Timestamp, now: Timestamp) -> Result<()> {
        let mut tx = self.begin_write().await?;
        q("UPDATE attempts SET next_query_at = $1, updated_at = $2 WHERE id = $3 AND status IN ('unknown', 'pending')")
            .bind(until.0)
            .bind(now.0)
            .bind(id.as_str())
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn claim_due_attempts(
        &self,
        now: Timestamp,
        lease_ms: i64,
        owner: &str,
        limit: i64,
    ) -> Result<Vec<Attempt>> {
        self.claim(format!(
            "UPDATE attempts SET lease_until = $1, lease_owner = $2 WHERE id IN (SELECT id FROM attempts \
             WHERE next_query_at IS NOT NULL AND next_query_at <= $3 AND status NOT IN ('succeeded', 'failed') \
             AND (lease_until IS NULL OR lease_until < $3) ORDER BY next_query_at LIMIT $4{}) RETURNING {ATTEMPT_COLS}",
            self.dialect().skip_locked()
        ), now, lease_ms, owner, limit).await
    }

    async fn finish_attempt_check(
        &self,
        id: &AttemptId,
        owner: &str,
        next: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let done = q(
            "UPDATE attempts SET next_query_at = CASE WHEN status IN ('succeeded', 'failed') THEN NULL ELSE $1 END, \
             query_count = query_count + 1, lease_until = NULL, lease_owner = NULL, updated_at = $2 \
             WHERE id = $3 AND lease_owner = $4",
        )
        .bind(next.map(|t| t.0))
        .bind(now.0)
        .bind(id.as_str())
        .bind(owner)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(done == 1)
    }

    async fn claim_expired_orders(
        &self,
        now: Timestamp,
        lease_ms: i64,
        owner: &str,
        limit: i64,
    ) -> Result<Vec<Order>> {
        self.claim(format!(
            "UPDATE orders SET lease_until = $1, lease_owner = $2 WHERE id IN (SELECT id FROM orders \
             WHERE status IN ('unpaid', 'paying') AND expires_at <= $3 AND (lease_until IS NULL OR lease_until < $3) \
             ORDER BY expires_at LIMIT $4{}) RETURNING {ORDER_COLS}",
            self.dialect().skip_locked()
        ), now, lease_ms, owner, limit).await
    }

    async fn release_order(&self, id: &OrderId, owner: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        q("UPDATE orders SET lease_until = NULL, lease_owner = NULL WHERE id = $1 AND lease_owner = $2")
            .bind(id.as_str())
            .bind(owner)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn claim_due_refunds(
        &self,
        now: Timestamp,
        lease_ms: i64,
        owner: &str,
        limit: i64,
    ) -> Result<Vec<Refund>> {
        self.claim(format!(
            "UPDATE refunds SET lease_until = $1, lease_owner = $2 WHERE id IN (SELECT id FROM refunds \
             WHERE status IN ('pending', 'unknown') AND next_query_at IS NOT NULL AND next_query_at <= $3 \
             AND (lease_until IS NULL OR lease_until < $3) ORDER BY next_query_at LIMIT $4{}) RETURNING {REFUND_COLS}",
            self.dialect().skip_locked()
        ), now, lease_ms, owner, limit).await
    }
}
