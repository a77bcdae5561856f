//! Coupon rules: what a coupon takes off an order, and whether it may be used at all. The
//! reservation itself is the store's conditional update (who gets the last one).

use payonce_core::Coupon;
use payonce_core::Timestamp;

/// What a coupon takes off `amount`: fixed fen, or floor(amount × percent / 100); never so
/// much that less than 1 fen is left to pay.
pub fn discount(c: &Coupon, amount: i64) -> i64 {
    let off = match c.kind.as_str() {
        "percent" => amount * c.value / 100,
        _ => c.value,
    };
    off.clamp(0, amount - 1)
}

/// Why a coupon cannot be used for an order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CouponRefusal {
    /// Not usable now (`expired`, `not_yet_valid`): API.md's 409 `coupon_unavailable`.
    #[error("the coupon is {0}")]
    Unavailable(&'static str),
    /// Never usable for this order: API.md's 422 `coupon_not_applicable`.
    #[error("the order's amount is below the coupon's minimum of {min_amount} fen")]
    BelowMinimum { min_amount: i64 },
}

/// Whether the coupon can be used for an order of `amount` at `now`.
pub fn check(c: &Coupon, amount: i64, now: Timestamp) -> Result<(), CouponRefusal> {
    if c.valid_until.is_some_and(|t| now >= t) {
        return Err(CouponRefusal::Unavailable("expired"));
    }
    if c.valid_from.is_some_and(|t| now < t) {
        return Err(CouponRefusal::Unavailable("not_yet_valid"));
    }
    if let Some(min_amount) = c.min_amount.filter(|m| amount < *m) {
        return Err(CouponRefusal::BelowMinimum { min_amount });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coupon(kind: &str, value: i64) -> Coupon {
        Coupon {
            id: "cpn_1".into(),
            app_id: payonce_core::AppId::new(),
            code: "C".into(),
            kind: kind.into(),
            value,
            min_amount: None,
            max_redemptions: 1,
            per_payer_limit: None,
            valid_from: None,
            valid_until: None,
            reserved: 0,
            redeemed: 0,
            created_at: Timestamp(0),
        }
    }

    #[test]
    fn discounts_floor_and_leave_at_least_a_fen() {
        assert_eq!(discount(&coupon("percent", 15), 999), 149);
        assert_eq!(discount(&coupon("fixed", 300), 1000), 300);
        assert_eq!(discount(&coupon("fixed", 5000), 1000), 999);
        assert_eq!(discount(&coupon("percent", 100), 1000), 999);
        assert_eq!(discount(&coupon("percent", 10), 1), 0);
    }
}
