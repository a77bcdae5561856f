//! Bad input gets a clear error (status and code of API.md, fields named) and changes nothing.

use crate::app;
use payonce_testkit::{Backend, store_tests};
use reqwest::StatusCode;
use serde_json::Value;

store_tests!(
    bad_orders_are_rejected_without_change,
    bad_prepays_are_rejected_without_change,
    wrong_secret_is_401
);

async fn send(
    app: &payonce_testkit::TestApp,
    path: &str,
    body: &str,
) -> (StatusCode, Value, String) {
    let r = app
        .http
        .post(app.url(path))
        .bearer_auth(&app.secret)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, r.json().await.unwrap_or(Value::Null), ct)
}

async fn bad_orders_are_rejected_without_change(b: Backend) {
    let Some(app) = app(b).await else { return };
    let before = app.counts().await;
    let long = "x".repeat(200);
    let huge = format!(
        r#"{{"merchant_order_no":"H","amount":1,"currency":"CNY","subject":"{}"}}"#,
        "y".repeat(70_000)
    );
    let cases: Vec<(&str, String, StatusCode, &str, Option<&str>)> = vec![
        ("malformed JSON", r#"{"merchant_order_no": "#.into(), StatusCode::BAD_REQUEST, "validation_failed", Some("body")),
        ("not an object", "[1,2]".into(), StatusCode::BAD_REQUEST, "validation_failed", Some("body")),
        ("missing amount", r#"{"merchant_order_no":"A","currency":"CNY","subject":"s"}"#.into(), StatusCode::BAD_REQUEST, "validation_failed", Some("amount")),
        ("zero amount", r#"{"merchant_order_no":"A","amount":0,"currency":"CNY","subject":"s"}"#.into(), StatusCode::BAD_REQUEST, "validation_failed", Some("amount")),
        ("negative amount", r#"{"merchant_order_no":"A","amount":-100,"currency":"CNY","subject":"s"}"#.into(), StatusCode::BAD_REQUEST, "validation_failed", Some("amount")),
        ("fractional amount", r#"{"merchant_order_no":"A","amount":1.5,"currency":"CNY","subject":"s"}"#.into(), StatusCode::BAD_REQUEST, "validation_failed", Some("amount")),
        ("string amount", r#"{"merchant_order_no":"A","amount":"100","currency":"CNY","subject":"s"}"#.into(), StatusCode::BAD_REQUEST, "validation_failed", Some("amount")),
        ("absurd amount", r#"{"merchant_order_no":"A","amount":99999999999999,"currency":"CNY","subject":"s"}"#.into(), StatusCode::BAD_REQUEST, "validation_failed", Some("amount")),
        ("bad currency", r#"{"merchant_order_no":"A","amount":1,"currency":"XXX","subject":"s"}"#.into(), StatusCode::BAD_REQUEST, "validation_failed", Some("currency")),
        ("oversized subject", format!(r#"{{"merchant_order_no":"A","amount":1,"currency":"CNY","subject":"{long}"}}"#), StatusCode::BAD_REQUEST, "validation_failed", Some("subject")),
        ("oversized merchant_order_no", format!(r#"{{"merchant_order_no":"{long}","amount":1,"currency":"CNY","subject":"s"}}"#), StatusCode::BAD_REQUEST, "validation_failed", Some("merchant_order_no")),
        ("bad characters", r#"{"merchant_order_no":"A B/C","amount":1,"currency":"CNY","subject":"s"}"#.into(), StatusCode::BAD_REQUEST, "validation_failed", Some("merchant_order_no")),
        ("unknown field", r#"{"merchant_order_no":"A","amount":1,"currency":"CNY","subject":"s","ammount":2}"#.into(), StatusCode::BAD_REQUEST, "validation_failed", Some("ammount")),
        ("expiry too short", r#"{"merchant_order_no":"A","amount":1,"currency":"CNY","subject":"s","expire_in_seconds":4}"#.into(), StatusCode::BAD_REQUEST, "validation_failed", Some("expire_in_seconds")),
        ("bad notify_url", r#"{"merchant_order_no":"A","amount":1,"currency":"CNY","subject":"s","notify_url":"ftp://x"}"#.into(), StatusCode::BAD_REQUEST, "validation_failed", Some("notify_url")),
        ("oversized body", huge, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None),
    ];
    for (name, body, status, code, field) in cases {
        let (got, json, ct) = send(&app, "/v1/orders", &body).await;
        assert_eq!(got, status, "{name}: {json}");
        assert_eq!(json["code"], code, "{name}");
        assert_eq!(ct, "application/problem+json", "{name}");
        assert_eq!(json["status"], status.as_u16(), "{name}");
        if let Some(f) = field {
            let fields: Vec<&str> = json["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["field"].as_str().unwrap())
                .collect();
            assert!(
                fields.contains(&f),
                "{name}: errors name {fields:?}, expected {f}"
            );
        }
    }
    // Several problems at once are all reported.
    let (_, json, _) = send(&app, "/v1/orders", r#"{"amount":0}"#).await;
    assert!(json["errors"].as_array().unwrap().len() >= 4, "{json}");
    assert_eq!(
        app.counts().await,
        before,
        "rejected requests changed nothing"
    );
}

async fn bad_prepays_are_rejected_without_change(b: Backend) {
    let Some(app) = app(b).await else { return };
    let order = app.create_order("BAD-P", 100).await;
    let path = format!("/v1/orders/{}/prepay", order["id"].as_str().unwrap());
    let before = app.counts().await;
    for (name, body, field) in [
        ("unknown channel", r#"{"channel":"paypal"}"#, "channel"),
        (
            "another channel's method",
            r#"{"channel":"unionpay","method":"native"}"#,
            "method",
        ),
        ("missing channel", r#"{}"#, "channel"),
        (
            "wrong method",
            r#"{"channel":"sandbox","method":"jsapi"}"#,
            "method",
        ),
        (
            "payer not an object",
            r#"{"channel":"sandbox","payer":"x"}"#,
            "payer",
        ),
    ] {
        let (status, json, _) = send(&app, &path, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {json}");
        assert_eq!(json["code"], "validation_failed");
        assert_eq!(json["errors"][0]["field"], field, "{name}");
    }
    let (status, json, _) = send(
        &app,
        "/v1/orders/ord_00000000000000000000000000000000/prepay",
        r#"{"channel":"sandbox"}"#,
    )
    .await;
    assert_eq!(
        (status, json["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    assert_eq!(app.counts().await, before);
    assert_eq!(
        app.ledger().await["prepay_requests"],
        0,
        "nothing reached the channel"
    );
}

async fn wrong_secret_is_401(b: Backend) {
    let Some(app) = app(b).await else { return };
    let before = app.counts().await;
    let body = r#"{"merchant_order_no":"A","amount":1,"currency":"CNY","subject":"s"}"#;
    for auth in [
        None,
        Some("Bearer sk_wrong"),
        Some("Basic abc"),
        Some("Bearer "),
    ] {
        let mut req = app
            .http
            .post(app.url("/v1/orders"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.header("idempotency-key", "k").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        let json: Value = r.json().await.unwrap();
        assert_eq!(json["code"], "unauthorized");
        assert!(
            !json.to_string().contains("sk_wrong"),
            "the secret is not echoed"
        );
    }
    assert_eq!(app.counts().await, before);
}
