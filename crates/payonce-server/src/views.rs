//! The JSON shapes of API.md as typed structs: what an order, an attempt, a refund and a prepay
//! answer look like. The OpenAPI document is generated from these very types (`utoipa`), so the
//! answer and its documentation cannot drift apart.

use payonce_core::{Attempt, Order, Refund, RefundKind};
use payonce_core::{AttemptStatus, ChannelName, OrderStatus, PayMethod, RefundStatus};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

/// A string schema that takes exactly these values.
pub(crate) fn one_of_names<'a>(names: impl IntoIterator<Item = &'a str>) -> RefOr<Schema> {
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(names.into_iter().map(str::to_owned)))
            .build(),
    ))
}

fn order_status() -> RefOr<Schema> {
    one_of_names(OrderStatus::ALL.iter().map(|s| s.as_str()))
}
fn attempt_status() -> RefOr<Schema> {
    one_of_names(AttemptStatus::ALL.iter().map(|s| s.as_str()))
}
fn refund_status() -> RefOr<Schema> {
    one_of_names(RefundStatus::ALL.iter().map(|s| s.as_str()))
}
fn refund_kind() -> RefOr<Schema> {
    one_of_names(RefundKind::ALL.iter().map(|s| s.as_str()))
}
fn channel_name() -> RefOr<Schema> {
    one_of_names(ChannelName::ALL.iter().map(|s| s.as_str()))
}
fn pay_method() -> RefOr<Schema> {
    one_of_names(PayMethod::ALL.iter().map(|s| s.as_str()))
}
fn currency() -> RefOr<Schema> {
    one_of_names(["CNY"])
}

/// One channel order of a payment order (a QR code at WeChat Pay, say).
#[derive(Serialize, ToSchema)]
#[schema(as = Attempt)]
pub struct AttemptView {
    pub id: String,
    #[schema(schema_with = channel_name)]
    pub channel: &'static str,
    #[schema(schema_with = pay_method)]
    pub method: &'static str,
    /// payonce's order number at the channel.
    pub out_trade_no: String,
    #[schema(schema_with = attempt_status)]
    pub status: &'static str,
    /// Minor units (fen).
    pub amount: i64,
    #[schema(schema_with = currency)]
    pub currency: String,
    /// What the payer's front end needs (QR code URL, JSAPI package, gateway form).
    #[schema(value_type = Option<Object>)]
    pub credential: Option<Value>,
    #[schema(format = DateTime)]
    pub credential_expires_at: Option<String>,
    pub channel_trade_no: Option<String>,
    /// A second payment of the order: payonce refunds it.
    pub duplicate: bool,
    #[schema(format = DateTime)]
    pub paid_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// A refund: of (part of) an order, or of a duplicate payment that payonce returns by itself.
#[derive(Serialize, ToSchema)]
#[schema(as = Refund)]
pub struct RefundView {
    pub id: String,
    pub order_id: String,
    /// The business's refund number; none on a duplicate-payment refund.
    pub merchant_refund_no: Option<String>,
    #[schema(schema_with = refund_kind)]
    pub kind: &'static str,
    /// Minor units (fen).
    pub amount: i64,
    #[schema(schema_with = currency)]
    pub currency: String,
    pub reason: Option<String>,
    #[schema(schema_with = refund_status)]
    pub status: &'static str,
    pub failure_reason: Option<String>,
    #[schema(schema_with = channel_name)]
    pub channel: &'static str,
    pub out_refund_no: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// A payment order with its attempts and refunds.
#[derive(Serialize, ToSchema)]
#[schema(as = Order)]
pub struct OrderView {
    pub id: String,
    pub merchant_order_no: String,
    /// Minor units (fen).
    pub amount: i64,
    #[schema(schema_with = currency)]
    pub currency: String,
    pub subject: String,
    #[schema(schema_with = order_status)]
    pub status: &'static str,
    pub notify_url: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    pub refunded_amount: i64,
    /// With a coupon: the amount before its discount, the discount and the code (`amount` is
    /// what the payer pays).
    pub original_amount: Option<i64>,
    pub discount: Option<i64>,
    pub coupon_code: Option<String>,
    pub payer_ref: Option<String>,
    #[schema(format = DateTime)]
    pub paid_at: Option<String>,
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// Grows with every change of the order.
    pub version: i64,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    pub attempts: Vec<AttemptView>,
    pub refunds: Vec<RefundView>,
}

/// The answer to a prepay: the credential the payer's front end uses.
#[derive(Serialize, ToSchema)]
#[schema(as = Prepaid)]
pub struct PrepaidView {
    pub attempt_id: String,
    pub out_trade_no: String,
    #[schema(schema_with = channel_name)]
    pub channel: &'static str,
    #[schema(schema_with = pay_method)]
    pub method: &'static str,
    #[schema(value_type = Object)]
    pub credential: Value,
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    /// The same credential as an earlier call (still valid).
    pub reused: bool,
}

pub fn attempt(a: &Attempt) -> AttemptView {
    AttemptView {
        id: a.id.to_string(),
        channel: a.channel.as_str(),
        method: a.method.as_str(),
        out_trade_no: a.out_trade_no.to_string(),
        status: a.status.as_str(),
        amount: a.amount.minor,
        currency: a.amount.currency.as_str().to_owned(),
        credential: a
            .credential
            .as_deref()
            .and_then(|c| serde_json::from_str::<Value>(c).ok()),
        credential_expires_at: a.credential_expires_at.map(|t| t.to_rfc3339()),
        channel_trade_no: a.channel_trade_no.clone(),
        duplicate: a.is_duplicate,
        paid_at: a.paid_at.map(|t| t.to_rfc3339()),
        created_at: a.created_at.to_rfc3339(),
        updated_at: a.updated_at.to_rfc3339(),
    }
}

pub fn refund(r: &Refund) -> RefundView {
    RefundView {
        id: r.id.to_string(),
        order_id: r.order_id.to_string(),
        merchant_refund_no: r.merchant_refund_no.clone(),
        kind: r.kind.as_str(),
        amount: r.amount.minor,
        currency: r.amount.currency.as_str().to_owned(),
        reason: r.reason.clone(),
        status: r.status.as_str(),
        failure_reason: r.failure_reason.clone(),
        channel: r.channel.as_str(),
        out_refund_no: r.out_refund_no.to_string(),
        created_at: r.created_at.to_rfc3339(),
        updated_at: r.updated_at.to_rfc3339(),
    }
}

pub fn order(o: &Order, attempts: &[Attempt], refunds: &[Refund]) -> OrderView {
    OrderView {
        id: o.id.to_string(),
        merchant_order_no: o.merchant_order_no.clone(),
        amount: o.amount.minor,
        currency: o.amount.currency.as_str().to_owned(),
        subject: o.subject.clone(),
        status: o.status.as_str(),
        notify_url: o.notify_url.clone(),
        metadata: o
            .metadata
            .as_deref()
            .and_then(|m| serde_json::from_str::<Value>(m).ok()),
        refunded_amount: o.refunded_amount,
        original_amount: o.coupon.as_ref().map(|c| c.original_amount),
        discount: o.coupon.as_ref().map(|c| c.discount),
        coupon_code: o.coupon.as_ref().map(|c| c.code.clone()),
        payer_ref: o.payer_ref.clone(),
        paid_at: o.paid_at.map(|t| t.to_rfc3339()),
        expires_at: o.expires_at.to_rfc3339(),
        version: o.version,
        created_at: o.created_at.to_rfc3339(),
        updated_at: o.updated_at.to_rfc3339(),
        attempts: attempts.iter().map(attempt).collect(),
        refunds: refunds.iter().map(refund).collect(),
    }
}

/// For the members of a problem that carry a view (`order` on `order_already_paid`, …).
pub fn to_value(v: &impl Serialize) -> Value {
    serde_json::to_value(v).expect("views serialize")
}
