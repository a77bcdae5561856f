//! `/notify/sandbox`: forged notifications change nothing; a valid one applied exactly once.

use crate::{app, assert_invariants};
use payonce_testkit::{Backend, store_tests};
use reqwest::StatusCode;
use serde_json::Value;

store_tests!(
    forged_notifications_change_nothing,
    valid_notification_five_times_pays_once,
    wrong_amount_goes_to_abnormal,
    unknown_out_trade_no_is_refused
);

async fn pending_order(app: &payonce_testkit::TestApp, no: &str) -> (String, String) {
    let order = app.create_order(no, 100).await;
    let id = order["id"].as_str().unwrap().to_owned();
    let p: Value = app.prepay(&id, "sandbox").await.json().await.unwrap();
    (id, p["out_trade_no"].as_str().unwrap().to_owned())
}

async fn forged_notifications_change_nothing(b: Backend) {
    let Some(app) = app(b).await else { return };
    let (id, no) = pending_order(&app, "N-F").await;
    let before = app.counts().await;
    let (ts, sig, body) = app.signed_sandbox_notification("evt-forged", &no, 100);
    let tampered = body.replace("\"amount\":100", "\"amount\":1");
    let stale_ts = (ts.parse::<i64>().unwrap() - 3600).to_string();
    let wrong_key_sig = payonce_channels::sandbox::protocol::sign(
        &payonce_channels::secret::SecretBytes::random32(),
        ts.parse().unwrap(),
        "POST",
        "/notify/sandbox",
        body.as_bytes(),
    );
    for (name, ts, sig, body) in [
        (
            "tampered body",
            ts.as_str(),
            sig.as_str(),
            tampered.as_str(),
        ),
        (
            "wrong key",
            ts.as_str(),
            wrong_key_sig.as_str(),
            body.as_str(),
        ),
        (
            "stale timestamp",
            stale_ts.as_str(),
            sig.as_str(),
            body.as_str(),
        ),
        ("garbage signature", ts.as_str(), "v1=00", body.as_str()),
        ("not json", ts.as_str(), sig.as_str(), "{{{"),
    ] {
        let r = app.post_sandbox_notification(ts, sig, body).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{name}");
        let answer: Value = r.json().await.unwrap();
        assert_eq!(
            answer["code"], "FAIL",
            "{name}: the channel's failure answer"
        );
    }
    assert_eq!(
        app.counts().await,
        before,
        "forged notifications changed nothing"
    );
    assert_eq!(app.order(&id).await["status"], "paying");
}

async fn valid_notification_five_times_pays_once(b: Backend) {
    let Some(app) = app(b).await else { return };
    let (id, no) = pending_order(&app, "N-V").await;
    // The payment really happened at the channel (notifications from the simulator dropped, so
    // only ours arrive).
    app.faults(serde_json::json!({"notify_drop_rate": 1.0}))
        .await;
    assert_eq!(app.sim_pay("sandbox", &no, false).await, StatusCode::OK);
    let (ts, sig, body) = app.signed_sandbox_notification("evt-1", &no, 100);
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let (ts, sig, body) = (ts.clone(), sig.clone(), body.clone());
        let http = app.http.clone();
        let url = app.url("/notify/sandbox");
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .header("sandbox-timestamp", ts)
                .header("sandbox-signature", sig)
                .body(body)
                .send()
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.json::<Value>().await.unwrap()["code"], "SUCCESS");
    }
    let order = app.order(&id).await;
    assert_eq!(order["status"], "paid");
    assert_eq!(order["attempts"][0]["status"], "succeeded");
    // The count the bench polls sees it, and only orders whose number carries the marker.
    assert_eq!(app.store.count_paid_orders("N-V").await.unwrap(), 1);
    assert_eq!(app.store.count_paid_orders("N-W").await.unwrap(), 0);
    let counts: std::collections::HashMap<_, _> = app.counts().await.into_iter().collect();
    assert_eq!(counts["channel_events"], 1, "one event recorded");
    let events = app
        .store
        .events_of(&payonce_core::OrderId::from_trusted(id.clone()))
        .await
        .unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event_type == "payment.succeeded")
            .count(),
        1
    );
    let payload: Value = serde_json::from_str(&events[0].payload).unwrap();
    assert_eq!(payload["data"]["order_id"], id.as_str());
    assert_eq!(payload["data"]["status"], "paid");
    assert_invariants(app.violations().await);
}

async fn wrong_amount_goes_to_abnormal(b: Backend) {
    let Some(app) = app(b).await else { return };
    let (id, no) = pending_order(&app, "N-A").await;
    let (ts, sig, body) = app.signed_sandbox_notification("evt-amt", &no, 1);
    let r = app.post_sandbox_notification(&ts, &sig, &body).await;
    assert_eq!(r.status(), StatusCode::OK, "correctly signed: acknowledged");
    assert_eq!(
        app.order(&id).await["status"],
        "paying",
        "but it did not pay the order"
    );
    let abnormal = app.store.abnormal_open().await.unwrap();
    assert_eq!(abnormal.len(), 1);
    assert_eq!(abnormal[0].kind, "amount_mismatch");
}

async fn unknown_out_trade_no_is_refused(b: Backend) {
    let Some(app) = app(b).await else { return };
    let before = app.counts().await;
    let (ts, sig, body) =
        app.signed_sandbox_notification("evt-u", "ffffffffffffffffffffffffffffffff", 100);
    let r = app.post_sandbox_notification(&ts, &sig, &body).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(app.counts().await, before);
}
