//! Reconciliation on both stores: the simulator's bad days (a payment only the bill shows, an
//! amount that differs, a success the bill lacks, a charge and a refund payonce never made, a
//! refund still open here, a damaged bill), each classified and handled as issue 12's table
//! says; a re-run repairs nothing twice and ends with the same counts.

use crate::assert_invariants;
use payonce_testkit::{AppOptions, Backend, TestApp, spawn_app_with, store_tests};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

store_tests!(
    every_class_is_found_and_handled_and_a_rerun_changes_nothing,
    a_day_of_lost_notifications_and_queries_ends_paid_after_one_reconciliation,
    no_bill_for_the_day_is_an_empty_day_or_a_difference_for_a_person,
    a_bad_run_request_names_every_problem_and_runs_nothing,
);

/// The run request is one struct like every other body: each problem named in one 400, a
/// well-formed date that is no calendar day a 422, and nothing run for either.
async fn a_bad_run_request_names_every_problem_and_runs_nothing(b: Backend) {
    let Some(app) = crate::app(b).await else {
        return;
    };
    let post = |body: Value| {
        app.http
            .post(app.url("/admin/v1/reconciliations"))
            .bearer_auth("test-admin-token")
            .json(&body)
            .send()
    };
    let r = post(json!({"channel": 5, "date": "2026-1-1", "dry": true}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    let fields: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["channel", "date", "dry"], "{v}");
    let r = post(json!({"date": "2026-02-30"})).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "channel is required");
    let r = post(json!({"channel": "sandbox", "date": "2026-02-30"}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "invalid_date");
    assert!(app.store.reconciliations(10).await.unwrap().is_empty());
}

/// A server whose clock (engine, workers and simulated channels alike) reads noon in Beijing
/// today and runs on: every payment here lands in today's bill and inside UnionPay's clearing
/// day, at whatever hour the suite runs (a run across Beijing midnight split them once).
async fn noon_app(b: Backend) -> Option<(TestApp, String)> {
    let (clock, today) = payonce_testkit::beijing_noon();
    let app = spawn_app_with(
        b,
        AppOptions {
            clock: Some(clock),
            ..AppOptions::default()
        },
    )
    .await?;
    Some((app, today))
}

async fn paid(app: &TestApp, no: &str, channel: &str, amount: i64) -> (String, String) {
    let id = app.create_order(no, amount).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let p: Value = app.prepay(&id, channel).await.json().await.unwrap();
    let out_trade_no = p["out_trade_no"].as_str().unwrap().to_owned();
    assert_eq!(
        app.sim_pay(channel, &out_trade_no, false).await,
        StatusCode::OK
    );
    (id, out_trade_no)
}

async fn bill(app: &TestApp, adjustment: Value) {
    let r = app
        .http
        .post(app.sim_url("/sim/bill"))
        .json(&adjustment)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{adjustment}");
}

/// Runs the reconciliation through the admin API; the run and all its items.
async fn reconcile(app: &TestApp, channel: &str, date: &str) -> (Value, Vec<Value>) {
    let r = app
        .http
        .post(app.url("/admin/v1/reconciliations"))
        .bearer_auth("test-admin-token")
        .json(&json!({"channel": channel, "date": date}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let run: Value = r.json().await.unwrap();
    let detail: Value = app
        .http
        .get(app.url(&format!(
            "/admin/v1/reconciliations/{}",
            run["id"].as_str().unwrap()
        )))
        .bearer_auth("test-admin-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (run, detail["items"].as_array().unwrap().clone())
}

/// What a reconciliation can write besides its run row: items, kept bills, repairs (channel
/// facts, refunds, events) and abnormal entries of its own kinds. The workers keep running
/// beside it — on a slow machine a query that keeps failing raises its own `unresolved_unknown`
/// — so these, not every table, say whether a run wrote anything.
async fn reconciliation_writes(app: &TestApp) -> Vec<(String, i64)> {
    let mut rows: Vec<(String, i64)> = app
        .counts()
        .await
        .into_iter()
        .filter(|(table, _)| {
            matches!(
                *table,
                "reconciliation_items"
                    | "bills"
                    | "bill_parts"
                    | "channel_events"
                    | "refunds"
                    | "events"
            )
        })
        .map(|(table, n)| (table.to_owned(), n))
        .collect();
    let abnormal = app.store.abnormal_open().await.unwrap();
    rows.push((
        "abnormal reconciliation_*".into(),
        abnormal
            .iter()
            .filter(|a| a.kind.starts_with("reconciliation_"))
            .count() as i64,
    ));
    rows
}

fn count(run: &Value, class: &str) -> u64 {
    run["summary"]["classes"][class].as_u64().unwrap_or(0)
}

/// "No bill for this day", as each channel says it for a day on which nothing moved (WeChat 400
/// NO_STATEMENT_EXIST, Alipay 40004 isp.bill_not_exist, UnionPay respCode 98): with nothing
/// recorded by payonce either, an empty, completed run; with a payment payonce recorded, that
/// payment is missing at the channel, for a person — never a failed run, never a silent success.
async fn no_bill_for_the_day_is_an_empty_day_or_a_difference_for_a_person(b: Backend) {
    let Some((app, today)) = noon_app(b).await else {
        return;
    };
    for channel in ["wechatpay", "alipay", "unionpay"] {
        let (run, items) = reconcile(&app, channel, &today).await;
        assert_eq!(
            (
                run["status"].as_str(),
                run["summary"]["bill_source"].as_str()
            ),
            (Some("completed"), Some("no_bill")),
            "{channel}: {run}"
        );
        assert!(items.is_empty(), "{channel}: {items:?}");
        assert!(run["reason"].is_null(), "an empty day is no error: {run}");
    }
    // A payment payonce recorded; the channel's bill of the day lacks it, so the channel says
    // it has no bill at all for the day (and a query would still say paid).
    let (id, no) = paid(&app, "NOBILL-1", "wechatpay", 1_000).await;
    assert_eq!(
        app.wait_order(&id, Duration::from_secs(10), |o| o["status"] == "paid")
            .await["status"],
        "paid"
    );
    bill(
        &app,
        json!({"kind": "omit", "channel": "wechatpay", "out_trade_no": no}),
    )
    .await;
    let (run, items) = reconcile(&app, "wechatpay", &today).await;
    assert_eq!(
        (
            run["status"].as_str(),
            run["summary"]["bill_source"].as_str()
        ),
        (Some("completed"), Some("no_bill")),
        "{run}"
    );
    assert_eq!(count(&run, "missing_at_channel"), 1, "{run}");
    assert_eq!(
        items
            .iter()
            .map(|i| (
                i["class"].as_str().unwrap(),
                i["reference"].as_str().unwrap()
            ))
            .collect::<Vec<_>>(),
        [("missing_at_channel", no.as_str())]
    );
    let abnormal = app.store.abnormal_open().await.unwrap();
    assert_eq!(
        abnormal
            .iter()
            .filter(|a| a.kind == "reconciliation_missing_at_channel")
            .count(),
        1,
        "{abnormal:?}"
    );
}

async fn every_class_is_found_and_handled_and_a_rerun_changes_nothing(b: Backend) {
    let Some((app, today)) = noon_app(b).await else {
        return;
    };
    // Healthy days first: paid and announced as usual.
    let (a_id, a_no) = paid(&app, "REC-A", "sandbox", 1_000).await;
    let (c_id, c_no) = paid(&app, "REC-C", "sandbox", 1_200).await;
    let (d_id, d_no) = paid(&app, "REC-D", "sandbox", 1_300).await;
    let (e_id, _) = paid(&app, "REC-E", "wechatpay", 1_400).await;
    for id in [&a_id, &c_id, &d_id, &e_id] {
        assert_eq!(
            app.wait_order(id, Duration::from_secs(10), |o| o["status"] == "paid")
                .await["status"],
            "paid"
        );
    }
    // Then every notification and every query fails: only the bills will tell.
    app.faults(
        json!({"notify_drop_rate": 1.0, "query_error_rate": 1.0, "refund_delay_ms": [200, 200]}),
    )
    .await;
    let (b_id, b_no) = paid(&app, "REC-B", "sandbox", 1_100).await;
    let r = app
        .post(
            &format!("/v1/orders/{e_id}/refunds"),
            json!({"merchant_refund_no": "E-R1", "amount": 400}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let e_refund: Value = r.json().await.unwrap();
    assert_ne!(
        e_refund["status"], "succeeded",
        "WeChat is still processing it"
    );
    assert_eq!(
        app.order(&b_id).await["status"],
        "paying",
        "nothing but the bill shows B's payment"
    );
    bill(
        &app,
        json!({"kind": "amount", "channel": "sandbox", "out_trade_no": c_no, "amount": 1_201}),
    )
    .await;
    bill(
        &app,
        json!({"kind": "omit", "channel": "sandbox", "out_trade_no": d_no}),
    )
    .await;
    bill(&app, json!({"kind": "foreign_charge", "channel": "sandbox", "out_trade_no": "NOT-OURS-1", "amount": 777})).await;
    bill(&app, json!({"kind": "foreign_refund", "channel": "sandbox", "out_trade_no": a_no, "out_refund_no": "NOT-OURS-R", "amount": 50})).await;

    let (run, items) = reconcile(&app, "sandbox", &today).await;
    assert_eq!(run["status"], "completed", "{run}");
    let expected = [
        ("repaired_paid", 1),
        ("amount_mismatch", 1),
        ("missing_at_channel", 1),
        ("unknown_trade", 1),
        ("unknown_refund", 1),
        ("repaired_refund", 0),
    ];
    for (class, n) in expected {
        assert_eq!(count(&run, class), n, "{class}: {run}");
    }
    let find = |class: &str| {
        items
            .iter()
            .find(|i| i["class"] == class)
            .unwrap_or_else(|| panic!("no {class} item: {items:?}"))
            .clone()
    };
    assert_eq!(find("repaired_paid")["reference"], b_no.as_str());
    assert_eq!(
        (
            find("amount_mismatch")["local_amount"].as_i64(),
            find("amount_mismatch")["channel_amount"].as_i64()
        ),
        (Some(1_200), Some(1_201))
    );
    assert_eq!(find("missing_at_channel")["reference"], d_no.as_str());
    assert_eq!(find("unknown_trade")["reference"], "NOT-OURS-1");
    assert_eq!(find("unknown_refund")["reference"], "NOT-OURS-R");
    // The repair went through the engine: B is paid and announced once; C is never touched.
    let b = app.order(&b_id).await;
    assert_eq!(b["status"], "paid", "{b}");
    let b_events = app
        .store
        .events_of(&payonce_core::OrderId::from_trusted(b_id.clone()))
        .await
        .unwrap();
    assert_eq!(
        b_events
            .iter()
            .filter(|e| e.event_type == "payment.succeeded")
            .count(),
        1
    );
    // Four differences need a person: each in the abnormal queue.
    let abnormal = app.store.abnormal_open().await.unwrap();
    for kind in [
        "reconciliation_amount_mismatch",
        "reconciliation_missing_at_channel",
        "reconciliation_unknown_trade",
        "reconciliation_unknown_refund",
    ] {
        assert_eq!(
            abnormal.iter().filter(|a| a.kind == kind).count(),
            1,
            "{kind}: {abnormal:?}"
        );
    }
    // The app hears of its own counts once.
    let announced = |events: Vec<payonce_store::EventRow>| {
        events
            .into_iter()
            .filter(|e| e.event_type == "reconciliation.completed")
            .collect::<Vec<_>>()
    };
    let first = announced(app.store.list_events(None, 1000).await.unwrap());
    assert_eq!(first.len(), 1);
    let data: Value = serde_json::from_str(&first[0].payload).unwrap();
    assert_eq!(data["data"]["classes"]["repaired_paid"], 1, "{data}");

    // A re-run: the same counts, and nothing written (no repair, item, abnormal entry or event twice).
    let before = reconciliation_writes(&app).await;
    let (again, _) = reconcile(&app, "sandbox", &today).await;
    assert_eq!(again["id"], run["id"], "one run per channel and day");
    assert_eq!(
        again["summary"]["classes"], run["summary"]["classes"],
        "the same counts"
    );
    assert_eq!(
        reconciliation_writes(&app).await,
        before,
        "a re-run writes nothing new"
    );

    // The bill was kept, compressed, with its hash; the re-run read that copy.
    assert_eq!(again["summary"]["bill_source"], "stored", "{again}");
    let (kept, bytes) = app
        .store
        .stored_bill(payonce_core::ChannelName::Sandbox, "sandbox", &today)
        .await
        .unwrap()
        .expect("the bill is kept");
    assert_eq!(
        (kept.format.as_str(), kept.size as usize),
        ("sandbox-gzip", bytes.len())
    );
    assert_eq!(
        kept.sha256,
        hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes).as_ref())
    );
    assert!(bytes.starts_with(&[0x1f, 0x8b]), "stored gzip-compressed");
    // Fees and settled amounts are kept on what the bill names, and summed per run.
    assert_eq!(
        run["summary"]["totals"]["fees_millifen"]
            .as_i64()
            .map(|f| f > 0),
        Some(true),
        "{run}"
    );

    // WeChat: a damaged bill applies nothing: the run fails with its reason, F stays as it was,
    // and the bill is not kept.
    let (f_id, _) = paid(&app, "REC-F", "wechatpay", 1_500).await;
    bill(&app, json!({"kind": "corrupt", "channel": "wechatpay"})).await;
    let before = reconciliation_writes(&app).await;
    let (broken, _) = reconcile(&app, "wechatpay", &today).await;
    assert_eq!(broken["status"], "failed", "{broken}");
    assert!(
        broken["reason"].as_str().unwrap().contains("hash"),
        "{broken}"
    );
    assert_eq!(
        app.order(&f_id).await["status"],
        "paying",
        "nothing applied from a damaged bill"
    );
    // Only the failed run itself is recorded (with its reason).
    assert_eq!(reconciliation_writes(&app).await, before);
    assert!(
        app.store
            .stored_bill(payonce_core::ChannelName::Wechatpay, "1900000001", &today)
            .await
            .unwrap()
            .is_none(),
        "a damaged bill is not kept"
    );
    // Repaired, the bill is downloaded again (gzip, its hash over the unpacked text): F is found
    // and the refund WeChat finished, still open here, is settled.
    app.http
        .delete(app.sim_url("/sim/bill"))
        .send()
        .await
        .unwrap();
    let (wx, _) = reconcile(&app, "wechatpay", &today).await;
    assert_eq!(
        (
            wx["status"].as_str(),
            count(&wx, "repaired_paid"),
            count(&wx, "repaired_refund")
        ),
        (Some("completed"), 1, 1),
        "{wx}"
    );
    assert_eq!(wx["summary"]["bill_source"], "downloaded");
    assert_eq!(app.order(&f_id).await["status"], "paid");
    let refund: Value = app
        .get(&format!("/v1/refunds/{}", e_refund["id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(refund["status"], "succeeded");
    // 0.6 % of 1,400 + 1,500 fen, less 0.6 % of the 400 refunded, in thousandths of a fen.
    assert_eq!(
        wx["summary"]["totals"]["fees_millifen"],
        json!((8 + 9 - 2) * 1000),
        "{wx}"
    );

    // UnionPay: fileTransfer's zlib-deflated zip of fixed-width records and the RD report. A
    // payment only the bill shows is repaired; a bill whose report does not add up applies
    // nothing. Its clearing day ends at 23:00 Beijing.
    let clearing_day =
        payonce_server::engine::reconcile::beijing_date(app.state.clock.now().plus_ms(3_600_000));
    let id = app.create_order("REC-U", 1_600).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let p: Value = app.prepay(&id, "unionpay").await.json().await.unwrap();
    assert_eq!(
        app.submit_unionpay_form(&p["credential"]).await,
        StatusCode::OK
    );
    assert_eq!(
        app.sim_pay("unionpay", p["out_trade_no"].as_str().unwrap(), false)
            .await,
        StatusCode::OK
    );
    bill(&app, json!({"kind": "corrupt", "channel": "unionpay"})).await;
    let (broken, _) = reconcile(&app, "unionpay", &clearing_day).await;
    assert_eq!(broken["status"], "failed", "{broken}");
    assert!(
        broken["reason"].as_str().unwrap().contains("总计"),
        "{broken}"
    );
    assert_eq!(app.order(&id).await["status"], "paying");
    app.http
        .delete(app.sim_url("/sim/bill"))
        .send()
        .await
        .unwrap();
    let (up, _) = reconcile(&app, "unionpay", &clearing_day).await;
    assert_eq!(
        (up["status"].as_str(), count(&up, "repaired_paid")),
        (Some("completed"), 1),
        "{up}"
    );
    assert_eq!(app.order(&id).await["status"], "paid");
    let (kept, _) = app
        .store
        .stored_bill(
            payonce_core::ChannelName::Unionpay,
            "777290058110048",
            &clearing_day,
        )
        .await
        .unwrap()
        .expect("kept");
    assert_eq!(
        (kept.format.as_str(), kept.bill_type.as_str()),
        ("unionpay-zlib-zip", "ZM")
    );

    app.faults(json!({"notify_drop_rate": 0.0, "query_error_rate": 0.0}))
        .await;
    assert_invariants(app.violations().await);
}

/// Every notification and every query fails all day, on every channel; one order is even
/// charged twice (its first channel order paid just as it was being closed). One reconciliation
/// of each channel's bill, and nothing else, ends with every charged order paid and the second
/// charge refunded: the ledger and the database agree.
async fn a_day_of_lost_notifications_and_queries_ends_paid_after_one_reconciliation(b: Backend) {
    let Some((app, today)) = noon_app(b).await else {
        return;
    };
    let clearing_day =
        payonce_server::engine::reconcile::beijing_date(app.state.clock.now().plus_ms(3_600_000));
    app.faults(json!({"notify_drop_rate": 1.0, "query_error_rate": 1.0}))
        .await;
    let mut orders = Vec::new();
    for (no, channel) in [
        ("LOST-S", "sandbox"),
        ("LOST-W", "wechatpay"),
        ("LOST-A", "alipay"),
    ] {
        orders.push(paid(&app, no, channel, 2_000).await.0);
    }
    let id = app.create_order("LOST-U", 2_100).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let p: Value = app.prepay(&id, "unionpay").await.json().await.unwrap();
    assert_eq!(
        app.submit_unionpay_form(&p["credential"]).await,
        StatusCode::OK
    );
    assert_eq!(
        app.sim_pay("unionpay", p["out_trade_no"].as_str().unwrap(), false)
            .await,
        StatusCode::OK
    );
    orders.push(id);
    // Charged twice: the payer switches from sandbox to WeChat (payonce closes the sandbox
    // order), pays WeChat, and the sandbox payment lands as it was being closed.
    let dup = app.create_order("LOST-D", 2_200).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let first: Value = app.prepay(&dup, "sandbox").await.json().await.unwrap();
    let second: Value = app.prepay(&dup, "wechatpay").await.json().await.unwrap();
    assert_eq!(
        app.sim_pay("wechatpay", second["out_trade_no"].as_str().unwrap(), false)
            .await,
        StatusCode::OK
    );
    assert_eq!(
        app.sim_pay("sandbox", first["out_trade_no"].as_str().unwrap(), true)
            .await,
        StatusCode::OK
    );
    orders.push(dup.clone());
    for id in &orders {
        assert_ne!(
            app.order(id).await["status"],
            "paid",
            "nothing but the bills shows these payments"
        );
    }

    for (channel, day) in [
        ("sandbox", &today),
        ("wechatpay", &today),
        ("alipay", &today),
        ("unionpay", &clearing_day),
    ] {
        let (run, _) = reconcile(&app, channel, day).await;
        assert_eq!(run["status"], "completed", "{run}");
    }
    for id in &orders {
        assert_eq!(app.order(id).await["status"], "paid", "{id}");
    }
    let refunds = app
        .store
        .refunds_of(&payonce_core::OrderId::from_trusted(dup.clone()))
        .await
        .unwrap();
    assert_eq!(
        refunds
            .iter()
            .filter(|r| r.kind == payonce_store::RefundKind::Duplicate)
            .count(),
        1,
        "the second charge is refunded: {refunds:?}"
    );
    // With the faults still on, the database already agrees with the channels' ledger.
    assert_invariants(
        payonce_harness::invariants::check(app.store.as_ref(), &app.ledger().await).await,
    );
    app.faults(json!({"notify_drop_rate": 0.0, "query_error_rate": 0.0}))
        .await;
    assert_invariants(app.violations().await);
}
