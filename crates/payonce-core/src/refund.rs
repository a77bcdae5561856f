//! Refunds: the entity, its state machine (pending → succeeded | failed | unknown, settled by
//! query) and `decide`, what a channel's answer about a refund means.

use crate::{
    AppId, AttemptId, ChannelName, IllegalTransition, Money, Order, OrderEvent, OrderId,
    OrderStatus, OutTradeNo, RefundId, RefundNo, Timestamp,
};
use serde::{Deserialize, Serialize};

/// Whose money a refund returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundKind {
    /// The business refunds (part of) its order.
    Order,
    /// payonce returns a second payment of an already paid or closed order.
    Duplicate,
}

impl RefundKind {
    pub const ALL: [RefundKind; 2] = [RefundKind::Order, RefundKind::Duplicate];

    pub fn as_str(&self) -> &'static str {
        match self {
            RefundKind::Order => "order",
            RefundKind::Duplicate => "duplicate",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A refund of (part of) a paid attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Refund {
    pub id: RefundId,
    pub order_id: OrderId,
    pub app_id: AppId,
    pub attempt_id: AttemptId,
    pub channel: ChannelName,
    pub out_trade_no: OutTradeNo,
    pub merchant_refund_no: Option<String>,
    /// The number the channel sees: derived deterministically, so a retry never refunds twice.
    pub out_refund_no: RefundNo,
    pub amount: Money,
    pub reason: Option<String>,
    pub kind: RefundKind,
    pub status: RefundStatus,
    pub failure_reason: Option<String>,
    pub content_hash: String,
    pub requested: bool,
    pub channel_data: Option<String>,
    pub next_query_at: Option<Timestamp>,
    /// How many times the channel was asked about it (sends and queries).
    pub query_count: i64,
    pub version: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Refund {
    /// The row of the automatic refund of a duplicate payment (`decide`'s `DuplicateRefund`):
    /// pending, not yet asked, due now; the refund worker makes the call.
    pub fn of_duplicate(
        order: &Order,
        attempt: &crate::Attempt,
        d: &crate::decide::DuplicateRefund,
        now: Timestamp,
    ) -> Refund {
        Refund {
            id: RefundId::new(),
            order_id: order.id.clone(),
            app_id: order.app_id.clone(),
            attempt_id: attempt.id.clone(),
            channel: attempt.channel,
            out_trade_no: attempt.out_trade_no.clone(),
            merchant_refund_no: None,
            out_refund_no: d.out_refund_no.clone(),
            amount: Money {
                minor: d.amount,
                currency: attempt.amount.currency,
            },
            reason: Some(d.reason.to_owned()),
            kind: RefundKind::Duplicate,
            status: RefundStatus::Pending,
            failure_reason: None,
            content_hash: String::new(),
            requested: false,
            channel_data: None,
            next_query_at: Some(now),
            query_count: 0,
            version: 1,
            created_at: now,
            updated_at: now,
        }
    }
}

/// What a refund call, query or notification established.
#[derive(Debug, Clone, PartialEq)]
pub enum RefundResult {
    Succeeded,
    Processing {
        next_query_at: Timestamp,
    },
    /// Stuck at the channel (WeChat ABNORMAL): reserved, flagged for a person, queried on.
    Abnormal {
        next_query_at: Timestamp,
    },
    Failed {
        reason: String,
    },
    /// The call's outcome is unknown: query it (and re-ask under the same number if absent).
    Unknown {
        next_query_at: Timestamp,
    },
    /// A query found no such refund: ask the channel again, under the same number.
    Absent {
        next_query_at: Timestamp,
    },
    /// The channel has no record of it yet (UnionPay `34`): it was sent, so never re-send;
    /// query again, and past a bounded run the abnormal queue gets it.
    NotFoundYet {
        next_query_at: Timestamp,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Pending,
    Succeeded,
    Failed,
    Unknown,
}

impl RefundStatus {
    /// Every status (the API document lists them from here).
    pub const ALL: [RefundStatus; 4] = [
        RefundStatus::Pending,
        RefundStatus::Succeeded,
        RefundStatus::Failed,
        RefundStatus::Unknown,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            RefundStatus::Pending => "pending",
            RefundStatus::Succeeded => "succeeded",
            RefundStatus::Failed => "failed",
            RefundStatus::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => RefundStatus::Pending,
            "succeeded" => RefundStatus::Succeeded,
            "failed" => RefundStatus::Failed,
            "unknown" => RefundStatus::Unknown,
            _ => return None,
        })
    }

    /// Succeeded and failed are final: nothing the channel says afterwards moves them.
    pub fn is_final(&self) -> bool {
        matches!(self, RefundStatus::Succeeded | RefundStatus::Failed)
    }

    /// Amounts of refunds in these states are reserved against what was paid, so concurrent
    /// refunds can never together exceed it.
    pub fn reserves_amount(&self) -> bool {
        !matches!(self, RefundStatus::Failed)
    }
}

/// What the business hears when a refund settles (an outbox event in the same transaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundEvent {
    Succeeded,
    Failed,
}

impl RefundEvent {
    pub fn as_str(&self) -> &'static str {
        match self {
            RefundEvent::Succeeded => "refund.succeeded",
            RefundEvent::Failed => "refund.failed",
        }
    }
}

/// An item for a person, written with the refund's change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundAbnormal {
    pub kind: &'static str,
    pub detail: String,
}

/// The order's new refunded amount and status, when a business refund succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderRefunded {
    pub refunded_amount: i64,
    pub status: OrderStatus,
}

/// What the refund's order looks like to `decide`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefundedOrder {
    pub status: OrderStatus,
    pub amount: i64,
    pub refunded_amount: i64,
}

impl From<&Order> for RefundedOrder {
    fn from(o: &Order) -> Self {
        RefundedOrder {
            status: o.status,
            amount: o.amount.minor,
            refunded_amount: o.refunded_amount,
        }
    }
}

/// The decision about one refund fact, for the store to write in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum RefundPlan {
    /// The refund is settled already (succeeded and failed are final): nothing to write.
    Nothing,
    Apply {
        status: RefundStatus,
        failure_reason: Option<String>,
        /// When to ask the channel next; `None` once settled.
        next_query_at: Option<Timestamp>,
        /// The channel has been asked (only "no such refund" clears it: ask again, same number).
        requested: bool,
        /// A business refund succeeded: the order's refunded amount and status move.
        order: Option<OrderRefunded>,
        event: Option<RefundEvent>,
        abnormal: Option<RefundAbnormal>,
    },
}

/// What a refund call's, query's or notification's answer means for the refund and its order.
/// Pure: the store loads and locks the order and the refund, calls this, and writes the plan.
/// Fails only when a success would refund more than the order was paid, which the reservation
/// at `create_refund` makes impossible: the store reports it as a corrupt row.
pub fn decide(
    order: RefundedOrder,
    current: &Refund,
    fact: &RefundResult,
) -> Result<RefundPlan, IllegalTransition> {
    if current.status.is_final() {
        return Ok(RefundPlan::Nothing);
    }
    let (status, failure_reason, next_query_at, requested) = match fact {
        RefundResult::Succeeded => (RefundStatus::Succeeded, None, None, true),
        RefundResult::Failed { reason } => (RefundStatus::Failed, Some(reason.clone()), None, true),
        RefundResult::Processing { next_query_at } | RefundResult::Abnormal { next_query_at } => {
            (RefundStatus::Pending, None, Some(*next_query_at), true)
        }
        RefundResult::Unknown { next_query_at } => {
            (RefundStatus::Unknown, None, Some(*next_query_at), true)
        }
        // Not at the channel: the next round asks again, under the same number.
        RefundResult::Absent { next_query_at } => {
            (RefundStatus::Pending, None, Some(*next_query_at), false)
        }
        // Sent, not on record yet: keep its status, never re-send.
        RefundResult::NotFoundYet { next_query_at } => {
            (current.status, None, Some(*next_query_at), true)
        }
    };
    let order = if status == RefundStatus::Succeeded && current.kind == RefundKind::Order {
        let refunded_amount = order.refunded_amount + current.amount.minor;
        let status = order.status.next(OrderEvent::Refunded {
            refunded_total: refunded_amount,
            amount: order.amount,
        })?;
        Some(OrderRefunded {
            refunded_amount,
            status,
        })
    } else {
        None
    };
    let abnormal = match (fact, status, current.kind) {
        (RefundResult::Abnormal { .. }, _, _) => Some(RefundAbnormal {
            kind: "refund_abnormal",
            detail: "the channel reports the refund ABNORMAL".into(),
        }),
        // A duplicate payment the channel will not return: a person must.
        (_, RefundStatus::Failed, RefundKind::Duplicate) => Some(RefundAbnormal {
            kind: "duplicate_refund_failed",
            detail: failure_reason.clone().unwrap_or_default(),
        }),
        _ => None,
    };
    let event = match status {
        RefundStatus::Succeeded => Some(RefundEvent::Succeeded),
        RefundStatus::Failed => Some(RefundEvent::Failed),
        _ => None,
    };
    Ok(RefundPlan::Apply {
        status,
        failure_reason,
        next_query_at,
        requested,
        order,
        event,
        abnormal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Currency, Money};
    use proptest::prelude::*;

    const PAID: i64 = 1_000;

    fn refund(kind: RefundKind, amount: i64) -> Refund {
        Refund {
            id: RefundId::new(),
            order_id: OrderId::new(),
            app_id: AppId::new(),
            attempt_id: AttemptId::new(),
            channel: ChannelName::Sandbox,
            out_trade_no: OutTradeNo::from_trusted("T".into()),
            merchant_refund_no: None,
            out_refund_no: RefundNo::from_trusted("R".into()),
            amount: Money {
                minor: amount,
                currency: Currency::CNY,
            },
            reason: None,
            kind,
            status: RefundStatus::Pending,
            failure_reason: None,
            content_hash: String::new(),
            requested: false,
            channel_data: None,
            next_query_at: None,
            query_count: 0,
            version: 1,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
        }
    }

    fn fact() -> impl Strategy<Value = RefundResult> {
        let t = (0i64..100).prop_map(Timestamp);
        prop_oneof![
            Just(RefundResult::Succeeded),
            "[a-z]{0,3}".prop_map(|reason| RefundResult::Failed { reason }),
            t.clone()
                .prop_map(|next_query_at| RefundResult::Processing { next_query_at }),
            t.clone()
                .prop_map(|next_query_at| RefundResult::Abnormal { next_query_at }),
            t.clone()
                .prop_map(|next_query_at| RefundResult::Unknown { next_query_at }),
            t.clone()
                .prop_map(|next_query_at| RefundResult::Absent { next_query_at }),
            t.prop_map(|next_query_at| RefundResult::NotFoundYet { next_query_at }),
        ]
    }

    /// The order and its refunds, written as a store writes plans.
    struct World {
        order: RefundedOrder,
        refunds: Vec<Refund>,
        events: Vec<(usize, RefundEvent)>,
        abnormal: Vec<(usize, &'static str)>,
    }

    impl World {
        fn new(refunds: Vec<Refund>) -> World {
            World {
                order: RefundedOrder {
                    status: OrderStatus::Paid,
                    amount: PAID,
                    refunded_amount: 0,
                },
                refunds,
                events: vec![],
                abnormal: vec![],
            }
        }

        /// Applies one fact to refund `i`; returns its status before.
        fn apply(&mut self, i: usize, fact: &RefundResult) -> RefundStatus {
            let before = self.refunds[i].status;
            let plan = decide(self.order, &self.refunds[i], fact).expect("reserved amounts fit");
            if let RefundPlan::Apply {
                status,
                failure_reason,
                next_query_at,
                requested,
                order,
                event,
                abnormal,
            } = plan
            {
                let r = &mut self.refunds[i];
                r.status = status;
                r.failure_reason = failure_reason;
                r.next_query_at = next_query_at;
                r.requested = requested;
                if let Some(o) = order {
                    self.order.refunded_amount = o.refunded_amount;
                    self.order.status = o.status;
                }
                self.events.extend(event.map(|e| (i, e)));
                self.abnormal.extend(abnormal.map(|a| (i, a.kind)));
            }
            before
        }
    }

    /// Refunds as `create_refund` reserves them: business refunds never sum past what was
    /// paid, plus a duplicate refund of another payment.
    fn refunds() -> impl Strategy<Value = Vec<Refund>> {
        proptest::collection::vec(1i64..=400, 1..4).prop_map(|amounts| {
            let mut left = PAID;
            let mut v: Vec<Refund> = amounts
                .into_iter()
                .filter_map(|a| {
                    let a = a.min(left);
                    left -= a;
                    (a > 0).then(|| refund(RefundKind::Order, a))
                })
                .collect();
            v.push(refund(RefundKind::Duplicate, PAID));
            v
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Over any sequence of facts about an order's refunds: a settled refund never moves; a
        /// success is counted into the order once; the business hears of each settlement once;
        /// nothing becomes failed without the channel saying so; the order's refunded amount is
        /// the sum of its succeeded business refunds, never more than was paid.
        #[test]
        fn refunds_settle_once(rs in refunds(), steps in proptest::collection::vec((0usize..4, fact()), 0..30)) {
            let mut w = World::new(rs);
            let n = w.refunds.len();
            for (i, fact) in &steps {
                let i = i % n;
                let before = w.apply(i, fact);
                let after = w.refunds[i].status;
                if before.is_final() {
                    prop_assert_eq!(before, after, "a settled refund moved");
                }
                if after == RefundStatus::Failed && before != RefundStatus::Failed {
                    prop_assert!(matches!(fact, RefundResult::Failed { .. }), "failed without a definite answer: {:?}", fact);
                }
                if after == RefundStatus::Succeeded && before != RefundStatus::Succeeded {
                    prop_assert_eq!(fact, &RefundResult::Succeeded);
                }
                if matches!(fact, RefundResult::NotFoundYet { .. }) && !before.is_final() {
                    prop_assert_eq!(before, after, "not-on-record-yet moved the status");
                }
                if !before.is_final() {
                    // Only "no such refund" lets the worker ask again.
                    prop_assert_eq!(w.refunds[i].requested, !matches!(fact, RefundResult::Absent { .. }));
                    // Settled refunds leave the query schedule; the others stay on it.
                    prop_assert_eq!(w.refunds[i].next_query_at.is_none(), after.is_final());
                }
            }
            let succeeded: i64 = w.refunds.iter()
                .filter(|r| r.kind == RefundKind::Order && r.status == RefundStatus::Succeeded)
                .map(|r| r.amount.minor)
                .sum();
            prop_assert_eq!(w.order.refunded_amount, succeeded);
            prop_assert!(w.order.refunded_amount <= PAID);
            let expected = match succeeded {
                0 => OrderStatus::Paid,
                PAID => OrderStatus::Refunded,
                _ => OrderStatus::PartiallyRefunded,
            };
            prop_assert_eq!(w.order.status, expected);
            // One event per settled refund, matching how it settled.
            for (i, r) in w.refunds.iter().enumerate() {
                let mine: Vec<RefundEvent> = w.events.iter().filter(|(j, _)| *j == i).map(|(_, e)| *e).collect();
                let expected: Vec<RefundEvent> = match r.status {
                    RefundStatus::Succeeded => vec![RefundEvent::Succeeded],
                    RefundStatus::Failed => vec![RefundEvent::Failed],
                    _ => vec![],
                };
                prop_assert_eq!(mine, expected);
                // A duplicate the channel would not return is in front of a person.
                if r.kind == RefundKind::Duplicate && r.status == RefundStatus::Failed {
                    prop_assert!(w.abnormal.contains(&(i, "duplicate_refund_failed")));
                }
            }
        }
    }

    #[test]
    fn a_success_past_what_was_paid_is_refused() {
        let order = RefundedOrder {
            status: OrderStatus::PartiallyRefunded,
            amount: PAID,
            refunded_amount: PAID - 10,
        };
        assert!(
            decide(
                order,
                &refund(RefundKind::Order, 11),
                &RefundResult::Succeeded
            )
            .is_err()
        );
        // A duplicate's refund returns another payment: the order's amounts are not touched.
        let plan = decide(
            order,
            &refund(RefundKind::Duplicate, PAID),
            &RefundResult::Succeeded,
        );
        assert!(matches!(plan, Ok(RefundPlan::Apply { order: None, .. })));
    }
}
