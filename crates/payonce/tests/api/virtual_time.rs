//! Schedules under a hand-moved clock, on both stores: the workers are off, the test moves one
//! `ManualClock` (shared by the engine, its connectors and the simulated channels) and runs one
//! worker round after each step. A schedule step is a clock step — no test here sleeps for one —
//! and each step is checked on both sides of its boundary: nothing fires a moment early, and it
//! fires in the round after.

use crate::assert_invariants;
use payonce_core::ManualClock;
use payonce_sim::SimStatus;
use payonce_testkit::{AppOptions, Backend, TestApp, spawn_app_with, store_tests};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

store_tests!(
    active_query_fires_at_its_scheduled_offset_and_finds_the_lost_payment,
    expiry_closes_at_the_channel_in_the_round_after_the_deadline,
    webhook_retries_follow_the_schedule_and_end_delivered,
    webhook_gives_up_after_the_last_step_of_the_schedule,
    a_lease_held_by_a_dead_worker_is_taken_over_once_it_lapses,
    an_orphaned_intent_is_closed_once_its_call_deadline_passes,
    yesterdays_bill_is_reconciled_once_it_is_ready_and_only_once,
);

/// A server with its workers off, and the clock every part of it reads.
async fn frozen_app(b: Backend, opts: AppOptions) -> Option<(TestApp, ManualClock)> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let clock = ManualClock::at(now);
    let opts = AppOptions {
        clock: Some(Arc::new(clock.clone())),
        time_scale: 1.0,
        workers: false,
        ..opts
    };
    Some((spawn_app_with(b, opts).await?, clock))
}

async fn open_order(app: &TestApp, no: &str, expire_in_seconds: i64) -> String {
    let r = app.post("/v1/orders", json!({"merchant_order_no": no, "amount": 1_000, "currency": "CNY", "subject": "virtual time", "expire_in_seconds": expire_in_seconds})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn prepaid(app: &TestApp, id: &str, channel: &str) -> String {
    let r = app.prepay(id, channel).await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json::<Value>().await.unwrap()["out_trade_no"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A paid sandbox order whose payment every notification lost: only a query can find it.
async fn paid_silently(app: &TestApp, no: &str) -> String {
    app.faults(json!({"notify_drop_rate": 1.0})).await;
    let id = open_order(app, no, 3600).await;
    let out_trade_no = prepaid(app, &id, "sandbox").await;
    assert_eq!(
        app.sim_pay("sandbox", &out_trade_no, false).await,
        StatusCode::OK
    );
    id
}

async fn status(app: &TestApp, id: &str) -> String {
    app.order(id).await["status"].as_str().unwrap().to_owned()
}

async fn active_query_fires_at_its_scheduled_offset_and_finds_the_lost_payment(b: Backend) {
    let Some((app, clock)) = frozen_app(b, AppOptions::default()).await else {
        return;
    };
    let id = paid_silently(&app, "VT-Q").await;
    // The first query is due 10 s after the attempt (DESIGN.md): not at 9.9 s …
    app.run_workers().await;
    clock.advance_ms(9_900);
    app.run_workers().await;
    assert_eq!(
        status(&app, &id).await,
        "paying",
        "no query before its offset"
    );
    // … but in the round after it.
    clock.advance_ms(200);
    app.run_workers().await;
    assert_eq!(
        status(&app, &id).await,
        "paid",
        "the query at 10 s found the payment"
    );
    assert_invariants(app.violations().await);
}

async fn expiry_closes_at_the_channel_in_the_round_after_the_deadline(b: Backend) {
    let Some((app, clock)) = frozen_app(b, AppOptions::default()).await else {
        return;
    };
    let id = open_order(&app, "VT-E", 60).await;
    let out_trade_no = prepaid(&app, &id, "wechatpay").await;
    let at_channel = |app: &TestApp| {
        app.sim
            .sim
            .ledger_snapshot()
            .orders
            .values()
            .find(|o| o.out_trade_no == out_trade_no)
            .unwrap()
            .status
    };
    clock.advance_ms(59_000);
    app.run_workers().await;
    assert_eq!(
        status(&app, &id).await,
        "paying",
        "not expired a second early"
    );
    assert_eq!(at_channel(&app), SimStatus::Unpaid);
    clock.advance_ms(1_500);
    app.run_workers().await;
    let order = app.order(&id).await;
    assert_eq!(
        (
            order["status"].as_str(),
            order["attempts"][0]["status"].as_str()
        ),
        (Some("closed"), Some("closed")),
        "{order}"
    );
    assert_eq!(
        at_channel(&app),
        SimStatus::Closed,
        "closed at WeChat before locally"
    );
    assert_invariants(app.violations().await);
}

/// A webhook receiver answering 503 to its first `fail_first` requests; the webhook-ids it got.
async fn receiver(fail_first: usize) -> (String, Arc<Mutex<Vec<String>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    let router = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let seen = seen.clone();
            async move {
                let mut seen = seen.lock().unwrap();
                seen.push(
                    headers
                        .get("webhook-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned(),
                );
                if seen.len() <= fail_first {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                } else {
                    axum::http::StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, router).await.unwrap() });
    (url, got)
}

/// The one event a business close announces, with a receiver behind it.
async fn closed_order_event(app: &TestApp) -> String {
    let id = open_order(app, "VT-W", 3600).await;
    assert_eq!(
        app.post(&format!("/v1/orders/{id}/close"), json!({}))
            .await
            .status(),
        StatusCode::OK
    );
    let events = app
        .store
        .events_of(&payonce_core::OrderId::from_trusted(id))
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "one event: order.closed");
    events[0].id.clone()
}

async fn webhook_retries_follow_the_schedule_and_end_delivered(b: Backend) {
    let (url, got) = receiver(2).await;
    let schedule = vec![Duration::from_secs(30), Duration::from_secs(60)];
    let opts = AppOptions {
        webhook_url: Some(url),
        webhook_schedule: Some(schedule),
        ..AppOptions::default()
    };
    let Some((app, clock)) = frozen_app(b, opts).await else {
        return;
    };
    let event = closed_order_event(&app).await;
    let sent = || got.lock().unwrap().len();
    app.run_workers().await;
    assert_eq!(sent(), 1, "first delivery at once (503)");
    // The retry waits 30 s ± 10 % jitter: not at 26 s, by 34 s.
    app.run_workers().await;
    clock.advance_ms(26_000);
    app.run_workers().await;
    assert_eq!(sent(), 1, "no retry before its step");
    clock.advance_ms(8_000);
    app.run_workers().await;
    assert_eq!(sent(), 2, "second try (503)");
    clock.advance_ms(53_000);
    app.run_workers().await;
    assert_eq!(sent(), 2, "no retry before 60 s − 10 %");
    clock.advance_ms(14_000);
    app.run_workers().await;
    assert_eq!(sent(), 3, "third try delivered");
    clock.advance_ms(3_600_000);
    app.run_workers().await;
    assert_eq!(sent(), 3, "delivered once: never again");
    assert!(
        got.lock().unwrap().iter().all(|id| *id == event),
        "every try under the event's id"
    );
    let row = app.store.event(&event).await.unwrap().unwrap();
    assert_eq!(
        row.delivery_status,
        payonce_store::DeliveryStatus::Delivered
    );
    assert_invariants(app.violations().await);
}

async fn webhook_gives_up_after_the_last_step_of_the_schedule(b: Backend) {
    let (url, got) = receiver(usize::MAX).await;
    let opts = AppOptions {
        webhook_url: Some(url),
        webhook_schedule: Some(vec![Duration::from_secs(30)]),
        ..AppOptions::default()
    };
    let Some((app, clock)) = frozen_app(b, opts).await else {
        return;
    };
    let event = closed_order_event(&app).await;
    app.run_workers().await;
    clock.advance_ms(34_000);
    app.run_workers().await;
    assert_eq!(
        got.lock().unwrap().len(),
        2,
        "the first try and the schedule's one retry"
    );
    let row = app.store.event(&event).await.unwrap().unwrap();
    assert_eq!(
        row.delivery_status,
        payonce_store::DeliveryStatus::Failed,
        "failed, in front of a person (resend)"
    );
    clock.advance_ms(24 * 3_600_000);
    app.run_workers().await;
    assert_eq!(
        got.lock().unwrap().len(),
        2,
        "a failed event is not retried on its own"
    );
    // Liveness: an event is delivered or failed, never left pending.
    assert_invariants(app.violations().await);
}

async fn a_lease_held_by_a_dead_worker_is_taken_over_once_it_lapses(b: Backend) {
    let Some((app, clock)) = frozen_app(b, AppOptions::default()).await else {
        return;
    };
    let id = paid_silently(&app, "VT-L").await;
    clock.advance_ms(11_000);
    // Another instance claims the due query and dies holding the lease.
    let lease = app.state.config.channel_timeout * 3 + Duration::from_secs(5);
    let lease_ms = lease.as_millis() as i64;
    let claimed = app
        .store
        .claim_due_attempts(
            payonce_core::Clock::now(&clock),
            lease_ms,
            "dead-worker",
            64,
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    app.run_workers().await;
    assert_eq!(
        status(&app, &id).await,
        "paying",
        "a live lease is respected"
    );
    clock.advance_ms(lease_ms - 1_000);
    app.run_workers().await;
    assert_eq!(
        status(&app, &id).await,
        "paying",
        "still leased a second before it lapses"
    );
    clock.advance_ms(2_000);
    app.run_workers().await;
    assert_eq!(
        status(&app, &id).await,
        "paid",
        "taken over once the lease lapsed"
    );
    // The dead worker wakes up and writes its result: fenced out, nothing changes.
    assert!(
        !app.store
            .finish_attempt_check(
                &claimed[0].id,
                "dead-worker",
                None,
                payonce_core::Clock::now(&clock)
            )
            .await
            .unwrap()
    );
    assert_eq!(status(&app, &id).await, "paid");
    assert_invariants(app.violations().await);
}

/// A prepay whose caller died between writing its intent and the channel call: the `created`
/// attempt is claimable from the start, left alone while a call could still be running, then
/// marked unknown, queried, and closed by expiry like any other (issue 11's orphan).
async fn an_orphaned_intent_is_closed_once_its_call_deadline_passes(b: Backend) {
    let Some((app, clock)) = frozen_app(b, AppOptions::default()).await else {
        return;
    };
    let id = open_order(&app, "VT-O", 60).await;
    let order_id = payonce_core::OrderId::from_trusted(id.clone());
    let app_id = payonce_core::AppId::from_trusted(app.app_id.clone());
    let order = app.store.order(&app_id, &order_id).await.unwrap().unwrap();
    let now = payonce_core::Clock::now(&clock);
    let params = payonce_server::engine::payments::PrepayParams {
        channel: payonce_core::ChannelName::Sandbox,
        method: payonce_core::PayMethod::Native,
        payer: None,
    };
    let intent = payonce_server::engine::payments::new_attempt(
        &app.state,
        &order,
        &params,
        payonce_channels::DEFAULT_ACCOUNT,
        now,
    );
    assert!(matches!(
        app.store.begin_attempt(&intent, now).await.unwrap(),
        payonce_store::BeginAttempt::Started(_)
    ));
    let deadline = app.state.config.call_deadline().as_millis() as i64;
    clock.advance_ms(deadline - 500);
    app.run_workers().await;
    assert_eq!(
        app.order(&id).await["attempts"][0]["status"],
        "created",
        "its call could still be running"
    );
    clock.advance_ms(1_000);
    app.run_workers().await;
    let attempt = app.order(&id).await["attempts"][0]["status"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        attempt == "unknown" || attempt == "failed" || attempt == "closed",
        "no longer waited on: {attempt}"
    );
    clock.advance_ms(61_000);
    app.run_workers().await;
    let order = app.order(&id).await;
    assert_eq!(
        order["status"], "closed",
        "expired and closed, never stuck paying: {order}"
    );
    assert_invariants(app.violations().await);
}

/// `--reconcile-at sandbox=10:00`: yesterday's bill is reconciled in the first round after 10:00
/// Beijing time — not at 09:59 — and, once completed, never again that day.
async fn yesterdays_bill_is_reconciled_once_it_is_ready_and_only_once(b: Backend) {
    let today = payonce_server::engine::reconcile::beijing_date(payonce_core::Clock::now(
        &payonce_core::SystemClock,
    ));
    let (midnight, _) = payonce_server::engine::reconcile::beijing_day(&today).unwrap();
    let clock = ManualClock::at(midnight.0 + (9 * 60 + 59) * 60_000);
    let opts = AppOptions {
        clock: Some(Arc::new(clock.clone())),
        time_scale: 1.0,
        workers: false,
        reconcile_at: Some("sandbox=10:00".into()),
        ..AppOptions::default()
    };
    let Some(app) = spawn_app_with(b, opts).await else {
        return;
    };
    let yesterday =
        payonce_server::engine::reconcile::beijing_yesterday(payonce_core::Clock::now(&clock));
    app.run_workers().await;
    assert!(
        app.store
            .reconciliation_for(payonce_core::ChannelName::Sandbox, "default", &yesterday)
            .await
            .unwrap()
            .is_none(),
        "not before 10:00"
    );
    clock.advance_ms(2 * 60_000);
    app.run_workers().await;
    let run = app
        .store
        .reconciliation_for(payonce_core::ChannelName::Sandbox, "default", &yesterday)
        .await
        .unwrap()
        .expect("run at 10:01");
    assert_eq!(run.status, "completed");
    assert!(
        app.store
            .reconciliation_for(payonce_core::ChannelName::Wechatpay, "default", &yesterday)
            .await
            .unwrap()
            .is_none(),
        "only the channels configured"
    );
    clock.advance_ms(3_600_000);
    app.run_workers().await;
    assert_eq!(
        app.store
            .reconciliation_for(payonce_core::ChannelName::Sandbox, "default", &yesterday)
            .await
            .unwrap()
            .unwrap()
            .started_at,
        run.started_at,
        "completed: not run again"
    );
}
