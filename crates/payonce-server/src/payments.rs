//! The payment engine: prepay without double charge, closing, and applying what channels say.
//!
//! The rule everywhere: write the intent in one transaction, call the channel with no
//! transaction open, record the outcome in another. The database arbitrates every race (the
//! partial unique index allows one active attempt per order); in-process order locks only
//! spare the database a thundering herd.

use crate::state::AppState;
use payonce_channels::{
    Channel, ChannelError, ChannelOrderRef, CloseAnswer, PrepayRequest, TradeState,
};
use payonce_core::order::ClosedBy;
use payonce_core::{
    AttemptId, AttemptStatus, ChannelName, OrderId, OutTradeNo, PayMethod, Timestamp,
};
use payonce_store::{
    App, Attempt, BeginAttempt, ChannelOutcome, CloseOrder, Order, OutcomeApplied, OutcomeSource,
    PrepayResult, StoreError,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why the engine did not do what was asked. The HTTP layer maps each to API.md's status and
/// code (`error::ApiError`); the engine itself speaks no HTTP.
#[derive(Debug)]
pub enum PaymentError {
    NotFound(&'static str),
    /// The order is paid; here it is as it now stands.
    AlreadyPaid(Box<OrderSnapshot>),
    /// The order is closed or expired.
    Closed(Box<OrderSnapshot>),
    /// Another request for this order is in flight, or the order kept changing: retry.
    InProgress(&'static str),
    /// The channel definitively refused (its code): a different request might succeed.
    ChannelRefused(String),
    /// The channel could not be reached, did not answer in time, or could not confirm: the same
    /// request is safe to retry.
    ChannelUnavailable(&'static str),
    Store(StoreError),
}

impl From<StoreError> for PaymentError {
    fn from(e: StoreError) -> Self {
        PaymentError::Store(e)
    }
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
    pub refunds: Vec<payonce_store::Refund>,
}

async fn snapshot(state: &AppState, order: &Order) -> Result<Box<OrderSnapshot>, StoreError> {
    Ok(Box::new(OrderSnapshot {
        order: order.clone(),
        attempts: state.store.attempts_of(&order.id).await?,
        refunds: state.store.refunds_of(&order.id).await?,
    }))
}

/// What the business asked for in a prepay.
#[derive(Debug, Clone)]
pub struct PrepayParams {
    pub channel: ChannelName,
    pub method: PayMethod,
    pub payer: Option<serde_json::Value>,
}

#[derive(Debug)]
pub struct PrepayAnswer {
    pub attempt: Attempt,
    pub credential: serde_json::Value,
    pub reused: bool,
}

/// First query after a prepay when no notification came (DESIGN.md: 10 s, 20 s, 30 s …).
const FIRST_QUERY_AFTER: Duration = Duration::from_secs(10);
/// After a close, the attempt is queried once more this much later.
pub const SECOND_CHECK_AFTER: Duration = Duration::from_secs(5);
/// Bound on loop iterations of one request: each iteration either answers or observes that
/// another actor moved the order, which cannot happen forever within one request's wait.
const MAX_ROUNDS: usize = 64;

/// Per app: a jump in one app's reused / coalesced prepays is that business's client retrying
/// in a loop, which the operator wants to name.
fn prepay_metric(app: &payonce_core::AppId, outcome: &'static str) {
    metrics::counter!("payonce_prepay_total", "outcome" => outcome, "app" => app.to_string())
        .increment(1);
}

fn channel_of(state: &AppState, name: ChannelName) -> Result<&Arc<dyn Channel>, PaymentError> {
    state
        .channels
        .get(name)
        .ok_or(PaymentError::ChannelUnavailable(
            "the channel is not configured on this server",
        ))
}

#[tracing::instrument(skip_all, fields(order_id = %order_id, channel = %params.channel))]
pub async fn prepay(
    state: &AppState,
    app: &App,
    order_id: &OrderId,
    params: &PrepayParams,
) -> Result<PrepayAnswer, PaymentError> {
    let channel = channel_of(state, params.channel)?.clone();
    let wait = state.config.prepay_wait();
    let deadline = Instant::now() + wait;
    // Duplicates on this instance queue here; when their turn comes the credential is stored.
    let Some((_turn, mut waited)) = state.order_locks.lock(order_id.as_str(), wait).await else {
        prepay_metric(&app.id, "conflict");
        return Err(PaymentError::InProgress(
            "another prepay of this order is in flight",
        ));
    };
    // Across instances, Redis (when configured) lets one request lead and the others wait for
    // it before touching the database; the database still decides everything.
    let mut leading = false;
    if let Some(redis) = &state.redis {
        match redis.try_lead(order_id.as_str(), wait).await {
            Some(true) => leading = true,
            Some(false) => {
                redis.wait_for_leader(order_id.as_str(), deadline).await;
                waited = true;
            }
            None => {}
        }
    }
    let result = prepay_rounds(state, app, order_id, params, channel, deadline, &mut waited).await;
    if leading && let Some(redis) = &state.redis {
        redis.release(order_id.as_str()).await;
    }
    result
}

/// The rounds of one prepay: each either answers or observes that another actor moved first.
async fn prepay_rounds(
    state: &AppState,
    app: &App,
    order_id: &OrderId,
    params: &PrepayParams,
    channel: Arc<dyn Channel>,
    deadline: Instant,
    waited: &mut bool,
) -> Result<PrepayAnswer, PaymentError> {
    let mut backoff = Duration::from_millis(10);
    for _ in 0..MAX_ROUNDS {
        let now = state.clock.now();
        let order = state
            .store
            .order(&app.id, order_id)
            .await?
            .ok_or_else(|| PaymentError::NotFound("order"))?;
        if order.status.has_been_paid() {
            prepay_metric(&app.id, "already_paid");
            return Err(PaymentError::AlreadyPaid(snapshot(state, &order).await?));
        }
        if !order.status.is_open() || order.expires_at <= now {
            prepay_metric(&app.id, "order_closed");
            return Err(PaymentError::Closed(snapshot(state, &order).await?));
        }
        let active = state
            .store
            .attempts_of(order_id)
            .await?
            .into_iter()
            .find(|a| a.status.is_active());
        let Some(a) = active else {
            let attempt = new_attempt(state, &order, params, now);
            match state.store.begin_attempt(&attempt, now).await? {
                BeginAttempt::Started(a) => {
                    return call_prepay(state, channel.as_ref(), &order, a, params).await;
                }
                BeginAttempt::ActiveExists(_) | BeginAttempt::OrderNotOpen(_) => continue,
                BeginAttempt::NoSuchOrder => return Err(PaymentError::NotFound("order")),
            }
        };
        let same = a.channel == params.channel && a.method == params.method;
        match a.status {
            AttemptStatus::Pending if same && a.credential_expires_at.is_some_and(|t| t > now) => {
                prepay_metric(&app.id, if *waited { "coalesced" } else { "reused" });
                let credential = a
                    .credential
                    .as_deref()
                    .and_then(|c| serde_json::from_str(c).ok())
                    .unwrap_or_default();
                return Ok(PrepayAnswer {
                    attempt: a,
                    credential,
                    reused: true,
                });
            }
            // The credential outlived its channel-side life (WeChat's 2 hours, an Alipay QR's)
            // while the order is still open: ask the channel to re-issue it for the SAME channel
            // order, with the identical stored request. Never hand out the dead one.
            AttemptStatus::Pending
                if same && a.credential.is_some() && a.prepay_request.is_some() =>
            {
                return refresh_credential(state, channel.as_ref(), &order, a).await;
            }
            AttemptStatus::Created => {
                // Another request (maybe on another instance) is calling the channel right now.
                let stale_before = now - state.config.call_deadline();
                if a.created_at < stale_before {
                    // Its caller never came back: the outcome is unknown, never assumed failed.
                    state
                        .store
                        .mark_stale_created(&a.id, stale_before, now)
                        .await?;
                    continue;
                }
                if Instant::now() >= deadline {
                    prepay_metric(&app.id, "conflict");
                    return Err(PaymentError::InProgress(
                        "another prepay of this order is in flight",
                    ));
                }
                *waited = true;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(200));
            }
            // Same channel order, outcome unknown: ask the channel again under the same number.
            // It answers with the same order (and credential), or says it is paid — it can never
            // create a second one.
            // (Also a pending attempt whose credential was lost: a query found the channel order
            // but the prepay answer never arrived.)
            AttemptStatus::Unknown | AttemptStatus::Pending if same && a.credential.is_none() => {
                let busy_until = now + state.config.call_deadline();
                state.store.defer_unknown(&a.id, busy_until, now).await?;
                return call_prepay(state, channel.as_ref(), &order, a, params).await;
            }
            // Switching channel or method (or a stale credential): close the old channel order
            // first. If that reveals a payment, the next round answers order_already_paid.
            _ => retire(state, &a).await?,
        }
    }
    prepay_metric(&app.id, "conflict");
    Err(PaymentError::InProgress("the order kept changing; retry"))
}

/// The intent of a new attempt: its channel order's number, and the request it will send
/// (stored with it, so every later send is identical), claimable by the active-query worker from
/// the moment it is written.
pub fn new_attempt(
    state: &AppState,
    order: &Order,
    params: &PrepayParams,
    now: Timestamp,
) -> Attempt {
    let id = AttemptId::new();
    let request = StoredPrepay {
        subject: order.subject.clone(),
        notify_url: format!(
            "{}/notify/{}",
            state.config.public_url.trim_end_matches('/'),
            params.channel
        ),
        expires_at: order.expires_at.0,
        requested_at: now.0,
        payer: params.payer.clone(),
    };
    Attempt {
        out_trade_no: OutTradeNo::for_attempt(&id).to_string(),
        id,
        order_id: order.id.clone(),
        channel: params.channel,
        method: params.method,
        amount: order.amount,
        status: AttemptStatus::Created,
        is_duplicate: false,
        credential: None,
        credential_expires_at: None,
        payable_until: None,
        prepay_request: Some(serde_json::to_string(&request).expect("serialisable")),
        channel_trade_no: None,
        channel_data: None,
        paid_at: None,
        // Claimable by the active-query worker from the start: should this request die
        // between the channel call and the recording, the worker settles it.
        next_query_at: Some(now + state.config.call_deadline()),
        query_count: 0,
        version: 1,
        created_at: now,
        updated_at: now,
    }
}

/// Calls the channel for an attempt whose intent is committed, then records what happened.
async fn call_prepay(
    state: &AppState,
    channel: &dyn Channel,
    order: &Order,
    attempt: Attempt,
    params: &PrepayParams,
) -> Result<PrepayAnswer, PaymentError> {
    let req = stored_request(order, &attempt, params.payer.clone(), state);
    let result = channel.prepay(&req).await;
    let now = state.clock.now();
    let first_query = now + state.config.scaled(FIRST_QUERY_AFTER);
    match result {
        Ok(prepaid) => {
            // The channel's own expiry of the credential, which can outlive the order (an Alipay QR
            // lives in whole minutes): closed attempts are watched until then.
            let expires = prepaid.credential_expires_at;
            let recorded = PrepayResult::Accepted {
                credential: prepaid.credential.to_string(),
                credential_expires_at: expires,
                payable_until: prepaid.payable_until,
                next_query_at: first_query,
                channel_data: prepaid.channel_data.clone(),
            };
            let stored = state
                .store
                .record_prepay(&attempt.id, &recorded, now)
                .await?;
            match stored.status {
                AttemptStatus::Pending => {
                    prepay_metric(&order.app_id, "created");
                    Ok(PrepayAnswer {
                        attempt: stored,
                        credential: prepaid.credential,
                        reused: false,
                    })
                }
                AttemptStatus::Succeeded => {
                    prepay_metric(&order.app_id, "already_paid");
                    let order = state
                        .store
                        .order(&order.app_id, &order.id)
                        .await?
                        .unwrap_or_else(|| order.clone());
                    Err(PaymentError::AlreadyPaid(snapshot(state, &order).await?))
                }
                _ => Err(PaymentError::InProgress(
                    "the channel order changed while it was being created",
                )),
            }
        }
        Err(ChannelError::Refused { code, message }) => {
            if attempt.status == AttemptStatus::Unknown {
                // A re-ask of an unknown order refused (e.g. "already paid"): settle by query.
                sync_attempt(state, &attempt).await?;
            } else {
                state
                    .store
                    .record_prepay(
                        &attempt.id,
                        &PrepayResult::Refused {
                            reason: format!("{code}: {message}"),
                        },
                        now,
                    )
                    .await?;
            }
            prepay_metric(&order.app_id, "channel_refused");
            tracing::warn!(code = %code, "channel refused prepay");
            Err(PaymentError::ChannelRefused(code.to_string()))
        }
        Err(ChannelError::Unreachable(e)) => {
            // Nothing left this machine: no channel order can exist.
            state
                .store
                .record_prepay(
                    &attempt.id,
                    &PrepayResult::Refused {
                        reason: format!("unreachable: {e}"),
                    },
                    now,
                )
                .await?;
            prepay_metric(&order.app_id, "channel_unavailable");
            Err(PaymentError::ChannelUnavailable(
                "the channel is unreachable; retrying is safe",
            ))
        }
        Err(ChannelError::Ambiguous(e)) => {
            // The channel order may exist. `unknown`, never `failed`: a query settles it, and a
            // retry re-asks under the same out_trade_no.
            tracing::warn!(error = %e, "prepay outcome unknown");
            state
                .store
                .record_prepay(
                    &attempt.id,
                    &PrepayResult::Ambiguous { next_query_at: now },
                    now,
                )
                .await?;
            prepay_metric(&order.app_id, "unknown");
            Err(PaymentError::ChannelUnavailable(
                // Not "did not answer in time": an answer whose signature could not be verified
                // lands here too, and a CI failure once read this text as a 20 s timeout.
                "the channel's answer was lost, late or could not be verified; retrying the same request is safe",
            ))
        }
    }
}

/// The prepay request of an attempt as first written (`prepay_request`), so every send — the
/// first, a re-ask after `unknown`, a credential refresh — carries identical parameters.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StoredPrepay {
    pub subject: String,
    pub notify_url: String,
    /// The channel-side expiry: never later than the order's, so a QR code cannot outlive it.
    pub expires_at: i64,
    pub requested_at: i64,
    pub payer: Option<serde_json::Value>,
}

/// The channel request of an attempt: the stored one, or (attempts written before requests
/// were stored) one rebuilt from the order.
pub fn stored_request(
    order: &Order,
    attempt: &Attempt,
    payer: Option<serde_json::Value>,
    state: &AppState,
) -> PrepayRequest {
    let stored: Option<StoredPrepay> = attempt
        .prepay_request
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok());
    let stored = stored.unwrap_or_else(|| StoredPrepay {
        subject: order.subject.clone(),
        notify_url: format!(
            "{}/notify/{}",
            state.config.public_url.trim_end_matches('/'),
            attempt.channel
        ),
        expires_at: order.expires_at.0,
        requested_at: attempt.created_at.0,
        payer,
    });
    PrepayRequest {
        out_trade_no: attempt.out_trade_no.clone(),
        amount: attempt.amount,
        subject: stored.subject,
        method: attempt.method,
        notify_url: stored.notify_url,
        expires_at: Timestamp(stored.expires_at),
        payer: stored.payer,
        requested_at: Timestamp(stored.requested_at),
    }
}

/// Re-issues the credential of a pending attempt whose credential died before the order did.
/// The attempt's own transition (`CredentialRefreshed` / `RefreshFailed`): whatever happens,
/// the channel order stays pending — a refresh that fails or times out changes nothing there.
async fn refresh_credential(
    state: &AppState,
    channel: &dyn Channel,
    order: &Order,
    a: Attempt,
) -> Result<PrepayAnswer, PaymentError> {
    let req = stored_request(order, &a, None, state);
    match channel.prepay(&req).await {
        Ok(prepaid) => {
            let now = state.clock.now();
            let stored = state
                .store
                .refresh_credential(
                    &a.id,
                    &prepaid.credential.to_string(),
                    prepaid.credential_expires_at,
                    prepaid.payable_until,
                    now,
                )
                .await?;
            match stored {
                Some(attempt) => {
                    prepay_metric(&order.app_id, "refreshed");
                    Ok(PrepayAnswer {
                        attempt,
                        credential: prepaid.credential,
                        reused: false,
                    })
                }
                // Paid or closed meanwhile: the next prepay round tells the caller.
                None => Err(PaymentError::InProgress(
                    "the channel order changed while its credential was refreshed",
                )),
            }
        }
        Err(e) => {
            // RefreshFailed: pending it stays (the active-query worker keeps watching it), and
            // the dead credential is not handed out. A repeat of the request tries again.
            tracing::warn!(error = %e, out_trade_no = %a.out_trade_no, "credential refresh failed");
            prepay_metric(&order.app_id, "refresh_failed");
            Err(PaymentError::ChannelUnavailable(
                "the channel did not re-issue the payment code; retrying is safe",
            ))
        }
    }
}

/// Closes an attempt's channel order and records the channel's answer. A close refused because
/// the payer paid is followed by a query, so the payment is recorded with its details.
pub async fn retire(state: &AppState, a: &Attempt) -> Result<(), PaymentError> {
    let channel = channel_of(state, a.channel)?;
    let r = order_ref(a);
    let observed = match channel.close(&r).await {
        Ok(CloseAnswer::Closed) => TradeState::Closed,
        // Where the channel creates its order at prepay, "no such order" proves it never existed.
        // Elsewhere (an unscanned Alipay QR) the code stays payable: record it closed and keep
        // watching it until its credential expires.
        Ok(CloseAnswer::Absent) if a.channel.creates_order_at_prepay() => TradeState::Absent,
        Ok(CloseAnswer::Absent) => TradeState::Closed,
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
            journal_unanswered(state, a.channel, &a.out_trade_no, "close_answer", &e).await;
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
        &a.out_trade_no,
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
        out_trade_no: a.out_trade_no.clone(),
        channel_data: a.channel_data.clone(),
    }
}

/// Asks the channel about an attempt and applies the answer (compensation query).
pub async fn sync_attempt(state: &AppState, a: &Attempt) -> Result<OutcomeApplied, PaymentError> {
    let channel = channel_of(state, a.channel)?;
    let observed = match channel.query(&order_ref(a)).await {
        Ok(observed) => observed,
        Err(e) => {
            tracing::warn!(error = %e, "query failed");
            journal_unanswered(state, a.channel, &a.out_trade_no, "query", &e).await;
            return Err(PaymentError::ChannelUnavailable(
                "the channel could not be queried; retry",
            ));
        }
    };
    Ok(apply(
        state,
        a.channel,
        &a.out_trade_no,
        observed,
        OutcomeSource::Query,
        None,
        None,
    )
    .await?)
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
pub async fn apply(
    state: &AppState,
    channel: ChannelName,
    out_trade_no: &str,
    observed: TradeState,
    source: OutcomeSource,
    reschedule: Option<Timestamp>,
    content: Option<&str>,
) -> Result<OutcomeApplied, StoreError> {
    let outcome = ChannelOutcome {
        channel,
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

/// Closes an order at the business's request: every open channel order is closed at the
/// channel first; the order is `closed` only once they all are.
#[tracing::instrument(skip_all, fields(order_id = %order_id))]
pub async fn close(state: &AppState, app: &App, order_id: &OrderId) -> Result<Order, PaymentError> {
    let order = state
        .store
        .order(&app.id, order_id)
        .await?
        .ok_or_else(|| PaymentError::NotFound("order"))?;
    let wait = state.config.prepay_wait();
    let deadline = Instant::now() + wait;
    let Some(_turn) = state.order_locks.lock(order.id.as_str(), wait).await else {
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
                } else if Instant::now() >= deadline {
                    return Err(PaymentError::InProgress(
                        "a prepay of this order is in flight",
                    ));
                } else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            CloseOrder::ActiveAttempt(a) => retire(state, &a).await?,
        }
    }
    Err(PaymentError::InProgress("the order kept changing; retry"))
}
