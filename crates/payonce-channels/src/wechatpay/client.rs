//! The WeChat Pay v3 connector.

use super::protocol::{self, Amount, ErrorBody, NotifyEnvelope, PlatformKeys, PrepayBody, Transaction};
use crate::crypto::{RsaSigner, nonce};
use crate::secret::SecretBytes;
use crate::{
    Channel, ChannelError, ChannelOrderRef, CloseAnswer, Notification, NotifyError, NotifyReply, PrepayRequest, Prepaid, TradeState,
    classify_transport,
};
use crate::{RefundRef, RefundRequest, RefundState};
use async_trait::async_trait;
use payonce_core::{ChannelName, PayMethod, Timestamp};
use reqwest::header::HeaderMap;

/// Everything a merchant holds for WeChat Pay.
pub struct WechatpayKeys {
    pub mchid: String,
    pub appid: String,
    /// Serial of the merchant API certificate, sent as `serial_no`.
    pub merchant_serial_no: String,
    pub merchant_key: RsaSigner,
    /// The 32-byte APIv3 key that decrypts notification resources.
    pub apiv3_key: SecretBytes,
    pub platform: PlatformKeys,
}

pub struct WechatpayClient {
    gateway: String,
    keys: WechatpayKeys,
    http: reqwest::Client,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl WechatpayClient {
    pub fn new(gateway: String, keys: WechatpayKeys, http: reqwest::Client) -> Self {
        WechatpayClient { gateway: gateway.trim_end_matches('/').to_owned(), keys, http }
    }

    /// A signed request; the answer is returned only once its platform signature verifies
    /// (an unverifiable answer may not be WeChat's, so it is ambiguous).
    async fn call(&self, method: reqwest::Method, path_and_query: &str, body: Option<String>) -> Result<(u16, Vec<u8>), ChannelError> {
        let body = body.unwrap_or_default();
        let auth = protocol::authorization(
            &self.keys.merchant_key,
            &self.keys.mchid,
            &self.keys.merchant_serial_no,
            method.as_str(),
            path_and_query,
            &body,
            now_secs(),
        );
        let mut req = self
            .http
            .request(method, format!("{}{}", self.gateway, path_and_query))
            .header("authorization", auth)
            .header("accept", "application/json")
            .header("user-agent", concat!("payonce/", env!("CARGO_PKG_VERSION")));
        if !body.is_empty() {
            req = req.header("content-type", "application/json").body(body);
        }
        let resp = req.send().await.map_err(classify_transport)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.map_err(|e| ChannelError::Ambiguous(e.to_string()))?.to_vec();
        if status >= 500 {
            return Err(ChannelError::Ambiguous(format!("gateway answered {status}")));
        }
        if (200..300).contains(&status) {
            let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
            self.keys
                .platform
                .verify(h(protocol::H_SERIAL), h(protocol::H_TIMESTAMP), h(protocol::H_NONCE), h(protocol::H_SIGNATURE), &bytes, now_secs())
                .map_err(|e| ChannelError::Ambiguous(format!("response signature rejected: {e:?}")))?;
        }
        Ok((status, bytes))
    }

    fn error_of(status: u16, body: &[u8]) -> ErrorBody {
        serde_json::from_slice(body).unwrap_or_else(|_| ErrorBody { code: format!("HTTP_{status}"), message: String::new() })
    }

    /// The JSAPI front-end package: `paySign` over `appId\ntimeStamp\nnonceStr\npackage\n`.
    fn jsapi_credential(&self, prepay_id: &str) -> serde_json::Value {
        let ts = now_secs().to_string();
        let nonce_str = nonce(32);
        let package = format!("prepay_id={prepay_id}");
        let msg = format!("{}\n{ts}\n{nonce_str}\n{package}\n", self.keys.appid);
        serde_json::json!({
            "appId": self.keys.appid,
            "timeStamp": ts,
            "nonceStr": nonce_str,
            "package": package,
            "signType": "RSA",
            "paySign": self.keys.merchant_key.sign_b64(msg.as_bytes()),
        })
    }
}

/// Maps `trade_state` (and the amount, for payments) to what payonce understands.
pub fn trade_state_of(t: &Transaction) -> TradeState {
    match t.trade_state.as_str() {
        // REFUND: paid, then (partly) refunded — it was paid.
        "SUCCESS" | "REFUND" => TradeState::Paid {
            amount: t.amount.total,
            channel_trade_no: t.transaction_id.clone(),
            paid_at: Timestamp(t.success_time.as_deref().and_then(protocol::parse_rfc3339_ms).unwrap_or(0)),
        },
        "CLOSED" | "REVOKED" => TradeState::Closed,
        // NOTPAY, USERPAYING (payer entering a password), PAYERROR (can be retried by the payer).
        _ => TradeState::Unpaid,
    }
}

#[async_trait]
impl Channel for WechatpayClient {
    fn name(&self) -> ChannelName {
        ChannelName::Wechatpay
    }

    #[tracing::instrument(skip_all, fields(channel = "wechatpay", out_trade_no = %req.out_trade_no))]
    async fn prepay(&self, req: &PrepayRequest) -> Result<Prepaid, ChannelError> {
        let (path, payer) = match req.method {
            PayMethod::Jsapi => {
                let openid = req.payer.as_ref().and_then(|p| p.get("openid")).and_then(|o| o.as_str());
                let Some(openid) = openid else {
                    return Err(ChannelError::Refused { code: "PARAM_ERROR".into(), message: "jsapi needs payer.openid".into() });
                };
                ("/v3/pay/transactions/jsapi", Some(serde_json::json!({ "openid": openid })))
            }
            _ => ("/v3/pay/transactions/native", None),
        };
        let body = PrepayBody {
            appid: self.keys.appid.clone(),
            mchid: self.keys.mchid.clone(),
            description: req.subject.clone(),
            out_trade_no: req.out_trade_no.clone(),
            time_expire: Some(protocol::beijing_rfc3339(req.expires_at.0)),
            notify_url: req.notify_url.clone(),
            amount: Amount { total: req.amount.minor, currency: Some(req.amount.currency.to_string()), payer_total: None, payer_currency: None },
            payer,
        };
        let (status, bytes) = self.call(reqwest::Method::POST, path, Some(serde_json::to_string(&body).unwrap())).await?;
        if status != 200 {
            let e = Self::error_of(status, &bytes);
            return Err(ChannelError::Refused { code: e.code, message: e.message });
        }
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| ChannelError::Ambiguous(e.to_string()))?;
        let credential = if let Some(code_url) = v["code_url"].as_str() {
            serde_json::json!({ "code_url": code_url })
        } else if let Some(prepay_id) = v["prepay_id"].as_str() {
            self.jsapi_credential(prepay_id)
        } else {
            return Err(ChannelError::Ambiguous("prepay answer without code_url or prepay_id".into()));
        };
        Ok(Prepaid { credential, credential_expires_at: req.expires_at, channel_data: None })
    }

    async fn query(&self, order: &ChannelOrderRef) -> Result<TradeState, ChannelError> {
        let out_trade_no = order.out_trade_no.as_str();
        let path = format!("/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={}", self.keys.mchid);
        let (status, bytes) = self.call(reqwest::Method::GET, &path, None).await?;
        if status == 404 {
            return Ok(TradeState::Absent);
        }
        if status != 200 {
            let e = Self::error_of(status, &bytes);
            if e.code == "ORDER_NOT_EXIST" || e.code == "ORDERNOTEXIST" {
                return Ok(TradeState::Absent);
            }
            return Err(ChannelError::Refused { code: e.code, message: e.message });
        }
        let t: Transaction = serde_json::from_slice(&bytes).map_err(|e| ChannelError::Ambiguous(format!("bad query answer: {e}")))?;
        if t.mchid != self.keys.mchid || t.out_trade_no != out_trade_no {
            return Err(ChannelError::Ambiguous("query answer about another merchant or order".into()));
        }
        Ok(trade_state_of(&t))
    }

    async fn close(&self, order: &ChannelOrderRef) -> Result<CloseAnswer, ChannelError> {
        let out_trade_no = order.out_trade_no.as_str();
        let path = format!("/v3/pay/transactions/out-trade-no/{out_trade_no}/close");
        let body = serde_json::json!({ "mchid": self.keys.mchid }).to_string();
        let (status, bytes) = self.call(reqwest::Method::POST, &path, Some(body)).await?;
        if status == 204 || status == 200 {
            return Ok(CloseAnswer::Closed);
        }
        let e = Self::error_of(status, &bytes);
        match e.code.as_str() {
            "ORDER_PAID" | "ORDERPAID" | "TRADE_PAID" => Ok(CloseAnswer::AlreadyPaid),
            "ORDER_NOT_EXIST" | "ORDERNOTEXIST" => Ok(CloseAnswer::Absent),
            "ORDER_CLOSED" | "ORDERCLOSED" => Ok(CloseAnswer::Closed),
            _ if status == 404 => Ok(CloseAnswer::Absent),
            _ => Err(ChannelError::Refused { code: e.code, message: e.message }),
        }
    }

    async fn refund(&self, req: &RefundRequest) -> Result<(RefundState, Option<String>), ChannelError> {
        let body = protocol::RefundBody {
            out_trade_no: req.order.out_trade_no.clone(),
            out_refund_no: req.out_refund_no.clone(),
            reason: req.reason.clone(),
            notify_url: Some(req.notify_url.clone()),
            amount: protocol::RefundAmount { refund: req.amount.minor, total: req.total.minor, currency: req.amount.currency.to_string() },
        };
        let (status, bytes) = self.call(reqwest::Method::POST, "/v3/refund/domestic/refunds", Some(serde_json::to_string(&body).unwrap())).await?;
        if status != 200 {
            let e = Self::error_of(status, &bytes);
            return Ok((RefundState::Failed(format!("{}: {}", e.code, e.message)), None));
        }
        let r: protocol::Refund = serde_json::from_slice(&bytes).map_err(|e| ChannelError::Ambiguous(e.to_string()))?;
        Ok((refund_state_of(&r.status), None))
    }

    async fn refund_query(&self, r: &RefundRef) -> Result<RefundState, ChannelError> {
        let (status, bytes) = self.call(reqwest::Method::GET, &format!("/v3/refund/domestic/refunds/{}", r.out_refund_no), None).await?;
        match status {
            200 => {
                let r: protocol::Refund = serde_json::from_slice(&bytes).map_err(|e| ChannelError::Ambiguous(e.to_string()))?;
                Ok(refund_state_of(&r.status))
            }
            404 => Ok(RefundState::Absent),
            _ => {
                let e = Self::error_of(status, &bytes);
                Err(ChannelError::Refused { code: e.code, message: e.message })
            }
        }
    }

    /// `GET /v3/bill/tradebill`, then the signed download; the bill's SHA-1 must match.
    async fn statement(&self, date: &str) -> Result<Vec<crate::StatementLine>, ChannelError> {
        let (status, bytes) = self.call(reqwest::Method::GET, &format!("/v3/bill/tradebill?bill_date={date}&bill_type=ALL"), None).await?;
        if status != 200 {
            let e = Self::error_of(status, &bytes);
            return Err(ChannelError::Refused { code: e.code, message: e.message });
        }
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| ChannelError::Ambiguous(e.to_string()))?;
        let url = v["download_url"].as_str().ok_or_else(|| ChannelError::Ambiguous("no download_url".into()))?;
        let path = url.strip_prefix(&self.gateway).unwrap_or(url);
        let auth = protocol::authorization(&self.keys.merchant_key, &self.keys.mchid, &self.keys.merchant_serial_no, "GET", path, "", now_secs());
        let resp = self.http.get(url).header("authorization", auth).send().await.map_err(classify_transport)?;
        let content = resp.bytes().await.map_err(|e| ChannelError::Ambiguous(e.to_string()))?;
        // The download itself is not signed: the hash from the signed answer vouches for it.
        let sha1 = hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &content).as_ref());
        if !v["hash_value"].as_str().is_some_and(|h| h.eq_ignore_ascii_case(&sha1)) {
            return Err(ChannelError::Ambiguous("bill hash mismatch".into()));
        }
        super::bill::parse(&String::from_utf8_lossy(&content)).map_err(ChannelError::Ambiguous)
    }

    fn verify_notification(&self, headers: &HeaderMap, body: &[u8], now: Timestamp) -> Result<Notification, NotifyError> {
        let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        if h(protocol::H_SIGNATURE_TYPE).is_some_and(|t| t != protocol::SIGNATURE_TYPE) {
            return Err(NotifyError::BadSignature);
        }
        self.keys
            .platform
            .verify(h(protocol::H_SERIAL), h(protocol::H_TIMESTAMP), h(protocol::H_NONCE), h(protocol::H_SIGNATURE), body, now.0 / 1000)
            .map_err(|e| match e {
                protocol::VerifyError::UnknownSerial => NotifyError::UnknownKey,
                protocol::VerifyError::Stale => NotifyError::Stale,
                _ => NotifyError::BadSignature,
            })?;
        let env: NotifyEnvelope = serde_json::from_slice(body).map_err(|e| NotifyError::Malformed(e.to_string()))?;
        if env.resource.algorithm != "AEAD_AES_256_GCM" {
            return Err(NotifyError::Malformed(format!("algorithm {}", env.resource.algorithm)));
        }
        let plain = protocol::decrypt_resource(
            self.keys.apiv3_key.expose(),
            &env.resource.nonce,
            &env.resource.associated_data,
            &env.resource.ciphertext,
        )
        // Signed but undecryptable: the ciphertext was tampered with or the key is wrong.
        .ok_or(NotifyError::BadSignature)?;
        match env.event_type.as_str() {
            "TRANSACTION.SUCCESS" => {
                let t: Transaction = serde_json::from_slice(&plain).map_err(|e| NotifyError::Malformed(e.to_string()))?;
                if t.mchid != self.keys.mchid || t.appid != self.keys.appid {
                    return Err(NotifyError::Malformed("notification for another merchant or app".into()));
                }
                Ok(Notification { event_id: env.id, out_trade_no: t.out_trade_no.clone(), state: trade_state_of(&t), refund: None })
            }
            "REFUND.SUCCESS" | "REFUND.ABNORMAL" | "REFUND.CLOSED" => {
                let r: serde_json::Value = serde_json::from_slice(&plain).map_err(|e| NotifyError::Malformed(e.to_string()))?;
                if r["mchid"].as_str() != Some(self.keys.mchid.as_str()) {
                    return Err(NotifyError::Malformed("notification for another merchant".into()));
                }
                let field = |k: &str| r[k].as_str().map(str::to_owned).ok_or_else(|| NotifyError::Malformed(format!("no {k}")));
                Ok(Notification {
                    event_id: env.id,
                    out_trade_no: field("out_trade_no")?,
                    // A refund says nothing new about the payment.
                    state: TradeState::Unpaid,
                    refund: Some(crate::RefundNotice { out_refund_no: field("out_refund_no")?, state: refund_state_of(&field("refund_status")?) }),
                })
            }
            other => Err(NotifyError::Malformed(format!("unsupported event_type {other}"))),
        }
    }

    fn notify_ack(&self) -> NotifyReply {
        NotifyReply { status: 204, content_type: "application/json", body: String::new() }
    }

    fn notify_nack(&self, reason: &str) -> NotifyReply {
        NotifyReply { status: 400, content_type: "application/json", body: serde_json::json!({"code": "FAIL", "message": reason}).to_string() }
    }
}

/// SUCCESS / PROCESSING / ABNORMAL / CLOSED.
pub fn refund_state_of(status: &str) -> RefundState {
    match status {
        "SUCCESS" => RefundState::Succeeded,
        "PROCESSING" => RefundState::Processing,
        "ABNORMAL" => RefundState::Abnormal,
        other => RefundState::Failed(other.to_owned()),
    }
}
