//! Orders: creation semantics, isolation between apps, reading, closing, operations endpoints.

use crate::{app, assert_invariants};
use payonce_testkit::{Backend, store_tests};
use reqwest::StatusCode;
use serde_json::json;

store_tests!(
    create_is_idempotent_by_merchant_order_no,
    another_apps_order_is_404,
    find_by_merchant_order_no,
    close_unpaid_order_closes_channel_order,
    close_reveals_payment_answers_order_already_paid,
    operations_endpoints,
);

async fn create_is_idempotent_by_merchant_order_no(b: Backend) {
    let Some(app) = app(b).await else { return };
    let body = json!({"merchant_order_no": "M-1", "amount": 100, "currency": "CNY", "subject": "tea", "metadata": {"sku": "x"}});
    let first = app.post("/v1/orders", body.clone()).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: serde_json::Value = first.json().await.unwrap();
    assert_eq!(first["status"], "unpaid");
    assert_eq!(first["amount"], 100);
    assert_eq!(first["metadata"]["sku"], "x");
    assert!(first["id"].as_str().unwrap().starts_with("ord_"));

    let again = app.post("/v1/orders", body).await;
    assert_eq!(again.status(), StatusCode::OK);
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);

    let before = app.counts().await;
    let other = app
        .post(
            "/v1/orders",
            json!({"merchant_order_no": "M-1", "amount": 101, "currency": "CNY", "subject": "tea"}),
        )
        .await;
    assert_eq!(other.status(), StatusCode::CONFLICT);
    let other: serde_json::Value = other.json().await.unwrap();
    assert_eq!(other["code"], "merchant_order_no_conflict");
    assert_eq!(other["order"]["id"], first["id"]);
    assert_eq!(app.counts().await, before);
}

async fn another_apps_order_is_404(b: Backend) {
    let Some(app) = app(b).await else { return };
    let order = app.create_order("ISO-1", 100).await;
    let id = order["id"].as_str().unwrap();
    let other = payonce_server::engine::apps::create_app(
        app.store.as_ref(),
        &app.state.master_key,
        &payonce_core::SystemClock,
        payonce_server::engine::apps::NewApp::named("other-shop"),
    )
    .await
    .unwrap();
    let before = app.counts().await;
    for (method, path) in [
        ("GET", format!("/v1/orders/{id}")),
        ("POST", format!("/v1/orders/{id}/prepay")),
        ("POST", format!("/v1/orders/{id}/close")),
        ("GET", "/v1/orders?merchant_order_no=ISO-1".to_owned()),
    ] {
        let req = if method == "GET" {
            app.http.get(app.url(&path))
        } else {
            app.http
                .post(app.url(&path))
                .json(&json!({"channel": "sandbox"}))
        };
        let r = req.bearer_auth(&other.secret).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{method} {path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["code"], "not_found");
    }
    assert_eq!(
        app.counts().await,
        before,
        "another app's requests changed nothing"
    );
    assert_eq!(app.ledger().await["orders"].as_array().unwrap().len(), 0);
}

async fn find_by_merchant_order_no(b: Backend) {
    let Some(app) = app(b).await else { return };
    let order = app.create_order("FIND-1", 100).await;
    let r = app.get("/v1/orders?merchant_order_no=FIND-1").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["id"],
        order["id"]
    );
    assert_eq!(
        app.get("/v1/orders?merchant_order_no=NOPE").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/v1/orders/ord_not-an-id").await.status(),
        StatusCode::NOT_FOUND
    );
}

async fn close_unpaid_order_closes_channel_order(b: Backend) {
    let Some(app) = app(b).await else { return };
    let order = app.create_order("CLOSE-1", 100).await;
    let id = order["id"].as_str().unwrap();
    let p: serde_json::Value = app.prepay(id, "sandbox").await.json().await.unwrap();
    let no = p["out_trade_no"].as_str().unwrap();
    let r = app.post(&format!("/v1/orders/{id}/close"), json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let closed: serde_json::Value = r.json().await.unwrap();
    assert_eq!(closed["status"], "closed");
    assert_eq!(closed["attempts"][0]["status"], "closed");
    let sim: serde_json::Value = app
        .http
        .get(app.sim_url(&format!("/sim/orders?channel=sandbox&out_trade_no={no}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        sim["state"], "CLOSED",
        "closed at the channel, not only locally"
    );
    // The QR can no longer be paid, and a new prepay is refused.
    assert_eq!(
        app.sim_pay("sandbox", no, false).await,
        StatusCode::CONFLICT
    );
    let again = app.prepay(id, "sandbox").await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(
        again.json::<serde_json::Value>().await.unwrap()["code"],
        "order_closed"
    );
    // Closing twice is fine.
    assert_eq!(
        app.post(&format!("/v1/orders/{id}/close"), json!({}))
            .await
            .status(),
        StatusCode::OK
    );
    let events = app
        .store
        .events_of(&payonce_core::OrderId::from_trusted(id.to_owned()))
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

async fn close_reveals_payment_answers_order_already_paid(b: Backend) {
    let Some(app) = app(b).await else { return };
    let order = app.create_order("CLOSE-2", 100).await;
    let id = order["id"].as_str().unwrap();
    assert_eq!(app.prepay(id, "sandbox").await.status(), StatusCode::OK);
    app.faults(json!({"pay_before_close": true, "notify_drop_rate": 1.0}))
        .await;
    let r = app.post(&format!("/v1/orders/{id}/close"), json!({})).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "order_already_paid");
    assert_eq!(body["order"]["status"], "paid");
    assert_eq!(app.order(id).await["status"], "paid");
    assert_invariants(app.violations().await);
}

async fn operations_endpoints(b: Backend) {
    let Some(app) = app(b).await else { return };
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.http
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let order = app.create_order("OPS-1", 100).await;
    app.prepay(order["id"].as_str().unwrap(), "sandbox").await;
    let m = app.metrics_text().await;
    assert!(m.contains("payonce_prepay_total"), "{m}");
    assert!(m.contains("outcome=\"created\""), "{m}");
}
