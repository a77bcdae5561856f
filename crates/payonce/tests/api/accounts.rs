//! Many merchants, one payonce (issue 23): apps bound to different channel accounts pay and
//! refund through their own merchant; a genuine notification of one merchant never touches
//! another's order (I9); a binding moves new payments only; the admin API lists accounts by
//! public facts alone. The simulator plays two merchants per channel (`--merchants 2`).

use crate::assert_invariants;
use payonce_core::ChannelName;
use payonce_testkit::forge::{WxFault, WxMerchant, wechat_paid_by};
use payonce_testkit::{AppOptions, Backend, TestApp, spawn_app_with, store_tests};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

store_tests!(
    apps_on_two_merchants_pay_and_refund_each_through_its_own,
    a_genuine_notification_of_one_merchant_never_pays_anothers_order,
    a_new_binding_moves_new_payments_and_old_attempts_stay_with_their_merchant,
    the_admin_api_lists_accounts_by_public_facts_and_checks_bindings,
    each_merchant_is_reconciled_against_its_own_bill,
    an_account_added_at_runtime_is_checked_sealed_and_used_by_every_instance,
    sub_merchants_of_one_provider_pay_refund_and_never_touch_each_other,
    a_sub_merchant_added_at_runtime_pays_through_its_provider
);

/// A server whose simulator plays two merchants per channel, its test app bound to `m2` on
/// WeChat Pay and Alipay (m1 is every channel's default).
async fn two_merchants(b: Backend) -> Option<TestApp> {
    spawn_app_with(
        b,
        AppOptions {
            sim_merchants: 2,
            accounts: vec![
                (ChannelName::Wechatpay, "m2".into()),
                (ChannelName::Alipay, "m2".into()),
            ],
            ..Default::default()
        },
    )
    .await
}

async fn admin(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = app
        .http
        .request(method, app.url(path))
        .bearer_auth("test-admin-token");
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The simulator's order `channel`/`out_trade_no` as `/sim/ledger` lists it.
async fn ledger_order(app: &TestApp, channel: &str, out_trade_no: &str) -> Value {
    let ledger = app.ledger().await;
    ledger["orders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["channel"] == channel && o["out_trade_no"] == out_trade_no)
        .cloned()
        .unwrap_or_else(|| panic!("{channel}/{out_trade_no} not at the simulator: {ledger}"))
}

/// Every channel order of `channel` at the simulator, by out_trade_no: its merchant.
async fn merchant_of(app: &TestApp, channel: &str, out_trade_no: &str) -> String {
    let ledger = app.ledger().await;
    ledger["orders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["channel"] == channel && o["out_trade_no"] == out_trade_no)
        .unwrap_or_else(|| panic!("{channel}/{out_trade_no} not at the simulator: {ledger}"))["merchant"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn prepaid(app: &TestApp, merchant_no: &str, channel: &str) -> (String, Value) {
    let order = app.create_order(merchant_no, 300).await;
    let id = order["id"].as_str().unwrap().to_owned();
    let r = app.prepay(&id, channel).await;
    assert_eq!(r.status(), StatusCode::OK, "{channel} prepay");
    (id, r.json().await.unwrap())
}

async fn apps_on_two_merchants_pay_and_refund_each_through_its_own(b: Backend) {
    let Some(app) = two_merchants(b).await else {
        return;
    };
    for channel in ["wechatpay", "alipay"] {
        let (id, p) = prepaid(&app, &format!("ACC-{channel}"), channel).await;
        let no = p["out_trade_no"].as_str().unwrap();
        assert_eq!(
            merchant_of(&app, channel, no).await,
            "m2",
            "{channel}: the app's account"
        );
        // The payer pays; the notification goes to m2's own address and pays the order.
        assert_eq!(app.sim_pay(channel, no, false).await, StatusCode::OK);
        let o = app
            .wait_order(&id, Duration::from_secs(20), |o| o["status"] == "paid")
            .await;
        assert_eq!(o["status"], "paid", "{channel}: paid through m2");
        let r = app
            .post(
                &format!("/v1/orders/{id}/refunds"),
                json!({"merchant_refund_no": format!("R-{channel}"), "amount": 100}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "{channel} refund");
        let ledger = app.ledger().await;
        let refund = ledger["refunds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["channel"] == channel && r["out_trade_no"] == no)
            .cloned();
        let refund = match refund {
            Some(r) => r,
            None => {
                // The refund worker sends it when the endpoint's own call was not final.
                app.run_workers().await;
                app.ledger().await["refunds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|r| r["channel"] == channel && r["out_trade_no"] == no)
                    .cloned()
                    .expect("the refund reached the channel")
            }
        };
        assert_eq!(
            refund["merchant"], "m2",
            "{channel}: refunded by the merchant that took it"
        );
    }
    // A second app, unbound: the channels' default account (m1).
    let other = app.another_app("second-shop", None, None).await;
    let r = app
        .http
        .post(app.url("/v1/orders"))
        .bearer_auth(&other.secret)
        .json(&json!({"merchant_order_no": "ACC-2", "amount": 200, "currency": "CNY", "subject": "t"}))
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let p: Value = app
        .http
        .post(app.url(&format!("/v1/orders/{id}/prepay")))
        .bearer_auth(&other.secret)
        .json(&json!({"channel": "wechatpay"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let no = p["out_trade_no"].as_str().unwrap();
    assert_eq!(merchant_of(&app, "wechatpay", no).await, "m1");
    app.notifications_settled(Duration::from_secs(20)).await;
    assert_invariants(app.violations().await);
}

async fn a_genuine_notification_of_one_merchant_never_pays_anothers_order(b: Backend) {
    let Some(app) = two_merchants(b).await else {
        return;
    };
    let (id, p) = prepaid(&app, "ISO-1", "wechatpay").await;
    let no = p["out_trade_no"].as_str().unwrap().to_owned();
    let dir = app.sim_dir();
    let (m1, m2) = (
        WxMerchant::of_account(&dir, "m1"),
        WxMerchant::of_account(&dir, "m2"),
    );
    let before = app.counts().await;
    // Merchant m1's genuine message (its APIv3 key, its mchid, the platform's signature) naming
    // m2's channel order: at m1's address, at the shared address, and at m2's address.
    let of_m1 = wechat_paid_by(&dir, &m1, "EV-ISO-1", &no, 300, 300, WxFault::None);
    for path in ["wechatpay/m1", "wechatpay", "wechatpay/m2"] {
        let (status, body) = app.deliver(path, &of_m1).await;
        assert_ne!(status, StatusCode::OK, "{path}: refused ({body})");
        assert_ne!(status, StatusCode::NO_CONTENT, "{path}: refused ({body})");
    }
    let o: Value = app
        .get(&format!("/v1/orders/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(o["status"], "paying", "m2's order untouched: {o}");
    // Recorded for a person, once per message that reached the order; nothing else changed.
    let abnormal = app.state.store.abnormal_open().await.unwrap();
    let mismatches: Vec<_> = abnormal
        .iter()
        .filter(|a| a.kind == "notification_account_mismatch")
        .collect();
    assert_eq!(
        mismatches.len(),
        2,
        "at m1's address and at the shared one: {abnormal:?}"
    );
    assert!(
        mismatches[0].detail.contains("account m1") && mismatches[0].detail.contains("account m2")
    );
    let after = app.counts().await;
    for ((table, n0), (_, n1)) in before.iter().zip(after.iter()) {
        if *table != "abnormal" {
            assert_eq!(n0, n1, "{table} changed");
        }
    }
    // Counted under the account whose keys verified it (the registry is the process's: other
    // tests' refusals may add to it).
    let metrics = app.metrics_text().await;
    let counted = metrics
        .lines()
        .find(|l| {
            l.starts_with("payonce_notifications_total{")
                && l.contains(r#"channel="wechatpay""#)
                && l.contains(r#"account="m1""#)
                && l.contains(r#"outcome="account_mismatch""#)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok());
    assert!(counted.is_some_and(|n| n >= 2.0), "counted: {counted:?}");
    // m2's own message for its own order, at its own address: applied.
    let of_m2 = wechat_paid_by(&dir, &m2, "EV-ISO-2", &no, 300, 300, WxFault::None);
    let (status, body) = app.deliver("wechatpay/m2", &of_m2).await;
    assert!(
        status.is_success(),
        "m2's own notification: {status} {body}"
    );
    let o: Value = app
        .get(&format!("/v1/orders/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(o["status"], "paid");
}

async fn a_new_binding_moves_new_payments_and_old_attempts_stay_with_their_merchant(b: Backend) {
    let Some(app) = two_merchants(b).await else {
        return;
    };
    let (first, p) = prepaid(&app, "BIND-1", "wechatpay").await;
    let first_no = p["out_trade_no"].as_str().unwrap().to_owned();
    assert_eq!(merchant_of(&app, "wechatpay", &first_no).await, "m2");
    let (status, body) = admin(
        &app,
        reqwest::Method::PUT,
        &format!("/admin/v1/apps/{}/channel-accounts/wechatpay", app.app_id),
        Some(json!({"account": "m1"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["account"], "m1");
    let (_, p) = prepaid(&app, "BIND-2", "wechatpay").await;
    let second_no = p["out_trade_no"].as_str().unwrap();
    assert_eq!(
        merchant_of(&app, "wechatpay", second_no).await,
        "m1",
        "new payments: m1"
    );
    // The first order's prepay again: its attempt stays at m2 (the same channel order).
    let again: Value = app.prepay(&first, "wechatpay").await.json().await.unwrap();
    assert_eq!(again["out_trade_no"], first_no.as_str());
    // Paid at m2 after the rebinding: the notification comes to m2's address, and applies.
    assert_eq!(
        app.sim_pay("wechatpay", &first_no, false).await,
        StatusCode::OK
    );
    let o = app
        .wait_order(&first, Duration::from_secs(20), |o| o["status"] == "paid")
        .await;
    assert_eq!(o["status"], "paid");
    // Back to the default (null): m1 is the default, so nothing moves; an unknown name is
    // refused and changes nothing.
    let (status, body) = admin(
        &app,
        reqwest::Method::PUT,
        &format!("/admin/v1/apps/{}/channel-accounts/wechatpay", app.app_id),
        Some(json!({"account": "m9"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "unknown_account");
    let (status, _) = admin(
        &app,
        reqwest::Method::PUT,
        &format!("/admin/v1/apps/{}/channel-accounts/wechatpay", app.app_id),
        Some(json!({"account": null})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    app.notifications_settled(Duration::from_secs(20)).await;
    assert_invariants(app.violations().await);
}

async fn the_admin_api_lists_accounts_by_public_facts_and_checks_bindings(b: Backend) {
    let Some(app) = two_merchants(b).await else {
        return;
    };
    let (status, list) = admin(
        &app,
        reqwest::Method::GET,
        "/admin/v1/channel-accounts",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let items = list["items"].as_array().unwrap();
    for channel in ["wechatpay", "alipay", "unionpay"] {
        let names: Vec<&str> = items
            .iter()
            .filter(|a| a["channel"] == channel)
            .map(|a| a["name"].as_str().unwrap())
            .collect();
        // WeChat and Alipay add the simulator's service provider and its two sub-merchants.
        let expected: &[&str] = if channel == "unionpay" {
            &["m1", "m2"]
        } else {
            &["m1", "m2", "sp", "sub1", "sub2"]
        };
        assert_eq!(names, expected, "{channel}");
    }
    let m2 = items
        .iter()
        .find(|a| a["channel"] == "wechatpay" && a["name"] == "m2")
        .unwrap();
    assert_eq!(m2["source"], "file");
    assert_eq!(m2["enabled"], true);
    assert_eq!(m2["loaded"], true);
    assert_eq!(m2["is_default"], false);
    assert!(
        m2["notify_url"]
            .as_str()
            .unwrap()
            .ends_with("/notify/wechatpay/m2")
    );
    assert!(!m2["fingerprints"].as_array().unwrap().is_empty());
    // Not a byte of any secret: the APIv3 keys and private keys of every merchant.
    let text = list.to_string();
    let dir = app.sim_dir();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with("apiv3.key") || name.ends_with("key.pem") {
            let secret = std::fs::read_to_string(&path).unwrap();
            let core = secret
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>();
            assert!(!text.contains(core.trim()), "{name} leaked");
        }
    }
    // The binding is checked against the accounts the database knows.
    let (status, body) = admin(
        &app,
        reqwest::Method::PUT,
        &format!("/admin/v1/apps/{}/channel-accounts/alipay", app.app_id),
        Some(json!({"account": "Not Valid!"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = admin(
        &app,
        reqwest::Method::PUT,
        "/admin/v1/apps/app_0190f1e2d3c4b5a69788796a5b4c3d2e/channel-accounts/alipay",
        Some(json!({"account": "m1"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let refused = payonce_server::engine::apps::create_app(
        app.state.store.as_ref(),
        &app.state.master_key,
        &payonce_core::SystemClock,
        payonce_server::engine::apps::NewApp {
            name: "typo",
            accounts: &[(ChannelName::Wechatpay, "m3".into())],
            ..Default::default()
        },
    )
    .await;
    assert!(
        refused.is_err_and(|e| e.to_string().contains("no wechatpay account named \"m3\"")),
        "apps create --account checks the name"
    );
}

async fn each_merchant_is_reconciled_against_its_own_bill(b: Backend) {
    let Some(app) = two_merchants(b).await else {
        return;
    };
    // One payment at m2 (the test app's account), one at m1 (a second, unbound app).
    let (id, p) = prepaid(&app, "REC-M2", "wechatpay").await;
    let no = p["out_trade_no"].as_str().unwrap().to_owned();
    assert_eq!(app.sim_pay("wechatpay", &no, false).await, StatusCode::OK);
    app.wait_order(&id, Duration::from_secs(20), |o| o["status"] == "paid")
        .await;
    let other = app.another_app("m1-shop", None, None).await;
    let call = |method: reqwest::Method, path: String, body: Value| {
        app.http
            .request(method, app.url(&path))
            .bearer_auth(&other.secret)
            .json(&body)
            .send()
    };
    let o: Value = call(
        reqwest::Method::POST,
        "/v1/orders".into(),
        json!({"merchant_order_no": "REC-M1", "amount": 500, "currency": "CNY", "subject": "t"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let other_id = o["id"].as_str().unwrap().to_owned();
    let p: Value = call(
        reqwest::Method::POST,
        format!("/v1/orders/{other_id}/prepay"),
        json!({"channel": "wechatpay"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let other_no = p["out_trade_no"].as_str().unwrap().to_owned();
    assert_eq!(merchant_of(&app, "wechatpay", &other_no).await, "m1");
    assert_eq!(
        app.sim_pay("wechatpay", &other_no, false).await,
        StatusCode::OK
    );
    for _ in 0..200 {
        let o: Value = call(
            reqwest::Method::GET,
            format!("/v1/orders/{other_id}"),
            json!({}),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        if o["status"] == "paid" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let today = payonce_server::engine::reconcile::beijing_date(payonce_core::Clock::now(
        &payonce_core::SystemClock,
    ));
    // Each account's bill holds its own payment only, and matches its own records: nothing
    // missing, nothing unknown, nobody to call.
    for (account, amount) in [("m1", 500), ("m2", 300)] {
        let (status, run) = admin(
            &app,
            reqwest::Method::POST,
            "/admin/v1/reconciliations",
            Some(json!({"channel": "wechatpay", "date": today, "account": account})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{run}");
        assert_eq!(run["account"], account);
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(run["summary"]["rows"], 1, "{account}: {run}");
        assert_eq!(run["summary"]["matched"], 1, "{account}: {run}");
        assert_eq!(run["summary"]["totals"]["paid"], amount, "{account}: {run}");
        let classes = run["summary"]["classes"].as_object().unwrap();
        assert!(classes.values().all(|n| n == 0), "{account}: {run}");
    }
    let (status, body) = admin(
        &app,
        reqwest::Method::POST,
        "/admin/v1/reconciliations",
        Some(json!({"channel": "wechatpay", "date": today, "account": "m7"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "unknown_account");
    assert_invariants(app.violations().await);
}

/// m2's WeChat identifiers and keys as the admin API takes them, read from the simulator's
/// state dir (the merchant's key files), with `tweak` applied.
fn m2_config(app: &TestApp, tweak: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let dir = app.sim_dir();
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let ids = read("wechatpay_ids");
    let mut c = json!({
        "channel": "wechatpay",
        "gateway": app.sim.base_url(),
        "mchid": "1900000002",
        "appid": "wxd678efh567hg0002",
        "merchant_serial_no": read("wechatpay_m2_serial").trim(),
        "merchant_key_pem": read("wechatpay_m2_merchant_key.pem"),
        "apiv3_key": read("wechatpay_m2_apiv3.key").trim(),
        "platform_public_key_pem": read("wechatpay_platform_public_key.pem"),
        "platform_public_key_id": ids.lines().nth(1).unwrap(),
    });
    tweak(c.as_object_mut().unwrap());
    c
}

async fn an_account_added_at_runtime_is_checked_sealed_and_used_by_every_instance(b: Backend) {
    // The channel knows two merchants; channels.toml lists m1 only.
    let Some(app) = spawn_app_with(
        b,
        AppOptions {
            sim_merchants: 2,
            sim_listed_merchants: Some(1),
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    // A key that is not the merchant's: WeChat refuses the signed call; kept, disabled, and
    // the answer says what is wrong.
    let wrong_key = m2_config(&app, |c| {
        c.insert(
            "merchant_key_pem".into(),
            json!(payonce_channels::crypto::RsaSigner::generate().to_pkcs8_pem()),
        );
    });
    let (status, body) = admin(
        &app,
        reqwest::Method::POST,
        "/admin/v1/channel-accounts",
        Some(json!({"name": "m2", "config": wrong_key})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "account_check_failed");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("merchant key does not match its serial"),
        "{body}"
    );
    // Answers signed by a key payonce was not given: refused as unverifiable.
    let unknown_platform = m2_config(&app, |c| {
        c.insert(
            "platform_public_key_pem".into(),
            json!(payonce_channels::crypto::RsaSigner::generate().public_key_pem()),
        );
    });
    let (status, body) = admin(
        &app,
        reqwest::Method::POST,
        "/admin/v1/channel-accounts",
        Some(json!({"name": "m2", "config": unknown_platform})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("could not be verified"),
        "{body}"
    );
    let (_, list) = admin(
        &app,
        reqwest::Method::GET,
        "/admin/v1/channel-accounts",
        None,
    )
    .await;
    let m2 = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["channel"] == "wechatpay" && a["name"] == "m2")
        .cloned()
        .expect("kept");
    assert_eq!(m2["enabled"], false);
    assert_eq!(m2["source"], "api");
    assert_eq!(m2["last_check"]["ok"], false);
    // The right keys: checked, sealed, enabled.
    let good = m2_config(&app, |_| {});
    let (status, body) = admin(
        &app,
        reqwest::Method::POST,
        "/admin/v1/channel-accounts",
        Some(json!({"name": "m2", "config": good})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["enabled"], true);
    assert_eq!(body["loaded"], true);
    assert_eq!(body["last_check"]["ok"], true);
    assert!(
        body["notify_url"]
            .as_str()
            .unwrap()
            .ends_with("/notify/wechatpay/m2")
    );
    let apiv3 = good["apiv3_key"].as_str().unwrap();
    let key_line = good["merchant_key_pem"]
        .as_str()
        .unwrap()
        .lines()
        .nth(1)
        .unwrap();
    assert!(!body.to_string().contains(apiv3) && !body.to_string().contains(key_line));
    // At rest: sealed; the row holds neither the APIv3 key nor the private key.
    let sealed = app.state.store.sealed_accounts().await.unwrap();
    let (_, secrets) = sealed.iter().find(|(r, _)| r.name == "m2").unwrap();
    for text in [&secrets.sealed, &secrets.data_key_enc] {
        assert!(!text.contains(apiv3) && !text.contains(key_line));
    }
    assert_eq!(secrets.master_key_id, app.state.master_key.id());
    // A file account cannot be replaced through the API.
    let (status, _) = admin(
        &app,
        reqwest::Method::POST,
        "/admin/v1/channel-accounts",
        Some(json!({"name": "m1", "config": m2_config(&app, |_| {})})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    // Another instance (same database, its own memory) picks it up without a restart.
    let other = app.state.restarted(
        app.state.store.clone(),
        payonce_channels::ChannelsConfig::load(&app.sim.channels_file)
            .unwrap()
            .build(Duration::from_secs(5), app.state.clock.clone())
            .unwrap(),
    );
    assert!(
        other
            .channels
            .account(ChannelName::Wechatpay, "m2")
            .is_none()
    );
    assert!(
        payonce_server::engine::accounts::reload(&other, false)
            .await
            .unwrap()
    );
    assert!(
        other
            .channels
            .account(ChannelName::Wechatpay, "m2")
            .is_some()
    );
    // Used: an app bound to it pays at merchant m2, through m2's notify address.
    let (status, _) = admin(
        &app,
        reqwest::Method::PUT,
        &format!("/admin/v1/apps/{}/channel-accounts/wechatpay", app.app_id),
        Some(json!({"account": "m2"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (id, p) = prepaid(&app, "LIVE-1", "wechatpay").await;
    let no = p["out_trade_no"].as_str().unwrap().to_owned();
    assert_eq!(merchant_of(&app, "wechatpay", &no).await, "m2");
    assert_eq!(app.sim_pay("wechatpay", &no, false).await, StatusCode::OK);
    let o = app
        .wait_order(&id, Duration::from_secs(20), |o| o["status"] == "paid")
        .await;
    assert_eq!(o["status"], "paid");
    // Disabled: new payments of its apps are refused, nothing is sent; enabled again after a
    // passing check.
    let (status, body) = admin(
        &app,
        reqwest::Method::POST,
        "/admin/v1/channel-accounts/wechatpay/m2/disable",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["enabled"], false);
    let before = app.ledger().await["prepay_requests"].clone();
    let order = app.create_order("LIVE-2", 100).await;
    let r = app.prepay(order["id"].as_str().unwrap(), "wechatpay").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        app.ledger().await["prepay_requests"],
        before,
        "nothing sent"
    );
    let (status, body) = admin(
        &app,
        reqwest::Method::POST,
        "/admin/v1/channel-accounts/wechatpay/m2/enable",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["enabled"], true);
    let r = app.prepay(order["id"].as_str().unwrap(), "wechatpay").await;
    assert_eq!(r.status(), StatusCode::OK);
    // The console lists the accounts with their fingerprints and last self-check, the app's
    // binding, and an order's timeline names the account its attempt was made through.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = browser
        .post(app.url("/console/sign-in"))
        .form(&[("token", "test-admin-token"), ("operator", "ops")])
        .send()
        .await
        .unwrap();
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = |path: String| {
        let (browser, cookie) = (browser.clone(), cookie.clone());
        let url = app.url(&path);
        async move {
            browser
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let home = page("/console".into()).await;
    let row = home
        .split("<tr id=\"account-wechatpay-m2\">")
        .nth(1)
        .expect("m2 listed")
        .split("</tr>")
        .next()
        .unwrap();
    assert!(
        row.contains("<code>1900000002</code>") && row.contains(">api<"),
        "{row}"
    );
    assert!(row.contains("enabled") && row.contains("passed: "), "{row}");
    assert!(row.contains("merchant key "), "{row}");
    assert!(row.contains("<td>merchant</td>"), "its kind: {row}");
    // The prepay just went through it: its last successful call is a time, not "—".
    let last_cell = row.rsplit("<td>").next().unwrap();
    assert!(last_cell.starts_with("20"), "last successful call: {row}");
    let sp_row = home
        .split("<tr id=\"account-wechatpay-sp\">")
        .nth(1)
        .expect("the provider listed")
        .split("</tr>")
        .next()
        .unwrap();
    assert!(sp_row.contains("<td>provider</td>"), "{sp_row}");
    let sub_row = home
        .split("<tr id=\"account-wechatpay-sub1\">")
        .nth(1)
        .expect("sub1 listed")
        .split("</tr>")
        .next()
        .unwrap();
    assert!(sub_row.contains("<td>sub-merchant of sp</td>"), "{sub_row}");
    assert!(home.contains("wechatpay=m2"), "the app's binding");
    let timeline = page(format!("/console/orders/{id}")).await;
    assert!(
        timeline.contains("prepay via wechatpay account m2"),
        "the timeline names it"
    );
    app.notifications_settled(Duration::from_secs(20)).await;
    assert_invariants(app.violations().await);
}

/// Service-provider mode, on WeChat Pay (服务商 `sp`, partner APIs) and Alipay (an ISV's app
/// `sp`, `app_auth_token`): an app on `sub1` and an app on `sub2` pay and refund each at its
/// own sub-merchant; sub1's genuine message (the provider's keys, the platform's signature,
/// sub1's `sub_mchid` / `auth_app_id`) never pays sub2's order though sub2's keys verify it;
/// the provider itself takes no payments.
async fn sub_merchants_of_one_provider_pay_refund_and_never_touch_each_other(b: Backend) {
    let Some(app) = spawn_app_with(
        b,
        AppOptions {
            sim_merchants: 2,
            accounts: vec![
                (ChannelName::Wechatpay, "sub1".into()),
                (ChannelName::Alipay, "sub1".into()),
            ],
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    // The accounts as the admin API lists them: the provider and its sub-merchants.
    let (status, list) = admin(
        &app,
        reqwest::Method::GET,
        "/admin/v1/channel-accounts",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let role = |channel: &str, name: &str| {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["channel"] == channel && a["name"] == name)
            .map(|a| {
                (
                    a["role"].clone(),
                    a["provider"].clone(),
                    a["merchant_id"].clone(),
                )
            })
            .unwrap_or_else(|| panic!("{channel}/{name} listed: {list}"))
    };
    for channel in ["wechatpay", "alipay"] {
        assert_eq!(role(channel, "sp").0, "provider");
    }
    assert_eq!(
        role("wechatpay", "sub1"),
        (json!("sub_merchant"), json!("sp"), json!("1900000109"))
    );
    assert_eq!(
        role("wechatpay", "sub2"),
        (json!("sub_merchant"), json!("sp"), json!("1900000110"))
    );
    assert_eq!(
        role("alipay", "sub1"),
        (
            json!("sub_merchant"),
            json!("sp"),
            json!("2021000000000901")
        )
    );

    // A second app, on sub2 of both channels.
    let other = app.another_app("sub2-shop", None, None).await;
    for channel in ["wechatpay", "alipay"] {
        let (status, body) = admin(
            &app,
            reqwest::Method::PUT,
            &format!("/admin/v1/apps/{}/channel-accounts/{channel}", other.app_id),
            Some(json!({"account": "sub2"})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let as_other = |path: &str, body: Value| {
        app.http
            .post(app.url(path))
            .bearer_auth(&other.secret)
            .json(&body)
            .send()
    };
    let order_of_other = |id: String| {
        let app = &app;
        let secret = other.secret.clone();
        async move {
            app.http
                .get(app.url(&format!("/v1/orders/{id}")))
                .bearer_auth(&secret)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let dir = app.sim_dir();
    for channel in ["wechatpay", "alipay"] {
        // sub1 pays and refunds through its provider.
        let (id1, p1) = prepaid(&app, &format!("SP-1-{channel}"), channel).await;
        let no1 = p1["out_trade_no"].as_str().unwrap().to_owned();
        let at = ledger_order(&app, channel, &no1).await;
        assert_eq!(
            (&at["merchant"], &at["sub_merchant"]),
            (&json!("sp"), &json!("sub1")),
            "{at}"
        );
        assert_eq!(app.sim_pay(channel, &no1, false).await, StatusCode::OK);
        let o = app
            .wait_order(&id1, Duration::from_secs(20), |o| o["status"] == "paid")
            .await;
        assert_eq!(
            o["status"], "paid",
            "{channel}: sub1's own notification paid it: {o}"
        );
        let r = app
            .post(
                &format!("/v1/orders/{id1}/refunds"),
                json!({"merchant_refund_no": format!("R-SP-{channel}"), "amount": 100}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        app.run_workers().await;
        let ledger = app.ledger().await;
        let refund = ledger["refunds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["out_trade_no"] == no1.as_str())
            .cloned()
            .expect("the refund reached the channel");
        assert_eq!(
            (&refund["merchant"], &refund["sub_merchant"]),
            (&json!("sp"), &json!("sub1"))
        );

        // sub2's order.
        let order: Value = as_other(
            "/v1/orders",
            json!({"merchant_order_no": format!("SP-2-{channel}"), "amount": 300, "currency": "CNY", "subject": "t"}),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let id2 = order["id"].as_str().unwrap().to_owned();
        let p2: Value = as_other(
            &format!("/v1/orders/{id2}/prepay"),
            json!({"channel": channel}),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let no2 = p2["out_trade_no"].as_str().unwrap().to_owned();
        let at = ledger_order(&app, channel, &no2).await;
        assert_eq!(
            (&at["merchant"], &at["sub_merchant"]),
            (&json!("sp"), &json!("sub2")),
            "{at}"
        );

        // sub1's genuine message naming sub2's order: refused at every address, recorded.
        let of_sub1 = if channel == "wechatpay" {
            let sub1 = WxMerchant::of_account(&dir, "sub1");
            wechat_paid_by(&dir, &sub1, "EV-SP-X", &no2, 300, 300, WxFault::None)
        } else {
            payonce_testkit::forge::alipay_paid_as(
                &dir,
                "2021000000000900",
                Some("2021000000000901"),
                "N-SP-X",
                &no2,
                "3.00",
                payonce_testkit::forge::AliFault::None,
            )
        };
        // Every delivery of the channel's own messages so far has landed: only ours count.
        app.notifications_settled(Duration::from_secs(20)).await;
        let before = app.counts().await;
        for path in [
            format!("{channel}/sub2"),
            channel.to_owned(),
            format!("{channel}/sub1"),
        ] {
            let (status, body) = app.deliver(&path, &of_sub1).await;
            assert!(
                !status.is_success() || body.contains("fail"),
                "{path}: refused ({status} {body})"
            );
            assert!(!body.eq("success"), "{path}: refused ({status} {body})");
        }
        let o = order_of_other(id2.clone()).await;
        assert_eq!(
            o["status"], "paying",
            "{channel}: sub2's order untouched: {o}"
        );
        let after = app.counts().await;
        for ((table, n0), (_, n1)) in before.iter().zip(after.iter()) {
            if *table != "abnormal" {
                assert_eq!(n0, n1, "{channel}: {table} changed");
            }
        }
        let abnormal = app.state.store.abnormal_open().await.unwrap();
        assert!(
            abnormal
                .iter()
                .any(|a| a.kind == "notification_account_mismatch"
                    && a.detail.contains(channel)
                    && a.detail.contains("account sub1")
                    && a.detail.contains("account sub2")),
            "{channel}: recorded: {abnormal:?}"
        );
        // The payer pays sub2's order: the channel's own notification (sub2's) pays it.
        assert_eq!(app.sim_pay(channel, &no2, false).await, StatusCode::OK);
        for _ in 0..100 {
            if order_of_other(id2.clone()).await["status"] == "paid" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let o = order_of_other(id2.clone()).await;
        assert_eq!(o["status"], "paid", "{channel}: {o}");
    }

    // The provider takes no payments: no app can be bound to it.
    let (status, body) = admin(
        &app,
        reqwest::Method::PUT,
        &format!("/admin/v1/apps/{}/channel-accounts/wechatpay", other.app_id),
        Some(json!({"account": "sp"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "provider_account", "{body}");
    app.notifications_settled(Duration::from_secs(20)).await;
    assert_invariants(app.violations().await);
}

/// A provider lives in `channels.toml`; its sub-merchants are added at runtime (a SaaS seller
/// signs up merchants all day): checked by a signed partner call, sealed (Alipay's token is a
/// secret), and used at once. A sub-merchant the provider does not hold, or a provider that is
/// none, fails its check and stays disabled, saying why.
async fn a_sub_merchant_added_at_runtime_pays_through_its_provider(b: Backend) {
    // channels.toml lists m1, the providers and their sub1; sub2 exists at the channels only.
    let Some(app) = spawn_app_with(
        b,
        AppOptions {
            sim_merchants: 2,
            sim_listed_merchants: Some(1),
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let add = |name: &'static str, config: Value| {
        let app = &app;
        async move {
            admin(
                app,
                reqwest::Method::POST,
                "/admin/v1/channel-accounts",
                Some(json!({"name": name, "config": config})),
            )
            .await
        }
    };
    // m1's number is no sub-merchant of sp: WeChat refuses the partner call.
    let (status, body) = add(
        "shop-x",
        json!({"channel": "wechatpay_sub_merchant", "provider": "sp", "sub_mchid": "1900000001"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "account_check_failed");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("not bound to this service provider"),
        "{body}"
    );
    // m1 is a merchant, not a provider: no sub-merchant can sign with its keys.
    let (status, body) = add(
        "shop-y",
        json!({"channel": "wechatpay_sub_merchant", "provider": "m1", "sub_mchid": "1900000110"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("no wechatpay service provider account named \"m1\""),
        "{body}"
    );
    // A token that is not the one the merchant gave this ISV.
    let (status, body) = add(
        "shop-z",
        json!({"channel": "alipay_sub_merchant", "provider": "sp", "auth_app_id": "2021000000000902",
               "app_auth_token": "202612BBnotthetoken"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("app_auth_token"),
        "{body}"
    );
    // The real sub2 of each channel: checked, enabled, listed as sp's sub-merchant.
    let (status, body) = add(
        "sub2",
        json!({"channel": "wechatpay_sub_merchant", "provider": "sp", "sub_mchid": "1900000110"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        (&body["role"], &body["provider"], &body["enabled"]),
        (&json!("sub_merchant"), &json!("sp"), &json!(true))
    );
    let token = std::fs::read_to_string(app.sim_dir().join("alipay_sub2_app_auth_token")).unwrap();
    let token = token.trim().to_owned();
    let (status, body) = add(
        "sub2",
        json!({"channel": "alipay_sub_merchant", "provider": "sp", "auth_app_id": "2021000000000902",
               "app_auth_token": token}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["merchant_id"], "2021000000000902");
    assert!(
        !body.to_string().contains(&token),
        "the token is never shown"
    );
    let sealed = app.state.store.sealed_accounts().await.unwrap();
    let (_, secrets) = sealed
        .iter()
        .find(|(r, _)| r.name == "sub2" && r.channel == ChannelName::Alipay)
        .unwrap();
    assert!(!secrets.sealed.contains(&token), "sealed at rest");
    // Used: the app bound to sub2 pays at sub2 on both channels.
    for channel in ["wechatpay", "alipay"] {
        let (status, body) = admin(
            &app,
            reqwest::Method::PUT,
            &format!("/admin/v1/apps/{}/channel-accounts/{channel}", app.app_id),
            Some(json!({"account": "sub2"})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (id, p) = prepaid(&app, &format!("RT-SUB-{channel}"), channel).await;
        let no = p["out_trade_no"].as_str().unwrap().to_owned();
        let at = ledger_order(&app, channel, &no).await;
        assert_eq!(
            (&at["merchant"], &at["sub_merchant"]),
            (&json!("sp"), &json!("sub2")),
            "{at}"
        );
        assert_eq!(app.sim_pay(channel, &no, false).await, StatusCode::OK);
        let o = app
            .wait_order(&id, Duration::from_secs(20), |o| o["status"] == "paid")
            .await;
        assert_eq!(o["status"], "paid", "{channel}: {o}");
    }
    app.notifications_settled(Duration::from_secs(20)).await;
    assert_invariants(app.violations().await);
}

/// The simulated WeChat and Alipay are as strict as the channels about the provider model: a
/// provider makes no order of its own, a partner call must name its sub-merchant (WeChat
/// `sub_mchid`, Alipay `app_auth_token`), the sub-merchant must be bound to that provider, and a
/// merchant that is no provider cannot act for one.
#[tokio::test]
async fn the_simulator_refuses_partner_calls_outside_the_providers_own_sub_merchants() {
    use payonce_channels::wechatpay::{SubMerchant, WechatpayClient};
    use payonce_channels::{Channel, ChannelError, PrepayRequest};
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = payonce_sim::start_with(
        listener,
        dir.path(),
        payonce_sim::SimOptions {
            merchants: 2,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let cfg = payonce_channels::ChannelsConfig::load(&sim.channels_file).unwrap();
    let table = |name: &str| {
        cfg.wechatpay
            .0
            .iter()
            .find(|w| w.name.as_deref() == Some(name))
            .unwrap()
            .clone()
    };
    let clock: payonce_channels::SharedClock = std::sync::Arc::new(payonce_core::SystemClock);
    let http = payonce_channels::config::http_client(Duration::from_secs(10)).unwrap();
    let gateway = format!("http://{}", sim.addr);
    let prepay = |keys: payonce_channels::wechatpay::WechatpayKeys, no: &'static str| {
        let client = WechatpayClient::new(gateway.clone(), keys, http.clone(), clock.clone());
        async move {
            let now = payonce_core::Clock::now(&payonce_core::SystemClock);
            client
                .prepay(&PrepayRequest {
                    out_trade_no: no.into(),
                    amount: payonce_core::Money::new(100, payonce_core::Currency::CNY).unwrap(),
                    subject: "t".into(),
                    method: payonce_core::PayMethod::Native,
                    notify_url: "http://127.0.0.1:9/notify".into(),
                    expires_at: payonce_core::Timestamp(now.0 + 600_000),
                    payer: None,
                    requested_at: now,
                })
                .await
        }
    };
    let code = |r: Result<payonce_channels::Prepaid, ChannelError>| match r {
        Err(ChannelError::Refused { code, .. }) => code,
        other => panic!("expected a refusal, got {:?}", other.map(|p| p.credential)),
    };
    let sp = table("sp").keys().unwrap();
    let sub = |sub_mchid: &str, sub_appid: Option<&str>| {
        let mut k = sp.clone();
        k.partner = Some(SubMerchant {
            sub_mchid: sub_mchid.into(),
            sub_appid: sub_appid.map(str::to_owned),
        });
        k
    };
    // The provider's own (direct) order: refused.
    assert_eq!(code(prepay(sp.clone(), "SPDIRECT01").await), "NO_AUTH");
    // A partner call without sub_mchid: refused.
    assert_eq!(
        code(prepay(sub("", None), "SPNOSUB001").await),
        "PARAM_ERROR"
    );
    // A sub-merchant not under this provider (merchant m1's number): refused.
    assert_eq!(
        code(prepay(sub("1900000001", None), "SPFOREIGN1").await),
        "NO_AUTH"
    );
    // sub1 named with an appid that is not its own: refused.
    let wrong_appid = prepay(sub("1900000109", Some("wx0000000000000000")), "SPAPPID001");
    assert_eq!(code(wrong_appid.await), "PARAM_ERROR");
    // A merchant that is no provider cannot use the partner APIs, even for a real sub-merchant.
    let mut m1 = table("m1").keys().unwrap();
    m1.partner = Some(SubMerchant {
        sub_mchid: "1900000109".into(),
        sub_appid: None,
    });
    assert_eq!(code(prepay(m1, "M1PARTNER1").await), "NO_AUTH");
    // The sub-merchants themselves, through their provider: accepted, each at its own number.
    prepay(sub("1900000109", Some("wxd678efh567hg6999")), "SPSUB10001")
        .await
        .expect("sub1 through sp");
    prepay(sub("1900000110", None), "SPSUB20001")
        .await
        .expect("sub2 through sp");
    // Alipay: an ISV's app has no trade of its own, and acts for a merchant only with the token
    // that merchant gave exactly this ISV.
    let alipay_keys = |name: &str, token: Option<&str>| {
        let t = cfg
            .alipay
            .0
            .iter()
            .find(|a| a.name.as_deref() == Some(name))
            .unwrap()
            .clone();
        let read =
            |f: &Option<std::path::PathBuf>| std::fs::read_to_string(f.as_ref().unwrap()).unwrap();
        payonce_channels::alipay::AlipayKeys {
            app_id: t.app_id.clone().unwrap(),
            app_private_key: std::sync::Arc::new(
                payonce_channels::crypto::RsaSigner::from_pem(&read(&t.app_private_key_file))
                    .unwrap(),
            ),
            alipay_public_key: payonce_channels::crypto::RsaVerifier::from_pem(&read(
                &t.alipay_public_key_file,
            ))
            .unwrap(),
            isv: token.map(|tok| payonce_channels::alipay::IsvGrant {
                auth_app_id: "2021000000000901".into(),
                app_auth_token: payonce_channels::secret::SecretBytes::new(tok.as_bytes().to_vec()),
            }),
        }
    };
    let sub1_token =
        std::fs::read_to_string(dir.path().join("alipay_sub1_app_auth_token")).unwrap();
    let alipay_prepay = |keys, no: &'static str| {
        let client = payonce_channels::alipay::AlipayClient::new(
            format!("http://{}/gateway.do", sim.addr),
            keys,
            http.clone(),
            clock.clone(),
        );
        async move {
            let now = payonce_core::Clock::now(&payonce_core::SystemClock);
            client
                .prepay(&PrepayRequest {
                    out_trade_no: no.into(),
                    amount: payonce_core::Money::new(100, payonce_core::Currency::CNY).unwrap(),
                    subject: "t".into(),
                    method: payonce_core::PayMethod::Native,
                    notify_url: "http://127.0.0.1:9/notify".into(),
                    expires_at: payonce_core::Timestamp(now.0 + 600_000),
                    payer: None,
                    requested_at: now,
                })
                .await
        }
    };
    assert_eq!(
        code(alipay_prepay(alipay_keys("sp", None), "ALISPDIRECT1").await),
        "isv.insufficient-isv-permissions"
    );
    assert_eq!(
        code(alipay_prepay(alipay_keys("sp", Some("202612BBnotatoken")), "ALISPFORGED1").await),
        "aop.invalid-app-auth-token"
    );
    // A merchant that is no ISV cannot use a merchant's token, even a real one.
    assert_eq!(
        code(alipay_prepay(alipay_keys("m1", Some(sub1_token.trim())), "ALIM1TOKEN01").await),
        "aop.invalid-app-auth-token"
    );
    alipay_prepay(alipay_keys("sp", Some(sub1_token.trim())), "ALISPSUB1001")
        .await
        .expect("sub1 through the ISV");
    let ledger = sim.sim.ledger_snapshot().orders;
    let at = |no: &str| {
        ledger
            .values()
            .find(|o| o.out_trade_no == no)
            .map(|o| o.merchant_name.clone())
    };
    assert_eq!(at("SPSUB10001").as_deref(), Some("sub1"));
    assert_eq!(at("SPSUB20001").as_deref(), Some("sub2"));
    assert_eq!(at("ALISPSUB1001").as_deref(), Some("sub1"));
    for refused in [
        "SPDIRECT01",
        "SPNOSUB001",
        "SPFOREIGN1",
        "SPAPPID001",
        "M1PARTNER1",
        "ALISPDIRECT1",
        "ALISPFORGED1",
        "ALIM1TOKEN01",
    ] {
        assert_eq!(at(refused), None, "{refused}: nothing made");
    }
}
