//! Attacks that once worked, kept so they stay fixed: a genuine Alipay signature re-cut into
//! another order's notification, and a genuine payment number replayed against another order.

use crate::{app, assert_invariants};
use payonce_channels::crypto::RsaSigner;
use payonce_testkit::{Backend, TestApp, store_tests};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

store_tests!(
    alipay_signature_recut_cannot_pay_another_order,
    a_payment_number_of_another_order_is_confirmed_by_query,
    stored_text_comes_back_as_data_never_as_markup,
);

async fn order(app: &TestApp, no: &str, subject: &str) -> String {
    let r = app
        .post(
            "/v1/orders",
            json!({"merchant_order_no": no, "amount": 500, "currency": "CNY", "subject": subject}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn prepay(app: &TestApp, id: &str) -> String {
    let p: Value = app.prepay(id, "alipay").await.json().await.unwrap();
    p["out_trade_no"].as_str().unwrap().to_owned()
}

/// Signs `params` as Alipay signs notifications (every field but `sign` / `sign_type`, sorted,
/// joined raw) with the simulator's Alipay key, and encodes the form.
fn alipay_form(app: &TestApp, mut params: Vec<(String, String)>, with_sign_type: bool) -> String {
    let key = RsaSigner::from_pem(
        &std::fs::read_to_string(app.sim_dir().join("alipay_private_key.pem")).unwrap(),
    )
    .unwrap();
    let mut sorted = params.clone();
    sorted.sort();
    let content = sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    if with_sign_type {
        params.push(("sign_type".into(), "RSA2".into()));
    }
    params.push(("sign".into(), key.sign_b64(content.as_bytes())));
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish()
}

fn p(k: &str, v: &str) -> (String, String) {
    (k.to_owned(), v.to_owned())
}

async fn deliver(app: &TestApp, body: String) -> (StatusCode, String) {
    let r = app
        .http
        .post(app.url("/notify/alipay"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

async fn alipay_signature_recut_cannot_pay_another_order(b: Backend) {
    let Some(app) = app(b).await else { return };
    app.faults(json!({"notify_drop_rate": 1.0})).await;
    // The victim: an order waiting on an Alipay QR.
    let victim = order(&app, "VICTIM", "tea").await;
    let victim_no = prepay(&app, &victim).await;
    // The attacker's order smuggles the victim's number into its subject …
    let attacker = order(&app, "ATTACK", &format!("x&out_trade_no={victim_no}")).await;
    let attacker_no = prepay(&app, &attacker).await;
    // … which payonce never sends as is: the signing string's separators become full-width.
    let at_alipay: Value = app
        .http
        .get(app.sim_url(&format!(
            "/sim/orders?channel=alipay&out_trade_no={attacker_no}"
        )))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sent = at_alipay["subject"].as_str().unwrap();
    assert!(
        !sent.contains('&') && !sent.contains('=') && sent.contains('＆') && sent.contains('＝'),
        "{sent}"
    );
    // Even a notification Alipay had signed with the raw subject cannot be re-cut: the signed
    // string is the same, but `notify_type` no longer has its documented value.
    let genuine = vec![
        p("app_id", "2021000000000001"),
        p("buyer_pay_amount", "5.00"),
        p("charset", "utf-8"),
        p("gmt_payment", "2026-11-25 10:00:00"),
        p("notify_id", "N-ATTACK"),
        p("notify_type", "trade_status_sync"),
        p("out_trade_no", &attacker_no),
        p("subject", &format!("x&out_trade_no={victim_no}")),
        p("total_amount", "5.00"),
        p("trade_no", "2026112522001400000001"),
        p("trade_status", "TRADE_SUCCESS"),
        p("version", "1.0"),
    ];
    let recut: Vec<(String, String)> = genuine
        .iter()
        .filter(|(k, _)| k != "subject")
        .map(|(k, v)| match k.as_str() {
            "notify_type" => p(
                "notify_type",
                &format!("trade_status_sync&out_trade_no={attacker_no}&subject=x"),
            ),
            "out_trade_no" => p("out_trade_no", &victim_no),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    // The re-cut form carries the genuine signature (same signed string).
    let sig_of = |form: &str| {
        form_urlencoded::parse(form.as_bytes())
            .find(|(k, _)| k == "sign")
            .unwrap()
            .1
            .into_owned()
    };
    let genuine_form = alipay_form(&app, genuine, false);
    let mut recut_form = form_urlencoded::Serializer::new(String::new());
    recut_form.extend_pairs(recut.iter());
    recut_form.append_pair("sign", &sig_of(&genuine_form));
    let recut_form = recut_form.finish();
    let key = payonce_channels::crypto::RsaVerifier::from_pem(
        &std::fs::read_to_string(app.sim_dir().join("alipay_public_key.pem")).unwrap(),
    )
    .unwrap();
    let parsed: Vec<(String, String)> = form_urlencoded::parse(recut_form.as_bytes())
        .into_owned()
        .collect();
    assert!(
        payonce_channels::alipay::protocol::verify_notification(&key, &parsed),
        "the re-cut form really carries a valid signature"
    );
    let before = app.counts().await;
    let (status, body) = deliver(&app, recut_form).await;
    assert_eq!((status, body.as_str()), (StatusCode::BAD_REQUEST, "fail"));
    assert_eq!(app.counts().await, before, "nothing changed");
    assert_eq!(
        app.order(&victim).await["status"],
        "paying",
        "the victim's order is not paid"
    );
    assert_invariants(app.violations().await);
}

async fn a_payment_number_of_another_order_is_confirmed_by_query(b: Backend) {
    let Some(app) = app(b).await else { return };
    // A really paid order: its Alipay trade number is on record.
    let paid = order(&app, "PAID", "tea").await;
    let paid_no = prepay(&app, &paid).await;
    assert_eq!(app.sim_pay("alipay", &paid_no, false).await, StatusCode::OK);
    app.wait_order(&paid, Duration::from_secs(10), |o| o["status"] == "paid")
        .await;
    let trade_no = app.order(&paid).await["attempts"][0]["channel_trade_no"]
        .as_str()
        .map(str::to_owned);
    let trade_no = match trade_no {
        Some(t) => t,
        None => app
            .store
            .attempt_by_out_trade_no(payonce_core::ChannelName::Alipay, &paid_no)
            .await
            .unwrap()
            .unwrap()
            .channel_trade_no
            .unwrap(),
    };
    // Another order, unpaid; a validly signed notification names the first payment's number.
    let other = order(&app, "OTHER", "tea").await;
    let other_no = prepay(&app, &other).await;
    let forged = vec![
        p("app_id", "2021000000000001"),
        p("charset", "utf-8"),
        p("gmt_payment", "2026-11-25 10:00:00"),
        p("notify_id", "N-REPLAY"),
        p("notify_type", "trade_status_sync"),
        p("out_trade_no", &other_no),
        p("total_amount", "5.00"),
        p("trade_no", &trade_no),
        p("trade_status", "TRADE_SUCCESS"),
        p("version", "1.0"),
    ];
    let (status, _) = deliver(&app, alipay_form(&app, forged, false)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "answered once Alipay's own word about the order is recorded"
    );
    assert_eq!(
        app.order(&other).await["status"],
        "paying",
        "Alipay says the other order is not paid: it is not"
    );
    assert_invariants(app.violations().await);
}

/// XSS payloads in every stored text field come back as JSON data, byte for byte, with
/// `nosniff`; the console renders them escaped (never as markup).
async fn stored_text_comes_back_as_data_never_as_markup(b: Backend) {
    let Some(app) = app(b).await else { return };
    let x = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>";
    let r = app
        .post("/v1/orders", json!({"merchant_order_no": "XSS-1", "amount": 100, "currency": "CNY", "subject": x, "metadata": {"note": x}}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app.get(&format!("/v1/orders/{id}")).await;
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["subject"].as_str(), v["metadata"]["note"].as_str()),
        (Some(x), Some(x))
    );
    // The console renders stored text through askama's escaper (tests/api/console.rs shows an
    // order page with this subject as text).
}
