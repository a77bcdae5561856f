//! Coupons on both stores, in the same transactions as the payment: reserved with the order,
//! redeemed once when it is paid (even when the payer paid twice), released when it closes,
//! restored by a full refund; 100 orders racing for the last one get one; every refusal says why
//! and reserves nothing. Each test ends with the invariant checker (coupons included).

use crate::assert_invariants;
use payonce_testkit::{Backend, TestApp, store_tests};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

store_tests!(
    a_coupon_is_redeemed_once_released_and_restored,
    every_refusal_says_why_and_reserves_nothing,
    a_hundred_orders_race_for_the_last_coupon,
    a_late_payment_accepted_redeems_past_the_limit_and_tells_the_merchant
);

async fn coupon(app: &TestApp, body: Value) -> Value {
    let r = app.post("/v1/coupons", body.clone()).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{body}");
    r.json().await.unwrap()
}

async fn remaining(app: &TestApp, code: &str) -> (i64, i64, i64) {
    let c: Value = app
        .get(&format!("/v1/coupons/{code}"))
        .await
        .json()
        .await
        .unwrap();
    (
        c["reserved"].as_i64().unwrap(),
        c["redeemed"].as_i64().unwrap(),
        c["remaining"].as_i64().unwrap(),
    )
}

async fn order_with(app: &TestApp, no: &str, amount: i64, code: &str) -> reqwest::Response {
    app.post("/v1/orders", json!({"merchant_order_no": no, "amount": amount, "currency": "CNY", "subject": "with coupon", "coupon_code": code})).await
}

async fn events_of(app: &TestApp, order_id: &str, kind: &str) -> usize {
    app.store
        .events_of(&payonce_core::OrderId::from_trusted(order_id.to_owned()))
        .await
        .unwrap()
        .iter()
        .filter(|e| e.event_type == kind)
        .count()
}

async fn a_coupon_is_redeemed_once_released_and_restored(b: Backend) {
    let Some(app) = crate::app(b).await else {
        return;
    };
    coupon(
        &app,
        json!({"code": "SAVE15", "kind": "percent", "value": 15, "max_redemptions": 2}),
    )
    .await;
    // Reserved with the order: 15 % off 1,000 fen.
    let r = order_with(&app, "CPN-A", 1_000, "SAVE15").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let a: Value = r.json().await.unwrap();
    assert_eq!(
        (
            a["amount"].as_i64(),
            a["original_amount"].as_i64(),
            a["discount"].as_i64(),
            a["coupon_code"].as_str()
        ),
        (Some(850), Some(1_000), Some(150), Some("SAVE15"))
    );
    let a_id = a["id"].as_str().unwrap().to_owned();
    assert_eq!(remaining(&app, "SAVE15").await, (1, 0, 1));
    // Paid twice (the payer switched channel; the first payment landed as it was closed): the
    // second charge is refunded, the coupon redeemed once.
    let first: Value = app.prepay(&a_id, "sandbox").await.json().await.unwrap();
    let second: Value = app.prepay(&a_id, "wechatpay").await.json().await.unwrap();
    assert_eq!(
        app.sim_pay("wechatpay", second["out_trade_no"].as_str().unwrap(), false)
            .await,
        StatusCode::OK
    );
    app.wait_order(&a_id, Duration::from_secs(10), |o| o["status"] == "paid")
        .await;
    assert_eq!(
        app.sim_pay("sandbox", first["out_trade_no"].as_str().unwrap(), true)
            .await,
        StatusCode::OK
    );
    app.wait_order(&a_id, Duration::from_secs(10), |o| {
        o["refunds"].as_array().is_some_and(|r| !r.is_empty())
    })
    .await;
    assert_eq!(remaining(&app, "SAVE15").await, (0, 1, 1));
    assert_eq!(
        events_of(&app, &a_id, "coupon.redeemed").await,
        1,
        "redeemed once"
    );
    // A second order holds the last one; closed, it lets go; a third takes it.
    let b_id = order_with(&app, "CPN-B", 2_000, "SAVE15")
        .await
        .json::<Value>()
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(remaining(&app, "SAVE15").await, (1, 1, 0));
    let r = order_with(&app, "CPN-C", 2_000, "SAVE15").await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(r.json::<Value>().await.unwrap()["reason"], "exhausted");
    assert_eq!(
        app.post(&format!("/v1/orders/{b_id}/close"), json!({}))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(remaining(&app, "SAVE15").await, (0, 1, 1));
    assert_eq!(events_of(&app, &b_id, "coupon.released").await, 1);
    assert_eq!(
        order_with(&app, "CPN-C", 2_000, "SAVE15").await.status(),
        StatusCode::CREATED
    );
    // A's full refund gives its redemption back (a partial one would not).
    let r = app
        .post(
            &format!("/v1/orders/{a_id}/refunds"),
            json!({"merchant_refund_no": "CPN-A-R", "amount": 850}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    app.wait_order(&a_id, Duration::from_secs(10), |o| {
        o["status"] == "refunded"
    })
    .await;
    assert_eq!(remaining(&app, "SAVE15").await, (1, 0, 1));
    assert_eq!(events_of(&app, &a_id, "coupon.restored").await, 1);
    assert_invariants(app.violations().await);
}

async fn every_refusal_says_why_and_reserves_nothing(b: Backend) {
    let Some(app) = crate::app(b).await else {
        return;
    };
    let past = "2020-01-01T00:00:00Z";
    let future = "2099-01-01T00:00:00Z";
    coupon(&app, json!({"code": "OLD", "kind": "fixed", "value": 100, "max_redemptions": 5, "valid_until": past})).await;
    coupon(&app, json!({"code": "SOON", "kind": "fixed", "value": 100, "max_redemptions": 5, "valid_from": future})).await;
    coupon(&app, json!({"code": "BIG", "kind": "fixed", "value": 100, "max_redemptions": 5, "min_amount": 5_000})).await;
    coupon(&app, json!({"code": "ONCE", "kind": "fixed", "value": 100, "max_redemptions": 5, "per_payer_limit": 1})).await;
    let r = app
        .post(
            "/v1/coupons",
            json!({"code": "OLD", "kind": "fixed", "value": 1, "max_redemptions": 1}),
        )
        .await;
    assert_eq!(
        (
            r.status(),
            r.json::<Value>().await.unwrap()["code"]
                .as_str()
                .map(str::to_owned)
        ),
        (StatusCode::CONFLICT, Some("coupon_code_conflict".into()))
    );
    let before = app.counts().await;
    for (code, reason) in [
        ("NOPE", "unknown"),
        ("OLD", "expired"),
        ("SOON", "not_yet_valid"),
    ] {
        let r = order_with(&app, &format!("REF-{code}"), 1_000, code).await;
        assert_eq!(r.status(), StatusCode::CONFLICT, "{code}");
        let p: Value = r.json().await.unwrap();
        assert_eq!(
            (p["code"].as_str(), p["reason"].as_str()),
            (Some("coupon_unavailable"), Some(reason)),
            "{p}"
        );
    }
    let r = order_with(&app, "REF-BIG", 1_000, "BIG").await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "coupon_not_applicable"
    );
    let r = order_with(&app, "REF-ONCE", 1_000, "ONCE").await;
    assert_eq!(
        r.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "a per-payer coupon needs payer_ref"
    );
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "payer_ref_required"
    );
    assert_eq!(app.counts().await, before, "no refusal writes anything");
    // One per payer: the same payer's second order is refused, another payer's is not.
    let with_payer = |no: &str, payer: &str| json!({"merchant_order_no": no, "payer_ref": payer, "amount": 1_000, "currency": "CNY", "subject": "s", "coupon_code": "ONCE"});
    assert_eq!(
        app.post("/v1/orders", with_payer("P-1", "alice"))
            .await
            .status(),
        StatusCode::CREATED
    );
    let r = app.post("/v1/orders", with_payer("P-2", "alice")).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(r.json::<Value>().await.unwrap()["reason"], "payer_limit");
    assert_eq!(
        app.post("/v1/orders", with_payer("P-3", "bob"))
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(remaining(&app, "ONCE").await, (2, 0, 3));
    assert_invariants(app.violations().await);
}

async fn a_hundred_orders_race_for_the_last_coupon(b: Backend) {
    let Some(app) = crate::app(b).await else {
        return;
    };
    coupon(
        &app,
        json!({"code": "LAST1", "kind": "fixed", "value": 10, "max_redemptions": 1}),
    )
    .await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..100 {
        let (http, url, secret) = (app.http.clone(), app.url("/v1/orders"), app.secret.clone());
        set.spawn(async move {
            let body = json!({"merchant_order_no": format!("RACE-{i}"), "amount": 500, "currency": "CNY", "subject": "race", "coupon_code": "LAST1"});
            let r = http.post(url).bearer_auth(secret).json(&body).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        });
    }
    let answers = set.join_all().await;
    let won: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(won.len(), 1, "exactly one order reserves the last coupon");
    assert!(
        answers
            .iter()
            .filter(|(s, _)| *s != StatusCode::CREATED)
            .all(|(s, v)| *s == StatusCode::CONFLICT && v["reason"] == "exhausted")
    );
    // Closed (as expiry closes it), the coupon is free again; paid, never again.
    let winner = won[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.post(&format!("/v1/orders/{winner}/close"), json!({}))
            .await
            .status(),
        StatusCode::OK
    );
    let r = order_with(&app, "RACE-AGAIN", 500, "LAST1").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let again = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let p: Value = app.prepay(&again, "sandbox").await.json().await.unwrap();
    assert_eq!(
        app.sim_pay("sandbox", p["out_trade_no"].as_str().unwrap(), false)
            .await,
        StatusCode::OK
    );
    app.wait_order(&again, Duration::from_secs(10), |o| o["status"] == "paid")
        .await;
    let r = order_with(&app, "RACE-LATE", 500, "LAST1").await;
    assert_eq!(r.json::<Value>().await.unwrap()["reason"], "exhausted");
    assert_eq!(remaining(&app, "LAST1").await, (0, 1, 0));
    assert_invariants(app.violations().await);
}

/// `--late-payment accept`: an order that expired (its coupon released and taken by another
/// order) is paid late. The payer paid the price offered, so its coupon is redeemed even past
/// the limit; the over-redemption is recorded and put in the abnormal queue.
async fn a_late_payment_accepted_redeems_past_the_limit_and_tells_the_merchant(b: Backend) {
    // On virtual time: the order's expiry and its close come as the clock is moved.
    let opts = payonce_testkit::AppOptions {
        late_payment: payonce_core::order::LatePaymentPolicy::Accept,
        ..payonce_testkit::AppOptions::frozen()
    };
    let Some(app) = payonce_testkit::app::spawn_app_with(b, opts).await else {
        return;
    };
    coupon(
        &app,
        json!({"code": "ONE", "kind": "fixed", "value": 100, "max_redemptions": 1}),
    )
    .await;
    let r = app.post("/v1/orders", json!({"merchant_order_no": "LATE-C1", "amount": 900, "currency": "CNY", "subject": "late", "expire_in_seconds": 5, "coupon_code": "ONE"})).await;
    let late = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let p: Value = app.prepay(&late, "wechatpay").await.json().await.unwrap();
    app.wait_order(&late, Duration::from_secs(30), |o| o["status"] == "closed")
        .await;
    assert_eq!(
        remaining(&app, "ONE").await,
        (0, 0, 1),
        "released by the expiry"
    );
    assert_eq!(
        order_with(&app, "LATE-C2", 900, "ONE").await.status(),
        StatusCode::CREATED,
        "taken by another order"
    );
    app.sim_pay("wechatpay", p["out_trade_no"].as_str().unwrap(), true)
        .await;
    app.wait_order(&late, Duration::from_secs(20), |o| o["status"] == "paid")
        .await;
    assert_eq!(remaining(&app, "ONE").await, (1, 1, 0));
    let abnormal = app.store.abnormal_open().await.unwrap();
    assert_eq!(
        abnormal
            .iter()
            .filter(|a| a.kind == "coupon_over_redeemed" && a.reference == late)
            .count(),
        1,
        "{abnormal:?}"
    );
    assert_invariants(app.violations().await);
}
