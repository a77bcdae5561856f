//! Prepay: one channel order per order, whatever the concurrency; credentials reused; timeouts
//! leave the attempt unknown and a retry never creates a second channel order.

use crate::{app, assert_invariants};
use payonce_testkit::app::spawn_app_with;
use payonce_testkit::{AppOptions, Backend, store_tests};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

store_tests!(
    concurrent_prepays_make_one_channel_order,
    pending_credential_is_reused,
    a_duplicate_is_answered_without_the_orders_turn_and_writes_nothing,
    timeout_leaves_unknown_and_retry_reuses_channel_order,
    channel_5xx_is_unknown_and_retry_creates_one_order,
    prepay_after_payment_is_order_already_paid,
    a_client_hanging_up_does_not_cut_the_prepay_short,
);

async fn concurrent_prepays_make_one_channel_order(b: Backend) {
    let Some(app) = app(b).await else { return };
    let order = app.create_order("RACE-1", 990).await;
    let id = order["id"].as_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let (http, url, secret) = (
            app.http.clone(),
            app.url(&format!("/v1/orders/{id}/prepay")),
            app.secret.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(secret)
                .json(&json!({"channel": "sandbox"}))
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }));
    }
    let mut creds = BTreeSet::new();
    let mut fresh = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            StatusCode::OK => {
                creds.insert(body["credential"].to_string());
                if body["reused"] == false {
                    fresh += 1;
                }
            }
            StatusCode::CONFLICT => assert_eq!(body["code"], "request_in_progress"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(creds.len(), 1, "every 200 carries the same credential");
    assert_eq!(fresh, 1, "exactly one answer made the channel order");
    let ledger = app.ledger().await;
    assert_eq!(ledger["orders"].as_array().unwrap().len(), 1);
    assert_eq!(ledger["prepay_requests"], 1, "the channel was asked once");
    assert_invariants(app.violations().await);
}

async fn pending_credential_is_reused(b: Backend) {
    let Some(app) = app(b).await else { return };
    let order = app.create_order("REUSE-1", 100).await;
    let id = order["id"].as_str().unwrap();
    let first: Value = app.prepay(id, "sandbox").await.json().await.unwrap();
    assert_eq!(first["reused"], false);
    assert!(
        first["credential"]["code_url"]
            .as_str()
            .unwrap()
            .starts_with("sandbox://")
    );
    assert_eq!(first["out_trade_no"].as_str().unwrap().len(), 32);
    let second: Value = app.prepay(id, "sandbox").await.json().await.unwrap();
    assert_eq!(second["reused"], true);
    assert_eq!(second["credential"], first["credential"]);
    assert_eq!(second["attempt_id"], first["attempt_id"]);
    let view = app.order(id).await;
    assert_eq!(view["status"], "paying");
    assert_eq!(view["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(view["attempts"][0]["status"], "pending");
}

/// A duplicate of an answered prepay takes no lock and writes nothing: with the order's turn
/// held by someone else (as by a prepay in flight on this instance), it still answers at once,
/// from one read, and neither the attempt nor the order changes.
async fn a_duplicate_is_answered_without_the_orders_turn_and_writes_nothing(b: Backend) {
    let Some(app) = app(b).await else { return };
    let id = app.create_order("FAST-1", 100).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let first: Value = app.prepay(&id, "sandbox").await.json().await.unwrap();
    let order_id = payonce_core::OrderId::parse(&id).unwrap();
    let before = (
        app.store.attempts_of(&order_id).await.unwrap(),
        app.store.all_orders().await.unwrap(),
    );
    let deadline = payonce_server::gateway::waiting::Deadline::after(
        &app.state.clock,
        Duration::from_secs(60),
    );
    let held = app
        .state
        .waits
        .turn(
            &payonce_server::engine::payments::order_key(&order_id),
            &deadline,
        )
        .await
        .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(10), app.prepay(&id, "sandbox"))
        .await
        .expect("answered while the order's turn is held: no lock on the way");
    assert_eq!(second.status(), StatusCode::OK);
    let second: Value = second.json().await.unwrap();
    assert_eq!(second["reused"], true);
    assert_eq!(second["credential"], first["credential"]);
    drop(held);
    let after = (
        app.store.attempts_of(&order_id).await.unwrap(),
        app.store.all_orders().await.unwrap(),
    );
    let versions = |(a, o): &(Vec<payonce_core::Attempt>, Vec<payonce_core::Order>)| {
        (
            a.iter()
                .map(|a| (a.version, a.updated_at))
                .collect::<Vec<_>>(),
            o.iter()
                .map(|o| (o.version, o.updated_at))
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(versions(&before), versions(&after), "nothing written");
}

async fn timeout_leaves_unknown_and_retry_reuses_channel_order(b: Backend) {
    let opts = AppOptions {
        channel_timeout: Duration::from_millis(500),
        ..AppOptions::frozen()
    };
    let Some(app) = spawn_app_with(b, opts).await else {
        return;
    };
    let order = app.create_order("TIMEOUT-1", 100).await;
    let id = order["id"].as_str().unwrap();
    app.faults(json!({"prepay_timeout_rate": 1.0})).await;
    let r = app.prepay(id, "sandbox").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "channel_unavailable"
    );
    let view = app.order(id).await;
    // Never failed: unknown, or already settled by the active query to the channel's true state.
    let s = view["attempts"][0]["status"].as_str().unwrap();
    assert!(
        s == "unknown" || s == "pending",
        "a timeout is never a failure: {s}"
    );
    // The channel did create the order.
    assert_eq!(app.ledger().await["orders"].as_array().unwrap().len(), 1);

    app.faults(json!({"prepay_timeout_rate": 0.0})).await;
    let r = app.prepay(id, "sandbox").await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["out_trade_no"], view["attempts"][0]["out_trade_no"],
        "re-asked under the same number"
    );
    let ledger = app.ledger().await;
    assert_eq!(
        ledger["orders"].as_array().unwrap().len(),
        1,
        "no second channel order"
    );
    assert_eq!(app.order(id).await["attempts"][0]["status"], "pending");
    assert_invariants(app.violations().await);
}

async fn channel_5xx_is_unknown_and_retry_creates_one_order(b: Backend) {
    let Some(app) = app(b).await else { return };
    let order = app.create_order("REFUSE-1", 100).await;
    let id = order["id"].as_str().unwrap();
    // A 5xx may have taken effect at the channel: the attempt is unknown, not failed, and the
    // retry re-asks under the same out_trade_no.
    app.faults(json!({"prepay_error_rate": 1.0})).await;
    let r = app.prepay(id, "sandbox").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let view = app.order(id).await;
    assert_eq!(
        view["attempts"][0]["status"], "unknown",
        "a 5xx may have taken effect"
    );
    app.faults(json!({"prepay_error_rate": 0.0})).await;
    let r = app.prepay(id, "sandbox").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.ledger().await["orders"].as_array().unwrap().len(), 1);
    assert_invariants(app.violations().await);
}

async fn prepay_after_payment_is_order_already_paid(b: Backend) {
    let Some(app) = app(b).await else { return };
    let order = app.create_order("PAID-1", 100).await;
    let id = order["id"].as_str().unwrap();
    let p: Value = app.prepay(id, "sandbox").await.json().await.unwrap();
    assert_eq!(
        app.sim_pay("sandbox", p["out_trade_no"].as_str().unwrap(), false)
            .await,
        StatusCode::OK
    );
    let paid = app
        .wait_order(id, Duration::from_secs(10), |o| o["status"] == "paid")
        .await;
    assert_eq!(paid["status"], "paid");
    let r = app.prepay(id, "sandbox").await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "order_already_paid");
    assert_eq!(body["order"]["status"], "paid");
    assert_eq!(r_close(&app, id).await, StatusCode::CONFLICT);
    assert_invariants(app.violations().await);
}

async fn r_close(app: &payonce_testkit::TestApp, id: &str) -> StatusCode {
    app.post(&format!("/v1/orders/{id}/close"), json!({}))
        .await
        .status()
}

async fn a_client_hanging_up_does_not_cut_the_prepay_short(b: Backend) {
    let opts = AppOptions {
        channel_timeout: Duration::from_millis(800),
        time_scale: 1.0,
        ..AppOptions::frozen()
    };
    let Some(app) = spawn_app_with(b, opts).await else {
        return;
    };
    let order = app.create_order("HANGUP-1", 100).await;
    let id = order["id"].as_str().unwrap();
    app.faults(json!({"prepay_timeout_rate": 1.0})).await;
    // The client hangs up while payonce is waiting for the channel: the request is sent, and
    // dropped once the channel has it (the simulator counted the prepay). Waiting for that, not
    // a fixed 100 ms, makes the hang-up land mid-call on any machine: on a loaded one a client
    // that gives up before the server even read its request tests nothing.
    let client = reqwest::Client::new();
    let request = client
        .post(app.url(&format!("/v1/orders/{id}/prepay")))
        .bearer_auth(&app.secret)
        .json(&json!({"channel": "sandbox"}))
        .send();
    let in_flight = tokio::spawn(request);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.ledger().await["prepay_requests"].as_u64() < Some(1) {
        assert!(
            std::time::Instant::now() < deadline,
            "the prepay never reached the channel"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    in_flight.abort();
    assert!(
        in_flight.await.is_err(),
        "the client hung up before any answer"
    );
    // payonce still finished the request: the channel call's outcome is recorded (unknown, and
    // then pending once the active query found the channel order), not left as a `created`
    // intent waiting for the stale-intent sweep.
    let v = app
        .wait_order(id, Duration::from_secs(10), |o| {
            o["attempts"][0]["status"]
                .as_str()
                .is_some_and(|s| s != "created")
        })
        .await;
    let s = v["attempts"][0]["status"].as_str().unwrap();
    assert!(s == "unknown" || s == "pending", "{v}");
}
