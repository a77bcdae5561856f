//! Coupons of an app: what one takes off an order and whether it may be used at all. The
//! reservation itself (who gets the last one) is the store's conditional update.

use crate::{AppId, Timestamp};

/// A coupon of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coupon {
    pub id: String,
    pub app_id: AppId,
    pub code: String,
    /// `fixed` (value in fen) or `percent` (whole percent).
    pub kind: String,
    pub value: i64,
    pub min_amount: Option<i64>,
    pub max_redemptions: i64,
    pub per_payer_limit: Option<i64>,
    pub valid_from: Option<Timestamp>,
    pub valid_until: Option<Timestamp>,
    pub reserved: i64,
    pub redeemed: i64,
    pub created_at: Timestamp,
}
