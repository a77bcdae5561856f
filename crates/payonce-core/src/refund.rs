//! The refund state machine: pending → succeeded | failed | unknown (settled by query).

use crate::{
    AppId, AttemptId, ChannelName, Money, OrderId, OutTradeNo, RefundId, RefundNo, Timestamp,
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

    /// Amounts of refunds in these states are reserved against what was paid, so concurrent
    /// refunds can never together exceed it.
    pub fn reserves_amount(&self) -> bool {
        !matches!(self, RefundStatus::Failed)
    }
}
