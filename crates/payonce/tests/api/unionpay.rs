//! UnionPay end to end on both stores: the consume form, the payer's submission, the `backUrl`
//! notification, queries that need the stored `txnTime`, and hostile notifications.

use crate::{app, assert_invariants};
use payonce_testkit::forge::{self, UpFault};
use payonce_testkit::{Backend, store_tests};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

store_tests!(
    unionpay_form_pay_and_notify,
    unionpay_query_with_stored_txn_time,
    hostile_unionpay_notifications
);

async fn unionpay_form_pay_and_notify(b: Backend) {
    let Some(app) = app(b).await else { return };
    let order = app.create_order("UP-1", 12_345).await;
    let id = order["id"].as_str().unwrap();
    let r = app.prepay(id, "unionpay").await;
    assert_eq!(r.status(), StatusCode::OK);
    let p: Value = r.json().await.unwrap();
    let cred = &p["credential"];
    assert!(
        cred["action"]
            .as_str()
            .unwrap()
            .ends_with("/gateway/api/frontTransReq.do")
    );
    assert_eq!(cred["fields"]["txnAmt"], "12345");
    assert_eq!(cred["fields"]["signMethod"], "01");
    assert!(
        app.ledger().await["orders"].as_array().unwrap().is_empty(),
        "nothing exists at UnionPay until the form is submitted"
    );
    assert_eq!(app.submit_unionpay_form(cred).await, StatusCode::OK);
    assert_eq!(
        app.ledger().await["orders"].as_array().unwrap().len(),
        1,
        "the simulator accepted our signature"
    );
    assert_eq!(
        app.sim_pay("unionpay", p["out_trade_no"].as_str().unwrap(), false)
            .await,
        StatusCode::OK
    );
    let paid = app
        .wait_order(id, Duration::from_secs(10), |o| o["status"] == "paid")
        .await;
    assert_eq!(paid["status"], "paid");
    assert_invariants(app.violations().await);
}

async fn unionpay_query_with_stored_txn_time(b: Backend) {
    let clock = payonce_core::ManualClock::at(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    );
    let opts = payonce_testkit::AppOptions {
        clock: Some(std::sync::Arc::new(clock.clone())),
        ..Default::default()
    };
    let Some(app) = payonce_testkit::spawn_app_with(b, opts).await else {
        return;
    };
    app.faults(json!({"notify_drop_rate": 1.0})).await;
    let order = app.create_order("UP-2", 500).await;
    let id = order["id"].as_str().unwrap();
    let p: Value = app.prepay(id, "unionpay").await.json().await.unwrap();
    // Before the payer submits: UnionPay has no such transaction; the attempt stays pending.
    let v: Value = app
        .get(&format!("/v1/orders/{id}?sync=true"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["attempts"][0]["status"], "pending");
    app.submit_unionpay_form(&p["credential"]).await;
    app.sim_pay("unionpay", p["out_trade_no"].as_str().unwrap(), false)
        .await;
    // Every notification lost: the compensation query (which must name the original txnTime)
    // finds the payment. (`?sync=true` asks the channel at most once a second per order.)
    clock.advance_ms(1_100);
    let v: Value = app
        .get(&format!("/v1/orders/{id}?sync=true"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "paid");
    assert_invariants(app.violations().await);
}

async fn hostile_unionpay_notifications(b: Backend) {
    let Some(app) = app(b).await else { return };
    app.faults(json!({"notify_drop_rate": 1.0})).await;
    let dir = app.sim_dir();
    let order = app.create_order("UP-3", 700).await;
    let id = order["id"].as_str().unwrap();
    let p: Value = app.prepay(id, "unionpay").await.json().await.unwrap();
    let no = p["out_trade_no"].as_str().unwrap();
    let txn = p["credential"]["fields"]["txnTime"].as_str().unwrap();
    let before = app.counts().await;
    for fault in [
        UpFault::TamperedAmount,
        UpFault::NotUnionpayCert,
        UpFault::UnchainedCert,
    ] {
        let (status, body) = app
            .deliver(
                "unionpay",
                &forge::unionpay_paid(&dir, no, txn, 700, "Q1", fault),
            )
            .await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::BAD_REQUEST, "fail"),
            "{fault:?}"
        );
    }
    let (status, _) = app
        .deliver(
            "unionpay",
            &forge::unionpay_paid(&dir, "NOSUCHORDER", txn, 700, "Q2", UpFault::None),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "unknown orderId");
    assert_eq!(
        app.counts().await,
        before,
        "hostile notifications changed nothing"
    );

    let good = forge::unionpay_paid(&dir, no, txn, 700, "Q3", UpFault::None);
    assert_eq!(
        app.deliver("unionpay", &good).await,
        (StatusCode::OK, "ok".to_owned())
    );
    assert_eq!(app.order(id).await["status"], "paid");
    let after = app.counts().await;
    assert_eq!(
        app.deliver("unionpay", &good).await.0,
        StatusCode::OK,
        "replay acknowledged"
    );
    assert_eq!(app.counts().await, after, "replay changed nothing");

    let order2 = app.create_order("UP-4", 700).await;
    let id2 = order2["id"].as_str().unwrap();
    let p2: Value = app.prepay(id2, "unionpay").await.json().await.unwrap();
    let (status, _) = app
        .deliver(
            "unionpay",
            &forge::unionpay_paid(
                &dir,
                p2["out_trade_no"].as_str().unwrap(),
                txn,
                701,
                "Q4",
                UpFault::None,
            ),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "correctly signed mismatch acknowledged"
    );
    assert_eq!(app.order(id2).await["status"], "paying");
    assert!(
        app.store
            .abnormal_open()
            .await
            .unwrap()
            .iter()
            .any(|a| a.kind == "amount_mismatch")
    );
}
