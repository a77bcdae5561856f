//! Notifications built with the simulator's own keys, as each channel would send them — and
//! hostile variants of them — so tests can aim exactly the message they mean at payonce.

use payonce_channels::alipay::protocol as ali;
use payonce_channels::crypto::RsaSigner;
use payonce_channels::wechatpay::protocol as wx;
use serde_json::json;
use std::path::Path;

pub use payonce_harness::app::Forged;

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// How to spoil a WeChat Pay notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WxFault {
    None,
    /// Signed by a key that is not the platform's.
    BadSignature,
    /// A `Wechatpay-Serial` payonce does not know.
    UnknownSerial,
    /// A timestamp ten minutes old (correctly signed).
    Stale,
    /// A flipped byte in the ciphertext (signature recomputed, so only the GCM tag catches it).
    TamperedCiphertext,
}

/// A `TRANSACTION.SUCCESS` notification for `out_trade_no` with `amount.total = total` and
/// `amount.payer_total = payer_total` (a discount makes them differ; only `total` counts).
pub fn wechat_paid(
    sim_dir: &Path,
    event_id: &str,
    out_trade_no: &str,
    total: i64,
    payer_total: i64,
    fault: WxFault,
) -> Forged {
    wechat_paid_by(
        sim_dir,
        &WxMerchant::first(),
        event_id,
        out_trade_no,
        total,
        payer_total,
        fault,
    )
}

/// One of the simulator's WeChat merchants, as its `channels.toml` names it.
pub struct WxMerchant {
    /// The merchant's — for a sub-merchant, its provider's (`sp_mchid`, `sp_appid`).
    pub mchid: String,
    pub appid: String,
    /// The APIv3 key file in the simulator's state dir (a sub-merchant's is its provider's).
    pub apiv3_key_file: String,
    /// A sub-merchant's own number and appid: its messages name them beside the provider's.
    pub sub_mchid: Option<String>,
    pub sub_appid: Option<String>,
}

impl WxMerchant {
    /// The simulator's first (or only) merchant.
    pub fn first() -> Self {
        WxMerchant {
            mchid: "1900000001".into(),
            appid: "wxd678efh567hg6787".into(),
            apiv3_key_file: "wechatpay_apiv3.key".into(),
            sub_mchid: None,
            sub_appid: None,
        }
    }

    /// The merchant of account `name` in the simulator's `channels.toml`.
    pub fn of_account(sim_dir: &Path, name: &str) -> Self {
        let cfg = payonce_channels::ChannelsConfig::load(&sim_dir.join("channels.toml")).unwrap();
        let find = |name: &str| {
            cfg.wechatpay
                .0
                .iter()
                .find(|w| w.name.as_deref().unwrap_or("default") == name)
                .unwrap_or_else(|| panic!("no wechatpay account {name}"))
        };
        let w = find(name);
        // A sub-merchant's messages are its provider's keys and numbers, plus its own.
        let own = w.provider.as_deref().map_or(w, find);
        WxMerchant {
            mchid: own.mchid.clone().unwrap(),
            appid: own.appid.clone().unwrap(),
            apiv3_key_file: own
                .apiv3_key_file
                .as_ref()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned(),
            sub_mchid: w.sub_mchid.clone(),
            sub_appid: w.sub_appid.clone(),
        }
    }
}

/// `wechat_paid` as merchant `m` would receive it: encrypted with its APIv3 key, naming its
/// `mchid` and `appid`, signed by the (shared) platform key.
pub fn wechat_paid_by(
    sim_dir: &Path,
    m: &WxMerchant,
    event_id: &str,
    out_trade_no: &str,
    total: i64,
    payer_total: i64,
    fault: WxFault,
) -> Forged {
    let apiv3 = read(sim_dir, &m.apiv3_key_file);
    let ids = read(sim_dir, "wechatpay_ids");
    let key_id = ids.lines().nth(1).unwrap().to_owned();
    let platform = RsaSigner::from_pem(&read(sim_dir, "wechatpay_platform_key.pem")).unwrap();
    let mut t = json!({
        "out_trade_no": out_trade_no,
        // One payment number per channel order, as WeChat numbers them.
        "transaction_id": payment_number("42000000", out_trade_no), "trade_type": "NATIVE", "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功", "success_time": "2026-11-23T10:00:00+08:00",
        "amount": {"total": total, "payer_total": payer_total, "currency": "CNY", "payer_currency": "CNY"},
    });
    match &m.sub_mchid {
        // A partner transaction (服务商): the provider's numbers, then the sub-merchant's.
        Some(sub) => {
            t["sp_mchid"] = json!(m.mchid);
            t["sp_appid"] = json!(m.appid);
            t["sub_mchid"] = json!(sub);
            if let Some(a) = &m.sub_appid {
                t["sub_appid"] = json!(a);
            }
        }
        None => {
            t["mchid"] = json!(m.mchid);
            t["appid"] = json!(m.appid);
        }
    }
    let (nonce, mut ct) = wx::encrypt_resource(
        apiv3.trim().as_bytes(),
        "transaction",
        t.to_string().as_bytes(),
    );
    if fault == WxFault::TamperedCiphertext {
        let mut raw = payonce_channels::crypto::b64_decode(&ct).unwrap();
        raw[3] ^= 0x20;
        ct = payonce_channels::crypto::b64(&raw);
    }
    let body = json!({
        "id": event_id, "create_time": "2026-11-23T10:00:01+08:00", "resource_type": "encrypt-resource",
        "event_type": "TRANSACTION.SUCCESS", "summary": "支付成功",
        "resource": {"original_type": "transaction", "algorithm": "AEAD_AES_256_GCM", "ciphertext": ct,
                     "associated_data": "transaction", "nonce": nonce},
    })
    .to_string();
    let ts = if fault == WxFault::Stale {
        now_secs() - 600
    } else {
        now_secs()
    }
    .to_string();
    let n = "5K8264ILTKCH16CQ2502SI8ZNMTM67VS";
    let signer = if fault == WxFault::BadSignature {
        RsaSigner::generate()
    } else {
        platform
    };
    let sig = signer.sign_b64(&wx::response_message(&ts, n, body.as_bytes()));
    let serial = if fault == WxFault::UnknownSerial {
        "PUB_KEY_ID_UNKNOWN".to_owned()
    } else {
        key_id
    };
    Forged {
        headers: vec![
            ("Wechatpay-Timestamp".into(), ts),
            ("Wechatpay-Nonce".into(), n.into()),
            ("Wechatpay-Signature".into(), sig),
            ("Wechatpay-Serial".into(), serial),
            ("Wechatpay-Signature-Type".into(), wx::SIGNATURE_TYPE.into()),
        ],
        content_type: "application/json",
        body,
    }
}

/// A `REFUND.<status>` notification for `out_refund_no`, signed and encrypted as WeChat does.
pub fn wechat_refund(
    sim_dir: &Path,
    event_id: &str,
    out_trade_no: &str,
    out_refund_no: &str,
    status: &str,
    fault: WxFault,
) -> Forged {
    let apiv3 = read(sim_dir, "wechatpay_apiv3.key");
    let key_id = read(sim_dir, "wechatpay_ids")
        .lines()
        .nth(1)
        .unwrap()
        .to_owned();
    let platform = RsaSigner::from_pem(&read(sim_dir, "wechatpay_platform_key.pem")).unwrap();
    let r = json!({"mchid": "1900000001", "out_trade_no": out_trade_no, "out_refund_no": out_refund_no, "refund_id": "503000",
        "refund_status": status, "amount": {"total": 100, "refund": 100, "payer_total": 100, "payer_refund": 100}});
    let (nonce, ct) =
        wx::encrypt_resource(apiv3.trim().as_bytes(), "refund", r.to_string().as_bytes());
    let body = json!({"id": event_id, "create_time": "2026-11-23T10:00:01+08:00", "resource_type": "encrypt-resource",
        "event_type": format!("REFUND.{status}"), "summary": "退款",
        "resource": {"original_type": "refund", "algorithm": "AEAD_AES_256_GCM", "ciphertext": ct, "associated_data": "refund", "nonce": nonce}})
    .to_string();
    let ts = now_secs().to_string();
    let n = "R5K8264ILTKCH16CQ2502SI8ZNMTM67V";
    let signer = if fault == WxFault::BadSignature {
        RsaSigner::generate()
    } else {
        platform
    };
    let sig = signer.sign_b64(&wx::response_message(&ts, n, body.as_bytes()));
    Forged {
        headers: vec![
            ("Wechatpay-Timestamp".into(), ts),
            ("Wechatpay-Nonce".into(), n.into()),
            ("Wechatpay-Signature".into(), sig),
            ("Wechatpay-Serial".into(), key_id),
            ("Wechatpay-Signature-Type".into(), wx::SIGNATURE_TYPE.into()),
        ],
        content_type: "application/json",
        body,
    }
}

/// How to spoil an Alipay notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AliFault {
    None,
    BadSignature,
    /// `total_amount` changed after signing.
    TamperedAmount,
    /// Another app's `app_id` (correctly signed).
    WrongApp,
}

/// A `TRADE_SUCCESS` asynchronous notification for `out_trade_no` of `total_amount` yuan.
pub fn alipay_paid(
    sim_dir: &Path,
    notify_id: &str,
    out_trade_no: &str,
    total_amount: &str,
    fault: AliFault,
) -> Forged {
    let app_id = if fault == AliFault::WrongApp {
        "2021000000009999"
    } else {
        "2021000000000001"
    };
    alipay_paid_as(
        sim_dir,
        app_id,
        None,
        notify_id,
        out_trade_no,
        total_amount,
        fault,
    )
}

/// `alipay_paid` naming `app_id` and, when given, `auth_app_id` (an ISV's app and the merchant
/// that authorised it), signed with the simulated Alipay's key: a genuine message of that
/// merchant.
pub fn alipay_paid_as(
    sim_dir: &Path,
    app_id: &str,
    auth_app_id: Option<&str>,
    notify_id: &str,
    out_trade_no: &str,
    total_amount: &str,
    fault: AliFault,
) -> Forged {
    let trade_no = payment_number("2026112322001", out_trade_no);
    let key = RsaSigner::from_pem(&read(sim_dir, "alipay_private_key.pem")).unwrap();
    let mut p: Vec<(String, String)> = [
        ("notify_type", "trade_status_sync"),
        ("notify_id", notify_id),
        ("app_id", app_id),
        ("charset", "utf-8"),
        ("version", "1.0"),
        ("trade_no", &trade_no),
        ("out_trade_no", out_trade_no),
        ("trade_status", "TRADE_SUCCESS"),
        ("total_amount", total_amount),
        ("buyer_pay_amount", total_amount),
        ("gmt_payment", "2026-11-23 10:00:00"),
        ("notify_time", "2026-11-23 10:00:01"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let Some(a) = auth_app_id {
        p.push(("auth_app_id".into(), a.into()));
    }
    let signer = if fault == AliFault::BadSignature {
        RsaSigner::generate()
    } else {
        key
    };
    let sign = signer.sign_b64(ali::sign_content(&p, &["sign_type"]).as_bytes());
    p.push(("sign_type".into(), "RSA2".into()));
    p.push(("sign".into(), sign));
    if fault == AliFault::TamperedAmount {
        for (k, v) in p.iter_mut() {
            if k == "total_amount" {
                *v = "0.01".into();
            }
        }
    }
    Forged {
        headers: vec![],
        content_type: "application/x-www-form-urlencoded",
        body: ali::encode_form(&p),
    }
}

/// How to spoil a UnionPay notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpFault {
    None,
    /// `txnAmt` changed after signing.
    TamperedAmount,
    /// `signPubKeyCert` is a certificate that chains to the root but is not UnionPay's.
    NotUnionpayCert,
    /// `signPubKeyCert` is the root itself: it does not chain through the intermediate.
    UnchainedCert,
}

/// A successful-consume `backUrl` notification signed with the simulator's UnionPay key.
pub fn unionpay_paid(
    sim_dir: &Path,
    order_id: &str,
    txn_time: &str,
    txn_amt: i64,
    query_id: &str,
    fault: UpFault,
) -> Forged {
    use payonce_channels::unionpay::protocol as up;
    let key = RsaSigner::from_pem(&read(sim_dir, "unionpay_sign_key.pem")).unwrap();
    let cert = match fault {
        UpFault::NotUnionpayCert => read(sim_dir, "unionpay_merchant_cert.pem"),
        UpFault::UnchainedCert => read(sim_dir, "unionpay_root.pem"),
        _ => read(sim_dir, "unionpay_sign_cert.pem"),
    };
    let mut p: Vec<(String, String)> = [
        ("version", "5.1.0"),
        ("encoding", "UTF-8"),
        ("signMethod", "01"),
        ("txnType", "01"),
        ("txnSubType", "01"),
        ("bizType", "000201"),
        ("accessType", "0"),
        ("merId", "777290058110048"),
        ("orderId", order_id),
        ("txnTime", txn_time),
        ("currencyCode", "156"),
        ("queryId", query_id),
        ("respCode", "00"),
        ("respMsg", "成功[0000000]"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    p.push(("txnAmt".into(), txn_amt.to_string()));
    p.push(("signPubKeyCert".into(), cert));
    let sig = up::sign(&key, &p);
    p.push(("signature".into(), sig));
    if fault == UpFault::TamperedAmount {
        for (k, v) in p.iter_mut() {
            if k == "txnAmt" {
                *v = "1".into();
            }
        }
    }
    Forged {
        headers: vec![],
        content_type: "application/x-www-form-urlencoded",
        body: payonce_channels::form::encode(&p),
    }
}

/// A channel's payment number for one channel order: the same order always gets the same
/// number, different orders different ones (as the channels number them).
fn payment_number(prefix: &str, out_trade_no: &str) -> String {
    let hex = payonce_channels::crypto::sha256_hex(out_trade_no.as_bytes());
    let n = u64::from_str_radix(&hex[..15], 16).expect("hex digits");
    format!("{prefix}{:015}", n % 1_000_000_000_000_000)
}
