//! Daily statements in each channel's bill format — WeChat's backtick CSV with its totals
//! block (SHA-1 checked, BOM and CRLF as served), Alipay's zip of two GBK CSVs with GBK entry
//! names — fetched through the real download protocols and matched against the simulator's ledger,
//! with an order subject (商品名称 on the bills) that holds commas and quotes.

use crate::app;
use payonce_channels::StatementKind;
use payonce_testkit::{Backend, store_tests};
use serde_json::{Value, json};
use std::time::Duration;

store_tests!(statements_match_the_ledger);

async fn statements_match_the_ledger(b: Backend) {
    let Some(app) = app(b).await else { return };
    for (i, ch) in ["wechatpay", "alipay", "sandbox"].iter().enumerate() {
        for k in 0..2 {
            // The subject reaches the bills as 商品名称: commas and quotes in it must not break
            // the day's bill.
            let subject = if k == 1 {
                "Tea, green, \"2 cups\""
            } else {
                "test"
            };
            let r = app.post("/v1/orders", json!({"merchant_order_no": format!("ST-{ch}-{k}"), "amount": 1_000 + i as i64 * 10 + k, "currency": "CNY", "subject": subject})).await;
            assert_eq!(r.status(), 201);
            let order: Value = r.json().await.unwrap();
            let id = order["id"].as_str().unwrap().to_owned();
            let p: Value = app.prepay(&id, ch).await.json().await.unwrap();
            app.sim_pay(ch, p["out_trade_no"].as_str().unwrap(), false)
                .await;
            app.wait_order(&id, Duration::from_secs(10), |o| o["status"] == "paid")
                .await;
            if k == 0 {
                let r = app
                    .post(
                        &format!("/v1/orders/{id}/refunds"),
                        json!({"merchant_refund_no": "S1", "amount": 100}),
                    )
                    .await;
                assert_eq!(r.status(), 201);
            }
        }
    }
    let now = payonce_core::Clock::now(&payonce_core::SystemClock);
    let date = payonce_channels::alipay::protocol::beijing_time(now.0)[..10].to_owned();
    let ledger = app.ledger().await;
    for ch in ["wechatpay", "alipay", "sandbox"] {
        let channel = app
            .state
            .channels
            .get(payonce_core::ChannelName::parse(ch).unwrap())
            .unwrap()
            .clone();
        let statement = channel
            .statement(&date)
            .await
            .unwrap_or_else(|e| panic!("{ch}: {e}"));
        assert!(
            statement.unrecognised.is_empty(),
            "{ch}: {:?}",
            statement.unrecognised
        );
        let lines = statement.lines;
        let payments: Vec<_> = lines
            .iter()
            .filter(|l| l.kind == StatementKind::Payment)
            .collect();
        let refunds: Vec<_> = lines
            .iter()
            .filter(|l| l.kind == StatementKind::Refund)
            .collect();
        let charged: Vec<&Value> = ledger["charges"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["channel"] == ch)
            .collect();
        let refunded: Vec<&Value> = ledger["refunds"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["channel"] == ch)
            .collect();
        assert_eq!(payments.len(), charged.len(), "{ch}: payments");
        assert_eq!(refunds.len(), refunded.len(), "{ch}: refunds");
        for c in charged {
            assert!(
                payments
                    .iter()
                    .any(|p| p.out_trade_no == c["out_trade_no"].as_str().unwrap()
                        && p.amount == c["amount"].as_i64().unwrap()),
                "{ch}: {c}"
            );
        }
        for r in refunded {
            assert!(
                refunds.iter().any(
                    |x| x.out_refund_no.as_deref() == r["out_refund_no"].as_str()
                        && x.amount == 100
                ),
                "{ch}: {r}"
            );
        }
    }
    // The control API serves the same bills.
    let wx = app
        .http
        .get(app.sim_url(&format!("/sim/statement?channel=wechatpay&date={date}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        wx.starts_with(&format!(
            "\u{feff}{}\r\n",
            payonce_channels::wechatpay::bill::HEADER
        )),
        "BOM and CRLF, as WeChat serves it"
    );
    let ali = app
        .http
        .get(app.sim_url(&format!("/sim/statement?channel=alipay&date={date}")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(ali.starts_with(b"PK\x03\x04"), "Alipay's bill is a zip");
    assert_eq!(
        payonce_channels::alipay::bill::parse_zip(&ali)
            .unwrap()
            .lines
            .len(),
        3
    );
}
