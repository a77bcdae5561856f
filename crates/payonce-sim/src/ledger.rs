//! The simulator's books: every channel order, every charge, every refund. Invariant checks
//! read these through `/sim/ledger`.

use payonce_core::ChannelName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A channel order's life, common to every simulated channel; each channel names the states
/// its own way (`state_name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimStatus {
    /// Alipay precreate not yet scanned: no trade exists at the channel, but the QR pays.
    Unscanned,
    Unpaid,
    Paid,
    Closed,
}

#[derive(Debug, Clone)]
pub struct SimOrder {
    pub channel: ChannelName,
    /// The merchant (index into the simulator's merchants of this channel) that made it: only
    /// that merchant can query, close or refund it.
    pub merchant: usize,
    /// Its account name (`default`, or `m1` … `mN`), as `/sim/ledger` reports it.
    pub merchant_name: String,
    pub out_trade_no: String,
    pub status: SimStatus,
    /// An Alipay close before the first scan changes nothing at the channel: the QR stays
    /// payable until its timeout. Recorded so `/sim/orders` can show it.
    pub closed_before_scan: bool,
    pub amount: i64,
    pub subject: String,
    /// How many times a payer paid this channel order (more than one only through `force`).
    pub charges: u32,
    pub refunded: i64,
    pub notify_url: String,
    pub credential: String,
    /// Unix ms after which it no longer pays.
    pub time_expire: i64,
    /// Until when the payer's credential (an Alipay QR) can still be scanned for the first time.
    pub credential_valid_until: i64,
    /// The parameters of the request that created it: a repeat must match them.
    pub fingerprint: String,
    pub trade_no: Option<String>,
    pub paid_at: Option<i64>,
    pub created_at: i64,
}

impl SimOrder {
    /// The channel's own name for the current state.
    pub fn state_name(&self) -> &'static str {
        match (self.channel, self.status) {
            (ChannelName::Alipay, SimStatus::Unscanned) => "NOT_SCANNED",
            (ChannelName::Alipay, SimStatus::Unpaid) => "WAIT_BUYER_PAY",
            (ChannelName::Alipay, SimStatus::Paid) if self.refunded >= self.amount => {
                "TRADE_CLOSED"
            }
            (ChannelName::Alipay, SimStatus::Paid) => "TRADE_SUCCESS",
            (ChannelName::Alipay, SimStatus::Closed) => "TRADE_CLOSED",
            (ChannelName::Wechatpay, SimStatus::Paid) if self.refunded > 0 => "REFUND",
            (ChannelName::Unionpay, SimStatus::Unscanned | SimStatus::Unpaid) => "SUBMITTED",
            (ChannelName::Unionpay, SimStatus::Paid) => "00",
            (ChannelName::Unionpay, SimStatus::Closed) => "EXPIRED",
            (_, SimStatus::Unscanned | SimStatus::Unpaid) => "NOTPAY",
            (_, SimStatus::Paid) => "SUCCESS",
            (_, SimStatus::Closed) => "CLOSED",
        }
    }

    /// An unpaid order past its expiry is closed by the channel itself.
    pub fn expire_if_due(&mut self, now: i64) {
        if matches!(self.status, SimStatus::Unpaid | SimStatus::Unscanned)
            && self.time_expire <= now
        {
            self.status = SimStatus::Closed;
        }
    }

    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "channel": self.channel,
            "merchant": self.merchant_name,
            "out_trade_no": self.out_trade_no,
            "state": self.state_name(),
            "amount": self.amount,
            "subject": self.subject,
            "charges": self.charges,
            "refunded": self.refunded,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Charge {
    pub channel: ChannelName,
    pub merchant: String,
    pub out_trade_no: String,
    pub amount: i64,
    #[serde(skip)]
    pub trade_no: String,
    #[serde(skip)]
    pub at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refund {
    pub channel: ChannelName,
    pub merchant: String,
    pub out_trade_no: String,
    pub out_refund_no: String,
    pub amount: i64,
    #[serde(skip)]
    pub refund_id: String,
    #[serde(skip)]
    pub at: i64,
    /// UnionPay: the refund transaction's own txnTime (its queries name it).
    #[serde(skip)]
    pub txn_time: String,
    /// When the money is back with the payer: until then the channel says "processing".
    #[serde(skip)]
    pub settle_at: i64,
}

impl Refund {
    pub fn settled(&self, now: i64) -> bool {
        now >= self.settle_at
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum RefundError {
    NoSuchOrder,
    NotPaid,
    /// More than what is left to refund.
    Exceeds,
    /// The same refund number with another amount.
    Conflict,
}

#[derive(Debug, Clone, Default)]
pub struct Ledger {
    pub orders: BTreeMap<(ChannelName, String), SimOrder>,
    pub charges: Vec<Charge>,
    pub refunds: Vec<Refund>,
    /// Prepay requests received, including repeats for the same `out_trade_no`.
    pub prepay_requests: u64,
    /// Refund requests that reached a gateway, repeats included.
    pub refund_requests: u64,
    next_trade_no: u64,
}

impl Ledger {
    pub fn next_trade_no(&mut self) -> String {
        self.next_trade_no += 1;
        format!("42000{:015}", self.next_trade_no)
    }

    /// A refund, idempotent by `(channel, out_refund_no)`: a repeat returns the first one.
    #[allow(clippy::too_many_arguments)]
    pub fn refund(
        &mut self,
        channel: ChannelName,
        merchant: usize,
        out_trade_no: &str,
        out_refund_no: &str,
        amount: i64,
        now: i64,
        settle_at: i64,
    ) -> Result<Refund, RefundError> {
        if let Some(r) = self
            .refunds
            .iter()
            .find(|r| r.channel == channel && r.out_refund_no == out_refund_no)
        {
            return if r.amount == amount && r.out_trade_no == out_trade_no {
                Ok(r.clone())
            } else {
                Err(RefundError::Conflict)
            };
        }
        let id = self.next_trade_no().replacen("42000", "50300", 1);
        let o = self
            .orders
            .get_mut(&(channel, out_trade_no.to_owned()))
            .filter(|o| o.merchant == merchant)
            .ok_or(RefundError::NoSuchOrder)?;
        if o.status != SimStatus::Paid {
            return Err(RefundError::NotPaid);
        }
        // Several charges (forced duplicates) can all be refunded.
        if amount <= 0 || o.refunded + amount > o.amount * o.charges as i64 {
            return Err(RefundError::Exceeds);
        }
        o.refunded += amount;
        let r = Refund {
            channel,
            merchant: o.merchant_name.clone(),
            out_trade_no: out_trade_no.into(),
            out_refund_no: out_refund_no.into(),
            amount,
            refund_id: id,
            at: now,
            txn_time: String::new(),
            settle_at,
        };
        self.refunds.push(r.clone());
        Ok(r)
    }

    /// The ledger as `/sim/ledger` shows it; `names` splits an account name into `merchant`
    /// and, for a sub-merchant, `sub_merchant` (`Sim::ledger_names`).
    pub fn to_json(
        &self,
        names: impl Fn(ChannelName, &str) -> (String, Option<String>),
    ) -> serde_json::Value {
        let named = |channel: ChannelName, mut v: serde_json::Value| {
            let account = v["merchant"].as_str().unwrap_or_default().to_owned();
            let (merchant, sub) = names(channel, &account);
            v["merchant"] = merchant.into();
            if let Some(sub) = sub {
                v["sub_merchant"] = sub.into();
            }
            v
        };
        serde_json::json!({
            "orders": self.orders.values().map(|o| named(o.channel, o.view())).collect::<Vec<_>>(),
            "charges": self.charges.iter().map(|c| named(c.channel, json(c))).collect::<Vec<_>>(),
            "refunds": self.refunds.iter().map(|r| named(r.channel, json(r))).collect::<Vec<_>>(),
            "prepay_requests": self.prepay_requests,
            "refund_requests": self.refund_requests,
        })
    }
}

/// A ledger entry (charge or refund) as JSON.
fn json(entry: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(entry).expect("ledger entries serialise")
}

/// Fault knobs (API.md, `/sim/faults`). Posted JSON merges into the current values.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    pub notify_drop_rate: f64,
    pub notify_duplicates: u32,
    pub notify_delay_ms: [u64; 2],
    pub notify_reorder: bool,
    pub prepay_error_rate: f64,
    /// How long a refund stays "processing" before it succeeds, `[min, max]` ms.
    pub refund_delay_ms: [u64; 2],
    pub prepay_timeout_rate: f64,
    /// How long a prepay takes to answer, ms (a slow channel: duplicates of a prepay arrive
    /// while the first is still at the channel).
    pub prepay_delay_ms: u64,
    pub query_error_rate: f64,
    /// Refund calls answered with a system error (Alipay `ACQ.SYSTEM_ERROR`, WeChat 500
    /// `SYSTEM_ERROR`, UnionPay `03`) — whether or not the refund was made is then unknown.
    pub refund_error_rate: f64,
    /// Refund calls whose answer is lost (the refund IS made; the caller times out).
    pub refund_timeout_rate: f64,
    /// Refund calls lost on the way in (nothing is made; the caller times out).
    pub refund_drop_rate: f64,
    pub close_error_rate: f64,
    pub pay_before_close: bool,
    pub time_scale: f64,
    /// How long WeChat's `GET /v3/certificates` takes to answer, ms: a slow download, while
    /// answers signed by a new certificate keep arriving.
    pub certificates_delay_ms: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            notify_drop_rate: 0.0,
            notify_duplicates: 0,
            notify_delay_ms: [0, 0],
            notify_reorder: false,
            prepay_error_rate: 0.0,
            refund_delay_ms: [50, 300],
            prepay_timeout_rate: 0.0,
            prepay_delay_ms: 0,
            query_error_rate: 0.0,
            refund_error_rate: 0.0,
            refund_timeout_rate: 0.0,
            refund_drop_rate: 0.0,
            close_error_rate: 0.0,
            pay_before_close: false,
            time_scale: 1.0,
            certificates_delay_ms: 0,
        }
    }
}
