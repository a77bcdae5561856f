//! The submission guard on both stores: an order created without a merchant_order_no, with a
//! `payer_ref`, is recognised by its content for the app's window (the same order, 200,
//! `Submission-Replayed: true`), whoever wins a race of identical submissions; after the
//! window, or with other content, a new order; a merchant number still decides when given.

use payonce_core::ManualClock;
use payonce_testkit::{AppOptions, Backend, TestApp, spawn_app_with, store_tests};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;

store_tests!(
    a_resubmitted_cart_is_the_same_order_within_the_window,
    fifty_identical_submissions_at_once_make_one_order,
    a_merchant_number_wins_and_a_body_without_either_is_refused
);

fn cart(payer: &str, amount: i64) -> Value {
    json!({"payer_ref": payer, "amount": amount, "currency": "CNY", "subject": "cart", "metadata": {"items": [1, 2]}})
}

async fn submit(app: &TestApp, body: &Value) -> (StatusCode, Option<String>, Value) {
    let r = app.post("/v1/orders", body.clone()).await;
    let replayed = r
        .headers()
        .get("submission-replayed")
        .map(|v| v.to_str().unwrap().to_owned());
    (r.status(), replayed, r.json().await.unwrap())
}

async fn a_resubmitted_cart_is_the_same_order_within_the_window(b: Backend) {
    let clock = ManualClock::at(payonce_core::Clock::now(&payonce_core::SystemClock).0);
    let opts = AppOptions {
        clock: Some(Arc::new(clock.clone())),
        ..AppOptions::default()
    };
    let Some(app) = spawn_app_with(b, opts).await else {
        return;
    };
    let (s1, r1, first) = submit(&app, &cart("user-1", 990)).await;
    assert_eq!((s1, r1), (StatusCode::CREATED, None));
    // The double click, 9.9 s later at most: the same order.
    clock.advance_ms(9_900);
    let (s2, r2, again) = submit(&app, &cart("user-1", 990)).await;
    assert_eq!((s2, r2.as_deref()), (StatusCode::OK, Some("true")));
    assert_eq!(again["id"], first["id"]);
    // Another payer, amount or subject is another order.
    for other in [
        cart("user-2", 990),
        cart("user-1", 991),
        json!({"payer_ref": "user-1", "amount": 990, "currency": "CNY", "subject": "another cart", "metadata": {"items": [1, 2]}}),
    ] {
        let (s, r, o) = submit(&app, &other).await;
        assert_eq!((s, r), (StatusCode::CREATED, None), "{other}");
        assert_ne!(o["id"], first["id"]);
    }
    // Past the window (10 s by default): the same content is a new order.
    clock.advance_ms(200);
    let (s3, r3, later) = submit(&app, &cart("user-1", 990)).await;
    assert_eq!((s3, r3), (StatusCode::CREATED, None));
    assert_ne!(later["id"], first["id"]);
    // Guards past their window are purged (the hourly purge); live ones stay and still decide.
    let guards = || async {
        app.counts()
            .await
            .into_iter()
            .find(|(t, _)| *t == "submission_guards")
            .unwrap()
            .1
    };
    // 9.9 s on: the three other carts' guards (made at 9.9 s) have ended; the resubmitted
    // cart's (renewed at 10.1 s) has not.
    clock.advance_ms(9_900);
    let before = guards().await;
    assert_eq!(
        app.store
            .purge_submission_guards(payonce_core::Clock::now(&clock))
            .await
            .unwrap(),
        3
    );
    assert_eq!(guards().await, before - 3);
    let (s4, r4, again_later) = submit(&app, &cart("user-1", 990)).await;
    assert_eq!(
        (s4, r4.as_deref(), again_later["id"].clone()),
        (StatusCode::OK, Some("true"), later["id"].clone()),
        "the live guard still answers"
    );
    // payonce numbered the orders itself (their ids), so they never collide.
    assert_eq!(first["merchant_order_no"], first["id"]);
    // An app with the guard off: every submission is an order.
    let off = payonce_server::engine::apps::create_app(
        app.store.as_ref(),
        &app.state.master_key,
        &clock,
        payonce_server::engine::apps::NewApp {
            name: "no-guard",
            submission_window_secs: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let post = || {
        app.http
            .post(app.url("/v1/orders"))
            .bearer_auth(&off.secret)
            .json(&cart("user-1", 990))
            .send()
    };
    let (a, b2) = (post().await.unwrap(), post().await.unwrap());
    assert_eq!(
        (a.status(), b2.status()),
        (StatusCode::CREATED, StatusCode::CREATED)
    );
    crate::assert_invariants(app.violations().await);
}

async fn fifty_identical_submissions_at_once_make_one_order(b: Backend) {
    let Some(app) = crate::app(b).await else {
        return;
    };
    let body = cart("user-race", 1_234);
    let answers = futures_join(&app, &body, 50).await;
    let ids: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|(_, _, o)| o["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "one order for fifty identical submissions: {ids:?}"
    );
    assert_eq!(
        answers
            .iter()
            .filter(|(s, _, _)| *s == StatusCode::CREATED)
            .count(),
        1,
        "exactly one created"
    );
    assert!(
        answers
            .iter()
            .filter(|(s, _, _)| *s == StatusCode::OK)
            .all(|(_, r, _)| r.as_deref() == Some("true"))
    );
    let orders = app
        .counts()
        .await
        .into_iter()
        .find(|(t, _)| *t == "orders")
        .unwrap()
        .1;
    assert_eq!(orders, 1);
}

async fn futures_join(
    app: &TestApp,
    body: &Value,
    n: usize,
) -> Vec<(StatusCode, Option<String>, Value)> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (http, url, secret, body) = (
            app.http.clone(),
            app.url("/v1/orders"),
            app.secret.clone(),
            body.clone(),
        );
        set.spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(secret)
                .json(&body)
                .send()
                .await
                .unwrap();
            let replayed = r
                .headers()
                .get("submission-replayed")
                .map(|v| v.to_str().unwrap().to_owned());
            (r.status(), replayed, r.json::<Value>().await.unwrap())
        });
    }
    set.join_all().await
}

async fn a_merchant_number_wins_and_a_body_without_either_is_refused(b: Backend) {
    let Some(app) = crate::app(b).await else {
        return;
    };
    let with_no = json!({"merchant_order_no": "CART-7", "payer_ref": "user-1", "amount": 990, "currency": "CNY", "subject": "cart"});
    let (s1, r1, first) = submit(&app, &with_no).await;
    let (s2, r2, again) = submit(&app, &with_no).await;
    // The number's own rule: the same content answers the existing order, not as a guard replay.
    assert_eq!(
        (s1, r1, s2, r2),
        (StatusCode::CREATED, None, StatusCode::OK, None)
    );
    assert_eq!(first["id"], again["id"]);
    let (s3, _, _) = submit(&app, &json!({"merchant_order_no": "CART-8", "payer_ref": "user-1", "amount": 990, "currency": "CNY", "subject": "cart"})).await;
    assert_eq!(
        s3,
        StatusCode::CREATED,
        "another number, another order, whatever the payer"
    );
    let before = app.counts().await;
    let r = app
        .post(
            "/v1/orders",
            json!({"amount": 990, "currency": "CNY", "subject": "cart"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let problem: Value = r.json().await.unwrap();
    assert!(
        problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["field"] == "merchant_order_no"),
        "{problem}"
    );
    let r = app
        .post(
            "/v1/orders",
            json!({"payer_ref": "has space", "amount": 990, "currency": "CNY", "subject": "cart"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(app.counts().await, before, "bad input changes nothing");
}
