//! The hosted cashier page: the payer's side of the defence. A business asks for a short-lived
//! link to one order (`POST /v1/orders/{id}/checkout`); the link's token is sealed with the
//! master key (AES-GCM: unreadable, unforgeable) and names that order, its expiry, the return
//! URL and the language, and grants nothing else. The page offers the channels configured here;
//! choosing one POSTs (never a GET: link previews fetch GETs) to a prepay through the same
//! engine as the API, so the same guarantees hold (one channel order, the same credential
//! reused, the previous channel order closed on a switch). The page then asks "is it paid yet?"
//! (`/status`, a compensation query at most once a second per order) instead of letting the
//! payer pay again. Arriving at `return_url` is navigation, not proof of payment.

use crate::engine::payments::{self, PaymentError, PrepayParams};
use crate::error::{ApiError, FieldError};
use crate::http::request::{self, Body, Checked, Field, HttpUrl, Invalid, Problems, Text};
use crate::state::AppState;
use askama::Template;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use payonce_core::{ChannelName, OrderId, OrderStatus, Timestamp};
use payonce_store::Order;
use serde::{Deserialize, Serialize};

/// The associated data every checkout token is sealed with: a token of another kind (an
/// encrypted webhook secret) never opens as one.
const CONTEXT: &str = "payonce-checkout-link";

/// What a checkout link grants: this order, until `e` (Unix ms), then back to `r`, in `l`.
#[derive(Serialize, Deserialize)]
struct Grant {
    o: String,
    e: i64,
    r: Option<String>,
    l: Option<String>,
}

// What reads the body and what the document shows (`http::request`).
/// The body of `POST /v1/orders/{id}/checkout`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CheckoutRequest)]
pub struct CheckoutRequest {
    /// Where the page sends the payer once the order is paid: an http(s) URL whose host is the
    /// app's webhook host or one it allows (as for `notify_url`), else 422
    /// `return_url_not_allowed`. Arriving there is navigation, not proof of payment.
    #[schema(
        value_type = Option<String>,
        min_length = 1,
        max_length = 512,
        pattern = r"^https?://[^\u0000-\u0020\u007F-\u009F]+$"
    )]
    return_url: Checked<HttpUrl<512>>,
    /// `zh` or `en`; by default the payer's `Accept-Language`.
    #[schema(value_type = Option<String>, pattern = "^(zh|en)$")]
    locale: Checked<Locale>,
}

/// The checkout page's language: `zh` or `en`.
struct Locale(String);

impl Field for Locale {
    fn check(v: serde_json::Value) -> Result<Self, Invalid> {
        let l = request::text(v, 2)?;
        if l == "zh" || l == "en" {
            Ok(Locale(l))
        } else {
            Err("must be zh or en".into())
        }
    }
}

/// The body of the page's `POST /checkout/{token}/prepay` (not in the document: the page's own
/// call). Anything but a configured channel is `unknown_channel`; other keys are ignored.
#[derive(Deserialize)]
pub struct CheckoutPrepay {
    channel: Checked<Text<32>>,
}

/// A checkout link.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CheckoutLinkView {
    /// `{public_url}/checkout/{token}`: give it to the payer only.
    pub url: String,
    /// min(order expiry, now + the link lifetime, 30 min by default).
    #[schema(format = DateTime)]
    pub expires_at: String,
}

/// A link to a hosted cashier page for this order.
#[utoipa::path(post, path = "/v1/orders/{id}/checkout", operation_id = "checkout_link", tag = "orders", request_body = CheckoutRequest,
    params(("id" = String, Path, description = "ord_…"), crate::gateway::idempotency::IdempotencyKeyHeader),
    responses((status = 200, description = "the link", body = CheckoutLinkView),
              (status = 404, description = "not_found", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 422, description = "return_url_not_allowed", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn create_link(
    State(state): State<AppState>,
    crate::gateway::auth::Authed(app): crate::gateway::auth::Authed,
    Path(id): Path<String>,
    Body { fields, unknown }: Body<CheckoutRequest>,
) -> Result<Json<CheckoutLinkView>, ApiError> {
    let mut p = Problems::new(unknown);
    let return_url = p.optional("return_url", fields.return_url).map(|u| u.0);
    let locale = p.optional("locale", fields.locale).map(|l| l.0);
    p.finish()?;
    if return_url
        .as_deref()
        .is_some_and(|u| !crate::engine::webhooks::notify_url_allowed(&app, u))
    {
        let message = "its host is neither the app's webhook host nor one the app allows";
        let mut e =
            ApiError::unprocessable("return_url_not_allowed", format!("return_url: {message}"));
        e.errors.push(FieldError {
            field: "return_url".into(),
            message: message.into(),
        });
        return Err(e);
    }
    let order_id = OrderId::parse(&id).map_err(|_| ApiError::not_found("order"))?;
    let order = state
        .store
        .order(&app.id, &order_id)
        .await?
        .ok_or_else(|| ApiError::not_found("order"))?;
    let now = state.clock.now();
    let until = order
        .expires_at
        .0
        .min(now.0 + state.config.checkout_link_ttl.as_millis() as i64);
    let grant = Grant {
        o: order.id.to_string(),
        e: until,
        r: return_url,
        l: locale,
    };
    let token = state.master_key.seal_token(
        &serde_json::to_string(&grant).expect("a grant serialises"),
        CONTEXT,
    );
    Ok(Json(CheckoutLinkView {
        url: format!(
            "{}/checkout/{token}",
            state.config.public_url.trim_end_matches('/')
        ),
        expires_at: Timestamp(until).to_rfc3339(),
    }))
}

/// Why a link does not open: never which (an unknown token and a forged one look alike).
enum Refused {
    NotALink,
    Expired,
}

async fn open(state: &AppState, token: &str) -> Result<(Grant, Order), Refused> {
    let plain = state
        .master_key
        .open_token(token, CONTEXT)
        .map_err(|_| Refused::NotALink)?;
    let grant: Grant = serde_json::from_str(&plain).map_err(|_| Refused::NotALink)?;
    let id = OrderId::parse(&grant.o).map_err(|_| Refused::NotALink)?;
    let order = state
        .store
        .order_by_id(&id)
        .await
        .ok()
        .flatten()
        .ok_or(Refused::NotALink)?;
    let now = state.clock.now();
    // Past the link's time the page still tells how the order ended (paid, closed, expired);
    // only an order that could still be paid needs a new link.
    if now.0 >= grant.e && order.status.is_open() && now < order.expires_at {
        return Err(Refused::Expired);
    }
    Ok((grant, order))
}

/// The page's language: the link's, else the first of Accept-Language that is zh or en.
fn language(grant_locale: Option<&str>, headers: &HeaderMap) -> Lang {
    if let Some(l) = grant_locale {
        return if l == "zh" { Lang::Zh } else { Lang::En };
    }
    let accept = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    for part in accept.split(',') {
        let tag = part
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if tag.starts_with("zh") {
            return Lang::Zh;
        }
        if tag.starts_with("en") {
            return Lang::En;
        }
    }
    Lang::En
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Lang {
    Zh,
    En,
}

/// Every string the page shows, in both languages.
struct Words {
    lang: &'static str,
    title: &'static str,
    pay_with: &'static str,
    scan_hint: &'static str,
    paid: &'static str,
    closed: &'static str,
    expired: &'static str,
    link_expired: &'static str,
    not_a_link: &'static str,
    waiting: &'static str,
    continue_to_shop: &'static str,
    failed: &'static str,
    open_pay_page: &'static str,
}

const EN: Words = Words {
    lang: "en",
    title: "Pay",
    pay_with: "Choose how to pay",
    scan_hint: "Scan this code with the app on another device, or open this page in WeChat or Alipay.",
    paid: "Paid. Thank you!",
    closed: "This order is closed; it can no longer be paid.",
    expired: "This order has expired; it can no longer be paid.",
    link_expired: "This payment link has expired. Ask the shop for a new one.",
    not_a_link: "This is not a payment link.",
    waiting: "Waiting for your payment…",
    continue_to_shop: "Back to the shop",
    failed: "That did not work; please try again.",
    open_pay_page: "Open the payment page",
};

const ZH: Words = Words {
    lang: "zh-CN",
    title: "支付",
    pay_with: "选择支付方式",
    scan_hint: "请用另一台设备上的应用扫码，或在微信、支付宝中打开本页面。",
    paid: "支付成功，谢谢！",
    closed: "订单已关闭，无法再支付。",
    expired: "订单已过期，无法再支付。",
    link_expired: "支付链接已过期，请向商户重新获取。",
    not_a_link: "这不是一个支付链接。",
    waiting: "等待支付结果…",
    continue_to_shop: "返回商户",
    failed: "操作未成功，请重试。",
    open_pay_page: "打开支付页面",
};

fn words(lang: Lang) -> &'static Words {
    match lang {
        Lang::Zh => &ZH,
        Lang::En => &EN,
    }
}

fn channel_label(c: ChannelName, lang: Lang) -> &'static str {
    match (c, lang) {
        (ChannelName::Wechatpay, Lang::Zh) => "微信支付",
        (ChannelName::Wechatpay, Lang::En) => "WeChat Pay",
        (ChannelName::Alipay, Lang::Zh) => "支付宝",
        (ChannelName::Alipay, Lang::En) => "Alipay",
        (ChannelName::Unionpay, Lang::Zh) => "银联",
        (ChannelName::Unionpay, Lang::En) => "UnionPay",
        (ChannelName::Sandbox, _) => "Sandbox",
    }
}

/// What the page shows of an order's state: `open`, `paid`, `closed` or `expired`.
fn phase(order: &Order, now: Timestamp) -> &'static str {
    match order.status {
        OrderStatus::Paid | OrderStatus::PartiallyRefunded | OrderStatus::Refunded => "paid",
        OrderStatus::Closed if order.closed_by == Some(payonce_core::order::ClosedBy::Expiry) => {
            "expired"
        }
        OrderStatus::Closed => "closed",
        _ if now >= order.expires_at => "expired",
        _ => "open",
    }
}

struct ChannelButton {
    name: &'static str,
    label: &'static str,
}

#[derive(Template)]
#[template(path = "checkout.html")]
struct CheckoutPage<'a> {
    w: &'a Words,
    token: &'a str,
    merchant: String,
    subject: String,
    amount: String,
    phase: &'static str,
    message: &'static str,
    return_url: Option<String>,
    channels: Vec<ChannelButton>,
}

#[derive(Template)]
#[template(path = "checkout_refused.html")]
struct RefusedPage<'a> {
    w: &'a Words,
    message: &'static str,
}

/// The cashier's pages: its own script and style only, no inline script; no referrer (the
/// token is in the URL); the form may post only to a channel's gateway (UnionPay).
const POLICY: crate::http::pages::PagePolicy = crate::http::pages::PagePolicy {
    csp: "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action http: https:; frame-ancestors 'none'; base-uri 'none'",
    referrer: "no-referrer",
};

fn page_headers(resp: &mut Response) {
    crate::http::pages::apply(resp, &POLICY);
}

fn html(status: StatusCode, body: Result<String, askama::Error>) -> Response {
    crate::http::pages::html(status, body, &POLICY)
}

fn yuan(fen: i64) -> String {
    format!("¥{}.{:02}", fen / 100, fen % 100)
}

/// `GET /checkout/{token}`: the page.
pub async fn page(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (grant, order) = match open(&state, &token).await {
        Ok(g) => g,
        Err(why) => {
            let w = words(language(None, &headers));
            let (status, message) = match why {
                Refused::NotALink => (StatusCode::NOT_FOUND, w.not_a_link),
                Refused::Expired => (StatusCode::GONE, w.link_expired),
            };
            return html(status, RefusedPage { w, message }.render());
        }
    };
    let lang = language(grant.l.as_deref(), &headers);
    let w = words(lang);
    let merchant = state
        .store
        .app(&order.app_id)
        .await
        .ok()
        .flatten()
        .map(|a| a.name)
        .unwrap_or_default();
    let phase = phase(&order, state.clock.now());
    let message = match phase {
        "paid" => w.paid,
        "closed" => w.closed,
        "expired" => w.expired,
        _ => "",
    };
    let channels = state
        .channels
        .names()
        .into_iter()
        .map(|c| ChannelButton {
            name: c.as_str(),
            label: channel_label(c, lang),
        })
        .collect();
    let page = CheckoutPage {
        w,
        token: &token,
        merchant,
        subject: order.subject.clone(),
        amount: yuan(order.amount.minor),
        phase,
        message,
        return_url: grant.r.clone(),
        channels,
    };
    html(StatusCode::OK, page.render())
}

/// What the page needs to show a payment credential.
#[derive(Serialize)]
struct CheckoutPrepaid {
    channel: &'static str,
    /// `qr` (WeChat Native, Alipay: `qr_svg` is an SVG data URI), `form` (UnionPay: post
    /// `fields` to `action`), or `link` (sandbox: open `href`).
    kind: &'static str,
    qr_svg: Option<String>,
    action: Option<String>,
    fields: Option<serde_json::Value>,
    href: Option<String>,
    reused: bool,
}

fn refused_json(status: StatusCode, code: &str) -> Response {
    let mut r = (status, Json(serde_json::json!({"error": code}))).into_response();
    page_headers(&mut r);
    r
}

/// Channel orders one order may open through its checkout links: far more than a payer
/// switching between channels needs, far fewer than a script would open.
const MAX_CHECKOUT_ATTEMPTS: usize = 12;

/// `POST /checkout/{token}/prepay` `{channel}`: a prepay through the engine.
pub async fn prepay(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Body { fields, .. }: Body<CheckoutPrepay>,
) -> Response {
    let (_, order) = match open(&state, &token).await {
        Ok(g) => g,
        Err(Refused::NotALink) => return refused_json(StatusCode::NOT_FOUND, "not_a_link"),
        Err(Refused::Expired) => return refused_json(StatusCode::GONE, "link_expired"),
    };
    let channel = match fields.channel {
        Checked::Valid(Text(c)) => ChannelName::parse(&c).ok(),
        _ => None,
    }
    .filter(|c| state.channels.get(*c).is_some());
    let Some(channel) = channel else {
        return refused_json(StatusCode::BAD_REQUEST, "unknown_channel");
    };
    // A link is a bearer capability anyone holding it can replay: each prepay may be a channel
    // call, so the order's checkout prepays are rate-limited, and the channel orders a link can
    // open are capped (reusing the open one of the same channel stays possible).
    if let Err(wait) = state.limits.check_checkout(order.id.as_str()) {
        metrics::counter!("payonce_rate_limited_total", "kind" => "checkout", "app" => order.app_id.to_string()).increment(1);
        let mut r = refused_json(StatusCode::TOO_MANY_REQUESTS, "too_many_requests");
        r.headers_mut()
            .insert(header::RETRY_AFTER, (wait.as_secs() + 1).into());
        return r;
    }
    match state.store.attempts_of(&order.id).await {
        Ok(attempts)
            if attempts.len() >= MAX_CHECKOUT_ATTEMPTS
                && !attempts
                    .iter()
                    .any(|a| a.channel == channel && a.status.is_active()) =>
        {
            return refused_json(StatusCode::CONFLICT, "too_many_attempts");
        }
        Ok(_) => {}
        Err(e) => return ApiError::from(e).into_response(),
    }
    let Ok(Some(app)) = state.store.app(&order.app_id).await else {
        return refused_json(StatusCode::NOT_FOUND, "not_a_link");
    };
    let params = PrepayParams {
        channel,
        method: channel.methods()[0],
        payer: None,
    };
    let deadline =
        crate::gateway::waiting::Deadline::after(&state.clock, state.config.prepay_wait());
    let answer = match payments::prepay(&state, &app, &order.id, &params, &deadline).await {
        Ok(a) => a,
        Err(PaymentError::AlreadyPaid(_)) => {
            return refused_json(StatusCode::CONFLICT, "order_already_paid");
        }
        Err(PaymentError::Closed(_)) => return refused_json(StatusCode::CONFLICT, "order_closed"),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let c = &answer.credential;
    let text = |k: &str| c.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let out = match channel {
        ChannelName::Wechatpay | ChannelName::Alipay => {
            let data = text("code_url")
                .or_else(|| text("qr_code"))
                .unwrap_or_default();
            CheckoutPrepaid {
                channel: channel.as_str(),
                kind: "qr",
                qr_svg: qr_data_uri(&data),
                action: None,
                fields: None,
                href: None,
                reused: answer.reused,
            }
        }
        ChannelName::Unionpay => CheckoutPrepaid {
            channel: channel.as_str(),
            kind: "form",
            qr_svg: None,
            action: text("action"),
            fields: c.get("fields").cloned(),
            href: None,
            reused: answer.reused,
        },
        ChannelName::Sandbox => CheckoutPrepaid {
            channel: channel.as_str(),
            kind: "link",
            qr_svg: qr_data_uri(&text("code_url").unwrap_or_default()),
            action: None,
            fields: None,
            href: text("pay_url"),
            reused: answer.reused,
        },
    };
    let mut r = Json(out).into_response();
    page_headers(&mut r);
    r
}

/// A QR code of `data` as an SVG data URI (rendered here: no outside service sees the code).
fn qr_data_uri(data: &str) -> Option<String> {
    use base64::Engine as _;
    let code = qrcode::QrCode::new(data.as_bytes()).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(220, 220)
        .quiet_zone(true)
        .build();
    Some(format!(
        "data:image/svg+xml;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(svg)
    ))
}

/// `GET /checkout/{token}/status`: the order's phase, after asking the channel about open
/// attempts (at most once a second per order, shared with `?sync=true`).
pub async fn status(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let (grant, order) = match open(&state, &token).await {
        Ok(g) => g,
        Err(Refused::NotALink) => return refused_json(StatusCode::NOT_FOUND, "not_a_link"),
        Err(Refused::Expired) => return refused_json(StatusCode::GONE, "link_expired"),
    };
    let order = match payments::sync_open_order(&state, order).await {
        Ok(o) => o,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let phase = phase(&order, state.clock.now());
    let mut r = Json(serde_json::json!({"phase": phase, "return_url": if phase == "paid" { grant.r } else { None }})).into_response();
    page_headers(&mut r);
    r
}

/// The page's script and style: files of their own (the CSP allows no inline script).
pub async fn script() -> Response {
    let mut r = (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../templates/checkout.js"),
    )
        .into_response();
    r.headers_mut().insert(
        "cache-control",
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

pub async fn style() -> Response {
    let mut r = (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../templates/checkout.css"),
    )
        .into_response();
    r.headers_mut().insert(
        "cache-control",
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_comes_from_the_link_then_accept_language() {
        let mut h = HeaderMap::new();
        assert!(language(None, &h) == Lang::En);
        h.insert(
            header::ACCEPT_LANGUAGE,
            HeaderValue::from_static("fr;q=1, zh-CN;q=0.9, en;q=0.8"),
        );
        assert!(language(None, &h) == Lang::Zh);
        assert!(language(Some("en"), &h) == Lang::En);
    }

    #[test]
    fn qr_codes_are_svg_data_uris() {
        let uri = qr_data_uri("weixin://wxpay/bizpayurl?pr=abc").unwrap();
        assert!(uri.starts_with("data:image/svg+xml;base64,"));
    }
}
