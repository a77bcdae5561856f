//! The HTTP helpers scenarios are written with: payonce's API, the simulator's control API,
//! and notifications delivered to payonce as a channel (or a payer's browser) would.

use super::{Forged, TestApp};
use payonce_core::SystemClock;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn sim_url(&self, path: &str) -> String {
        format!("{}{}", self.sim.base_url(), path)
    }

    /// The server's Prometheus scrape (`/metrics`, open in test apps), as text.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("the scrape's text")
    }

    pub async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth(&self.secret)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        let send = || {
            self.http
                .get(self.url(path))
                .bearer_auth(&self.secret)
                .send()
        };
        match send().await {
            Ok(r) => r,
            // A pooled keep-alive connection the server closed as the request went out (the
            // connection cap closes idle ones first to make room): a GET is sent again on a
            // fresh one, as browsers and HTTP clients do.
            Err(e) if e.is_request() && !e.is_timeout() => send().await.expect("request"),
            Err(e) => panic!("request: {e:?}"),
        }
    }

    /// A second tenant on the same server (tests of isolation between apps): its credentials.
    pub async fn another_app(
        &self,
        name: &str,
        webhook_url: Option<&str>,
        sink: Option<&str>,
    ) -> payonce_server::engine::apps::NewAppCredentials {
        let new = payonce_server::engine::apps::NewApp {
            name,
            webhook_url,
            sink,
            ..Default::default()
        };
        payonce_server::engine::apps::create_app(
            self.store.as_ref(),
            &self.state.master_key,
            &SystemClock,
            new,
        )
        .await
        .expect("another app")
    }

    /// Creates an order and returns its JSON.
    pub async fn create_order(&self, merchant_order_no: &str, amount: i64) -> Value {
        let r = self
            .post("/v1/orders", json!({"merchant_order_no": merchant_order_no, "amount": amount, "currency": "CNY", "subject": "test"}))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "create order");
        r.json().await.unwrap()
    }

    pub async fn prepay(&self, order_id: &str, channel: &str) -> reqwest::Response {
        self.post(
            &format!("/v1/orders/{order_id}/prepay"),
            json!({"channel": channel}),
        )
        .await
    }

    pub async fn order(&self, order_id: &str) -> Value {
        self.get(&format!("/v1/orders/{order_id}"))
            .await
            .json()
            .await
            .unwrap()
    }

    /// The payer pays a channel order at the simulator.
    pub async fn sim_pay(&self, channel: &str, out_trade_no: &str, force: bool) -> StatusCode {
        self.http
            .post(self.sim_url("/sim/pay"))
            .json(&json!({"channel": channel, "out_trade_no": out_trade_no, "force": force}))
            .send()
            .await
            .unwrap()
            .status()
    }

    pub async fn faults(&self, f: Value) {
        let r = self
            .http
            .post(self.sim_url("/sim/faults"))
            .json(&f)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "faults rejected: {}",
            r.text().await.unwrap()
        );
    }

    /// Waits until the simulated channels have no notification left to deliver (retries,
    /// delays and duplicates included), up to `timeout`; false if they still had.
    pub async fn notifications_settled(&self, timeout: Duration) -> bool {
        let end = tokio::time::Instant::now() + timeout;
        loop {
            let v: Value = self
                .http
                .get(self.sim_url("/sim/notifications"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["outstanding"] == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn ledger(&self) -> Value {
        self.http
            .get(self.sim_url("/sim/ledger"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn counts(&self) -> Vec<(&'static str, i64)> {
        self.store.row_counts().await.unwrap()
    }

    /// Polls the order until `pred` holds, up to `timeout`; returns the last view.
    pub async fn wait_order(
        &self,
        order_id: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut waiting = self.waiting(timeout);
        loop {
            let o = self.order(order_id).await;
            if pred(&o) || !waiting.pass(Duration::from_millis(20)).await {
                return o;
            }
        }
    }
}

impl TestApp {
    /// A sandbox payment notification signed with the simulator's real key, as the channel
    /// would send it: `(timestamp header, signature header, body)`.
    pub fn signed_sandbox_notification(
        &self,
        event_id: &str,
        out_trade_no: &str,
        amount: i64,
    ) -> (String, String, String) {
        use payonce_channels::sandbox::protocol;
        let key = payonce_channels::config::read_hex_key(
            &self.sim.channels_file.with_file_name("sandbox.key"),
        )
        .unwrap();
        let body = json!({
            "id": event_id,
            "event_type": protocol::EVENT_PAID,
            "out_trade_no": out_trade_no,
            "trade_no": "4200000000000000001",
            "amount": amount,
            "paid_at": 1_700_000_000_000i64,
        })
        .to_string();
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let sig = protocol::sign(&key, ts, "POST", "/notify/sandbox", body.as_bytes());
        (ts.to_string(), sig, body)
    }

    pub async fn post_sandbox_notification(
        &self,
        ts: &str,
        sig: &str,
        body: &str,
    ) -> reqwest::Response {
        self.sandbox_notification_from(None, ts, sig, body).await
    }

    /// `post_sandbox_notification`, relayed for the address `from` (`X-Forwarded-For`: an app
    /// whose `trusted_proxies` take the loopback's word sees it as the sender).
    pub async fn sandbox_notification_from(
        &self,
        from: Option<&str>,
        ts: &str,
        sig: &str,
        body: &str,
    ) -> reqwest::Response {
        use payonce_channels::sandbox::protocol;
        let mut request = self.http.post(self.url("/notify/sandbox"));
        if let Some(from) = from {
            request = request.header("x-forwarded-for", from);
        }
        request
            .header(protocol::TS_HEADER, ts)
            .header(protocol::SIG_HEADER, sig)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }
}

impl TestApp {
    /// The simulator's state dir (its keys), for `payonce_testkit::forge`.
    pub fn sim_dir(&self) -> std::path::PathBuf {
        self.sim.channels_file.parent().unwrap().to_path_buf()
    }

    /// Posts a forged notification to `/notify/{channel}`; returns status and body text.
    pub async fn deliver(&self, channel: &str, n: &Forged) -> (StatusCode, String) {
        let mut req = self
            .http
            .post(self.url(&format!("/notify/{channel}")))
            .header("content-type", n.content_type)
            .body(n.body.clone());
        for (k, v) in &n.headers {
            req = req.header(k, v);
        }
        let r = req.send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    }
}

impl TestApp {
    /// What the payer's browser does with a UnionPay credential: posts its form to UnionPay.
    pub async fn submit_unionpay_form(&self, credential: &Value) -> StatusCode {
        let fields: Vec<(String, String)> = credential["fields"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        self.http
            .post(credential["action"].as_str().unwrap())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(payonce_channels::form::encode(&fields))
            .send()
            .await
            .unwrap()
            .status()
    }
}
