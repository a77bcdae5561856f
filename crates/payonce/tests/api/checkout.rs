//! The hosted cashier page's server side on both stores (its behaviour in a browser is
//! `tests/browser/checkout.py`): a link grants one order and nothing else, cannot be forged or
//! stretched, keeps its token out of referrers and framing, and its prepay is the engine's
//! (the same channel order reused, POST only).

use payonce_testkit::{Backend, TestApp, store_tests};
use reqwest::StatusCode;
use serde_json::{Value, json};

store_tests!(
    a_link_grants_one_order_and_nothing_else,
    the_page_prepays_through_the_engine_and_says_how_the_order_ended
);

async fn link(app: &TestApp, order_id: &str, body: Value) -> reqwest::Response {
    app.post(&format!("/v1/orders/{order_id}/checkout"), body)
        .await
}

fn token_of(url: &str) -> String {
    url.rsplit('/').next().unwrap().to_owned()
}

async fn a_link_grants_one_order_and_nothing_else(b: Backend) {
    let Some(app) = crate::app(b).await else {
        return;
    };
    let order = app.create_order("CHK-1", 1_234).await;
    let id = order["id"].as_str().unwrap();
    let r = link(&app, id, json!({"locale": "zh"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let l: Value = r.json().await.unwrap();
    let url = l["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/checkout/", app.base)), "{url}");
    // Never past the order's own expiry (30 min by default), never longer than 30 min.
    let until = time::OffsetDateTime::parse(
        l["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let expires = time::OffsetDateTime::parse(
        order["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(until <= expires);
    // The page: the merchant, the amount, the language asked for; no referrer, no framing, no
    // inline script.
    let page = app.http.get(url).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let h = page.headers().clone();
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["x-frame-options"], "DENY");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let body = page.text().await.unwrap();
    assert!(
        body.contains("¥12.34") && body.contains("选择支付方式") && body.contains("test-shop"),
        "{body}"
    );
    assert!(!body.contains("<script>"), "no inline script");
    // A tampered token, another order's, or garbage: the same 404, never which.
    let token = token_of(url);
    let mut bytes = token.clone().into_bytes();
    bytes[10] = if bytes[10] == b'A' { b'B' } else { b'A' };
    for bad in [
        String::from_utf8(bytes).unwrap(),
        "nonsense".into(),
        format!("{token}x"),
    ] {
        let r = app
            .http
            .get(app.url(&format!("/checkout/{bad}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{bad}");
        let r = app
            .http
            .post(app.url(&format!("/checkout/{bad}/prepay")))
            .json(&json!({"channel": "sandbox"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    // Another app cannot get a link to this order; a return_url off the app's hosts is refused.
    let other = payonce_server::engine::apps::create_app(
        app.store.as_ref(),
        &app.state.master_key,
        &payonce_core::SystemClock,
        payonce_server::engine::apps::NewApp::named("other-shop"),
    )
    .await
    .unwrap();
    let r = app
        .http
        .post(app.url(&format!("/v1/orders/{id}/checkout")))
        .bearer_auth(&other.secret)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = link(
        &app,
        id,
        json!({"return_url": "https://evil.example/steal"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "return_url_not_allowed"
    );
    let r = link(&app, id, json!({"locale": "fr"})).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // A prepay is a POST: a GET (a chat app's link preview) pays for nothing.
    let r = app
        .http
        .get(app.url(&format!("/checkout/{token}/prepay")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        app.store
            .attempts_of(&payonce_core::OrderId::from_trusted(id.to_owned()))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn the_page_prepays_through_the_engine_and_says_how_the_order_ended(b: Backend) {
    let Some(app) = crate::app(b).await else {
        return;
    };
    let id = app.create_order("CHK-2", 500).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // (return_url: the browser scenarios, whose app's webhook host allows one.)
    let l: Value = link(&app, &id, json!({})).await.json().await.unwrap();
    let token = token_of(l["url"].as_str().unwrap());
    let prepay = |channel: &'static str| {
        let (http, url) = (
            app.http.clone(),
            app.url(&format!("/checkout/{token}/prepay")),
        );
        async move {
            http.post(url)
                .json(&json!({"channel": channel}))
                .send()
                .await
                .unwrap()
        }
    };
    let r = prepay("wechatpay").await;
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{text}");
    let first: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (first["kind"].as_str(), first["reused"].as_bool()),
        (Some("qr"), Some(false)),
        "{first}"
    );
    assert!(
        first["qr_svg"]
            .as_str()
            .unwrap()
            .starts_with("data:image/svg+xml;base64,")
    );
    let again: Value = prepay("wechatpay").await.json().await.unwrap();
    assert_eq!(
        again["reused"], true,
        "the same channel order, its credential reused"
    );
    let form: Value = prepay("unionpay").await.json().await.unwrap();
    assert_eq!(form["kind"], "form");
    assert!(
        form["action"]
            .as_str()
            .unwrap()
            .ends_with("/gateway/api/frontTransReq.do")
            && form["fields"]["signature"].is_string(),
        "{form}"
    );
    let sandbox: Value = prepay("sandbox").await.json().await.unwrap();
    assert_eq!(sandbox["kind"], "link");
    let attempts = app
        .store
        .attempts_of(&payonce_core::OrderId::from_trusted(id.clone()))
        .await
        .unwrap();
    assert_eq!(
        attempts
            .iter()
            .filter(|a| a.channel == payonce_core::ChannelName::Wechatpay)
            .count(),
        1
    );
    // Status: open until paid, then paid with the way back.
    let status = || {
        let (http, url) = (
            app.http.clone(),
            app.url(&format!("/checkout/{token}/status")),
        );
        async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(status().await["phase"], "open");
    let sb = attempts
        .iter()
        .find(|a| a.channel == payonce_core::ChannelName::Sandbox)
        .unwrap();
    assert_eq!(
        app.sim_pay("sandbox", sb.out_trade_no.as_str(), false)
            .await,
        StatusCode::OK
    );
    app.wait_order(&id, std::time::Duration::from_secs(10), |o| {
        o["status"] == "paid"
    })
    .await;
    let done = status().await;
    assert_eq!(done["phase"], "paid");
    let r = prepay("alipay").await;
    assert_eq!(
        r.status(),
        StatusCode::CONFLICT,
        "a paid order offers nothing more to pay"
    );
    crate::assert_invariants(app.violations().await);
}
