//! Refunds: reservation against what was paid, channel results, refund notifications: the
//! `Refunds` trait of the store and its implementation for `SqlStore`.

use crate::db::{Tx, q, q_fmt};
use crate::sql::REFUND_COLS;
use crate::*;
use payonce_core::{AppId, ChannelName, OrderId, Timestamp};

#[async_trait::async_trait]
pub trait Refunds: Send + Sync {
    /// Stores the data a refund's calls must carry (UnionPay txnTime) before the first call,
    /// unless some is stored already; returns the refund as stored.
    async fn prepare_refund_call(
        &self,
        refund: &payonce_core::RefundId,
        channel_data: &str,
        now: Timestamp,
    ) -> Result<Option<Refund>>;
    /// Reserves a business refund: the order must be paid, and the amounts of pending, unknown
    /// and succeeded refunds plus this one may not exceed what was paid (checked under the
    /// order's lock).
    async fn create_refund(&self, refund: &Refund, now: Timestamp) -> Result<CreateRefund>;
    async fn refund(&self, app: &AppId, id: &payonce_core::RefundId) -> Result<Option<Refund>>;
    async fn refunds_of(&self, order: &OrderId) -> Result<Vec<Refund>>;
    /// Records a refund call's or query's result; a success updates the order's refunded amount
    /// and status and writes `refund.succeeded`, a failure writes `refund.failed`.
    async fn record_refund(
        &self,
        id: &payonce_core::RefundId,
        result: &RefundResult,
        channel_data: Option<&str>,
        now: Timestamp,
    ) -> Result<Option<Refund>>;
    /// A refund notification, applied once by its channel event id.
    /// `account`: the channel account whose keys vouched for the notice; a refund of a payment
    /// made through another account is left untouched (`AccountMismatch`).
    #[allow(clippy::too_many_arguments)]
    async fn apply_refund_notice(
        &self,
        channel: ChannelName,
        account: Option<&str>,
        event_id: &str,
        out_refund_no: &str,
        result: &RefundResult,
        now: Timestamp,
    ) -> Result<RefundNoticeApplied>;
}

impl SqlStore {
    pub(crate) async fn tx_insert_refund(tx: &mut Tx, r: &Refund) -> Result<bool, sqlx::Error> {
        let done = q(
            "INSERT INTO refunds (id, order_id, app_id, attempt_id, channel, out_trade_no, merchant_refund_no, out_refund_no, \
             amount, currency, reason, kind, status, content_hash, next_query_at, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 1, $16, $16) \
             ON CONFLICT (channel, out_refund_no) DO NOTHING",
        )
        .bind(r.id.as_str())
        .bind(r.order_id.as_str())
        .bind(r.app_id.as_str())
        .bind(r.attempt_id.as_str())
        .bind(r.channel.as_str())
        .bind(r.out_trade_no.as_str())
        .bind(&r.merchant_refund_no)
        .bind(r.out_refund_no.as_str())
        .bind(r.amount.minor)
        .bind(r.amount.currency.as_str())
        .bind(&r.reason)
        .bind(r.kind.as_str())
        .bind(r.status.as_str())
        .bind(&r.content_hash)
        .bind(r.next_query_at.map(|t| t.0))
        .bind(r.created_at.0)
        .execute(&mut *tx)
        .await?;
        Ok(done == 1)
    }

    /// The body of `record_refund`, inside the caller's transaction: loads and locks the order
    /// and the refund, asks `payonce_core::refund::decide`, and writes its plan.
    pub(crate) async fn tx_record_refund(
        tx: &mut Tx,
        id: &payonce_core::RefundId,
        result: &RefundResult,
        channel_data: Option<&str>,
        now: Timestamp,
    ) -> Result<Option<Refund>> {
        use payonce_core::refund::RefundPlan;
        let order_id = q("SELECT order_id FROM refunds WHERE id = $1")
            .bind(id.as_str())
            .scalar_optional::<String>(&mut *tx)
            .await?;
        let Some(order_id) = order_id else {
            return Ok(None);
        };
        let mut order = Self::lock_order(tx, &order_id)
            .await?
            .ok_or(StoreError::Contended("order vanished"))?;
        let r = q_fmt(format!("SELECT {REFUND_COLS} FROM refunds WHERE id = $1"))
            .bind(id.as_str())
            .load::<Refund>(&mut *tx)
            .await?;
        let plan = payonce_core::refund::decide((&order).into(), &r, result)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // From here on the store only writes what was decided.
        let RefundPlan::Apply {
            status,
            failure_reason,
            next_query_at,
            requested,
            order: order_change,
            event,
            abnormal,
        } = plan
        else {
            return Ok(Some(r));
        };
        let done = q(
            "UPDATE refunds SET status = $1, failure_reason = $2, next_query_at = $3, requested = $4, \
             channel_data = COALESCE($5, channel_data), query_count = query_count + 1, lease_until = NULL, lease_owner = NULL, \
             version = version + 1, updated_at = $6 WHERE id = $7 AND version = $8",
        )
        .bind(status.as_str())
        .bind(&failure_reason)
        .bind(next_query_at.map(|t| t.0))
        .bind(i32::from(requested))
        .bind(channel_data)
        .bind(now.0)
        .bind(id.as_str())
        .bind(r.version)
        .execute(&mut *tx)
        .await?;
        if done != 1 {
            return Err(StoreError::Contended("refund"));
        }
        let mut updated = r.clone();
        updated.status = status;
        updated.failure_reason = failure_reason;
        if let Some(a) = abnormal {
            Self::tx_insert_abnormal(tx, a.kind, r.id.as_str(), &a.detail, now).await?;
        }
        if let Some(o) = order_change {
            order = Self::tx_update_order(tx, &order, o.status, o.refunded_amount, now).await?;
        }
        if let Some(event) = event {
            let kind = event.as_str();
            let eid = payonce_core::EventId::new();
            q("INSERT INTO events (id, app_id, order_id, type, payload, created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $6)")
                .bind(eid.as_str())
                .bind(order.app_id.as_str())
                .bind(order.id.as_str())
                .bind(kind)
                .bind(crate::sql::refund_event_payload(&eid, kind, now, &updated, order.version))
                .bind(now.0)
                .execute(&mut *tx)
                .await?;
        }
        Ok(Some(updated))
    }
}

#[async_trait::async_trait]
impl Refunds for SqlStore {
    async fn prepare_refund_call(
        &self,
        id: &payonce_core::RefundId,
        channel_data: &str,
        now: Timestamp,
    ) -> Result<Option<Refund>> {
        let mut tx = self.begin_write().await?;
        q("UPDATE refunds SET channel_data = $1, updated_at = $2 WHERE id = $3 AND channel_data IS NULL")
            .bind(channel_data)
            .bind(now.0)
            .bind(id.as_str())
            .execute(&mut tx)
            .await?;
        let r = q_fmt(format!("SELECT {REFUND_COLS} FROM refunds WHERE id = $1"))
            .bind(id.as_str())
            .load_optional::<Refund>(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(r)
    }

    async fn create_refund(&self, r: &Refund, now: Timestamp) -> Result<CreateRefund> {
        let mut tx = self.begin_write().await?;
        let Some(order) = Self::lock_order(&mut tx, r.order_id.as_str()).await? else {
            return Ok(CreateRefund::NoSuchOrder);
        };
        if let Some(no) = &r.merchant_refund_no {
            let existing = q_fmt(format!(
                "SELECT {REFUND_COLS} FROM refunds WHERE order_id = $1 AND merchant_refund_no = $2"
            ))
            .bind(order.id.as_str())
            .bind(no)
            .load_optional::<Refund>(&mut tx)
            .await?;
            if let Some(existing) = existing {
                return Ok(if existing.content_hash == r.content_hash {
                    CreateRefund::Existing(existing)
                } else {
                    CreateRefund::Conflict(existing)
                });
            }
        }
        if !order.status.has_been_paid() {
            return Ok(CreateRefund::NotPaid(order));
        }
        // Pending, unknown and succeeded refunds all hold their amount: concurrent refunds
        // can never together exceed what was paid.
        let reserved: i64 = q("SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM refunds WHERE order_id = $1 AND kind = 'order' AND status <> 'failed'")
            .bind(order.id.as_str())
            .scalar(&mut tx)
            .await?;
        if reserved + r.amount.minor > order.amount.minor {
            return Ok(CreateRefund::Exceeds {
                refundable: order.amount.minor - reserved,
            });
        }
        let mut row = r.clone();
        row.attempt_id = order.paid_attempt_id.clone().ok_or(StoreError::Corrupt(
            "paid order without paying attempt".into(),
        ))?;
        let paying = Self::tx_attempt(&mut tx, row.attempt_id.as_str())
            .await?
            .ok_or(StoreError::Corrupt("paying attempt missing".into()))?;
        row.channel = paying.channel;
        row.out_trade_no = paying.out_trade_no.clone();
        row.created_at = now;
        row.updated_at = now;
        Self::tx_insert_refund(&mut tx, &row).await?;
        tx.commit().await?;
        Ok(CreateRefund::Created(row))
    }

    async fn refund(&self, app: &AppId, id: &payonce_core::RefundId) -> Result<Option<Refund>> {
        q_fmt(format!(
            "SELECT {REFUND_COLS} FROM refunds WHERE id = $1 AND app_id = $2"
        ))
        .bind(id.as_str())
        .bind(app.as_str())
        .load_optional::<Refund>(&self.reader())
        .await
    }

    async fn refunds_of(&self, order: &OrderId) -> Result<Vec<Refund>> {
        q_fmt(format!(
            "SELECT {REFUND_COLS} FROM refunds WHERE order_id = $1 ORDER BY id"
        ))
        .bind(order.as_str())
        .load_all::<Refund>(&self.reader())
        .await
    }

    async fn record_refund(
        &self,
        id: &payonce_core::RefundId,
        result: &RefundResult,
        channel_data: Option<&str>,
        now: Timestamp,
    ) -> Result<Option<Refund>> {
        let mut tx = self.begin_write().await?;
        let r = Self::tx_record_refund(&mut tx, id, result, channel_data, now).await?;
        tx.commit().await?;
        Ok(r)
    }

    /// `account`: the channel account whose keys vouched for the notice; a refund of a payment
    /// made through another account is left untouched (`AccountMismatch`).
    #[allow(clippy::too_many_arguments)]
    async fn apply_refund_notice(
        &self,
        channel: ChannelName,
        account: Option<&str>,
        event_id: &str,
        out_refund_no: &str,
        result: &RefundResult,
        now: Timestamp,
    ) -> Result<RefundNoticeApplied> {
        let mut tx = self.begin_write().await?;
        let row = q(
            "SELECT r.id, r.out_trade_no, a.account FROM refunds r JOIN attempts a ON a.id = r.attempt_id \
             WHERE r.channel = $1 AND r.out_refund_no = $2",
        )
        .bind(channel.as_str())
        .bind(out_refund_no)
        .fetch_optional::<(String, String, String)>(&mut tx)
        .await?;
        let Some((id, out_trade_no, refund_account)) = row else {
            return Ok(RefundNoticeApplied::UnknownRefund);
        };
        if account.is_some_and(|a| a != refund_account) {
            return Ok(RefundNoticeApplied::AccountMismatch {
                refund_id: id,
                account: refund_account,
            });
        }
        let id = payonce_core::RefundId::from_trusted(id);
        let done = q(
            "INSERT INTO channel_events (channel, event_id, out_trade_no, received_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (channel, event_id) DO NOTHING",
        )
        .bind(channel.as_str())
        .bind(event_id)
        .bind(&out_trade_no)
        .bind(now.0)
        .execute(&mut tx)
        .await?;
        if done == 0 {
            return Ok(RefundNoticeApplied::Replay);
        }
        let r = Self::tx_record_refund(&mut tx, &id, result, None, now).await?;
        tx.commit().await?;
        Ok(match r {
            Some(r) => RefundNoticeApplied::Applied(r),
            None => RefundNoticeApplied::UnknownRefund,
        })
    }
}
