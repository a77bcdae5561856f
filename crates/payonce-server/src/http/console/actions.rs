//! What operators do from the console, each audited: resolve or retry an abnormal item, push a
//! duplicate's refund, resend an event, rotate an app's webhook secret.

use super::*;

// ---------------------------------------------------------------------------------------------
// Actions

pub(super) fn back_to(form: &HashMap<String, String>) -> String {
    // Only our own pages: never an open redirect.
    match form.get("back").map(String::as_str) {
        Some(b) if b.starts_with("/console") && !b.starts_with("//") && !b.contains("://") => {
            b.to_owned()
        }
        _ => "/console".into(),
    }
}

/// `POST /console/abnormal/{id}/{action}`: `resolve` (with a note), `retry` (ask the channel
/// again now), `refund-duplicate` (push the duplicate's refund now).
pub async fn abnormal_action(
    State(state): State<AppState>,
    op: Operator,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(r) = check_post(&op, &headers, &form) {
        return r;
    }
    let note = form.get("note").map(|s| s.trim()).unwrap_or("");
    if note.chars().count() > 1000 {
        return refused(
            StatusCode::BAD_REQUEST,
            "The note is longer than 1000 characters.",
        );
    }
    let item = match state.store.abnormal_item(&id).await {
        Ok(Some(i)) => i,
        Ok(None) => return refused(StatusCode::NOT_FOUND, "No such abnormal item."),
        Err(e) => return failed(e),
    };
    let order = order_of(&state, item.order_id.as_deref()).await;
    let order_id = order.as_ref().map(|o| o.id.to_string());
    let outcome = match action.as_str() {
        "resolve" => {
            if note.is_empty() {
                return refused(
                    StatusCode::BAD_REQUEST,
                    "Say how it was resolved: the note is required.",
                );
            }
            match state
                .store
                .resolve_abnormal(&item.id, &op.name, note, state.clock.now())
                .await
            {
                Ok(true) => "resolved".to_owned(),
                Ok(false) => {
                    return refused(StatusCode::CONFLICT, "This item was already resolved.");
                }
                Err(e) => return failed(e),
            }
        }
        "retry" => retry(&state, &item.reference, order.as_ref()).await,
        "refund-duplicate" => refund_duplicate(&state, &item.reference, order.as_ref()).await,
        _ => return refused(StatusCode::NOT_FOUND, "No such action."),
    };
    let action_name = action.replace('-', "_");
    let note = if note.is_empty() {
        outcome
    } else {
        format!("{note} ({outcome})")
    };
    audit(
        &state,
        &op,
        &action_name,
        &item.id,
        order_id.as_deref(),
        &note,
    )
    .await;
    see_other(&back_to(&form))
}

/// Asks the channel again about what an item names: a payment attempt (query and apply the
/// answer through the one door), or a refund (send or query it again).
pub(super) async fn retry(state: &AppState, reference: &str, order: Option<&Order>) -> String {
    let Some(order) = order else {
        return "nothing to ask about: no order found".into();
    };
    if let Ok(attempts) = state.store.attempts_of(&order.id).await
        && let Some(a) = attempts
            .iter()
            .find(|a| a.id.as_str() == reference || a.out_trade_no == reference)
    {
        return match payments::sync_attempt(state, a).await {
            Ok(Some(applied)) => format!("queried {}: {}", a.id, applied_name(&applied)),
            Ok(None) => format!("queried {}: nothing to record yet", a.id),
            Err(e) => format!("query of {} failed: {e:?}", a.id),
        };
    }
    if let Ok(refunds) = state.store.refunds_of(&order.id).await
        && let Some(r) = refunds
            .into_iter()
            .find(|r| r.id.as_str() == reference || r.out_refund_no == reference)
    {
        return push_refund(state, r, "refund").await;
    }
    "nothing to ask about".into()
}

/// Sends or queries a refund now (as the refunder would on its schedule); what came of it.
pub(super) async fn push_refund(state: &AppState, r: payonce_store::Refund, label: &str) -> String {
    let rid = r.id.to_string();
    match crate::engine::refunding::settle_refund(state, r).await {
        Some(r) => format!("{label} {rid} now {}", r.status.as_str()),
        None => format!("{label} {rid}: the channel gave no answer"),
    }
}

pub(super) fn applied_name(a: &payonce_store::OutcomeApplied) -> String {
    match a {
        payonce_store::OutcomeApplied::Replay => "nothing new".into(),
        payonce_store::OutcomeApplied::UnknownTradeNo => "unknown order number".into(),
        payonce_store::OutcomeApplied::AccountMismatch { attempt } => {
            format!(
                "refused: the attempt belongs to account {}",
                attempt.account
            )
        }
        payonce_store::OutcomeApplied::AmountMismatch { reported, .. } => {
            format!("amount mismatch (channel says {reported})")
        }
        payonce_store::OutcomeApplied::Applied { attempt, .. } => {
            format!("attempt {}", attempt.status.as_str())
        }
    }
}

/// Pushes the refund of a duplicate payment now (the refunder would, on its schedule).
pub(super) async fn refund_duplicate(
    state: &AppState,
    reference: &str,
    order: Option<&Order>,
) -> String {
    let Some(order) = order else {
        return "no order found".into();
    };
    let Ok(refunds) = state.store.refunds_of(&order.id).await else {
        return "the database did not answer".into();
    };
    let attempts = state.store.attempts_of(&order.id).await.unwrap_or_default();
    let attempt = attempts
        .iter()
        .find(|a| a.id.as_str() == reference || a.out_trade_no == reference);
    let duplicate = refunds.into_iter().find(|r| {
        r.kind == payonce_store::RefundKind::Duplicate
            && (attempt.is_some_and(|a| a.id == r.attempt_id)
                || r.id.as_str() == reference
                || r.out_refund_no == reference)
    });
    match duplicate {
        Some(r) if r.status == payonce_core::RefundStatus::Succeeded => {
            format!("refund {} had already succeeded", r.id)
        }
        Some(r) => push_refund(state, r, "duplicate refund").await,
        None => "no duplicate refund for this item (is it a duplicate payment?)".into(),
    }
}

pub async fn resend_event(
    State(state): State<AppState>,
    op: Operator,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(r) = check_post(&op, &headers, &form) {
        return r;
    }
    let event = match state.store.event(&id).await {
        Ok(Some(e)) => e,
        Ok(None) => return refused(StatusCode::NOT_FOUND, "No such event."),
        Err(e) => return failed(e),
    };
    if let Err(e) = state.store.resend(Some(&id), state.clock.now()).await {
        return failed(e);
    }
    audit(
        &state,
        &op,
        "resend_event",
        &id,
        event.order_id.as_deref(),
        form.get("note").map(|s| s.trim()).unwrap_or(""),
    )
    .await;
    see_other(&back_to(&form))
}

#[derive(Template)]
#[template(path = "console_secret.html")]
pub(super) struct SecretPage<'a> {
    pub(super) operator: Option<&'a str>,
    pub(super) csrf: &'a str,
    pub(super) app_id: &'a str,
    pub(super) secret: &'a str,
}

pub async fn rotate_secret(
    State(state): State<AppState>,
    op: Operator,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(r) = check_post(&op, &headers, &form) {
        return r;
    }
    let Ok(app_id) = payonce_core::AppId::parse(&id) else {
        return refused(StatusCode::NOT_FOUND, "No such app.");
    };
    let secret = crate::crypto::new_webhook_secret();
    let enc = state.master_key.encrypt(&secret, app_id.as_str());
    match state.store.rotate_webhook_secret(&app_id, &enc).await {
        Ok(true) => {}
        Ok(false) => return refused(StatusCode::NOT_FOUND, "No such app."),
        Err(e) => return failed(e),
    }
    audit(
        &state,
        &op,
        "rotate_webhook_secret",
        app_id.as_str(),
        None,
        "",
    )
    .await;
    // Shown once, on a page that is not cached (no-store) and never logged.
    html(
        StatusCode::OK,
        SecretPage {
            operator: Some(&op.name),
            csrf: &op.csrf,
            app_id: app_id.as_str(),
            secret: &secret,
        }
        .render(),
    )
}
