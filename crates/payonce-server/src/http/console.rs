//! `/console`: where operators work. Server-rendered pages (askama) and plain HTML forms: it
//! works without JavaScript, and the CSP allows no script at all.
//!
//! Signing in takes the admin token and an operator name through a form; the token is checked
//! and forgotten, and the browser gets an HttpOnly, SameSite=Strict cookie holding a random
//! session id (the database keeps only its SHA-256, shared by every instance). Every POST
//! carries the session's CSRF token in a hidden field and, when the browser sends one, an
//! `Origin` of this host. The operator name is the "who" of the audit log, which records
//! every action with its note and shows it in the order's timeline.

use crate::crypto::{random_token, sha256_hex};
use crate::payments;
use crate::ratelimit::Surface;
use crate::state::AppState;
use askama::Template;
use axum::extract::{Form, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use payonce_core::{OrderId, Timestamp};
use payonce_store::{AuditEntry, ConsoleSession, Order};
use std::collections::HashMap;

const COOKIE: &str = "payonce_console";

// ---------------------------------------------------------------------------------------------
// Sessions

/// A signed-in operator (from the session cookie).
pub struct Operator {
    pub name: String,
    csrf: String,
    id_hash: String,
}

/// What a request without a valid session gets: a page asks to sign in, an action is refused.
pub enum NotSignedIn {
    Page,
    Action,
}

impl IntoResponse for NotSignedIn {
    fn into_response(self) -> Response {
        match self {
            NotSignedIn::Page => see_other("/console/sign-in"),
            NotSignedIn::Action => refused(
                StatusCode::UNAUTHORIZED,
                "Not signed in (or the session ended). Sign in again.",
            ),
        }
    }
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == COOKIE && !v.is_empty() && v.len() <= 64).then(|| v.to_owned())
        })
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = NotSignedIn;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, NotSignedIn> {
        let reject = if parts.method == axum::http::Method::GET {
            NotSignedIn::Page
        } else {
            NotSignedIn::Action
        };
        let Some(id) = session_id(&parts.headers) else {
            return Err(reject);
        };
        let id_hash = sha256_hex(id.as_bytes());
        match state
            .store
            .session(&id_hash, &token_generation(state), state.clock.now())
            .await
        {
            Ok(Some(s)) => Ok(Operator {
                name: s.operator,
                csrf: s.csrf_token,
                id_hash,
            }),
            _ => Err(reject),
        }
    }
}

/// The admin token's generation: a short hash that tells tokens apart without standing for
/// one (16 hex digits; the stored app secrets' full hashes are no weaker). A session is bound to
/// the generation it was opened under, so changing the token ends every session.
pub fn token_generation(state: &AppState) -> String {
    match state.config.admin_token.as_deref() {
        Some(t) => sha256_hex(format!("payonce console session generation\0{t}").as_bytes())[..16]
            .to_owned(),
        // No admin token, no console: a generation no session was opened with.
        None => "closed".into(),
    }
}

/// A POST is the signed-in operator's own only with the session's CSRF token, and (when the
/// browser says where the form came from) from this host.
fn check_post(
    op: &Operator,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<(), Response> {
    let given = form.get("csrf").map(String::as_str).unwrap_or("");
    if sha256_hex(given.as_bytes()) != sha256_hex(op.csrf.as_bytes()) {
        return Err(refused(
            StatusCode::FORBIDDEN,
            "This form is stale or did not come from the console (CSRF token missing or wrong).",
        ));
    }
    // `Origin: null` (an opaque origin: privacy settings, sandboxed frames) says nothing; the
    // token and the SameSite=Strict cookie decide then.
    if let Some(origin) = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| *o != "null")
    {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or("");
        if origin_host != host {
            return Err(refused(
                StatusCode::FORBIDDEN,
                "This form was posted from another site.",
            ));
        }
    }
    Ok(())
}

async fn audit(
    state: &AppState,
    op: &Operator,
    action: &str,
    target: &str,
    order: Option<&str>,
    note: &str,
) {
    let e = AuditEntry {
        id: payonce_core::EventId::new()
            .as_str()
            .replacen("evt_", "aud_", 1),
        operator: op.name.clone(),
        action: action.to_owned(),
        target: target.to_owned(),
        order_id: order.map(str::to_owned),
        note: note.to_owned(),
        at: state.clock.now().0,
    };
    if let Err(err) = state.store.insert_audit(&e).await {
        tracing::error!(error = %err, action, "writing the audit log failed");
    }
}

// ---------------------------------------------------------------------------------------------
// Responses

/// The console's pages: no script at all (every action is a form); same-origin referrers, so
/// the console's own forms carry a real `Origin`, checked above.
const POLICY: crate::http::pages::PagePolicy = crate::http::pages::PagePolicy {
    csp: "default-src 'none'; script-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    referrer: "same-origin",
};

fn html(status: StatusCode, body: Result<String, askama::Error>) -> Response {
    crate::http::pages::html(status, body, &POLICY)
}

fn see_other(to: &str) -> Response {
    let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response();
    crate::http::pages::apply(&mut resp, &POLICY);
    resp
}

#[derive(Template)]
#[template(path = "console_message.html")]
struct MessagePage<'a> {
    operator: Option<&'a str>,
    csrf: &'a str,
    message: &'a str,
}

fn refused(status: StatusCode, message: &str) -> Response {
    html(
        status,
        MessagePage {
            operator: None,
            csrf: "",
            message,
        }
        .render(),
    )
}

fn failed(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "console request failed");
    refused(
        StatusCode::SERVICE_UNAVAILABLE,
        "The database did not answer; try again.",
    )
}

fn when(ms: i64) -> String {
    let t = Timestamp(ms).to_rfc3339();
    // `2026-11-26T13:45:01.123Z` → `2026-11-26 13:45:01Z`: what a person reads.
    match (t.get(..10), t.get(11..19)) {
        (Some(d), Some(h)) => format!("{d} {h}Z"),
        _ => t,
    }
}

/// What a delivery got: the receiver's HTTP status, else why there was none.
fn answer_of(status: Option<i64>, error: Option<&str>) -> Option<String> {
    status
        .map(|s| format!("HTTP {s}"))
        .or_else(|| error.map(str::to_owned))
}

fn yuan(fen: i64) -> String {
    format!("¥{}.{:02}", fen / 100, fen % 100)
}

pub async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("../../templates/console.css"),
    )
}

// ---------------------------------------------------------------------------------------------
// Sign in / out

#[derive(Template)]
#[template(path = "console_sign_in.html")]
struct SignInPage<'a> {
    operator: Option<&'a str>,
    csrf: &'a str,
    error: Option<&'a str>,
}

pub async fn sign_in_page() -> Response {
    html(
        StatusCode::OK,
        SignInPage {
            operator: None,
            csrf: "",
            error: None,
        }
        .render(),
    )
}

pub async fn sign_in(
    State(state): State<AppState>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let token = form.get("token").map(String::as_str).unwrap_or("");
    let name = form.get("operator").map(|s| s.trim()).unwrap_or("");
    let expected = state.config.admin_token.as_deref();
    // The address's admin-token budget first: while it is spent, every sign-in from there is
    // refused, the right token too (a guesser learns nothing more until the window passes).
    let ip = crate::auth::client_ip(&state, &headers, peer.map(|p| p.0.0));
    let token_ok = match crate::auth::check_secret(&state, Surface::Admin, ip, || {
        expected.is_some_and(|e| sha256_hex(e.as_bytes()) == sha256_hex(token.as_bytes()))
    }) {
        Ok(()) => true,
        Err(crate::auth::SecretRefused::OverBudget(wait)) => {
            let mut resp = refused(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many failed sign-ins from your address; wait and try again.",
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, (wait.as_secs() + 1).into());
            return resp;
        }
        Err(crate::auth::SecretRefused::Wrong) => false,
    };
    let name_ok = (1..=64).contains(&name.chars().count()) && !name.chars().any(char::is_control);
    if !token_ok || !name_ok {
        let error = if !token_ok {
            "That is not the admin token."
        } else {
            "Give your name (1–64 characters): it signs what you do here."
        };
        return html(
            StatusCode::UNAUTHORIZED,
            SignInPage {
                operator: None,
                csrf: "",
                error: Some(error),
            }
            .render(),
        );
    }
    let id = random_token();
    let now = state.clock.now();
    let session = ConsoleSession {
        id_hash: sha256_hex(id.as_bytes()),
        operator: name.to_owned(),
        csrf_token: random_token(),
        expires_at: (now + state.config.console_session_ttl).0,
        created_at: now.0,
        token_generation: token_generation(&state),
    };
    if let Err(e) = state.store.create_session(&session).await {
        return failed(e);
    }
    let op = Operator {
        name: name.to_owned(),
        csrf: session.csrf_token,
        id_hash: session.id_hash,
    };
    audit(&state, &op, "sign_in", "console", None, "").await;
    let secure = if state.config.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        state.config.console_session_ttl.as_secs()
    );
    let mut resp = see_other("/console");
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("a cookie of safe characters"),
    );
    resp
}

pub async fn sign_out(
    State(state): State<AppState>,
    op: Operator,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(r) = check_post(&op, &headers, &form) {
        return r;
    }
    let _ = state.store.delete_session(&op.id_hash).await;
    let mut resp = see_other("/console/sign-in");
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "payonce_console=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    resp
}

struct SessionView {
    id_hash: String,
    operator: String,
    since: String,
    until: String,
    yours: bool,
}

#[derive(Template)]
#[template(path = "console_sessions.html")]
struct SessionsPage<'a> {
    operator: Option<&'a str>,
    csrf: &'a str,
    sessions: Vec<SessionView>,
}

/// `GET /console/sessions`: who is signed in (this admin token's sessions), each with a button
/// that ends it.
pub async fn sessions(State(state): State<AppState>, op: Operator) -> Response {
    match state
        .store
        .sessions(&token_generation(&state), state.clock.now())
        .await
    {
        Ok(list) => {
            let sessions = list
                .into_iter()
                .map(|s| SessionView {
                    yours: s.id_hash == op.id_hash,
                    id_hash: s.id_hash,
                    operator: s.operator,
                    since: when(s.created_at),
                    until: when(s.expires_at),
                })
                .collect();
            html(
                StatusCode::OK,
                SessionsPage {
                    operator: Some(&op.name),
                    csrf: &op.csrf,
                    sessions,
                }
                .render(),
            )
        }
        Err(e) => failed(e),
    }
}

/// `POST /console/sessions/{id_hash}/end`: ends a session (another operator's left signed in on
/// a lost laptop, say). Audited.
pub async fn end_session(
    State(state): State<AppState>,
    op: Operator,
    headers: HeaderMap,
    Path(id_hash): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(r) = check_post(&op, &headers, &form) {
        return r;
    }
    if let Err(e) = state.store.delete_session(&id_hash).await {
        return failed(e);
    }
    audit(
        &state,
        &op,
        "end_session",
        &id_hash[..id_hash.len().min(12)],
        None,
        "",
    )
    .await;
    if id_hash == op.id_hash {
        let mut resp = see_other("/console/sign-in");
        resp.headers_mut().insert(
            header::SET_COOKIE,
            HeaderValue::from_static(
                "payonce_console=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0",
            ),
        );
        return resp;
    }
    see_other("/console/sessions")
}

// ---------------------------------------------------------------------------------------------
// Home: search, the abnormal queue, failed events, reconciliations, apps, recent actions

struct AbnormalView {
    id: String,
    kind: String,
    reference: String,
    detail: String,
    since: String,
    order_id: Option<String>,
}

struct EventView {
    id: String,
    kind: String,
    status: String,
    tries: i64,
    last: String,
    order_id: Option<String>,
}

struct RunView {
    id: String,
    channel: String,
    bill_date: String,
    status: String,
    summary: String,
    started: String,
}

struct AppView {
    id: String,
    name: String,
    webhook: String,
}

struct AuditView {
    at: String,
    operator: String,
    action: String,
    target: String,
    note: String,
}

#[derive(Template)]
#[template(path = "console_home.html")]
struct HomePage<'a> {
    operator: Option<&'a str>,
    csrf: &'a str,
    abnormal: Vec<AbnormalView>,
    events: Vec<EventView>,
    runs: Vec<RunView>,
    apps: Vec<AppView>,
    audit: Vec<AuditView>,
}

fn audit_view(e: AuditEntry) -> AuditView {
    AuditView {
        at: when(e.at),
        operator: e.operator,
        action: e.action,
        target: e.target,
        note: e.note,
    }
}

/// The order an abnormal item is about: by the order id written with the item, never by
/// searching its reference among numbers a tenant chooses (an app could name its order after
/// another app's attempt id and have that app's item, and its audit row, land on its order).
async fn order_of(state: &AppState, order_id: Option<&str>) -> Option<Order> {
    let id = OrderId::parse(order_id?).ok()?;
    state.store.order_by_id(&id).await.ok()?
}

pub async fn home(State(state): State<AppState>, op: Operator) -> Response {
    let loaded = async {
        let mut abnormal = Vec::new();
        for a in state.store.abnormal_open().await? {
            let order_id = a.order_id.clone();
            abnormal.push(AbnormalView {
                since: when(a.created_at.0),
                id: a.id,
                kind: a.kind,
                reference: a.reference,
                detail: a.detail,
                order_id,
            });
        }
        let mut events = Vec::new();
        for status in [
            payonce_store::DeliveryStatus::Failed,
            payonce_store::DeliveryStatus::Pending,
        ] {
            for e in state.store.list_events(Some(status), 50).await? {
                let last = answer_of(e.last_status, e.last_error.as_deref()).unwrap_or_default();
                events.push(EventView {
                    id: e.id,
                    kind: e.event_type,
                    status: e.delivery_status.as_str().to_owned(),
                    tries: e.delivery_count,
                    last,
                    order_id: e.order_id,
                });
            }
        }
        let runs = state
            .store
            .reconciliations(20)
            .await?
            .into_iter()
            .map(|r| RunView {
                started: when(r.started_at),
                summary: r.reason.clone().unwrap_or_else(|| classes_of(&r.summary)),
                id: r.id,
                channel: r.channel,
                bill_date: r.bill_date,
                status: r.status,
            })
            .collect();
        let apps = state
            .store
            .apps()
            .await?
            .into_iter()
            .map(|a| AppView {
                webhook: match (&a.webhook_url, a.webhook_disabled) {
                    (Some(u), false) => u.clone(),
                    (Some(u), true) => format!("{u} (disabled)"),
                    (None, _) => "—".into(),
                },
                id: a.id.to_string(),
                name: a.name,
            })
            .collect();
        let audit = state
            .store
            .recent_audit(20)
            .await?
            .into_iter()
            .map(audit_view)
            .collect();
        Ok::<_, payonce_store::StoreError>((abnormal, events, runs, apps, audit))
    };
    match loaded.await {
        Ok((abnormal, events, runs, apps, audit)) => html(
            StatusCode::OK,
            HomePage {
                operator: Some(&op.name),
                csrf: &op.csrf,
                abnormal,
                events,
                runs,
                apps,
                audit,
            }
            .render(),
        ),
        Err(e) => failed(e),
    }
}

/// `{"classes":{"repaired_paid":2}}` → `repaired_paid 2`.
fn classes_of(summary: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(summary).unwrap_or_default();
    let rows = v["rows"].as_i64().unwrap_or(0);
    let mut parts = vec![format!("{rows} rows")];
    if let Some(classes) = v["classes"].as_object() {
        parts.extend(classes.iter().map(|(k, n)| format!("{k} {n}")));
    }
    parts.join(", ")
}

// ---------------------------------------------------------------------------------------------
// Search and the order timeline

struct OrderRowView {
    id: String,
    merchant_order_no: String,
    app_id: String,
    amount: String,
    status: String,
    created: String,
}

#[derive(Template)]
#[template(path = "console_orders.html")]
struct OrdersPage<'a> {
    operator: Option<&'a str>,
    csrf: &'a str,
    q: &'a str,
    orders: Vec<OrderRowView>,
}

pub async fn search(
    State(state): State<AppState>,
    op: Operator,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let q = params.get("q").map(|s| s.trim()).unwrap_or("");
    let orders = if q.is_empty() || q.len() > 128 {
        Ok(Vec::new())
    } else {
        state.store.find_orders(q, 50).await
    };
    match orders {
        Ok(orders) => {
            let orders = orders
                .into_iter()
                .map(|o| OrderRowView {
                    amount: yuan(o.amount.minor),
                    status: o.status.as_str().to_owned(),
                    created: when(o.created_at.0),
                    id: o.id.to_string(),
                    merchant_order_no: o.merchant_order_no,
                    app_id: o.app_id.to_string(),
                })
                .collect();
            html(
                StatusCode::OK,
                OrdersPage {
                    operator: Some(&op.name),
                    csrf: &op.csrf,
                    q,
                    orders,
                }
                .render(),
            )
        }
        Err(e) => failed(e),
    }
}

/// One line of an order's timeline.
struct Entry {
    at_ms: i64,
    at: String,
    /// `order`, `attempt`, `channel`, `refund`, `event`, `delivery`, `reconciliation`, `abnormal`, `audit`.
    kind: &'static str,
    title: String,
    detail: String,
    /// The channel's message, payer identifiers masked.
    content: Option<String>,
}

fn entry(at_ms: i64, kind: &'static str, title: String, detail: String) -> Entry {
    Entry {
        at_ms,
        at: when(at_ms),
        kind,
        title,
        detail,
        content: None,
    }
}

#[derive(Template)]
#[template(path = "console_order.html")]
struct OrderPage<'a> {
    operator: Option<&'a str>,
    csrf: &'a str,
    order: OrderRowView,
    subject: String,
    entries: Vec<Entry>,
    abnormal: Vec<AbnormalView>,
    failed_events: Vec<EventView>,
}

pub async fn order(
    State(state): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
) -> Response {
    let Ok(order_id) = OrderId::parse(&id) else {
        return refused(StatusCode::NOT_FOUND, "No such order.");
    };
    match timeline(&state, &order_id).await {
        Ok(Some((order, entries, abnormal, failed_events))) => html(
            StatusCode::OK,
            OrderPage {
                operator: Some(&op.name),
                csrf: &op.csrf,
                subject: order.subject.clone(),
                order: OrderRowView {
                    amount: yuan(order.amount.minor),
                    status: order.status.as_str().to_owned(),
                    created: when(order.created_at.0),
                    id: order.id.to_string(),
                    merchant_order_no: order.merchant_order_no,
                    app_id: order.app_id.to_string(),
                },
                entries,
                abnormal,
                failed_events,
            }
            .render(),
        ),
        Ok(None) => refused(StatusCode::NOT_FOUND, "No such order."),
        Err(e) => failed(e),
    }
}

type Timeline = (Order, Vec<Entry>, Vec<AbnormalView>, Vec<EventView>);

/// Everything that happened to an order, in time order.
async fn timeline(
    state: &AppState,
    id: &OrderId,
) -> Result<Option<Timeline>, payonce_store::StoreError> {
    let Some(order) = state.store.order_by_id(id).await? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    out.push(entry(
        order.created_at.0,
        "order",
        format!(
            "order created: {} for {}",
            yuan(order.amount.minor),
            order.merchant_order_no
        ),
        match &order.coupon {
            Some(c) => format!("coupon {}; expires {}", c.code, when(order.expires_at.0)),
            None => format!("expires {}", when(order.expires_at.0)),
        },
    ));
    if let Some(paid) = order.paid_at {
        out.push(entry(
            paid.0,
            "order",
            "order paid".into(),
            order
                .paid_attempt_id
                .as_ref()
                .map(|a| format!("by {a}"))
                .unwrap_or_default(),
        ));
    }
    if matches!(order.status, payonce_core::OrderStatus::Closed) {
        let by = order
            .closed_by
            .map(|b| format!("{b:?}").to_lowercase())
            .unwrap_or_default();
        out.push(entry(
            order.updated_at.0,
            "order",
            "order closed".into(),
            format!("by {by}"),
        ));
    }
    let attempts = state.store.attempts_of(id).await?;
    let refunds = state.store.refunds_of(id).await?;
    for a in &attempts {
        out.push(entry(
            a.created_at.0,
            "attempt",
            format!("prepay via {} ({})", a.channel.as_str(), a.method.as_str()),
            format!(
                "{} · out_trade_no {} · now {} · channel asked {} times{}{}",
                a.id,
                a.out_trade_no,
                a.status.as_str(),
                a.query_count,
                if a.is_duplicate { " · DUPLICATE" } else { "" },
                a.channel_trade_no
                    .as_deref()
                    .map(|t| format!(" · trade no {t}"))
                    .unwrap_or_default()
            ),
        ));
        // The channel order's messages and its refunds' (they share the channel): one read.
        let about: Vec<String> = std::iter::once(a.out_trade_no.clone())
            .chain(
                refunds
                    .iter()
                    .filter(|r| r.attempt_id == a.id)
                    .map(|r| r.out_refund_no.clone()),
            )
            .collect();
        for m in state.store.channel_messages(a.channel, &about).await? {
            // The same answer again and again (a payer's page polling, the query schedule) is
            // one line with how often and until when.
            let repeated = match (m.repeats, m.last_at) {
                (n, Some(last)) if n > 1 => format!(" · {n} times, the last at {}", when(last)),
                _ => String::new(),
            };
            let mut e = entry(
                m.received_at,
                "channel",
                format!(
                    "{} from {}: {}",
                    m.source.replace('_', " "),
                    m.channel,
                    m.observed
                ),
                format!("→ {}{repeated}", m.verdict),
            );
            e.content = match m.content.as_deref() {
                Some(c) => Some(
                    crate::privacy::masked(c)
                        .unwrap_or_else(|| "(not shown: neither JSON nor a form)".into()),
                ),
                None if m.source.ends_with("notification") => {
                    Some("(content cleared after the retention)".into())
                }
                None => None,
            };
            out.push(e);
        }
    }
    for r in &refunds {
        out.push(entry(
            r.created_at.0,
            "refund",
            format!("{} refund of {}", r.kind.as_str(), yuan(r.amount.minor)),
            format!(
                "{} · out_refund_no {} · now {}{}",
                r.id,
                r.out_refund_no,
                r.status.as_str(),
                r.failure_reason
                    .as_deref()
                    .map(|f| format!(" ({f})"))
                    .unwrap_or_default()
            ),
        ));
    }
    let mut failed_events = Vec::new();
    for e in state.store.events_of(id).await? {
        out.push(entry(
            e.created_at.0,
            "event",
            format!("event {}", e.event_type),
            format!("{} · {}", e.id, e.delivery_status.as_str()),
        ));
        for d in state.store.delivery_attempts(&e.id).await? {
            let result = answer_of(d.status_code, d.error.as_deref()).unwrap_or_else(|| "?".into());
            out.push(entry(
                d.attempted_at.0,
                "delivery",
                format!("delivery of {} to {}", e.event_type, d.destination),
                format!("{result} in {} ms", d.duration_ms),
            ));
        }
        if e.delivery_status == payonce_store::DeliveryStatus::Failed {
            failed_events.push(EventView {
                id: e.id,
                kind: e.event_type,
                status: "failed".into(),
                tries: e.delivery_count,
                last: e.last_error.unwrap_or_default(),
                order_id: e.order_id,
            });
        }
    }
    for i in state.store.reconciliation_items_of_order(id).await? {
        out.push(entry(
            i.created_at,
            "reconciliation",
            format!("reconciliation: {}", i.class),
            format!("{} · {} ({})", i.reference, i.detail, i.reconciliation_id),
        ));
    }
    let mut open_items = Vec::new();
    for a in state.store.abnormal_of_order(id).await? {
        out.push(entry(
            a.created_at,
            "abnormal",
            format!("needs a person: {}", a.kind),
            format!("{} · {}", a.reference, a.detail),
        ));
        if let Some(at) = a.resolved_at {
            let by = a.resolved_by.clone().unwrap_or_default();
            out.push(entry(
                at,
                "abnormal",
                format!("resolved by {by}: {}", a.kind),
                a.resolution.clone().unwrap_or_default(),
            ));
        } else {
            open_items.push(AbnormalView {
                since: when(a.created_at),
                id: a.id,
                kind: a.kind,
                reference: a.reference,
                detail: a.detail,
                order_id: Some(id.to_string()),
            });
        }
    }
    for e in state.store.audit_of_order(id).await? {
        out.push(entry(
            e.at,
            "audit",
            format!("{} by {}", e.action.replace('_', " "), e.operator),
            if e.note.is_empty() {
                e.target
            } else {
                format!("{} · “{}”", e.target, e.note)
            },
        ));
    }
    // Same instant: the order of kinds above (an order before its attempt, a fact before its event).
    out.sort_by_key(|e| e.at_ms);
    Ok(Some((order, out, open_items, failed_events)))
}

// ---------------------------------------------------------------------------------------------
// Actions

fn back_to(form: &HashMap<String, String>) -> String {
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
async fn retry(state: &AppState, reference: &str, order: Option<&Order>) -> String {
    let Some(order) = order else {
        return "nothing to ask about: no order found".into();
    };
    if let Ok(attempts) = state.store.attempts_of(&order.id).await
        && let Some(a) = attempts
            .iter()
            .find(|a| a.id.as_str() == reference || a.out_trade_no == reference)
    {
        return match payments::sync_attempt(state, a).await {
            Ok(applied) => format!("queried {}: {}", a.id, applied_name(&applied)),
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
async fn push_refund(state: &AppState, r: payonce_store::Refund, label: &str) -> String {
    let rid = r.id.to_string();
    match crate::refunding::settle_refund(state, r).await {
        Some(r) => format!("{label} {rid} now {}", r.status.as_str()),
        None => format!("{label} {rid}: the channel gave no answer"),
    }
}

fn applied_name(a: &payonce_store::OutcomeApplied) -> String {
    match a {
        payonce_store::OutcomeApplied::Replay => "nothing new".into(),
        payonce_store::OutcomeApplied::UnknownTradeNo => "unknown order number".into(),
        payonce_store::OutcomeApplied::AmountMismatch { reported, .. } => {
            format!("amount mismatch (channel says {reported})")
        }
        payonce_store::OutcomeApplied::Applied { attempt, .. } => {
            format!("attempt {}", attempt.status.as_str())
        }
    }
}

/// Pushes the refund of a duplicate payment now (the refunder would, on its schedule).
async fn refund_duplicate(state: &AppState, reference: &str, order: Option<&Order>) -> String {
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
struct SecretPage<'a> {
    operator: Option<&'a str>,
    csrf: &'a str,
    app_id: &'a str,
    secret: &'a str,
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

// ---------------------------------------------------------------------------------------------
// Reconciliation runs

struct ItemView {
    class: String,
    reference: String,
    order_id: Option<String>,
    amounts: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "console_reconciliation.html")]
struct ReconciliationPage<'a> {
    operator: Option<&'a str>,
    csrf: &'a str,
    run: RunView,
    reason: String,
    items: Vec<ItemView>,
}

pub async fn reconciliation(
    State(state): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
) -> Response {
    let run = match state.store.reconciliation(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => return refused(StatusCode::NOT_FOUND, "No such reconciliation run."),
        Err(e) => return failed(e),
    };
    let items = match state.store.reconciliation_items(&id, None, None, 500).await {
        Ok(items) => items,
        Err(e) => return failed(e),
    };
    let items = items
        .into_iter()
        .map(|i| ItemView {
            amounts: match (i.local_amount, i.channel_amount) {
                (Some(l), Some(c)) => format!("here {} / channel {}", yuan(l), yuan(c)),
                (Some(l), None) => format!("here {}", yuan(l)),
                (None, Some(c)) => format!("channel {}", yuan(c)),
                (None, None) => String::new(),
            },
            class: i.class,
            reference: i.reference,
            order_id: i.order_id,
            detail: i.detail,
        })
        .collect();
    let view = RunView {
        started: when(run.started_at),
        summary: classes_of(&run.summary),
        id: run.id,
        channel: run.channel,
        bill_date: run.bill_date,
        status: run.status,
    };
    html(
        StatusCode::OK,
        ReconciliationPage {
            operator: Some(&op.name),
            csrf: &op.csrf,
            run: view,
            reason: run.reason.unwrap_or_default(),
            items,
        }
        .render(),
    )
}
