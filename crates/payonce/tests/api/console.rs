//! The operator console's server side on both stores (its use in a browser is
//! `tests/browser/console.py`): nothing without a session, no action without the session's
//! CSRF token, sign-in by form into an HttpOnly SameSite=Strict cookie, search by every number
//! an operator may hold, the order timeline with the channel's messages (payer identifiers
//! masked, contents cleared after the retention), actions written to the audit log.

use payonce_testkit::{Backend, TestApp, store_tests};
use reqwest::StatusCode;
use serde_json::json;

store_tests!(
    the_console_needs_a_session_and_its_forms_a_csrf_token,
    the_timeline_tells_an_order_s_story_and_masks_the_payer,
    every_query_and_its_answer_is_in_the_timeline_repeats_counted,
    the_search_is_index_look_ups_only,
);

const ADMIN: &str = "test-admin-token";
const OPENID: &str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";

/// A browser that does not follow redirects (so a test sees them) and keeps no cookies of its own.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in as `name`; the cookie header to send and the session's CSRF token.
async fn sign_in(app: &TestApp, name: &str) -> (String, String) {
    let r = browser()
        .post(app.url("/console/sign-in"))
        .form(&[("token", ADMIN), ("operator", name)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/console");
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set.contains("HttpOnly")
            && set.contains("SameSite=Strict")
            && set.contains("Path=/console"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_owned();
    let home = page(app, &cookie, "/console").await;
    (cookie, csrf_of(&home))
}

fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + "name=\"csrf\" value=\"".len();
    html[at..].split('"').next().unwrap().to_owned()
}

async fn page(app: &TestApp, cookie: &str, path: &str) -> String {
    let r = browser()
        .get(app.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    r.text().await.unwrap()
}

async fn the_console_needs_a_session_and_its_forms_a_csrf_token(b: Backend) {
    let Some(app) = crate::app(b).await else {
        return;
    };
    // No session: pages send to the sign-in form, actions are refused, and nothing changes.
    let r = browser().get(app.url("/console")).send().await.unwrap();
    assert_eq!(
        (r.status(), r.headers()["location"].to_str().unwrap()),
        (StatusCode::SEE_OTHER, "/console/sign-in")
    );
    let r = browser()
        .get(app.url("/console/orders?q=x"))
        .header("cookie", "payonce_console=forged")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "an unknown session is no session"
    );
    let r = browser()
        .get(app.url("/console/sign-in"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("<form method=\"post\" action=\"/console/sign-in\""),
        "a plain HTML form"
    );
    app.store
        .insert_abnormal(
            "unresolved_unknown",
            "att_nothing",
            "test item",
            app.state.clock.now(),
        )
        .await
        .unwrap();
    let item = app.store.abnormal_open().await.unwrap().remove(0);
    let resolve = format!("/console/abnormal/{}/resolve", item.id);
    let r = browser()
        .post(app.url(&resolve))
        .form(&[("note", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A wrong token or no name: no session.
    for (token, name) in [("wrong", "alice"), (ADMIN, ""), ("", "alice")] {
        let r = browser()
            .post(app.url("/console/sign-in"))
            .form(&[("token", token), ("operator", name)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{token:?} {name:?}");
        assert!(r.headers().get("set-cookie").is_none());
    }
    let (cookie, csrf) = sign_in(&app, "alice").await;
    // Signed in, but without the CSRF token, with another's, or from another site: refused.
    for (form_csrf, origin) in [
        (None, None),
        (Some("not-the-token"), None),
        (Some(csrf.as_str()), Some("https://evil.example")),
    ] {
        let mut form = vec![("note", "done")];
        if let Some(c) = form_csrf {
            form.push(("csrf", c));
        }
        let mut req = browser()
            .post(app.url(&resolve))
            .header("cookie", &cookie)
            .form(&form);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        assert_eq!(
            req.send().await.unwrap().status(),
            StatusCode::FORBIDDEN,
            "{form_csrf:?} {origin:?}"
        );
    }
    assert_eq!(
        app.store.abnormal_open().await.unwrap().len(),
        1,
        "refused forms changed nothing"
    );
    // With it: resolved, by alice, with her note, in the audit log.
    let r = browser()
        .post(app.url(&resolve))
        .header("cookie", &cookie)
        .form(&[("note", "checked by hand"), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(app.store.abnormal_open().await.unwrap().is_empty());
    let resolved = app.store.abnormal_item(&item.id).await.unwrap().unwrap();
    assert_eq!(
        (
            resolved.resolved_by.as_deref(),
            resolved.resolution.as_deref()
        ),
        (Some("alice"), Some("checked by hand"))
    );
    let audit = app.store.recent_audit(10).await.unwrap();
    assert!(
        audit.iter().any(|e| e.operator == "alice"
            && e.action == "resolve"
            && e.target == item.id
            && e.note.contains("checked by hand")),
        "{audit:?}"
    );
    // Resolving twice is refused, not repeated.
    let r = browser()
        .post(app.url(&resolve))
        .header("cookie", &cookie)
        .form(&[("note", "again"), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    // A secret rotation shows the new secret once, and is audited.
    let r = browser()
        .post(app.url(&format!(
            "/console/apps/{}/rotate-webhook-secret",
            app.app_id
        )))
        .header("cookie", &cookie)
        .form(&[("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("whsec_"));
    // Signing out ends the session everywhere.
    let r = browser()
        .post(app.url("/console/sign-out"))
        .header("cookie", &cookie)
        .form(&[("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = browser()
        .get(app.url("/console"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "the old cookie opens nothing"
    );
}

async fn the_timeline_tells_an_order_s_story_and_masks_the_payer(b: Backend) {
    let Some(app) = crate::app(b).await else {
        return;
    };
    let xss = "<script>alert(1)</script>";
    let r = app.post("/v1/orders", json!({"merchant_order_no": "CONSOLE-1", "amount": 500, "currency": "CNY", "subject": xss})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let p: serde_json::Value = app.prepay(&id, "wechatpay").await.json().await.unwrap();
    let out_trade_no = p["out_trade_no"].as_str().unwrap().to_owned();
    // The simulator pays and notifies, as WeChat does: the decrypted resource names the payer.
    assert_eq!(
        app.sim_pay("wechatpay", &out_trade_no, false).await,
        StatusCode::OK
    );
    let paid = app
        .wait_order(&id, std::time::Duration::from_secs(10), |o| {
            o["status"] == "paid"
        })
        .await;
    assert_eq!(paid["status"], "paid");
    assert!(
        app.notifications_settled(std::time::Duration::from_secs(10))
            .await
    );

    let (cookie, _) = sign_in(&app, "bob").await;
    // Every number an operator may hold finds the order.
    let attempt = app
        .store
        .attempts_of(&payonce_core::OrderId::parse(&id).unwrap())
        .await
        .unwrap()
        .remove(0);
    for q in [
        id.as_str(),
        "CONSOLE-1",
        out_trade_no.as_str(),
        attempt.channel_trade_no.as_deref().unwrap(),
    ] {
        let found = page(
            &app,
            &cookie,
            &format!("/console/orders?q={}", urlencode(q)),
        )
        .await;
        assert!(
            found.contains(&format!("/console/orders/{id}")),
            "{q} finds the order"
        );
    }
    let found = page(&app, &cookie, "/console/orders?q=nothing-like-it").await;
    assert!(found.contains("No order matches"));

    let timeline = page(&app, &cookie, &format!("/console/orders/{id}")).await;
    for step in [
        "order created",
        "prepay via wechatpay",
        "notification from wechatpay: paid 500",
        "order_paid",
        "order paid",
        "event payment.succeeded",
    ] {
        assert!(
            timeline.contains(step),
            "the timeline shows {step:?}:\n{timeline}"
        );
    }
    // The payer's openid is masked; the subject is text, never markup.
    assert!(timeline.contains("oUp****6o"), "masked openid shown");
    assert!(
        !timeline.contains(OPENID),
        "the openid itself never reaches the page"
    );
    assert!(
        !timeline.contains(xss)
            && (timeline.contains("&lt;script&gt;") || timeline.contains("&#60;script&#62;")),
        "stored text is escaped: {timeline}"
    );
    // The store keeps the message until the retention, then only its verdict.
    let stored = app
        .store
        .channel_messages(
            payonce_core::ChannelName::Wechatpay,
            std::slice::from_ref(&out_trade_no),
        )
        .await
        .unwrap();
    assert!(
        stored.iter().any(|m| m.source == "notification"
            && m.content.as_deref().is_some_and(|c| c.contains(OPENID)))
    );
    let cleared = app
        .store
        .clear_message_contents(app.state.clock.now() + std::time::Duration::from_secs(1))
        .await
        .unwrap();
    assert!(cleared >= 1);
    let timeline = page(&app, &cookie, &format!("/console/orders/{id}")).await;
    assert!(
        timeline.contains("content cleared after the retention")
            && timeline.contains("notification from wechatpay"),
        "{timeline}"
    );
}

/// Every notification is lost, so the workers keep asking: "unpaid" again and again, then (the
/// channel failing) no answer, then "paid". The timeline shows each query and its answer, a
/// repeat counted on its line ("N times, the last at …") rather than a line per poll; the
/// refund's call and its answer follow.
async fn every_query_and_its_answer_is_in_the_timeline_repeats_counted(b: Backend) {
    let Some(app) = crate::app(b).await else {
        return;
    };
    app.faults(json!({"notify_drop_rate": 1.0})).await;
    let id = app.create_order("CONSOLE-Q", 700).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let p: serde_json::Value = app.prepay(&id, "sandbox").await.json().await.unwrap();
    let out_trade_no = p["out_trade_no"].as_str().unwrap().to_owned();
    let order_id = payonce_core::OrderId::parse(&id).unwrap();
    let queries = || async { app.store.attempts_of(&order_id).await.unwrap()[0].query_count };
    let app = &app;
    let wait_for_queries = |n: i64| async move {
        let mut waiting = app.waiting(std::time::Duration::from_secs(30));
        while queries().await < n {
            assert!(
                waiting.pass(std::time::Duration::from_millis(50)).await,
                "the workers did not query {n} times"
            );
        }
    };
    wait_for_queries(3).await;
    app.faults(json!({"query_error_rate": 1.0})).await;
    let asked = queries().await;
    wait_for_queries(asked + 2).await;
    app.faults(json!({"query_error_rate": 0.0})).await;
    assert_eq!(
        app.sim_pay("sandbox", &out_trade_no, false).await,
        StatusCode::OK
    );
    assert_eq!(
        app.wait_order(&id, std::time::Duration::from_secs(30), |o| o["status"]
            == "paid")
            .await["status"],
        "paid",
        "found by a query"
    );
    let r = app
        .post(
            &format!("/v1/orders/{id}/refunds"),
            json!({"merchant_refund_no": "CONSOLE-Q-R", "amount": 200}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let refund: serde_json::Value = r.json().await.unwrap();
    let refund_url = format!("/v1/refunds/{}", refund["id"].as_str().unwrap());
    let mut waiting = app.waiting(std::time::Duration::from_secs(20));
    while app
        .get(&refund_url)
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap()["status"]
        != "succeeded"
    {
        assert!(
            waiting.pass(std::time::Duration::from_millis(50)).await,
            "the refund did not succeed"
        );
    }

    // One line per answer that differs from the one before, however often it came.
    let messages = app
        .store
        .channel_messages(
            payonce_core::ChannelName::Sandbox,
            std::slice::from_ref(&out_trade_no),
        )
        .await
        .unwrap();
    let lines: Vec<(&str, &str, &str)> = messages
        .iter()
        .map(|m| (m.source.as_str(), m.observed.as_str(), m.verdict.as_str()))
        .collect();
    assert_eq!(
        lines[0],
        ("query", "unpaid", "nothing_new"),
        "{messages:#?}"
    );
    assert!(
        messages[0].repeats >= 2 && messages[0].last_at.is_some(),
        "the repeats are counted: {messages:#?}"
    );
    let unanswered = messages
        .iter()
        .find(|m| m.verdict == "unanswered")
        .unwrap_or_else(|| panic!("the failed queries: {messages:#?}"));
    assert!(
        unanswered.repeats >= 2 && unanswered.observed.starts_with("no answer"),
        "{messages:#?}"
    );
    assert!(
        messages.iter().any(|m| m.source == "query"
            && m.observed.starts_with("paid 700")
            && m.verdict == "order_paid"),
        "{messages:#?}"
    );
    let asked = queries().await;
    assert!(
        (messages.len() as i64) < asked,
        "{} lines for {asked} queries",
        messages.len()
    );

    let (cookie, _) = sign_in(app, "carol").await;
    let timeline = page(app, &cookie, &format!("/console/orders/{id}")).await;
    for step in [
        "query from sandbox: unpaid",
        "times, the last at",
        "→ unanswered",
        "query from sandbox: paid 700",
        "→ order_paid",
        "refund call from sandbox",
        "→ refund",
    ] {
        assert!(
            timeline.contains(step),
            "the timeline shows {step:?}:\n{timeline}"
        );
    }
}

/// The planner's word on the console's search, not ours: every table it reads is read through
/// an index, on both stores — PostgreSQL asked with `enable_seqscan` off, so a plan that needs a
/// scan shows one however small the tables are.
async fn the_search_is_index_look_ups_only(b: Backend) {
    use sqlx::{Connection, Row};
    let Some(app) = crate::app(b).await else {
        return;
    };
    let sql = format!(
        "EXPLAIN{} {}",
        if b == Backend::Sqlite {
            " QUERY PLAN"
        } else {
            ""
        },
        payonce_store::console::find_orders_sql()
    );
    let plan: Vec<String> = match b {
        Backend::Postgres => {
            let mut c = sqlx::postgres::PgConnection::connect(&app.db.url)
                .await
                .unwrap();
            sqlx::query("SET enable_seqscan = off")
                .execute(&mut c)
                .await
                .unwrap();
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind("ORD-1")
                .bind(20_i64)
                .fetch_all(&mut c)
                .await
                .unwrap();
            rows.iter().map(|r| r.get::<String, _>(0)).collect()
        }
        Backend::Sqlite => {
            let mut c = sqlx::sqlite::SqliteConnection::connect(&app.db.url)
                .await
                .unwrap();
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind("ORD-1")
                .bind(20_i64)
                .fetch_all(&mut c)
                .await
                .unwrap();
            rows.iter().map(|r| r.get::<String, _>(3)).collect()
        }
    };
    let plan = plan.join("\n");
    for table in ["orders", "attempts", "refunds"] {
        assert!(plan.contains(table), "{table} is read:\n{plan}");
    }
    assert!(
        !plan.contains("Seq Scan") && !plan.lines().any(|l| l.trim_start().starts_with("SCAN ")),
        "a table scanned:\n{plan}"
    );
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
