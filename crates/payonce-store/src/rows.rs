//! Rows as the database holds them (decoded by `from_row!`, the same for both backends), and their
//! conversion into the model: enumerations and currencies parsed, anything our own code could
//! not have written refused as `StoreError::Corrupt`. `Model` names each model's row type, so a
//! query reads `q(…).load::<Order>(…)`.

use crate::db::{Model, from_row};
use crate::sql::{corrupt, parse_closed_by};
use crate::{App, Attempt, DeliveryStatus, EventRow, Order, Refund, RefundKind, Sink, StoreError};
use payonce_core::{
    AppId, AttemptId, AttemptStatus, ChannelName, Currency, Money, OrderId, OrderStatus,
    OutTradeNo, PayMethod, RefundId, RefundNo, RefundStatus, Timestamp,
};

fn money(minor: i64, currency: &str) -> Result<Money, StoreError> {
    let currency = Currency::parse(currency).map_err(|_| corrupt("currency", currency))?;
    Ok(Money { minor, currency })
}

fn channel(s: &str) -> Result<ChannelName, StoreError> {
    ChannelName::parse(s).map_err(|_| corrupt("channel", s))
}

pub(crate) struct OrderRow {
    id: String,
    app_id: String,
    merchant_order_no: String,
    amount: i64,
    currency: String,
    subject: String,
    notify_url: Option<String>,
    metadata: Option<String>,
    content_hash: String,
    status: String,
    closed_by: Option<String>,
    paid_attempt_id: Option<String>,
    paid_at: Option<i64>,
    refunded_amount: i64,
    expires_at: i64,
    version: i64,
    created_at: i64,
    updated_at: i64,
    original_amount: Option<i64>,
    discount: i64,
    coupon_code: Option<String>,
    coupon_id: Option<String>,
    payer_ref: Option<String>,
}
from_row!(OrderRow {
    id,
    app_id,
    merchant_order_no,
    amount,
    currency,
    subject,
    notify_url,
    metadata,
    content_hash,
    status,
    closed_by,
    paid_attempt_id,
    paid_at,
    refunded_amount,
    expires_at,
    version,
    created_at,
    updated_at,
    original_amount,
    discount,
    coupon_code,
    coupon_id,
    payer_ref,
});

impl TryFrom<OrderRow> for Order {
    type Error = StoreError;
    fn try_from(r: OrderRow) -> Result<Order, StoreError> {
        Ok(Order {
            id: OrderId::from_trusted(r.id),
            app_id: AppId::from_trusted(r.app_id),
            merchant_order_no: r.merchant_order_no,
            amount: money(r.amount, &r.currency)?,
            subject: r.subject,
            notify_url: r.notify_url,
            metadata: r.metadata,
            content_hash: r.content_hash,
            status: OrderStatus::parse(&r.status)
                .ok_or_else(|| corrupt("order status", &r.status))?,
            closed_by: parse_closed_by(r.closed_by)?,
            paid_attempt_id: r.paid_attempt_id.map(AttemptId::from_trusted),
            paid_at: r.paid_at.map(Timestamp),
            refunded_amount: r.refunded_amount,
            expires_at: Timestamp(r.expires_at),
            version: r.version,
            created_at: Timestamp(r.created_at),
            updated_at: Timestamp(r.updated_at),
            coupon: r.coupon_code.map(|code| crate::OrderCoupon {
                code,
                coupon_id: r.coupon_id.unwrap_or_default(),
                original_amount: r.original_amount.unwrap_or(r.amount),
                discount: r.discount,
            }),
            payer_ref: r.payer_ref,
        })
    }
}

pub(crate) struct AttemptRow {
    id: String,
    order_id: String,
    channel: String,
    method: String,
    out_trade_no: String,
    amount: i64,
    currency: String,
    status: String,
    is_duplicate: bool,
    credential: Option<String>,
    credential_expires_at: Option<i64>,
    payable_until: Option<i64>,
    prepay_request: Option<String>,
    channel_trade_no: Option<String>,
    channel_data: Option<String>,
    paid_at: Option<i64>,
    next_query_at: Option<i64>,
    query_count: i32,
    version: i64,
    created_at: i64,
    updated_at: i64,
    account: String,
}
from_row!(AttemptRow {
    id,
    order_id,
    channel,
    method,
    out_trade_no,
    amount,
    currency,
    status,
    is_duplicate,
    credential,
    credential_expires_at,
    payable_until,
    prepay_request,
    channel_trade_no,
    channel_data,
    paid_at,
    next_query_at,
    query_count,
    version,
    created_at,
    updated_at,
    account,
});

impl TryFrom<AttemptRow> for Attempt {
    type Error = StoreError;
    fn try_from(r: AttemptRow) -> Result<Attempt, StoreError> {
        Ok(Attempt {
            id: AttemptId::from_trusted(r.id),
            order_id: OrderId::from_trusted(r.order_id),
            channel: channel(&r.channel)?,
            account: r.account,
            method: PayMethod::parse(&r.method).map_err(|_| corrupt("method", &r.method))?,
            out_trade_no: OutTradeNo::from_trusted(r.out_trade_no),
            amount: money(r.amount, &r.currency)?,
            status: AttemptStatus::parse(&r.status)
                .ok_or_else(|| corrupt("attempt status", &r.status))?,
            is_duplicate: r.is_duplicate,
            credential: r.credential,
            credential_expires_at: r.credential_expires_at.map(Timestamp),
            payable_until: r.payable_until.map(Timestamp),
            prepay_request: r.prepay_request,
            channel_trade_no: r.channel_trade_no,
            channel_data: r.channel_data,
            paid_at: r.paid_at.map(Timestamp),
            next_query_at: r.next_query_at.map(Timestamp),
            query_count: i64::from(r.query_count),
            version: r.version,
            created_at: Timestamp(r.created_at),
            updated_at: Timestamp(r.updated_at),
        })
    }
}

pub(crate) struct RefundRow {
    id: String,
    order_id: String,
    app_id: String,
    attempt_id: String,
    channel: String,
    out_trade_no: String,
    merchant_refund_no: Option<String>,
    out_refund_no: String,
    amount: i64,
    currency: String,
    reason: Option<String>,
    kind: String,
    status: String,
    failure_reason: Option<String>,
    content_hash: String,
    requested: i32,
    channel_data: Option<String>,
    next_query_at: Option<i64>,
    query_count: i32,
    version: i64,
    created_at: i64,
    updated_at: i64,
}
from_row!(RefundRow {
    id,
    order_id,
    app_id,
    attempt_id,
    channel,
    out_trade_no,
    merchant_refund_no,
    out_refund_no,
    amount,
    currency,
    reason,
    kind,
    status,
    failure_reason,
    content_hash,
    requested,
    channel_data,
    next_query_at,
    query_count,
    version,
    created_at,
    updated_at,
});

impl TryFrom<RefundRow> for Refund {
    type Error = StoreError;
    fn try_from(r: RefundRow) -> Result<Refund, StoreError> {
        Ok(Refund {
            id: RefundId::from_trusted(r.id),
            order_id: OrderId::from_trusted(r.order_id),
            app_id: AppId::from_trusted(r.app_id),
            attempt_id: AttemptId::from_trusted(r.attempt_id),
            channel: channel(&r.channel)?,
            out_trade_no: OutTradeNo::from_trusted(r.out_trade_no),
            merchant_refund_no: r.merchant_refund_no,
            out_refund_no: RefundNo::from_trusted(r.out_refund_no),
            amount: money(r.amount, &r.currency)?,
            reason: r.reason,
            kind: RefundKind::parse(&r.kind).ok_or_else(|| corrupt("refund kind", &r.kind))?,
            status: RefundStatus::parse(&r.status)
                .ok_or_else(|| corrupt("refund status", &r.status))?,
            failure_reason: r.failure_reason,
            content_hash: r.content_hash,
            requested: r.requested != 0,
            channel_data: r.channel_data,
            next_query_at: r.next_query_at.map(Timestamp),
            query_count: i64::from(r.query_count),
            version: r.version,
            created_at: Timestamp(r.created_at),
            updated_at: Timestamp(r.updated_at),
        })
    }
}

pub(crate) struct EventDbRow {
    id: String,
    app_id: String,
    order_id: Option<String>,
    event_type: String,
    payload: String,
    created_at: i64,
    delivery_status: String,
    delivery_count: i32,
    next_attempt_at: Option<i64>,
    last_status: Option<i32>,
    last_error: Option<String>,
    delivered_at: Option<i64>,
}
from_row!(EventDbRow {
    id,
    app_id,
    order_id,
    event_type = "type",
    payload,
    created_at,
    delivery_status,
    delivery_count,
    next_attempt_at,
    last_status,
    last_error,
    delivered_at,
});

impl TryFrom<EventDbRow> for EventRow {
    type Error = StoreError;
    fn try_from(r: EventDbRow) -> Result<EventRow, StoreError> {
        Ok(EventRow {
            id: r.id,
            app_id: r.app_id,
            order_id: r.order_id,
            event_type: r.event_type,
            payload: r.payload,
            created_at: Timestamp(r.created_at),
            delivery_status: DeliveryStatus::parse(&r.delivery_status)
                .ok_or_else(|| corrupt("delivery status", &r.delivery_status))?,
            delivery_count: i64::from(r.delivery_count),
            next_attempt_at: r.next_attempt_at.map(Timestamp),
            last_status: r.last_status.map(i64::from),
            last_error: r.last_error,
            delivered_at: r.delivered_at.map(Timestamp),
        })
    }
}

pub(crate) struct AppRow {
    id: String,
    name: String,
    secret_hash: String,
    webhook_url: Option<String>,
    webhook_secret_enc: String,
    webhook_secret_prev_enc: Option<String>,
    webhook_disabled: i32,
    allowed_hosts: Option<String>,
    sink: Option<String>,
    submission_window_secs: i64,
    created_at: i64,
    channel_accounts: Option<String>,
}
from_row!(AppRow {
    id,
    name,
    secret_hash,
    webhook_url,
    webhook_secret_enc,
    webhook_secret_prev_enc,
    webhook_disabled,
    allowed_hosts,
    sink,
    submission_window_secs,
    created_at,
    channel_accounts,
});

impl TryFrom<AppRow> for App {
    type Error = StoreError;
    fn try_from(r: AppRow) -> Result<App, StoreError> {
        Ok(App {
            id: AppId::from_trusted(r.id),
            name: r.name,
            secret_hash: r.secret_hash,
            webhook_url: r.webhook_url,
            webhook_secret_enc: r.webhook_secret_enc,
            webhook_secret_prev_enc: r.webhook_secret_prev_enc,
            webhook_disabled: r.webhook_disabled != 0,
            allowed_hosts: r.allowed_hosts,
            submission_window_secs: r.submission_window_secs,
            // No sink recorded: the webhook (apps made before sinks existed).
            sink: match r.sink.as_deref() {
                None => Sink::Webhook,
                Some(s) => Sink::parse(s).ok_or_else(|| corrupt("sink", s))?,
            },
            channel_accounts: crate::accounts::decode_bindings(r.channel_accounts.as_deref())?,
            created_at: Timestamp(r.created_at),
        })
    }
}

pub(crate) struct CouponRow {
    id: String,
    app_id: String,
    code: String,
    kind: String,
    value: i64,
    min_amount: Option<i64>,
    max_redemptions: i64,
    per_payer_limit: Option<i64>,
    valid_from: Option<i64>,
    valid_until: Option<i64>,
    reserved: i64,
    redeemed: i64,
    created_at: i64,
}
from_row!(CouponRow {
    id,
    app_id,
    code,
    kind,
    value,
    min_amount,
    max_redemptions,
    per_payer_limit,
    valid_from,
    valid_until,
    reserved,
    redeemed,
    created_at,
});

impl TryFrom<CouponRow> for crate::Coupon {
    type Error = StoreError;
    fn try_from(r: CouponRow) -> Result<crate::Coupon, StoreError> {
        Ok(crate::Coupon {
            id: r.id,
            app_id: AppId::from_trusted(r.app_id),
            code: r.code,
            kind: r.kind,
            value: r.value,
            min_amount: r.min_amount,
            max_redemptions: r.max_redemptions,
            per_payer_limit: r.per_payer_limit,
            valid_from: r.valid_from.map(Timestamp),
            valid_until: r.valid_until.map(Timestamp),
            reserved: r.reserved,
            redeemed: r.redeemed,
            created_at: Timestamp(r.created_at),
        })
    }
}

// Each model is read through its row type (`Query::load…`).
impl Model for Order {
    type Row = OrderRow;
}
impl Model for Attempt {
    type Row = AttemptRow;
}
impl Model for Refund {
    type Row = RefundRow;
}
impl Model for EventRow {
    type Row = EventDbRow;
}
impl Model for App {
    type Row = AppRow;
}
impl Model for crate::Coupon {
    type Row = CouponRow;
}
