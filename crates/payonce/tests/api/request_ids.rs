//! Every answer names its request: the caller's `X-Request-Id` is kept (a malformed one is
//! replaced), echoed, and a problem+json answer carries it as `instance`.

use payonce_testkit::{Backend, store_tests};
use reqwest::StatusCode;
use serde_json::Value;

store_tests!(request_ids_are_echoed_and_name_problems);

async fn request_ids_are_echoed_and_name_problems(b: Backend) {
    let Some(app) = crate::app(b).await else {
        return;
    };
    let r = app
        .http
        .get(app.url("/v1/orders/ord_nope"))
        .bearer_auth(&app.secret)
        .header("x-request-id", "shop-42.a:b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.headers()["x-request-id"], "shop-42.a:b");
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["instance"], "urn:payonce:request:shop-42.a:b", "{p}");
    // None given, or one that could smuggle anything into a log line: a fresh one.
    for given in [None, Some("bad id with spaces")] {
        let mut req = app
            .http
            .get(app.url("/v1/orders/ord_nope"))
            .bearer_auth(&app.secret);
        if let Some(g) = given {
            req = req.header("x-request-id", g);
        }
        let r = req.send().await.unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(id.starts_with("req_") && id.len() == 36, "{id}");
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["instance"], format!("urn:payonce:request:{id}"));
    }
    // A successful answer carries the header too, and its body is untouched.
    let r = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert!(r.headers().contains_key("x-request-id"));
}
