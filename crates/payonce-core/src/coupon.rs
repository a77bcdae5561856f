//! Coupons of an app: the entity, and `decide`, whether one may be used for an order and what it
//! takes off. Pure; the reservation itself (who gets the last one, the per-payer count) is the
//! store's conditional update in the order's transaction.

use crate::order::OrderCoupon;
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

/// What a coupon takes off `amount`: fixed fen, or floor(amount × percent / 100); never
/// negative, and never so much that less than 1 fen is left to pay.
pub fn discount(c: &Coupon, amount: i64) -> i64 {
    let off = match c.kind.as_str() {
        "percent" => amount.saturating_mul(c.value) / 100,
        _ => c.value,
    };
    off.clamp(0, (amount - 1).max(0))
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
    /// The coupon limits uses per payer, and the order names no payer (`payer_ref`).
    #[error("payer_ref: is required with this coupon (it has a per-payer limit)")]
    PayerRefRequired,
}

/// Whether the coupon can be used for an order of `amount` at `now` (its validity window and
/// minimum amount; the per-payer rule is `decide`'s).
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

/// The coupon for an order of `amount` (before the discount) at `now`, whose payer is known or
/// not: what the order records, or why the coupon cannot be used. Whether one is left is the
/// store's to say, under its reservation.
pub fn decide(
    c: &Coupon,
    amount: i64,
    payer_known: bool,
    now: Timestamp,
) -> Result<OrderCoupon, CouponRefusal> {
    check(c, amount, now)?;
    if c.per_payer_limit.is_some() && !payer_known {
        return Err(CouponRefusal::PayerRefRequired);
    }
    Ok(OrderCoupon {
        code: c.code.clone(),
        coupon_id: c.id.clone(),
        original_amount: amount,
        discount: discount(c, amount),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::MAX_MINOR;
    use proptest::prelude::*;

    fn coupon(kind: &str, value: i64) -> Coupon {
        Coupon {
            id: "cpn_1".into(),
            app_id: AppId::new(),
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

    #[test]
    fn a_per_payer_coupon_needs_a_payer() {
        let mut c = coupon("fixed", 10);
        c.per_payer_limit = Some(1);
        assert_eq!(
            decide(&c, 100, false, Timestamp(0)),
            Err(CouponRefusal::PayerRefRequired)
        );
        let used = decide(&c, 100, true, Timestamp(0)).unwrap();
        assert_eq!((used.original_amount, used.discount), (100, 10));
    }

    fn any_coupon() -> impl Strategy<Value = Coupon> {
        (
            prop_oneof![Just("fixed"), Just("percent")],
            0i64..=MAX_MINOR,
            0i64..=100,
            proptest::option::of(1i64..=MAX_MINOR),
            proptest::option::of(0i64..1_000),
            proptest::option::of(0i64..1_000),
            proptest::option::of(1i64..5),
        )
            .prop_map(|(kind, fixed, percent, min, from, until, per_payer)| {
                let mut c = coupon(kind, if kind == "percent" { percent } else { fixed });
                c.min_amount = min;
                c.valid_from = from.map(Timestamp);
                c.valid_until = until.map(Timestamp);
                c.per_payer_limit = per_payer;
                c
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever the coupon and the order: the discount is never negative, always leaves at
        /// least 1 fen to pay, is a percentage's floor or the fixed value (capped), and a
        /// coupon is used only inside its window, above its minimum, with a payer when it
        /// counts per payer.
        #[test]
        fn discounts_stay_in_bounds(c in any_coupon(), amount in 1i64..=MAX_MINOR, now in 0i64..1_000, payer in any::<bool>()) {
            let off = discount(&c, amount);
            prop_assert!(off >= 0);
            prop_assert!(amount - off >= 1, "less than a fen left: {} - {}", amount, off);
            let expected = if c.kind == "percent" { amount * c.value / 100 } else { c.value };
            prop_assert_eq!(off, expected.min(amount - 1));
            if c.kind == "percent" {
                // A floor: the payer never pays less than the exact percentage would leave.
                prop_assert!(off * 100 <= amount * c.value);
                prop_assert!((off + 1) * 100 > amount * c.value || off == amount - 1);
            }
            let now = Timestamp(now);
            match decide(&c, amount, payer, now) {
                Ok(used) => {
                    prop_assert_eq!(used.discount, off);
                    prop_assert_eq!(used.original_amount, amount);
                    prop_assert!(c.valid_from.is_none_or(|t| now >= t));
                    prop_assert!(c.valid_until.is_none_or(|t| now < t));
                    prop_assert!(c.min_amount.is_none_or(|m| amount >= m));
                    prop_assert!(payer || c.per_payer_limit.is_none());
                }
                Err(CouponRefusal::Unavailable(_)) => prop_assert!(
                    c.valid_from.is_some_and(|t| now < t) || c.valid_until.is_some_and(|t| now >= t)
                ),
                Err(CouponRefusal::BelowMinimum { min_amount }) => prop_assert!(amount < min_amount),
                Err(CouponRefusal::PayerRefRequired) => prop_assert!(!payer && c.per_payer_limit.is_some()),
            }
        }
    }
}
