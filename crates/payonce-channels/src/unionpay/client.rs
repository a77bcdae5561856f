//! The UnionPay connector (front-end gateway consume).

use super::protocol::{self, get, txn_time};
use crate::crypto::{Certificate, RsaSigner};
use crate::{
    Channel, ChannelError, ChannelOrderRef, CloseAnswer, Notification, NotifyError, NotifyReply, PrepayRequest, Prepaid,
    TradeState, classify_transport,
};
use crate::{RefundRef, RefundRequest, RefundState};
use async_trait::async_trait;
use payonce_core::{ChannelName, Timestamp};
use reqwest::header::HeaderMap;

pub struct UnionpayKeys {
    pub mer_id: String,
    pub sign_key: RsaSigner,
    /// The merchant signing certificate's serial, in decimal.
    pub cert_id: String,
    pub root: Certificate,
    pub middle: Option<Certificate>,
}

pub struct UnionpayClient {
    gateway: String,
    keys: UnionpayKeys,
    http: reqwest::Client,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn p(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_owned(), v.into())
}

impl UnionpayClient {
    pub fn new(gateway: String, keys: UnionpayKeys, http: reqwest::Client) -> Self {
        UnionpayClient { gateway: gateway.trim_end_matches('/').to_owned(), keys, http }
    }

    fn signed(&self, mut params: Vec<(String, String)>) -> Vec<(String, String)> {
        params.push(p("certId", self.keys.cert_id.clone()));
        let sig = protocol::sign(&self.keys.sign_key, &params);
        params.push(p("signature", sig));
        params
    }

    /// Posts a signed form; returns UnionPay's answer once its certificate and signature check out.
    async fn post(&self, path: &str, params: &[(String, String)]) -> Result<Vec<(String, String)>, ChannelError> {
        let resp = self
            .http
            .post(format!("{}{path}", self.gateway))
            .header("content-type", "application/x-www-form-urlencoded;charset=UTF-8")
            .body(crate::form::encode(params))
            .send()
            .await
            .map_err(classify_transport)?;
        if !resp.status().is_success() {
            return Err(ChannelError::Ambiguous(format!("gateway answered {}", resp.status())));
        }
        let body = resp.bytes().await.map_err(|e| ChannelError::Ambiguous(e.to_string()))?;
        let answer = crate::form::parse(&body);
        self.verify_message(&answer).map_err(|e| ChannelError::Ambiguous(format!("answer not trusted: {e}")))?;
        Ok(answer)
    }

    /// Verifies a message from UnionPay (answer or notification): certificate chain, then
    /// signature, then that it is about our merchant.
    fn verify_message(&self, params: &[(String, String)]) -> Result<(), NotifyError> {
        let cert = protocol::trusted_signer(params, &self.keys.root, self.keys.middle.as_ref(), now_ms() / 1000)
            .map_err(|_| NotifyError::UnknownKey)?;
        if !protocol::verify(&cert.verifier, params) {
            return Err(NotifyError::BadSignature);
        }
        if get(params, "merId") != Some(self.keys.mer_id.as_str()) {
            return Err(NotifyError::Malformed("message for another merchant".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl Channel for UnionpayClient {
    fn name(&self) -> ChannelName {
        ChannelName::Unionpay
    }

    /// The consume is a form the payer's browser posts to UnionPay; nothing is sent now, and the
    /// channel order exists once the payer submits it. `txnTime` is kept for later queries.
    async fn prepay(&self, req: &PrepayRequest) -> Result<Prepaid, ChannelError> {
        let txn = txn_time(now_ms());
        let fields = self.signed(vec![
            p("version", protocol::VERSION),
            p("encoding", "UTF-8"),
            p("signMethod", "01"),
            p("txnType", "01"),
            p("txnSubType", "01"),
            p("bizType", "000201"),
            p("channelType", "07"),
            p("accessType", "0"),
            p("merId", self.keys.mer_id.clone()),
            p("orderId", req.out_trade_no.clone()),
            p("txnTime", txn.clone()),
            p("txnAmt", req.amount.minor.to_string()),
            p("currencyCode", "156"),
            p("backUrl", req.notify_url.clone()),
            // UnionPay stops accepting the payment at payTimeout: never after the order expires.
            p("payTimeout", txn_time(req.expires_at.0)),
        ]);
        let fields: serde_json::Map<String, serde_json::Value> = fields.into_iter().map(|(k, v)| (k, v.into())).collect();
        Ok(Prepaid {
            credential: serde_json::json!({
                "action": format!("{}/gateway/api/frontTransReq.do", self.gateway),
                "method": "POST",
                "fields": fields,
            }),
            credential_expires_at: req.expires_at,
            channel_data: Some(txn),
        })
    }

    async fn query(&self, order: &ChannelOrderRef) -> Result<TradeState, ChannelError> {
        let Some(txn) = order.channel_data.clone() else {
            return Err(ChannelError::Refused { code: "NO_TXN_TIME".into(), message: "the original txnTime was not stored".into() });
        };
        let params = self.signed(vec![
            p("version", protocol::VERSION),
            p("encoding", "UTF-8"),
            p("signMethod", "01"),
            p("txnType", "00"),
            p("txnSubType", "00"),
            p("bizType", "000000"),
            p("accessType", "0"),
            p("channelType", "07"),
            p("merId", self.keys.mer_id.clone()),
            p("orderId", order.out_trade_no.clone()),
            p("txnTime", txn),
        ]);
        let answer = self.post("/gateway/api/queryTrans.do", &params).await?;
        match get(&answer, "respCode").unwrap_or_default() {
            "00" => match get(&answer, "origRespCode").unwrap_or_default() {
                "00" => Ok(TradeState::Paid {
                    amount: get(&answer, "txnAmt").and_then(|a| a.parse().ok()).ok_or_else(|| ChannelError::Ambiguous("no txnAmt".into()))?,
                    channel_trade_no: get(&answer, "queryId").map(str::to_owned),
                    paid_at: Timestamp(get(&answer, "txnTime").and_then(protocol::parse_txn_time).unwrap_or(0)),
                }),
                // Still being processed: ask again later.
                "03" | "04" | "05" => Ok(TradeState::Unpaid),
                // The payment failed or expired: it will not be paid under this number.
                _ => Ok(TradeState::Closed),
            },
            // No such transaction (the payer never submitted the form).
            "34" => Ok(TradeState::Absent),
            "03" | "04" | "05" => Err(ChannelError::Ambiguous("UnionPay asks to query again".into())),
            other => Err(ChannelError::Refused { code: other.into(), message: get(&answer, "respMsg").unwrap_or_default().into() }),
        }
    }

    /// UPACP cannot close an unpaid consume. A paid one is reported; otherwise the form simply
    /// stops paying at payTimeout, and payonce keeps watching until then (anything that still
    /// arrives is handled as a late or duplicate payment).
    async fn close(&self, order: &ChannelOrderRef) -> Result<CloseAnswer, ChannelError> {
        match self.query(order).await? {
            TradeState::Paid { .. } => Ok(CloseAnswer::AlreadyPaid),
            TradeState::Closed => Ok(CloseAnswer::Closed),
            TradeState::Unpaid | TradeState::Absent => Ok(CloseAnswer::Absent),
        }
    }

    /// A refund (`txnType=04`) is a back-end transaction of its own: its `orderId` is our refund
    /// number, `origQryId` names the payment, and its `txnTime` is kept for queries.
    async fn refund(&self, req: &RefundRequest) -> Result<(RefundState, Option<String>), ChannelError> {
        let Some(orig) = req.channel_trade_no.clone() else {
            return Ok((RefundState::Failed("no queryId of the payment".into()), None));
        };
        let txn = txn_time(now_ms());
        let params = self.signed(vec![
            p("version", protocol::VERSION),
            p("encoding", "UTF-8"),
            p("signMethod", "01"),
            p("txnType", "04"),
            p("txnSubType", "00"),
            p("bizType", "000201"),
            p("accessType", "0"),
            p("channelType", "07"),
            p("merId", self.keys.mer_id.clone()),
            p("orderId", req.out_refund_no.clone()),
            p("origQryId", orig),
            p("txnTime", txn.clone()),
            p("txnAmt", req.amount.minor.to_string()),
            p("backUrl", req.notify_url.clone()),
        ]);
        let answer = self.post("/gateway/api/backTransReq.do", &params).await?;
        Ok((
            match get(&answer, "respCode").unwrap_or_default() {
                // Accepted; the result comes by notification or query.
                "00" | "03" | "04" | "05" => RefundState::Processing,
                other => RefundState::Failed(format!("{other}: {}", get(&answer, "respMsg").unwrap_or_default())),
            },
            Some(txn),
        ))
    }

    async fn refund_query(&self, r: &RefundRef) -> Result<RefundState, ChannelError> {
        let order = ChannelOrderRef { out_trade_no: r.out_refund_no.clone(), channel_data: r.channel_data.clone() };
        Ok(match self.query(&order).await? {
            TradeState::Paid { .. } => RefundState::Succeeded,
            TradeState::Unpaid => RefundState::Processing,
            TradeState::Closed => RefundState::Failed("refund failed at UnionPay".into()),
            TradeState::Absent => RefundState::Absent,
        })
    }

    /// UnionPay's reconciliation files (fileTransfer, zipped per settlement day) are not
    /// supported yet: say so rather than return an empty day.
    async fn statement(&self, _date: &str) -> Result<Vec<crate::StatementLine>, ChannelError> {
        Err(ChannelError::Refused { code: "UNSUPPORTED".into(), message: "UnionPay statements are not implemented".into() })
    }

    fn verify_notification(&self, _headers: &HeaderMap, body: &[u8], _now: Timestamp) -> Result<Notification, NotifyError> {
        let params = crate::form::parse(body);
        if params.is_empty() {
            return Err(NotifyError::Malformed("empty form".into()));
        }
        self.verify_message(&params)?;
        let order_id = get(&params, "orderId").ok_or_else(|| NotifyError::Malformed("no orderId".into()))?.to_owned();
        if get(&params, "txnType") == Some("04") {
            // A refund's result: its orderId is our refund number.
            let state = match get(&params, "respCode") {
                Some("00") => RefundState::Succeeded,
                Some("03" | "04" | "05") => RefundState::Processing,
                other => RefundState::Failed(format!("respCode {}", other.unwrap_or("?"))),
            };
            return Ok(Notification {
                event_id: get(&params, "queryId").map(str::to_owned).unwrap_or_else(|| format!("{order_id}-refund")),
                out_trade_no: get(&params, "origQryId").unwrap_or_default().to_owned(),
                state: TradeState::Unpaid,
                refund: Some(crate::RefundNotice { out_refund_no: order_id, state }),
            });
        }
        let event_id = get(&params, "queryId").map(str::to_owned).unwrap_or_else(|| format!("{order_id}-{}", get(&params, "txnTime").unwrap_or("")));
        let state = match get(&params, "respCode") {
            Some("00") => TradeState::Paid {
                amount: get(&params, "txnAmt").and_then(|a| a.parse().ok()).ok_or_else(|| NotifyError::Malformed("bad txnAmt".into()))?,
                channel_trade_no: get(&params, "queryId").map(str::to_owned),
                paid_at: Timestamp(get(&params, "txnTime").and_then(protocol::parse_txn_time).unwrap_or(0)),
            },
            _ => TradeState::Unpaid,
        };
        Ok(Notification { event_id, out_trade_no: order_id, state, refund: None })
    }

    fn notify_ack(&self) -> NotifyReply {
        NotifyReply { status: 200, content_type: "text/plain", body: "ok".into() }
    }

    fn notify_nack(&self, _reason: &str) -> NotifyReply {
        NotifyReply { status: 400, content_type: "text/plain", body: "fail".into() }
    }
}
