//! The foundation's guarantees over the real protocols (WeChat Pay v3, Alipay), and hostile
//! notifications on each: the channel's failure answer and no change, or — for a correctly
//! signed one — its success answer exactly once.

use crate::{app, assert_invariants};
use payonce_testkit::forge::{self, AliFault, WxFault};
use payonce_testkit::{Backend, TestApp, store_tests};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

store_tests!(
    storms_and_payments_over_real_protocols,
    hostile_wechatpay_notifications,
    hostile_alipay_notifications,
    switching_channel_closes_the_previous_channel_order,
    switch_that_finds_a_payment_answers_order_already_paid,
    jsapi_credential_is_signed_for_the_front_end,
);

async fn pending(app: &TestApp, no: &str, channel: &str, amount: i64) -> (String, String) {
    let order = app.create_order(no, amount).await;
    let id = order["id"].as_str().unwrap().to_owned();
    let r = app.prepay(&id, channel).await;
    assert_eq!(r.status(), StatusCode::OK);
    let p: Value = r.json().await.unwrap();
    (id, p["out_trade_no"].as_str().unwrap().to_owned())
}

async fn storms_and_payments_over_real_protocols(b: Backend) {
    let Some(app) = app(b).await else { return };
    app.faults(json!({"notify_duplicates": 2})).await;
    for channel in ["wechatpay", "alipay"] {
        let order = app.create_order(&format!("STORM-{channel}"), 2_345).await;
        let id = order["id"].as_str().unwrap().to_owned();
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let (http, url, secret) = (
                app.http.clone(),
                app.url(&format!("/v1/orders/{id}/prepay")),
                app.secret.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let r = http
                    .post(url)
                    .bearer_auth(secret)
                    .json(&json!({"channel": channel}))
                    .send()
                    .await
                    .unwrap();
                (r.status(), r.json::<Value>().await.unwrap())
            }));
        }
        let mut creds = BTreeSet::new();
        let mut no = String::new();
        for t in tasks {
            let (status, body) = t.await.unwrap();
            match status {
                StatusCode::OK => {
                    creds.insert(body["credential"].to_string());
                    no = body["out_trade_no"].as_str().unwrap().to_owned();
                }
                StatusCode::CONFLICT => assert_eq!(body["code"], "request_in_progress"),
                other => panic!("{channel}: unexpected {other}: {body}"),
            }
        }
        assert_eq!(creds.len(), 1, "{channel}: one credential");
        let ledger = app.ledger().await;
        let mine = ledger["orders"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["channel"] == channel)
            .count();
        assert_eq!(mine, 1, "{channel}: one channel order");
        assert_eq!(app.sim_pay(channel, &no, false).await, StatusCode::OK);
        let paid = app
            .wait_order(&id, Duration::from_secs(10), |o| o["status"] == "paid")
            .await;
        assert_eq!(
            paid["status"], "paid",
            "{channel}: paid through the channel's own notification"
        );
    }
    // Let the duplicate deliveries land, then check nothing was applied twice.
    assert!(app.notifications_settled(Duration::from_secs(20)).await);
    assert_invariants(app.violations().await);
}

async fn hostile_wechatpay_notifications(b: Backend) {
    let Some(app) = app(b).await else { return };
    app.faults(json!({"notify_drop_rate": 1.0})).await;
    let dir = app.sim_dir();
    let (id, no) = pending(&app, "WX-H", "wechatpay", 500).await;
    let before = app.counts().await;
    for fault in [
        WxFault::BadSignature,
        WxFault::UnknownSerial,
        WxFault::Stale,
        WxFault::TamperedCiphertext,
    ] {
        let (status, body) = app
            .deliver(
                "wechatpay",
                &forge::wechat_paid(&dir, "EV-1", &no, 500, 500, fault),
            )
            .await;
        assert!(status.is_client_error(), "{fault:?}: {status}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["code"], "FAIL", "{fault:?}: WeChat's failure answer");
    }
    let (status, _) = app
        .deliver(
            "wechatpay",
            &forge::wechat_paid(
                &dir,
                "EV-2",
                "nosuchorder0000000000000000000",
                500,
                500,
                WxFault::None,
            ),
        )
        .await;
    assert!(status.is_client_error(), "unknown out_trade_no");
    assert_eq!(
        app.counts().await,
        before,
        "hostile notifications changed nothing"
    );

    // Valid, with a discount (payer_total < total): amount.total is what counts.
    let good = forge::wechat_paid(&dir, "EV-3", &no, 500, 450, WxFault::None);
    let (status, body) = app.deliver("wechatpay", &good).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::NO_CONTENT, ""),
        "WeChat's success answer"
    );
    assert_eq!(app.order(&id).await["status"], "paid");
    let after = app.counts().await;
    let (status, _) = app.deliver("wechatpay", &good).await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "an exact replay gets the success answer"
    );
    assert_eq!(app.counts().await, after, "and changes nothing");

    // Correctly signed, wrong amount.total: acknowledged, not applied, flagged for a person.
    let (id2, no2) = pending(&app, "WX-M", "wechatpay", 500).await;
    let (status, _) = app
        .deliver(
            "wechatpay",
            &forge::wechat_paid(&dir, "EV-4", &no2, 499, 499, WxFault::None),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(app.order(&id2).await["status"], "paying");
    let abnormal = app.store.abnormal_open().await.unwrap();
    assert!(
        abnormal.iter().any(|a| a.kind == "amount_mismatch"),
        "{abnormal:?}"
    );
}

async fn hostile_alipay_notifications(b: Backend) {
    let Some(app) = app(b).await else { return };
    app.faults(json!({"notify_drop_rate": 1.0})).await;
    let dir = app.sim_dir();
    let (id, no) = pending(&app, "ALI-H", "alipay", 1_234).await;
    let before = app.counts().await;
    for fault in [
        AliFault::BadSignature,
        AliFault::TamperedAmount,
        AliFault::WrongApp,
    ] {
        let (status, body) = app
            .deliver(
                "alipay",
                &forge::alipay_paid(&dir, "N1", &no, "12.34", fault),
            )
            .await;
        assert_ne!(body, "success", "{fault:?}");
        assert!(status.is_client_error(), "{fault:?}: {status}");
    }
    let (_, body) = app
        .deliver(
            "alipay",
            &forge::alipay_paid(&dir, "N2", "nosuchorder", "12.34", AliFault::None),
        )
        .await;
    assert_ne!(body, "success", "unknown out_trade_no");
    assert_eq!(
        app.counts().await,
        before,
        "hostile notifications changed nothing"
    );

    let good = forge::alipay_paid(&dir, "N3", &no, "12.34", AliFault::None);
    assert_eq!(
        app.deliver("alipay", &good).await,
        (StatusCode::OK, "success".to_owned())
    );
    assert_eq!(app.order(&id).await["status"], "paid");
    let after = app.counts().await;
    assert_eq!(
        app.deliver("alipay", &good).await,
        (StatusCode::OK, "success".to_owned()),
        "replay: success"
    );
    assert_eq!(app.counts().await, after, "replay: no change");

    let (id2, no2) = pending(&app, "ALI-M", "alipay", 1_234).await;
    let (_, body) = app
        .deliver(
            "alipay",
            &forge::alipay_paid(&dir, "N4", &no2, "12.35", AliFault::None),
        )
        .await;
    assert_eq!(
        body, "success",
        "a correctly signed mismatch is acknowledged"
    );
    assert_eq!(app.order(&id2).await["status"], "paying");
    assert!(
        app.store
            .abnormal_open()
            .await
            .unwrap()
            .iter()
            .any(|a| a.kind == "amount_mismatch")
    );
}

async fn switching_channel_closes_the_previous_channel_order(b: Backend) {
    let Some(app) = app(b).await else { return };
    let (id, wx_no) = pending(&app, "SW-1", "wechatpay", 300).await;
    let r = app.prepay(&id, "alipay").await;
    assert_eq!(r.status(), StatusCode::OK);
    let ali: Value = r.json().await.unwrap();
    let sim_wx: Value = app
        .http
        .get(app.sim_url(&format!(
            "/sim/orders?channel=wechatpay&out_trade_no={wx_no}"
        )))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        sim_wx["state"], "CLOSED",
        "the WeChat order was closed at the channel first"
    );
    let view = app.order(&id).await;
    let statuses: Vec<_> = view["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["channel"].clone(), a["status"].clone()))
        .collect();
    assert!(
        statuses.contains(&(json!("wechatpay"), json!("closed"))),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&(json!("alipay"), json!("pending"))),
        "{statuses:?}"
    );
    // The payer pays the Alipay QR: one charge, order paid.
    app.sim_pay("alipay", ali["out_trade_no"].as_str().unwrap(), false)
        .await;
    app.wait_order(&id, Duration::from_secs(10), |o| o["status"] == "paid")
        .await;
    assert_invariants(app.violations().await);
}

async fn switch_that_finds_a_payment_answers_order_already_paid(b: Backend) {
    let Some(app) = app(b).await else { return };
    let (id, _) = pending(&app, "SW-2", "wechatpay", 300).await;
    // The payer's WeChat payment lands just before the close; its notification is lost.
    app.faults(json!({"pay_before_close": true, "notify_drop_rate": 1.0}))
        .await;
    let r = app.prepay(&id, "alipay").await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "order_already_paid");
    assert_eq!(body["order"]["status"], "paid");
    let ledger = app.ledger().await;
    assert!(
        ledger["orders"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["channel"] != "alipay"),
        "no Alipay order was made"
    );
    assert_invariants(app.violations().await);
}

async fn jsapi_credential_is_signed_for_the_front_end(b: Backend) {
    let Some(app) = app(b).await else { return };
    let order = app.create_order("JSAPI-1", 100).await;
    let id = order["id"].as_str().unwrap();
    let r = app.post(&format!("/v1/orders/{id}/prepay"), json!({"channel": "wechatpay", "method": "jsapi", "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let c: Value = r.json().await.unwrap();
    let cred = &c["credential"];
    assert!(
        cred["package"]
            .as_str()
            .unwrap()
            .starts_with("prepay_id=wx")
    );
    let msg = format!(
        "{}\n{}\n{}\n{}\n",
        cred["appId"].as_str().unwrap(),
        cred["timeStamp"].as_str().unwrap(),
        cred["nonceStr"].as_str().unwrap(),
        cred["package"].as_str().unwrap()
    );
    let merchant = payonce_channels::crypto::RsaSigner::from_pem(
        &std::fs::read_to_string(app.sim_dir().join("wechatpay_merchant_key.pem")).unwrap(),
    )
    .unwrap();
    assert!(
        merchant
            .verifier()
            .verify_b64(msg.as_bytes(), cred["paySign"].as_str().unwrap()),
        "paySign verifies with the merchant key"
    );
    assert_eq!(cred["signType"], "RSA");
}
