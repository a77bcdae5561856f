//! The gateway layer: per-app rate limits on the business API (429 `rate_limited` with
//! `Retry-After`, other apps untouched), slow clients, the connection cap, edge checks of
//! bodies. (Failure budgets per address and surface: `attacks_gateway.rs`.)

use payonce_server::gateway::ratelimit::RateSpec;
use payonce_testkit::{AppOptions, Backend, spawn_app_with, store_tests};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

store_tests!(
    an_app_over_its_rate_gets_429_and_others_do_not,
    slow_clients_are_cut_off_and_health_stays_answered,
    connections_past_the_limit_take_the_place_of_idle_ones,
    at_the_limit_with_every_connection_busy_a_newcomer_waits_its_turn,
    bodies_and_media_types_are_checked_at_the_edge,
    metrics_can_require_a_token,
    with_redis_the_rate_is_shared_by_every_instance,
);

async fn an_app_over_its_rate_gets_429_and_others_do_not(b: Backend) {
    let opts = AppOptions {
        rate_limit: Some(RateSpec {
            per_second: 1,
            burst: 5,
        }),
        ..AppOptions::frozen()
    };
    let Some(app) = spawn_app_with(b, opts).await else {
        return;
    };
    let other = payonce_server::engine::apps::create_app(
        app.store.as_ref(),
        &app.state.master_key,
        &payonce_core::SystemClock,
        payonce_server::engine::apps::NewApp::named("other-shop"),
    )
    .await
    .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(app.get("/v1/orders?merchant_order_no=nope").await.status());
    }
    assert!(
        statuses[..5].iter().all(|s| *s == StatusCode::NOT_FOUND),
        "{statuses:?}"
    );
    let r = app.get("/v1/orders?merchant_order_no=nope").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["status"].as_u64(), body["code"].as_str()),
        (Some(429), Some("rate_limited"))
    );
    // Another app has its own bucket.
    let r = app
        .http
        .get(app.url("/v1/orders?merchant_order_no=nope"))
        .bearer_auth(&other.secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // A request without a valid secret is a 401, and costs nobody anything.
    let r = app
        .http
        .get(app.url("/v1/orders?merchant_order_no=nope"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Operations endpoints are not the app API.
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

/// Whether the server closed `stream` (read returns 0 or an error) within `within`.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    matches!(
        tokio::time::timeout(within, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

async fn slow_clients_are_cut_off_and_health_stays_answered(b: Backend) {
    let opts = AppOptions {
        header_read_timeout: Duration::from_millis(500),
        ..AppOptions::frozen()
    };
    let Some(app) = spawn_app_with(b, opts).await else {
        return;
    };
    let addr = app.base.trim_start_matches("http://").to_owned();
    // Slowloris: a request line and half a header, then nothing.
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(s);
    }
    // Meanwhile health checks are answered.
    let t = std::time::Instant::now();
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert!(t.elapsed() < Duration::from_secs(1));
    // And the slow ones are closed once their headers are late.
    for s in slow.iter_mut() {
        assert!(
            closed_within(s, Duration::from_secs(3)).await,
            "a slow client kept its connection"
        );
    }
    // An idle keep-alive connection is closed too.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(
        closed_within(&mut idle, Duration::from_secs(3)).await,
        "an idle keep-alive connection stayed open"
    );
}

/// At the connection cap a new connection is not refused: the connection that has waited
/// longest without a request (here, idle ones) is closed to make room (see
/// `attacks_gateway.rs` for slow senders).
async fn connections_past_the_limit_take_the_place_of_idle_ones(b: Backend) {
    let opts = AppOptions {
        max_connections: 20,
        header_read_timeout: Duration::from_secs(5),
        ..AppOptions::frozen()
    };
    let Some(app) = spawn_app_with(b, opts).await else {
        return;
    };
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The 21st is served.
    let answer = healthz_on_a_new_connection(&addr, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The first (oldest idle) held connection was closed for it.
    assert!(
        closed_within(&mut held[0], Duration::from_secs(2)).await,
        "the idlest connection stayed"
    );
}

/// At the connection cap with every connection handling a request, a newcomer is neither
/// refused nor allowed to push a busy connection out: it waits (and those behind it wait in the
/// kernel's backlog) until a connection ends or turns idle, then it is served.
async fn at_the_limit_with_every_connection_busy_a_newcomer_waits_its_turn(b: Backend) {
    let opts = AppOptions {
        max_connections: 2,
        ..AppOptions::frozen()
    };
    let Some(app) = spawn_app_with(b, opts).await else {
        return;
    };
    let orders = [
        app.create_order("BUSY-1", 100).await,
        app.create_order("BUSY-2", 100).await,
    ];
    // Each prepay holds its connection for 2 s at the channel (under the channel timeout).
    app.faults(json!({"prepay_delay_ms": 2000})).await;
    let app = std::sync::Arc::new(app);
    let busy: Vec<_> = orders
        .iter()
        .map(|o| {
            let (app, id) = (app.clone(), o["id"].as_str().unwrap().to_owned());
            tokio::spawn(async move { app.prepay(&id, "sandbox").await.status() })
        })
        .collect();
    // Both prepays are at the channel (it records an order before its delay), so both
    // connections are handling a request: waited for, not slept for, whatever the machine's load.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while app.ledger().await["orders"].as_array().map_or(0, Vec::len) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the prepays never reached the channel"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let addr = app.base.trim_start_matches("http://").to_owned();
    let answer = healthz_on_a_new_connection(&addr, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The busy connections were not cut: both prepays got their answer (whatever the channel
    // made of it; a cut connection fails the request, and the task with it).
    for task in busy {
        let status = task
            .await
            .expect("a busy connection was cut before its answer");
        assert!(status.is_success(), "{status}");
    }
    // On a connection of its own: the test client's pooled ones may have been closed to make
    // room, and a request sent on one as it closes would fail for a reason not under test.
    let metrics = reqwest::get(app.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("payonce_connections_waited_total") && !l.ends_with(" 0")),
        "the newcomer waited for a slot: {metrics}"
    );
}

/// `GET /healthz` on a connection of its own (`Connection: close`): the whole answer, read
/// within `within`.
async fn healthz_on_a_new_connection(addr: &str, within: Duration) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(within, stream.read_to_string(&mut answer))
        .await
        .expect("answered in time")
        .unwrap();
    answer
}

async fn bodies_and_media_types_are_checked_at_the_edge(b: Backend) {
    let Some(app) = spawn_app_with(b, AppOptions::frozen()).await else {
        return;
    };
    let before = app.counts().await;
    let post = |ct: Option<&'static str>, body: String| {
        let mut r = app
            .http
            .post(app.url("/v1/orders"))
            .bearer_auth(&app.secret)
            .body(body);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r.send()
    };
    let order =
        json!({"merchant_order_no": "EDGE", "amount": 1, "currency": "CNY", "subject": "s"})
            .to_string();
    // Not declared as JSON: 415.
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let r = post(ct, order.clone()).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        assert_eq!(
            r.json::<Value>().await.unwrap()["code"],
            "unsupported_media_type"
        );
    }
    // A key given twice: 400 (two readers of one body could disagree on the amount).
    let dup =
        r#"{"merchant_order_no":"EDGE","amount":1,"amount":100000,"currency":"CNY","subject":"s"}"#
            .to_owned();
    let r = post(Some("application/json"), dup).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(
        r.json::<Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("twice")
    );
    // 2 MB body: the 413 arrives (read and discarded), not a connection reset.
    let big = format!("{{\"subject\":\"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let r = post(Some("application/json"), big.clone())
        .await
        .expect("an answer, not a reset");
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // On a notification endpoint, in the channel's own failure format.
    let r = app
        .http
        .post(app.url("/notify/alipay"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(big)
        .send()
        .await
        .expect("an answer");
    assert_eq!(
        (r.status(), r.text().await.unwrap()),
        (StatusCode::PAYLOAD_TOO_LARGE, "fail".to_owned())
    );
    assert_eq!(app.counts().await, before, "nothing stored");
    // Security headers.
    let r = app.get("/v1/orders?merchant_order_no=x").await;
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    // The docs allow their own script only; the console (here its sign-in page, where /console
    // leads without a session) allows no script at all.
    for (page, script) in [
        ("/console", "script-src 'none'"),
        ("/docs", "script-src 'self';"),
    ] {
        let r = app.http.get(app.url(page)).send().await.unwrap();
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            csp.contains("frame-ancestors 'none'") && csp.contains(script),
            "{page}: {csp}"
        );
        assert!(
            !r.text().await.unwrap().contains("<script>"),
            "{page}: no inline script"
        );
    }
}

async fn metrics_can_require_a_token(b: Backend) {
    let opts = AppOptions {
        metrics_token: Some("m-secret".into()),
        ..AppOptions::frozen()
    };
    let Some(app) = spawn_app_with(b, opts).await else {
        return;
    };
    assert_eq!(
        app.http
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.http
            .get(app.url("/metrics"))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let r = app
        .http
        .get(app.url("/metrics"))
        .bearer_auth("m-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// Redis for the tests that need it: with CI=true it must answer; off CI, a loud skip.
async fn redis_or_skip() -> Option<&'static str> {
    const URL: &str = "redis://127.0.0.1:6379";
    match tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect("127.0.0.1:6379"),
    )
    .await
    {
        Ok(Ok(_)) => Some(URL),
        _ if payonce_testkit::db::on_ci() => panic!("Redis unreachable with CI=true"),
        _ => {
            eprintln!("\n!!! SKIPPING: Redis unreachable on 127.0.0.1:6379\n");
            None
        }
    }
}

/// With `--redis-url` an app's bucket is one for all instances: what another instance took is
/// gone for this one. And when Redis stops answering, each instance limits with its own
/// bucket: requests are still served (never a 5xx), still limited.
async fn with_redis_the_rate_is_shared_by_every_instance(b: Backend) {
    let Some(redis) = redis_or_skip().await else {
        return;
    };
    // Through a proxy, so the test can take Redis away from this instance alone.
    let proxy = payonce_testkit::proxy::Proxy::start("127.0.0.1:6379", true)
        .await
        .unwrap();
    let spec = RateSpec {
        per_second: 1,
        burst: 5,
    };
    let opts = AppOptions {
        rate_limit: Some(spec),
        redis_url: Some(format!("redis://{}", proxy.addr)),
        ..AppOptions::frozen()
    };
    let Some(app) = spawn_app_with(b, opts).await else {
        return;
    };
    // Another instance (its own connection to the same Redis) serves this app 4 requests.
    let other_instance = payonce_server::gateway::accelerator::Accelerator::connect(
        redis,
        std::sync::Arc::new(payonce_core::SystemClock),
    )
    .await
    .unwrap();
    for _ in 0..4 {
        assert_eq!(
            other_instance.take_token(&app.app_id, spec).await,
            Some(Ok(()))
        );
    }
    // One token is left for this instance, though its own bucket is untouched.
    assert_eq!(
        app.get("/v1/orders?merchant_order_no=nope").await.status(),
        StatusCode::NOT_FOUND
    );
    let r = app.get("/v1/orders?merchant_order_no=nope").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    assert!(
        matches!(
            other_instance.take_token(&app.app_id, spec).await,
            Some(Err(_))
        ),
        "the other instance sees the bucket empty too"
    );

    // Redis gone: this instance's own bucket (burst 5) takes over.
    proxy.set_up(false);
    proxy.cut_all();
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(app.get("/v1/orders?merchant_order_no=nope").await.status());
    }
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::NOT_FOUND || *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&StatusCode::NOT_FOUND),
        "served without Redis: {statuses:?}"
    );
    assert_eq!(
        statuses.last(),
        Some(&StatusCode::TOO_MANY_REQUESTS),
        "still limited without Redis: {statuses:?}"
    );
}
