//! RabbitMQ and NATS JetStream sinks against the real brokers on this machine: events arrive
//! with the event id (AMQP `message_id`, `Nats-Msg-Id`); with the broker down they are retried,
//! not lost; JetStream drops a re-publish of the same id; two apps' events stay apart (the app
//! in the subject / routing key and the body, each signed with its own app's secret, judged by
//! the official Standard Webhooks library). With CI=true a broker that is not reachable fails
//! the test.

use lapin::options::{
    BasicAckOptions, BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use payonce_server::sinks::SinkConfig;
use payonce_testkit::app::spawn_app_with;
use payonce_testkit::proxy::Proxy;
use payonce_testkit::{AppOptions, Backend, TestApp};
use serde_json::Value;
use std::time::Duration;

const AMQP: &str = "127.0.0.1:5672";
const NATS: &str = "127.0.0.1:4222";

async fn reachable(addr: &str, what: &str) -> bool {
    match tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => true,
        _ if payonce_testkit::db::on_ci() => panic!("{what} unreachable at {addr} with CI=true"),
        _ => {
            eprintln!("\n!!! SKIPPING the {what} sink test: {addr} unreachable\n");
            false
        }
    }
}

fn rand_tag() -> String {
    payonce_core::EventId::new().as_str()[20..].to_owned()
}

/// The business's trace every order here is created in: its messages carry it on.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

async fn pay(app: &TestApp, no: &str) -> String {
    let r = app
        .http
        .post(app.url("/v1/orders"))
        .bearer_auth(&app.secret)
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .json(&serde_json::json!({"merchant_order_no": no, "amount": 500, "currency": "CNY", "subject": "sink test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let p: Value = app.prepay(&id, "sandbox").await.json().await.unwrap();
    app.sim_pay("sandbox", p["out_trade_no"].as_str().unwrap(), false)
        .await;
    app.wait_order(&id, Duration::from_secs(10), |o| o["status"] == "paid")
        .await;
    id
}

/// Waits until the order's payment.succeeded event was attempted at least once and is still
/// pending (the broker is down), then returns it.
async fn retried_event(app: &TestApp, order: &str) -> payonce_store::EventRow {
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let evs = app
            .store
            .events_of(&payonce_core::OrderId::from_trusted(order.to_owned()))
            .await
            .unwrap();
        if let Some(e) = evs
            .into_iter()
            .find(|e| e.event_type == "payment.succeeded" && e.delivery_count >= 2)
        {
            assert_eq!(
                e.delivery_status,
                payonce_store::DeliveryStatus::Pending,
                "retried, not failed or lost"
            );
            return e;
        }
        assert!(tokio::time::Instant::now() < end, "no retry recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_delivered(app: &TestApp, id: &str) {
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    while app.store.event(id).await.unwrap().unwrap().delivery_status
        != payonce_store::DeliveryStatus::Delivered
    {
        assert!(tokio::time::Instant::now() < end, "not delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn rabbitmq(b: Backend) {
    if !reachable(AMQP, "RabbitMQ").await {
        return;
    }
    let exchange = format!("payonce.test.{}", rand_tag());
    // The business's side: a queue bound to every event type.
    let conn = Connection::connect(
        &format!("amqp://guest:guest@{AMQP}/%2f"),
        ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_declare(
        exchange.clone().into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.queue_bind(
        q.name().clone(),
        exchange.clone().into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();

    let proxy = Proxy::start(AMQP, false).await.unwrap();
    let opts = AppOptions {
        sinks: SinkConfig {
            rabbitmq: Some((
                format!("amqp://guest:guest@{}/%2f", proxy.addr),
                exchange.clone(),
            )),
            nats: None,
        },
        sink: Some("rabbitmq".into()),
        webhook_schedule: Some(vec![Duration::from_secs(1); 50]),
        ..Default::default()
    };
    let Some(app) = spawn_app_with(b, opts).await else {
        return;
    };
    let order = pay(&app, "MQ-1").await;
    let ev = retried_event(&app, &order).await; // broker down: retried
    proxy.set_up(true);
    wait_delivered(&app, &ev.id).await;
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    let msg = loop {
        if let Some(m) = ch
            .basic_get(q.name().clone(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            break m;
        }
        assert!(tokio::time::Instant::now() < end, "nothing on the queue");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        msg.properties.message_id().as_ref().map(|s| s.to_string()),
        Some(ev.id.clone()),
        "message_id is the event id"
    );
    assert_eq!(
        msg.routing_key.as_str(),
        format!("{}.payment.succeeded", app.app_id)
    );
    let traceparent = msg
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("traceparent").cloned());
    assert!(
        matches!(&traceparent, Some(lapin::types::AMQPValue::LongString(t)) if t.to_string().contains(TRACE_ID)),
        "the business's trace goes on: {traceparent:?}"
    );
    let body: Value = serde_json::from_slice(&msg.data).unwrap();
    assert_eq!(body["id"], ev.id.as_str());
    msg.ack(BasicAckOptions::default()).await.unwrap();
    let _ = ch
        .exchange_delete(exchange.into(), Default::default())
        .await;
}

async fn nats(b: Backend) {
    if !reachable(NATS, "NATS").await {
        return;
    }
    let tag = rand_tag();
    let (stream, prefix) = (
        format!("PAYONCE_T{}", tag.to_uppercase()),
        format!("payonce.t{tag}"),
    );
    let proxy = Proxy::start(NATS, false).await.unwrap();
    let opts = AppOptions {
        sinks: SinkConfig {
            rabbitmq: None,
            nats: Some((proxy.addr.clone(), stream.clone(), prefix.clone())),
        },
        sink: Some("nats".into()),
        webhook_schedule: Some(vec![Duration::from_secs(1); 50]),
        ..Default::default()
    };
    let Some(app) = spawn_app_with(b, opts).await else {
        return;
    };
    let order = pay(&app, "NATS-1").await;
    let ev = retried_event(&app, &order).await;
    proxy.set_up(true);
    wait_delivered(&app, &ev.id).await;
    // The business's side, read with the official client: the message in the stream, by
    // sequence, with its id header.
    let client = async_nats::connect(NATS).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut s = js.get_stream(&stream).await.unwrap();
    let msg = s.get_raw_message(1).await.unwrap();
    assert_eq!(
        msg.headers.get("Nats-Msg-Id").map(|v| v.as_str()),
        Some(ev.id.as_str())
    );
    let traceparent = msg
        .headers
        .get("traceparent")
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    assert!(
        traceparent.starts_with(&format!("00-{TRACE_ID}-")),
        "the business's trace goes on: {traceparent:?}"
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&msg.payload).unwrap()["id"],
        ev.id.as_str()
    );
    assert_eq!(
        msg.subject.as_str(),
        format!("{prefix}.{}.payment.succeeded", app.app_id)
    );
    // A resend publishes the same id again: JetStream's de-duplication keeps one message.
    app.http
        .post(app.url(&format!("/admin/v1/events/{}/resend", ev.id)))
        .bearer_auth("test-admin-token")
        .send()
        .await
        .unwrap();
    wait_delivered(&app, &ev.id).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let info = s.info().await.unwrap();
    assert_eq!(info.state.messages, 1, "de-duplicated by Nats-Msg-Id");
    let _ = js.delete_stream(&stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_sink_sqlite() {
    rabbitmq(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_sink_postgres() {
    rabbitmq(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_sink_sqlite() {
    nats(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_sink_postgres() {
    nats(Backend::Postgres).await
}

/// One tenant of a two-app test: its id, API secret and webhook signing secret.
struct Tenant {
    app_id: String,
    secret: String,
    webhook_secret: String,
}

/// The test app and a second app on the same sink, each closing an order with the same
/// `merchant_order_no` — the case the review found indistinguishable on the broker.
async fn two_tenants_close_the_same_order_no(app: &TestApp, sink: &str) -> [Tenant; 2] {
    let other = app.another_app("other-shop", None, Some(sink)).await;
    let tenants = [
        Tenant {
            app_id: app.app_id.clone(),
            secret: app.secret.clone(),
            webhook_secret: app.webhook_secret.clone(),
        },
        Tenant {
            app_id: other.app_id.to_string(),
            secret: other.secret,
            webhook_secret: other.webhook_secret,
        },
    ];
    for t in &tenants {
        let r = app.http.post(app.url("/v1/orders")).bearer_auth(&t.secret).json(&serde_json::json!({"merchant_order_no": "SAME-1", "amount": 100, "currency": "CNY", "subject": "tenants"})).send().await.unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::CREATED);
        let id = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let r = app
            .http
            .post(app.url(&format!("/v1/orders/{id}/close")))
            .bearer_auth(&t.secret)
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "close: {}", r.status());
    }
    tenants
}

/// One message as the business receives it: where it was routed, its headers, its body.
struct Received {
    key: String,
    headers: std::collections::BTreeMap<String, String>,
    body: String,
}

/// The Standard Webhooks signature recomputed here, by hand (not payonce's `sign`): base64
/// HMAC-SHA256 of `id.timestamp.body` under the base64 key after `whsec_`.
fn hmac_by_hand(
    secret: &str,
    headers: &std::collections::BTreeMap<String, String>,
    body: &str,
) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(secret.trim_start_matches("whsec_")).unwrap();
    let signed = format!(
        "{}.{}.{body}",
        headers["webhook-id"], headers["webhook-timestamp"]
    );
    let tag = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key),
        signed.as_bytes(),
    );
    format!("v1,{}", b64.encode(tag.as_ref()))
}

/// Both apps' `payment.closed`, received: on distinct keys (`key_of(app id)`), each naming its
/// app in the body, signed with its own app's secret and not the other's — judged by hand and
/// by the official `standardwebhooks` library.
fn judge_tenants_apart(tenants: &[Tenant; 2], got: &[Received], key_of: impl Fn(&str) -> String) {
    let closed: Vec<&Received> = got
        .iter()
        .filter(|m| serde_json::from_str::<Value>(&m.body).unwrap()["type"] == "payment.closed")
        .collect();
    assert_eq!(
        closed.len(),
        2,
        "one payment.closed per app: {:?}",
        got.iter().map(|m| &m.key).collect::<Vec<_>>()
    );
    let mut deliveries = vec![];
    for (i, t) in tenants.iter().enumerate() {
        let other = &tenants[1 - i];
        let m = closed
            .iter()
            .find(|m| m.key == key_of(&t.app_id))
            .unwrap_or_else(|| {
                panic!(
                    "nothing on {}: {:?}",
                    key_of(&t.app_id),
                    closed.iter().map(|m| &m.key).collect::<Vec<_>>()
                )
            });
        let body: Value = serde_json::from_str(&m.body).unwrap();
        assert_eq!(
            body["app_id"],
            t.app_id.as_str(),
            "the payload names its app"
        );
        assert_eq!(
            m.headers["webhook-id"],
            body["id"].as_str().unwrap(),
            "webhook-id is the event id"
        );
        let sig = &m.headers["webhook-signature"];
        assert!(
            sig.split(' ')
                .any(|s| s == hmac_by_hand(&t.webhook_secret, &m.headers, &m.body)),
            "signed with its app's secret: {sig}"
        );
        assert!(
            !sig.split(' ')
                .any(|s| s == hmac_by_hand(&other.webhook_secret, &m.headers, &m.body)),
            "not with the other app's"
        );
        let headers: std::collections::BTreeMap<_, _> = m
            .headers
            .iter()
            .filter(|(k, _)| k.starts_with("webhook-"))
            .collect();
        deliveries.push(serde_json::json!({"headers": headers, "body": m.body, "secrets": [t.webhook_secret], "wrong_secrets": [other.webhook_secret]}));
    }
    verify_with_standardwebhooks(deliveries);
}

/// The official library (PyPI `standardwebhooks`) over the messages; on CI its absence fails.
fn verify_with_standardwebhooks(deliveries: Vec<Value>) {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if payonce_testkit::db::on_ci() {
            panic!(
                "python3 standardwebhooks is required with CI=true (pip install -r tests/sdk/requirements.txt)"
            );
        }
        eprintln!(
            "\n!!! SKIPPING the standardwebhooks check: pip install -r tests/sdk/requirements.txt\n"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("messages.json");
    std::fs::write(
        &file,
        serde_json::json!({ "deliveries": deliveries }).to_string(),
    )
    .unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/sdk/verify_webhooks.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "standardwebhooks refused: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two apps on one RabbitMQ exchange: routing keys `<app id>.payment.closed`, a queue bound
/// with one app's `<app id>.#` gets that app's events only, and the documented binding for
/// consumers of every app (`*.payment.#`) still gets both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_keeps_tenants_apart() {
    if !reachable(AMQP, "RabbitMQ").await {
        return;
    }
    let exchange = format!("payonce.tenants.{}", rand_tag());
    let conn = Connection::connect(
        &format!("amqp://guest:guest@{AMQP}/%2f"),
        ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_declare(
        exchange.clone().into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let queue = |binding: String| {
        let (ch, exchange) = (ch.clone(), exchange.clone());
        async move {
            let q = ch
                .queue_declare(
                    "".into(),
                    QueueDeclareOptions {
                        exclusive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .unwrap();
            ch.queue_bind(
                q.name().clone(),
                exchange.into(),
                binding.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
            q.name().to_string()
        }
    };
    let all = queue("*.payment.#".into()).await;
    let opts = AppOptions {
        sinks: SinkConfig {
            rabbitmq: Some((format!("amqp://guest:guest@{AMQP}/%2f"), exchange.clone())),
            nats: None,
        },
        sink: Some("rabbitmq".into()),
        ..Default::default()
    };
    let Some(app) = spawn_app_with(Backend::Sqlite, opts).await else {
        return;
    };
    // The first app's own queue, bound before anything is published.
    let own = queue(format!("{}.#", app.app_id)).await;
    let tenants = two_tenants_close_the_same_order_no(&app, "rabbitmq").await;
    let drain = |name: String, n: usize| {
        let ch = ch.clone();
        async move {
            let mut got = vec![];
            let end = tokio::time::Instant::now() + Duration::from_secs(20);
            while got.len() < n && tokio::time::Instant::now() < end {
                match ch
                    .basic_get(name.clone().into(), BasicGetOptions { no_ack: true })
                    .await
                    .unwrap()
                {
                    Some(m) => {
                        let headers = m
                            .properties
                            .headers()
                            .as_ref()
                            .map(|h| {
                                h.inner()
                                    .iter()
                                    .filter_map(|(k, v)| match v {
                                        lapin::types::AMQPValue::LongString(s) => {
                                            Some((k.to_string(), s.to_string()))
                                        }
                                        _ => None,
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        got.push(Received {
                            key: m.routing_key.to_string(),
                            headers,
                            body: String::from_utf8(m.data.clone()).unwrap(),
                        });
                    }
                    None => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
            got
        }
    };
    let got = drain(all, 2).await;
    judge_tenants_apart(&tenants, &got, |app_id| format!("{app_id}.payment.closed"));
    // The first app's queue: its event, and (after a moment for a stray one) nothing else.
    let mine = drain(own.clone(), 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let more = ch
        .basic_get(own.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap();
    assert_eq!(mine.len(), 1, "the app's own queue got its event");
    assert!(more.is_none(), "and nothing of the other app's");
    assert_eq!(
        serde_json::from_str::<Value>(&mine[0].body).unwrap()["app_id"],
        tenants[0].app_id.as_str()
    );
    let _ = ch
        .exchange_delete(exchange.into(), Default::default())
        .await;
}

/// Two apps on one JetStream stream: subjects `<prefix>.<app id>.payment.closed`, each message
/// naming and signed for its own app; during a rotation of one app's secret, signed with both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_keeps_tenants_apart() {
    if !reachable(NATS, "NATS").await {
        return;
    }
    let tag = rand_tag();
    let (stream, prefix) = (
        format!("PAYONCE_N{}", tag.to_uppercase()),
        format!("payonce.n{tag}"),
    );
    let opts = AppOptions {
        sinks: SinkConfig {
            rabbitmq: None,
            nats: Some((NATS.to_owned(), stream.clone(), prefix.clone())),
        },
        sink: Some("nats".into()),
        ..Default::default()
    };
    let Some(app) = spawn_app_with(Backend::Sqlite, opts).await else {
        return;
    };
    let tenants = two_tenants_close_the_same_order_no(&app, "nats").await;
    let js = async_nats::jetstream::new(async_nats::connect(NATS).await.unwrap());
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    let got = loop {
        let mut got = vec![];
        if let Ok(mut s) = js.get_stream(&stream).await {
            let last = s.info().await.unwrap().state.last_sequence;
            for seq in 1..=last {
                if let Ok(m) = s.get_raw_message(seq).await {
                    let headers = m
                        .headers
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.to_string(),
                                v.first().map(|v| v.as_str().to_owned()).unwrap_or_default(),
                            )
                        })
                        .collect();
                    got.push(Received {
                        key: m.subject.to_string(),
                        headers,
                        body: String::from_utf8(m.payload.to_vec()).unwrap(),
                    });
                }
            }
        }
        if got.len() >= 2 || tokio::time::Instant::now() >= end {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    judge_tenants_apart(&tenants, &got, |app_id| {
        format!("{prefix}.{app_id}.payment.closed")
    });

    // A rotation of the first app's secret: its next message carries both signatures, as a
    // webhook would, so consumers holding either secret keep verifying.
    let rot = app
        .http
        .post(app.url(&format!(
            "/admin/v1/apps/{}/rotate-webhook-secret",
            app.app_id
        )))
        .bearer_auth("test-admin-token")
        .send()
        .await
        .unwrap();
    assert_eq!(rot.status(), reqwest::StatusCode::OK);
    let new_secret = rot.json::<Value>().await.unwrap()["webhook_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let order = app.create_order("SAME-2", 100).await;
    app.post(
        &format!("/v1/orders/{}/close", order["id"].as_str().unwrap()),
        serde_json::json!({}),
    )
    .await;
    let s = js.get_stream(&stream).await.unwrap();
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    let m = loop {
        let m = s.get_raw_message(3).await;
        if let Ok(m) = m {
            break m;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "no message after the rotation"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        m.subject.as_str(),
        format!("{prefix}.{}.payment.closed", app.app_id)
    );
    let headers: std::collections::BTreeMap<String, String> = m
        .headers
        .iter()
        .filter(|(k, _)| k.to_string().starts_with("webhook-"))
        .map(|(k, v)| {
            (
                k.to_string(),
                v.first().map(|v| v.as_str().to_owned()).unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        headers["webhook-signature"].split(' ').count(),
        2,
        "two signatures during a rotation"
    );
    let body = String::from_utf8(m.payload.to_vec()).unwrap();
    verify_with_standardwebhooks(vec![
        serde_json::json!({"headers": headers, "body": body, "secrets": [new_secret, tenants[0].webhook_secret], "wrong_secrets": [tenants[1].webhook_secret]}),
    ]);
    let _ = js.delete_stream(&stream).await;
}

/// Cuts every connection through `proxy` every 60 ms until aborted.
fn cut_every_60ms(
    proxy: std::sync::Arc<Proxy>,
    cuts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(60));
        loop {
            every.tick().await;
            proxy.cut_all();
            cuts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    })
}

/// Twenty payments (each announced by an event) while connections are being cut, a little
/// more cutting into the deliveries, then waits until every event is delivered; their ids.
async fn pay_twenty_while_cutting(
    app: TestApp,
    proxy: std::sync::Arc<Proxy>,
    prefix: &str,
) -> (
    std::sync::Arc<TestApp>,
    std::collections::BTreeSet<String>,
    usize,
) {
    let cuts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cutter = cut_every_60ms(proxy, cuts.clone());
    let app = std::sync::Arc::new(app);
    let mut payments = tokio::task::JoinSet::new();
    for i in 0..20 {
        let (app, no) = (app.clone(), format!("{prefix}-{i}"));
        payments.spawn(async move { pay(&app, &no).await });
    }
    while let Some(r) = payments.join_next().await {
        r.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    cutter.abort();
    let stopped = payonce_core::Clock::now(&payonce_core::SystemClock);
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let events = app.store.list_events(None, 1000).await.unwrap();
        let pending = events
            .iter()
            .filter(|e| e.delivery_status != payonce_store::DeliveryStatus::Delivered)
            .count();
        if pending == 0 && events.len() >= 20 {
            let ids = events.into_iter().map(|e| e.id).collect();
            return (app, ids, cuts.load(std::sync::atomic::Ordering::Relaxed));
        }
        if tokio::time::Instant::now() >= end {
            let stuck: Vec<_> = events
                .iter()
                .filter(|e| e.delivery_status != payonce_store::DeliveryStatus::Delivered)
                .map(|e| {
                    format!(
                        "{} {:?} tries={} next={:?} now={:?} error={:?}",
                        e.id,
                        e.delivery_status,
                        e.delivery_count,
                        e.next_attempt_at,
                        payonce_core::Clock::now(&payonce_core::SystemClock),
                        e.last_error
                    )
                })
                .collect();
            let first = events
                .iter()
                .find(|e| e.delivery_status != payonce_store::DeliveryStatus::Delivered)
                .unwrap();
            let tries: Vec<_> = app
                .store
                .delivery_attempts(&first.id)
                .await
                .unwrap()
                .iter()
                .map(|a| {
                    format!(
                        "{} {:?} {}ms",
                        a.attempted_at.0 - stopped.0,
                        a.error,
                        a.duration_ms
                    )
                })
                .collect();
            panic!(
                "{pending} events not delivered: {stuck:#?}\ntries of the first, ms after the cutting stopped: {tries:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// NATS connections cut again and again while events are being delivered: every event ends
/// delivered, and the stream holds each exactly once (JetStream de-duplicates the re-publishes
/// of an event whose acknowledgement was lost with its connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_connections_cut_during_delivery_lose_and_double_nothing() {
    if !reachable(NATS, "NATS").await {
        return;
    }
    let tag = rand_tag();
    let (stream, prefix) = (
        format!("PAYONCE_C{}", tag.to_uppercase()),
        format!("payonce.c{tag}"),
    );
    let proxy = Proxy::start(NATS, true).await.unwrap();
    let opts = AppOptions {
        sinks: SinkConfig {
            rabbitmq: None,
            nats: Some((proxy.addr.clone(), stream.clone(), prefix.clone())),
        },
        sink: Some("nats".into()),
        // 50 ms apart at ×100: a hundred retries outlast the cutting (shorter, and a burst of cuts
        // exhausts the schedule: the event fails, as it should, but the test is about recovery).
        webhook_schedule: Some(vec![Duration::from_secs(5); 100]),
        ..Default::default()
    };
    let Some(app) = spawn_app_with(Backend::Sqlite, opts).await else {
        return;
    };
    // Twenty payments, each an event, while the proxy cuts every connection every 150 ms.
    let (_app, expected, cuts) =
        pay_twenty_while_cutting(app, std::sync::Arc::new(proxy), "CUT").await;
    let js = async_nats::jetstream::new(async_nats::connect(NATS).await.unwrap());
    let mut s = js.get_stream(&stream).await.unwrap();
    let info = s.info().await.unwrap();
    eprintln!(
        "{cuts} cuts; {} events; {} messages in the stream",
        expected.len(),
        info.state.messages
    );
    assert_eq!(
        info.state.messages,
        expected.len() as u64,
        "each event exactly once in the stream"
    );
    let mut ids = std::collections::BTreeSet::new();
    for seq in 1..=info.state.last_sequence {
        if let Ok(m) = s.get_raw_message(seq).await {
            ids.insert(
                m.headers
                    .get("Nats-Msg-Id")
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default(),
            );
        }
    }
    assert_eq!(ids, expected, "the stream holds exactly the events, by id");
    let _ = js.delete_stream(&stream).await;
}

/// RabbitMQ connections cut every 60 ms while 20 payments are made and announced: every event
/// ends delivered (publisher-confirmed), and the business's queue receives every event id —
/// at least once (AMQP has no de-duplication; receivers de-duplicate by `message_id`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_connections_cut_during_delivery_lose_nothing() {
    if !reachable(AMQP, "RabbitMQ").await {
        return;
    }
    let exchange = format!("payonce.cut.{}", rand_tag());
    let conn = Connection::connect(
        &format!("amqp://guest:guest@{AMQP}/%2f"),
        ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_declare(
        exchange.clone().into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.queue_bind(
        q.name().clone(),
        exchange.clone().into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let proxy = std::sync::Arc::new(Proxy::start(AMQP, true).await.unwrap());
    let opts = AppOptions {
        sinks: SinkConfig {
            rabbitmq: Some((
                format!("amqp://guest:guest@{}/%2f", proxy.addr),
                exchange.clone(),
            )),
            nats: None,
        },
        sink: Some("rabbitmq".into()),
        // 50 ms apart at ×100: a hundred retries outlast the cutting (shorter, and a burst of cuts
        // exhausts the schedule: the event fails, as it should, but the test is about recovery).
        webhook_schedule: Some(vec![Duration::from_secs(5); 100]),
        ..Default::default()
    };
    let Some(app) = spawn_app_with(Backend::Sqlite, opts).await else {
        return;
    };
    let (_app, expected, _) = pay_twenty_while_cutting(app, proxy, "MQCUT").await;
    let mut received = std::collections::BTreeSet::new();
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while received != expected {
        assert!(
            tokio::time::Instant::now() < end,
            "missing on the queue: {:?}",
            expected.difference(&received).collect::<Vec<_>>()
        );
        match ch
            .basic_get(q.name().clone(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            Some(m) => {
                received.insert(
                    m.properties
                        .message_id()
                        .as_ref()
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                );
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let _ = ch
        .exchange_delete(exchange.into(), Default::default())
        .await;
}
