//! The refund state machine: pending → succeeded | failed | unknown (settled by query).

use serde::{Deserialize, Serialize};

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

    /// Amounts of refunds in these states are reserved against what was paid, so concurrent
    /// refunds can never together exceed it.
    pub fn reserves_amount(&self) -> bool {
        !matches!(self, RefundStatus::Failed)
    }
}
