//! The order state machine (DESIGN.md, "Order"): pure functions the stores obey.

use crate::{AppId, AttemptId, IllegalTransition, Money, OrderId, Timestamp};
use serde::{Deserialize, Serialize};

/// A payment order of a business system: what is owed, and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub id: OrderId,
    pub app_id: AppId,
    pub merchant_order_no: String,
    pub amount: Money,
    pub subject: String,
    pub notify_url: Option<String>,
    /// JSON text, stored as the client sent it (after validation).
    pub metadata: Option<String>,
    pub content_hash: String,
    pub status: OrderStatus,
    pub closed_by: Option<ClosedBy>,
    pub paid_attempt_id: Option<AttemptId>,
    pub paid_at: Option<Timestamp>,
    pub refunded_amount: i64,
    pub expires_at: Timestamp,
    pub version: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The coupon this order uses, and what it was before the discount (`amount` is what the
    /// payer pays).
    pub coupon: Option<OrderCoupon>,
    /// The business's id of the payer (the submission guard's and coupons' per-payer key).
    pub payer_ref: Option<String>,
}

/// A coupon applied to an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderCoupon {
    pub code: String,
    /// The coupon's row id (`cpn_…`): what the reservation names.
    pub coupon_id: String,
    pub original_amount: i64,
    pub discount: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Unpaid,
    Paying,
    Paid,
    Closed,
    PartiallyRefunded,
    Refunded,
}

impl OrderStatus {
    /// Every status, in lifecycle order (the API document lists them from here).
    pub const ALL: [OrderStatus; 6] = [
        OrderStatus::Unpaid,
        OrderStatus::Paying,
        OrderStatus::Paid,
        OrderStatus::Closed,
        OrderStatus::PartiallyRefunded,
        OrderStatus::Refunded,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            OrderStatus::Unpaid => "unpaid",
            OrderStatus::Paying => "paying",
            OrderStatus::Paid => "paid",
            OrderStatus::Closed => "closed",
            OrderStatus::PartiallyRefunded => "partially_refunded",
            OrderStatus::Refunded => "refunded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "unpaid" => OrderStatus::Unpaid,
            "paying" => OrderStatus::Paying,
            "paid" => OrderStatus::Paid,
            "closed" => OrderStatus::Closed,
            "partially_refunded" => OrderStatus::PartiallyRefunded,
            "refunded" => OrderStatus::Refunded,
            _ => return None,
        })
    }

    /// Money was taken for this order: paid, possibly refunded since. Nothing moves it back.
    pub fn has_been_paid(&self) -> bool {
        matches!(
            self,
            OrderStatus::Paid | OrderStatus::PartiallyRefunded | OrderStatus::Refunded
        )
    }

    /// The order can still be paid through a new prepay.
    pub fn is_open(&self) -> bool {
        matches!(self, OrderStatus::Unpaid | OrderStatus::Paying)
    }
}

/// Who closed an order matters for a payment that arrives afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClosedBy {
    /// The business asked: it no longer wants the money, so a late payment is always refunded.
    Business,
    /// The order expired: a late payment follows the `late_payment` policy.
    Expiry,
}

/// What to do with a payment that arrives for an expired order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatePaymentPolicy {
    /// Keep the order closed and refund the payment (the default: an expired order's goods may
    /// already be released).
    #[default]
    Refund,
    /// Reopen the order as paid.
    Accept,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderEvent {
    /// The first attempt was written (intent committed before the channel call).
    AttemptStarted,
    /// Every attempt failed or closed while the order is still open.
    AttemptsEnded,
    /// A channel reports an attempt paid.
    AttemptSucceeded {
        closed_by: Option<ClosedBy>,
        policy: LatePaymentPolicy,
    },
    /// Business close or expiry, after every channel order was confirmed closed.
    Closed,
    /// A refund of the order's own money succeeded; `refunded_total` includes it.
    Refunded { refunded_total: i64, amount: i64 },
}

impl OrderEvent {
    fn name(&self) -> &'static str {
        match self {
            OrderEvent::AttemptStarted => "attempt_started",
            OrderEvent::AttemptsEnded => "attempts_ended",
            OrderEvent::AttemptSucceeded { .. } => "attempt_succeeded",
            OrderEvent::Closed => "closed",
            OrderEvent::Refunded { .. } => "refunded",
        }
    }
}

/// What a success does to its order: either the order becomes paid, or the payment is a
/// duplicate (another attempt already paid, or the order is closed) and must be refunded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuccessDisposition {
    MarkPaid,
    Duplicate,
}

/// Decides a channel success against the order's current state. Never fails: a success is a
/// fact from the channel, and every fact has a place.
pub fn success_disposition(
    status: OrderStatus,
    closed_by: Option<ClosedBy>,
    policy: LatePaymentPolicy,
) -> SuccessDisposition {
    match status {
        OrderStatus::Unpaid | OrderStatus::Paying => SuccessDisposition::MarkPaid,
        OrderStatus::Closed => match (closed_by, policy) {
            (Some(ClosedBy::Expiry), LatePaymentPolicy::Accept) => SuccessDisposition::MarkPaid,
            _ => SuccessDisposition::Duplicate,
        },
        OrderStatus::Paid | OrderStatus::PartiallyRefunded | OrderStatus::Refunded => {
            SuccessDisposition::Duplicate
        }
    }
}

impl OrderStatus {
    /// The one transition function for orders.
    pub fn next(self, event: OrderEvent) -> Result<OrderStatus, IllegalTransition> {
        use OrderStatus::*;
        let illegal = || IllegalTransition {
            from: self.as_str(),
            event: event.name(),
        };
        match (self, event) {
            (Unpaid | Paying, OrderEvent::AttemptStarted) => Ok(Paying),
            (Paying, OrderEvent::AttemptsEnded) => Ok(Unpaid),
            (Unpaid, OrderEvent::AttemptsEnded) => Ok(Unpaid),
            (s, OrderEvent::AttemptSucceeded { closed_by, policy }) => {
                match success_disposition(s, closed_by, policy) {
                    SuccessDisposition::MarkPaid => Ok(Paid),
                    SuccessDisposition::Duplicate => Ok(s),
                }
            }
            (Unpaid | Paying, OrderEvent::Closed) => Ok(Closed),
            (Closed, OrderEvent::Closed) => Ok(Closed),
            (
                Paid | PartiallyRefunded,
                OrderEvent::Refunded {
                    refunded_total,
                    amount,
                },
            ) => {
                if refunded_total <= 0 || refunded_total > amount {
                    Err(illegal())
                } else if refunded_total == amount {
                    Ok(Refunded)
                } else {
                    Ok(PartiallyRefunded)
                }
            }
            _ => Err(illegal()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_on_paid_is_a_duplicate() {
        let e = OrderEvent::AttemptSucceeded {
            closed_by: None,
            policy: LatePaymentPolicy::Refund,
        };
        assert_eq!(OrderStatus::Paid.next(e), Ok(OrderStatus::Paid));
        assert_eq!(
            success_disposition(OrderStatus::Paid, None, LatePaymentPolicy::Accept),
            SuccessDisposition::Duplicate
        );
    }

    #[test]
    fn late_payment_follows_policy_only_for_expiry() {
        use LatePaymentPolicy::*;
        assert_eq!(
            success_disposition(OrderStatus::Closed, Some(ClosedBy::Expiry), Accept),
            SuccessDisposition::MarkPaid
        );
        assert_eq!(
            success_disposition(OrderStatus::Closed, Some(ClosedBy::Expiry), Refund),
            SuccessDisposition::Duplicate
        );
        assert_eq!(
            success_disposition(OrderStatus::Closed, Some(ClosedBy::Business), Accept),
            SuccessDisposition::Duplicate
        );
    }

    #[test]
    fn paid_cannot_close_or_reopen() {
        assert!(OrderStatus::Paid.next(OrderEvent::Closed).is_err());
        assert!(OrderStatus::Paid.next(OrderEvent::AttemptStarted).is_err());
        assert!(OrderStatus::Paid.next(OrderEvent::AttemptsEnded).is_err());
    }

    #[test]
    fn refunds_never_exceed_amount() {
        let ok = OrderStatus::Paid.next(OrderEvent::Refunded {
            refunded_total: 50,
            amount: 100,
        });
        assert_eq!(ok, Ok(OrderStatus::PartiallyRefunded));
        let full = OrderStatus::PartiallyRefunded.next(OrderEvent::Refunded {
            refunded_total: 100,
            amount: 100,
        });
        assert_eq!(full, Ok(OrderStatus::Refunded));
        assert!(
            OrderStatus::Paid
                .next(OrderEvent::Refunded {
                    refunded_total: 101,
                    amount: 100
                })
                .is_err()
        );
    }
}
