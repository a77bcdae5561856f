//! The gateway layer: per-app rate limits on the business API (429 `rate_limited` with
//! `Retry-After`, other apps untouched) and on `/notify/*` only for traffic that FAILS
//! verification (a flood of forgeries is slowed; a genuine notification still goes through).

use payonce_server::ratelimit::RateSpec;
use payonce_testkit::{AppOptions, Backend, spawn_app_with, store_tests};
use reqwest::StatusCode;
use serde_json::Value;

store_tests!(an_app_over_its_rate_gets_429_and_others_do_not, failing_notifications_are_limited_genuine_ones_never);

async fn an_app_over_its_rate_gets_429_and_others_do_not(b: Backend) {
    let opts = AppOptions { rate_limit: Some(RateSpec { per_second: 1, burst: 5 }), ..AppOptions::default() };
    let Some(app) = spawn_app_with(b, opts).await else { return };
    let other = payonce_server::apps::create_app(app.store.as_ref(), &app.state.master_key, &payonce_core::SystemClock, "other-shop", None, None)
        .await
        .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(app.get("/v1/orders?merchant_order_no=nope").await.status());
    }
    assert!(statuses[..5].iter().all(|s| *s == StatusCode::NOT_FOUND), "{statuses:?}");
    let r = app.get("/v1/orders?merchant_order_no=nope").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: Value = r.json().await.unwrap();
    assert_eq!((body["status"].as_u64(), body["code"].as_str()), (Some(429), Some("rate_limited")));
    // Another app has its own bucket.
    let r = app.http.get(app.url("/v1/orders?merchant_order_no=nope")).bearer_auth(&other.secret).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // A request without a valid secret is a 401, and costs nobody anything.
    let r = app.http.get(app.url("/v1/orders?merchant_order_no=nope")).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Operations endpoints are not the app API.
    assert_eq!(app.http.get(app.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);
}

async fn failing_notifications_are_limited_genuine_ones_never(b: Backend) {
    let Some(app) = spawn_app_with(b, AppOptions::default()).await else { return };
    app.faults(serde_json::json!({"notify_drop_rate": 1.0})).await;
    let order = app.create_order("GW-N", 300).await;
    let id = order["id"].as_str().unwrap();
    let p: Value = app.prepay(id, "sandbox").await.json().await.unwrap();
    let no = p["out_trade_no"].as_str().unwrap();
    // A flood of forged notifications from one address: refused, then slowed down.
    let mut limited = 0;
    for i in 0..80 {
        let (ts, _sig, body) = app.signed_sandbox_notification(&format!("F{i}"), no, 300);
        let r = app.post_sandbox_notification(&ts, "forged-signature", &body).await;
        assert!(r.status() == StatusCode::BAD_REQUEST || r.status() == StatusCode::TOO_MANY_REQUESTS, "{}", r.status());
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(r.headers().contains_key("retry-after"));
            limited += 1;
        }
    }
    assert!(limited >= 20, "only {limited} of 80 forgeries were slowed down");
    // The genuine notification from the same address still goes through at once.
    let (ts, sig, body) = app.signed_sandbox_notification("GENUINE", no, 300);
    let r = app.post_sandbox_notification(&ts, &sig, &body).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.order(id).await["status"], "paid");
}
