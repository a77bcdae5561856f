//! Every row of docs/channels.md, tested: the row's answer is built and read the way the
//! connector reads it (its pure `*_outcome` / `*_state` functions, and for transport rows the
//! real connector against a stub gateway), and what payonce concludes must be column 4. A row
//! without a case here, or a case without a row, fails.

use payonce_channels::crypto::{Certificate, RsaSigner};
use payonce_channels::wechatpay::protocol::PlatformKeys;
use payonce_channels::{
    Channel, ChannelError, ChannelOrderRef, CloseAnswer, NotifyError, PrepayRequest, RefundState,
    TradeState, alipay, settle_query_answer, unionpay, wechatpay,
};
use payonce_core::{ChannelName, Clock, Money, PayMethod, Timestamp};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

const MCHID: &str = "1900000001";
const NO: &str = "0190f1e2d3c4b5a69788796a5b4c3d2e";

/// The rows of the tables: id → conclusion (column 4).
fn table() -> BTreeMap<String, String> {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/channels.md"
    ))
    .unwrap();
    doc.lines()
        .filter(|l| l.starts_with("| WX-") || l.starts_with("| ALI-") || l.starts_with("| UP-"))
        .map(|l| {
            let cells: Vec<&str> = l.split(" | ").collect();
            (
                cells[0].trim_start_matches("| ").trim().to_owned(),
                cells[3].trim().to_owned(),
            )
        })
        .collect()
}

// ---- conclusions, as payonce's engine draws them ----

fn of_state(
    channel: ChannelName,
    s: &Result<TradeState, ChannelError>,
    payable_passed: bool,
) -> String {
    match s {
        // A failed or refused query concludes nothing about the order: look again.
        Err(_) => "unknown → query".into(),
        Ok(s) => match settle_query_answer(channel, s.clone(), payable_passed, false) {
            None => "not paid yet".into(),
            Some(TradeState::Paid { .. }) => "paid".into(),
            Some(TradeState::Unpaid) => "not paid yet".into(),
            Some(TradeState::Closed) => "closed".into(),
            Some(TradeState::Absent) => "absent".into(),
        },
    }
}

fn of_prepay<T>(r: &Result<T, ChannelError>) -> String {
    match r {
        Ok(_) => "not paid yet".into(),
        Err(ChannelError::Refused { .. }) => "refused (definitive, nothing happened)".into(),
        Err(_) => "unknown → query".into(),
    }
}

fn of_close(channel: ChannelName, r: &Result<CloseAnswer, ChannelError>) -> String {
    match r {
        Ok(CloseAnswer::Closed) => "closed".into(),
        // The engine queries next, to record the payment with its details.
        Ok(CloseAnswer::AlreadyPaid) => "unknown → query".into(),
        // Where the channel made its order at prepay, "no such order" proves there is none;
        // elsewhere the attempt is closed locally and watched until it can no longer be paid.
        Ok(CloseAnswer::Absent) => match payonce_channels::settle_close_absent(channel) {
            TradeState::Absent => "absent".into(),
            _ => "closed".into(),
        },
        Err(ChannelError::Refused { .. }) => "refused (definitive, nothing happened)".into(),
        Err(_) => "unknown → query".into(),
    }
}

fn of_refund(r: &Result<RefundState, ChannelError>) -> String {
    match r {
        Ok(RefundState::Succeeded) => "refund succeeded".into(),
        Ok(RefundState::Processing | RefundState::Abnormal) => "refund pending".into(),
        Ok(RefundState::Failed(_)) => "refund failed".into(),
        Ok(RefundState::Absent) => "absent".into(),
        Ok(RefundState::NotFoundYet) | Err(_) => "unknown → query".into(),
    }
}

fn of_notification(r: &Result<payonce_channels::Notification, NotifyError>) -> String {
    match r {
        Err(_) => "unknown → query".into(),
        Ok(n) => match &n.refund {
            Some(notice) => of_refund(&Ok(notice.state.clone())),
            None => of_state(ChannelName::Wechatpay, &Ok(n.state.clone()), false),
        },
    }
}

// ---- WeChat answers ----

fn wx_error(code: &str) -> Vec<u8> {
    json!({"code": code, "message": "m"})
        .to_string()
        .into_bytes()
}

fn wx_transaction(state: &str) -> Vec<u8> {
    let mut t = json!({"appid": "wx1", "mchid": MCHID, "out_trade_no": NO, "trade_state": state, "trade_state_desc": "",
        "amount": {"total": 100, "currency": "CNY"}});
    if state == "SUCCESS" || state == "REFUND" {
        t["transaction_id"] = json!("4200000001");
        t["success_time"] = json!("2026-11-25T10:00:00+08:00");
    }
    t.to_string().into_bytes()
}

fn wx_refund(status: &str) -> Vec<u8> {
    json!({"refund_id": "5030", "out_refund_no": "R1", "out_trade_no": NO, "status": status, "amount": {"total": 100, "refund": 10, "currency": "CNY"}}).to_string().into_bytes()
}

fn wx_query(status: u16, body: &[u8]) -> String {
    of_state(
        ChannelName::Wechatpay,
        &wechatpay::query_outcome(status, body, MCHID, NO),
        false,
    )
}

// ---- Alipay answers ----

fn ali(code: &str, sub_code: &str) -> Result<Value, ChannelError> {
    let mut b = json!({"code": code, "msg": "m"});
    if !sub_code.is_empty() {
        b["sub_code"] = json!(sub_code);
        b["sub_msg"] = json!("s");
    }
    alipay::read_code(b)
}

fn ali_ok(fields: Value) -> Result<Value, ChannelError> {
    let mut b = json!({"code": "10000", "msg": "Success"});
    b.as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    alipay::read_code(b)
}

fn ali_trade(status: &str) -> Result<Value, ChannelError> {
    ali_ok(
        json!({"out_trade_no": NO, "trade_no": "2026", "trade_status": status, "total_amount": "1.00", "send_pay_date": "2026-11-25 10:00:00"}),
    )
}

fn ali_query(r: Result<Value, ChannelError>, payable_passed: bool) -> String {
    of_state(
        ChannelName::Alipay,
        &alipay::query_outcome(r),
        payable_passed,
    )
}

fn ali_notify(status: &str, extra: &[(&str, &str)]) -> String {
    let mut p: Vec<(String, String)> = [
        ("app_id", "2021"),
        ("notify_type", "trade_status_sync"),
        ("notify_id", "n1"),
        ("out_trade_no", NO),
        ("trade_no", "2026"),
        ("trade_status", status),
        ("total_amount", "1.00"),
        ("gmt_payment", "2026-11-25 10:00:00"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    p.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    of_notification(&alipay::read_notification(&p, "2021"))
}

// ---- UnionPay answers ----

fn up(fields: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut f: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    f.push(("txnAmt".into(), "100".into()));
    f.push(("orderId".into(), NO.into()));
    f.push(("queryId".into(), "5122".into()));
    f
}

fn up_query(resp: &str, orig: Option<&str>, late: bool) -> String {
    let mut f = vec![("respCode", resp)];
    if let Some(o) = orig {
        f.push(("origRespCode", o));
    }
    let s = unionpay::consume_state(&up(&f));
    if late {
        // Past payTimeout the expiry closes the attempt: the close is a query.
        return of_close(ChannelName::Unionpay, &s.map(unionpay::close_from_query));
    }
    of_state(ChannelName::Unionpay, &s, false)
}

fn up_refund_query(resp: &str, orig: Option<&str>) -> String {
    let mut f = vec![("respCode", resp)];
    if let Some(o) = orig {
        f.push(("origRespCode", o));
    }
    of_refund(&unionpay::refund_query_state(&up(&f)))
}

fn up_refund(resp: &str) -> String {
    of_refund(&unionpay::refund_answer_state(&up(&[("respCode", resp)])))
}

fn up_notify(txn_type: &str, resp: &str) -> String {
    of_notification(&unionpay::read_notification(&up(&[
        ("txnType", txn_type),
        ("respCode", resp),
        ("txnTime", "20261125100000"),
    ])))
}

/// UnionPay's `.cer` files: PEM text, or DER.
fn load_cert(path: &str) -> Certificate {
    let bytes = std::fs::read(path).unwrap();
    match std::str::from_utf8(&bytes) {
        Ok(text) if text.contains("-----BEGIN") => Certificate::from_pem(text).unwrap(),
        _ => Certificate::from_der(&bytes).unwrap(),
    }
}

/// The UnionPay test-environment answer, tampered: its signature no longer verifies.
fn up_badsig() -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/unionpay");
    let body = std::fs::read(format!("{dir}/yansongda_pay/sync_query_20240105145046.txt")).unwrap();
    let mut f = unionpay::protocol::parse_answer(&body).unwrap();
    f.iter_mut().find(|(k, _)| k == "txnAmt").unwrap().1 = "999".into();
    let root = load_cert(&format!("{dir}/certs/acp_test_root.cer"));
    let middle = load_cert(&format!("{dir}/certs/acp_test_middle.cer"));
    let r = unionpay::verify_unionpay_message(&f, &root, Some(&middle), 1_704_456_000, false);
    of_notification(&r.map(|_| unreachable!("a tampered answer cannot verify")))
}

// ---- transport rows: the real connectors against a stub gateway ----

/// A one-shot HTTP stub: answers every request with `status`, `headers` and `body`, or
/// never answers (`hang`).
async fn stub(
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    hang: bool,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (headers, body) = (headers.clone(), body.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = sock.read(&mut buf).await;
                if hang {
                    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                    return;
                }
                let mut head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&body).await;
            });
        }
    });
    format!("http://{addr}")
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(400))
        .build()
        .unwrap()
}

fn clock() -> Arc<dyn Clock> {
    Arc::new(payonce_core::SystemClock)
}

fn prepay_request() -> PrepayRequest {
    let now = payonce_core::SystemClock.now();
    PrepayRequest {
        out_trade_no: NO.into(),
        amount: Money {
            minor: 100,
            currency: payonce_core::Currency::CNY,
        },
        subject: "tea".into(),
        method: PayMethod::Native,
        notify_url: "https://shop.example/notify".into(),
        expires_at: now.plus_secs(600),
        payer: None,
        requested_at: now,
    }
}

fn wechat(gateway: String, platform: &RsaSigner) -> wechatpay::WechatpayClient {
    let mut keys = PlatformKeys::default();
    keys.0.insert("PUB_KEY_ID_T".into(), platform.verifier());
    let k = wechatpay::WechatpayKeys {
        mchid: MCHID.into(),
        appid: "wx1".into(),
        merchant_serial_no: "AB".into(),
        merchant_key: Arc::new(RsaSigner::generate()),
        apiv3_key: payonce_channels::secret::SecretBytes::new(
            b"0123456789abcdef0123456789abcdef".to_vec(),
        ),
        platform: keys,
        download_certificates: false,
        partner: None,
    };
    wechatpay::WechatpayClient::new(gateway, k, http(), clock())
}

fn alipay_client(gateway: String) -> alipay::AlipayClient {
    let k = alipay::AlipayKeys {
        isv: None,
        app_id: "2021".into(),
        app_private_key: Arc::new(RsaSigner::generate()),
        alipay_public_key: RsaSigner::generate().verifier(),
    };
    alipay::AlipayClient::new(gateway, k, http(), clock())
}

fn unionpay_client(gateway: String) -> unionpay::UnionpayClient {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/unionpay/certs");
    let k = unionpay::UnionpayKeys {
        mer_id: "777290058167151".into(),
        sign_key: RsaSigner::generate(),
        cert_id: "1".into(),
        root: load_cert(&format!("{dir}/acp_test_root.cer")),
        middle: Some(load_cert(&format!("{dir}/acp_test_middle.cer"))),
        accept_test_owner: false,
    };
    unionpay::UnionpayClient::new(gateway.clone(), gateway, k, http(), clock())
}

fn refund_request() -> payonce_channels::RefundRequest {
    let cny = |minor| Money {
        minor,
        currency: payonce_core::Currency::CNY,
    };
    payonce_channels::RefundRequest {
        order: order_ref(),
        channel_trade_no: None,
        out_refund_no: "R1".into(),
        amount: cny(100),
        total: cny(100),
        reason: None,
        notify_url: "https://shop.example/notify".into(),
        channel_data: None,
    }
}

fn order_ref() -> ChannelOrderRef {
    ChannelOrderRef {
        out_trade_no: NO.into(),
        channel_data: Some("20261125100000".into()),
    }
}

async fn transport_rows() -> BTreeMap<&'static str, String> {
    let platform = RsaSigner::generate();
    let mut rows = BTreeMap::new();
    // WeChat: no answer within the timeout; a 200 without a platform signature.
    let wx = wechat(stub(200, vec![], b"{}".to_vec(), true).await, &platform);
    rows.insert(
        "WX-ALL-TIMEOUT",
        of_prepay(&wx.prepay(&prepay_request()).await),
    );
    let wx = wechat(
        stub(200, vec![], br#"{"code_url":"weixin://x"}"#.to_vec(), false).await,
        &platform,
    );
    rows.insert(
        "WX-ALL-UNSIGNED",
        of_prepay(&wx.prepay(&prepay_request()).await),
    );
    // WeChat: 4xx answers without a platform signature (wechatpay-go checks signatures on 2xx
    // only): a prepay's code is read; an order's or a refund's state never is.
    let unsigned = |status: u16, code: &str| {
        stub(
            status,
            vec![],
            json!({"code": code, "message": "x"})
                .to_string()
                .into_bytes(),
            false,
        )
    };
    let wx = wechat(unsigned(401, "SIGN_ERROR").await, &platform);
    rows.insert(
        "WX-ALL-UNSIGNED-4XX-PREPAY",
        of_prepay(&wx.prepay(&prepay_request()).await),
    );
    let wx = wechat(unsigned(404, "ORDER_NOT_EXIST").await, &platform);
    let (query, close) = (wx.query(&order_ref()).await, wx.close(&order_ref()).await);
    assert!(
        matches!(close, Err(ChannelError::Ambiguous(_))),
        "an unsigned 404 does not close: {close:?}"
    );
    rows.insert(
        "WX-ALL-UNSIGNED-4XX-QUERY",
        of_state(ChannelName::Wechatpay, &query, true),
    );
    let wx = wechat(unsigned(400, "PARAM_ERROR").await, &platform);
    let refund = wx.refund(&refund_request()).await.map(|(s, _)| s);
    let wx = wechat(unsigned(404, "RESOURCE_NOT_EXISTS").await, &platform);
    let rq = wx
        .refund_query(&payonce_channels::RefundRef {
            order: order_ref(),
            out_refund_no: "R1".into(),
            channel_data: None,
        })
        .await;
    assert!(
        matches!(rq, Err(ChannelError::Ambiguous(_))),
        "an unsigned 404 is not an absent refund: {rq:?}"
    );
    rows.insert("WX-ALL-UNSIGNED-4XX-REFUND", of_refund(&refund));
    // Alipay and UnionPay: a gateway error page.
    let a = alipay_client(stub(502, vec![], b"Bad Gateway".to_vec(), false).await);
    rows.insert(
        "ALI-ALL-HTTP",
        of_refund(
            &a.refund_query(&payonce_channels::RefundRef {
                order: order_ref(),
                out_refund_no: "R1".into(),
                channel_data: None,
            })
            .await,
        ),
    );
    let u = unionpay_client(stub(500, vec![], b"error".to_vec(), false).await);
    rows.insert(
        "UP-ALL-HTTP",
        of_state(ChannelName::Unionpay, &u.query(&order_ref()).await, false),
    );
    // UnionPay: the consume form is built locally; nothing exists at UnionPay until the payer submits it.
    rows.insert("UP-P-FORM", of_prepay(&u.prepay(&prepay_request()).await));
    rows
}

/// WeChat notifications: trade and refund resources, and forged / probe signatures.
fn wx_notification_rows() -> BTreeMap<&'static str, String> {
    let mut rows = BTreeMap::new();
    let t: wechatpay::protocol::Transaction =
        serde_json::from_slice(&wx_transaction("SUCCESS")).unwrap();
    rows.insert(
        "WX-N-TRANSACTION.SUCCESS",
        of_state(
            ChannelName::Wechatpay,
            &Ok(wechatpay::trade_state_of(&t)),
            false,
        ),
    );
    for (id, status) in [
        ("WX-N-REFUND.SUCCESS", "SUCCESS"),
        ("WX-N-REFUND.ABNORMAL", "ABNORMAL"),
        ("WX-N-REFUND.CLOSED", "CLOSED"),
    ] {
        rows.insert(id, of_refund(&Ok(wechatpay::refund_state_of(status))));
    }
    let platform = RsaSigner::generate();
    let mut keys = PlatformKeys::default();
    keys.0.insert("PUB_KEY_ID_T".into(), platform.verifier());
    let ts = payonce_core::SystemClock.now().0 / 1000;
    let verify = |sig: &str, serial: &str| {
        keys.verify(
            Some(serial),
            Some(&ts.to_string()),
            Some("N"),
            Some(sig),
            b"{}",
            ts,
        )
    };
    rows.insert(
        "WX-N-SIGNTEST",
        if verify("WECHATPAY/SIGNTEST/abc", "PUB_KEY_ID_T").is_err() {
            "unknown → query"
        } else {
            "accepted"
        }
        .to_owned(),
    );
    let other = RsaSigner::generate().sign_b64(&wechatpay::protocol::response_message(
        &ts.to_string(),
        "N",
        b"{}",
    ));
    rows.insert(
        "WX-N-BADSIG",
        if verify(&other, "PUB_KEY_ID_T").is_err() && verify(&other, "UNKNOWN").is_err() {
            "unknown → query"
        } else {
            "accepted"
        }
        .to_owned(),
    );
    rows
}

#[tokio::test]
async fn every_row_of_the_answer_tables() {
    let table = table();
    let mut got: BTreeMap<String, String> = BTreeMap::new();
    let mut put = |id: &str, c: String| {
        assert!(got.insert(id.to_owned(), c).is_none(), "{id} tested twice");
    };
    let wx = ChannelName::Wechatpay;

    // WeChat: every call.
    put(
        "WX-ALL-5XX",
        of_prepay(&wechatpay::prepay_outcome(500, &wx_error("SYSTEM_ERROR"))),
    );
    put(
        "WX-ALL-202",
        of_prepay(&wechatpay::prepay_outcome(202, b"")),
    );
    put(
        "WX-ALL-429",
        of_refund(&wechatpay::refund_outcome(
            429,
            &wx_error("FREQUENCY_LIMITED"),
        )),
    );
    put(
        "WX-ALL-UNKNOWN",
        of_prepay(&wechatpay::prepay_outcome(418, &wx_error("SOMETHING_NEW"))),
    );
    // Prepay.
    put(
        "WX-P-200",
        of_prepay(&wechatpay::prepay_outcome(
            200,
            br#"{"code_url":"weixin://wxpay/bizpayurl?pr=x"}"#,
        )),
    );
    put(
        "WX-P-200-EMPTY",
        of_prepay(&wechatpay::prepay_outcome(200, b"{}")),
    );
    for (id, status, code) in [
        ("WX-P-400-PARAM_ERROR", 400, "PARAM_ERROR"),
        ("WX-P-400-INVALID_REQUEST", 400, "INVALID_REQUEST"),
        (
            "WX-P-400-APPID_MCHID_NOT_MATCH",
            400,
            "APPID_MCHID_NOT_MATCH",
        ),
        ("WX-P-400-MCH_NOT_EXISTS", 400, "MCH_NOT_EXISTS"),
        ("WX-P-400-ORDER_CLOSED", 400, "ORDER_CLOSED"),
        ("WX-P-401", 401, "SIGN_ERROR"),
        ("WX-P-403-NO_AUTH", 403, "NO_AUTH"),
        ("WX-P-403-RULE_LIMIT", 403, "RULE_LIMIT"),
        ("WX-P-403-NOT_ENOUGH", 403, "NOT_ENOUGH"),
        ("WX-P-403-OUT_TRADE_NO_USED", 403, "OUT_TRADE_NO_USED"),
        ("WX-P-403-ORDERPAID", 403, "ORDERPAID"),
        ("WX-P-404", 404, "ORDER_NOT_EXIST"),
    ] {
        put(
            id,
            of_prepay(&wechatpay::prepay_outcome(status, &wx_error(code))),
        );
    }
    // Query.
    for (id, state) in [
        ("WX-Q-SUCCESS", "SUCCESS"),
        ("WX-Q-REFUND", "REFUND"),
        ("WX-Q-NOTPAY", "NOTPAY"),
        ("WX-Q-USERPAYING", "USERPAYING"),
        ("WX-Q-PAYERROR", "PAYERROR"),
        ("WX-Q-CLOSED", "CLOSED"),
        ("WX-Q-REVOKED", "REVOKED"),
        ("WX-Q-OTHER", "SOMETHING_NEW"),
    ] {
        put(id, wx_query(200, &wx_transaction(state)));
    }
    put(
        "WX-Q-MISMATCH",
        of_state(
            wx,
            &wechatpay::query_outcome(200, &wx_transaction("SUCCESS"), "another-mchid", NO),
            false,
        ),
    );
    put("WX-Q-404", wx_query(404, &wx_error("ORDER_NOT_EXIST")));
    put("WX-Q-400", wx_query(400, &wx_error("PARAM_ERROR")));
    put("WX-Q-401", wx_query(401, &wx_error("SIGN_ERROR")));
    put("WX-Q-403", wx_query(403, &wx_error("NO_AUTH")));
    // Close.
    put(
        "WX-C-204",
        of_close(wx, &wechatpay::close_outcome(204, b"")),
    );
    put(
        "WX-C-400-ORDER_CLOSED",
        of_close(
            wx,
            &wechatpay::close_outcome(400, &wx_error("ORDER_CLOSED")),
        ),
    );
    put(
        "WX-C-403-ORDERPAID",
        of_close(wx, &wechatpay::close_outcome(403, &wx_error("ORDERPAID"))),
    );
    put(
        "WX-C-404",
        of_close(
            wx,
            &wechatpay::close_outcome(404, &wx_error("ORDER_NOT_EXIST")),
        ),
    );
    put(
        "WX-C-400",
        of_close(wx, &wechatpay::close_outcome(400, &wx_error("PARAM_ERROR"))),
    );
    put(
        "WX-C-401",
        of_close(wx, &wechatpay::close_outcome(401, &wx_error("SIGN_ERROR"))),
    );
    put(
        "WX-C-403",
        of_close(wx, &wechatpay::close_outcome(403, &wx_error("TRADE_ERROR"))),
    );
    // Refund.
    for (id, status) in [
        ("WX-R-200-PROCESSING", "PROCESSING"),
        ("WX-R-200-SUCCESS", "SUCCESS"),
        ("WX-R-200-ABNORMAL", "ABNORMAL"),
        ("WX-R-200-CLOSED", "CLOSED"),
        ("WX-R-200-OTHER", "SOMETHING_NEW"),
    ] {
        put(
            id,
            of_refund(&wechatpay::refund_outcome(200, &wx_refund(status))),
        );
    }
    for (id, status, code) in [
        ("WX-R-400-PARAM_ERROR", 400, "PARAM_ERROR"),
        ("WX-R-400-INVALID_REQUEST", 400, "INVALID_REQUEST"),
        ("WX-R-400-MCH_NOT_EXISTS", 400, "MCH_NOT_EXISTS"),
        ("WX-R-401", 401, "SIGN_ERROR"),
        ("WX-R-403-NOT_ENOUGH", 403, "NOT_ENOUGH"),
        (
            "WX-R-403-USER_ACCOUNT_ABNORMAL",
            403,
            "USER_ACCOUNT_ABNORMAL",
        ),
        ("WX-R-403-NO_AUTH", 403, "NO_AUTH"),
        ("WX-R-404", 404, "RESOURCE_NOT_EXISTS"),
    ] {
        put(
            id,
            of_refund(&wechatpay::refund_outcome(status, &wx_error(code))),
        );
    }
    // Refund query.
    for (id, status) in [
        ("WX-RQ-SUCCESS", "SUCCESS"),
        ("WX-RQ-PROCESSING", "PROCESSING"),
        ("WX-RQ-ABNORMAL", "ABNORMAL"),
        ("WX-RQ-CLOSED", "CLOSED"),
        ("WX-RQ-OTHER", "NEW"),
    ] {
        put(
            id,
            of_refund(&wechatpay::refund_query_outcome(200, &wx_refund(status))),
        );
    }
    put(
        "WX-RQ-404",
        of_refund(&wechatpay::refund_query_outcome(
            404,
            &wx_error("RESOURCE_NOT_EXISTS"),
        )),
    );
    put(
        "WX-RQ-4XX",
        of_refund(&wechatpay::refund_query_outcome(
            400,
            &wx_error("PARAM_ERROR"),
        )),
    );
    for (id, c) in wx_notification_rows() {
        put(id, c);
    }
    // An event type payonce does not handle: not applied, answered with a failure.
    put(
        "WX-N-OTHER",
        of_notification(&Err(NotifyError::Malformed(
            "unsupported event_type".into(),
        ))),
    );

    // Alipay: every call.
    let ali_key = RsaSigner::generate();
    let signed = alipay::verify_answer(
        r#"{"alipay_trade_query_response":{"code":"10000"},"sign":"AAAA"}"#,
        "alipay.trade.query",
        &ali_key.verifier(),
    );
    put(
        "ALI-ALL-BADSIGN",
        of_state(ChannelName::Alipay, &alipay::query_outcome(signed), false),
    );
    let unsigned = alipay::verify_answer(
        r#"{"error_response":{"code":"40002","sub_code":"isv.invalid-signature"}}"#,
        "alipay.trade.refund",
        &ali_key.verifier(),
    );
    put(
        "ALI-ALL-ERROR_RESPONSE",
        of_refund(&alipay::refund_outcome(unsigned)),
    );
    put(
        "ALI-ALL-20000",
        of_refund(&alipay::refund_outcome(ali("20000", "isp.unknow-error"))),
    );
    put(
        "ALI-ALL-ACQ.SYSTEM_ERROR",
        of_refund(&alipay::refund_outcome(ali("40004", "ACQ.SYSTEM_ERROR"))),
    );
    for (id, code, sub) in [
        ("ALI-ALL-20001", "20001", "aop.invalid-auth-token"),
        ("ALI-ALL-40001", "40001", "isv.missing-method"),
        ("ALI-ALL-40002", "40002", "isv.invalid-signature"),
        ("ALI-ALL-40006", "40006", "isv.insufficient-isv-permissions"),
    ] {
        put(id, of_prepay(&alipay::precreate_outcome(ali(code, sub))));
    }
    put(
        "ALI-ALL-UNKNOWN",
        of_prepay(&alipay::precreate_outcome(ali(
            "40004",
            "ACQ.SOMETHING_NEW",
        ))),
    );
    // Precreate.
    put(
        "ALI-P-10000",
        of_prepay(&alipay::precreate_outcome(ali_ok(
            json!({"qr_code": "https://qr.alipay.com/x"}),
        ))),
    );
    put(
        "ALI-P-10000-NOQR",
        of_prepay(&alipay::precreate_outcome(ali_ok(json!({})))),
    );
    for (id, sub) in [
        ("ALI-P-ACQ.TRADE_HAS_SUCCESS", "ACQ.TRADE_HAS_SUCCESS"),
        ("ALI-P-ACQ.TRADE_HAS_CLOSE", "ACQ.TRADE_HAS_CLOSE"),
        ("ALI-P-ACQ.CONTEXT_INCONSISTENT", "ACQ.CONTEXT_INCONSISTENT"),
        ("ALI-P-ACQ.INVALID_PARAMETER", "ACQ.INVALID_PARAMETER"),
        ("ALI-P-ACQ.ACCESS_FORBIDDEN", "ACQ.ACCESS_FORBIDDEN"),
        ("ALI-P-ACQ.TOTAL_FEE_EXCEED", "ACQ.TOTAL_FEE_EXCEED"),
    ] {
        put(id, of_prepay(&alipay::precreate_outcome(ali("40004", sub))));
    }
    // Query.
    for (id, status) in [
        ("ALI-Q-TRADE_SUCCESS", "TRADE_SUCCESS"),
        ("ALI-Q-TRADE_FINISHED", "TRADE_FINISHED"),
        ("ALI-Q-WAIT_BUYER_PAY", "WAIT_BUYER_PAY"),
        ("ALI-Q-TRADE_CLOSED", "TRADE_CLOSED"),
        ("ALI-Q-OTHER", "SOMETHING_NEW"),
    ] {
        put(id, ali_query(ali_trade(status), false));
    }
    put(
        "ALI-Q-ACQ.TRADE_NOT_EXIST",
        ali_query(ali("40004", "ACQ.TRADE_NOT_EXIST"), false),
    );
    put(
        "ALI-Q-ACQ.TRADE_NOT_EXIST-EXPIRED",
        ali_query(ali("40004", "ACQ.TRADE_NOT_EXIST"), true),
    );
    put(
        "ALI-Q-ACQ.INVALID_PARAMETER",
        ali_query(ali("40004", "ACQ.INVALID_PARAMETER"), false),
    );
    // Close.
    let al = ChannelName::Alipay;
    put(
        "ALI-C-10000",
        of_close(
            al,
            &alipay::close_outcome(ali_ok(json!({"out_trade_no": NO}))),
        ),
    );
    for (id, sub) in [
        ("ALI-C-ACQ.TRADE_NOT_EXIST", "ACQ.TRADE_NOT_EXIST"),
        ("ALI-C-ACQ.TRADE_STATUS_ERROR", "ACQ.TRADE_STATUS_ERROR"),
        (
            "ALI-C-ACQ.REASON_ILLEGAL_STATUS",
            "ACQ.REASON_ILLEGAL_STATUS",
        ),
        (
            "ALI-C-ACQ.REASON_TRADE_STATUS_INVALID",
            "ACQ.REASON_TRADE_STATUS_INVALID",
        ),
        ("ALI-C-ACQ.INVALID_PARAMETER", "ACQ.INVALID_PARAMETER"),
    ] {
        put(id, of_close(al, &alipay::close_outcome(ali("40004", sub))));
    }
    // Refund.
    put(
        "ALI-R-10000-Y",
        of_refund(&alipay::refund_outcome(ali_ok(json!({"fund_change": "Y"})))),
    );
    put(
        "ALI-R-10000-N",
        of_refund(&alipay::refund_outcome(ali_ok(json!({"fund_change": "N"})))),
    );
    for sub in [
        "ACQ.SELLER_BALANCE_NOT_ENOUGH",
        "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL",
        "ACQ.REASON_TRADE_BEEN_FREEZEN",
        "ACQ.TRADE_HAS_FINISHED",
        "ACQ.TRADE_NOT_ALLOW_REFUND",
        "ACQ.REASON_TRADE_REFUND_FEE_ERR",
        "ACQ.INVALID_PARAMETER",
        "ACQ.DISCORDANT_REPEAT_REQUEST",
        "ACQ.TRADE_NOT_EXIST",
        "ACQ.TRADE_STATUS_ERROR",
        "ACQ.REFUND_CHARGE_ERROR",
    ] {
        put(
            &format!("ALI-R-{sub}"),
            of_refund(&alipay::refund_outcome(ali("40004", sub))),
        );
    }
    // Refund query.
    put(
        "ALI-RQ-REFUND_SUCCESS",
        of_refund(&alipay::refund_query_outcome(ali_ok(
            json!({"refund_status": "REFUND_SUCCESS", "refund_amount": "0.10"}),
        ))),
    );
    put(
        "ALI-RQ-NO_STATUS",
        of_refund(&alipay::refund_query_outcome(ali_ok(json!({})))),
    );
    put(
        "ALI-RQ-ACQ.TRADE_NOT_EXIST",
        of_refund(&alipay::refund_query_outcome(ali(
            "40004",
            "ACQ.TRADE_NOT_EXIST",
        ))),
    );
    put(
        "ALI-RQ-ACQ.INVALID_PARAMETER",
        of_refund(&alipay::refund_query_outcome(ali(
            "40004",
            "ACQ.INVALID_PARAMETER",
        ))),
    );
    // Notifications.
    put("ALI-N-TRADE_SUCCESS", ali_notify("TRADE_SUCCESS", &[]));
    put("ALI-N-TRADE_FINISHED", ali_notify("TRADE_FINISHED", &[]));
    put("ALI-N-TRADE_CLOSED", ali_notify("TRADE_CLOSED", &[]));
    put("ALI-N-WAIT_BUYER_PAY", ali_notify("WAIT_BUYER_PAY", &[]));
    put(
        "ALI-N-REFUND",
        ali_notify(
            "TRADE_SUCCESS",
            &[
                ("out_biz_no", "R1"),
                ("refund_fee", "0.10"),
                ("gmt_refund", "2026-11-25 11:00:00"),
            ],
        ),
    );
    let params: Vec<(String, String)> = vec![
        ("app_id".into(), "2021".into()),
        ("sign".into(), "AAAA".into()),
    ];
    put(
        "ALI-N-BADSIG",
        if alipay::protocol::verify_notification(&ali_key.verifier(), &params) {
            "accepted".into()
        } else {
            "unknown → query".into()
        },
    );
    // Alipay notification for another app: refused too.
    assert!(alipay::read_notification(&[("app_id".into(), "9999".into())], "2021").is_err());

    // UnionPay: every call.
    put("UP-ALL-BADSIG", up_badsig());
    put("UP-ALL-03/04/05", up_query("03", None, false));
    assert_eq!(up_query("04", None, false), up_query("05", None, false));
    put("UP-ALL-UNKNOWN", up_query("ZZ", None, false));
    // Query.
    put("UP-Q-00-00", up_query("00", Some("00"), false));
    put("UP-Q-00-A6", up_query("00", Some("A6"), false));
    put("UP-Q-00-03/04/05", up_query("00", Some("05"), false));
    put("UP-Q-00-FAIL", up_query("00", Some("01"), false));
    put("UP-Q-00-FAIL-LATE", up_query("00", Some("01"), true));
    put("UP-Q-00-NONE", up_query("00", None, false));
    put("UP-Q-34", up_query("34", None, false));
    put(
        "UP-Q-34-LATE",
        of_state(
            ChannelName::Unionpay,
            &unionpay::consume_state(&up(&[("respCode", "34")])),
            true,
        ),
    );
    put("UP-Q-01/02/06", up_query("06", None, false));
    put("UP-Q-10..14", up_query("11", None, false));
    put("UP-Q-37", up_query("37", None, false));
    put("UP-Q-3X", up_query("31", None, false));
    // Close (a query).
    put(
        "UP-C-PAID",
        of_state(
            ChannelName::Unionpay,
            &unionpay::consume_state(&up(&[("respCode", "00"), ("origRespCode", "00")])),
            false,
        ),
    );
    put(
        "UP-C-UNPAID",
        of_close(
            ChannelName::Unionpay,
            &unionpay::consume_state(&up(&[("respCode", "34")])).map(unionpay::close_from_query),
        ),
    );
    put("UP-C-LATE", up_query("00", Some("01"), true));
    // Refund.
    put("UP-R-00", up_refund("00"));
    put(
        "UP-R-03/04/05",
        of_refund(&unionpay::refund_query_state(&up(&[("respCode", "03")]))),
    );
    assert_eq!(
        up_refund("03"),
        "refund pending",
        "a timed-out refund call is queried (never re-sent)"
    );
    put("UP-R-12", up_refund("12"));
    put("UP-R-02/06/37/99", up_refund("37"));
    assert!(
        ["02", "06", "99"]
            .iter()
            .all(|c| up_refund(c) == "unknown → query")
    );
    put("UP-R-10/11/13", up_refund("11"));
    put("UP-R-01/30", up_refund("30"));
    put("UP-R-31/32/33", up_refund("33"));
    put("UP-R-35/36", up_refund("35"));
    put("UP-R-38/39", up_refund("39"));
    put("UP-R-60..80", up_refund("71"));
    // Refund query.
    put("UP-RQ-00-00", up_refund_query("00", Some("00")));
    put("UP-RQ-00-03/04/05", up_refund_query("00", Some("04")));
    put("UP-RQ-00-FAIL", up_refund_query("00", Some("01")));
    put("UP-RQ-34", up_refund_query("34", None));
    put("UP-RQ-OTHER", up_refund_query("06", None));
    // Notifications.
    put("UP-N-01-00", up_notify("01", "00"));
    put("UP-N-01-OTHER", up_notify("01", "01"));
    put("UP-N-04-00", up_notify("04", "00"));
    put("UP-N-04-03/04/05", up_notify("04", "05"));
    put("UP-N-04-OTHER", up_notify("04", "30"));
    put("UP-N-BADSIG", up_badsig());

    for (id, c) in transport_rows().await {
        put(id, c);
    }

    let mut problems = Vec::new();
    for (id, expected) in &table {
        match got.get(id) {
            None => problems.push(format!("{id}: no test")),
            Some(c) if c != expected => problems.push(format!(
                "{id}: the table says `{expected}`, payonce concludes `{c}`"
            )),
            Some(_) => {}
        }
    }
    for id in got.keys().filter(|id| !table.contains_key(*id)) {
        problems.push(format!("{id}: tested but not in docs/channels.md"));
    }
    assert!(
        problems.is_empty(),
        "{} of {} rows disagree:\n{}",
        problems.len(),
        table.len(),
        problems.join("\n")
    );
}

#[test]
fn alipay_text_cannot_recut_a_signed_notification() {
    assert_eq!(
        alipay::alipay_text("Tom & Jerry = 1/2"),
        "Tom ＆ Jerry ＝ 1／2"
    );
    let _ = Timestamp(0);
}
