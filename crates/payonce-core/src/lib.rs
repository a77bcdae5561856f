//! payonce's domain: money, identifiers, the order, attempt, refund and coupon aggregates with
//! their state machines and pure decisions, and the clock.
//!
//! Nothing here does IO. Stores and the server call these pure functions to decide every
//! transition, then make the database enforce the decision with a conditional update.

pub mod attempt;
pub mod channel;
pub mod clock;
pub mod coupon;
pub mod decide;
pub mod ids;
pub mod json;
pub mod money;
pub mod order;
pub mod reconciliation;
pub mod refund;

pub use attempt::{Attempt, AttemptEvent, AttemptStatus};
pub use channel::{ChannelName, PayMethod};
pub use clock::{Clock, ManualClock, ShiftedClock, SystemClock, Timestamp};
pub use coupon::Coupon;
pub use decide::{Observed, Plan, decide};
pub use ids::{AppId, AttemptId, EventId, OrderId, OutTradeNo, RefundId, RefundNo};
pub use money::{Currency, Money};
pub use order::{Order, OrderCoupon, OrderEvent, OrderStatus, SuccessDisposition};
pub use refund::{Refund, RefundKind, RefundResult, RefundStatus};

/// A transition the state machine forbids. Callers treat it as "somebody else moved first"
/// or as a bug, never as something to force through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal transition: {from} on {event}")]
pub struct IllegalTransition {
    pub from: &'static str,
    pub event: &'static str,
}

/// A string that failed to parse into a domain type; `field` names it for API errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    pub message: String,
}

impl ParseError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}
