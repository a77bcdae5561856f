//! Prepay without double charge: one active attempt per order, its intent written before the
//! channel is called, duplicates coalesced onto it, a dead credential re-issued for the same
//! channel order, a switch of channel or method only after the old order is closed.

use super::*;

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

/// One prepay of an order. `deadline` is the request's one deadline (on the server's clock):
/// every wait below — this instance's turn on the order, another instance's Redis leadership,
/// a channel call in flight elsewhere — ends by it, through the one way to wait
/// (`gateway::waiting`).
/// The fast path of a duplicate: the order's live credential for this channel and method,
/// from one indexed read — no turn on the order, no Redis round trip, no write. `None`: the
/// prepay must change something (or wait for whoever is), and takes [`prepay`].
pub async fn live_credential(
    state: &AppState,
    app: &App,
    order_id: &OrderId,
    params: &PrepayParams,
) -> Result<Option<PrepayAnswer>, PaymentError> {
    let now = state.clock.now();
    let Some(attempt) = state
        .store
        .live_credential(&app.id, order_id, params.channel, params.method, now)
        .await?
    else {
        return Ok(None);
    };
    prepay_metric(&app.id, "reused");
    Ok(Some(reused(attempt)))
}

/// The answer that hands out an attempt's stored, live credential again.
fn reused(attempt: Attempt) -> PrepayAnswer {
    let credential = attempt
        .credential
        .as_deref()
        .and_then(|c| serde_json::from_str(c).ok())
        .unwrap_or_default();
    PrepayAnswer {
        attempt,
        credential,
        reused: true,
    }
}

#[tracing::instrument(skip_all, fields(order_id = %order_id, channel = %params.channel))]
pub async fn prepay(
    state: &AppState,
    app: &App,
    order_id: &OrderId,
    params: &PrepayParams,
    deadline: &Deadline,
) -> Result<PrepayAnswer, PaymentError> {
    let account = account_for(state, app, params.channel)?;
    // Duplicates on this instance queue here; when their turn comes the credential is stored.
    let Ok(turn) = state.waits.turn(&order_key(order_id), deadline).await else {
        prepay_metric(&app.id, "conflict");
        return Err(PaymentError::InProgress(
            "another prepay of this order is in flight",
        ));
    };
    let mut waited = turn.waited;
    // Across instances, Redis (when configured) lets one request lead and the others wait for
    // it before touching the database; the database still decides everything.
    let mut leading = false;
    if let Some(redis) = &state.redis {
        match redis
            .try_lead(order_id.as_str(), deadline.remaining())
            .await
        {
            Some(true) => leading = true,
            Some(false) => {
                redis
                    .wait_for_leader(order_id.as_str(), &state.waits, deadline)
                    .await;
                waited = true;
            }
            None => {}
        }
    }
    let result = prepay_rounds(
        state,
        app,
        order_id,
        params,
        &account,
        deadline,
        &mut waited,
    )
    .await;
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
    account: &ChannelAccount,
    deadline: &Deadline,
    waited: &mut bool,
) -> Result<PrepayAnswer, PaymentError> {
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
            let attempt = new_attempt(state, &order, params, &account.name, now);
            match state.store.begin_attempt(&attempt, now).await? {
                BeginAttempt::Started(a) => {
                    return call_prepay(state, account.connector.as_ref(), &order, a, params).await;
                }
                BeginAttempt::ActiveExists(_) | BeginAttempt::OrderNotOpen(_) => continue,
                BeginAttempt::NoSuchOrder => return Err(PaymentError::NotFound("order")),
            }
        };
        // An attempt keeps the account it was made through (its app's binding may have changed
        // since): every call about it goes there.
        let same = a.channel == params.channel && a.method == params.method;
        let channel = connector_of(state, &a)?.clone();
        match a.status {
            AttemptStatus::Pending if same && a.credential_expires_at.is_some_and(|t| t > now) => {
                prepay_metric(&app.id, if *waited { "coalesced" } else { "reused" });
                return Ok(reused(a));
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
                // Wait until its attempt leaves `created`, or its caller is overdue.
                if wait_for_call(state, &a, deadline).await?.is_none() {
                    prepay_metric(&app.id, "conflict");
                    return Err(PaymentError::InProgress(
                        "another prepay of this order is in flight",
                    ));
                }
                *waited = true;
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
    account: &str,
    now: Timestamp,
) -> Attempt {
    let id = AttemptId::new();
    let request = StoredPrepay {
        subject: order.subject.clone(),
        notify_url: notify_url(state, params.channel, account),
        expires_at: order.expires_at.0,
        requested_at: now.0,
        payer: params.payer.clone(),
    };
    Attempt {
        out_trade_no: OutTradeNo::for_attempt(&id),
        id,
        order_id: order.id.clone(),
        channel: params.channel,
        account: account.to_owned(),
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
        notify_url: notify_url(state, attempt.channel, &attempt.account),
        expires_at: order.expires_at.0,
        requested_at: attempt.created_at.0,
        payer,
    });
    PrepayRequest {
        out_trade_no: attempt.out_trade_no.to_string(),
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

/// Waits (the one way, until `deadline`) for a channel call in flight elsewhere: until its
/// attempt is no longer `created`, or has been so past the call deadline (its caller is gone).
/// `None`: the deadline came first.
pub(super) async fn wait_for_call(
    state: &AppState,
    a: &Attempt,
    deadline: &Deadline,
) -> Result<Option<()>, StoreError> {
    let overdue_at = a.created_at + state.config.call_deadline();
    let answer = state
        .waits
        .until(&order_key(&a.order_id), deadline, || async {
            let now = state.clock.now();
            let current = state.store.attempt(&a.id).await?;
            let settled = current.is_none_or(|c| c.status != AttemptStatus::Created);
            Ok::<_, StoreError>((settled || now > overdue_at).then_some(()))
        })
        .await?;
    Ok(answer.map(|((), _)| ()))
}
