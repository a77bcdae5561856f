//! Attacks an outside look found at the gateway (issue 20), kept so they stay fixed: slow
//! bodies holding every load-shedding permit, permits freed by hanging up, unthrottled admin
//! token guessing, console sessions outliving a token change, checkout links driving channel
//! calls, abnormal items resolved through a tenant-chosen number, `/metrics` open to anyone.
//! Each failed on the code before its fix. (The notification failure budget counts
//! verifications on the process-wide metrics: it is `tests/notify_budget.rs`, a binary of its own.)

use payonce_server::gateway::ratelimit::Cidr;
use payonce_testkit::{AppOptions, Backend, TestApp, spawn_app_with, store_tests};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

store_tests!(
    slow_bodies_hold_no_permit_and_are_cut_at_the_deadline,
    slow_connections_make_room_for_complete_requests_even_from_one_address,
    a_client_that_hangs_up_keeps_its_permit_until_its_request_ends,
    admin_token_guessing_is_refused_per_address_and_surface,
    console_sessions_end_when_the_admin_token_changes,
    a_checkout_link_cannot_drive_unbounded_channel_calls,
    abnormal_items_name_their_order_by_id_never_by_a_tenant_number,
    metrics_are_closed_unless_a_token_or_public,
);

const ADMIN: &str = "test-admin-token";

fn addr_of(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// What a slow client saw: the server's answer, and when the server closed the connection
/// (`None`: still open when the client gave up).
type SlowOutcome = (String, Option<Duration>);

/// A client that sends a POST's headers, then its body one byte every `every` (it announces
/// 10,000), until the server closes the connection or `give_up` passes.
fn slow_sender(
    addr: String,
    path: &'static str,
    every: Duration,
    give_up: Duration,
) -> JoinHandle<SlowOutcome> {
    tokio::spawn(async move {
        let started = Instant::now();
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 10000\r\n\r\nt"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let (mut got, mut buf) = (Vec::new(), [0u8; 1024]);
        let mut tick = tokio::time::interval(every);
        let stop = tokio::time::sleep(give_up);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                r = s.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return (String::from_utf8_lossy(&got).into_owned(), Some(started.elapsed())),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                },
                // A write the server no longer takes: the read above tells.
                _ = tick.tick() => { let _ = s.write_all(b"x").await; }
                _ = &mut stop => return (String::from_utf8_lossy(&got).into_owned(), None),
            }
        }
    })
}

/// Item 2: 80 connections sending their body a byte at a time to the console's sign-in and to
/// a notification endpoint held every permit (the API's and the notifications' own), so every
/// tenant got `503` and genuine notifications were turned away. Now a request takes its permit
/// only once it has arrived whole, and must arrive within the request timeout (here 2 s).
async fn slow_bodies_hold_no_permit_and_are_cut_at_the_deadline(b: Backend) {
    let opts = AppOptions {
        max_in_flight: 4,
        request_timeout: Duration::from_secs(2),
        ..AppOptions::frozen()
    };
    let Some(app) = spawn_app_with(b, opts).await else {
        return;
    };
    app.faults(json!({"notify_drop_rate": 1.0})).await;
    let order = app.create_order("SLOW-1", 300).await;
    let id = order["id"].as_str().unwrap().to_owned();
    let p: Value = app.prepay(&id, "sandbox").await.json().await.unwrap();
    let no = p["out_trade_no"].as_str().unwrap().to_owned();
    // 10 on the API's pool (4 permits), 70 on the notifications' (64 permits).
    let mut slow = Vec::new();
    for i in 0..80 {
        let path = if i < 10 {
            "/console/sign-in"
        } else {
            "/notify/sandbox"
        };
        slow.push(slow_sender(
            addr_of(&app),
            path,
            Duration::from_millis(300),
            Duration::from_secs(30),
        ));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Meanwhile every complete request is served: a tenant's read, health, a genuine
    // notification.
    assert_eq!(
        app.get(&format!("/v1/orders/{id}")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // (The payer pays; the channel's own notification is dropped, this one stands for it.)
    assert!(app.sim_pay("sandbox", &no, false).await.is_success());
    let (ts, sig, body) = app.signed_sandbox_notification("SLOW-GENUINE", &no, 300);
    let t = Instant::now();
    assert_eq!(
        app.post_sandbox_notification(&ts, &sig, &body)
            .await
            .status(),
        StatusCode::OK
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the notification waited {:?} for a permit",
        t.elapsed()
    );
    assert_eq!(app.order(&id).await["status"], "paid");
    // And every slow sender is answered 408 and cut off at its deadline (2 s; generous bounds
    // for a loaded machine — before the fix they stayed for as long as they dribbled).
    for s in slow {
        let (answer, closed) = s.await.unwrap();
        let closed = closed.expect("a slow sender kept its connection for 30 s");
        assert!(
            closed < Duration::from_secs(12),
            "closed only after {closed:?}"
        );
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("request_timeout"), "{answer}");
    }
    crate::assert_invariants(app.violations().await);
}

/// Item 2, the next move: the connections themselves. At the connection cap, a new connection
/// takes the place of the one that has waited longest without delivering a request, so a client
/// opening many slow connections — even from the payers' own address, as behind a NAT — cannot
/// lock out complete requests.
async fn slow_connections_make_room_for_complete_requests_even_from_one_address(b: Backend) {
    let opts = AppOptions {
        max_connections: 20,
        request_timeout: Duration::from_secs(30),
        ..AppOptions::frozen()
    };
    let Some(app) = spawn_app_with(b, opts).await else {
        return;
    };
    let mut slow = Vec::new();
    for _ in 0..40 {
        // They hold on well past the complete requests below (a second or two even on a busy
        // machine), and far inside the 30 s request deadline: only the cap can close them.
        slow.push(slow_sender(
            addr_of(&app),
            "/console/sign-in",
            Duration::from_millis(500),
            Duration::from_secs(8),
        ));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Complete requests, one new connection each, all served.
    for _ in 0..10 {
        let c = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let r = c
            .get(app.url("/healthz"))
            .send()
            .await
            .expect("served, not refused");
        assert_eq!(r.status(), StatusCode::OK);
        let r = c
            .get(app.url("/v1/orders?merchant_order_no=none"))
            .bearer_auth(&app.secret)
            .send()
            .await
            .expect("served");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    // The slow ones were closed to make room (the oldest first), without an answer.
    let mut evicted = 0;
    for s in slow {
        if let (_, Some(_)) = s.await.unwrap() {
            evicted += 1;
        }
    }
    assert!(
        evicted >= 20,
        "only {evicted} of 40 slow connections made room"
    );
}

/// Item 3: the permit went with the answer, not with the work — 280 prepays sent and abandoned
/// ran 220 channel calls at once under a budget of 50. Now the request's own task holds it.
async fn a_client_that_hangs_up_keeps_its_permit_until_its_request_ends(b: Backend) {
    let opts = AppOptions {
        max_in_flight: 3,
        channel_timeout: Duration::from_secs(6),
        ..AppOptions::frozen()
    };
    let Some(app) = spawn_app_with(b, opts).await else {
        return;
    };
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(
            app.create_order(&format!("HANG-{i}"), 100).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Every channel call now hangs until the connector's timeout (6 s).
    app.faults(json!({"prepay_timeout_rate": 1.0})).await;
    let hasty = reqwest::Client::builder()
        .timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    for id in &ids {
        let _ = hasty
            .post(app.url(&format!("/v1/orders/{id}/prepay")))
            .bearer_auth(&app.secret)
            .json(&json!({"channel": "sandbox"}))
            .send()
            .await;
    }
    // The three calls still running hold the three permits: the next request is shed.
    let r = app.get("/v1/orders?merchant_order_no=none").await;
    assert_eq!(
        r.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "a hung-up request gave its permit back while its work ran"
    );
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "overloaded");
    // At most three channel orders were ever started.
    let mut attempts = 0;
    for id in &ids {
        attempts += app
            .store
            .attempts_of(&payonce_core::OrderId::parse(id).unwrap())
            .await
            .unwrap()
            .len();
    }
    assert!(
        attempts <= 3,
        "{attempts} channel calls under a budget of 3"
    );
    // Liveness: once the calls end, the permits come back.
    let t = Instant::now();
    loop {
        if app.get("/v1/orders?merchant_order_no=none").await.status() == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(40),
            "the permits never came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.faults(json!({"prepay_timeout_rate": 0.0})).await;
    crate::assert_invariants(app.settled_violations(Duration::from_secs(30)).await);
}

fn proxied() -> AppOptions {
    AppOptions {
        trusted_proxies: vec![Cidr::parse("127.0.0.1").unwrap()],
        ..AppOptions::frozen()
    }
}

/// Item 4: 300 wrong admin tokens in half a second were all answered 401, and a sign-in over its
/// budget still took the right token. Now ten failures per address per ten minutes, on the
/// admin token's surface (sign-in and `/admin/v1` together): then everything from that address
/// is refused, the right token too; other addresses, and other surfaces (notifications) of the
/// same address, are untouched.
async fn admin_token_guessing_is_refused_per_address_and_surface(b: Backend) {
    let Some(app) = spawn_app_with(b, proxied()).await else {
        return;
    };
    let admin = |from: &'static str, token: &'static str| {
        app.http
            .get(app.url("/admin/v1/abnormal"))
            .header("x-forwarded-for", from)
            .bearer_auth(token)
            .send()
    };
    let sign_in = |from: &'static str, token: &'static str| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .post(app.url("/console/sign-in"))
            .header("x-forwarded-for", from)
            .form(&[("token", token), ("operator", "mallory")])
            .send()
    };
    assert_eq!(
        admin("198.51.100.7", ADMIN).await.unwrap().status(),
        StatusCode::OK
    );
    // Unknown paths (a browser's /favicon.ico) are not admin requests: they spend nothing.
    for _ in 0..20 {
        let r = app
            .http
            .get(app.url("/favicon.ico"))
            .header("x-forwarded-for", "198.51.100.7")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    assert_eq!(
        admin("198.51.100.7", ADMIN).await.unwrap().status(),
        StatusCode::OK
    );
    // Ten wrong tokens, across both doors.
    for i in 0..10 {
        let status = if i % 2 == 0 {
            admin("198.51.100.7", "guess").await.unwrap().status()
        } else {
            sign_in("198.51.100.7", "guess").await.unwrap().status()
        };
        assert_eq!(status, StatusCode::UNAUTHORIZED, "guess {i}");
    }
    // Now even the right token is refused from there, at both doors, with how long to wait.
    let r = admin("198.51.100.7", ADMIN).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((60..=601).contains(&wait), "Retry-After {wait}");
    let r = sign_in("198.51.100.7", ADMIN).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().get("set-cookie").is_none());
    for _ in 0..50 {
        assert_eq!(
            admin("198.51.100.7", "guess").await.unwrap().status(),
            StatusCode::TOO_MANY_REQUESTS
        );
    }
    // Another address is not affected; nor are the same address's notifications.
    assert_eq!(
        admin("198.51.100.8", ADMIN).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        sign_in("198.51.100.8", ADMIN).await.unwrap().status(),
        StatusCode::SEE_OTHER
    );
    let order = app.create_order("GUESS-N", 300).await;
    let id = order["id"].as_str().unwrap();
    let p: Value = app.prepay(id, "sandbox").await.json().await.unwrap();
    let (ts, sig, body) =
        app.signed_sandbox_notification("GUESS-GENUINE", p["out_trade_no"].as_str().unwrap(), 300);
    let r = app
        .sandbox_notification_from(Some("198.51.100.7"), &ts, &sig, &body)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.order(id).await["status"], "paid");
    // An untrusted peer cannot spread its guesses over made-up addresses: without a trusted
    // proxy the header is ignored (here the budget of 127.0.0.1 is spent by ten guesses).
    let Some(direct) = spawn_app_with(b, AppOptions::frozen()).await else {
        return;
    };
    for i in 0..10 {
        let r = direct
            .http
            .get(direct.url("/admin/v1/abnormal"))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .bearer_auth("guess")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = direct
        .http
        .get(direct.url("/admin/v1/abnormal"))
        .header("x-forwarded-for", "203.0.113.99")
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// A console page's text, fetched with a session cookie.
async fn page_text(app: &TestApp, cookie: &str, path: &str) -> String {
    browser()
        .get(app.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn console_sign_in(app: &TestApp, token: &str, name: &str) -> (String, String) {
    let r = browser()
        .post(app.url("/console/sign-in"))
        .form(&[("token", token), ("operator", name)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "sign-in as {name}");
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let home = page_text(app, &cookie, "/console").await;
    let at = home.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    (cookie, home[at..].split('"').next().unwrap().to_owned())
}

/// Item 5: a cookie from before a restart with a new admin token still opened the console and
/// rotated another app's webhook secret. Sessions are now bound to the token's generation; the
/// console lists its sessions and ends any of them.
async fn console_sessions_end_when_the_admin_token_changes(b: Backend) {
    let Some(mut app) = spawn_app_with(b, AppOptions::frozen()).await else {
        return;
    };
    let (alice, alice_csrf) = console_sign_in(&app, ADMIN, "alice").await;
    let (bob, _) = console_sign_in(&app, ADMIN, "bob").await;
    // The session list: both, alice's marked as hers; she ends bob's.
    let list = page_text(&app, &alice, "/console/sessions").await;
    assert!(
        list.contains("alice (you)") && list.contains("bob"),
        "{list}"
    );
    let sessions = app
        .store
        .sessions(
            &payonce_server::http::console::token_generation(&app.state),
            app.state.clock.now(),
        )
        .await
        .unwrap();
    let bobs = sessions
        .iter()
        .find(|s| s.operator == "bob")
        .unwrap()
        .id_hash
        .clone();
    let r = browser()
        .post(app.url(&format!("/console/sessions/{bobs}/end")))
        .header("cookie", &alice)
        .form(&[("csrf", alice_csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        browser()
            .get(app.url("/console"))
            .header("cookie", &bob)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::SEE_OTHER,
        "bob's session ended"
    );
    assert!(
        app.store
            .recent_audit(5)
            .await
            .unwrap()
            .iter()
            .any(|e| e.operator == "alice" && e.action == "end_session")
    );

    // The token changes (a restart with a new one): alice's old cookie opens nothing and
    // changes nothing.
    let secret_before = app
        .store
        .app(&payonce_core::AppId::parse(&app.app_id).unwrap())
        .await
        .unwrap()
        .unwrap()
        .webhook_secret_enc;
    app.crash_and_restart_with(|c| c.admin_token = Some("a-new-admin-token".into()))
        .await;
    assert_eq!(
        browser()
            .get(app.url("/console"))
            .header("cookie", &alice)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::SEE_OTHER
    );
    let r = browser()
        .post(app.url(&format!(
            "/console/apps/{}/rotate-webhook-secret",
            app.app_id
        )))
        .header("cookie", &alice)
        .form(&[("csrf", alice_csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let secret_after = app
        .store
        .app(&payonce_core::AppId::parse(&app.app_id).unwrap())
        .await
        .unwrap()
        .unwrap()
        .webhook_secret_enc;
    assert_eq!(
        secret_before, secret_after,
        "the old session rotated a secret"
    );
    // Ended in the database too, not only refused (the start-up ends a previous token's).
    let generation = payonce_server::http::console::token_generation(&app.state);
    assert!(
        app.store
            .sessions(&generation, app.state.clock.now())
            .await
            .unwrap()
            .is_empty()
    );
    // The new token signs in.
    let (carol, _) = console_sign_in(&app, "a-new-admin-token", "carol").await;
    assert_eq!(
        browser()
            .get(app.url("/console"))
            .header("cookie", &carol)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

/// Item 8: 60 prepays alternating channels on one link in 0.7 s made 60 channel orders. Now a
/// link's prepays are rate-limited per order, and the channel orders it can open capped.
async fn a_checkout_link_cannot_drive_unbounded_channel_calls(b: Backend) {
    let Some(app) = crate::app(b).await else {
        return;
    };
    let order = app.create_order("CHK-FLOOD", 500).await;
    let id = order["id"].as_str().unwrap();
    let l: Value = app
        .post(&format!("/v1/orders/{id}/checkout"), json!({}))
        .await
        .json()
        .await
        .unwrap();
    let url = l["url"].as_str().unwrap().to_owned();
    let mut statuses = Vec::new();
    for i in 0..60 {
        let channel = if i % 2 == 0 { "sandbox" } else { "wechatpay" };
        let r = app
            .http
            .post(format!("{url}/prepay"))
            .json(&json!({"channel": channel}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status());
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(r.headers().contains_key("retry-after"));
            assert_eq!(
                r.json::<Value>().await.unwrap()["error"],
                "too_many_requests"
            );
        }
    }
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert!(
        (1..=6).contains(&ok),
        "{ok} prepays went through: {statuses:?}"
    );
    let attempts = app
        .store
        .attempts_of(&payonce_core::OrderId::parse(id).unwrap())
        .await
        .unwrap()
        .len();
    assert!(
        attempts <= 6,
        "{attempts} channel orders from one link in a burst"
    );
    crate::assert_invariants(app.settled_violations(Duration::from_secs(20)).await);
}

/// Item 9: an abnormal item of app A was linked to app B's order whose `merchant_order_no` was
/// A's attempt id, and the console's audit row went to B. Items now carry their order's id.
async fn abnormal_items_name_their_order_by_id_never_by_a_tenant_number(b: Backend) {
    let Some(app) = crate::app(b).await else {
        return;
    };
    // App A's order and attempt.
    let a_order = app.create_order("VICTIM-1", 300).await;
    let a_id = a_order["id"].as_str().unwrap().to_owned();
    let p: Value = app.prepay(&a_id, "sandbox").await.json().await.unwrap();
    let attempt_id = p["attempt_id"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("prepay names its attempt: {p}"));
    // App B names an order after A's attempt id.
    let other = payonce_server::engine::apps::create_app(
        app.store.as_ref(),
        &app.state.master_key,
        &payonce_core::SystemClock,
        payonce_server::engine::apps::NewApp::named("squatter"),
    )
    .await
    .unwrap();
    let r = app
        .http
        .post(app.url("/v1/orders"))
        .bearer_auth(&other.secret)
        .json(&json!({"merchant_order_no": attempt_id, "amount": 100, "currency": "CNY", "subject": "squat"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let b_id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // An abnormal item about A's attempt.
    app.store
        .insert_abnormal(
            "unresolved_unknown",
            &attempt_id,
            "test item",
            app.state.clock.now(),
        )
        .await
        .unwrap();
    let item = app
        .store
        .abnormal_open()
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.reference == attempt_id)
        .unwrap();
    assert_eq!(item.order_id.as_deref(), Some(a_id.as_str()));
    let (cookie, csrf) = console_sign_in(&app, ADMIN, "alice").await;
    let home = page_text(&app, &cookie, "/console").await;
    assert!(
        home.contains(&format!("/console/orders/{a_id}"))
            && !home.contains(&format!("/console/orders/{b_id}")),
        "the item links to A's order only"
    );
    let r = browser()
        .post(app.url(&format!("/console/abnormal/{}/resolve", item.id)))
        .header("cookie", &cookie)
        .form(&[("note", "looked at it"), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let audit = app.store.recent_audit(5).await.unwrap();
    let row = audit
        .iter()
        .find(|e| e.action == "resolve" && e.target == item.id)
        .unwrap();
    assert_eq!(
        row.order_id.as_deref(),
        Some(a_id.as_str()),
        "the audit row belongs to A's order"
    );
    // B's timeline shows none of it; A's does.
    let b_page = page_text(&app, &cookie, &format!("/console/orders/{b_id}")).await;
    assert!(
        !b_page.contains("test item") && !b_page.contains("looked at it"),
        "A's item in B's timeline"
    );
    let a_page = page_text(&app, &cookie, &format!("/console/orders/{a_id}")).await;
    assert!(a_page.contains("test item") && a_page.contains("looked at it"));
}

/// Item 10: `/metrics` named every app and its counts to anyone. Closed now unless a token is
/// configured (then required, wrong ones budgeted per address) or `--metrics-public` says so.
async fn metrics_are_closed_unless_a_token_or_public(b: Backend) {
    let Some(closed) = spawn_app_with(
        b,
        AppOptions {
            metrics_public: false,
            ..proxied()
        },
    )
    .await
    else {
        return;
    };
    let r = closed
        .http
        .get(closed.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.unwrap().contains("--metrics-token"));
    let Some(tokened) = spawn_app_with(
        b,
        AppOptions {
            metrics_public: false,
            metrics_token: Some("m-secret".into()),
            ..proxied()
        },
    )
    .await
    else {
        return;
    };
    let get = |from: &'static str, token: &'static str| {
        tokened
            .http
            .get(tokened.url("/metrics"))
            .header("x-forwarded-for", from)
            .bearer_auth(token)
            .send()
    };
    let r = get("198.51.100.30", "m-secret").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("payonce_"));
    for _ in 0..10 {
        assert_eq!(
            get("198.51.100.30", "guess").await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        get("198.51.100.30", "m-secret").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        get("198.51.100.31", "m-secret").await.unwrap().status(),
        StatusCode::OK
    );
    // The metrics budget is its own: that address can still use the admin API.
    let r = tokened
        .http
        .get(tokened.url("/admin/v1/abnormal"))
        .header("x-forwarded-for", "198.51.100.30")
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
