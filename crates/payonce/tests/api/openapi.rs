//! The OpenAPI document is the code's: every route is in it (and nothing else), every answer
//! the server really gives has exactly the documented fields, and the layers' statuses are
//! listed on every operation they wrap. (schemathesis, in `scripts/schemathesis`, then
//! generates requests from the document against a live server.)

use crate::app;
use payonce_testkit::{Backend, store_tests};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeSet;

store_tests!(
    openapi_document_matches_the_router,
    documented_shapes_are_the_real_answers
);

async fn document(app: &payonce_testkit::TestApp) -> Value {
    let r = app.http.get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

async fn openapi_document_matches_the_router(b: Backend) {
    let Some(app) = app(b).await else { return };
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for required in [
        "/v1/orders",
        "/v1/orders/{id}",
        "/v1/orders/{id}/prepay",
        "/v1/orders/{id}/close",
        "/v1/orders/{id}/refunds",
        "/v1/refunds/{id}",
        "/admin/v1/abnormal",
        "/admin/v1/events",
        "/admin/v1/events/{id}",
        "/admin/v1/events/{id}/resend",
        "/admin/v1/events/resend-failed",
        "/admin/v1/apps/{id}/rotate-webhook-secret",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(paths.contains_key(required), "{required} documented");
    }
    // The channels' endpoints and the HTML pages are not part of the JSON API.
    for outside in ["/notify/{channel}", "/docs", "/console", "/openapi.json"] {
        assert!(
            !paths.contains_key(outside),
            "{outside} is not in the document"
        );
    }
    let mut operation_ids = BTreeSet::new();
    let mut checked = 0;
    for (path, ops) in paths {
        let concrete = path.replace("{id}", "ord_00000000000000000000000000000000");
        for (method, op) in ops.as_object().unwrap() {
            assert!(
                operation_ids.insert(op["operationId"].as_str().unwrap().to_owned()),
                "operationId unique: {method} {path}"
            );
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.contains_key("503"),
                "{method} {path}: every route can shed load"
            );
            if path.starts_with("/v1/") {
                for s in ["401", "429"] {
                    assert!(responses.contains_key(s), "{method} {path} documents {s}");
                }
            }
            if op.get("requestBody").is_some() {
                for s in ["400", "413", "415"] {
                    assert!(responses.contains_key(s), "{method} {path} documents {s}");
                }
            }
            // Routed: our own 404s carry a problem+json body; axum's "no such route" is empty.
            let req = match method.as_str() {
                "get" => app.http.get(app.url(&concrete)),
                "post" => app
                    .http
                    .post(app.url(&concrete))
                    .header("content-type", "application/json")
                    .body("{}"),
                "put" => app
                    .http
                    .put(app.url(&concrete))
                    .header("content-type", "application/json")
                    .body("{}"),
                other => panic!("unexpected method {other}"),
            };
            let r = req.bearer_auth("test-admin-token").send().await.unwrap();
            let status = r.status();
            let body = r.bytes().await.unwrap();
            assert!(
                !(status == StatusCode::NOT_FOUND && body.is_empty())
                    && status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is not routed"
            );
            assert!(
                responses.contains_key(status.as_str()),
                "{method} {path} answered an undocumented {status}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 27);
    // The prepay body lists exactly the configured channels and their methods.
    let prepay = &doc["components"]["schemas"]["Prepay"]["anyOf"];
    let variants: BTreeSet<String> = prepay
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["title"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        variants.contains("wechatpay jsapi")
            && variants.contains("unionpay gateway")
            && variants.contains("sandbox native"),
        "{variants:?}"
    );
    let docs = app
        .http
        .get(app.url("/docs"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(docs.contains("/openapi.json"));
}

/// The properties a schema documents (following `$ref`s into components).
fn properties<'a>(doc: &'a Value, name: &str) -> BTreeSet<&'a str> {
    doc["components"]["schemas"][name]["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("schema {name}"))
        .keys()
        .map(String::as_str)
        .collect()
}

fn required<'a>(doc: &'a Value, name: &str) -> BTreeSet<&'a str> {
    doc["components"]["schemas"][name]["required"]
        .as_array()
        .map(|r| r.iter().map(|v| v.as_str().unwrap()).collect())
        .unwrap_or_default()
}

#[track_caller]
fn conforms(doc: &Value, schema: &str, answer: &Value) {
    let keys: BTreeSet<&str> = answer
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let documented = properties(doc, schema);
    assert!(
        keys.is_subset(&documented),
        "{schema}: undocumented fields {:?}",
        keys.difference(&documented).collect::<Vec<_>>()
    );
    let required = required(doc, schema);
    assert!(
        required.is_subset(&keys),
        "{schema}: documented as required but missing {:?}",
        required.difference(&keys).collect::<Vec<_>>()
    );
}

async fn documented_shapes_are_the_real_answers(b: Backend) {
    let Some(app) = app(b).await else { return };
    let doc = document(&app).await;
    let order = app.create_order("OA-1", 300).await;
    let id = order["id"].as_str().unwrap();
    let prepaid: Value = app.prepay(id, "sandbox").await.json().await.unwrap();
    conforms(&doc, "Prepaid", &prepaid);
    assert_eq!(
        app.sim_pay("sandbox", prepaid["out_trade_no"].as_str().unwrap(), false)
            .await,
        StatusCode::OK
    );
    let paid = app
        .wait_order(id, std::time::Duration::from_secs(10), |o| {
            o["status"] == "paid"
        })
        .await;
    let refund: Value = app
        .post(
            &format!("/v1/orders/{id}/refunds"),
            json!({"merchant_refund_no": "R-1", "amount": 100}),
        )
        .await
        .json()
        .await
        .unwrap();
    let order = app.order(id).await;
    conforms(&doc, "Order", &order);
    conforms(&doc, "Attempt", &paid["attempts"][0]);
    conforms(&doc, "Refund", &refund);
    // Every Order field is shown (the hand-written document once lacked six).
    assert_eq!(
        properties(&doc, "Order"),
        order
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect()
    );
    // A problem, with the order it carries.
    let r = app
        .post(
            &format!("/v1/orders/{id}/prepay"),
            json!({"channel": "sandbox"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let problem: Value = r.json().await.unwrap();
    conforms(&doc, "Problem", &problem);
    conforms(&doc, "Order", &problem["order"]);
}
