//! What every server-rendered page (the cashier, the console) answers with: HTML, never cached,
//! never framed, with its own Content-Security-Policy and referrer policy.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A family of pages' policies.
pub struct PagePolicy {
    pub csp: &'static str,
    pub referrer: &'static str,
}

/// Sets the page headers on any answer of the family (redirects and JSON calls included).
pub fn apply(resp: &mut Response, policy: &PagePolicy) {
    let h = resp.headers_mut();
    h.insert("referrer-policy", HeaderValue::from_static(policy.referrer));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(policy.csp),
    );
}

/// A rendered page (a template that fails to render is a 500, logged).
pub fn html(
    status: StatusCode,
    body: Result<String, askama::Error>,
    policy: &PagePolicy,
) -> Response {
    let mut resp = match body {
        Ok(b) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            b,
        )
            .into_response(),
        Err(e) => crate::error::ApiError::internal(e).into_response(),
    };
    apply(&mut resp, policy);
    resp
}
