//! The OpenAPI document and the router agree: every documented operation is routed (an
//! unrouted one would get axum's empty 404/405), and the document names every operation of
//! API.md.

use crate::app;
use payonce_testkit::{Backend, store_tests};
use reqwest::StatusCode;
use serde_json::Value;

store_tests!(openapi_document_matches_the_router);

async fn openapi_document_matches_the_router(b: Backend) {
    let Some(app) = app(b).await else { return };
    let doc: Value = app.http.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for required in ["/v1/orders", "/v1/orders/{id}", "/v1/orders/{id}/prepay", "/v1/orders/{id}/close", "/v1/orders/{id}/refunds", "/v1/refunds/{id}",
                     "/notify/{channel}", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"] {
        assert!(paths.contains_key(required), "{required} documented");
    }
    let mut checked = 0;
    for (path, ops) in paths {
        let concrete = path.replace("{id}", "ord_00000000000000000000000000000000").replace("{channel}", "sandbox");
        for method in ops.as_object().unwrap().keys() {
            let req = match method.as_str() {
                "get" => app.http.get(app.url(&concrete)),
                "post" => app.http.post(app.url(&concrete)).header("content-type", "application/json").body("{}"),
                other => panic!("unexpected method {other}"),
            };
            let r = req.bearer_auth("test-admin-token").send().await.unwrap();
            let status = r.status();
            let body = r.bytes().await.unwrap();
            // Our own 404s carry a problem+json body; axum's "no such route" is empty.
            assert!(!(status == StatusCode::NOT_FOUND && body.is_empty()) && status != StatusCode::METHOD_NOT_ALLOWED, "{method} {path} is not routed");
            checked += 1;
        }
    }
    assert!(checked >= 19);
    let docs = app.http.get(app.url("/docs")).send().await.unwrap().text().await.unwrap();
    assert!(docs.contains("/openapi.json"));
}
