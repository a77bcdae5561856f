//! The Alipay connector (precreate QR codes).

use super::protocol::{self, beijing_time, raw_response, response_name};
use crate::crypto::{RsaSigner, RsaVerifier};
use crate::money::{fen_to_yuan, yuan_to_fen};
use crate::{
    Channel, ChannelError, ChannelOrderRef, CloseAnswer, Notification, NotifyError, NotifyReply, PrepayRequest, Prepaid, TradeState,
    classify_transport,
};
use crate::{RefundRef, RefundRequest, RefundState};
use async_trait::async_trait;
use payonce_core::{ChannelName, Timestamp};
use reqwest::header::HeaderMap;
use serde_json::Value;

pub struct AlipayKeys {
    pub app_id: String,
    pub app_private_key: RsaSigner,
    pub alipay_public_key: RsaVerifier,
}

pub struct AlipayClient {
    gateway: String,
    keys: AlipayKeys,
    http: reqwest::Client,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The error an unscanned precreate answers to query and close: "not paid yet", not failure.
pub const TRADE_NOT_EXIST: &str = "ACQ.TRADE_NOT_EXIST";

impl AlipayClient {
    pub fn new(gateway: String, keys: AlipayKeys, http: reqwest::Client) -> Self {
        AlipayClient { gateway, keys, http }
    }

    /// Calls `method` with `biz_content`; returns the verified `*_response` object. A business
    /// error (code ≠ 10000) is returned as `Err(Refused{sub_code})`.
    async fn call(&self, method: &str, biz_content: Value, notify_url: Option<&str>) -> Result<Value, ChannelError> {
        let mut params: Vec<(String, String)> = vec![
            ("app_id".into(), self.keys.app_id.clone()),
            ("method".into(), method.into()),
            ("format".into(), "JSON".into()),
            ("charset".into(), "utf-8".into()),
            ("sign_type".into(), "RSA2".into()),
            ("timestamp".into(), beijing_time(now_ms())),
            ("version".into(), "1.0".into()),
            ("biz_content".into(), biz_content.to_string()),
        ];
        if let Some(u) = notify_url {
            params.push(("notify_url".into(), u.into()));
        }
        let sign = protocol::sign_params(&self.keys.app_private_key, &params);
        params.push(("sign".into(), sign));
        let resp = self
            .http
            .post(&self.gateway)
            .header("content-type", "application/x-www-form-urlencoded;charset=utf-8")
            .body(protocol::encode_form(&params))
            .send()
            .await
            .map_err(classify_transport)?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| ChannelError::Ambiguous(e.to_string()))?;
        if status != 200 {
            return Err(ChannelError::Ambiguous(format!("gateway answered {status}")));
        }
        let name = response_name(method);
        let parsed: Value = serde_json::from_str(&text).map_err(|e| ChannelError::Ambiguous(format!("unparseable answer: {e}")))?;
        // Gateway-level failures (bad signature, unknown app) come as error_response, unsigned.
        if let Some(err) = parsed.get("error_response") {
            return Err(ChannelError::Refused {
                code: err["sub_code"].as_str().or(err["code"].as_str()).unwrap_or("error_response").into(),
                message: err["sub_msg"].as_str().or(err["msg"].as_str()).unwrap_or_default().into(),
            });
        }
        let raw = raw_response(&text, &name).ok_or_else(|| ChannelError::Ambiguous(format!("answer without {name}")))?;
        let sign = parsed["sign"].as_str().unwrap_or_default();
        if !self.keys.alipay_public_key.verify_b64(raw.as_bytes(), sign) {
            return Err(ChannelError::Ambiguous("response signature rejected".into()));
        }
        let body: Value = serde_json::from_str(raw).map_err(|e| ChannelError::Ambiguous(e.to_string()))?;
        match body["code"].as_str() {
            Some("10000") => Ok(body),
            // 20000: service temporarily unavailable — outcome unknown.
            Some("20000") => Err(ChannelError::Ambiguous(format!("{}: {}", body["sub_code"], body["sub_msg"]))),
            _ => Err(ChannelError::Refused {
                code: body["sub_code"].as_str().or(body["code"].as_str()).unwrap_or("unknown").into(),
                message: body["sub_msg"].as_str().or(body["msg"].as_str()).unwrap_or_default().into(),
            }),
        }
    }
}

fn trade_state(status: &str, total_amount: &str, trade_no: Option<&str>, paid_at: Option<&str>) -> Result<TradeState, ChannelError> {
    Ok(match status {
        "TRADE_SUCCESS" | "TRADE_FINISHED" => TradeState::Paid {
            amount: yuan_to_fen(total_amount).ok_or_else(|| ChannelError::Ambiguous(format!("bad total_amount {total_amount}")))?,
            channel_trade_no: trade_no.map(str::to_owned),
            paid_at: Timestamp(paid_at.and_then(protocol::parse_beijing_time).unwrap_or(0)),
        },
        "WAIT_BUYER_PAY" => TradeState::Unpaid,
        // Unpaid and closed, or fully refunded after payment: a succeeded attempt stays succeeded.
        "TRADE_CLOSED" => TradeState::Closed,
        other => return Err(ChannelError::Ambiguous(format!("unknown trade_status {other}"))),
    })
}

#[async_trait]
impl Channel for AlipayClient {
    fn name(&self) -> ChannelName {
        ChannelName::Alipay
    }

    #[tracing::instrument(skip_all, fields(channel = "alipay", out_trade_no = %req.out_trade_no))]
    async fn prepay(&self, req: &PrepayRequest) -> Result<Prepaid, ChannelError> {
        // The QR code must not outlive the order: whole minutes, rounded down, at least one.
        let minutes = ((req.expires_at.0 - now_ms()) / 60_000).max(1);
        let biz = serde_json::json!({
            "out_trade_no": req.out_trade_no,
            "total_amount": fen_to_yuan(req.amount.minor),
            "subject": req.subject,
            "timeout_express": format!("{minutes}m"),
        });
        let body = self.call("alipay.trade.precreate", biz, Some(&req.notify_url)).await?;
        let qr = body["qr_code"].as_str().ok_or_else(|| ChannelError::Ambiguous("precreate without qr_code".into()))?;
        Ok(Prepaid {
            credential: serde_json::json!({ "qr_code": qr }),
            // The QR's true lifetime: payonce watches it until then, even after the order expired.
            credential_expires_at: Timestamp(now_ms() + minutes * 60_000),
            channel_data: None,
        })
    }

    async fn query(&self, order: &ChannelOrderRef) -> Result<TradeState, ChannelError> {
        let out_trade_no = order.out_trade_no.as_str();
        match self.call("alipay.trade.query", serde_json::json!({ "out_trade_no": out_trade_no }), None).await {
            Ok(b) => trade_state(
                b["trade_status"].as_str().unwrap_or_default(),
                b["total_amount"].as_str().unwrap_or_default(),
                b["trade_no"].as_str(),
                b["send_pay_date"].as_str(),
            ),
            // An unscanned precreate: no trade yet. Not a failure — the QR is still payable.
            Err(ChannelError::Refused { code, .. }) if code == TRADE_NOT_EXIST => Ok(TradeState::Absent),
            Err(e) => Err(e),
        }
    }

    async fn close(&self, order: &ChannelOrderRef) -> Result<CloseAnswer, ChannelError> {
        let out_trade_no = order.out_trade_no.as_str();
        match self.call("alipay.trade.close", serde_json::json!({ "out_trade_no": out_trade_no }), None).await {
            Ok(_) => Ok(CloseAnswer::Closed),
            Err(ChannelError::Refused { code, .. }) if code == TRADE_NOT_EXIST => Ok(CloseAnswer::Absent),
            // Closing a paid (or already closed) trade: the caller queries to learn which.
            Err(ChannelError::Refused { code, .. }) if code == "ACQ.TRADE_STATUS_ERROR" => Ok(CloseAnswer::AlreadyPaid),
            Err(e) => Err(e),
        }
    }

    async fn refund(&self, req: &RefundRequest) -> Result<(RefundState, Option<String>), ChannelError> {
        // out_request_no is always sent: without it Alipay treats every call as "the" refund of
        // the trade, and partial refunds cannot be told apart or retried safely.
        let biz = serde_json::json!({
            "out_trade_no": req.order.out_trade_no,
            "refund_amount": fen_to_yuan(req.amount.minor),
            "out_request_no": req.out_refund_no,
            "refund_reason": req.reason.clone().unwrap_or_default(),
        });
        match self.call("alipay.trade.refund", biz, None).await {
            Ok(b) if b["fund_change"] == "Y" => Ok((RefundState::Succeeded, None)),
            // "N" on a retry of a refund that already went through: ask the query to be sure.
            Ok(_) => Ok((RefundState::Processing, None)),
            Err(ChannelError::Refused { code, message }) => Ok((RefundState::Failed(format!("{code}: {message}")), None)),
            Err(e) => Err(e),
        }
    }

    async fn refund_query(&self, r: &RefundRef) -> Result<RefundState, ChannelError> {
        let biz = serde_json::json!({ "out_trade_no": r.order.out_trade_no, "out_request_no": r.out_refund_no });
        let b = self.call("alipay.trade.fastpay.refund.query", biz, None).await?;
        Ok(match b["refund_status"].as_str() {
            Some("REFUND_SUCCESS") => RefundState::Succeeded,
            // Alipay answers 10000 with no refund fields when there is no such refund.
            None if b.get("refund_amount").is_none() => RefundState::Absent,
            _ => RefundState::Processing,
        })
    }

    async fn statement(&self, date: &str) -> Result<Vec<crate::StatementLine>, ChannelError> {
        let b = self.call("alipay.data.dataservice.bill.downloadurl.query", serde_json::json!({"bill_type": "trade", "bill_date": date}), None).await?;
        let url = b["bill_download_url"].as_str().ok_or_else(|| ChannelError::Ambiguous("no bill_download_url".into()))?;
        let bytes = self.http.get(url).send().await.map_err(classify_transport)?.bytes().await.map_err(|e| ChannelError::Ambiguous(e.to_string()))?;
        super::bill::parse_bytes(&bytes).map_err(ChannelError::Ambiguous)
    }

    fn verify_notification(&self, _headers: &HeaderMap, body: &[u8], _now: Timestamp) -> Result<Notification, NotifyError> {
        let params = protocol::parse_form(body);
        if params.is_empty() {
            return Err(NotifyError::Malformed("empty form".into()));
        }
        if !protocol::verify_notification(&self.keys.alipay_public_key, &params) {
            return Err(NotifyError::BadSignature);
        }
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        if get("app_id") != Some(self.keys.app_id.as_str()) {
            return Err(NotifyError::Malformed("notification for another app".into()));
        }
        let event_id = get("notify_id").ok_or_else(|| NotifyError::Malformed("no notify_id".into()))?.to_owned();
        let out_trade_no = get("out_trade_no").ok_or_else(|| NotifyError::Malformed("no out_trade_no".into()))?.to_owned();
        let state = trade_state(
            get("trade_status").unwrap_or_default(),
            get("total_amount").unwrap_or_default(),
            get("trade_no"),
            get("gmt_payment"),
        )
        .map_err(|e| NotifyError::Malformed(e.to_string()))?;
        Ok(Notification { event_id, out_trade_no, state, refund: None })
    }

    fn notify_ack(&self) -> NotifyReply {
        NotifyReply { status: 200, content_type: "text/plain", body: "success".into() }
    }

    fn notify_nack(&self, _reason: &str) -> NotifyReply {
        // Anything but the literal `success` makes Alipay retry.
        NotifyReply { status: 400, content_type: "text/plain", body: "fail".into() }
    }
}
