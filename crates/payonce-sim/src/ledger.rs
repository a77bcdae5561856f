//! The simulator's books: every channel order, every charge, every refund. Invariant checks
//! read these through `/sim/ledger`.

use payonce_core::ChannelName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimOrder {
    pub channel: ChannelName,
    pub out_trade_no: String,
    /// The channel's own trade state (`NOTPAY`, `SUCCESS`, `CLOSED`).
    pub state: String,
    pub amount: i64,
    /// How many times a payer paid this channel order (more than one only through `force`).
    pub charges: u32,
    pub refunded: i64,
    #[serde(skip)]
    pub notify_url: String,
    #[serde(skip)]
    pub code_url: String,
    #[serde(skip)]
    pub time_expire: i64,
    #[serde(skip)]
    pub trade_no: Option<String>,
    #[serde(skip)]
    pub paid_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Charge {
    pub channel: ChannelName,
    pub out_trade_no: String,
    pub amount: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refund {
    pub channel: ChannelName,
    pub out_trade_no: String,
    pub out_refund_no: String,
    pub amount: i64,
}

#[derive(Debug, Clone, Default)]
pub struct Ledger {
    pub orders: BTreeMap<(ChannelName, String), SimOrder>,
    pub charges: Vec<Charge>,
    pub refunds: Vec<Refund>,
    /// Prepay requests received, including repeats for the same `out_trade_no`.
    pub prepay_requests: u64,
    next_trade_no: u64,
}

impl Ledger {
    pub fn next_trade_no(&mut self) -> String {
        self.next_trade_no += 1;
        format!("42000{:015}", self.next_trade_no)
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "orders": self.orders.values().collect::<Vec<_>>(),
            "charges": self.charges,
            "refunds": self.refunds,
            "prepay_requests": self.prepay_requests,
        })
    }
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
    pub prepay_timeout_rate: f64,
    pub query_error_rate: f64,
    pub close_error_rate: f64,
    pub pay_before_close: bool,
    pub time_scale: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            notify_drop_rate: 0.0,
            notify_duplicates: 0,
            notify_delay_ms: [0, 0],
            notify_reorder: false,
            prepay_error_rate: 0.0,
            prepay_timeout_rate: 0.0,
            query_error_rate: 0.0,
            close_error_rate: 0.0,
            pay_before_close: false,
            time_scale: 1.0,
        }
    }
}
