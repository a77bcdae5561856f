//! The payment engine: prepay without double charge, closing, and applying what channels say.
//!
//! The rule everywhere: write the intent in one transaction, call the channel with no
//! transaction open, record the outcome in another. The database arbitrates every race (the
//! partial unique index allows one active attempt per order); the per-order turns a request
//! waits in (`gateway::waiting`) only spare the database a thundering herd.

use crate::gateway::waiting::Deadline;
use crate::state::AppState;
use payonce_channels::{
    Channel, ChannelAccount, ChannelError, ChannelOrderRef, CloseAnswer, PrepayRequest, TradeState,
};
use payonce_core::order::ClosedBy;
use payonce_core::{Attempt, Order};
use payonce_core::{
    AttemptId, AttemptStatus, ChannelName, OrderId, OutTradeNo, PayMethod, Timestamp,
};
use payonce_store::{
    App, BeginAttempt, ChannelOutcome, CloseOrder, OutcomeApplied, OutcomeSource, PrepayResult,
    StoreError,
};
use std::sync::Arc;
use std::time::Duration;

/// Why the engine did not do what was asked. The HTTP layer maps each to API.md's status and
/// code (`error::ApiError`); the engine itself speaks no HTTP. The messages are for logs: they
/// name the order, never print the snapshot a refusal carries for the answer's body.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The order is paid; here it is as it now stands.
    #[error("order {} is already paid", .0.order.id)]
    AlreadyPaid(Box<OrderSnapshot>),
    /// The order is closed or expired.
    #[error("order {} is closed", .0.order.id)]
    Closed(Box<OrderSnapshot>),
    /// Another request for this order is in flight, or the order kept changing: retry.
    #[error("request in progress: {0}")]
    InProgress(&'static str),
    /// The channel definitively refused (its code): a different request might succeed.
    #[error("the channel refused the request ({0})")]
    ChannelRefused(String),
    /// The channel could not be reached, did not answer in time, or could not confirm: the same
    /// request is safe to retry.
    #[error("channel unavailable: {0}")]
    ChannelUnavailable(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PaymentError {
    /// A short name for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            PaymentError::NotFound(_) => "not_found",
            PaymentError::AlreadyPaid(_) => "order_already_paid",
            PaymentError::Closed(_) => "order_closed",
            PaymentError::InProgress(_) => "request_in_progress",
            PaymentError::ChannelRefused(_) | PaymentError::ChannelUnavailable(_) => {
                "channel_unavailable"
            }
            PaymentError::Store(_) => "store",
        }
    }
}

/// An order with its attempts and refunds, as read when an error needed to show it.
#[derive(Debug)]
pub struct OrderSnapshot {
    pub order: Order,
    pub attempts: Vec<Attempt>,
    pub refunds: Vec<payonce_core::Refund>,
}

async fn snapshot(state: &AppState, order: &Order) -> Result<Box<OrderSnapshot>, StoreError> {
    Ok(Box::new(OrderSnapshot {
        order: order.clone(),
        attempts: state.store.attempts_of(&order.id).await?,
        refunds: state.store.refunds_of(&order.id).await?,
    }))
}

mod prepay;
pub use prepay::{
    PrepayAnswer, PrepayParams, StoredPrepay, live_credential, new_attempt, prepay, stored_request,
};

/// After a close, the attempt is queried once more this much later.
pub const SECOND_CHECK_AFTER: Duration = Duration::from_secs(5);

/// Bound on loop iterations of one request: each iteration either answers or observes that
/// another actor moved the order, which cannot happen forever within one request's wait.
const MAX_ROUNDS: usize = 64;

/// Per app: a jump in one app's reused / coalesced prepays is that business's client retrying
/// in a loop, which the operator wants to name.
pub(super) fn prepay_metric(app: &payonce_core::AppId, outcome: &'static str) {
    metrics::counter!("payonce_prepay_total", "outcome" => outcome, "app" => app.to_string())
        .increment(1);
}

/// The account an app's new attempts on `channel` go through: the app's binding, else the
/// channel's only account or the one marked default.
pub fn account_for(
    state: &AppState,
    app: &App,
    channel: ChannelName,
) -> Result<Arc<ChannelAccount>, PaymentError> {
    match app.channel_accounts.get(&channel) {
        Some(name) => match state.channels.account(channel, name) {
            None => Err(PaymentError::ChannelUnavailable(
                "the app's account for this channel is not configured on this server",
            )),
            // Bound before the account became a provider's: refused rather than sent to the
            // channel, which would refuse it too.
            Some(a) if !a.takes_payments() => Err(PaymentError::ChannelUnavailable(
                "the app's account for this channel is a service provider, which takes no payments: bind one of its sub-merchants",
            )),
            #[cfg(feature = "fault-injection")]
            Some(a) if payonce_core::decide::fault_injection::misrouting_accounts() => {
                // The broken engine: the bound account's name, the default's connector.
                let default = state.channels.default_account(channel).unwrap_or(a.clone());
                Ok(Arc::new(ChannelAccount {
                    connector: default.connector.clone(),
                    ..(*a).clone()
                }))
            }
            Some(a) => Ok(a),
        },
        None if state.channels.accounts(channel).is_empty() => Err(
            PaymentError::ChannelUnavailable("the channel is not configured on this server"),
        ),
        None => state
            .channels
            .default_account(channel)
            .ok_or(PaymentError::ChannelUnavailable(
                "the channel has several accounts and none is the default: bind the app to one",
            )),
    }
}

/// The connector of the account an attempt was made through: every call about a channel
/// order goes to the merchant that made it, whatever its app is bound to now.
pub fn connector_of(state: &AppState, a: &Attempt) -> Result<Arc<dyn Channel>, PaymentError> {
    state
        .channels
        .connector(a.channel, &a.account)
        .ok_or(PaymentError::ChannelUnavailable(
            "the attempt's channel account is not configured on this server",
        ))
}

/// Where a channel sends notifications about an account's orders: `/notify/{channel}` for the
/// unnamed (`default`) account, as before accounts existed; `/notify/{channel}/{account}` for
/// a named one, so the notification is matched to its account before it is trusted.
pub fn notify_url(state: &AppState, channel: ChannelName, account: &str) -> String {
    let base = state.config.public_url.trim_end_matches('/');
    if account == payonce_channels::DEFAULT_ACCOUNT {
        format!("{base}/notify/{channel}")
    } else {
        format!("{base}/notify/{channel}/{account}")
    }
}

/// Closes an attempt's channel order and records the channel's answer. A close refused because
/// the payer paid is followed by a query, so the payment is recorded with its details.
pub async fn retire(state: &AppState, a: &Attempt) -> Result<(), PaymentError> {
    let channel = connector_of(state, a)?;
    let r = order_ref(a);
    let observed = match channel.close(&r).await {
        Ok(CloseAnswer::Closed) => TradeState::Closed,
        // Where the channel creates its order at prepay, "no such order" proves it never existed.
        // Elsewhere (an unscanned Alipay QR) the code stays payable: recorded closed and watched
        // until its credential expires (core's one rule, `decide::absent_means`).
        Ok(CloseAnswer::Absent) => payonce_channels::settle_close_absent(a.channel),
        Ok(CloseAnswer::AlreadyPaid) => match channel.query(&r).await {
            Ok(s @ TradeState::Paid { .. }) => s,
            Ok(_) | Err(_) => {
                return Err(PaymentError::ChannelUnavailable(
                    "the channel reports the order paid but its details are not available yet; retry",
                ));
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, out_trade_no = %a.out_trade_no, "close failed");
            journal_unanswered(
                state,
                a.channel,
                a.out_trade_no.as_str(),
                "close_answer",
                &e,
            )
            .await;
            return Err(PaymentError::ChannelUnavailable(
                "could not close the previous channel order; retrying is safe",
            ));
        }
    };
    // The "delay-queue second check": look once more shortly after the close, and keep watching
    // a credential that can still pay (an unscanned Alipay QR, a UnionPay form) until it expires.
    let second_check = state.clock.now() + state.config.scaled(SECOND_CHECK_AFTER);
    apply(
        state,
        a.channel,
        Some(&a.account),
        a.out_trade_no.as_str(),
        observed,
        OutcomeSource::CloseAnswer,
        Some(second_check),
        None,
    )
    .await?;
    Ok(())
}

pub fn order_ref(a: &Attempt) -> ChannelOrderRef {
    ChannelOrderRef {
        out_trade_no: a.out_trade_no.to_string(),
        channel_data: a.channel_data.clone(),
    }
}

/// The latest moment the channel could still take a payment on this attempt's channel order
/// (stored at prepay; older rows: the credential's expiry; no credential ever issued: the longest
/// any channel's credential lives, counted from the attempt).
pub fn payable_until(a: &Attempt) -> Timestamp {
    a.payable_until
        .or(a.credential_expires_at)
        .unwrap_or(a.created_at.plus_ms(LONGEST_CREDENTIAL_MS))
}

/// The longest any channel's credential lives (WeChat's code_url / prepay_id, an Alipay QR).
const LONGEST_CREDENTIAL_MS: i64 = {
    let (a, b) = (
        payonce_channels::alipay::QR_MAX_LIFE_MS,
        payonce_channels::wechatpay::CREDENTIAL_LIFE_MS,
    );
    if a > b { a } else { b }
};

/// Asks the channel about an attempt and applies the answer (compensation query).
pub async fn sync_attempt(
    state: &AppState,
    a: &Attempt,
) -> Result<Option<OutcomeApplied>, PaymentError> {
    let channel = connector_of(state, a)?;
    let answer = match channel.query(&order_ref(a)).await {
        Ok(answer) => answer,
        Err(e) => {
            tracing::warn!(error = %e, "query failed");
            journal_unanswered(state, a.channel, a.out_trade_no.as_str(), "query", &e).await;
            return Err(PaymentError::ChannelUnavailable(
                "the channel could not be queried; retry",
            ));
        }
    };
    // "No such order" means what core's one rule says, here as in the active-query worker: not
    // absent while a prepay call may still be creating the order, not closed while an
    // unscanned QR can still be paid.
    let now = state.clock.now();
    let Some(observed) = payonce_channels::settle_query_answer(
        a.channel,
        answer,
        payable_until(a) <= now,
        a.updated_at > now - state.config.call_deadline(),
    ) else {
        return Ok(None);
    };
    Ok(Some(
        apply(
            state,
            a.channel,
            Some(&a.account),
            a.out_trade_no.as_str(),
            observed,
            OutcomeSource::Query,
            None,
            None,
        )
        .await?,
    ))
}

/// Client compensation (`?sync=true`, the cashier page's status): asks the channel about every
/// active attempt of an open order before answering — at most once a second per order per
/// instance, so a client polling in a loop never turns into a query storm at the channel.
/// Returns the order as it now stands (as it was, when nothing was asked or a query failed).
pub async fn sync_open_order(state: &AppState, order: Order) -> Result<Order, StoreError> {
    if !order.status.is_open()
        || !state
            .sync_limiter
            .allow(order.id.as_str(), state.clock.now())
    {
        return Ok(order);
    }
    for a in state
        .store
        .attempts_of(&order.id)
        .await?
        .into_iter()
        .filter(|a| a.status.is_active())
    {
        if let Err(e) = sync_attempt(state, &a).await {
            tracing::warn!(
                code = e.code(),
                "sync query failed; answering with what is stored"
            );
        }
    }
    Ok(state.store.order_by_id(&order.id).await?.unwrap_or(order))
}

/// The one door through which every channel fact enters: maps it and hands it to the store's
/// `apply_outcome`, retrying a lost compare-and-set race (the loser re-reads and re-decides).
/// The store writes the fact's line in the order timeline (with `content`, the message as
/// read, and the verdict) in the fact's own transaction; a replay or an order number payonce
/// never issued writes nothing.
/// `account`: the channel account whose keys vouched for the fact (the notification's, the
/// answering connector's); an attempt of another account is not touched (`AccountMismatch`).
#[allow(clippy::too_many_arguments)]
pub async fn apply(
    state: &AppState,
    channel: ChannelName,
    account: Option<&str>,
    out_trade_no: &str,
    observed: TradeState,
    source: OutcomeSource,
    reschedule: Option<Timestamp>,
    content: Option<&str>,
) -> Result<OutcomeApplied, StoreError> {
    let outcome = ChannelOutcome {
        channel,
        account: account.map(str::to_owned),
        out_trade_no: out_trade_no.to_owned(),
        observed,
        source,
        late_payment: state.config.late_payment,
        reschedule,
        content: content.map(str::to_owned),
    };
    let mut tries = 0;
    loop {
        match state.store.apply_outcome(&outcome, state.clock.now()).await {
            Err(StoreError::Contended(_)) if tries < 5 => tries += 1,
            other => {
                if let Ok(applied) = &other {
                    observe(state, &outcome, applied);
                }
                return other;
            }
        }
    }
}

/// A question payonce asked that got no answer (a timeout, an error), for the timeline: the
/// operator sees every query, answered or not.
pub async fn journal_unanswered(
    state: &AppState,
    channel: ChannelName,
    reference: &str,
    source: &str,
    e: &ChannelError,
) {
    record(
        state,
        payonce_store::ChannelMessage::new(
            channel,
            reference,
            source,
            no_answer(e),
            "unanswered".into(),
            None,
            state.clock.now(),
        ),
    )
    .await;
}

/// A call's failure in a few words, for the timeline (the error's details stay in the log).
pub fn no_answer(e: &ChannelError) -> String {
    match e {
        ChannelError::Unreachable(_) => "no answer (not sent)".to_owned(),
        ChannelError::Ambiguous(_) => "no answer (timed out or unreadable)".to_owned(),
        ChannelError::Refused { code, .. } => format!("refused ({code})"),
    }
}

/// Writes a timeline message; a failure is logged (the fact it describes is already durable).
pub async fn record(state: &AppState, message: payonce_store::ChannelMessage) {
    if let Err(e) = state.store.record_channel_message(&message).await {
        tracing::warn!(error = %e, "recording a channel message for the timeline failed");
    }
}

/// What the operator watches of every applied fact: payments made (and how long after the
/// channel took the money payonce knew it, by source) and duplicate charges detected.
fn observe(state: &AppState, outcome: &ChannelOutcome, applied: &OutcomeApplied) {
    let OutcomeApplied::Applied {
        attempt, effect, ..
    } = applied
    else {
        return;
    };
    let channel = outcome.channel.as_str();
    let source = match &outcome.source {
        OutcomeSource::Notification { .. } => "notification",
        OutcomeSource::Query => "query",
        OutcomeSource::CloseAnswer => "close_answer",
        OutcomeSource::Statement { .. } => "statement",
    };
    match effect {
        payonce_store::OutcomeEffect::Duplicate => metrics::counter!("payonce_duplicate_payments_total", "channel" => channel, "source" => source).increment(1),
        payonce_store::OutcomeEffect::OrderPaid => {
            if let Some(paid_at) = attempt.paid_at {
                let lag = (state.clock.now().0 - paid_at.0).max(0) as f64 / 1000.0;
                metrics::histogram!("payonce_payment_lag_seconds", "channel" => channel, "source" => source).record(lag);
            }
        }
        _ => {}
    }
}

/// The key every request about one order waits on (its turn, its calls in flight).
pub fn order_key(order: &OrderId) -> String {
    format!("order:{order}")
}

/// Closes an order at the business's request: every open channel order is closed at the
/// channel first; the order is `closed` only once they all are.
#[tracing::instrument(skip_all, fields(order_id = %order_id))]
pub async fn close(
    state: &AppState,
    app: &App,
    order_id: &OrderId,
    deadline: &Deadline,
) -> Result<Order, PaymentError> {
    let order = state
        .store
        .order(&app.id, order_id)
        .await?
        .ok_or_else(|| PaymentError::NotFound("order"))?;
    let Ok(_turn) = state.waits.turn(&order_key(&order.id), deadline).await else {
        return Err(PaymentError::InProgress(
            "another request for this order is in flight",
        ));
    };
    for _ in 0..MAX_ROUNDS {
        let now = state.clock.now();
        match state
            .store
            .close_order(order_id, ClosedBy::Business, now)
            .await?
        {
            CloseOrder::Closed(o) | CloseOrder::AlreadyClosed(o) => return Ok(o),
            CloseOrder::Paid(o) => {
                return Err(PaymentError::AlreadyPaid(snapshot(state, &o).await?));
            }
            CloseOrder::NoSuchOrder => return Err(PaymentError::NotFound("order")),
            CloseOrder::ActiveAttempt(a) if a.status == AttemptStatus::Created => {
                // A prepay is mid-call: closing now could race its creation. Wait for it.
                let stale_before = now - state.config.call_deadline();
                if a.created_at < stale_before {
                    state
                        .store
                        .mark_stale_created(&a.id, stale_before, now)
                        .await?;
                } else if prepay::wait_for_call(state, &a, deadline).await?.is_none() {
                    return Err(PaymentError::InProgress(
                        "a prepay of this order is in flight",
                    ));
                }
            }
            CloseOrder::ActiveAttempt(a) => retire(state, &a).await?,
        }
    }
    Err(PaymentError::InProgress("the order kept changing; retry"))
}
