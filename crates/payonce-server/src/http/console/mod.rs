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
use crate::engine::payments;
use crate::gateway::ratelimit::Surface;
use crate::state::AppState;
use askama::Template;
use axum::extract::{Form, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use payonce_core::{OrderId, Timestamp};
use payonce_store::{AuditEntry, ConsoleSession, Order};
use std::collections::HashMap;

mod actions;
mod pages;
mod session;
mod timeline;

pub use actions::{abnormal_action, resend_event, rotate_secret};
use pages::*;
pub use pages::{home, order, reconciliation, search};
use session::*;
pub use session::{
    Operator, end_session, sessions, sign_in, sign_in_page, sign_out, token_generation,
};
use timeline::*;

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
        include_str!("../../../templates/console.css"),
    )
}
