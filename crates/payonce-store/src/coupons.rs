//! Coupons: the `Coupons` part of the store, and the transitions of a coupon's use that ride in
//! the order's own transactions (`tx_reserve_coupon` … on `SqlStore`, called by orders and attempts):
//!
//! | order | coupon use | coupon counters |
//! |---|---|---|
//! | created with the coupon | `reserved` | `reserved + 1`, only while `reserved + redeemed < max_redemptions` |
//! | paid | `redeemed` (once, whatever the number of charges) | `reserved - 1`, `redeemed + 1` |
//! | paid after it was released (a late payment accepted) | `redeemed`, `over_limit` when past the limit | `redeemed + 1` |
//! | closed or expired | `released` | `reserved - 1` |
//! | fully refunded | `restored` | `redeemed - 1` |
//!
//! The conditional update of the coupon row is the arbiter: of 100 concurrent orders for a
//! coupon with one redemption left, one reserves it.

use crate::db::{Tx, from_row, q, q_fmt};
use crate::*;
use payonce_core::{AppId, Timestamp};

/// One order's use of a coupon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CouponUse {
    pub coupon_id: String,
    pub order_id: String,
    pub payer_ref: Option<String>,
    /// `reserved`, `redeemed`, `released` or `restored`.
    pub status: String,
    pub over_limit: i32,
}
from_row!(CouponUse {
    coupon_id,
    order_id,
    payer_ref,
    status,
    over_limit,
});

#[async_trait::async_trait]
pub trait Coupons: Send + Sync {
    /// `false` if the app already has a coupon with this code.
    async fn create_coupon(&self, coupon: &Coupon) -> Result<bool>;
    async fn coupon(&self, app: &AppId, code: &str) -> Result<Option<Coupon>>;
}

/// The columns of a `Coupon`.
pub(crate) const COUPON_COLS: &str = "id, app_id, code, kind, value, min_amount, max_redemptions, per_payer_limit, valid_from, valid_until, reserved, redeemed, created_at";

impl SqlStore {
    /// Reserves the order's coupon in the order's transaction: `Some(reason)`
    /// (`exhausted`, `payer_limit`) when it cannot be, and then the caller rolls back.
    pub(crate) async fn tx_reserve_coupon(tx: &mut Tx, o: &Order) -> Result<Option<&'static str>> {
        let Some(c) = &o.coupon else { return Ok(None) };
        // The arbiter: the coupon row's own counters, changed only while there is room;
        // its per-payer limit is read from the row as it is held.
        let held: Option<(Option<i64>,)> =
            q("UPDATE coupons SET reserved = reserved + 1 WHERE id = $1 AND reserved + redeemed < max_redemptions RETURNING per_payer_limit")
                .bind(&c.coupon_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((per_payer_limit,)) = held else {
            return Ok(Some("exhausted"));
        };
        // Counted after the coupon row is held: every other order of this coupon has
        // committed or waits.
        if let (Some(limit), Some(payer)) = (per_payer_limit, &o.payer_ref) {
            let (used,): (i64,) = q("SELECT COUNT(*) FROM coupon_uses WHERE coupon_id = $1 AND payer_ref = $2 AND status IN ('reserved', 'redeemed')")
                .bind(&c.coupon_id)
                .bind(payer)
                .fetch_one(&mut *tx)
                .await?;
            if used >= limit {
                return Ok(Some("payer_limit"));
            }
        }
        q("INSERT INTO coupon_uses (coupon_id, order_id, payer_ref, status, created_at, updated_at) VALUES ($1, $2, $3, 'reserved', $4, $4)")
            .bind(&c.coupon_id)
            .bind(o.id.as_str())
            .bind(&o.payer_ref)
            .bind(o.created_at.0)
            .execute(&mut *tx)
            .await?;
        Ok(None)
    }

    /// The order became paid: its coupon is redeemed, once. A use released by the
    /// order's expiry (a late payment accepted) is redeemed too — the payer paid the price
    /// offered — and, past the coupon's limit, marked for the merchant.
    pub(crate) async fn tx_redeem_coupon(tx: &mut Tx, order: &Order, now: Timestamp) -> Result<()> {
        // A use exists only for an order created with a coupon (`tx_reserve_coupon`).
        if order.coupon.is_none() {
            return Ok(());
        }
        let Some(u) = q(
            "SELECT coupon_id, order_id, payer_ref, status, over_limit FROM coupon_uses WHERE order_id = $1 AND status IN ('reserved', 'released')",
        )
        .bind(order.id.as_str())
        .fetch_optional::<CouponUse>(&mut *tx)
        .await?
        else {
            return Ok(());
        };
        if u.status == "reserved" {
            q("UPDATE coupons SET reserved = reserved - 1, redeemed = redeemed + 1 WHERE id = $1")
                .bind(&u.coupon_id)
                .execute(&mut *tx)
                .await?;
            q("UPDATE coupon_uses SET status = 'redeemed', updated_at = $1 WHERE coupon_id = $2 AND order_id = $3")
                .bind(now.0)
                .bind(&u.coupon_id)
                .bind(&u.order_id)
                .execute(&mut *tx)
                .await?;
        } else {
            let (full,): (bool,) =
                q("SELECT reserved + redeemed >= max_redemptions FROM coupons WHERE id = $1")
                    .bind(&u.coupon_id)
                    .fetch_one(&mut *tx)
                    .await?;
            q("UPDATE coupons SET redeemed = redeemed + 1 WHERE id = $1")
                .bind(&u.coupon_id)
                .execute(&mut *tx)
                .await?;
            q("UPDATE coupon_uses SET status = 'redeemed', over_limit = $1, updated_at = $2 WHERE coupon_id = $3 AND order_id = $4")
                .bind(i32::from(full))
                .bind(now.0)
                .bind(&u.coupon_id)
                .bind(&u.order_id)
                .execute(&mut *tx)
                .await?;
            if full {
                Self::tx_insert_abnormal(&mut *tx, "coupon_over_redeemed", order.id.as_str(), "a late payment was accepted for an expired order: its coupon was redeemed past its limit", now).await?;
            }
        }
        Self::tx_coupon_event(tx, "coupon.redeemed", order, &u.coupon_id, now).await
    }

    /// The order closed or expired: its reservation is released.
    pub(crate) async fn tx_release_coupon(
        tx: &mut Tx,
        order: &Order,
        now: Timestamp,
    ) -> Result<()> {
        let Some((coupon_id,)) =
            q("SELECT coupon_id FROM coupon_uses WHERE order_id = $1 AND status = 'reserved'")
                .bind(order.id.as_str())
                .fetch_optional::<(String,)>(&mut *tx)
                .await?
        else {
            return Ok(());
        };
        q("UPDATE coupons SET reserved = reserved - 1 WHERE id = $1")
            .bind(&coupon_id)
            .execute(&mut *tx)
            .await?;
        q("UPDATE coupon_uses SET status = 'released', updated_at = $1 WHERE coupon_id = $2 AND order_id = $3")
            .bind(now.0)
            .bind(&coupon_id)
            .bind(order.id.as_str())
            .execute(&mut *tx)
            .await?;
        Self::tx_coupon_event(tx, "coupon.released", order, &coupon_id, now).await
    }

    /// The order was refunded in full: the redemption is given back.
    pub(crate) async fn tx_restore_coupon(
        tx: &mut Tx,
        order: &Order,
        now: Timestamp,
    ) -> Result<()> {
        let Some((coupon_id,)) =
            q("SELECT coupon_id FROM coupon_uses WHERE order_id = $1 AND status = 'redeemed'")
                .bind(order.id.as_str())
                .fetch_optional::<(String,)>(&mut *tx)
                .await?
        else {
            return Ok(());
        };
        q("UPDATE coupons SET redeemed = redeemed - 1 WHERE id = $1")
            .bind(&coupon_id)
            .execute(&mut *tx)
            .await?;
        q("UPDATE coupon_uses SET status = 'restored', updated_at = $1 WHERE coupon_id = $2 AND order_id = $3")
            .bind(now.0)
            .bind(&coupon_id)
            .bind(order.id.as_str())
            .execute(&mut *tx)
            .await?;
        Self::tx_coupon_event(tx, "coupon.restored", order, &coupon_id, now).await
    }

    pub(crate) async fn tx_coupon_event(
        tx: &mut Tx,
        kind: &str,
        order: &Order,
        coupon_id: &str,
        now: Timestamp,
    ) -> Result<()> {
        let id = payonce_core::EventId::new();
        let code = order.coupon.as_ref().map(|c| c.code.clone());
        let payload = serde_json::json!({"id": id, "type": kind, "created_at": now.to_rfc3339(), "data": {
            "order_id": order.id, "merchant_order_no": order.merchant_order_no, "coupon_code": code, "coupon_id": coupon_id,
        }})
        .to_string();
        Self::tx_insert_event_payload(tx, &id, order, kind, payload, now).await
    }
}

#[async_trait::async_trait]
impl Coupons for SqlStore {
    async fn create_coupon(&self, c: &Coupon) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let added = q(
            "INSERT INTO coupons (id, app_id, code, kind, value, min_amount, max_redemptions, per_payer_limit, valid_from, valid_until, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (app_id, code) DO NOTHING",
        )
        .bind(&c.id)
        .bind(c.app_id.as_str())
        .bind(&c.code)
        .bind(&c.kind)
        .bind(c.value)
        .bind(c.min_amount)
        .bind(c.max_redemptions)
        .bind(c.per_payer_limit)
        .bind(c.valid_from.map(|t| t.0))
        .bind(c.valid_until.map(|t| t.0))
        .bind(c.created_at.0)
        .execute(&mut tx)
        .await?
            == 1;
        tx.commit().await?;
        Ok(added)
    }

    async fn coupon(&self, app: &AppId, code: &str) -> Result<Option<Coupon>> {
        q_fmt(format!(
            "SELECT {COUPON_COLS} FROM coupons WHERE app_id = $1 AND code = $2"
        ))
        .bind(app.as_str())
        .bind(code)
        .load_optional::<Coupon>(&self.reader())
        .await
    }
}
