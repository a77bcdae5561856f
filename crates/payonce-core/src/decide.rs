//! What a channel's word means for money: `decide` takes an order, one of its attempts and what
//! the channel says about that attempt, and returns the `Plan` — the attempt's and the order's
//! new state, the event the business hears, the refund of a duplicate, or an abnormal item for
//! a person. Pure: the store loads and locks the rows, calls this, and writes the plan in the
//! same transaction; the property tests below drive it with every sequence of facts.

use crate::order::{ClosedBy, LatePaymentPolicy, SuccessDisposition, success_disposition};
use crate::{
    AttemptEvent, AttemptStatus, OrderEvent, OrderStatus, OutTradeNo, RefundNo, Timestamp,
};

/// What a channel says about one of its orders (the channels' `TradeState`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    Paid {
        amount: i64,
        channel_trade_no: Option<String>,
        paid_at: Timestamp,
    },
    Unpaid,
    Closed,
    /// No such channel order. Only meaningful for channels that create at prepay.
    Absent,
}

/// Which answer said "the channel has no such order".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbsentFrom {
    /// A query's answer (the active-query worker, a `?sync` read, a settle query).
    Query,
    /// A close's answer (retiring an attempt, expiry).
    Close,
}

/// What else is known when a channel says it has no such order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbsentContext {
    /// The channel creates its order at prepay (WeChat, sandbox); otherwise the order appears
    /// only when the payer acts (an Alipay QR scanned, a UnionPay form submitted).
    pub creates_order_at_prepay: bool,
    /// The attempt's latest payable moment has passed: nobody can pay it any more.
    pub payable_until_passed: bool,
    /// A prepay call of the attempt may still be under way (its call deadline has not passed),
    /// so the channel may not have created the order yet.
    pub call_may_be_in_flight: bool,
}

/// What "no such order" means for an attempt: the one rule, whichever answer said it
/// (docs/channels.md, "How the tables are kept true"). Where the channel creates its order at
/// prepay it proves the prepay never happened (`Absent`), but only once no call can still be
/// creating it. Where the order appears only when the payer acts, a close that finds nothing
/// leaves the attempt closed (and watched until it can no longer be paid); a query that finds
/// nothing means "not paid yet" until then, and closed after — never absent, which would fail
/// an attempt that can still be paid. `None`: nothing to record yet.
pub fn absent_means(from: AbsentFrom, ctx: AbsentContext) -> Option<Observed> {
    match (from, ctx.creates_order_at_prepay) {
        (_, true) if ctx.call_may_be_in_flight => None,
        (_, true) => Some(Observed::Absent),
        (AbsentFrom::Close, false) => Some(Observed::Closed),
        (AbsentFrom::Query, false) => ctx.payable_until_passed.then_some(Observed::Closed),
    }
}

/// The order as `decide` needs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrderState {
    pub status: OrderStatus,
    pub closed_by: Option<ClosedBy>,
}

/// The attempt the fact is about, as `decide` needs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttemptState<'a> {
    pub status: AttemptStatus,
    /// Its channel order's number (a duplicate's refund number is derived from it).
    pub out_trade_no: &'a OutTradeNo,
    pub amount: i64,
    pub next_query_at: Option<Timestamp>,
}

/// Everything else the decision depends on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Circumstances {
    pub late_payment: LatePaymentPolicy,
    /// The channel creates its order at prepay (so "no such order" after the call's timeout
    /// means the call never took effect).
    pub creates_order_at_prepay: bool,
    /// When to look at the attempt again if this fact does not settle it; `None` keeps its
    /// schedule.
    pub reschedule: Option<Timestamp>,
    /// Another attempt of the order is still active (created, pending or unknown).
    pub other_active_attempt: bool,
}

/// What the business hears (an outbox event in the same transaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusinessEvent {
    PaymentSucceeded,
    DuplicateDetected,
}

impl BusinessEvent {
    pub fn as_str(&self) -> &'static str {
        match self {
            BusinessEvent::PaymentSucceeded => "payment.succeeded",
            BusinessEvent::DuplicateDetected => "payment.duplicate_detected",
        }
    }
}

/// What the outcome did, for the caller (metrics, logs, answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The outcome was already known: nothing changed.
    Nothing,
    /// The attempt moved (pending, closed, failed…) without paying the order.
    AttemptMoved,
    /// This payment paid the order.
    OrderPaid,
    /// A payment for an order already paid or closed: a duplicate to refund.
    Duplicate,
}

impl Effect {
    /// The verdict written beside the fact in the order's timeline.
    pub fn as_str(&self) -> &'static str {
        match self {
            Effect::Nothing => "nothing_new",
            Effect::AttemptMoved => "attempt_moved",
            Effect::OrderPaid => "order_paid",
            Effect::Duplicate => "duplicate",
        }
    }
}

/// The automatic refund of a duplicate payment: the whole attempt, under a number derived from
/// the attempt's, so however often it is retried, by whichever instance, the channel sees one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateRefund {
    pub out_refund_no: RefundNo,
    pub amount: i64,
    pub reason: &'static str,
}

/// The attempt's new row values.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptChange {
    pub status: AttemptStatus,
    pub is_duplicate: bool,
    /// Set only by a payment (kept otherwise).
    pub paid_at: Option<Timestamp>,
    pub channel_trade_no: Option<String>,
    pub next_query_at: Option<Timestamp>,
}

/// The order's new row values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OrderChange {
    /// Paid by this attempt, at this time.
    Paid {
        status: OrderStatus,
        paid_at: Timestamp,
    },
    /// Only the status moves (the last active attempt ended: unpaid again).
    Status(OrderStatus),
}

/// The decision, for the store to write atomically.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Nothing to write.
    Nothing,
    /// A correctly signed payment whose amount is not the attempt's: only an abnormal item
    /// (`amount_mismatch`, `detail()`) for a person; nothing else moves.
    AmountMismatch { reported: i64, expected: i64 },
    Apply {
        attempt: AttemptChange,
        order: Option<OrderChange>,
        event: Option<BusinessEvent>,
        /// Refund this attempt's whole amount: it paid an order that was paid or closed.
        refund_duplicate: Option<DuplicateRefund>,
        effect: Effect,
    },
}

impl Plan {
    /// The verdict written beside the fact in the order's timeline.
    pub fn verdict(&self) -> String {
        match self {
            Plan::Nothing => Effect::Nothing.as_str().to_owned(),
            Plan::AmountMismatch { reported, .. } => {
                format!("amount_mismatch (reported {reported})")
            }
            Plan::Apply { effect, .. } => effect.as_str().to_owned(),
        }
    }

    /// Whether the fact changed anything (a bill row that changed nothing leaves no message).
    pub fn changes(&self) -> bool {
        match self {
            Plan::Nothing => false,
            Plan::AmountMismatch { .. } => true,
            Plan::Apply { effect, .. } => *effect != Effect::Nothing,
        }
    }

    /// The abnormal item's text, for an amount mismatch.
    pub fn detail(&self) -> Option<String> {
        match self {
            Plan::AmountMismatch { reported, expected } => Some(format!(
                "channel reports {reported} paid, attempt amount is {expected}"
            )),
            _ => None,
        }
    }
}

/// Deliberately broken engines, to prove the checkers catch them (`payonce chaos` against a
/// fault-injected engine). Only with the `fault-injection` feature, and off unless switched on.
#[cfg(feature = "fault-injection")]
pub mod fault_injection {
    use std::sync::atomic::{AtomicBool, Ordering};

    static SKIP_DUPLICATE_REFUND: AtomicBool = AtomicBool::new(false);

    /// From now on a duplicate payment is recorded but never refunded (a classic bug).
    pub fn skip_duplicate_refund(on: bool) {
        SKIP_DUPLICATE_REFUND.store(on, Ordering::SeqCst);
    }

    pub(crate) fn skipping_duplicate_refund() -> bool {
        SKIP_DUPLICATE_REFUND.load(Ordering::SeqCst)
    }

    static MISROUTE_ACCOUNTS: AtomicBool = AtomicBool::new(false);

    /// From now on a payment of an app bound to a channel account is recorded under that
    /// account but sent through the channel's default one (the bug isolation, I9, rules out).
    pub fn misroute_accounts(on: bool) {
        MISROUTE_ACCOUNTS.store(on, Ordering::SeqCst);
    }

    pub fn misrouting_accounts() -> bool {
        MISROUTE_ACCOUNTS.load(Ordering::SeqCst)
    }
}

/// The one place a channel's word about an attempt turns into money decisions.
pub fn decide(
    order: OrderState,
    attempt: AttemptState<'_>,
    observed: &Observed,
    c: Circumstances,
) -> Plan {
    let event = match observed {
        Observed::Paid { amount, .. } if *amount != attempt.amount => {
            return Plan::AmountMismatch {
                reported: *amount,
                expected: attempt.amount,
            };
        }
        Observed::Paid { .. } => AttemptEvent::ReportedPaid,
        Observed::Unpaid => AttemptEvent::ReportedUnpaid,
        Observed::Closed => AttemptEvent::ReportedClosed,
        Observed::Absent if c.creates_order_at_prepay => AttemptEvent::ReportedAbsent,
        // A channel that creates its order only when the payer scans: absence says nothing
        // (`absent_means` never reports it so; a defence for any other door).
        Observed::Absent => return Plan::Nothing,
    };
    let next = match attempt.status.next(event) {
        Ok(next) if next != attempt.status => next,
        // Already known, or a stale report (e.g. "unpaid" about a failed attempt).
        _ => return Plan::Nothing,
    };
    // Settled attempts leave the query schedule; others keep theirs unless told.
    let next_query_at = if matches!(next, AttemptStatus::Succeeded | AttemptStatus::Failed) {
        None
    } else {
        c.reschedule.or(attempt.next_query_at)
    };
    let mut change = AttemptChange {
        status: next,
        is_duplicate: false,
        paid_at: None,
        channel_trade_no: None,
        next_query_at,
    };
    if let Observed::Paid {
        paid_at,
        channel_trade_no,
        ..
    } = observed
    {
        change.paid_at = Some(*paid_at);
        change.channel_trade_no = channel_trade_no.clone();
        return match success_disposition(order.status, order.closed_by, c.late_payment) {
            SuccessDisposition::MarkPaid => {
                let ev = OrderEvent::AttemptSucceeded {
                    closed_by: order.closed_by,
                    policy: c.late_payment,
                };
                let status = order
                    .status
                    .next(ev)
                    .expect("success_disposition said the order can be paid");
                Plan::Apply {
                    attempt: change,
                    order: Some(OrderChange::Paid {
                        status,
                        paid_at: *paid_at,
                    }),
                    event: Some(BusinessEvent::PaymentSucceeded),
                    refund_duplicate: None,
                    effect: Effect::OrderPaid,
                }
            }
            SuccessDisposition::Duplicate => {
                change.is_duplicate = true;
                #[cfg(feature = "fault-injection")]
                let refund = !fault_injection::skipping_duplicate_refund();
                #[cfg(not(feature = "fault-injection"))]
                let refund = true;
                let refund_duplicate = refund.then(|| DuplicateRefund {
                    out_refund_no: RefundNo::for_duplicate(attempt.out_trade_no),
                    amount: attempt.amount,
                    reason: "duplicate payment",
                });
                Plan::Apply {
                    attempt: change,
                    order: None,
                    event: Some(BusinessEvent::DuplicateDetected),
                    refund_duplicate,
                    effect: Effect::Duplicate,
                }
            }
        };
    }
    // The attempt ended without paying: when it was the order's last active one, a paying
    // order is unpaid again (the payer may try another channel).
    let order_change = (!next.is_active()
        && order.status == OrderStatus::Paying
        && !c.other_active_attempt)
        .then(|| {
            OrderChange::Status(
                order
                    .status
                    .next(OrderEvent::AttemptsEnded)
                    .expect("paying → unpaid"),
            )
        });
    Plan::Apply {
        attempt: change,
        order: order_change,
        event: None,
        refund_duplicate: None,
        effect: Effect::AttemptMoved,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const AMOUNT: i64 = 500;

    fn paid(n: u8) -> Observed {
        Observed::Paid {
            amount: AMOUNT,
            channel_trade_no: Some(format!("T{n}")),
            paid_at: Timestamp(1_000 + i64::from(n)),
        }
    }

    /// One thing that can happen to an order with three attempts.
    #[derive(Debug, Clone)]
    enum Step {
        /// The channel says something about attempt `i`.
        Fact(usize, Observed),
        /// The business (or expiry) closes the order, when no attempt is active.
        Close(ClosedBy),
    }

    fn step() -> impl Strategy<Value = Step> {
        let observed = prop_oneof![
            (0u8..4).prop_map(paid),
            Just(Observed::Unpaid),
            Just(Observed::Closed),
            Just(Observed::Absent),
            Just(Observed::Paid {
                amount: AMOUNT - 1,
                channel_trade_no: None,
                paid_at: Timestamp(9)
            }),
        ];
        prop_oneof![
            4 => (0usize..3, observed).prop_map(|(i, o)| Step::Fact(i, o)),
            1 => prop_oneof![Just(ClosedBy::Business), Just(ClosedBy::Expiry)].prop_map(Step::Close),
        ]
    }

    /// The rows of one order, written as a store writes plans.
    struct World {
        order: OrderState,
        paid_by: Option<usize>,
        attempts: Vec<(AttemptStatus, bool)>,
        refunds: i64,
        events: Vec<BusinessEvent>,
        abnormal: usize,
        /// Attempts a channel reported paid (with the right amount): real charges.
        charged: Vec<bool>,
        /// The numbers duplicate refunds were made under.
        refund_nos: Vec<RefundNo>,
    }

    impl World {
        fn run(steps: &[Step], policy: LatePaymentPolicy, creates: bool) -> World {
            let mut w = World {
                order: OrderState {
                    status: OrderStatus::Paying,
                    closed_by: None,
                },
                paid_by: None,
                attempts: vec![
                    (AttemptStatus::Pending, false),
                    (AttemptStatus::Created, false),
                    (AttemptStatus::Unknown, false),
                ],
                refunds: 0,
                events: vec![],
                abnormal: 0,
                charged: vec![false; 3],
                refund_nos: vec![],
            };
            let nos: Vec<OutTradeNo> = (0..3)
                .map(|i| OutTradeNo::from_trusted(format!("T{i}")))
                .collect();
            for s in steps {
                match s {
                    Step::Close(by) => {
                        let active = w.attempts.iter().any(|(s, _)| s.is_active());
                        if !active && w.order.status.is_open() {
                            w.order = OrderState {
                                status: OrderStatus::Closed,
                                closed_by: Some(*by),
                            };
                        }
                    }
                    Step::Fact(i, observed) => {
                        let (status, _) = w.attempts[*i];
                        let other_active = w
                            .attempts
                            .iter()
                            .enumerate()
                            .any(|(j, (s, _))| j != *i && s.is_active());
                        let c = Circumstances {
                            late_payment: policy,
                            creates_order_at_prepay: creates,
                            reschedule: None,
                            other_active_attempt: other_active,
                        };
                        let plan = decide(
                            w.order,
                            AttemptState {
                                status,
                                out_trade_no: &nos[*i],
                                amount: AMOUNT,
                                next_query_at: None,
                            },
                            observed,
                            c,
                        );
                        if matches!(observed, Observed::Paid { amount: AMOUNT, .. }) {
                            w.charged[*i] = true;
                        }
                        match plan {
                            Plan::Nothing => {}
                            Plan::AmountMismatch { .. } => w.abnormal += 1,
                            Plan::Apply {
                                attempt,
                                order,
                                event,
                                refund_duplicate,
                                ..
                            } => {
                                w.attempts[*i] =
                                    (attempt.status, attempt.is_duplicate || w.attempts[*i].1);
                                match order {
                                    Some(OrderChange::Paid { status, .. }) => {
                                        w.order.status = status;
                                        w.paid_by = Some(*i);
                                    }
                                    Some(OrderChange::Status(s)) => w.order.status = s,
                                    None => {}
                                }
                                w.events.extend(event);
                                if let Some(d) = refund_duplicate {
                                    w.refunds += d.amount;
                                    w.refund_nos.push(d.out_refund_no);
                                }
                            }
                        }
                    }
                }
            }
            w
        }
    }

    /// Every case of "no such order": an attempt that can still be paid is never failed by it,
    /// nor one whose call may still be creating the channel order; a close of a QR nobody
    /// scanned leaves it closed.
    #[test]
    fn no_such_order_never_fails_what_can_still_be_paid() {
        for from in [AbsentFrom::Query, AbsentFrom::Close] {
            for bits in 0..8u8 {
                let ctx = AbsentContext {
                    creates_order_at_prepay: bits & 1 != 0,
                    payable_until_passed: bits & 2 != 0,
                    call_may_be_in_flight: bits & 4 != 0,
                };
                let means = absent_means(from, ctx);
                if means == Some(Observed::Absent) {
                    assert!(
                        ctx.creates_order_at_prepay && !ctx.call_may_be_in_flight,
                        "{from:?} {ctx:?}"
                    );
                }
                if ctx.creates_order_at_prepay && ctx.call_may_be_in_flight {
                    assert_eq!(means, None, "{from:?} {ctx:?}");
                }
                if !ctx.creates_order_at_prepay {
                    let expected = match from {
                        AbsentFrom::Close => Some(Observed::Closed),
                        AbsentFrom::Query if ctx.payable_until_passed => Some(Observed::Closed),
                        AbsentFrom::Query => None,
                    };
                    assert_eq!(means, expected, "{from:?} {ctx:?}");
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// No sequence of facts pays an order twice, loses a charge, or refunds more than was
        /// charged; and the business hears of every charge exactly once.
        #[test]
        fn never_twice_never_lost(steps in proptest::collection::vec(step(), 0..24), accept in any::<bool>(), creates in any::<bool>()) {
            let policy = if accept { LatePaymentPolicy::Accept } else { LatePaymentPolicy::Refund };
            let w = World::run(&steps, policy, creates);
            let charges = w.charged.iter().filter(|c| **c).count() as i64;
            let keeping: Vec<usize> = (0..3).filter(|i| w.attempts[*i].0 == AttemptStatus::Succeeded && !w.attempts[*i].1).collect();
            // At most one payment is kept, and it is the one that paid the order.
            prop_assert!(keeping.len() <= 1, "two attempts keep money: {:?}", w.attempts);
            prop_assert_eq!(keeping.first().copied(), w.paid_by);
            // Every charge is accounted for: kept by the order or refunded as a duplicate.
            for i in 0..3 {
                if w.charged[i] {
                    prop_assert_eq!(w.attempts[i].0, AttemptStatus::Succeeded, "charge on attempt {} lost", i);
                }
            }
            let duplicates = (0..3).filter(|i| w.attempts[*i].1).count() as i64;
            prop_assert_eq!(w.refunds, duplicates * AMOUNT);
            // Each duplicate is refunded under its own number, once.
            let mut nos = w.refund_nos.clone();
            nos.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            nos.dedup();
            prop_assert_eq!(nos.len(), w.refund_nos.len());
            prop_assert!(w.refunds <= charges * AMOUNT, "refunded more than was charged");
            prop_assert_eq!(charges, keeping.len() as i64 + duplicates);
            // One event per charge.
            prop_assert_eq!(w.events.len() as i64, charges);
            // A paid order stays paid; an order with a kept payment is paid.
            prop_assert_eq!(w.paid_by.is_some(), w.order.status == OrderStatus::Paid);
        }
    }

    #[test]
    fn a_wrong_amount_moves_nothing() {
        let o = OrderState {
            status: OrderStatus::Paying,
            closed_by: None,
        };
        let a = AttemptState {
            status: AttemptStatus::Pending,
            out_trade_no: &OutTradeNo::from_trusted("T".into()),
            amount: 500,
            next_query_at: None,
        };
        let c = Circumstances {
            late_payment: LatePaymentPolicy::Refund,
            creates_order_at_prepay: true,
            reschedule: None,
            other_active_attempt: false,
        };
        let wrong = Observed::Paid {
            amount: 499,
            channel_trade_no: None,
            paid_at: Timestamp(1),
        };
        assert_eq!(
            decide(o, a, &wrong, c),
            Plan::AmountMismatch {
                reported: 499,
                expected: 500
            }
        );
    }

    #[test]
    fn the_last_attempt_ending_unpays_the_order_only_when_it_is_the_last() {
        let o = OrderState {
            status: OrderStatus::Paying,
            closed_by: None,
        };
        let a = AttemptState {
            status: AttemptStatus::Pending,
            out_trade_no: &OutTradeNo::from_trusted("T".into()),
            amount: 500,
            next_query_at: Some(Timestamp(5)),
        };
        let mut c = Circumstances {
            late_payment: LatePaymentPolicy::Refund,
            creates_order_at_prepay: true,
            reschedule: None,
            other_active_attempt: false,
        };
        let Plan::Apply { order, attempt, .. } = decide(o, a, &Observed::Closed, c) else {
            panic!()
        };
        assert_eq!(order, Some(OrderChange::Status(OrderStatus::Unpaid)));
        assert_eq!(
            attempt.next_query_at,
            Some(Timestamp(5)),
            "a closed attempt keeps being watched"
        );
        c.other_active_attempt = true;
        let Plan::Apply { order, .. } = decide(o, a, &Observed::Closed, c) else {
            panic!()
        };
        assert_eq!(order, None);
    }
}
