//! Item 4 of the gateway's attacks (issue 20), notifications: the failure budget was checked
//! after the signature, so a flood still bought a full verification each. Its own binary: it
//! counts verifications on `/metrics`, which are process-wide, and the API suite's other tests
//! forge notifications of their own at the same time.

use payonce_server::gateway::ratelimit::Cidr;
use payonce_testkit::{AppOptions, Backend, TestApp, spawn_app_with, store_tests};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

store_tests!(failing_notifications_are_turned_away_before_verification);

/// The two stores' runs count the same process-wide counter: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Addresses are told by `X-Forwarded-For` from the loopback proxy.
fn proxied() -> AppOptions {
    AppOptions {
        trusted_proxies: vec![Cidr::parse("127.0.0.1").unwrap()],
        ..AppOptions::frozen()
    }
}

/// Item 4, notifications: the failure budget was checked after the signature, so a flood still
/// bought a full verification each. Now an address over its budget (50 failures in 5 s) is
/// turned away first, in the channel's own format — its next messages, genuine or not, wait
/// for the window (the channel retries; the active query does not wait at all) — while other
/// addresses' notifications go through.
async fn failing_notifications_are_turned_away_before_verification(b: Backend) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(app) = spawn_app_with(b, proxied()).await else {
        return;
    };
    app.faults(json!({"notify_drop_rate": 1.0})).await;
    let mut orders = Vec::new();
    for i in 0..2 {
        let o = app.create_order(&format!("NF-{i}"), 300).await;
        let id = o["id"].as_str().unwrap().to_owned();
        let p: Value = app.prepay(&id, "sandbox").await.json().await.unwrap();
        orders.push((id, p["out_trade_no"].as_str().unwrap().to_owned()));
    }
    let verified_before = bad_signatures(&app).await;
    for i in 0..50 {
        let (ts, _, body) = app.signed_sandbox_notification(&format!("F{i}"), &orders[0].1, 300);
        assert_eq!(
            app.sandbox_notification_from(Some("198.51.100.20"), &ts, "forged", &body)
                .await
                .status(),
            StatusCode::BAD_REQUEST
        );
    }
    assert_eq!(bad_signatures(&app).await - verified_before, 50);
    // Over the budget: refused without verification (the counter of verified forgeries stands).
    for i in 0..30 {
        let (ts, _, body) = app.signed_sandbox_notification(&format!("G{i}"), &orders[0].1, 300);
        let r = app
            .sandbox_notification_from(Some("198.51.100.20"), &ts, "forged", &body)
            .await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(r.headers().contains_key("retry-after"));
    }
    assert_eq!(
        bad_signatures(&app).await - verified_before,
        50,
        "a refused forgery was still verified"
    );
    // Another address's genuine notification goes through at once.
    let (ts, sig, body) = app.signed_sandbox_notification("NF-OTHER", &orders[1].1, 300);
    assert_eq!(
        app.sandbox_notification_from(Some("198.51.100.21"), &ts, &sig, &body)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(app.order(&orders[1].0).await["status"], "paid");
    // The flooded address's genuine one is accepted once its window (5 s) has passed.
    let t = Instant::now();
    loop {
        let (ts, sig, body) = app.signed_sandbox_notification("NF-LATER", &orders[0].1, 300);
        let r = app
            .sandbox_notification_from(Some("198.51.100.20"), &ts, &sig, &body)
            .await;
        if r.status() == StatusCode::OK {
            break;
        }
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the window never passed"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Notifications of the sandbox refused for their signature, from `/metrics`.
async fn bad_signatures(app: &TestApp) -> i64 {
    let text = app.metrics_text().await;
    text.lines()
        .filter(|l| {
            l.starts_with("payonce_notifications_total{")
                && l.contains("channel=\"sandbox\"")
                && l.contains("outcome=\"bad_signature\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as i64
}
