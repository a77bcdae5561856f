//! Never lose a payment, never keep a double one (issue: active query, expiry, duplicates,
//! refunds). Every scenario runs on both stores and ends with the invariant checker against
//! the simulator's ledger.

use crate::{app, assert_invariants};
use payonce_testkit::{AppOptions, Backend, TestApp, store_tests};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

store_tests!(
    all_notifications_lost_active_query_recovers_every_payment,
    duplicated_reordered_delayed_notifications_past_expiry,
    payer_pays_two_channels_second_is_refunded_once,
    pay_just_before_close_ends_paid_without_refund,
    prepay_timeout_settles_to_the_channels_truth,
    expiry_closes_at_the_channel_and_late_payment_is_refunded,
    unscanned_alipay_qr_paid_after_close_is_refunded,
    refunds_partial_full_idempotent,
    concurrent_refunds_never_exceed_paid,
    admin_abnormal_queue,
    wechat_refund_notifications,
    payment_on_closed_order_with_notifications_lost_is_found_and_refunded,
    late_payment_policy_accept_reopens_an_expired_order,
);

async fn create(app: &TestApp, no: &str, amount: i64, expire: Option<i64>) -> String {
    let mut body =
        json!({"merchant_order_no": no, "amount": amount, "currency": "CNY", "subject": "t"});
    if let Some(e) = expire {
        body["expire_in_seconds"] = json!(e);
    }
    let r = app.post("/v1/orders", body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn prepay(app: &TestApp, id: &str, channel: &str) -> Value {
    let r = app.prepay(id, channel).await;
    assert_eq!(r.status(), StatusCode::OK, "prepay {channel}");
    r.json().await.unwrap()
}

/// Polls until `pred` holds for every order, or panics after `secs` (on virtual time: moving
/// the clock and running the workers between polls, `TestApp::waiting`).
async fn eventually(
    app: &TestApp,
    secs: u64,
    what: &str,
    pred: impl Fn(&[payonce_core::Order]) -> bool,
) {
    let mut waiting = app.waiting(Duration::from_secs(secs));
    loop {
        let orders = app.store.all_orders().await.unwrap();
        if pred(&orders) {
            return;
        }
        if !waiting.pass(Duration::from_millis(50)).await {
            panic!(
                "{what}: not reached in {secs}s; violations: {:?}",
                app.violations().await
            );
        }
    }
}

/// A test app on virtual time (`AppOptions::frozen`).
async fn frozen(b: Backend, opts: AppOptions) -> Option<TestApp> {
    payonce_testkit::app::spawn_app_with(
        b,
        AppOptions {
            frozen: AppOptions::frozen().frozen,
            time_scale: 1.0,
            workers: false,
            ..opts
        },
    )
    .await
}

/// Waits (the app's way: real or virtual time) until the simulator has refunded something.
async fn until_refunded(app: &TestApp, what: &str) {
    let mut waiting = app.waiting(Duration::from_secs(30));
    while app.ledger().await["refunds"].as_array().unwrap().is_empty() {
        assert!(waiting.pass(Duration::from_millis(50)).await, "{what}");
    }
}

async fn all_notifications_lost_active_query_recovers_every_payment(b: Backend) {
    let Some(app) = frozen(b, AppOptions::default()).await else {
        return;
    };
    app.faults(json!({"notify_drop_rate": 1.0})).await;
    let channels = ["wechatpay", "alipay", "sandbox"];
    let mut tasks = Vec::new();
    for i in 0..200 {
        let id = create(&app, &format!("LOST-{i}"), 100 + i, None).await;
        let p = prepay(&app, &id, channels[i as usize % 3]).await;
        let (http, url, ch, no) = (
            app.http.clone(),
            app.sim_url("/sim/pay"),
            channels[i as usize % 3],
            p["out_trade_no"].as_str().unwrap().to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .json(&json!({"channel": ch, "out_trade_no": no}))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    // On virtual time: the 10 s / 20 s / 30 s queries come as the clock is moved.
    eventually(&app, 60, "every order paid by active query", |os| {
        os.len() == 200 && os.iter().all(|o| o.status.has_been_paid())
    })
    .await;
    let ledger = app.ledger().await;
    assert_eq!(ledger["charges"].as_array().unwrap().len(), 200);
    assert_invariants(app.violations().await);
}

async fn duplicated_reordered_delayed_notifications_past_expiry(b: Backend) {
    let Some(app) = app(b).await else { return };
    // Every notification five extra times, reordered, and late: 6 s, past the 5 s expiry.
    app.faults(
        json!({"notify_duplicates": 5, "notify_reorder": true, "notify_delay_ms": [6000, 6500]}),
    )
    .await;
    let mut ids = Vec::new();
    for (i, ch) in ["wechatpay", "alipay", "sandbox", "wechatpay"]
        .iter()
        .enumerate()
    {
        let id = create(&app, &format!("DUP-{i}"), 900, Some(5)).await;
        let p = prepay(&app, &id, ch).await;
        app.sim_pay(ch, p["out_trade_no"].as_str().unwrap(), false)
            .await;
        ids.push(id);
    }
    // Active queries find the payments before the order expires; the late notifications that
    // follow change nothing.
    eventually(&app, 30, "all paid", |os| {
        os.iter()
            .filter(|o| o.merchant_order_no.starts_with("DUP-"))
            .all(|o| o.status.has_been_paid())
    })
    .await;
    // Wait for the late, duplicated notifications to have been delivered (not a fixed sleep).
    assert!(
        app.notifications_settled(Duration::from_secs(30)).await,
        "the channels kept notifying"
    );
    for id in &ids {
        assert_eq!(app.order(id).await["status"], "paid");
    }
    let ledger = app.ledger().await;
    assert!(
        ledger["refunds"].as_array().unwrap().is_empty(),
        "nothing to refund: each order was paid once"
    );
    assert_invariants(app.violations().await);
}

async fn payer_pays_two_channels_second_is_refunded_once(b: Backend) {
    let Some(app) = app(b).await else { return };
    let id = create(&app, "TWO-1", 1_990, None).await;
    let wx = prepay(&app, &id, "wechatpay").await;
    // The payer switches to Alipay (the WeChat order is closed at WeChat) …
    let ali = prepay(&app, &id, "alipay").await;
    // … but her WeChat payment was already in flight, and she pays Alipay too.
    assert_eq!(
        app.sim_pay("wechatpay", wx["out_trade_no"].as_str().unwrap(), true)
            .await,
        StatusCode::OK
    );
    assert_eq!(
        app.sim_pay("alipay", ali["out_trade_no"].as_str().unwrap(), false)
            .await,
        StatusCode::OK
    );
    // One payment pays the order; the other is a duplicate, refunded automatically, once.
    let mut waiting = app.waiting(Duration::from_secs(30));
    loop {
        let ledger = app.ledger().await;
        if ledger["refunds"].as_array().unwrap().len() == 1
            && app.order(&id).await["status"] == "paid"
        {
            break;
        }
        assert!(
            waiting.pass(Duration::from_millis(50)).await,
            "duplicate not refunded: {ledger}"
        );
    }
    // Every late and duplicated notification has arrived, and the refund's answer is recorded,
    // before "once" is judged.
    assert!(app.notifications_settled(Duration::from_secs(20)).await);
    app.wait_order(&id, Duration::from_secs(20), |o| {
        o["refunds"][0]["status"] == "succeeded"
    })
    .await;
    let ledger = app.ledger().await;
    assert_eq!(ledger["charges"].as_array().unwrap().len(), 2);
    assert_eq!(
        ledger["refunds"].as_array().unwrap().len(),
        1,
        "refunded exactly once: {ledger}"
    );
    assert_eq!(ledger["refunds"][0]["amount"], 1_990);
    let order = app.order(&id).await;
    let dup: Vec<_> = order["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["duplicate"] == true)
        .collect();
    assert_eq!(dup.len(), 1);
    assert_eq!(order["refunds"][0]["kind"], "duplicate");
    assert_eq!(order["refunds"][0]["status"], "succeeded");
    let events = app
        .store
        .events_of(&payonce_core::OrderId::from_trusted(id.clone()))
        .await
        .unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event_type == "payment.duplicate_detected")
            .count(),
        1
    );
    assert_invariants(app.violations().await);
}

async fn pay_just_before_close_ends_paid_without_refund(b: Backend) {
    let Some(app) = frozen(b, AppOptions::default()).await else {
        return;
    };
    app.faults(json!({"pay_before_close": true, "notify_drop_rate": 1.0}))
        .await;
    let id = create(&app, "PBC-1", 700, Some(5)).await;
    prepay(&app, &id, "wechatpay").await;
    // No payment until the expirer's close, which finds the payer paying that very moment.
    eventually(&app, 30, "paid through the refused close", |os| {
        os.iter()
            .any(|o| o.merchant_order_no == "PBC-1" && o.status.has_been_paid())
    })
    .await;
    // The channel's own notifications now get through, late: they must change nothing.
    app.faults(json!({"notify_drop_rate": 0.0})).await;
    assert!(app.notifications_settled(Duration::from_secs(20)).await);
    assert_eq!(app.order(&id).await["status"], "paid");
    assert!(
        app.ledger().await["refunds"].as_array().unwrap().is_empty(),
        "no refund: it is the order's one payment"
    );
    assert_invariants(app.violations().await);
}

async fn prepay_timeout_settles_to_the_channels_truth(b: Backend) {
    let opts = payonce_testkit::AppOptions {
        channel_timeout: Duration::from_millis(500),
        ..AppOptions::frozen()
    };
    let Some(app) = payonce_testkit::app::spawn_app_with(b, opts).await else {
        return;
    };
    // The channel creates the order; its answer is lost. Nobody retries.
    app.faults(json!({"prepay_timeout_rate": 1.0, "notify_drop_rate": 1.0}))
        .await;
    let id = create(&app, "PTO-1", 300, None).await;
    assert_eq!(
        app.prepay(&id, "wechatpay").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let mut waiting = app.waiting(Duration::from_secs(20));
    loop {
        let v = app.order(&id).await;
        if v["attempts"][0]["status"] == "pending" {
            break;
        }
        assert!(
            waiting.pass(Duration::from_millis(50)).await,
            "still {}",
            v["attempts"][0]["status"]
        );
    }
    // The payer had no credential; an in-flight answer could still have reached a device. If it
    // is paid, the query finds it.
    let no = app.order(&id).await["attempts"][0]["out_trade_no"]
        .as_str()
        .unwrap()
        .to_owned();
    app.sim_pay("wechatpay", &no, false).await;
    eventually(&app, 20, "paid", |os| {
        os.iter()
            .any(|o| o.merchant_order_no == "PTO-1" && o.status.has_been_paid())
    })
    .await;
    assert_eq!(
        app.ledger().await["orders"].as_array().unwrap().len(),
        1,
        "no second channel order"
    );
    // A 5xx that created nothing ends failed once no call can still be creating it.
    app.faults(json!({"prepay_timeout_rate": 0.0, "prepay_error_rate": 1.0}))
        .await;
    let id2 = create(&app, "PTO-2", 300, None).await;
    assert_eq!(
        app.prepay(&id2, "sandbox").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let mut waiting = app.waiting(Duration::from_secs(30));
    loop {
        // The order and its attempts are two reads: the attempt may be seen failed a moment
        // before the order is seen unpaid again (both change in one transaction).
        let v = app.order(&id2).await;
        if v["attempts"][0]["status"] == "failed" && v["status"] == "unpaid" {
            break;
        }
        assert!(
            waiting.pass(Duration::from_millis(50)).await,
            "still {} (order {})",
            v["attempts"][0]["status"],
            v["status"]
        );
    }
    assert_invariants(app.violations().await);
}

async fn expiry_closes_at_the_channel_and_late_payment_is_refunded(b: Backend) {
    let Some(app) = frozen(b, AppOptions::default()).await else {
        return;
    };
    let id = create(&app, "EXP-1", 800, Some(5)).await;
    let p = prepay(&app, &id, "wechatpay").await;
    let no = p["out_trade_no"].as_str().unwrap().to_owned();
    eventually(&app, 30, "closed", |os| {
        os.iter().any(|o| {
            o.merchant_order_no == "EXP-1" && o.status == payonce_core::OrderStatus::Closed
        })
    })
    .await;
    let sim: Value = app
        .http
        .get(app.sim_url(&format!("/sim/orders?channel=wechatpay&out_trade_no={no}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        sim["state"], "CLOSED",
        "closed at the channel, not only in payonce (Jeepay's gap)"
    );
    // A payment still lands (in flight at close): policy `refund` returns it.
    app.sim_pay("wechatpay", &no, true).await;
    until_refunded(&app, "late payment not refunded").await;
    let v = app.order(&id).await;
    assert_eq!(v["status"], "closed", "stays closed");
    assert_eq!(v["refunds"][0]["kind"], "duplicate");
    let events = app
        .store
        .events_of(&payonce_core::OrderId::from_trusted(id.clone()))
        .await
        .unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event_type == "payment.closed")
            .count(),
        1
    );
    assert_invariants(app.violations().await);
}

async fn unscanned_alipay_qr_paid_after_close_is_refunded(b: Backend) {
    let Some(app) = app(b).await else { return };
    let id = create(&app, "ALIQR-1", 600, None).await;
    let p = prepay(&app, &id, "alipay").await;
    let no = p["out_trade_no"].as_str().unwrap().to_owned();
    // The business closes; Alipay answers TRADE_NOT_EXIST for the unscanned QR …
    let r = app.post(&format!("/v1/orders/{id}/close"), json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    // … which stays payable until its own timeout. The payer scans and pays it.
    assert_eq!(app.sim_pay("alipay", &no, false).await, StatusCode::OK);
    // payonce kept watching the closed attempt: the payment is found and given back.
    let mut waiting = app.waiting(Duration::from_secs(30));
    while app.ledger().await["refunds"].as_array().unwrap().is_empty() {
        assert!(
            waiting.pass(Duration::from_millis(50)).await,
            "payment on a closed Alipay QR not refunded"
        );
    }
    assert_eq!(app.order(&id).await["status"], "closed");
    assert_invariants(app.violations().await);
}

async fn paid_order(app: &TestApp, no: &str, amount: i64) -> String {
    let id = create(app, no, amount, None).await;
    let p = prepay(app, &id, "wechatpay").await;
    app.sim_pay("wechatpay", p["out_trade_no"].as_str().unwrap(), false)
        .await;
    let v = app
        .wait_order(&id, Duration::from_secs(10), |o| o["status"] == "paid")
        .await;
    assert_eq!(v["status"], "paid");
    id
}

async fn refunds_partial_full_idempotent(b: Backend) {
    let Some(app) = app(b).await else { return };
    let unpaid = create(&app, "RF-0", 1_000, None).await;
    let r = app
        .post(
            &format!("/v1/orders/{unpaid}/refunds"),
            json!({"merchant_refund_no": "R0", "amount": 1}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "order_not_paid");

    let id = paid_order(&app, "RF-1", 1_000).await;
    let r = app
        .post(
            &format!("/v1/orders/{id}/refunds"),
            json!({"merchant_refund_no": "R1", "amount": 300, "reason": "size"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r1: Value = r.json().await.unwrap();
    // WeChat answers PROCESSING; the money moves a moment later (notification or query).
    assert!(
        r1["status"] == "pending" || r1["status"] == "succeeded",
        "{r1}"
    );
    app.wait_order(&id, Duration::from_secs(10), |o| {
        o["status"] == "partially_refunded"
    })
    .await;
    let settled: Value = app
        .get(&format!("/v1/refunds/{}", r1["id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(settled["status"], "succeeded");
    // Same number, same content: the same refund. Other content: conflict.
    let again = app
        .post(
            &format!("/v1/orders/{id}/refunds"),
            json!({"merchant_refund_no": "R1", "amount": 300, "reason": "size"}),
        )
        .await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.json::<Value>().await.unwrap()["id"], r1["id"]);
    let conflict = app
        .post(
            &format!("/v1/orders/{id}/refunds"),
            json!({"merchant_refund_no": "R1", "amount": 301}),
        )
        .await;
    assert_eq!(conflict.status(), StatusCode::CONFLICT);
    assert_eq!(
        conflict.json::<Value>().await.unwrap()["code"],
        "merchant_refund_no_conflict"
    );
    let over = app
        .post(
            &format!("/v1/orders/{id}/refunds"),
            json!({"merchant_refund_no": "R2", "amount": 701}),
        )
        .await;
    assert_eq!(over.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        over.json::<Value>().await.unwrap()["code"],
        "refund_exceeds_paid"
    );
    let rest = app
        .post(
            &format!("/v1/orders/{id}/refunds"),
            json!({"merchant_refund_no": "R3", "amount": 700}),
        )
        .await;
    assert_eq!(rest.status(), StatusCode::CREATED);
    let v = app
        .wait_order(&id, Duration::from_secs(10), |o| o["status"] == "refunded")
        .await;
    assert_eq!(v["status"], "refunded");
    assert_eq!(v["refunded_amount"], 1_000);
    let got = app
        .get(&format!("/v1/refunds/{}", r1["id"].as_str().unwrap()))
        .await;
    assert_eq!(got.status(), StatusCode::OK);
    let events = app
        .store
        .events_of(&payonce_core::OrderId::from_trusted(id.clone()))
        .await
        .unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event_type == "refund.succeeded")
            .count(),
        2
    );
    assert_eq!(app.ledger().await["refunds"].as_array().unwrap().len(), 2);
    assert_invariants(app.violations().await);
}

async fn concurrent_refunds_never_exceed_paid(b: Backend) {
    let Some(app) = app(b).await else { return };
    let id = paid_order(&app, "RF-C", 1_000).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (http, url, secret) = (
            app.http.clone(),
            app.url(&format!("/v1/orders/{id}/refunds")),
            app.secret.clone(),
        );
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .bearer_auth(secret)
                .json(&json!({"merchant_refund_no": format!("C{i}"), "amount": 100}))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::CREATED => created += 1,
            StatusCode::UNPROCESSABLE_ENTITY => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created, 10, "exactly the paid amount's worth");
    let refunded: i64 = app.ledger().await["refunds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(refunded, 1_000);
    assert_eq!(
        app.wait_order(&id, Duration::from_secs(10), |o| o["status"] == "refunded")
            .await["status"],
        "refunded"
    );
    assert_invariants(app.violations().await);
}

async fn admin_abnormal_queue(b: Backend) {
    let Some(app) = app(b).await else { return };
    let (id, no) = {
        let id = create(&app, "ABN-1", 500, None).await;
        let p = prepay(&app, &id, "sandbox").await;
        (id, p["out_trade_no"].as_str().unwrap().to_owned())
    };
    let (ts, sig, body) = app.signed_sandbox_notification("evt-abn", &no, 499);
    app.post_sandbox_notification(&ts, &sig, &body).await;
    assert_eq!(app.order(&id).await["status"], "paying");
    let denied = app
        .http
        .get(app.url("/admin/v1/abnormal"))
        .bearer_auth(&app.secret)
        .send()
        .await
        .unwrap();
    assert_eq!(
        denied.status(),
        StatusCode::UNAUTHORIZED,
        "an app secret is not an admin token"
    );
    let r = app
        .http
        .get(app.url("/admin/v1/abnormal"))
        .bearer_auth("test-admin-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["items"][0]["kind"], "amount_mismatch");
    payonce_server::workers::run_upkeep(&app.state).await;
    let m = app.metrics_text().await;
    assert!(m.contains("payonce_abnormal_open"), "gauge exported");
}

async fn wechat_refund_notifications(b: Backend) {
    let Some(app) = app(b).await else { return };
    let id = paid_order(&app, "RN-1", 1_000).await;
    // Only the notifications this test sends: the simulator's own REFUND.SUCCESS is dropped, and
    // the refund stays PROCESSING at WeChat for the whole test, so neither a notification nor the
    // refund worker's query can settle it between the row counts below.
    app.faults(json!({"notify_drop_rate": 1.0, "refund_delay_ms": [600_000, 600_000]}))
        .await;
    let r: Value = app
        .post(
            &format!("/v1/orders/{id}/refunds"),
            json!({"merchant_refund_no": "N1", "amount": 400}),
        )
        .await
        .json()
        .await
        .unwrap();
    let out_refund_no = r["out_refund_no"].as_str().unwrap();
    let no = app.order(&id).await["attempts"][0]["out_trade_no"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = app.sim_dir();
    use payonce_testkit::forge::{WxFault, wechat_refund};
    let before = app.counts().await;
    let (status, _) = app
        .deliver(
            "wechatpay",
            &wechat_refund(
                &dir,
                "EV-RF-0",
                &no,
                out_refund_no,
                "SUCCESS",
                WxFault::BadSignature,
            ),
        )
        .await;
    assert!(
        status.is_client_error(),
        "forged refund notification refused"
    );
    let (status, _) = app
        .deliver(
            "wechatpay",
            &wechat_refund(
                &dir,
                "EV-RF-1",
                &no,
                "nosuchrefund",
                "SUCCESS",
                WxFault::None,
            ),
        )
        .await;
    assert!(status.is_client_error(), "unknown refund refused");
    assert_eq!(app.counts().await, before, "changed nothing");
    let good = wechat_refund(
        &dir,
        "EV-RF-2",
        &no,
        out_refund_no,
        "SUCCESS",
        WxFault::None,
    );
    assert_eq!(
        app.deliver("wechatpay", &good).await.0,
        StatusCode::NO_CONTENT
    );
    let after = app.counts().await;
    assert_eq!(
        app.deliver("wechatpay", &good).await.0,
        StatusCode::NO_CONTENT,
        "replay acknowledged"
    );
    assert_eq!(app.counts().await, after, "replay changed nothing");
    let v = app.order(&id).await;
    assert_eq!(v["refunded_amount"], 400, "applied once");
    assert_eq!(v["refunds"][0]["status"], "succeeded");
    assert_invariants(app.violations().await);
}

async fn payment_on_closed_order_with_notifications_lost_is_found_and_refunded(b: Backend) {
    let Some(app) = app(b).await else { return };
    app.faults(json!({"notify_drop_rate": 1.0})).await;
    let id = create(&app, "CLW-1", 700, None).await;
    let p = prepay(&app, &id, "wechatpay").await;
    assert_eq!(
        app.post(&format!("/v1/orders/{id}/close"), json!({}))
            .await
            .status(),
        StatusCode::OK
    );
    // A payment that was in flight lands after the close, and no notification ever arrives:
    // watching the closed attempt finds it, and the money goes back.
    assert_eq!(
        app.sim_pay("wechatpay", p["out_trade_no"].as_str().unwrap(), true)
            .await,
        StatusCode::OK
    );
    let mut waiting = app.waiting(Duration::from_secs(30));
    while app.ledger().await["refunds"].as_array().unwrap().is_empty() {
        assert!(
            waiting.pass(Duration::from_millis(50)).await,
            "the payment on the closed order was not found"
        );
    }
    assert_eq!(app.order(&id).await["status"], "closed");
    assert_invariants(app.violations().await);
}

async fn late_payment_policy_accept_reopens_an_expired_order(b: Backend) {
    let opts = AppOptions {
        late_payment: payonce_core::order::LatePaymentPolicy::Accept,
        ..Default::default()
    };
    let Some(app) = frozen(b, opts).await else {
        return;
    };
    let expired = create(&app, "LATE-1", 800, Some(5)).await;
    let p = prepay(&app, &expired, "wechatpay").await;
    eventually(&app, 30, "expired", |os| {
        os.iter().any(|o| {
            o.merchant_order_no == "LATE-1" && o.status == payonce_core::OrderStatus::Closed
        })
    })
    .await;
    // With `accept`, a payment for an order that merely expired pays it …
    app.sim_pay("wechatpay", p["out_trade_no"].as_str().unwrap(), true)
        .await;
    let v = app
        .wait_order(&expired, Duration::from_secs(20), |o| o["status"] == "paid")
        .await;
    assert_eq!(v["status"], "paid");
    // … but one the business closed is still refunded.
    let closed = create(&app, "LATE-2", 800, None).await;
    let p2 = prepay(&app, &closed, "wechatpay").await;
    app.post(&format!("/v1/orders/{closed}/close"), json!({}))
        .await;
    app.sim_pay("wechatpay", p2["out_trade_no"].as_str().unwrap(), true)
        .await;
    until_refunded(&app, "business-closed order's payment not refunded").await;
    assert_eq!(
        app.ledger().await["refunds"].as_array().unwrap().len(),
        1,
        "only the business-closed one"
    );
    assert_eq!(app.order(&closed).await["status"], "closed");
    assert_invariants(app.violations().await);
}
