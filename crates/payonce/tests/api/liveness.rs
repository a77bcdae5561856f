//! Liveness (I7) of an orphaned intent: a prepay whose process died between the channel call
//! and the recording leaves an attempt `created` — it must be claimed by the active-query worker
//! (and a payment on it found), and expiry must treat it as a close would, so the order ends.

use crate::assert_invariants;
use payonce_core::{ChannelName, PayMethod, Timestamp};
use payonce_server::engine::payments::{PrepayParams, new_attempt, stored_request};
use payonce_store::BeginAttempt;
use payonce_testkit::{AppOptions, Backend, TestApp, spawn_app_with, store_tests};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

store_tests!(
    an_orphaned_intent_whose_payer_paid_ends_paid,
    an_orphaned_intent_never_paid_lets_the_order_expire
);

/// On virtual time: the helpers' waits move the clock and run the workers, so an order's
/// expiry or an intent's call deadline is a few worker rounds, not seconds of sleeping.
async fn quick(b: Backend) -> Option<TestApp> {
    spawn_app_with(
        b,
        AppOptions {
            channel_timeout: Duration::from_millis(500),
            ..AppOptions::frozen()
        },
    )
    .await
}

/// Writes the intent and calls the channel exactly as a prepay does, then "dies": nothing of
/// the channel's answer is recorded. Returns the channel order's number.
async fn orphan(app: &TestApp, order_id: &str) -> String {
    let state = &app.state;
    let app_id = payonce_core::AppId::from_trusted(app.app_id.clone());
    let order = state
        .store
        .order(
            &app_id,
            &payonce_core::OrderId::from_trusted(order_id.to_owned()),
        )
        .await
        .unwrap()
        .unwrap();
    let params = PrepayParams {
        channel: ChannelName::Wechatpay,
        method: PayMethod::Native,
        payer: None,
    };
    let now = state.clock.now();
    let attempt = new_attempt(
        state,
        &order,
        &params,
        payonce_channels::DEFAULT_ACCOUNT,
        now,
    );
    let BeginAttempt::Started(a) = state.store.begin_attempt(&attempt, now).await.unwrap() else {
        panic!("intent not written")
    };
    let channel = state.channels.get(ChannelName::Wechatpay).unwrap();
    channel
        .prepay(&stored_request(&order, &a, None, state))
        .await
        .expect("the channel created its order");
    // … and the process is killed here.
    assert_eq!(
        state.store.attempt(&a.id).await.unwrap().unwrap().status,
        payonce_core::AttemptStatus::Created
    );
    a.out_trade_no.to_string()
}

async fn order(app: &TestApp, no: &str, expire: i64) -> String {
    let r = app.post("/v1/orders", json!({"merchant_order_no": no, "amount": 250, "currency": "CNY", "subject": "s", "expire_in_seconds": expire})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn an_orphaned_intent_whose_payer_paid_ends_paid(b: Backend) {
    let Some(app) = quick(b).await else { return };
    app.faults(json!({"notify_drop_rate": 1.0})).await;
    let id = order(&app, "ORPH-1", 600).await;
    let no = orphan(&app, &id).await;
    // The payer had the code (the answer reached them, not the database) and paid; every
    // notification is lost.
    assert_eq!(app.sim_pay("wechatpay", &no, false).await, StatusCode::OK);
    let v = app
        .wait_order(&id, Duration::from_secs(30), |o| o["status"] == "paid")
        .await;
    assert_eq!(
        v["status"], "paid",
        "the payment on the orphaned intent was found"
    );
    assert_invariants(app.violations().await);
}

async fn an_orphaned_intent_never_paid_lets_the_order_expire(b: Backend) {
    let Some(app) = quick(b).await else { return };
    app.faults(json!({"notify_drop_rate": 1.0})).await;
    let id = order(&app, "ORPH-2", 5).await;
    let no = orphan(&app, &id).await;
    let v = app
        .wait_order(&id, Duration::from_secs(40), |o| o["status"] == "closed")
        .await;
    assert_eq!(v["status"], "closed", "expiry is not blocked by the orphan");
    assert_ne!(v["attempts"][0]["status"], "created");
    // Closed at WeChat too.
    let at_channel: Value = app
        .http
        .get(app.sim_url(&format!("/sim/orders?channel=wechatpay&out_trade_no={no}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(at_channel["state"], "CLOSED");
    assert!(app.liveness_violations().await.is_empty());
    let _ = Timestamp(0);
    assert_invariants(app.violations().await);
}
