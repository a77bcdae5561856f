//! `payonce demo`: the whole system embedded (SQLite in a temp dir, the simulator in-process),
//! telling a story a payments engineer can check line by line. Exits non-zero if any
//! invariant of DESIGN.md failed.

use payonce_harness::{AppOptions, TestDb};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

const DUPLICATE_PREPAYS: usize = 50;

fn say(s: impl AsRef<str>) {
    println!("{}", s.as_ref());
}

pub async fn run() -> anyhow::Result<ExitCode> {
    say("payonce demo — SQLite in a temp dir, channel simulator in-process\n");
    // The embedded server's admin token is random: a demo listens on a real port too.
    let admin_token = payonce_server::crypto::new_webhook_secret();
    let app = payonce_harness::app::spawn_on(
        TestDb::sqlite(),
        AppOptions {
            time_scale: 100.0,
            admin_token,
            ..AppOptions::default()
        },
    )
    .await;
    say(format!("  server    {}", app.base));
    say(format!("  simulator {}\n", app.sim.base_url()));
    let mut failures: Vec<String> = Vec::new();

    // 1. One order, hammered by a double-clicking payer and a retrying client.
    let order = app.create_order("DEMO-1001", 4_990).await;
    let order_id = order["id"].as_str().unwrap().to_owned();
    say(format!(
        "1. created order {order_id}: 49.90 CNY, merchant_order_no DEMO-1001"
    ));
    // The payer's side: a hosted cashier page for this order (open it in a browser while the
    // demo runs; it lives as long as the demo's server).
    match app
        .post(
            &format!("/v1/orders/{order_id}/checkout"),
            serde_json::json!({}),
        )
        .await
        .json::<serde_json::Value>()
        .await
    {
        Ok(link) if link["url"].is_string() => say(format!(
            "   cashier page for the payer: {} (until {})",
            link["url"].as_str().unwrap_or_default(),
            link["expires_at"].as_str().unwrap_or_default()
        )),
        other => failures.push(format!("no checkout link: {other:?}")),
    }
    say(format!(
        "2. {DUPLICATE_PREPAYS} concurrent POST /v1/orders/{{id}}/prepay {{\"channel\":\"wechatpay\"}} (WeChat Pay API v3) ..."
    ));
    let mut tasks = Vec::new();
    for _ in 0..DUPLICATE_PREPAYS {
        let http = app.http.clone();
        let url = app.url(&format!("/v1/orders/{order_id}/prepay"));
        let secret = app.secret.clone();
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(secret)
                .json(&json!({"channel": "wechatpay"}))
                .send()
                .await?;
            let status = r.status().as_u16();
            let body: Value = r.json().await?;
            anyhow::Ok((status, body))
        }));
    }
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let mut credentials = std::collections::BTreeSet::new();
    let mut out_trade_no = String::new();
    for t in tasks {
        let (status, body) = t.await??;
        let label = match (status, body["reused"].as_bool()) {
            (200, Some(false)) => "200 new channel order".to_owned(),
            (200, Some(true)) => "200 same credential (reused)".to_owned(),
            (s, _) => format!("{s} {}", body["code"].as_str().unwrap_or("")),
        };
        *tally.entry(label).or_default() += 1;
        if status == 200 {
            credentials.insert(body["credential"].to_string());
            out_trade_no = body["out_trade_no"].as_str().unwrap_or_default().to_owned();
        } else if status >= 500 {
            failures.push(format!("prepay answered {status}"));
        }
    }
    for (label, n) in &tally {
        say(format!("     {n:>3} × {label}"));
    }
    let ledger = app.ledger().await;
    let channel_orders = ledger["orders"].as_array().map(Vec::len).unwrap_or(0);
    say(format!(
        "   distinct credentials handed out: {}",
        credentials.len()
    ));
    say(format!(
        "   channel orders at the simulator: {channel_orders}  (must be 1)"
    ));
    if channel_orders != 1 || credentials.len() != 1 {
        failures.push(format!(
            "expected 1 channel order and 1 credential, got {channel_orders} and {}",
            credentials.len()
        ));
    }

    // 2. The payer pays; the channel's notification arrives three times.
    app.faults(json!({"notify_duplicates": 2})).await;
    say(format!(
        "3. the payer scans and pays WeChat order {out_trade_no}; WeChat will notify 3 times (signed, AES-GCM encrypted)"
    ));
    app.sim_pay("wechatpay", &out_trade_no, false).await;
    let paid = app
        .wait_order(&order_id, Duration::from_secs(10), |o| {
            o["status"] == "paid"
        })
        .await;
    // Let the two extra copies land before counting.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let (mut applied, mut replays) = (0, 0);
    while tokio::time::Instant::now() < deadline {
        let m = app.state.metrics.render();
        applied = metric(&m, "payonce_notifications_total", "outcome=\"paid\"");
        replays = metric(&m, "payonce_notifications_total", "outcome=\"replay\"");
        if applied + replays >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    say(format!(
        "   notifications received: {}, applied: {applied}, acknowledged replays: {replays}",
        applied + replays
    ));
    let events = app
        .store
        .events_of(&payonce_core::OrderId::from_trusted(order_id.clone()))
        .await?;
    let succeeded = events
        .iter()
        .filter(|e| e.event_type == "payment.succeeded")
        .count();
    say(format!(
        "   order status: {}   payment.succeeded events in the outbox: {succeeded}",
        paid["status"]
    ));
    if paid["status"] != "paid" || applied != 1 || succeeded != 1 {
        failures.push(format!("expected paid with 1 applied notification and 1 event; got {} / {applied} / {succeeded}", paid["status"]));
    }

    // 3. A prepay after payment is refused with the order.
    let again = app.prepay(&order_id, "alipay").await;
    let code = again.status().as_u16();
    let body: Value = again.json().await?;
    say(format!(
        "4. an Alipay prepay after payment → {code} {}",
        body["code"].as_str().unwrap_or("")
    ));
    if code != 409 || body["code"] != "order_already_paid" {
        failures.push("a prepay after payment was not refused with order_already_paid".into());
    }

    // 4. A payer who switches channel: the WeChat order is closed at WeChat before Alipay's
    //    QR code is issued, so only one of the two can ever be paid.
    let order2 = app.create_order("DEMO-1002", 1_280).await;
    let id2 = order2["id"].as_str().unwrap().to_owned();
    let wx: Value = app.prepay(&id2, "wechatpay").await.json().await?;
    let ali: Value = app.prepay(&id2, "alipay").await.json().await?;
    let wx_no = wx["out_trade_no"].as_str().unwrap_or_default();
    let ali_no = ali["out_trade_no"].as_str().unwrap_or_default();
    let wx_state: Value = app
        .http
        .get(app.sim_url(&format!(
            "/sim/orders?channel=wechatpay&out_trade_no={wx_no}"
        )))
        .send()
        .await?
        .json()
        .await?;
    say(format!(
        "5. order DEMO-1002: WeChat QR {}, then the payer picks Alipay → WeChat order {} at WeChat; Alipay QR {}",
        wx["credential"]["code_url"].as_str().unwrap_or("?"),
        wx_state["state"].as_str().unwrap_or("?"),
        ali["credential"]["qr_code"].as_str().unwrap_or("?")
    ));
    app.sim_pay("alipay", ali_no, false).await;
    let paid2 = app
        .wait_order(&id2, Duration::from_secs(10), |o| o["status"] == "paid")
        .await;
    say(format!(
        "   the payer pays with Alipay (RSA2-signed form notification, answered \"success\") → order {}",
        paid2["status"]
    ));
    if wx_state["state"] != "CLOSED" || paid2["status"] != "paid" {
        failures.push(
            "channel switch: the WeChat order was not closed or the Alipay payment not recorded"
                .into(),
        );
    }

    // 5. Every notification lost: the active query finds the payment anyway.
    app.faults(json!({"notify_drop_rate": 1.0, "notify_duplicates": 0}))
        .await;
    let order3 = app.create_order("DEMO-1003", 3_300).await;
    let id3 = order3["id"].as_str().unwrap().to_owned();
    let p3: Value = app.prepay(&id3, "alipay").await.json().await?;
    app.sim_pay(
        "alipay",
        p3["out_trade_no"].as_str().unwrap_or_default(),
        false,
    )
    .await;
    let started = std::time::Instant::now();
    let paid3 = app
        .wait_order(&id3, Duration::from_secs(20), |o| o["status"] == "paid")
        .await;
    say(format!(
        "6. order DEMO-1003 paid with Alipay, and every notification lost → active query (10 s after prepay, ×100 time scale) → order {} after {} ms",
        paid3["status"],
        started.elapsed().as_millis()
    ));
    if paid3["status"] != "paid" {
        failures.push("a payment whose notifications were all lost was not recovered".into());
    }

    // 6. A payer who pays two channels for one order: the second payment goes back, once.
    app.faults(json!({"notify_drop_rate": 0.0})).await;
    // With a coupon: reserved with the order, redeemed with the payment, once.
    app.post(
        "/v1/coupons",
        json!({"code": "WELCOME10", "kind": "percent", "value": 10, "max_redemptions": 100}),
    )
    .await;
    let order4: Value = app
        .post("/v1/orders", json!({"merchant_order_no": "DEMO-1004", "amount": 5_000, "currency": "CNY", "subject": "demo", "coupon_code": "WELCOME10"}))
        .await
        .json()
        .await?;
    let id4 = order4["id"].as_str().unwrap_or_default().to_owned();
    let wx4: Value = app.prepay(&id4, "wechatpay").await.json().await?;
    let ali4: Value = app.prepay(&id4, "alipay").await.json().await?;
    app.sim_pay(
        "alipay",
        ali4["out_trade_no"].as_str().unwrap_or_default(),
        false,
    )
    .await;
    // The WeChat payment was already in flight when its order was closed.
    app.sim_pay(
        "wechatpay",
        wx4["out_trade_no"].as_str().unwrap_or_default(),
        true,
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut v4 = app.order(&id4).await;
    while !(v4["status"] == "paid"
        && v4["refunds"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["status"] == "succeeded")))
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        v4 = app.order(&id4).await;
    }
    let dup_refunds: Vec<&Value> = v4["refunds"]
        .as_array()
        .map(|r| r.iter().filter(|r| r["kind"] == "duplicate").collect())
        .unwrap_or_default();
    say(format!(
        "7. order DEMO-1004: the payer paid Alipay AND the (closed) WeChat QR → order {}, the second payment refunded automatically: {} refund(s), {}",
        v4["status"],
        dup_refunds.len(),
        dup_refunds
            .first()
            .map(|r| r["status"].to_string())
            .unwrap_or_default()
    ));
    let welcome: Value = app.get("/v1/coupons/WELCOME10").await.json().await?;
    say(format!(
        "   its coupon WELCOME10 (50.00 → {:.2} CNY): redeemed {} time(s) for two payments, {} left",
        order4["amount"].as_i64().unwrap_or(0) as f64 / 100.0,
        welcome["redeemed"],
        welcome["remaining"]
    ));
    if welcome["redeemed"] != 1 {
        failures.push(format!(
            "the coupon of a doubly paid order was redeemed {} times",
            welcome["redeemed"]
        ));
    }
    if v4["status"] != "paid" || dup_refunds.len() != 1 || dup_refunds[0]["status"] != "succeeded" {
        failures.push("the duplicate payment was not refunded exactly once".into());
    }

    // 7. An order that expires is closed at the channel, not only in payonce.
    let r = app.post("/v1/orders", json!({"merchant_order_no": "DEMO-1005", "amount": 990, "currency": "CNY", "subject": "expires", "expire_in_seconds": 5})).await;
    let id5 = r.json::<Value>().await?["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let wx5: Value = app.prepay(&id5, "wechatpay").await.json().await?;
    let closed5 = app
        .wait_order(&id5, Duration::from_secs(20), |o| o["status"] == "closed")
        .await;
    let wx5_state: Value = app
        .http
        .get(app.sim_url(&format!(
            "/sim/orders?channel=wechatpay&out_trade_no={}",
            wx5["out_trade_no"].as_str().unwrap_or_default()
        )))
        .send()
        .await?
        .json()
        .await?;
    say(format!(
        "8. order DEMO-1005 expires after 5 s → order {}, its WeChat order {} at WeChat (closed through the close API, then checked once more)",
        closed5["status"], wx5_state["state"]
    ));
    if closed5["status"] != "closed" || wx5_state["state"] != "CLOSED" {
        failures.push("an expired order was not closed at the channel".into());
    }

    // 9. The day's reconciliation: every channel's bill of today against the records.
    let now = payonce_core::Clock::now(&payonce_core::SystemClock);
    for channel in ["wechatpay", "alipay", "unionpay", "sandbox"] {
        // UnionPay's clearing day ends at 23:00 Beijing: after that, today's payments are tomorrow's.
        let shift = if channel == "unionpay" { 3_600_000 } else { 0 };
        let today =
            payonce_server::engine::reconcile::beijing_date(payonce_core::Timestamp(now.0 + shift));
        match payonce_server::engine::reconcile::reconcile(
            &app.state, "demo", channel, None, &today, false,
        )
        .await
        {
            Ok(r) => {
                let differences: Vec<String> = r
                    .classes
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(c, n)| format!("{c} {n}"))
                    .collect();
                say(format!(
                    "9. reconciliation {channel} {today}: {} — {} bill row(s), {} matched, fees {:.2} fen{}",
                    r.status,
                    r.rows,
                    r.matched,
                    r.totals.fees_millifen as f64 / 1000.0,
                    if differences.is_empty() {
                        ", no difference".to_owned()
                    } else {
                        format!(", {}", differences.join(", "))
                    }
                ));
                if r.status != "completed" || r.needs_a_person() > 0 {
                    failures.push(format!(
                        "reconciliation of {channel}: {} {:?}",
                        r.status, r.reason
                    ));
                }
            }
            Err(e) => failures.push(format!("reconciliation of {channel}: {e}")),
        }
    }

    // Verdict.
    let ledger = app.ledger().await;
    let charges = ledger["charges"].as_array().map(Vec::len).unwrap_or(0);
    say(format!(
        "\nsimulator ledger: {} channel order(s), {charges} charge(s), {} refund(s)",
        ledger["orders"].as_array().map(Vec::len).unwrap_or(0),
        ledger["refunds"].as_array().map(Vec::len).unwrap_or(0)
    ));
    failures.extend(app.violations().await);
    if failures.is_empty() {
        say(
            "invariants I1–I4 and I7 hold: every charge recorded once and announced once; the extra payment refunded; nothing left stuck. ✔",
        );
        Ok(ExitCode::SUCCESS)
    } else {
        say("INVARIANT FAILURES:");
        for f in &failures {
            say(format!("  ✘ {f}"));
        }
        Ok(ExitCode::FAILURE)
    }
}

/// Sums a Prometheus counter's samples whose labels contain `label`.
pub fn metric(text: &str, name: &str, label: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
