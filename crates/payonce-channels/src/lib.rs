//! Payment channels behind one trait. Each protocol (signing, field mapping, notification
//! format and success answer) lives in its own module; the simulator imports the same protocol
//! code to play the other side, so tests exercise the real signing and parsing paths.

pub mod alipay;
pub mod bill;
pub mod config;
pub mod crypto;
pub mod form;
pub mod inline;
pub mod inspect;
pub mod money;
pub mod sandbox;
pub mod secret;
pub mod unionpay;
pub mod wechatpay;

use async_trait::async_trait;
use payonce_core::{ChannelName, Clock, Money, PayMethod, Timestamp};
use reqwest::header::HeaderMap;
use std::collections::BTreeMap;
use std::sync::Arc;

pub use config::{ChannelsConfig, ConfigError, DEFAULT_ACCOUNT};

/// The clock every connector reads: the same injected clock as the rest of payonce, so
/// virtual-time and clock-fault tests move the connectors' timestamps too.
pub type SharedClock = Arc<dyn Clock>;

/// What payonce asks a channel to create.
#[derive(Debug, Clone)]
pub struct PrepayRequest {
    pub out_trade_no: String,
    pub amount: Money,
    pub subject: String,
    pub method: PayMethod,
    /// Where the channel must send its payment notification.
    pub notify_url: String,
    /// The channel-side expiry: never later than the order's, so a QR code cannot outlive it.
    pub expires_at: Timestamp,
    /// Channel-specific payer data (e.g. a WeChat `openid` for JSAPI).
    pub payer: Option<serde_json::Value>,
    /// When the attempt was first sent. Parameters derived from time (Alipay's
    /// `qr_code_timeout_express`) come from it, so a credential refresh re-sends the stored
    /// request with identical parameters, as WeChat and Alipay require of a repeat.
    pub requested_at: Timestamp,
}

/// The channel accepted: the credential the payer's device needs.
#[derive(Debug, Clone)]
pub struct Prepaid {
    pub credential: serde_json::Value,
    /// Until when this credential may be handed out (WeChat `code_url`/`prepay_id`: 2 hours;
    /// an Alipay QR: at most 2 hours). Past it, a prepay refreshes it while the order is open.
    pub credential_expires_at: Timestamp,
    /// The latest moment the channel could still take a payment on this channel order, however
    /// its documents are read: a closed attempt is watched until then (plus a margin).
    pub payable_until: Timestamp,
    /// What the channel needs later to find this order again, stored with the attempt
    /// (UnionPay's original `txnTime`). Opaque to everything but the connector.
    pub channel_data: Option<String>,
}

/// A channel order as the connector must name it to query or close it.
#[derive(Debug, Clone)]
pub struct ChannelOrderRef {
    pub out_trade_no: String,
    pub channel_data: Option<String>,
}

impl ChannelOrderRef {
    pub fn new(out_trade_no: &str) -> Self {
        ChannelOrderRef {
            out_trade_no: out_trade_no.to_owned(),
            channel_data: None,
        }
    }
}

/// What a channel says about one of its orders: the very type the engine decides on.
pub use payonce_core::decide::Observed as TradeState;

/// A refund as payonce asks for it. `out_refund_no` is derived deterministically by the caller,
/// so a retry can never refund twice.
#[derive(Debug, Clone)]
pub struct RefundRequest {
    pub order: ChannelOrderRef,
    /// The channel's number for the payment (UnionPay's `origQryId`).
    pub channel_trade_no: Option<String>,
    pub out_refund_no: String,
    pub amount: Money,
    /// What the payment was (WeChat wants both).
    pub total: Money,
    pub reason: Option<String>,
    pub notify_url: String,
    /// What `Channel::refund_call_data` made for this refund and payonce stored in the refund row
    /// BEFORE the first call (UnionPay's refund `txnTime`): every send and every query of the
    /// refund names the same transaction.
    pub channel_data: Option<String>,
}

/// What the channel says about a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundState {
    Succeeded,
    /// Accepted, money not yet back (query or a notification settles it).
    Processing,
    /// WeChat `ABNORMAL`: the refund is stuck (closed bank card…): not failed — the amount stays
    /// reserved — but a person must act.
    Abnormal,
    /// The channel refused or closed it: nothing was refunded.
    Failed(String),
    /// No such refund at the channel: asking again under the same number is safe (WeChat,
    /// Alipay: the refund number is the channel's idempotency key).
    Absent,
    /// The channel has no record of it YET (UnionPay refund query `respCode=34`): the refund was
    /// sent and may still appear. Never re-send; keep querying, and after a bounded run a
    /// person (or reconciliation) settles it.
    NotFoundYet,
}

/// A refund as the connector must name it to query it.
#[derive(Debug, Clone)]
pub struct RefundRef {
    pub order: ChannelOrderRef,
    pub out_refund_no: String,
    /// Opaque connector data returned by `refund` (UnionPay's refund `txnTime`).
    pub channel_data: Option<String>,
}

/// One line of a channel's daily statement (its bill).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementLine {
    pub kind: StatementKind,
    pub out_trade_no: String,
    pub channel_trade_no: Option<String>,
    /// Refund lines: our refund number.
    pub out_refund_no: Option<String>,
    /// Fen. Payments: the order amount before any channel-side discount (WeChat 订单金额,
    /// Alipay 订单金额, UnionPay txnAmt), what the attempt asked for. Refunds: the refund.
    pub amount: i64,
    /// Fen: what the merchant is settled after channel-side discounts (WeChat 应结订单金额,
    /// Alipay 商家实收, UnionPay 清算金额), recorded beside the order amount. Refunds: what
    /// leaves the merchant's account.
    pub settled_amount: i64,
    /// The channel's fee in thousandths of a fen (WeChat writes fees to 0.00001 yuan),
    /// negative on a refund (the fee given back).
    pub fee_millifen: i64,
    /// When the channel booked it, where the bill says (payments repaired from the bill are
    /// paid at this time, else at the start of the bill's day).
    pub at: Option<payonce_core::Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    Payment,
    Refund,
}

/// A channel's statement of one day: the lines payonce understood, and the rows it could not
/// classify (an undocumented trade state…), kept for a person rather than failing the day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Statement {
    pub lines: Vec<StatementLine>,
    pub unrecognised: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseAnswer {
    Closed,
    /// The channel refused because the payer already paid: the caller must query and record it.
    AlreadyPaid,
    /// The channel has no such order (an unscanned Alipay precreate; a WeChat prepay that never
    /// happened).
    Absent,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ChannelError {
    /// The channel answered no, definitively: nothing was created or changed.
    #[error("channel refused: {code}: {message}")]
    Refused { code: String, message: String },
    /// The request never left (connection refused, DNS): nothing happened at the channel.
    #[error("channel unreachable: {0}")]
    Unreachable(String),
    /// Timed out, cut off, a 5xx or an answer we could not verify: the call may have taken
    /// effect. Only a query can tell.
    #[error("channel outcome unknown: {0}")]
    Ambiguous(String),
}

/// A verified, parsed notification: about a payment, or (with `refund`) about a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The channel's id for this event: a replay carries the same one.
    pub event_id: String,
    pub out_trade_no: String,
    pub state: TradeState,
    pub refund: Option<RefundNotice>,
    /// What the notification says when its body is not readable as it came (WeChat's
    /// encrypted resource, decrypted); `None`: the body itself is the message. Kept for the
    /// order timeline; it holds payer identifiers.
    pub content: Option<String>,
}

/// What a refund notification says (WeChat `REFUND.SUCCESS` / `.ABNORMAL` / `.CLOSED`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundNotice {
    pub out_refund_no: String,
    pub state: RefundState,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum NotifyError {
    #[error("signature verification failed")]
    BadSignature,
    #[error("unknown signing key or certificate serial")]
    UnknownKey,
    #[error("timestamp outside the accepted window")]
    Stale,
    #[error("malformed notification: {0}")]
    Malformed(String),
    /// Genuine (it verified and decrypted) but about another merchant: a sub-merchant's
    /// message at a sibling's address (they share their provider's keys). Isolation, I9.
    #[error("a notification for another merchant: {0}")]
    OtherMerchant(String),
}

/// An HTTP answer to a channel's notification, in that channel's own format.
#[derive(Debug, Clone)]
pub struct NotifyReply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

#[async_trait]
pub trait Channel: Send + Sync + 'static {
    fn name(&self) -> ChannelName;
    async fn prepay(&self, req: &PrepayRequest) -> Result<Prepaid, ChannelError>;
    async fn query(&self, order: &ChannelOrderRef) -> Result<TradeState, ChannelError>;
    async fn close(&self, order: &ChannelOrderRef) -> Result<CloseAnswer, ChannelError>;
    /// Data the refund's calls and queries must carry, made once and stored in the refund row
    /// before the first call (UnionPay: the refund transaction's `txnTime`). `None`: the refund
    /// number alone names it.
    fn refund_call_data(&self, _now: Timestamp) -> Option<String> {
        None
    }
    /// Requests a refund; returns its state and any data needed to query it later.
    async fn refund(
        &self,
        req: &RefundRequest,
    ) -> Result<(RefundState, Option<String>), ChannelError>;
    async fn refund_query(&self, r: &RefundRef) -> Result<RefundState, ChannelError>;
    /// Downloads the channel's bill of one day (`YYYY-MM-DD`, Beijing time; UnionPay: the
    /// clearing day) through the channel's own protocol, checked as the channel vouches for it
    /// (WeChat's hash), still packed as it came: what reconciliation stores and reads
    /// (`bill::entries`) — or the channel's word that it has no bill for that day.
    async fn download_bill(&self, date: &str) -> Result<bill::BillDownload, ChannelError>;
    /// The bill of one day, read whole: every payment and refund the channel booked (none, on a
    /// day the channel has no bill for). A bill whose rows disagree with its own totals is an
    /// error.
    async fn statement(&self, date: &str) -> Result<Statement, ChannelError> {
        let bill = match self.download_bill(date).await? {
            bill::BillDownload::Bill(b) => b,
            bill::BillDownload::NoBill { .. } => return Ok(Statement::default()),
        };
        let mut out = Statement::default();
        for entry in bill::entries(bill.format, &bill.content)
            .map_err(|e| ChannelError::Ambiguous(e.to_string()))?
        {
            match entry.map_err(|e| ChannelError::Ambiguous(e.to_string()))? {
                bill::BillEntry::Line(l) => out.lines.push(l),
                bill::BillEntry::Unrecognised(u) => out.unrecognised.push(u),
            }
        }
        Ok(out)
    }
    /// Verifies the signature (and decrypts, where the channel encrypts) of a notification.
    fn verify_notification(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: Timestamp,
    ) -> Result<Notification, NotifyError>;
    /// The answer that tells the channel "received, stop retrying".
    fn notify_ack(&self) -> NotifyReply;
    /// The answer that tells the channel "not accepted, retry".
    fn notify_nack(&self, reason: &str) -> NotifyReply;
}

/// One channel account: a connector holding one merchant's identifiers and keys, under the
/// name payonce records on every attempt it makes through it.
#[derive(Clone)]
pub struct ChannelAccount {
    pub name: String,
    pub connector: Arc<dyn Channel>,
    /// The merchant number as the channel names it (WeChat `mchid`, Alipay `app_id`, UnionPay
    /// `merId`); empty for the sandbox.
    pub merchant_id: String,
    /// `(what, SHA-256 hex)` of the account's public keys and certificates, never of a secret.
    pub fingerprints: Vec<(String, String)>,
    /// Marked `default = true`: the account of apps without a binding when there are several.
    pub is_default: bool,
    /// A merchant of its own, a service provider, or one of a provider's sub-merchants.
    pub role: AccountRole,
    /// A provider's keys, from which its sub-merchants' connectors are made (a sub-merchant
    /// added at runtime signs with them). `None` for every other account.
    pub provider_keys: Option<ProviderKeys>,
}

/// What a service provider signs its sub-merchants' calls with.
#[derive(Clone)]
pub enum ProviderKeys {
    Wechatpay {
        gateway: String,
        keys: wechatpay::WechatpayKeys,
    },
    Alipay {
        gateway: String,
        keys: alipay::AlipayKeys,
    },
}

/// What kind of merchant an account is (WeChat's 服务商 model; other channels' accounts are all
/// `Merchant` today).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountRole {
    /// A merchant that takes payments under its own number.
    Merchant,
    /// A service provider (服务商): holds the keys its sub-merchants' calls are signed with,
    /// takes no payment itself (no app can be bound to it).
    Provider,
    /// A sub-merchant (特约商户) of the named provider account: its own merchant number, the
    /// provider's keys, the partner APIs.
    SubMerchant { provider: String },
}

impl AccountRole {
    /// The word the admin API and the console show.
    pub fn as_str(&self) -> &'static str {
        match self {
            AccountRole::Merchant => "merchant",
            AccountRole::Provider => "provider",
            AccountRole::SubMerchant { .. } => "sub_merchant",
        }
    }

    /// The provider account a sub-merchant's calls go through.
    pub fn provider(&self) -> Option<&str> {
        match self {
            AccountRole::SubMerchant { provider } => Some(provider),
            _ => None,
        }
    }
}

impl ChannelAccount {
    pub fn channel(&self) -> ChannelName {
        self.connector.name()
    }

    /// Can an app's payments go through it? Not a service provider's own account.
    pub fn takes_payments(&self) -> bool {
        self.role != AccountRole::Provider
    }
}

/// The channel accounts this deployment is configured for.
#[derive(Clone, Default)]
pub struct ChannelRegistry {
    channels: BTreeMap<ChannelName, Vec<Arc<ChannelAccount>>>,
}

impl ChannelRegistry {
    /// Adds an account (the caller checked its name is new for its channel).
    pub fn insert_account(&mut self, account: ChannelAccount) {
        self.channels
            .entry(account.channel())
            .or_default()
            .push(Arc::new(account));
    }

    /// The connector of the channel's default account: the only one, or the one marked default.
    pub fn get(&self, name: ChannelName) -> Option<&Arc<dyn Channel>> {
        self.default_account(name).map(|a| &a.connector)
    }

    /// The channel's only account, or the one marked default; `None` when there are several
    /// and none is marked (every app must then be bound to one).
    pub fn default_account(&self, name: ChannelName) -> Option<&Arc<ChannelAccount>> {
        // A provider takes no payments: among the others, the only one or the marked one.
        let mut payable = self
            .channels
            .get(&name)?
            .iter()
            .filter(|a| a.takes_payments());
        let first = payable.next()?;
        match payable.clone().next() {
            None => Some(first),
            Some(_) => std::iter::once(first).chain(payable).find(|a| a.is_default),
        }
    }

    /// A named account of a channel.
    pub fn account(&self, name: ChannelName, account: &str) -> Option<&Arc<ChannelAccount>> {
        self.channels.get(&name)?.iter().find(|a| a.name == account)
    }

    /// The connector of a named account.
    pub fn connector(&self, name: ChannelName, account: &str) -> Option<&Arc<dyn Channel>> {
        self.account(name, account).map(|a| &a.connector)
    }

    /// Every account of one channel, in configuration order.
    pub fn accounts(&self, name: ChannelName) -> &[Arc<ChannelAccount>] {
        self.channels.get(&name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every account of every channel.
    pub fn all_accounts(&self) -> impl Iterator<Item = &Arc<ChannelAccount>> + '_ {
        self.channels.values().flatten()
    }

    /// This registry with `other`'s accounts added (accounts the database holds, beside the
    /// file's); a name already here is left as it is.
    pub fn merged(&self, other: &ChannelRegistry) -> ChannelRegistry {
        let mut out = self.clone();
        for a in other.all_accounts() {
            if out.account(a.channel(), &a.name).is_none() {
                out.channels.entry(a.channel()).or_default().push(a.clone());
            }
        }
        out
    }

    /// The channels with at least one account.
    pub fn names(&self) -> impl Iterator<Item = ChannelName> + '_ {
        self.channels.keys().copied()
    }

    /// The same accounts with every connector wrapped (metering).
    pub fn wrap(self, mut f: impl FnMut(&ChannelAccount) -> Arc<dyn Channel>) -> Self {
        let mut out = ChannelRegistry::default();
        for account in self.channels.into_values().flatten() {
            let connector = f(&account);
            out.insert_account(ChannelAccount {
                connector,
                ..(*account).clone()
            });
        }
        out
    }
}

/// What a query's answer means for an attempt once the channel's own semantics are applied
/// (docs/channels.md, "How the tables are kept true"): "no such order" is read by core's one rule
/// (`payonce_core::decide::absent_means`) — absent where the channel creates its order at prepay
/// and no call can still be creating it; where the channel order appears only when the payer
/// acts, not paid YET until the order's latest payable moment has passed, and closed after.
/// `None`: nothing to record.
pub fn settle_query_answer(
    channel: ChannelName,
    state: TradeState,
    payable_until_passed: bool,
    call_may_be_in_flight: bool,
) -> Option<TradeState> {
    use payonce_core::decide::{AbsentContext, AbsentFrom, Observed, absent_means};
    match state {
        TradeState::Absent => {
            let ctx = AbsentContext {
                creates_order_at_prepay: channel.creates_order_at_prepay(),
                payable_until_passed,
                call_may_be_in_flight,
            };
            absent_means(AbsentFrom::Query, ctx).map(|o| match o {
                Observed::Absent => TradeState::Absent,
                _ => TradeState::Closed,
            })
        }
        other => Some(other),
    }
}

/// What a close's "no such order" means for the attempt (core's same rule): absent where the
/// channel made its order at prepay, else closed here and watched until it can no longer be
/// paid.
pub fn settle_close_absent(channel: ChannelName) -> TradeState {
    use payonce_core::decide::{AbsentContext, AbsentFrom, Observed, absent_means};
    let ctx = AbsentContext {
        creates_order_at_prepay: channel.creates_order_at_prepay(),
        payable_until_passed: false,
        // The close is sent after the prepay's answer was recorded (or its deadline passed).
        call_may_be_in_flight: false,
    };
    match absent_means(AbsentFrom::Close, ctx) {
        Some(Observed::Absent) => TradeState::Absent,
        _ => TradeState::Closed,
    }
}

/// Maps a reqwest failure to what it tells us about the remote side effect.
pub(crate) fn classify_transport(e: reqwest::Error) -> ChannelError {
    if e.is_connect() {
        ChannelError::Unreachable(e.to_string())
    } else {
        ChannelError::Ambiguous(e.to_string())
    }
}
