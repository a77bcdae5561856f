//! The Idempotency-Key contract (API.md).

use crate::app;
use payonce_testkit::{Backend, store_tests};
use reqwest::StatusCode;
use serde_json::{Value, json};

store_tests!(
    replay_is_byte_identical,
    different_body_is_422,
    concurrent_duplicates_get_one_result,
    keys_are_per_app_and_purged,
    errors_are_replayed_but_not_409s
);

async fn post_keyed(
    app: &payonce_testkit::TestApp,
    path: &str,
    key: &str,
    body: &str,
) -> reqwest::Response {
    app.http
        .post(app.url(path))
        .bearer_auth(&app.secret)
        .header("idempotency-key", key)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn replay_is_byte_identical(b: Backend) {
    let Some(app) = app(b).await else { return };
    let body = r#"{"merchant_order_no":"IK-1","amount":100,"currency":"CNY","subject":"x"}"#;
    let first = post_keyed(&app, "/v1/orders", "key-1", body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_bytes = first.bytes().await.unwrap();
    let again = post_keyed(&app, "/v1/orders", "key-1", body).await;
    assert_eq!(
        again.status(),
        StatusCode::CREATED,
        "the stored status, not a fresh 200"
    );
    assert_eq!(again.headers().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(again.bytes().await.unwrap(), first_bytes);

    // Prepay too: the replay is the first answer, not a new `reused: true` one.
    let order: Value = serde_json::from_slice(&first_bytes).unwrap();
    let path = format!("/v1/orders/{}/prepay", order["id"].as_str().unwrap());
    let p1 = post_keyed(&app, &path, "key-2", r#"{"channel":"sandbox"}"#)
        .await
        .bytes()
        .await
        .unwrap();
    let p2 = post_keyed(&app, &path, "key-2", r#"{"channel":"sandbox"}"#)
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(p1, p2);
    assert_eq!(
        serde_json::from_slice::<Value>(&p1).unwrap()["reused"],
        false
    );
}

async fn different_body_is_422(b: Backend) {
    let Some(app) = app(b).await else { return };
    post_keyed(
        &app,
        "/v1/orders",
        "key-x",
        r#"{"merchant_order_no":"IK-2","amount":100,"currency":"CNY","subject":"x"}"#,
    )
    .await;
    let before = app.counts().await;
    let r = post_keyed(
        &app,
        "/v1/orders",
        "key-x",
        r#"{"merchant_order_no":"IK-3","amount":100,"currency":"CNY","subject":"x"}"#,
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        r.headers().get("content-type").unwrap(),
        "application/problem+json"
    );
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "idempotency_key_reused"
    );
    assert_eq!(app.counts().await, before);
    assert_eq!(
        app.get("/v1/orders?merchant_order_no=IK-3").await.status(),
        StatusCode::NOT_FOUND
    );
}

async fn concurrent_duplicates_get_one_result(b: Backend) {
    let Some(app) = app(b).await else { return };
    let order = app.create_order("IK-C", 100).await;
    let path = format!("/v1/orders/{}/prepay", order["id"].as_str().unwrap());
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (http, url, secret) = (app.http.clone(), app.url(&path), app.secret.clone());
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(secret)
                .header("idempotency-key", "same")
                .json(&json!({"channel":"sandbox"}))
                .send()
                .await
                .unwrap();
            (r.status(), r.bytes().await.unwrap())
        }));
    }
    let mut bodies = std::collections::BTreeSet::new();
    for t in tasks {
        let (status, bytes) = t.await.unwrap();
        match status {
            StatusCode::OK => {
                bodies.insert(bytes);
            }
            StatusCode::CONFLICT => {
                assert_eq!(
                    serde_json::from_slice::<Value>(&bytes).unwrap()["code"],
                    "request_in_progress"
                )
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(bodies.len(), 1, "every success is the one stored answer");
    assert_eq!(app.ledger().await["orders"].as_array().unwrap().len(), 1);
}

async fn keys_are_per_app_and_purged(b: Backend) {
    let Some(app) = app(b).await else { return };
    let other = payonce_server::engine::apps::create_app(
        app.store.as_ref(),
        &app.state.master_key,
        &payonce_core::SystemClock,
        payonce_server::engine::apps::NewApp::named("o"),
    )
    .await
    .unwrap();
    let body = r#"{"merchant_order_no":"IK-P","amount":100,"currency":"CNY","subject":"x"}"#;
    assert_eq!(
        post_keyed(&app, "/v1/orders", "shared", body)
            .await
            .status(),
        StatusCode::CREATED
    );
    // The same key from another app is that app's own key.
    let r = app
        .http
        .post(app.url("/v1/orders"))
        .bearer_auth(&other.secret)
        .header("idempotency-key", "shared")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(r.headers().get("idempotent-replayed").is_none());
    // Kept ≥ 24 h: a purge at now − 24 h removes nothing; a purge past creation removes both.
    let now = payonce_core::Clock::now(&payonce_core::SystemClock);
    assert_eq!(
        app.store
            .idempotency_purge(now.plus_secs(-24 * 3600))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        app.store.idempotency_purge(now.plus_secs(1)).await.unwrap(),
        2
    );
    let r = post_keyed(&app, "/v1/orders", "shared", body).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "after the purge the key runs again (the order exists)"
    );
    assert!(r.headers().get("idempotent-replayed").is_none());
}

async fn errors_are_replayed_but_not_409s(b: Backend) {
    let Some(app) = app(b).await else { return };
    // A 4xx is a complete answer: replayed.
    let bad = r#"{"merchant_order_no":"IK-E","amount":-5,"currency":"CNY","subject":"x"}"#;
    let r1 = post_keyed(&app, "/v1/orders", "err", bad).await;
    assert_eq!(r1.status(), StatusCode::BAD_REQUEST);
    let r2 = post_keyed(&app, "/v1/orders", "err", bad).await;
    assert_eq!(r2.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r2.headers().get("idempotent-replayed").unwrap(), "true");
    // A 409 is not stored: once the conflict is gone, the same key gets a fresh answer.
    let body = r#"{"merchant_order_no":"IK-F","amount":100,"currency":"CNY","subject":"x"}"#;
    app.post(
        "/v1/orders",
        json!({"merchant_order_no":"IK-F","amount":200,"currency":"CNY","subject":"x"}),
    )
    .await;
    let c = post_keyed(&app, "/v1/orders", "conf", body).await;
    assert_eq!(c.status(), StatusCode::CONFLICT);
    let c2 = post_keyed(&app, "/v1/orders", "conf", body).await;
    assert!(c2.headers().get("idempotent-replayed").is_none());
}
