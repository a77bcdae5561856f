//! `Inspect`: reads of whole tables, for what looks at the store from outside — the invariant
//! checker (tests, chaos), the bench's progress and the tests' own polling. No request or
//! worker needs them, so they stay off the production traits: a handler holding a `dyn Store`
//! cannot call them by mistake.

use crate::coupons::COUPON_COLS;
use crate::db::{q, q_fmt};
use crate::sql::{ATTEMPT_COLS, ORDER_COLS, REFUND_COLS};
use crate::{Attempt, Coupon, CouponUse, Order, Refund, Result, SqlStore, Store};

/// A store that can also be read whole. `open_inspect` gives one; it is a `Store` too (an
/// `Arc<dyn Inspect>` coerces to `Arc<dyn Store>`).
#[async_trait::async_trait]
pub trait Inspect: Store {
    async fn all_orders(&self) -> Result<Vec<Order>>;
    async fn all_attempts(&self) -> Result<Vec<Attempt>>;
    async fn all_refunds(&self) -> Result<Vec<Refund>>;
    /// Every coupon and every use (the invariant checker's view).
    async fn all_coupons(&self) -> Result<Vec<Coupon>>;
    async fn all_coupon_uses(&self) -> Result<Vec<CouponUse>>;
    /// How many orders whose `merchant_order_no` contains `marker` have been paid (`paid`,
    /// `partially_refunded`, `refunded`): one count, for a poll that must not load the database
    /// it watches (the bench's notification phase read every order ten times a second).
    async fn count_paid_orders(&self, marker: &str) -> Result<i64>;
}

#[async_trait::async_trait]
impl Inspect for SqlStore {
    async fn all_orders(&self) -> Result<Vec<Order>> {
        q_fmt(format!("SELECT {ORDER_COLS} FROM orders ORDER BY id"))
            .load_all::<Order>(&self.reader())
            .await
    }

    async fn all_attempts(&self) -> Result<Vec<Attempt>> {
        q_fmt(format!("SELECT {ATTEMPT_COLS} FROM attempts ORDER BY id"))
            .load_all::<Attempt>(&self.reader())
            .await
    }

    async fn all_refunds(&self) -> Result<Vec<Refund>> {
        q_fmt(format!("SELECT {REFUND_COLS} FROM refunds ORDER BY id"))
            .load_all::<Refund>(&self.reader())
            .await
    }

    async fn all_coupons(&self) -> Result<Vec<Coupon>> {
        q_fmt(format!("SELECT {COUPON_COLS} FROM coupons ORDER BY id"))
            .load_all::<Coupon>(&self.reader())
            .await
    }

    async fn count_paid_orders(&self, marker: &str) -> Result<i64> {
        // `instr`/`strpos`: a substring test with no LIKE wildcards to escape in the marker.
        let contains = match self.dialect() {
            crate::Backend::Sqlite => "instr(merchant_order_no, $1) > 0",
            crate::Backend::Postgres => "strpos(merchant_order_no, $1) > 0",
        };
        // The statuses `OrderStatus::has_been_paid` names, from the model itself.
        let paid = payonce_core::OrderStatus::ALL
            .iter()
            .filter(|s| s.has_been_paid())
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        Ok(q_fmt(format!(
            "SELECT COUNT(*) FROM orders WHERE status IN ({paid}) AND {contains}"
        ))
        .bind(marker)
        .scalar::<i64>(&self.reader())
        .await?)
    }

    async fn all_coupon_uses(&self) -> Result<Vec<CouponUse>> {
        Ok(q("SELECT coupon_id, order_id, payer_ref, status, over_limit FROM coupon_uses ORDER BY coupon_id, order_id")
            .fetch_all::<CouponUse>(&self.reader())
            .await?)
    }
}
