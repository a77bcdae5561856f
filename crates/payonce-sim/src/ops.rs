//! Gateway operations every simulated channel shares, in channel-neutral terms. Each protocol
//! module only translates its wire format to these and back.

use crate::{Sim, SimOrder, SimStatus};
use payonce_core::ChannelName;
use std::sync::Arc;

pub struct NewOrder {
    pub channel: ChannelName,
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
        return match o.status {
            SimStatus::Paid => Err(CreateError::Paid),
            // A repeat with identical parameters re-issues the credential (WeChat: a new
            // code_url / prepay_id; Alipay: a new QR), valid from now.
            SimStatus::Unpaid | SimStatus::Unscanned if o.fingerprint == n.fingerprint && o.time_expire > now => {
                o.credential = n.credential;
                o.credential_valid_until = n.credential_valid_until.unwrap_or(n.time_expire);
                Ok(o.clone())
            }
            _ => Err(CreateError::Used),
        };
    }
    let o = SimOrder {
        channel: n.channel,
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

pub fn find(sim: &Sim, channel: ChannelName, out_trade_no: &str) -> Option<SimOrder> {
    let mut ledger = sim.ledger.lock().unwrap();
    ledger.orders.get_mut(&(channel, out_trade_no.to_owned())).map(|o| {
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
pub fn close(sim: &Arc<Sim>, channel: ChannelName, out_trade_no: &str) -> Result<(), CloseError> {
    if sim.faults.lock().unwrap().pay_before_close {
        // The payer's payment was in flight and lands a moment before the close — even at the
        // instant of expiry — so it is forced through if the order was still unpaid.
        let payable = find(sim, channel, out_trade_no).is_some_and(|o| matches!(o.status, SimStatus::Unpaid | SimStatus::Unscanned) || o.time_expire <= sim.now_ms() && o.charges == 0 && o.status != SimStatus::Paid);
        if payable {
            let _ = crate::control::pay(sim, channel, out_trade_no, true);
        }
    }
    let mut ledger = sim.ledger.lock().unwrap();
    let o = ledger.orders.get_mut(&(channel, out_trade_no.to_owned())).ok_or(CloseError::NotExist)?;
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
