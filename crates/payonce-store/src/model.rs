//! Results the stores exchange with the server. The domain's entities live in `payonce-core`
//! and are re-exported here for callers that have not moved yet.

use payonce_core::order::LatePaymentPolicy;
use payonce_core::{AppId, ChannelName, Timestamp};
pub use payonce_core::{Attempt, Coupon, Order, OrderCoupon, Refund, RefundKind, RefundResult};

#[derive(Debug, Clone)]
pub struct App {
    pub id: AppId,
    pub name: String,
    pub secret_hash: String,
    pub webhook_url: Option<String>,
    pub webhook_secret_enc: String,
    /// The previous secret during a rotation: webhooks carry both signatures.
    pub webhook_secret_prev_enc: Option<String>,
    pub webhook_disabled: bool,
    /// Extra hosts an order's `notify_url` may name (comma-separated).
    pub allowed_hosts: Option<String>,
    pub sink: Sink,
    /// How long an order created by content (no merchant_order_no, a `payer_ref`) answers the
    /// same content again instead of a new order. 0: never.
    pub submission_window_secs: i64,
    /// The account the app's payments go through, per channel; a channel missing here uses its
    /// only account or the one marked default.
    pub channel_accounts: std::collections::BTreeMap<payonce_core::ChannelName, String>,
    pub created_at: Timestamp,
}

#[derive(Debug)]
pub enum CreateRefund {
    Created(Refund),
    /// Same merchant_refund_no, same content.
    Existing(Refund),
    Conflict(Refund),
    NotPaid(Order),
    /// What is still refundable (amounts of pending, unknown and succeeded refunds reserved).
    Exceeds {
        refundable: i64,
    },
    NoSuchOrder,
}

#[derive(Debug)]
// One value per applied fact, returned and matched at once, never stored in bulk: boxing the
// large variant would only add an allocation to every call.
#[allow(clippy::large_enum_variant)]
pub enum RefundNoticeApplied {
    Replay,
    UnknownRefund,
    /// The notice came from another channel account than the refund's payment: nothing changed.
    AccountMismatch {
        refund_id: String,
        account: String,
    },
    Applied(Refund),
}

#[derive(Debug, Clone)]
pub struct EventRow {
    pub id: String,
    pub app_id: String,
    pub order_id: Option<String>,
    pub event_type: String,
    pub payload: String,
    pub created_at: Timestamp,
    pub delivery_status: DeliveryStatus,
    pub delivery_count: i64,
    pub next_attempt_at: Option<Timestamp>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub delivered_at: Option<Timestamp>,
}

/// Where an outbox event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Waiting for its (next) delivery attempt.
    Pending,
    /// The receiver (or broker) confirmed it.
    Delivered,
    /// The retry schedule ran out, or the endpoint is gone: resendable from the console.
    Failed,
    /// Nowhere to deliver (no webhook URL): kept for the console, never sent.
    Skipped,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 4] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Delivered,
        DeliveryStatus::Failed,
        DeliveryStatus::Skipped,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

/// Where an app's events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sink {
    /// Signed HTTP POSTs to the app's webhook URL (or the order's `notify_url`).
    #[default]
    Webhook,
    /// A RabbitMQ exchange (feature `rabbitmq`).
    Rabbitmq,
    /// A NATS JetStream stream (feature `nats`).
    Nats,
}

impl Sink {
    pub const ALL: [Sink; 3] = [Sink::Webhook, Sink::Rabbitmq, Sink::Nats];

    pub fn as_str(&self) -> &'static str {
        match self {
            Sink::Webhook => "webhook",
            Sink::Rabbitmq => "rabbitmq",
            Sink::Nats => "nats",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone)]
pub struct DeliveryAttempt {
    pub event_id: String,
    pub destination: String,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
    pub attempted_at: Timestamp,
}

/// What a delivery attempt settles.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryOutcome {
    Delivered,
    Retry {
        next_attempt_at: Timestamp,
    },
    /// The schedule is exhausted (or the endpoint is gone): resendable from the console.
    Failed,
    /// Nowhere to deliver (no webhook URL): kept for the console, never sent.
    Skipped,
}

#[derive(Debug, Clone)]
pub struct AbnormalRow {
    pub id: String,
    pub kind: String,
    pub reference: String,
    pub detail: String,
    pub created_at: Timestamp,
    /// The order the item is about, when it is about one.
    pub order_id: Option<String>,
}

pub enum CreateOrder {
    Created(Order),
    /// Same `merchant_order_no`, same content: the existing order.
    Existing(Order),
    /// Same `merchant_order_no`, different content.
    Conflict(Order),
    /// The coupon could not be reserved (`exhausted` or `payer_limit`): nothing was written.
    CouponUnavailable(&'static str),
}

#[derive(Debug)]
pub enum BeginAttempt {
    Started(Attempt),
    /// Another attempt is active (perhaps created a microsecond ago by a racing request).
    ActiveExists(Attempt),
    /// The order is paid, closed or expired: no new channel order may be made.
    OrderNotOpen(Order),
    NoSuchOrder,
}

#[derive(Debug, Clone)]
pub enum PrepayResult {
    Accepted {
        credential: String,
        credential_expires_at: Timestamp,
        payable_until: Timestamp,
        next_query_at: Timestamp,
        channel_data: Option<String>,
    },
    /// The channel said no, definitively: no channel order exists.
    Refused { reason: String },
    /// Timed out or the answer was lost: the channel order may exist.
    Ambiguous { next_query_at: Timestamp },
}

/// What a channel says about one of its orders (decided on by `payonce_core::decide`).
pub use payonce_core::decide::Observed;

#[derive(Debug, Clone, PartialEq)]
pub enum OutcomeSource {
    /// A signed notification; the event id makes a replay a no-op.
    Notification {
        event_id: String,
    },
    Query,
    CloseAnswer,
    /// A row of the channel's daily bill (reconciliation), applied exactly like a query answer.
    Statement {
        bill_date: String,
    },
}

#[derive(Debug, Clone)]
pub struct ChannelOutcome {
    pub channel: ChannelName,
    /// The channel account whose keys vouched for this fact. An attempt made through another
    /// account is left untouched (`OutcomeApplied::AccountMismatch`): a genuine message of one
    /// merchant never changes another's order. `None`: any (a bill not yet read per account).
    pub account: Option<String>,
    pub out_trade_no: String,
    pub observed: Observed,
    pub source: OutcomeSource,
    pub late_payment: LatePaymentPolicy,
    /// When to look at this attempt again if it is not settled by this outcome (a closed
    /// attempt is watched until its credential can no longer pay). `None` keeps the schedule.
    pub reschedule: Option<Timestamp>,
    /// The message as read (a notification's body, WeChat's decrypted resource), written to
    /// the order timeline with the verdict in the same transaction as the fact.
    pub content: Option<String>,
}

#[derive(Debug, Clone)]
// One value per applied fact, returned and matched at once, never stored in bulk: boxing the
// large variant would only add an allocation to every call.
#[allow(clippy::large_enum_variant)]
pub enum OutcomeApplied {
    /// The same notification was applied before: nothing changed.
    Replay,
    /// No attempt has this out_trade_no: nothing changed.
    UnknownTradeNo,
    /// The fact came from another channel account than the attempt's: nothing changed.
    AccountMismatch { attempt: Attempt },
    /// A correctly signed payment whose amount is not the attempt's: recorded as abnormal,
    /// nothing else changed.
    AmountMismatch { attempt: Attempt, reported: i64 },
    Applied {
        order: Order,
        attempt: Attempt,
        effect: OutcomeEffect,
    },
}

/// What an applied outcome did (`payonce_core::decide::Effect`).
pub use payonce_core::decide::Effect as OutcomeEffect;

#[derive(Debug)]
pub enum CloseOrder {
    Closed(Order),
    /// Already closed before: nothing changed.
    AlreadyClosed(Order),
    /// Money arrived first.
    Paid(Order),
    /// A channel order is still active: close it at the channel first.
    ActiveAttempt(Attempt),
    NoSuchOrder,
}

#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub app_id: AppId,
    pub key: String,
    /// SHA-256 over method, path and body: a reused key with another request is a 422.
    pub fingerprint: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

#[derive(Debug)]
pub enum IdempotencyBegin {
    /// First time (or a previous holder died): run the request.
    Proceed,
    Replay(StoredResponse),
    /// The key was used with a different request.
    Mismatch,
    /// The first request with this key is still running.
    InFlight,
}
