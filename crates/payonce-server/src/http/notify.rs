//! `POST /notify/{channel}` and `/notify/{channel}/{account}`: match the notification to a
//! channel account, verify it with that account's keys, apply the result exactly once — only to
//! an order of that account — and only after it is committed answer in the channel's own success
//! format. Anything that fails verification gets the channel's failure answer and changes nothing.

use crate::engine::payments;
use crate::gateway::ratelimit::Surface;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use payonce_channels::{NotifyError, NotifyReply, TradeState};
use payonce_core::ChannelName;
use payonce_store::{OutcomeApplied, OutcomeEffect, OutcomeSource, RefundNoticeApplied};

fn reply(r: NotifyReply) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
    (status, [("content-type", r.content_type)], r.body).into_response()
}

/// Counts a notification by channel, account (the one whose keys verified it; before that, the
/// one its address names, or "" at the shared address) and outcome.
fn count(channel: ChannelName, account: &str, outcome: &'static str) {
    metrics::counter!("payonce_notifications_total", "channel" => channel.as_str(), "account" => account.to_owned(), "outcome" => outcome).increment(1);
}

type Peer = Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>;

/// `/notify/{channel}`: the unnamed (`default`) account's address. With several accounts the
/// notification is tried against each (the default first): only one account's keys verify it.
pub async fn receive(
    State(state): State<AppState>,
    Path(channel): Path<String>,
    peer: Peer,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    receive_for(state, channel, None, peer, headers, body).await
}

/// `/notify/{channel}/{account}`: a named account's address; only its keys are tried.
pub async fn receive_for_account(
    State(state): State<AppState>,
    Path((channel, account)): Path<(String, String)>,
    peer: Peer,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    receive_for(state, channel, Some(account), peer, headers, body).await
}

/// The accounts a notification on this path may come from, the likeliest first.
fn candidates(
    state: &AppState,
    name: ChannelName,
    account: Option<&str>,
) -> Vec<std::sync::Arc<payonce_channels::ChannelAccount>> {
    match account {
        Some(a) => state.channels.account(name, a).into_iter().collect(),
        None => {
            let mut all = state.channels.accounts(name).to_vec();
            let default = state.channels.default_account(name).map(|a| a.name.clone());
            all.sort_by_key(|a| Some(&a.name) != default.as_ref());
            all
        }
    }
}

#[tracing::instrument(skip_all, fields(channel = %channel, account = tracing::field::Empty))]
async fn receive_for(
    state: AppState,
    channel: String,
    account: Option<String>,
    peer: Peer,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    // No channel or account, so no channel format to answer in: our own problem+json.
    let Ok(name) = ChannelName::parse(&channel) else {
        return crate::error::ApiError::not_found("channel").into_response();
    };
    let accounts = candidates(&state, name, account.as_deref());
    let path_account = account.as_deref().unwrap_or_default();
    let Some(first) = accounts.first() else {
        return crate::error::ApiError::not_found("channel").into_response();
    };
    let ch = first.connector.clone();
    // Oversized: the channel's own failure format (and the body drained, so it is received).
    let Ok(body) = crate::http::body::read_limited(body, state.config.body_limit).await else {
        count(name, path_account, "too_large");
        let mut r = ch.notify_nack("body too large");
        r.status = 413;
        return reply(r);
    };
    // An address that has sent too many failing notifications is turned away BEFORE the
    // signature check: verification is the expensive part a flood of forgeries would buy.
    // Genuine notifications never count against it (only failures do), and this budget is the
    // notifications' own: wrong admin tokens from the same address do not touch it.
    let ip = crate::gateway::auth::client_ip(&state, &headers, peer.map(|p| p.0.0));
    if let Some(wait) = ip.and_then(|ip| state.limits.failures(Surface::Notify).over(ip)) {
        count(name, path_account, "over_failure_budget");
        metrics::counter!("payonce_rate_limited_total", "kind" => "notify_failures", "app" => "")
            .increment(1);
        let mut r = ch.notify_nack("too many failed notifications");
        r.status = 429;
        let mut resp = reply(r);
        resp.headers_mut()
            .insert("retry-after", (wait.as_secs() + 1).into());
        return resp;
    }
    // The first account whose keys verify it; else the first account's refusal.
    let now = state.clock.now();
    let mut verified = Err(NotifyError::UnknownKey);
    for (i, a) in accounts.iter().enumerate() {
        match a.connector.verify_notification(&headers, &body, now) {
            Ok(n) => {
                verified = Ok((n, a));
                break;
            }
            Err(e) if i == 0 => verified = Err(e),
            Err(_) => {}
        }
    }
    let (n, verifier) = match verified {
        Ok(v) => v,
        Err(e) => {
            count(
                name,
                path_account,
                match e {
                    NotifyError::BadSignature => "bad_signature",
                    NotifyError::UnknownKey => "unknown_key",
                    NotifyError::Stale => "stale",
                    NotifyError::Malformed(_) => "malformed",
                    NotifyError::OtherMerchant(_) => "account_mismatch",
                },
            );
            tracing::warn!(error = %e, "notification rejected");
            // Only failing notifications draw from the sender's budget: a flood of forgeries is
            // turned away before verification once it is spent, genuine notifications never are.
            if let Some(ip) = ip {
                state.limits.failures(Surface::Notify).fail(ip);
            }
            return reply(ch.notify_nack(&e.to_string()));
        }
    };
    let account = verifier.name.as_str();
    tracing::Span::current().record("account", account);
    if let Some(notice) = n.refund {
        let again = state.clock.now() + state.config.backoff(2);
        let observed = format!("{:?}", notice.state);
        let result = crate::engine::refunding::refund_result(notice.state, again);
        return match state
            .store
            .apply_refund_notice(
                name,
                Some(account),
                &n.event_id,
                &notice.out_refund_no,
                &result,
                state.clock.now(),
            )
            .await
        {
            Ok(RefundNoticeApplied::Replay) => {
                count(name, account, "replay");
                reply(ch.notify_ack())
            }
            Ok(RefundNoticeApplied::UnknownRefund) => {
                count(name, account, "unknown_refund");
                reply(ch.notify_nack("unknown out_refund_no"))
            }
            Ok(RefundNoticeApplied::AccountMismatch {
                refund_id,
                account: owner,
            }) => {
                refuse_other_account(&state, name, account, &refund_id, &owner, ip).await;
                reply(ch.notify_nack("unknown out_refund_no"))
            }
            Ok(RefundNoticeApplied::Applied(r)) => {
                count(name, account, "refund");
                let content = Some(
                    n.content
                        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned()),
                );
                let verdict = format!("refund {}", r.status.as_str());
                let message = payonce_store::ChannelMessage::new(
                    name,
                    &notice.out_refund_no,
                    "refund_notification",
                    observed,
                    verdict,
                    content,
                    state.clock.now(),
                );
                if let Err(e) = state.store.record_channel_message(&message).await {
                    tracing::warn!(error = %e, "recording a refund notification for the timeline failed");
                }
                reply(ch.notify_ack())
            }
            Err(e) => {
                count(name, account, "error");
                tracing::error!(error = %e, "could not apply refund notification");
                let mut r = ch.notify_nack("temporary failure");
                r.status = 500;
                reply(r)
            }
        };
    }
    // A genuine signature is not yet agreement: a payment number already recorded for another
    // channel order means the message was re-cut or replayed against the wrong order. Confirm
    // by asking the channel about THIS order instead of believing it.
    if let TradeState::Paid {
        channel_trade_no: Some(trade_no),
        ..
    } = &n.state
    {
        match state
            .store
            .attempts_with_channel_trade_no(name, trade_no)
            .await
        {
            Ok(owners) if owners.iter().any(|a| a.out_trade_no != n.out_trade_no) => {
                count(name, account, "trade_no_mismatch");
                tracing::warn!(out_trade_no = %n.out_trade_no, "notification names a payment number of another channel order: confirming by query");
                return confirm_by_query(&state, name, &n.out_trade_no, &*ch).await;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "could not check the payment number");
                let mut r = ch.notify_nack("temporary failure");
                r.status = 500;
                return reply(r);
            }
        }
    }
    let content = n
        .content
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    let applied = payments::apply(
        &state,
        name,
        Some(account),
        &n.out_trade_no,
        n.state,
        OutcomeSource::Notification {
            event_id: n.event_id,
        },
        None,
        Some(&content),
    )
    .await;
    match applied {
        Ok(OutcomeApplied::Replay) => {
            count(name, account, "replay");
            reply(ch.notify_ack())
        }
        Ok(OutcomeApplied::UnknownTradeNo) => {
            count(name, account, "unknown_trade_no");
            reply(ch.notify_nack("unknown out_trade_no"))
        }
        // Genuine for its account, about an order of another: refused, and recorded for a person
        // (a tenant's own keys aimed at another tenant's order, or a misrouted notify URL). The
        // answer is the same as for a number nobody knows: nothing to learn by probing.
        Ok(OutcomeApplied::AccountMismatch { attempt }) => {
            refuse_other_account(
                &state,
                name,
                account,
                attempt.id.as_str(),
                &attempt.account,
                ip,
            )
            .await;
            reply(ch.notify_nack("unknown out_trade_no"))
        }
        Ok(OutcomeApplied::AmountMismatch { .. }) => {
            // Recorded in the abnormal queue for a person; the order is not made paid on this
            // message's word — the channel is asked about the order itself.
            count(name, account, "amount_mismatch");
            confirm_by_query(&state, name, &n.out_trade_no, &*ch).await
        }
        Ok(OutcomeApplied::Applied { effect, .. }) => {
            count(
                name,
                account,
                match effect {
                    OutcomeEffect::OrderPaid => "paid",
                    OutcomeEffect::Duplicate => "duplicate",
                    OutcomeEffect::AttemptMoved => "applied",
                    OutcomeEffect::Nothing => "no_change",
                },
            );
            reply(ch.notify_ack())
        }
        Err(e) => {
            // Not durable, so not acknowledged: the channel will send it again.
            count(name, account, "error");
            tracing::error!(error = %e, "could not apply notification");
            let mut r = ch.notify_nack("temporary failure");
            r.status = 500;
            reply(r)
        }
    }
}

/// A verified notification of `account` about an attempt or refund (`reference`) of `owner`:
/// counted, logged, written to the abnormal queue, and drawn from the sender's failure budget
/// so a flood of them is turned away like forgeries.
async fn refuse_other_account(
    state: &AppState,
    name: ChannelName,
    account: &str,
    reference: &str,
    owner: &str,
    ip: Option<std::net::IpAddr>,
) {
    count(name, account, "account_mismatch");
    tracing::warn!(
        account,
        owner,
        reference,
        "notification of one account names another account's order: refused"
    );
    if let Some(ip) = ip {
        state.limits.failures(Surface::Notify).fail(ip);
    }
    let detail = format!(
        "a {name} notification verified with account {account} names {reference}, made through account {owner}: refused"
    );
    if let Err(e) = state
        .store
        .insert_abnormal(
            "notification_account_mismatch",
            reference,
            &detail,
            state.clock.now(),
        )
        .await
    {
        tracing::error!(error = %e, "recording an account mismatch failed");
    }
}

/// A notification that verified but disagrees with what payonce knows: ask the channel about
/// the order named and apply ITS answer (through the same door as every fact). The sender gets
/// the success answer once the channel's own answer is durably recorded (whatever it says: an
/// unpaid order stays unpaid, a real mismatch sits in the abnormal queue); if the channel cannot
/// be asked now, the failure answer, so a genuine channel sends it again.
async fn confirm_by_query(
    state: &AppState,
    name: ChannelName,
    out_trade_no: &str,
    ch: &dyn payonce_channels::Channel,
) -> Response {
    let Ok(Some(attempt)) = state
        .store
        .attempt_by_out_trade_no(name, out_trade_no)
        .await
    else {
        return reply(ch.notify_nack("unknown out_trade_no"));
    };
    match payments::sync_attempt(state, &attempt).await {
        Ok(_) => reply(ch.notify_ack()),
        Err(_) => {
            let mut r = ch.notify_nack("could not confirm with the channel");
            r.status = 500;
            reply(r)
        }
    }
}
