//! Gateway operations every simulated channel shares, in channel-neutral terms. Each protocol
//! module only translates its wire format to these and back.

use crate::{Sim, SimOrder, SimStatus};
use payonce_core::ChannelName;
use std::sync::Arc;

pub struct NewOrder {
    pub channel: ChannelName,
    /// The merchant making it (index into the simulator's merchants of the channel).
    pub merchant: usize,
    pub out_trade_no: String,
    pub amount: i64,
    pub subject: String,
    pub notify_url: String,
    pub time_expire: i64,
    /// Until when the credential can be used for a first scan (defaults to `time_expire`).
    pub credential_valid_until: Option<i64>,
    pub credential: String,
    /// What identifies the request's parameters: a repeat with other parameters is refused.
    pub fingerprint: String,
    pub initial: SimStatus,
}

#[derive(Debug, PartialEq, Eq)]
pub enum CreateError {
    Paid,
    /// The number is taken by an order with other content, or a closed one.
    Used,
}

/// Creates a channel order. The same number with the same amount returns the existing one
/// (the channels' own idempotency); anything else is refused.
pub fn create(sim: &Sim, n: NewOrder) -> Result<SimOrder, CreateError> {
    let mut ledger = sim.ledger.lock().unwrap();
    ledger.prepay_requests += 1;
    let key = (n.channel, n.out_trade_no.clone());
    let now = sim.now_ms();
    if let Some(o) = ledger.orders.get_mut(&key) {
        if o.merchant != n.merchant {
            return Err(CreateError::Used);
        }
        return match o.status {
            SimStatus::Paid => Err(CreateError::Paid),
            // A repeat with identical parameters re-issues the credential (WeChat: a new
            // code_url / prepay_id; Alipay: a new QR), valid from now.
            SimStatus::Unpaid | SimStatus::Unscanned
                if o.fingerprint == n.fingerprint && o.time_expire > now =>
            {
                o.credential = n.credential;
                o.credential_valid_until = n.credential_valid_until.unwrap_or(n.time_expire);
                Ok(o.clone())
            }
            _ => Err(CreateError::Used),
        };
    }
    let o = SimOrder {
        channel: n.channel,
        merchant: n.merchant,
        merchant_name: sim.merchant_name(n.channel, n.merchant),
        out_trade_no: n.out_trade_no,
        status: n.initial,
        closed_before_scan: false,
        amount: n.amount,
        subject: n.subject,
        charges: 0,
        refunded: 0,
        notify_url: n.notify_url,
        credential: n.credential,
        time_expire: n.time_expire,
        credential_valid_until: n.credential_valid_until.unwrap_or(n.time_expire),
        fingerprint: n.fingerprint,
        trade_no: None,
        paid_at: None,
        created_at: now,
    };
    ledger.orders.insert(key, o.clone());
    Ok(o)
}

/// A channel order as `merchant` may see it: another merchant's order does not exist for it.
pub fn find_for(
    sim: &Sim,
    channel: ChannelName,
    merchant: usize,
    out_trade_no: &str,
) -> Option<SimOrder> {
    find(sim, channel, out_trade_no).filter(|o| o.merchant == merchant)
}

pub fn find(sim: &Sim, channel: ChannelName, out_trade_no: &str) -> Option<SimOrder> {
    let mut ledger = sim.ledger.lock().unwrap();
    ledger
        .orders
        .get_mut(&(channel, out_trade_no.to_owned()))
        .map(|o| {
            o.expire_if_due(sim.now_ms());
            o.clone()
        })
}

#[derive(Debug, PartialEq, Eq)]
pub enum CloseError {
    NotExist,
    Paid,
}

/// Closes a channel order, honouring `pay_before_close` (the payment lands first). An Alipay
/// precreate that was never scanned has no trade to close: it answers "not exist" and stays
/// payable.
pub fn close(
    sim: &Arc<Sim>,
    channel: ChannelName,
    merchant: usize,
    out_trade_no: &str,
) -> Result<(), CloseError> {
    if find(sim, channel, out_trade_no).is_some_and(|o| o.merchant != merchant) {
        return Err(CloseError::NotExist);
    }
    if sim.faults.lock().unwrap().pay_before_close {
        // The payer's payment was in flight and lands a moment before the close — even at the
        // instant of expiry — so it is forced through if the order was still unpaid.
        let payable = find(sim, channel, out_trade_no).is_some_and(|o| {
            matches!(o.status, SimStatus::Unpaid | SimStatus::Unscanned)
                || o.time_expire <= sim.now_ms() && o.charges == 0 && o.status != SimStatus::Paid
        });
        if payable {
            let _ = pay(sim, channel, out_trade_no, true);
        }
    }
    let mut ledger = sim.ledger.lock().unwrap();
    let o = ledger
        .orders
        .get_mut(&(channel, out_trade_no.to_owned()))
        .ok_or(CloseError::NotExist)?;
    match o.status {
        SimStatus::Paid => Err(CloseError::Paid),
        SimStatus::Unscanned => {
            o.closed_before_scan = true;
            Err(CloseError::NotExist)
        }
        _ => {
            o.status = SimStatus::Closed;
            Ok(())
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum PayError {
    NoSuchOrder,
    AlreadyPaid,
    Closed,
    /// The payer's code is not (or no longer) this order's live credential.
    CredentialExpired,
}

/// The payer pays a channel order: a charge lands in the ledger and a notification is on its
/// way. `force` pays even a closed order (an in-flight payment, an Alipay QR that
/// outlived its close) — the late and duplicate payments payonce must catch. An Alipay QR that
/// was closed before anyone scanned it still pays, without `force`, until its timeout.
pub fn pay(
    sim: &Arc<Sim>,
    channel: ChannelName,
    out_trade_no: &str,
    force: bool,
) -> Result<(), PayError> {
    pay_with(sim, channel, out_trade_no, force, None)
}

/// `pay`, by a payer holding `credential` (when given): only the current, unexpired credential
/// of the channel order pays.
pub fn pay_with(
    sim: &Arc<Sim>,
    channel: ChannelName,
    out_trade_no: &str,
    force: bool,
    credential: Option<&str>,
) -> Result<(), PayError> {
    let now = sim.now_ms();
    let (order, event_id) = {
        let mut ledger = sim.ledger.lock().unwrap();
        let trade_no = ledger.next_trade_no();
        let Some(o) = ledger.orders.get_mut(&(channel, out_trade_no.to_owned())) else {
            return Err(PayError::NoSuchOrder);
        };
        // An unscanned Alipay QR pays until its own validity (which can outlive a close).
        let in_time = o.time_expire > now
            && (o.status != SimStatus::Unscanned || o.credential_valid_until > now);
        if !force
            && credential.is_some_and(|c| c != o.credential || o.credential_valid_until <= now)
        {
            return Err(PayError::CredentialExpired);
        }
        match o.status {
            // No channel takes two payments for one of its orders, forced or not.
            SimStatus::Paid => return Err(PayError::AlreadyPaid),
            SimStatus::Closed if !force => return Err(PayError::Closed),
            SimStatus::Unpaid | SimStatus::Unscanned if !in_time && !force => {
                return Err(PayError::Closed);
            }
            _ => {}
        }
        o.status = SimStatus::Paid;
        o.charges += 1;
        o.trade_no = Some(trade_no.clone());
        o.paid_at = Some(now);
        let order = o.clone();
        let event_id = format!("{}-{}", trade_no, order.charges);
        ledger.charges.push(crate::ledger::Charge {
            channel,
            merchant: order.merchant_name.clone(),
            out_trade_no: out_trade_no.to_owned(),
            amount: order.amount,
            trade_no: trade_no.clone(),
            at: now,
        });
        (order, event_id)
    };
    match channel {
        ChannelName::Sandbox => crate::sandbox::notify(sim.clone(), order, event_id),
        ChannelName::Wechatpay => crate::wechatpay::notify(sim.clone(), order, event_id),
        ChannelName::Alipay => crate::alipay::notify(sim.clone(), order, event_id),
        ChannelName::Unionpay => crate::unionpay::notify(sim.clone(), order, event_id),
    }
    Ok(())
}
