//! Property tests over the state machines: whatever sequence of events arrives, in whatever
//! order, an order never leaves `paid` backwards and never has two active attempts.
//!
//! The driver applies events exactly as the stores do: it asks the core transition functions
//! and refuses a new attempt while one is active (the database's partial unique index).

use payonce_core::order::{ClosedBy, LatePaymentPolicy, SuccessDisposition, success_disposition};
use payonce_core::{AttemptEvent, AttemptStatus, OrderEvent, OrderStatus};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Step {
    StartAttempt,
    Attempt(usize, AttemptEvent),
    Close(ClosedBy),
    Refund(i64),
}

fn attempt_event() -> impl Strategy<Value = AttemptEvent> {
    prop_oneof![
        Just(AttemptEvent::Accepted),
        Just(AttemptEvent::Refused),
        Just(AttemptEvent::Ambiguous),
        Just(AttemptEvent::ReportedUnpaid),
        Just(AttemptEvent::ReportedPaid),
        Just(AttemptEvent::ReportedClosed),
        Just(AttemptEvent::ReportedAbsent),
        Just(AttemptEvent::CredentialRefreshed),
        Just(AttemptEvent::RefreshFailed),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => Just(Step::StartAttempt),
        6 => (0usize..4, attempt_event()).prop_map(|(i, e)| Step::Attempt(i, e)),
        1 => prop_oneof![Just(ClosedBy::Business), Just(ClosedBy::Expiry)].prop_map(Step::Close),
        1 => (1i64..150).prop_map(Step::Refund),
    ]
}

struct Model {
    status: OrderStatus,
    closed_by: Option<ClosedBy>,
    attempts: Vec<AttemptStatus>,
    paid_by: Option<usize>,
    duplicates: usize,
    refunded: i64,
    amount: i64,
}

impl Model {
    fn new() -> Self {
        Model {
            status: OrderStatus::Unpaid,
            closed_by: None,
            attempts: vec![],
            paid_by: None,
            duplicates: 0,
            refunded: 0,
            amount: 100,
        }
    }

    fn active(&self) -> usize {
        self.attempts.iter().filter(|a| a.is_active()).count()
    }

    fn apply(&mut self, s: &Step, policy: LatePaymentPolicy) {
        match s {
            Step::StartAttempt => {
                if self.status.is_open() && self.active() == 0 {
                    self.status = self.status.next(OrderEvent::AttemptStarted).unwrap();
                    self.attempts.push(AttemptStatus::Created);
                }
            }
            Step::Attempt(i, e) => {
                let Some(&cur) = self.attempts.get(*i) else {
                    return;
                };
                let Ok(next) = cur.next(*e) else { return };
                if next == cur {
                    return;
                }
                self.attempts[*i] = next;
                if next == AttemptStatus::Succeeded {
                    match success_disposition(self.status, self.closed_by, policy) {
                        SuccessDisposition::MarkPaid => {
                            let ev = OrderEvent::AttemptSucceeded {
                                closed_by: self.closed_by,
                                policy,
                            };
                            self.status = self.status.next(ev).unwrap();
                            self.paid_by = Some(*i);
                        }
                        SuccessDisposition::Duplicate => self.duplicates += 1,
                    }
                } else if !next.is_active()
                    && self.status == OrderStatus::Paying
                    && self.active() == 0
                {
                    self.status = self.status.next(OrderEvent::AttemptsEnded).unwrap();
                }
            }
            Step::Close(by) => {
                if self.status.is_open() && self.active() == 0 {
                    self.status = self.status.next(OrderEvent::Closed).unwrap();
                    self.closed_by = Some(*by);
                }
            }
            Step::Refund(a) => {
                if self.status.has_been_paid() && self.refunded + a <= self.amount {
                    let next = self.status.next(OrderEvent::Refunded {
                        refunded_total: self.refunded + a,
                        amount: self.amount,
                    });
                    self.status = next.unwrap();
                    self.refunded += a;
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn paid_is_never_left_backwards_and_one_attempt_is_active(
        steps in prop::collection::vec(step(), 1..60),
        accept_late in any::<bool>(),
    ) {
        let policy = if accept_late { LatePaymentPolicy::Accept } else { LatePaymentPolicy::Refund };
        let mut m = Model::new();
        let mut was_paid = false;
        for s in &steps {
            m.apply(s, policy);
            prop_assert!(m.active() <= 1, "two active attempts after {:?}", s);
            if was_paid {
                prop_assert!(m.status.has_been_paid(), "left paid for {:?} on {:?}", m.status, s);
            }
            was_paid |= m.status.has_been_paid();
            prop_assert!(m.refunded <= m.amount);
            // Every success is accounted for: it paid the order, or it is a duplicate to refund.
            let successes = m.attempts.iter().filter(|a| **a == AttemptStatus::Succeeded).count();
            prop_assert_eq!(successes, usize::from(m.paid_by.is_some()) + m.duplicates);
        }
    }

    #[test]
    fn succeeded_attempts_stay_succeeded(events in prop::collection::vec(attempt_event(), 1..30)) {
        let mut s = AttemptStatus::Created;
        let mut succeeded = false;
        for e in events {
            if let Ok(n) = s.next(e) { s = n; }
            if succeeded { prop_assert_eq!(s, AttemptStatus::Succeeded); }
            succeeded |= s == AttemptStatus::Succeeded;
        }
    }
}
