//! Payment orders: creation (idempotent by merchant number), reads, closing: the `Orders` trait
//! of the store and its implementation for `SqlStore`, and the order transitions the other
//! aggregates' transactions share (`lock_order`, `tx_update_order`, …).

use crate::db::{Tx, q, q_fmt};
use crate::sql::ORDER_COLS;
use crate::{CloseOrder, CreateOrder, Order, Result, SqlStore, StoreError};
use payonce_core::{AppId, OrderId, Timestamp};

#[async_trait::async_trait]
pub trait Orders: Send + Sync {
    /// Inserts the order unless `(app, merchant_order_no)` exists; then compares content.
    async fn create_order(&self, order: &Order) -> Result<CreateOrder>;
    /// Creates an order recognised by its content (`content_hash`) rather than a merchant number:
    /// if a live guard of the same app and content exists (written by an earlier submission
    /// less than its window ago), that order is answered (`Existing`) and nothing is written;
    /// otherwise the order and a guard until `guard_until` are written in one transaction. Of
    /// many identical submissions at once, exactly one creates.
    async fn create_guarded_order(
        &self,
        order: &Order,
        guard_until: Timestamp,
    ) -> Result<CreateOrder>;
    /// Deletes submission guards whose window ended before `now` (they decide nothing any more).
    async fn purge_submission_guards(&self, now: Timestamp) -> Result<u64>;
    async fn order(&self, app: &AppId, id: &OrderId) -> Result<Option<Order>>;
    async fn order_by_merchant_no(
        &self,
        app: &AppId,
        merchant_order_no: &str,
    ) -> Result<Option<Order>>;
    /// Closes the order if it is still open and has no active attempt (every channel order
    /// already confirmed closed). Writes `payment.closed` in the same transaction.
    async fn close_order(
        &self,
        order: &OrderId,
        by: payonce_core::order::ClosedBy,
        now: Timestamp,
    ) -> Result<CloseOrder>;
}

impl SqlStore {
    /// Reads an order inside a write transaction, locking it where the backend can.
    pub(crate) async fn lock_order(tx: &mut Tx, id: &str) -> Result<Option<Order>> {
        q_fmt(format!(
            "SELECT {ORDER_COLS} FROM orders WHERE id = $1{}",
            tx.for_update()
        ))
        .bind(id)
        .load_optional::<Order>(&mut *tx)
        .await
    }

    /// `lock_order` of the order an attempt belongs to, in one statement.
    pub(crate) async fn lock_order_of_attempt(tx: &mut Tx, attempt: &str) -> Result<Option<Order>> {
        q_fmt(format!(
            "SELECT {ORDER_COLS} FROM orders WHERE id = (SELECT order_id FROM attempts WHERE id = $1){}",
            tx.for_update()
        ))
        .bind(attempt)
        .load_optional::<Order>(&mut *tx)
        .await
    }

    /// Inserts an order unless its `(app, merchant_order_no)` exists: `false` then.
    pub(crate) async fn tx_insert_order(tx: &mut Tx, o: &Order) -> Result<bool> {
        let done = q(
            "INSERT INTO orders (id, app_id, merchant_order_no, amount, currency, subject, notify_url, metadata, \
             content_hash, status, expires_at, version, created_at, updated_at, original_amount, discount, coupon_code, coupon_id, payer_ref) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $14, $15, $16, $17, $18) \
             ON CONFLICT (app_id, merchant_order_no) DO NOTHING",
        )
        .bind(o.id.as_str())
        .bind(o.app_id.as_str())
        .bind(&o.merchant_order_no)
        .bind(o.amount.minor)
        .bind(o.amount.currency.as_str())
        .bind(&o.subject)
        .bind(&o.notify_url)
        .bind(&o.metadata)
        .bind(&o.content_hash)
        .bind(o.status.as_str())
        .bind(o.expires_at.0)
        .bind(o.version)
        .bind(o.created_at.0)
        .bind(o.coupon.as_ref().map(|c| c.original_amount))
        .bind(o.coupon.as_ref().map_or(0, |c| c.discount))
        .bind(o.coupon.as_ref().map(|c| c.code.clone()))
        .bind(o.coupon.as_ref().map(|c| c.coupon_id.clone()))
        .bind(&o.payer_ref)
        .execute(&mut *tx)
        .await?;
        Ok(done == 1)
    }

    /// Conditional update of an order: succeeds only if nobody moved it since we read
    /// `version`. Returns the order as now stored.
    pub(crate) async fn tx_set_order_status(
        tx: &mut Tx,
        order: &Order,
        status: payonce_core::OrderStatus,
        now: Timestamp,
    ) -> Result<Order> {
        Self::tx_update_order(tx, order, status, order.refunded_amount, now).await
    }

    /// `tx_set_order_status` that also records the total refunded.
    pub(crate) async fn tx_update_order(
        tx: &mut Tx,
        order: &Order,
        status: payonce_core::OrderStatus,
        refunded_amount: i64,
        now: Timestamp,
    ) -> Result<Order> {
        let done = q(
            "UPDATE orders SET status = $1, refunded_amount = $2, version = version + 1, updated_at = $3 WHERE id = $4 AND version = $5",
        )
        .bind(status.as_str())
        .bind(refunded_amount)
        .bind(now.0)
        .bind(order.id.as_str())
        .bind(order.version)
        .execute(&mut *tx)
        .await?;
        if done != 1 {
            return Err(StoreError::Contended("order"));
        }
        let mut o = order.clone();
        o.status = status;
        o.refunded_amount = refunded_amount;
        o.version += 1;
        o.updated_at = now;
        if status == payonce_core::OrderStatus::Refunded
            && order.status != payonce_core::OrderStatus::Refunded
        {
            // Refunded in full: the coupon's redemption is given back.
            Self::tx_restore_coupon(tx, &o, now).await?;
        }
        Ok(o)
    }

    /// When the last active attempt of a paying order ends, the order is unpaid again.
    pub(crate) async fn tx_settle_order_after_attempt_end(
        tx: &mut Tx,
        order: Order,
        now: Timestamp,
    ) -> Result<Order> {
        if order.status != payonce_core::OrderStatus::Paying {
            return Ok(order);
        }
        if Self::tx_active_attempt(tx, order.id.as_str())
            .await?
            .is_some()
        {
            return Ok(order);
        }
        let next = order
            .status
            .next(payonce_core::OrderEvent::AttemptsEnded)
            .expect("paying → unpaid");
        Self::tx_set_order_status(tx, &order, next, now).await
    }
}

#[async_trait::async_trait]
impl Orders for SqlStore {
    async fn create_order(&self, o: &Order) -> Result<CreateOrder> {
        let mut tx = self.begin_write().await?;
        let inserted = Self::tx_insert_order(&mut tx, o).await?;
        if inserted && let Some(reason) = Self::tx_reserve_coupon(&mut tx, o).await? {
            // Dropped, the transaction rolls the order back: nothing was written.
            return Ok(CreateOrder::CouponUnavailable(reason));
        }
        let existing = if inserted {
            None
        } else {
            let row = q_fmt(format!(
                "SELECT {ORDER_COLS} FROM orders WHERE app_id = $1 AND merchant_order_no = $2"
            ))
            .bind(o.app_id.as_str())
            .bind(&o.merchant_order_no)
            .load::<Order>(&mut tx)
            .await?;
            Some(row)
        };
        tx.commit().await?;
        Ok(match existing {
            None => CreateOrder::Created(o.clone()),
            Some(e) if e.content_hash == o.content_hash => CreateOrder::Existing(e),
            Some(e) => CreateOrder::Conflict(e),
        })
    }

    async fn create_guarded_order(&self, o: &Order, guard_until: Timestamp) -> Result<CreateOrder> {
        let mut tx = self.begin_write().await?;
        // Take the guard: a new row, or one whose window has passed. A live guard of
        // another submission blocks here until that one commits, then is not taken.
        let taken = q(
            "INSERT INTO submission_guards (app_id, content_hash, order_id, expires_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (app_id, content_hash) DO UPDATE SET order_id = excluded.order_id, expires_at = excluded.expires_at \
             WHERE submission_guards.expires_at <= $5",
        )
        .bind(o.app_id.as_str())
        .bind(&o.content_hash)
        .bind(o.id.as_str())
        .bind(guard_until.0)
        .bind(o.created_at.0)
        .execute(&mut tx)
        .await?
            == 1;
        if !taken {
            let existing = q_fmt(format!("SELECT {ORDER_COLS} FROM orders WHERE id = (SELECT order_id FROM submission_guards WHERE app_id = $1 AND content_hash = $2)"))
            .bind(o.app_id.as_str())
            .bind(&o.content_hash)
            .load::<Order>(&mut tx)
            .await?;
            tx.commit().await?;
            return Ok(CreateOrder::Existing(existing));
        }
        Self::tx_insert_order(&mut tx, o).await?;
        if let Some(reason) = Self::tx_reserve_coupon(&mut tx, o).await? {
            return Ok(CreateOrder::CouponUnavailable(reason));
        }
        tx.commit().await?;
        Ok(CreateOrder::Created(o.clone()))
    }

    async fn purge_submission_guards(&self, now: Timestamp) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let n = q("DELETE FROM submission_guards WHERE expires_at <= $1")
            .bind(now.0)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn order(&self, app: &AppId, id: &OrderId) -> Result<Option<Order>> {
        q_fmt(format!(
            "SELECT {ORDER_COLS} FROM orders WHERE id = $1 AND app_id = $2"
        ))
        .bind(id.as_str())
        .bind(app.as_str())
        .load_optional::<Order>(&self.reader())
        .await
    }

    async fn order_by_merchant_no(&self, app: &AppId, no: &str) -> Result<Option<Order>> {
        q_fmt(format!(
            "SELECT {ORDER_COLS} FROM orders WHERE app_id = $1 AND merchant_order_no = $2"
        ))
        .bind(app.as_str())
        .bind(no)
        .load_optional::<Order>(&self.reader())
        .await
    }

    async fn close_order(
        &self,
        id: &OrderId,
        by: payonce_core::order::ClosedBy,
        now: Timestamp,
    ) -> Result<CloseOrder> {
        let mut tx = self.begin_write().await?;
        let Some(order) = Self::lock_order(&mut tx, id.as_str()).await? else {
            return Ok(CloseOrder::NoSuchOrder);
        };
        if order.status.has_been_paid() {
            return Ok(CloseOrder::Paid(order));
        }
        if order.status == payonce_core::OrderStatus::Closed {
            return Ok(CloseOrder::AlreadyClosed(order));
        }
        if let Some(active) = Self::tx_active_attempt(&mut tx, id.as_str()).await? {
            return Ok(CloseOrder::ActiveAttempt(active));
        }
        let next = order
            .status
            .next(payonce_core::OrderEvent::Closed)
            .expect("open order can close");
        let done = q(
            "UPDATE orders SET status = $1, closed_by = $2, version = version + 1, updated_at = $3 \
                     WHERE id = $4 AND version = $5",
        )
        .bind(next.as_str())
        .bind(crate::sql::closed_by_str(by))
        .bind(now.0)
        .bind(id.as_str())
        .bind(order.version)
        .execute(&mut tx)
        .await?;
        if done != 1 {
            return Err(StoreError::Contended("order"));
        }
        let mut closed = order;
        closed.status = next;
        closed.closed_by = Some(by);
        closed.version += 1;
        closed.updated_at = now;
        Self::tx_insert_event(&mut tx, "payment.closed", &closed, None, now).await?;
        Self::tx_release_coupon(&mut tx, &closed, now).await?;
        tx.commit().await?;
        Ok(CloseOrder::Closed(closed))
    }
}
