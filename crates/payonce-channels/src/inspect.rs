//! "Did this really come from the channel, and what does it say?" — one message (a synchronous
//! answer or a notification) checked with the same verifiers and read with the same answer
//! tables the connectors use, against keys and certificates the operator supplies. Behind
//! `payonce verify-message`.

use crate::crypto::{Certificate, RsaVerifier, pem_decode};
use crate::wechatpay::protocol::PlatformKeys;
use crate::{
    ChannelError, CloseAnswer, NotifyError, RefundState, TradeState, alipay, unionpay, wechatpay,
};
use payonce_core::ChannelName;
use serde_json::{Map, Value, json};

/// What a message answers (for answers) — `None`: inferred from the body where it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Prepay,
    Query,
    Close,
    Refund,
    RefundQuery,
}

impl Operation {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "prepay" => Operation::Prepay,
            "query" => Operation::Query,
            "close" => Operation::Close,
            "refund" => Operation::Refund,
            "refund_query" => Operation::RefundQuery,
            _ => return None,
        })
    }
}

pub struct Request<'a> {
    pub channel: ChannelName,
    /// `true`: an asynchronous notification; `false`: a synchronous answer.
    pub notification: bool,
    pub body: &'a [u8],
    /// HTTP headers, names lower-cased (WeChat).
    pub headers: Vec<(String, String)>,
    /// PEM or DER public keys / certificates.
    pub trust: Vec<Vec<u8>>,
    pub operation: Option<Operation>,
    /// Unix seconds: certificate validity and timestamp windows are judged as of then.
    pub at_secs: i64,
    pub apiv3_key: Option<Vec<u8>>,
    pub accept_test_owner: bool,
}

/// The verdict: printed as `{"valid", "reason", "fields", "outcome"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub valid: bool,
    pub reason: Option<String>,
    pub fields: Value,
    /// `paid` · `not_paid` · `closed` · `absent` · `unknown` · `refunded` · `refund_pending` ·
    /// `refund_failed` · `refused`.
    pub outcome: Option<&'static str>,
}

impl Verdict {
    pub fn to_json(&self) -> Value {
        json!({"valid": self.valid, "reason": self.reason, "fields": self.fields, "outcome": self.outcome})
    }
}

/// Not a message of that channel at all (truncated, wrong format), or unusable trust material.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotAMessage(pub String);

pub fn inspect(req: &Request<'_>) -> Result<Verdict, NotAMessage> {
    match req.channel {
        ChannelName::Unionpay => unionpay_message(req),
        ChannelName::Alipay => alipay_message(req),
        ChannelName::Wechatpay => wechat_message(req),
        ChannelName::Sandbox => Err(NotAMessage(
            "sandbox messages are payonce's own; nothing to verify against".into(),
        )),
    }
}

fn invalid(fields: Value, reason: impl Into<String>) -> Verdict {
    Verdict {
        valid: false,
        reason: Some(reason.into()),
        fields,
        outcome: None,
    }
}

fn valid(fields: Value, outcome: Option<&'static str>) -> Verdict {
    Verdict {
        valid: true,
        reason: None,
        fields,
        outcome,
    }
}

fn pairs_json(p: &[(String, String)]) -> Value {
    Value::Object(
        p.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<Map<_, _>>(),
    )
}

fn certificates(trust: &[Vec<u8>]) -> Result<Vec<Certificate>, NotAMessage> {
    trust
        .iter()
        .map(|t| match std::str::from_utf8(t) {
            Ok(text) if text.contains("-----BEGIN") => Certificate::from_pem(text),
            _ => Certificate::from_der(t),
        })
        .collect::<Result<_, _>>()
        .map_err(|e| NotAMessage(format!("a --trust file is not a certificate: {e}")))
}

/// Public keys from PEM/DER public keys or certificates.
fn verifiers(trust: &[Vec<u8>]) -> Result<Vec<(Option<String>, RsaVerifier)>, NotAMessage> {
    trust
        .iter()
        .map(|t| {
            let text = std::str::from_utf8(t)
                .ok()
                .filter(|s| s.contains("-----BEGIN"));
            let der = match text {
                Some(text) => {
                    pem_decode(text)
                        .map_err(|e| NotAMessage(format!("--trust: {e}")))?
                        .1
                }
                None => t.clone(),
            };
            match Certificate::from_der(&der) {
                Ok(c) => Ok((Some(c.serial_hex.clone()), c.verifier)),
                Err(_) => RsaVerifier::from_der(&der)
                    .map(|v| (None, v))
                    .map_err(|e| NotAMessage(format!("--trust: not a key or certificate: {e}"))),
            }
        })
        .collect()
}

fn of_trade(r: Result<TradeState, ChannelError>) -> &'static str {
    match r {
        Ok(TradeState::Paid { .. }) => "paid",
        Ok(TradeState::Unpaid) => "not_paid",
        Ok(TradeState::Closed) => "closed",
        Ok(TradeState::Absent) => "absent",
        Err(ChannelError::Refused { .. }) => "refused",
        Err(_) => "unknown",
    }
}

fn of_refund(r: Result<RefundState, ChannelError>) -> &'static str {
    match r {
        Ok(RefundState::Succeeded) => "refunded",
        Ok(RefundState::Processing | RefundState::Abnormal) => "refund_pending",
        Ok(RefundState::Failed(_)) => "refund_failed",
        Ok(RefundState::Absent) => "absent",
        Ok(RefundState::NotFoundYet) => "unknown",
        Err(ChannelError::Refused { .. }) => "refused",
        Err(_) => "unknown",
    }
}

fn of_close(r: Result<CloseAnswer, ChannelError>) -> &'static str {
    match r {
        Ok(CloseAnswer::Closed) => "closed",
        Ok(CloseAnswer::AlreadyPaid) => "paid",
        Ok(CloseAnswer::Absent) => "absent",
        Err(ChannelError::Refused { .. }) => "refused",
        Err(_) => "unknown",
    }
}

fn of_prepay<T>(r: Result<T, ChannelError>) -> &'static str {
    match r {
        Ok(_) => "not_paid",
        Err(ChannelError::Refused { .. }) => "refused",
        Err(_) => "unknown",
    }
}

fn of_notification(r: &Result<crate::Notification, NotifyError>) -> Option<&'static str> {
    match r {
        Ok(n) => Some(match &n.refund {
            Some(notice) => of_refund(Ok(notice.state.clone())),
            None => of_trade(Ok(n.state.clone())),
        }),
        Err(_) => Some("unknown"),
    }
}

// ---- UnionPay ----

fn unionpay_message(req: &Request<'_>) -> Result<Verdict, NotAMessage> {
    // Answers are raw `k=v&…`; notifications are ordinary url-encoded forms.
    let fields = if req.notification {
        let f: Vec<(String, String)> = form_urlencoded::parse(req.body).into_owned().collect();
        if f.is_empty() || !f.iter().any(|(k, _)| k == "signature") {
            return Err(NotAMessage(
                "not a UnionPay notification form (no signature field)".into(),
            ));
        }
        f
    } else {
        let f = unionpay::protocol::parse_answer(req.body)
            .map_err(|e| NotAMessage(format!("not a UnionPay answer: {e}")))?;
        if !f.iter().any(|(k, _)| k == "signature") || !f.iter().any(|(k, _)| k == "respCode") {
            return Err(NotAMessage(
                "not a UnionPay answer (no signature or respCode)".into(),
            ));
        }
        f
    };
    let shown = pairs_json(&fields);
    let certs = certificates(&req.trust)?;
    // The self-signed certificate is the root; any other is the intermediate.
    let (roots, middles): (Vec<&Certificate>, Vec<&Certificate>) =
        certs.iter().partition(|c| c.subject == c.issuer);
    let Some(root) = roots.first() else {
        return Err(NotAMessage(
            "--trust needs UnionPay's (self-signed) root certificate".into(),
        ));
    };
    if let Err(e) = unionpay::verify_unionpay_message(
        &fields,
        root,
        middles.first().copied(),
        req.at_secs,
        req.accept_test_owner,
    ) {
        return Ok(invalid(shown, format!("{e}")));
    }
    let get = |k: &str| unionpay::protocol::get(&fields, k);
    let outcome = if req.notification {
        of_notification(&unionpay::read_notification(&fields))
    } else {
        // A queryTrans answer carries origRespCode and echoes the ORIGINAL transaction's txnType
        // (01 consume, 04 refund); a backTransReq answer has no origRespCode. A queryTrans that
        // found nothing (34 查无此交易) has no original to echo: it carries the query's own
        // txnType 00 — a query. (A refund query that found nothing looks the same; say
        // `--operation refund_query` to read it as one.)
        let op = req
            .operation
            .or(match (get("txnType"), get("origRespCode").is_some()) {
                (Some("01"), true) | (Some("00"), _) => Some(Operation::Query),
                (Some("04" | "31"), true) => Some(Operation::RefundQuery),
                (Some("04" | "31"), false) => Some(Operation::Refund),
                _ => None,
            });
        match op {
            Some(Operation::Query) => Some(of_trade(unionpay::consume_state(&fields))),
            Some(Operation::RefundQuery) => Some(of_refund(unionpay::refund_query_state(&fields))),
            Some(Operation::Refund) => Some(of_refund(unionpay::refund_answer_state(&fields))),
            Some(Operation::Close) => Some(of_close(
                unionpay::consume_state(&fields).map(unionpay::close_from_query),
            )),
            Some(Operation::Prepay) | None => None,
        }
    };
    Ok(valid(shown, outcome))
}

// ---- Alipay ----

fn alipay_message(req: &Request<'_>) -> Result<Verdict, NotAMessage> {
    let keys = verifiers(&req.trust)?;
    if keys.is_empty() {
        return Err(NotAMessage(
            "--trust needs Alipay's public key or certificate".into(),
        ));
    }
    if req.notification {
        let params: Vec<(String, String)> = form_urlencoded::parse(req.body).into_owned().collect();
        if !params.iter().any(|(k, _)| k == "sign") {
            return Err(NotAMessage(
                "not an Alipay notification form (no sign)".into(),
            ));
        }
        let shown = pairs_json(&params);
        if !keys
            .iter()
            .any(|(_, k)| alipay::protocol::verify_notification(k, &params))
        {
            return Ok(invalid(shown, "signature verification failed"));
        }
        // Whose app it is, the operator reads in `fields`; the verdict is about Alipay's word.
        let app_id = params
            .iter()
            .find(|(k, _)| k == "app_id")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        return Ok(valid(
            shown,
            of_notification(&alipay::read_notification(&params, &app_id)),
        ));
    }
    let text = std::str::from_utf8(req.body).map_err(|_| NotAMessage("not UTF-8".into()))?;
    let parsed: Value = serde_json::from_str(text)
        .map_err(|e| NotAMessage(format!("not an Alipay answer (JSON): {e}")))?;
    let Some(name) = parsed
        .as_object()
        .and_then(|o| o.keys().find(|k| k.ends_with("_response")).cloned())
    else {
        return Err(NotAMessage("not an Alipay answer (no *_response)".into()));
    };
    let shown = parsed[&name].clone();
    if name == "error_response" {
        return Ok(invalid(
            shown,
            "unsigned error_response: nothing vouches that Alipay sent it",
        ));
    }
    let method = name.trim_end_matches("_response").replace('_', ".");
    // The trusted key whose signature covers the raw `*_response` text, if any.
    let sign = parsed["sign"].as_str().unwrap_or_default();
    let raw = alipay::protocol::raw_response(text, &name).unwrap_or_default();
    let Some((_, key)) = keys
        .iter()
        .find(|(_, k)| k.verify_b64(raw.as_bytes(), sign))
    else {
        return Ok(invalid(shown, "response signature verification failed"));
    };
    let answer = alipay::verify_answer(text, &method, key);
    let op = req.operation.or(match method.as_str() {
        "alipay.trade.precreate" => Some(Operation::Prepay),
        "alipay.trade.query" => Some(Operation::Query),
        "alipay.trade.close" => Some(Operation::Close),
        "alipay.trade.refund" => Some(Operation::Refund),
        "alipay.trade.fastpay.refund.query" => Some(Operation::RefundQuery),
        _ => None,
    });
    let outcome = op.map(|op| match op {
        Operation::Prepay => of_prepay(alipay::precreate_outcome(answer)),
        Operation::Query => of_trade(alipay::query_outcome(answer)),
        Operation::Close => of_close(alipay::close_outcome(answer)),
        Operation::Refund => of_refund(alipay::refund_outcome(answer)),
        Operation::RefundQuery => of_refund(alipay::refund_query_outcome(answer)),
    });
    Ok(valid(shown, outcome))
}

// ---- WeChat Pay ----

fn wechat_message(req: &Request<'_>) -> Result<Verdict, NotAMessage> {
    let h = |n: &str| {
        req.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    };
    // A close answers 204 with an empty (signed) body.
    let body: Value = if req.body.is_empty() && !req.notification {
        Value::Null
    } else {
        serde_json::from_slice(req.body)
            .map_err(|e| NotAMessage(format!("not a WeChat Pay message (JSON): {e}")))?
    };
    if h("wechatpay-signature").is_none() {
        return Err(NotAMessage(
            "no Wechatpay-Signature header (pass --headers)".into(),
        ));
    }
    let serial = h("wechatpay-serial").unwrap_or_default();
    let mut keys = PlatformKeys::default();
    for (cert_serial, k) in verifiers(&req.trust)? {
        // A certificate is found by its serial; a bare public key answers for whatever serial
        // (`PUB_KEY_ID_…`) the message names.
        keys.0
            .insert(cert_serial.unwrap_or_else(|| serial.to_owned()), k);
    }
    if let Err(e) = keys.verify(
        h("wechatpay-serial"),
        h("wechatpay-timestamp"),
        h("wechatpay-nonce"),
        h("wechatpay-signature"),
        req.body,
        req.at_secs,
    ) {
        return Ok(invalid(body, format!("{e:?}")));
    }
    if req.notification {
        let Some(key) = &req.apiv3_key else {
            return Ok(valid(body, None));
        };
        let r = &body["resource"];
        let s = |k: &str| r[k].as_str().unwrap_or_default();
        let Some(plain) = wechatpay::protocol::decrypt_resource(
            key,
            s("nonce"),
            s("associated_data"),
            s("ciphertext"),
        ) else {
            return Ok(invalid(
                body,
                "the resource does not decrypt with this APIv3 key (tampered, or another key)",
            ));
        };
        let resource: Value =
            serde_json::from_slice(&plain).map_err(|e| NotAMessage(format!("resource: {e}")))?;
        let outcome = match body["event_type"].as_str().unwrap_or_default() {
            "TRANSACTION.SUCCESS" => {
                serde_json::from_value::<wechatpay::protocol::Transaction>(resource.clone())
                    .ok()
                    .map(|t| of_trade(wechatpay::trade_state_checked(&t)))
            }
            e if e.starts_with("REFUND.") => resource["refund_status"]
                .as_str()
                .map(|st| of_refund(wechatpay::refund_status_checked(st))),
            _ => Some("unknown"),
        };
        let mut fields = body.clone();
        fields["resource"] = resource;
        return Ok(valid(fields, outcome));
    }
    let op = req.operation.or(
        if body.get("code_url").is_some() || body.get("prepay_id").is_some() {
            Some(Operation::Prepay)
        } else if body.get("trade_state").is_some() {
            Some(Operation::Query)
        } else if body.get("refund_id").is_some() {
            Some(Operation::RefundQuery)
        } else {
            None
        },
    );
    let bytes = req.body;
    let outcome = op.map(|op| match op {
        Operation::Prepay => of_prepay(wechatpay::prepay_outcome(200, bytes)),
        Operation::Query => of_trade(wechatpay::query_outcome(
            200,
            bytes,
            body["mchid"].as_str().unwrap_or_default(),
            body["out_trade_no"].as_str().unwrap_or_default(),
        )),
        Operation::Close => of_close(wechatpay::close_outcome(
            if bytes.is_empty() { 204 } else { 200 },
            bytes,
        )),
        Operation::Refund => of_refund(wechatpay::refund_outcome(200, bytes)),
        Operation::RefundQuery => of_refund(wechatpay::refund_query_outcome(200, bytes)),
    });
    Ok(valid(body, outcome))
}
