//! HTTP routes, mirroring the URL tree: `/v1/orders…`, `/notify/{channel}`, operations.

pub mod admin;
pub mod body;
pub mod checkout;
pub mod console;
pub mod coupons;
pub mod notify;
pub mod openapi;
pub mod ops;
pub mod orders;
pub mod pages;
pub mod refunds;
pub mod request;

use crate::state::AppState;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router(state: AppState) -> Router {
    let (router, _) = documented_router(&state);
    router
}

/// The router and the OpenAPI document of exactly its routes.
pub fn documented_router(state: &AppState) -> (Router, serde_json::Value) {
    // Each route is registered together with its documentation (`routes!` reads the
    // handler's `#[utoipa::path]`): a route cannot exist undocumented, nor the reverse.
    let v1 = OpenApiRouter::new()
        .routes(routes!(orders::create, orders::find_by_merchant_no))
        .routes(routes!(orders::get))
        .routes(routes!(orders::prepay))
        .routes(routes!(orders::close))
        .routes(routes!(checkout::create_link))
        .routes(routes!(coupons::create))
        .routes(routes!(coupons::get))
        .routes(routes!(refunds::create))
        .routes(routes!(refunds::get))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::gateway::idempotency::layer,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            rate_limit,
        ));
    let admin = OpenApiRouter::new()
        .routes(routes!(admin::abnormal))
        .routes(routes!(admin::events))
        .routes(routes!(admin::resend_failed))
        .routes(routes!(admin::event))
        .routes(routes!(admin::resend))
        .routes(routes!(admin::rotate_webhook_secret))
        .routes(routes!(admin::reconciliations, admin::run_reconciliation))
        .routes(routes!(admin::reconciliation))
        .routes(routes!(admin::channel_accounts, admin::add_channel_account))
        .routes(routes!(admin::rotate_channel_account))
        .routes(routes!(admin::enable_or_disable_channel_account))
        .routes(routes!(admin::bind_channel_account))
        // `route_layer`: the gate guards these routes only. As a `layer` it also wrapped the
        // router's fallback, so every unknown path (a browser's /favicon.ico) counted as a
        // wrong admin token and spent the address's budget.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin::gate,
        ));
    let (documented, doc) = OpenApiRouter::new()
        .merge(v1)
        .merge(admin)
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .split_for_parts();
    let doc = openapi::finish(doc, state);
    // Outside the document: the channels' notification endpoints (each channel's own format,
    // see docs/channels.md), the HTML pages and the document itself.
    let router = documented
        .route("/notify/{channel}", post(notify::receive))
        .route(
            "/notify/{channel}/{account}",
            post(notify::receive_for_account),
        )
        // The hosted cashier page and its own calls (the token in the path is the capability).
        .route("/checkout/assets/checkout.js", get(checkout::script))
        .route("/checkout/assets/checkout.css", get(checkout::style))
        .route("/checkout/{token}", get(checkout::page))
        .route("/checkout/{token}/prepay", post(checkout::prepay))
        .route("/checkout/{token}/status", get(checkout::status))
        .route("/openapi.json", openapi::serve(&doc))
        .route("/docs", get(openapi::docs))
        .route("/docs.js", get(openapi::docs_js))
        // The operator console: its own session cookie and CSRF tokens (see console/session.rs).
        .route("/console", get(console::home))
        .route("/console/assets/console.css", get(console::style))
        .route(
            "/console/sign-in",
            get(console::sign_in_page).post(console::sign_in),
        )
        .route("/console/sign-out", post(console::sign_out))
        .route("/console/sessions", get(console::sessions))
        .route("/console/sessions/{id}/end", post(console::end_session))
        .route("/console/orders", get(console::search))
        .route("/console/orders/{id}", get(console::order))
        .route(
            "/console/abnormal/{id}/{action}",
            post(console::abnormal_action),
        )
        .route("/console/events/{id}/resend", post(console::resend_event))
        .route(
            "/console/apps/{id}/rotate-webhook-secret",
            post(console::rotate_secret),
        )
        .route(
            "/console/reconciliations/{id}",
            get(console::reconciliation),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            answer_when_durable,
        ))
        .layer(DefaultBodyLimit::max(state.config.body_limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            shed_load,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            read_whole_request,
        ))
        .layer(axum::middleware::from_fn(security_headers))
        .layer(axum::middleware::from_fn(request_id))
        .with_state(state.clone());
    (router, doc)
}

/// The per-app token bucket of the business API: authenticate first (the app is the key; a
/// request without a valid secret is a 401, and costs no app anything), then take a token.
async fn rate_limit(
    axum::extract::State(state): axum::extract::State<AppState>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if state.config.rate_limit.is_none() {
        return next.run(req).await;
    }
    let app = match crate::gateway::auth::authenticate(&state, req.headers()).await {
        Ok(app) => app,
        Err(e) => return e.into_response(),
    };
    // Shared across instances through Redis when it is configured; else (or when Redis does
    // not answer) this instance's own bucket.
    let shared = match (&state.redis, state.config.rate_limit) {
        (Some(redis), Some(spec)) => redis.take_token(app.id.as_str(), spec).await,
        _ => None,
    };
    if let Err(wait) = shared.unwrap_or_else(|| state.limits.check_app(app.id.as_str())) {
        metrics::counter!("payonce_rate_limited_total", "kind" => "api", "app" => app.id.to_string()).increment(1);
        return crate::error::ApiError::rate_limited(wait).into_response();
    }
    req.extensions_mut()
        .insert(crate::gateway::auth::Authed(app));
    next.run(req).await
}

/// No answer before what it says is on disk (I5). A request's own writes are committed before
/// its handler goes on; but on SQLite, where concurrent transactions share one commit
/// (`payonce_store::group_commit`), a transaction that decided to write nothing may have read a
/// batch-mate's writes that are not on disk yet: the answer waits for that batch, and becomes a
/// 503 if it failed. Costs nothing when the request read nothing uncommitted (and always on
/// PostgreSQL).
async fn answer_when_durable(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (response, fence) = payonce_store::fenced(next.run(req)).await;
    match state.store.durable(fence).await {
        Ok(()) => response,
        Err(e) => crate::error::ApiError::from(e).into_response(),
    }
}

/// How long a notification (or health check) may wait for a permit before it is shed.
const NOTIFICATION_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The connection a request came on (see `connections`): when its first byte arrived.
#[derive(Clone, Debug)]
pub struct ConnHandle(pub std::sync::Arc<crate::gateway::connections::Conn>);

/// The whole request — headers and body — must arrive within `request_timeout` of its first
/// byte, or it is answered `408` and its connection closed. Nothing else happens before: the
/// load-shedding permit is taken only for a request that is entirely here, so a client that
/// sends slowly (on one connection or five hundred) holds sockets, never the capacity that
/// complete requests, notifications and health checks need.
///
/// A body over `body_limit` is read (and discarded) only a bounded while longer, and reaches
/// the handler cut to `body_limit + 1` bytes, so each route answers its own 413 (problem+json,
/// or the channel's failure format on `/notify`).
async fn read_whole_request(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let conn = req.extensions().get::<ConnHandle>().cloned();
    let started = conn
        .as_ref()
        .map(|c| c.0.request_started())
        .unwrap_or_else(tokio::time::Instant::now);
    let deadline = started + state.config.request_timeout;
    let (parts, body) = req.into_parts();
    let limit = state.config.body_limit;
    let bytes = match tokio::time::timeout_at(deadline, body::read_limited(body, limit)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(body::TooLarge)) => axum::body::Bytes::from(vec![0; limit + 1]),
        Err(_) => {
            metrics::counter!("payonce_request_timeouts_total").increment(1);
            tracing::info!("request not received whole within the request timeout");
            let mut resp = crate::error::ApiError::request_timeout().into_response();
            resp.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            return resp;
        }
    };
    if let Some(c) = &conn {
        c.0.mark_handling();
    }
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
    .await
}

/// Load shedding before the process suffers: every (whole) request takes a permit or is
/// answered `503 overloaded` at once. Channel notifications and health checks draw from their
/// own budget, so a flood of API calls never makes payonce miss a payment notification.
///
/// The request then runs in its own task holding the permit: a client that hangs up must not
/// cut a request off in the middle of a database transaction or between a channel call and the
/// recording of its outcome — the task finishes (commits, or rolls back) even if nobody waits
/// for the answer — and until it has, it still counts against the budget (a permit dropped with
/// the abandoned answer let 280 hung-up prepays run 220 channel calls under a budget of 50).
async fn shed_load(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument as _;
    let path = req.uri().path();
    let priority = path.starts_with("/notify/") || path == "/healthz" || path == "/readyz";
    // A business call over the budget is shed at once (the client retries). A channel
    // notification waits its turn a while instead: a flash sale's payments arrive as one burst,
    // and a 503 would push each back by the channel's retry interval (15 s and more).
    let permit = if priority {
        tokio::time::timeout(
            NOTIFICATION_QUEUE_WAIT,
            state.priority_in_flight.clone().acquire_owned(),
        )
        .await
        .ok()
        .and_then(Result::ok)
    } else {
        state.in_flight.clone().try_acquire_owned().ok()
    };
    let Some(permit) = permit else {
        metrics::counter!("payonce_shed_total", "pool" => if priority { "priority" } else { "api" }).increment(1);
        return crate::error::ApiError::overloaded().into_response();
    };
    // The request's span (its id) goes along into the task.
    let task = async move {
        let resp = next.run(req).await;
        drop(permit);
        resp
    };
    match tokio::spawn(task.in_current_span()).await {
        Ok(resp) => resp,
        Err(e) => crate::error::ApiError::internal(e).into_response(),
    }
}

/// Headers every answer carries: no MIME sniffing anywhere; and on the HTML pages a CSP without
/// inline script, no framing, no referrer.
async fn security_headers(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::HeaderValue;
    // The console and the cashier set their own, stricter, headers.
    let html = req.uri().path() == "/docs";
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    if html {
        h.insert(
            "content-security-policy",
            HeaderValue::from_static("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
        );
        h.insert("x-frame-options", HeaderValue::from_static("DENY"));
        h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    }
    resp
}

/// Every request has an id: the caller's `X-Request-Id` (1–128 of `A-Za-z0-9._:-`), else a new
/// one. It is echoed in the answer's `X-Request-Id`, carried by every log line of the request
/// (its tracing span), and by a problem+json answer as `instance` (`urn:payonce:request:{id}`),
/// so a support ticket quoting any of them leads to the same log lines.
/// It is also where a business's W3C `traceparent` is continued: the request's span is its
/// child, and the handlers find the trace to keep (`TraceParent`) in the request's extensions.
async fn request_id(
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::HeaderValue;
    use tracing::Instrument as _;
    let given = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=128).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
        });
    let id = given
        .map(str::to_owned)
        .unwrap_or_else(|| format!("req_{}", uuid::Uuid::now_v7().simple()));
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), otel.name = %format!("HTTP {}", req.method()), otel.kind = "server");
    let incoming = crate::telemetry::extract(req.headers());
    crate::telemetry::set_parent(&span, incoming.clone());
    req.extensions_mut()
        .insert(TraceParent(crate::telemetry::traceparent_to_keep(
            &span, &incoming,
        )));
    let resp = next.run(req).instrument(span).await;
    let mut resp = if resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|c| c == "application/problem+json")
    {
        with_instance(resp, &id).await
    } else {
        resp
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// The `traceparent` of the trace a request belongs to (its span's when spans are recorded,
/// else the caller's), if any.
#[derive(Clone, Debug)]
pub struct TraceParent(pub Option<String>);

/// A problem+json answer with `instance` set to the request's id.
async fn with_instance(resp: axum::response::Response, id: &str) -> axum::response::Response {
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return axum::response::Response::from_parts(parts, axum::body::Body::empty());
    };
    let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(mut m)) => {
            m.insert(
                "instance".into(),
                serde_json::Value::String(format!("urn:payonce:request:{id}")),
            );
            serde_json::to_vec(&m).unwrap_or_else(|_| bytes.to_vec())
        }
        _ => bytes.to_vec(),
    };
    let mut parts = parts;
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    axum::response::Response::from_parts(parts, axum::body::Body::from(body))
}

/// The engine's refusals, as API.md names them.
impl From<crate::engine::payments::PaymentError> for crate::error::ApiError {
    fn from(e: crate::engine::payments::PaymentError) -> Self {
        use crate::engine::payments::PaymentError as E;
        use crate::error::ApiError;
        use crate::views;
        use axum::http::StatusCode;
        let view = |s: &crate::engine::payments::OrderSnapshot| {
            views::order(&s.order, &s.attempts, &s.refunds)
        };
        match e {
            E::NotFound(what) => ApiError::not_found(what),
            E::AlreadyPaid(s) => ApiError::order_already_paid(view(&s)),
            E::Closed(s) => ApiError::order_closed(view(&s)),
            E::InProgress(detail) => ApiError::request_in_progress(detail),
            E::ChannelRefused(code) => ApiError::channel_unavailable(
                StatusCode::BAD_GATEWAY,
                format!("the channel refused the request ({code})"),
            ),
            E::ChannelUnavailable(detail) => {
                ApiError::channel_unavailable(StatusCode::SERVICE_UNAVAILABLE, detail)
            }
            E::Store(e) => e.into(),
        }
    }
}
