//! The attack suite: one world (two tenants, an open order on every channel, a paid and
//! refunded order, stored hostile text), then every attack an outsider has tried on payonce,
//! each answer checked — and afterwards the world compared with a snapshot taken before: rows,
//! every order as its tenant sees it, outbox events, abnormal items and the channels' ledger
//! are all unchanged. (Attacks that need a world of their own — the Alipay re-cut, a payment
//! number replayed, redirects, slow connections — are in `attacks.rs`, `webhooks.rs` and
//! `gateway.rs`.)

use payonce_testkit::forge::{self, AliFault, UpFault, WxFault};
use payonce_testkit::{Backend, TestApp, store_tests};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

store_tests!(every_attack_is_refused_and_changes_nothing);

/// Hostile text in every field that stores text.
const XSS: &str = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>";

struct World {
    /// The victim tenant's orders (pending on each channel, and one paid).
    orders: Vec<String>,
    paid_order: String,
    refund: String,
    xss_order: String,
    /// Out trade numbers and what a notification needs.
    wechat_no: String,
    alipay_no: String,
    unionpay_no: String,
    unionpay_txn_time: String,
    sandbox_no: String,
    /// The genuine Alipay notification that paid `paid_order` (for the replay).
    genuine: forge::Forged,
    /// The other tenant's secret.
    attacker: String,
}

async fn pending(app: &TestApp, no: &str, channel: &str, amount: i64) -> (String, Value) {
    let id = app.create_order(no, amount).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app.prepay(&id, channel).await;
    assert_eq!(r.status(), StatusCode::OK, "{channel}");
    (id, r.json().await.unwrap())
}

async fn build_world(app: &TestApp) -> World {
    // Notifications are ours to send.
    app.faults(json!({"notify_drop_rate": 1.0})).await;
    let (wx, wxp) = pending(app, "W-WX", "wechatpay", 500).await;
    let (up, upp) = pending(app, "W-UP", "unionpay", 700).await;
    let (sb, sbp) = pending(app, "W-SB", "sandbox", 100).await;
    let (ali, alip) = pending(app, "W-ALI", "alipay", 1_234).await;
    let (paid, paidp) = pending(app, "W-PAID", "alipay", 2_000).await;
    let paid_no = paidp["out_trade_no"].as_str().unwrap().to_owned();
    assert_eq!(app.sim_pay("alipay", &paid_no, false).await, StatusCode::OK);
    let genuine = forge::alipay_paid(&app.sim_dir(), "W-N1", &paid_no, "20.00", AliFault::None);
    assert_eq!(
        app.deliver("alipay", &genuine).await,
        (StatusCode::OK, "success".to_owned())
    );
    assert_eq!(app.order(&paid).await["status"], "paid");
    let r = app
        .post(
            &format!("/v1/orders/{paid}/refunds"),
            json!({"merchant_refund_no": "W-R1", "amount": 500, "reason": XSS}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let refund = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .post("/v1/orders", json!({"merchant_order_no": "W-XSS", "amount": 1, "currency": "CNY", "subject": XSS, "metadata": {"note": XSS, XSS: [XSS]}}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let xss_order = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let attacker = payonce_server::engine::apps::create_app(
        app.store.as_ref(),
        &app.state.master_key,
        &payonce_core::SystemClock,
        payonce_server::engine::apps::NewApp::named("attacker"),
    )
    .await
    .unwrap()
    .secret;
    World {
        orders: vec![wx, up, sb, ali, paid.clone(), xss_order.clone()],
        paid_order: paid,
        refund,
        xss_order,
        wechat_no: wxp["out_trade_no"].as_str().unwrap().into(),
        alipay_no: alip["out_trade_no"].as_str().unwrap().into(),
        unionpay_no: upp["out_trade_no"].as_str().unwrap().into(),
        unionpay_txn_time: upp["credential"]["fields"]["txnTime"]
            .as_str()
            .unwrap()
            .into(),
        sandbox_no: sbp["out_trade_no"].as_str().unwrap().into(),
        genuine,
        attacker,
    }
}

/// What must not change: row counts, each order as its tenant sees it (without the clocks
/// that move on their own), events, abnormal items, the channels' ledger.
async fn snapshot(app: &TestApp, w: &World) -> Value {
    let mut orders = Vec::new();
    for id in &w.orders {
        let mut o = app.order(id).await;
        o.as_object_mut().unwrap().remove("updated_at");
        for a in o["attempts"].as_array_mut().unwrap() {
            a.as_object_mut().unwrap().remove("updated_at");
        }
        for r in o["refunds"].as_array_mut().unwrap() {
            r.as_object_mut().unwrap().remove("updated_at");
        }
        orders.push(o);
    }
    let events: Vec<String> = app
        .store
        .list_events(None, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| format!("{} {}", e.event_type, e.id))
        .collect();
    let abnormal: Vec<String> = app
        .store
        .abnormal_open()
        .await
        .unwrap()
        .into_iter()
        .map(|a| format!("{} {}", a.kind, a.reference))
        .collect();
    json!({
        "counts": app.counts().await.into_iter().map(|(t, n)| format!("{t}={n}")).collect::<Vec<_>>(),
        "orders": orders,
        "events": events,
        "abnormal": abnormal,
        "ledger": app.ledger().await,
    })
}

async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    auth: Option<&str>,
    ct: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, String, String) {
    let mut req = match method {
        "GET" => app.http.get(app.url(path)),
        _ => app.http.post(app.url(path)).body(body),
    };
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if let Some(c) = ct {
        req = req.header("content-type", c);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ct, r.text().await.unwrap())
}

#[track_caller]
fn problem(name: &str, got: &(StatusCode, String, String), status: StatusCode, code: &str) {
    assert_eq!(got.0, status, "{name}: {}", got.2);
    assert_eq!(got.1, "application/problem+json", "{name}");
    let body: Value =
        serde_json::from_str(&got.2).unwrap_or_else(|_| panic!("{name}: not JSON: {}", got.2));
    assert_eq!(body["code"], code, "{name}");
}

async fn every_attack_is_refused_and_changes_nothing(b: Backend) {
    let Some(app) = crate::app(b).await else {
        return;
    };
    let w = build_world(&app).await;
    // Let the outbox settle (no webhook URL: every event is kept, skipped) before the snapshot.
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while !app
        .store
        .list_events(Some(payonce_store::DeliveryStatus::Pending), 10)
        .await
        .unwrap()
        .is_empty()
        && tokio::time::Instant::now() < end
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = snapshot(&app, &w).await;
    let me = format!("Bearer {}", app.secret);
    let me = Some(me.as_str());
    let json_ct = Some("application/json");

    // 1. Bad input on the business API.
    let order = |fields: &str| {
        format!(r#"{{"merchant_order_no":"X-1","currency":"CNY","subject":"s",{fields}}}"#)
            .into_bytes()
    };
    for (name, body, field) in [
        ("zero amount", order(r#""amount":0"#), "amount"),
        ("negative amount", order(r#""amount":-1"#), "amount"),
        ("fractional amount", order(r#""amount":0.5"#), "amount"),
        ("amount as text", order(r#""amount":"100""#), "amount"),
        ("amount past the maximum", order(r#""amount":1e12"#), "amount"),
        ("amount as NaN text", order(r#""amount":"NaN""#), "amount"),
        ("amount given twice", order(r#""amount":1,"amount":100000"#), "body"),
        ("another currency", br#"{"merchant_order_no":"X-1","amount":1,"currency":"USD","subject":"s"}"#.to_vec(), "currency"),
        ("currency in lower case", br#"{"merchant_order_no":"X-1","amount":1,"currency":"cny","subject":"s"}"#.to_vec(), "currency"),
        ("merchant number with a quote", br#"{"merchant_order_no":"X' OR '1'='1","amount":1,"currency":"CNY","subject":"s"}"#.to_vec(), "merchant_order_no"),
        ("merchant number with a path", br#"{"merchant_order_no":"../../etc/passwd","amount":1,"currency":"CNY","subject":"s"}"#.to_vec(), "merchant_order_no"),
        ("control characters", br#"{"merchant_order_no":"X-1","amount":1,"currency":"CNY","subject":"a\u0000b"}"#.to_vec(), "subject"),
        ("deep JSON", format!("{}{}", "[".repeat(20_000), "]".repeat(20_000)).into_bytes(), "body"),
        ("deep object", format!(r#"{{"merchant_order_no":"X-1","amount":1,"currency":"CNY","subject":"s","metadata":{}1{}}}"#, r#"{"a":"#.repeat(2_000), "}".repeat(2_000)).into_bytes(), "body"),
        ("invalid UTF-8", b"{\"merchant_order_no\":\"X-1\",\"amount\":1,\"currency\":\"CNY\",\"subject\":\"\xff\xfe\"}".to_vec(), "body"),
        ("not JSON", b"merchant_order_no=X-1&amount=1".to_vec(), "body"),
    ] {
        let got = send(&app, "POST", "/v1/orders", me, json_ct, body).await;
        problem(name, &got, StatusCode::BAD_REQUEST, "validation_failed");
        let fields: Vec<String> = serde_json::from_str::<Value>(&got.2).unwrap()["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap().to_owned()).collect();
        assert!(fields.iter().any(|f| f == field), "{name}: errors name {fields:?}, expected {field}");
    }
    let got = send(
        &app,
        "POST",
        "/v1/orders",
        me,
        json_ct,
        vec![b' '; 2 * 1024 * 1024],
    )
    .await;
    problem(
        "2 MB body",
        &got,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    let got = send(
        &app,
        "POST",
        "/v1/orders",
        me,
        Some("text/plain"),
        order(r#""amount":1"#),
    )
    .await;
    problem(
        "not sent as JSON",
        &got,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let got = send(
        &app,
        "POST",
        &format!("/v1/orders/{}/prepay", w.orders[0]),
        me,
        json_ct,
        br#"{"channel":"paypal"}"#.to_vec(),
    )
    .await;
    problem(
        "unknown channel",
        &got,
        StatusCode::BAD_REQUEST,
        "validation_failed",
    );

    // 2. Ids that are not ids.
    for id in [
        "ord_' OR 1=1 --",
        "..%2F..%2Fadmin",
        "ord_%00",
        &"9".repeat(5000),
        "rfd_00000000000000000000000000000000",
    ] {
        for path in [format!("/v1/orders/{id}"), format!("/v1/refunds/{id}")] {
            let got = send(&app, "GET", &path, me, None, vec![]).await;
            assert!(
                got.0 == StatusCode::NOT_FOUND || got.0 == StatusCode::BAD_REQUEST,
                "{path}: {}",
                got.0
            );
        }
        let got = send(
            &app,
            "POST",
            &format!("/v1/orders/{id}/close"),
            me,
            None,
            vec![],
        )
        .await;
        assert!(
            got.0 == StatusCode::NOT_FOUND || got.0 == StatusCode::BAD_REQUEST,
            "close {id}: {}",
            got.0
        );
    }

    // 3. Tenant crossing: the other tenant sees none of these orders, refunds or numbers.
    let them = format!("Bearer {}", w.attacker);
    let them = Some(them.as_str());
    for id in &w.orders {
        problem(
            "cross read",
            &send(
                &app,
                "GET",
                &format!("/v1/orders/{id}?sync=true"),
                them,
                None,
                vec![],
            )
            .await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
        problem(
            "cross prepay",
            &send(
                &app,
                "POST",
                &format!("/v1/orders/{id}/prepay"),
                them,
                json_ct,
                br#"{"channel":"sandbox"}"#.to_vec(),
            )
            .await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
        problem(
            "cross close",
            &send(
                &app,
                "POST",
                &format!("/v1/orders/{id}/close"),
                them,
                None,
                vec![],
            )
            .await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
        let refund = br#"{"merchant_refund_no":"X-R","amount":1}"#.to_vec();
        problem(
            "cross refund",
            &send(
                &app,
                "POST",
                &format!("/v1/orders/{id}/refunds"),
                them,
                json_ct,
                refund,
            )
            .await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
    }
    problem(
        "cross refund read",
        &send(
            &app,
            "GET",
            &format!("/v1/refunds/{}", w.refund),
            them,
            None,
            vec![],
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    problem(
        "cross number",
        &send(
            &app,
            "GET",
            "/v1/orders?merchant_order_no=W-PAID",
            them,
            None,
            vec![],
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // 4. No or wrong credentials: the API and the admin API.
    let admin_routes = [
        ("GET", "/admin/v1/abnormal".to_owned()),
        ("GET", "/admin/v1/events".to_owned()),
        ("GET", "/admin/v1/events/evt_x".to_owned()),
        ("POST", "/admin/v1/events/evt_x/resend".to_owned()),
        ("POST", "/admin/v1/events/resend-failed".to_owned()),
        (
            "POST",
            format!("/admin/v1/apps/{}/rotate-webhook-secret", app.app_id),
        ),
    ];
    let app_secret = format!("Bearer {}", app.secret);
    // Ten wrong admin tokens from one address are answered 401; from then on that address is
    // refused outright (429), whatever it sends, until the window passes.
    let mut admin_failures = 0;
    for auth in [
        None,
        Some("Bearer "),
        Some("Bearer wrong"),
        Some("bearer test-admin-token"),
        Some("Basic dGVzdC1hZG1pbi10b2tlbjo="),
        Some("Bearer test-admin-tokenX"),
        Some("Bearer test-admin-to"),
        Some(app_secret.as_str()),
    ] {
        for (method, path) in &admin_routes {
            let got = send(&app, method, path, auth, None, vec![]).await;
            let (status, code) = if admin_failures < 10 {
                (StatusCode::UNAUTHORIZED, "unauthorized")
            } else {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
            };
            problem(
                &format!("{method} {path} with {auth:?}"),
                &got,
                status,
                code,
            );
            admin_failures += 1;
        }
        if auth != Some(app_secret.as_str()) {
            problem(
                "api without the secret",
                &send(
                    &app,
                    "GET",
                    &format!("/v1/orders/{}", w.paid_order),
                    auth,
                    None,
                    vec![],
                )
                .await,
                StatusCode::UNAUTHORIZED,
                "unauthorized",
            );
        }
    }
    // The admin token is no app secret either.
    problem(
        "admin token on the API",
        &send(
            &app,
            "GET",
            &format!("/v1/orders/{}", w.paid_order),
            Some("Bearer test-admin-token"),
            None,
            vec![],
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );

    // 5. Notifications: forged, tampered, stale, another app's, unknown, oversized — each
    // answered in the channel's own failure format; a genuine one replayed is acknowledged.
    let dir = app.sim_dir();
    for fault in [
        WxFault::BadSignature,
        WxFault::UnknownSerial,
        WxFault::Stale,
        WxFault::TamperedCiphertext,
    ] {
        let (status, body) = app
            .deliver(
                "wechatpay",
                &forge::wechat_paid(&dir, "A-1", &w.wechat_no, 500, 500, fault),
            )
            .await;
        assert!(status.is_client_error(), "wechat {fault:?}: {status}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["code"],
            "FAIL",
            "wechat {fault:?}"
        );
    }
    for fault in [
        AliFault::BadSignature,
        AliFault::TamperedAmount,
        AliFault::WrongApp,
    ] {
        let (status, body) = app
            .deliver(
                "alipay",
                &forge::alipay_paid(&dir, "A-2", &w.alipay_no, "12.34", fault),
            )
            .await;
        assert!(
            status.is_client_error() && body != "success",
            "alipay {fault:?}: {status} {body}"
        );
    }
    for fault in [
        UpFault::TamperedAmount,
        UpFault::NotUnionpayCert,
        UpFault::UnchainedCert,
    ] {
        let (status, body) = app
            .deliver(
                "unionpay",
                &forge::unionpay_paid(
                    &dir,
                    &w.unionpay_no,
                    &w.unionpay_txn_time,
                    700,
                    "A-3",
                    fault,
                ),
            )
            .await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::BAD_REQUEST, "fail"),
            "unionpay {fault:?}"
        );
    }
    let (ts, sig, body) = app.signed_sandbox_notification("A-4", &w.sandbox_no, 100);
    let stale = (ts.parse::<i64>().unwrap() - 3600).to_string();
    for (name, ts, sig, body) in [
        (
            "tampered",
            ts.as_str(),
            sig.as_str(),
            body.replace("\"amount\":100", "\"amount\":1"),
        ),
        ("stale", stale.as_str(), sig.as_str(), body.clone()),
        ("garbage signature", ts.as_str(), "v1=00", body.clone()),
    ] {
        let r = app.post_sandbox_notification(ts, sig, &body).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "sandbox {name}");
        assert_eq!(
            r.json::<Value>().await.unwrap()["code"],
            "FAIL",
            "sandbox {name}"
        );
    }
    let (_, body) = app
        .deliver(
            "alipay",
            &forge::alipay_paid(&dir, "A-5", "nosuchorder", "12.34", AliFault::None),
        )
        .await;
    assert_ne!(body, "success", "unknown out_trade_no");
    for channel in ["wechatpay", "alipay", "unionpay", "sandbox"] {
        let big = forge::Forged {
            headers: vec![],
            content_type: "application/x-www-form-urlencoded",
            body: "a=".to_owned() + &"b".repeat(2 * 1024 * 1024),
        };
        let (status, body) = app.deliver(channel, &big).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{channel} oversized");
        match channel {
            "wechatpay" | "sandbox" => assert_eq!(
                serde_json::from_str::<Value>(&body).unwrap()["code"],
                "FAIL",
                "{channel}: its failure format"
            ),
            "alipay" => assert_eq!(body, "fail"),
            _ => assert_eq!(body, "fail"),
        }
    }
    problem(
        "unknown channel",
        &send(
            &app,
            "POST",
            "/notify/paypal",
            None,
            Some("application/json"),
            b"{}".to_vec(),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    // The exact replay of the genuine notification: the channel's success answer.
    assert_eq!(
        app.deliver("alipay", &w.genuine).await,
        (StatusCode::OK, "success".to_owned()),
        "replay acknowledged"
    );

    // 6. Webhook destinations that point inside: well-formed, refused, nothing stored.
    for url in [
        "http://169.254.169.254/latest/meta-data",
        "http://127.0.0.1:5432/",
        "http://localhost\\@example.com/",
        "http://[::1]/x",
    ] {
        let r = app.post("/v1/orders", json!({"merchant_order_no": "X-SSRF", "amount": 1, "currency": "CNY", "subject": "s", "notify_url": url})).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{url}");
    }

    // 7. Stored hostile text comes back as JSON data, never as a page.
    let (status, ct, body) = send(
        &app,
        "GET",
        &format!("/v1/orders/{}", w.xss_order),
        me,
        None,
        vec![],
    )
    .await;
    assert_eq!((status, ct.as_str()), (StatusCode::OK, "application/json"));
    let o: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (o["subject"].as_str(), o["metadata"]["note"].as_str()),
        (Some(XSS), Some(XSS)),
        "kept verbatim, as data"
    );
    assert_eq!(app.order(&w.paid_order).await["refunds"][0]["reason"], XSS);
    let r = app.http.get(app.url("/console")).send().await.unwrap();
    assert!(
        r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'none'")
    );
    assert!(
        !r.text().await.unwrap().contains("<script>alert"),
        "nothing stored is in the page"
    );

    // And after all that: the world is as it was.
    let after = snapshot(&app, &w).await;
    assert_eq!(after, before, "an attack changed something");
}
