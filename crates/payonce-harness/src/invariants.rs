//! The invariant checker (DESIGN.md I1–I4, I7, I9), shared by tests, `demo`, `bench` and `chaos`.
//! It compares what payonce stored with what the channels hold (the simulator's ledger, read
//! into typed structs so that a renamed field fails the check rather than passing it).

use payonce_core::AttemptStatus;
use payonce_store::Inspect;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;

/// The simulator's ledger (`GET /sim/ledger`) as the checker reads it: typed, and strict — a
/// field renamed or added on either side makes the check fail loudly instead of reading zeros.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ledger {
    pub orders: Vec<LedgerOrder>,
    pub charges: Vec<LedgerMoney>,
    pub refunds: Vec<LedgerRefund>,
    pub prepay_requests: u64,
    pub refund_requests: u64,
}

/// One channel order and what happened to it at the channel.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerOrder {
    pub channel: String,
    /// The merchant (account name) the channel order was made at: for a sub-merchant's order,
    /// its service provider …
    pub merchant: String,
    /// … and the sub-merchant itself (WeChat's partner APIs).
    #[serde(default)]
    pub sub_merchant: Option<String>,
    pub out_trade_no: String,
    pub state: String,
    pub amount: i64,
    pub subject: String,
    /// How many times the payer was charged for it.
    pub charges: i64,
    pub refunded: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerMoney {
    pub channel: String,
    pub merchant: String,
    #[serde(default)]
    pub sub_merchant: Option<String>,
    pub out_trade_no: String,
    pub amount: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerRefund {
    pub channel: String,
    pub merchant: String,
    #[serde(default)]
    pub sub_merchant: Option<String>,
    pub out_trade_no: String,
    pub out_refund_no: String,
    pub amount: i64,
}

/// The simulator's ledger is not the shape this checker knows (a renamed or missing field).
#[derive(Debug, thiserror::Error)]
#[error("the simulator's ledger does not read as expected: {0}")]
pub struct LedgerError(#[from] serde_json::Error);

impl Ledger {
    pub fn parse(v: &Value) -> Result<Ledger, LedgerError> {
        Ok(Ledger::deserialize(v)?)
    }
}

/// Returns one line per violation; empty means every invariant held.
pub async fn check(store: &dyn Inspect, ledger: &Value) -> Vec<String> {
    let ledger = match Ledger::parse(ledger) {
        Ok(l) => l,
        Err(e) => return vec![e.to_string()],
    };
    let mut v = Vec::new();
    let orders = match store.all_orders().await {
        Ok(o) => o,
        Err(e) => return vec![format!("cannot read orders: {e}")],
    };
    let attempts = match store.all_attempts().await {
        Ok(a) => a,
        Err(e) => return vec![format!("cannot read attempts: {e}")],
    };
    let by_no: HashMap<(String, String), &payonce_core::Attempt> = attempts
        .iter()
        .map(|a| {
            (
                (a.channel.as_str().to_owned(), a.out_trade_no.to_string()),
                a,
            )
        })
        .collect();
    let mut charges_per_order: HashMap<String, i64> = HashMap::new();
    let mut refunds_per_no: HashMap<(String, String), i64> = HashMap::new();
    for r in &ledger.refunds {
        *refunds_per_no
            .entry((r.channel.clone(), r.out_trade_no.clone()))
            .or_default() += r.amount;
    }

    for co in &ledger.orders {
        let (channel, no, charges) = (co.channel.clone(), co.out_trade_no.clone(), co.charges);
        let Some(a) = by_no.get(&(channel.clone(), no.clone())) else {
            v.push(format!(
                "channel order {channel}/{no} is unknown to payonce"
            ));
            continue;
        };
        // I9: a channel order lives at the merchant whose account the attempt names: every
        // query, close and refund about it went to that merchant, never another. A
        // sub-merchant's order is at the sub-merchant, whichever provider signed for it.
        let at = co.sub_merchant.as_deref().unwrap_or(&co.merchant);
        if at != a.account {
            v.push(format!(
                "I9: channel order {channel}/{no} is at merchant {at} but its attempt names account {}",
                a.account
            ));
        }
        if co.amount != a.amount.minor {
            v.push(format!(
                "channel order {channel}/{no} amount {} differs from attempt {}",
                co.amount, a.amount.minor
            ));
        }
        if charges > 0 {
            // I2: a charge is reflected locally: the attempt succeeded, and it paid the order or
            // is a recorded duplicate.
            if a.status != AttemptStatus::Succeeded {
                v.push(format!(
                    "I2: {channel}/{no} was charged but its attempt is {}",
                    a.status.as_str()
                ));
            }
            let order = orders.iter().find(|o| o.id == a.order_id);
            let paid_by_it = order.is_some_and(|o| o.paid_attempt_id.as_ref() == Some(&a.id));
            if !paid_by_it && !a.is_duplicate {
                v.push(format!("I2: {channel}/{no} was charged but neither paid its order nor is a recorded duplicate"));
            }
            let refunded = refunds_per_no
                .get(&(channel.clone(), no.clone()))
                .copied()
                .unwrap_or(0);
            let net = charges * a.amount.minor - if a.is_duplicate { refunded } else { 0 };
            *charges_per_order.entry(a.order_id.to_string()).or_default() += net;
        }
    }

    for o in &orders {
        let mine: Vec<_> = attempts.iter().filter(|a| a.order_id == o.id).collect();
        // I1: net of duplicate refunds, at most one charge of the order amount.
        let net = charges_per_order.get(o.id.as_str()).copied().unwrap_or(0);
        if net > o.amount.minor {
            v.push(format!(
                "I1: order {} charged {net} net, amount {}",
                o.id, o.amount.minor
            ));
        }
        // One active attempt at most (the partial unique index).
        let active = mine.iter().filter(|a| a.status.is_active()).count();
        if active > 1 {
            v.push(format!("order {} has {active} active attempts", o.id));
        }
        // I4: a paid order's payment exists at the channel; refunds never exceed the amount.
        if o.status.has_been_paid() {
            match mine
                .iter()
                .find(|a| Some(&a.id) == o.paid_attempt_id.as_ref())
            {
                Some(a) if a.status == AttemptStatus::Succeeded => {
                    let charged = ledger.orders.iter().any(|co| {
                        co.channel == a.channel.as_str()
                            && a.out_trade_no == co.out_trade_no
                            && co.charges > 0
                    });
                    if !charged {
                        v.push(format!(
                            "I4: order {} is paid but the channel holds no charge for it",
                            o.id
                        ));
                    }
                }
                _ => v.push(format!(
                    "I4: order {} is {} without a succeeded paying attempt",
                    o.id,
                    o.status.as_str()
                )),
            }
        }
        if o.refunded_amount > o.amount.minor {
            v.push(format!(
                "I4: order {} refunded {} of {}",
                o.id, o.refunded_amount, o.amount.minor
            ));
        }
        // I4 at the channel: refunds of the order's own payment never exceed what was paid.
        let channel_refunded: i64 = mine
            .iter()
            .filter(|a| !a.is_duplicate)
            .map(|a| {
                refunds_per_no
                    .get(&(a.channel.as_str().to_owned(), a.out_trade_no.to_string()))
                    .copied()
                    .unwrap_or(0)
            })
            .sum();
        if channel_refunded > o.amount.minor {
            v.push(format!(
                "I4: order {} refunded {channel_refunded} at the channel, paid {}",
                o.id, o.amount.minor
            ));
        }
        if o.status == payonce_core::OrderStatus::Refunded && o.refunded_amount != o.amount.minor {
            v.push(format!(
                "I4: order {} is refunded but {} of {} came back",
                o.id, o.refunded_amount, o.amount.minor
            ));
        }
        // I3: every fact the business must hear of has exactly one event.
        let events = store.events_of(&o.id).await.unwrap_or_default();
        let count = |t: &str| events.iter().filter(|e| e.event_type == t).count();
        let expected_paid = usize::from(o.status.has_been_paid());
        if count("payment.succeeded") != expected_paid {
            v.push(format!(
                "I3: order {} has {} payment.succeeded events, expected {expected_paid}",
                o.id,
                count("payment.succeeded")
            ));
        }
        let dups = mine.iter().filter(|a| a.is_duplicate).count();
        if count("payment.duplicate_detected") != dups {
            v.push(format!(
                "I3: order {} has {dups} duplicates but {} duplicate events",
                o.id,
                count("payment.duplicate_detected")
            ));
        }
    }
    v.extend(unrefunded_duplicates(store, &attempts).await);
    v.extend(coupons(store, &orders).await);
    v
}

/// What a violation line says when no amount of waiting can repair it (see [`is_final`]).
const FINAL: &str = "nothing will give it back";

/// A violation that stays whatever the workers do next: waiting longer for the system to
/// settle cannot change the verdict, so a judge may stop waiting at once.
pub fn is_final(violation: &str) -> bool {
    violation.ends_with(FINAL)
}

/// I1 at the moment a duplicate is recorded: its refund is written in the same transaction
/// (`decide`'s plan carries it), so a recorded duplicate without a refund of its own is never a
/// state on the way to settling — it is the money kept for good.
async fn unrefunded_duplicates(
    store: &dyn Inspect,
    attempts: &[payonce_core::Attempt],
) -> Vec<String> {
    let refunds = match store.all_refunds().await {
        Ok(r) => r,
        Err(e) => return vec![format!("cannot read refunds: {e}")],
    };
    attempts
        .iter()
        .filter(|a| a.is_duplicate)
        .filter(|a| {
            !refunds
                .iter()
                .any(|r| r.attempt_id == a.id && r.kind == payonce_core::RefundKind::Duplicate)
        })
        .map(|a| {
            format!(
                "I1: duplicate payment {}/{} of order {} is recorded without its refund: {FINAL}",
                a.channel.as_str(),
                a.out_trade_no,
                a.order_id
            )
        })
        .collect()
}

/// I7 (liveness): nothing waits on something that will never come. Given the time `now` and a
/// stated `grace` (how late a worker may be, beyond each item's own due time):
/// - every order is terminal, or still inside its expiry plus the grace;
/// - every active attempt (`created` / `pending` / `unknown`) has a next check scheduled and is
///   not overdue by more than the grace — unless it sits in the abnormal queue for a person;
/// - every refund `pending` / `unknown` likewise;
/// - every event is delivered, `failed` or skipped, or its next attempt is not overdue.
///
/// An item a worker holds under a lease is due when the lease ends, if that is later: a worker
/// that lost its database (or its life) mid-delivery keeps its event until then, by design.
///
/// Returns one line per item stuck.
pub async fn liveness(
    store: &dyn Inspect,
    now: payonce_core::Timestamp,
    grace_ms: i64,
) -> Vec<String> {
    let mut v = Vec::new();
    let (orders, attempts, refunds, abnormal, events, leases) = match (
        store.all_orders().await,
        store.all_attempts().await,
        store.all_refunds().await,
        store.abnormal_open().await,
        store
            .list_events(Some(payonce_store::DeliveryStatus::Pending), 1_000_000)
            .await,
        store.live_leases(now).await,
    ) {
        (Ok(o), Ok(a), Ok(r), Ok(ab), Ok(e), Ok(l)) => (
            o,
            a,
            r,
            ab,
            e,
            l.into_iter()
                .collect::<std::collections::HashMap<String, i64>>(),
        ),
        _ => return vec!["I7: cannot read the store".into()],
    };
    let flagged: std::collections::HashSet<&str> =
        abnormal.iter().map(|a| a.reference.as_str()).collect();
    // Held under a lease: due no earlier than the lease's end.
    let leased = |id: &str, due: Option<payonce_core::Timestamp>| match leases.get(id) {
        Some(&until) => Some(payonce_core::Timestamp(
            due.map_or(until, |t| t.0.max(until)),
        )),
        None => due,
    };
    let late = |due: Option<payonce_core::Timestamp>| due.is_none_or(|t| t.0 + grace_ms < now.0);
    for o in &orders {
        let due = leased(o.id.as_str(), Some(o.expires_at)).unwrap_or(o.expires_at);
        if o.status.is_open() && due.0 + grace_ms < now.0 {
            v.push(format!(
                "I7: order {} still {} {} s after its expiry",
                o.id,
                o.status.as_str(),
                (now.0 - o.expires_at.0) / 1000
            ));
        }
    }
    for a in attempts.iter().filter(|a| a.status.is_active()) {
        if late(leased(a.id.as_str(), a.next_query_at)) && !flagged.contains(a.id.as_str()) {
            let due = a
                .next_query_at
                .map(|t| format!("due {} s ago", (now.0 - t.0) / 1000))
                .unwrap_or_else(|| "never scheduled".into());
            v.push(format!(
                "I7: attempt {} ({}) is {} and its check is {due}, with no abnormal item",
                a.id,
                a.channel,
                a.status.as_str()
            ));
        }
    }
    for r in &refunds {
        use payonce_core::RefundStatus;
        if matches!(r.status, RefundStatus::Pending | RefundStatus::Unknown)
            && late(leased(r.id.as_str(), r.next_query_at))
            && !flagged.contains(r.id.as_str())
        {
            v.push(format!(
                "I7: refund {} is {} and overdue, with no abnormal item",
                r.id,
                r.status.as_str()
            ));
        }
    }
    for e in &events {
        if late(leased(&e.id, e.next_attempt_at)) {
            v.push(format!(
                "I7: event {} ({}) is still pending and overdue",
                e.id, e.event_type
            ));
        }
    }
    v
}

/// Coupons: each coupon's counters equal its uses (reserved and redeemed), never past
/// `max_redemptions` except a use marked over the limit; no paid order keeps a reserved (not
/// redeemed) coupon; no order holds two uses of one coupon (the key forbids it; checked anyway).
async fn coupons(store: &dyn Inspect, orders: &[payonce_core::Order]) -> Vec<String> {
    let (coupons, uses) = match (store.all_coupons().await, store.all_coupon_uses().await) {
        (Ok(c), Ok(u)) => (c, u),
        _ => return vec!["coupons: cannot read the store".into()],
    };
    let mut v = Vec::new();
    let status_of: HashMap<&str, payonce_core::OrderStatus> =
        orders.iter().map(|o| (o.id.as_str(), o.status)).collect();
    let mut seen = std::collections::HashSet::new();
    for u in &uses {
        if !seen.insert((u.coupon_id.as_str(), u.order_id.as_str())) {
            v.push(format!(
                "coupon {} used twice by order {}",
                u.coupon_id, u.order_id
            ));
        }
        if u.status == "reserved"
            && status_of
                .get(u.order_id.as_str())
                .is_some_and(|s| s.has_been_paid())
        {
            v.push(format!(
                "order {} is paid but its coupon {} is still only reserved",
                u.order_id, u.coupon_id
            ));
        }
    }
    for c in &coupons {
        let count = |s: &str| {
            uses.iter()
                .filter(|u| u.coupon_id == c.id && u.status == s)
                .count() as i64
        };
        let over = uses
            .iter()
            .filter(|u| u.coupon_id == c.id && u.over_limit != 0)
            .count() as i64;
        if (c.reserved, c.redeemed) != (count("reserved"), count("redeemed")) {
            v.push(format!(
                "coupon {}: counters reserved {} redeemed {}, uses reserved {} redeemed {}",
                c.code,
                c.reserved,
                c.redeemed,
                count("reserved"),
                count("redeemed")
            ));
        }
        if c.reserved + c.redeemed > c.max_redemptions + over {
            v.push(format!(
                "coupon {}: {} held of {} allowed",
                c.code,
                c.reserved + c.redeemed,
                c.max_redemptions
            ));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::Ledger;
    use serde_json::json;

    fn ledger() -> serde_json::Value {
        json!({
            "orders": [{"channel": "wechatpay", "merchant": "default", "out_trade_no": "A1", "state": "SUCCESS", "amount": 500, "subject": "tea", "charges": 1, "refunded": 0}],
            "charges": [{"channel": "wechatpay", "merchant": "default", "out_trade_no": "A1", "amount": 500}],
            "refunds": [],
            "prepay_requests": 1,
            "refund_requests": 0,
        })
    }

    #[test]
    fn a_renamed_or_missing_ledger_field_fails_the_check() {
        assert!(Ledger::parse(&ledger()).is_ok());
        let mut renamed = ledger();
        let o = renamed["orders"][0].as_object_mut().unwrap();
        let charges = o.remove("charges").unwrap();
        o.insert("charge_count".into(), charges);
        assert!(
            Ledger::parse(&renamed).is_err(),
            "a renamed field must not read as zero charges"
        );
        let mut missing = ledger();
        missing.as_object_mut().unwrap().remove("refunds");
        assert!(Ledger::parse(&missing).is_err());
    }
}
