//! The WeChat Pay v3 connector: signed requests, the `Channel` calls and notification
//! verification. Which platform keys it trusts is `trust`'s; what an answer means, `answers`'.

use super::answers::{
    Answer, PrepayCode, close_outcome, error_of, prepay_outcome, query_outcome, refund_outcome,
    refund_query_outcome, refund_state_of, trade_state_of,
};
use super::bill::checked_bill;
use super::protocol::{self, Amount, NotifyEnvelope, PlatformKeys, PrepayBody, Transaction};
use super::trust::PlatformTrust;
use crate::crypto::{RsaSigner, nonce};
use crate::secret::SecretBytes;
use crate::{
    Channel, ChannelError, ChannelOrderRef, CloseAnswer, Notification, NotifyError, NotifyReply,
    Prepaid, PrepayRequest, TradeState, classify_transport,
};
use crate::{RefundRef, RefundRequest, RefundState};
use async_trait::async_trait;
use payonce_core::{ChannelName, PayMethod, Timestamp};
use reqwest::header::HeaderMap;
use std::sync::Arc;

/// Everything a merchant holds for WeChat Pay. For a sub-merchant (`partner` set) these are its
/// service provider's: `mchid` / `appid` are then `sp_mchid` / `sp_appid`, and the provider's
/// key signs every call.
#[derive(Clone)]
pub struct WechatpayKeys {
    pub mchid: String,
    pub appid: String,
    /// Serial of the merchant API certificate, sent as `serial_no`.
    pub merchant_serial_no: String,
    pub merchant_key: Arc<RsaSigner>,
    /// The 32-byte APIv3 key that decrypts notification resources.
    pub apiv3_key: SecretBytes,
    pub platform: PlatformKeys,
    /// Certificate mode: download `GET /v3/certificates` when an answer or notification names
    /// a serial we do not know (WeChat rotates platform certificates; old and new overlap).
    /// Public-key mode (`PUB_KEY_ID_…`, the recommended default) needs none of this.
    pub download_certificates: bool,
    /// Service-provider mode (服务商): the sub-merchant this connector acts for, through the
    /// partner APIs (`/v3/pay/partner/transactions/*`, `sub_mchid` on refunds and bills).
    pub partner: Option<SubMerchant>,
}

impl WechatpayKeys {
    /// `(what, SHA-256)` of the merchant key's public half and of each platform key: what an
    /// operator compares with WeChat's console (never of a secret).
    pub fn fingerprints(&self) -> Vec<(String, String)> {
        let mut out = vec![(
            format!("merchant key {}", self.merchant_serial_no),
            self.merchant_key.verifier().fingerprint(),
        )];
        for (id, key) in &self.platform.0 {
            out.push((format!("platform key {id}"), key.fingerprint()));
        }
        out
    }
}

/// A sub-merchant (特约商户) under a service provider.
#[derive(Clone, Debug)]
pub struct SubMerchant {
    pub sub_mchid: String,
    /// The sub-merchant's own appid: when set, JSAPI payers are named by `sub_openid` and the
    /// front-end package is signed for it; otherwise by `sp_openid` under the provider's appid.
    pub sub_appid: Option<String>,
}

pub struct WechatpayClient {
    gateway: String,
    keys: WechatpayKeys,
    http: reqwest::Client,
    clock: crate::SharedClock,
    trust: Arc<PlatformTrust>,
}

impl WechatpayClient {
    pub fn new(
        gateway: String,
        keys: WechatpayKeys,
        http: reqwest::Client,
        clock: crate::SharedClock,
    ) -> Self {
        let gateway = gateway.trim_end_matches('/').to_owned();
        let trust = Arc::new(PlatformTrust::new(&keys, &gateway, &http, &clock));
        WechatpayClient {
            gateway,
            keys,
            http,
            clock,
            trust,
        }
    }

    /// Verifies a platform signature; an unknown serial triggers one (rate-bounded) certificate
    /// download and a second try.
    async fn verify_platform(
        &self,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
    ) -> Result<(), protocol::VerifyError> {
        let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        let check = || {
            self.trust.verify(
                h(protocol::H_SERIAL),
                h(protocol::H_TIMESTAMP),
                h(protocol::H_NONCE),
                h(protocol::H_SIGNATURE),
                body,
                self.now_secs(),
            )
        };
        match check() {
            Err(protocol::VerifyError::UnknownSerial) => {
                // Whether this call downloaded or waited for another's download, the keys may
                // now hold the serial: look again.
                self.trust.refresh().await;
                check()
            }
            other => other,
        }
    }

    fn now_secs(&self) -> i64 {
        self.clock.now().0.div_euclid(1000)
    }

    /// A signed request. A 2xx answer is returned only once its platform signature verifies (an
    /// unverifiable answer may not be WeChat's, so it is ambiguous). A 4xx is returned either
    /// way, marked whether it verified: WeChat does not sign every error (a 401 SIGN_ERROR comes
    /// unsigned by design) and the official clients check signatures on 2xx only
    /// (wechatpay-go `CheckResponse` before `Validate`); each call reads an unsigned 4xx only so
    /// far as it cannot move money (`Answer::signed`).
    async fn call(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<String>,
    ) -> Result<Answer, ChannelError> {
        let body = body.unwrap_or_default();
        let auth = protocol::authorization(
            &self.keys.merchant_key,
            &self.keys.mchid,
            &self.keys.merchant_serial_no,
            method.as_str(),
            path_and_query,
            &body,
            self.now_secs(),
        );
        let mut req = self
            .http
            .request(method, format!("{}{}", self.gateway, path_and_query))
            .header("authorization", auth)
            .header("accept", "application/json")
            .header("user-agent", concat!("payonce/", env!("CARGO_PKG_VERSION")));
        if let Some(serial) = self.trust.serial_to_announce() {
            req = req.header(protocol::H_SERIAL, serial);
        }
        if !body.is_empty() {
            req = req.header("content-type", "application/json").body(body);
        }
        let resp = req.send().await.map_err(classify_transport)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ChannelError::Ambiguous(e.to_string()))?
            .to_vec();
        if status >= 500 {
            return Err(ChannelError::Ambiguous(format!(
                "gateway answered {status}"
            )));
        }
        match self.verify_platform(&headers, &bytes).await {
            Ok(()) => Ok(Answer {
                status,
                bytes,
                signed: true,
            }),
            Err(e) if (400..500).contains(&status) => {
                tracing::warn!(status, error = ?e, "wechatpay error answer without a valid platform signature");
                Ok(Answer {
                    status,
                    bytes,
                    signed: false,
                })
            }
            Err(e) => Err(ChannelError::Ambiguous(format!(
                "response signature rejected: {e:?}"
            ))),
        }
    }

    /// The appid a JSAPI payer's openid belongs to: the sub-merchant's own when it has one,
    /// else the (provider's) `appid`.
    fn payer_appid(&self) -> &str {
        match &self.keys.partner {
            Some(SubMerchant {
                sub_appid: Some(sub_appid),
                ..
            }) => sub_appid,
            _ => &self.keys.appid,
        }
    }

    /// The merchant whose orders this connector makes: the sub-merchant in partner mode.
    fn order_mchid(&self) -> &str {
        match &self.keys.partner {
            Some(sub) => &sub.sub_mchid,
            None => &self.keys.mchid,
        }
    }

    /// The prepay body: a direct merchant's (`appid`, `mchid`, `payer.openid`) or a partner
    /// one (`sp_appid`, `sp_mchid`, `sub_mchid`, `sub_appid`?, `payer.sp_openid|sub_openid`).
    fn prepay_body(&self, req: &PrepayRequest, openid: Option<&str>) -> serde_json::Value {
        let body = PrepayBody {
            appid: self.keys.appid.clone(),
            mchid: self.keys.mchid.clone(),
            description: req.subject.clone(),
            out_trade_no: req.out_trade_no.clone(),
            time_expire: Some(protocol::beijing_rfc3339(req.expires_at.0)),
            notify_url: req.notify_url.clone(),
            amount: Amount {
                total: req.amount.minor,
                currency: Some(req.amount.currency.to_string()),
                payer_total: None,
                payer_currency: None,
            },
            payer: None,
        };
        let mut v = serde_json::to_value(body).expect("prepay body");
        let Some(sub) = &self.keys.partner else {
            if let Some(openid) = openid {
                v["payer"] = serde_json::json!({ "openid": openid });
            }
            return v;
        };
        let o = v.as_object_mut().expect("an object");
        o.remove("appid");
        o.remove("mchid");
        o.insert("sp_appid".into(), self.keys.appid.clone().into());
        o.insert("sp_mchid".into(), self.keys.mchid.clone().into());
        if let Some(sub_appid) = &sub.sub_appid {
            o.insert("sub_appid".into(), sub_appid.clone().into());
        }
        o.insert("sub_mchid".into(), sub.sub_mchid.clone().into());
        if let Some(openid) = openid {
            let field = if sub.sub_appid.is_some() {
                "sub_openid"
            } else {
                "sp_openid"
            };
            o.insert("payer".into(), serde_json::json!({ field: openid }));
        }
        v
    }

    /// The JSAPI front-end package: `paySign` over `appId\ntimeStamp\nnonceStr\npackage\n`.
    fn jsapi_credential(&self, prepay_id: &str) -> serde_json::Value {
        let ts = self.now_secs().to_string();
        let nonce_str = nonce(32);
        let package = format!("prepay_id={prepay_id}");
        let app_id = self.payer_appid();
        let msg = format!("{app_id}\n{ts}\n{nonce_str}\n{package}\n");
        serde_json::json!({
            "appId": app_id,
            "timeStamp": ts,
            "nonceStr": nonce_str,
            "package": package,
            "signType": "RSA",
            "paySign": self.keys.merchant_key.sign_b64(msg.as_bytes()),
        })
    }
}

/// How long WeChat honours a `code_url` or `prepay_id` (WeChat Pay: "prepay_id 有效期为2小时").
pub const CREDENTIAL_LIFE_MS: i64 = 2 * 3_600_000;

#[async_trait]
impl Channel for WechatpayClient {
    fn name(&self) -> ChannelName {
        ChannelName::Wechatpay
    }

    #[tracing::instrument(skip_all, fields(channel = "wechatpay", out_trade_no = %req.out_trade_no))]
    async fn prepay(&self, req: &PrepayRequest) -> Result<Prepaid, ChannelError> {
        let partner = self.keys.partner.is_some();
        let (path, openid) = match req.method {
            PayMethod::Jsapi => {
                let openid = req
                    .payer
                    .as_ref()
                    .and_then(|p| p.get("openid"))
                    .and_then(|o| o.as_str());
                let Some(openid) = openid else {
                    return Err(ChannelError::Refused {
                        code: "PARAM_ERROR".into(),
                        message: "jsapi needs payer.openid".into(),
                    });
                };
                let path = if partner {
                    "/v3/pay/partner/transactions/jsapi"
                } else {
                    "/v3/pay/transactions/jsapi"
                };
                (path, Some(openid))
            }
            _ if partner => ("/v3/pay/partner/transactions/native", None),
            _ => ("/v3/pay/transactions/native", None),
        };
        let body = self.prepay_body(req, openid);
        // A prepay's 4xx is read by its code signed or not: prepay_outcome makes of it at most
        // "refused, nothing created", which moves no money.
        let Answer { status, bytes, .. } = self
            .call(reqwest::Method::POST, path, Some(body.to_string()))
            .await?;
        let credential = match prepay_outcome(status, &bytes)? {
            PrepayCode::CodeUrl(code_url) => serde_json::json!({ "code_url": code_url }),
            PrepayCode::PrepayId(prepay_id) => self.jsapi_credential(&prepay_id),
        };
        Ok(Prepaid {
            credential,
            // A code_url / prepay_id lives 2 hours whatever time_expire says: past that a prepay
            // refreshes it (same attempt, same request) while the order is still open.
            credential_expires_at: Timestamp(
                req.expires_at
                    .0
                    .min(self.clock.now().0 + CREDENTIAL_LIFE_MS),
            ),
            // WeChat closes the order itself at time_expire.
            payable_until: req.expires_at,
            channel_data: None,
        })
    }

    async fn query(&self, order: &ChannelOrderRef) -> Result<TradeState, ChannelError> {
        let out_trade_no = order.out_trade_no.as_str();
        let path = match &self.keys.partner {
            Some(sub) => format!(
                "/v3/pay/partner/transactions/out-trade-no/{out_trade_no}?sp_mchid={}&sub_mchid={}",
                self.keys.mchid, sub.sub_mchid
            ),
            None => format!(
                "/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={}",
                self.keys.mchid
            ),
        };
        let (status, bytes) = self
            .call(reqwest::Method::GET, &path, None)
            .await?
            .vouched()?;
        query_outcome(status, &bytes, self.order_mchid(), out_trade_no)
    }

    async fn close(&self, order: &ChannelOrderRef) -> Result<CloseAnswer, ChannelError> {
        let out_trade_no = order.out_trade_no.as_str();
        let (path, body) = match &self.keys.partner {
            Some(sub) => (
                format!("/v3/pay/partner/transactions/out-trade-no/{out_trade_no}/close"),
                serde_json::json!({ "sp_mchid": self.keys.mchid, "sub_mchid": sub.sub_mchid }),
            ),
            None => (
                format!("/v3/pay/transactions/out-trade-no/{out_trade_no}/close"),
                serde_json::json!({ "mchid": self.keys.mchid }),
            ),
        };
        let body = body.to_string();
        let (status, bytes) = self
            .call(reqwest::Method::POST, &path, Some(body))
            .await?
            .vouched()?;
        close_outcome(status, &bytes)
    }

    async fn refund(
        &self,
        req: &RefundRequest,
    ) -> Result<(RefundState, Option<String>), ChannelError> {
        let body = protocol::RefundBody {
            sub_mchid: self.keys.partner.as_ref().map(|p| p.sub_mchid.clone()),
            out_trade_no: req.order.out_trade_no.clone(),
            out_refund_no: req.out_refund_no.clone(),
            reason: req.reason.clone(),
            notify_url: Some(req.notify_url.clone()),
            amount: protocol::RefundAmount {
                refund: req.amount.minor,
                total: req.total.minor,
                currency: req.amount.currency.to_string(),
            },
        };
        let (status, bytes) = self
            .call(
                reqwest::Method::POST,
                "/v3/refund/domestic/refunds",
                Some(serde_json::to_string(&body).unwrap()),
            )
            .await?
            .vouched_or_unknown()?;
        Ok((refund_outcome(status, &bytes)?, None))
    }

    async fn refund_query(&self, r: &RefundRef) -> Result<RefundState, ChannelError> {
        let (status, bytes) = self
            .call(
                reqwest::Method::GET,
                &match &self.keys.partner {
                    Some(sub) => format!(
                        "/v3/refund/domestic/refunds/{}?sub_mchid={}",
                        r.out_refund_no, sub.sub_mchid
                    ),
                    None => format!("/v3/refund/domestic/refunds/{}", r.out_refund_no),
                },
                None,
            )
            .await?
            .vouched_or_unknown()?;
        refund_query_outcome(status, &bytes)
    }

    /// `GET /v3/bill/tradebill` (asking for `tar_type=GZIP`), then the signed download. WeChat
    /// vouches for the download only through `hash_value` in the signed answer, which is the
    /// SHA-1 of the ORIGINAL bill — of the decompressed text when the download is gzip ("原始账单
    /// （gzip需要解压缩）的摘要值", 申请交易账单 API, pay.weixin.qq.com/wiki/doc/apiv3/apis/chapter3_1_6.shtml).
    /// A plain download (no `tar_type`, or a gateway that ignores it) is hashed as is and then
    /// compressed for storage.
    async fn download_bill(&self, date: &str) -> Result<crate::bill::BillDownload, ChannelError> {
        let (status, bytes) = self
            .call(
                reqwest::Method::GET,
                &match &self.keys.partner {
                    // A provider's bill of one sub-merchant: reconciliation is per account.
                    Some(sub) => format!(
                        "/v3/bill/tradebill?bill_date={date}&sub_mchid={}&bill_type=ALL&tar_type=GZIP",
                        sub.sub_mchid
                    ),
                    None => {
                        format!("/v3/bill/tradebill?bill_date={date}&bill_type=ALL&tar_type=GZIP")
                    }
                },
                None,
            )
            .await?
            .vouched()?;
        if status != 200 {
            let e = error_of(status, &bytes);
            // 账单文件不存在: no trade that day (a signed answer: `vouched` let no unsigned 4xx by).
            if e.code == "NO_STATEMENT_EXIST" {
                return Ok(crate::bill::BillDownload::NoBill { code: e.code });
            }
            return Err(ChannelError::Refused {
                code: e.code,
                message: e.message,
            });
        }
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| ChannelError::Ambiguous(e.to_string()))?;
        let url = v["download_url"]
            .as_str()
            .ok_or_else(|| ChannelError::Ambiguous("no download_url".into()))?;
        let path = url.strip_prefix(&self.gateway).unwrap_or(url);
        let auth = protocol::authorization(
            &self.keys.merchant_key,
            &self.keys.mchid,
            &self.keys.merchant_serial_no,
            "GET",
            path,
            "",
            self.now_secs(),
        );
        let mut resp = self
            .http
            .get(url)
            .header("authorization", auth)
            .send()
            .await
            .map_err(classify_transport)?;
        // Read chunk by chunk into one buffer sized from Content-Length: a large bill is held
        // once, never copied while it grows.
        let mut content =
            Vec::with_capacity(resp.content_length().unwrap_or(0).min(1 << 30) as usize);
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| ChannelError::Ambiguous(e.to_string()))?
        {
            content.extend_from_slice(&chunk);
        }
        let content = checked_bill(content, v["hash_value"].as_str().unwrap_or_default())
            .map_err(|e| ChannelError::Ambiguous(e.to_string()))?;
        Ok(crate::bill::BillDownload::Bill(
            crate::bill::DownloadedBill {
                merchant_account: self.order_mchid().to_owned(),
                bill_type: "ALL".into(),
                format: crate::bill::BillFormat::WechatGzip,
                content,
            },
        ))
    }

    fn verify_notification(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: Timestamp,
    ) -> Result<Notification, NotifyError> {
        let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        if h(protocol::H_SIGNATURE_TYPE).is_some_and(|t| t != protocol::SIGNATURE_TYPE) {
            return Err(NotifyError::BadSignature);
        }
        self.trust
            .verify(
                h(protocol::H_SERIAL),
                h(protocol::H_TIMESTAMP),
                h(protocol::H_NONCE),
                h(protocol::H_SIGNATURE),
                body,
                now.0.div_euclid(1000),
            )
            .map_err(|e| match e {
                protocol::VerifyError::UnknownSerial => {
                    // Maybe a rotated certificate: learn it in the background, so WeChat's next
                    // delivery of this notification (it retries) verifies.
                    self.trust.refresh_in_background();
                    NotifyError::UnknownKey
                }
                protocol::VerifyError::Stale => NotifyError::Stale,
                _ => NotifyError::BadSignature,
            })?;
        let env: NotifyEnvelope =
            serde_json::from_slice(body).map_err(|e| NotifyError::Malformed(e.to_string()))?;
        if env.resource.algorithm != "AEAD_AES_256_GCM" {
            return Err(NotifyError::Malformed(format!(
                "algorithm {}",
                env.resource.algorithm
            )));
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
                let t: Transaction = serde_json::from_slice(&plain)
                    .map_err(|e| NotifyError::Malformed(e.to_string()))?;
                // Sub-merchants of one provider share its APIv3 key: decrypting proves the
                // provider, only `sub_mchid` tells which of its merchants (isolation, I9).
                let sub = self.keys.partner.as_ref().map(|p| p.sub_mchid.as_str());
                if !t.belongs_to(&self.keys.mchid, &self.keys.appid, sub) {
                    return Err(NotifyError::OtherMerchant(format!(
                        "mchid {} (not this account's)",
                        t.merchant()
                    )));
                }
                Ok(Notification {
                    event_id: env.id,
                    out_trade_no: t.out_trade_no.clone(),
                    state: trade_state_of(&t),
                    refund: None,
                    content: Some(String::from_utf8_lossy(&plain).into_owned()),
                })
            }
            "REFUND.SUCCESS" | "REFUND.ABNORMAL" | "REFUND.CLOSED" => {
                let r: serde_json::Value = serde_json::from_slice(&plain)
                    .map_err(|e| NotifyError::Malformed(e.to_string()))?;
                // A partner refund notification names `sp_mchid` and `sub_mchid`.
                let ours = match &self.keys.partner {
                    Some(sub) => {
                        r["sp_mchid"].as_str() == Some(self.keys.mchid.as_str())
                            && r["sub_mchid"].as_str() == Some(sub.sub_mchid.as_str())
                    }
                    None => r["mchid"].as_str() == Some(self.keys.mchid.as_str()),
                };
                if !ours {
                    return Err(NotifyError::OtherMerchant(
                        "a refund of another merchant".into(),
                    ));
                }
                let field = |k: &str| {
                    r[k].as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| NotifyError::Malformed(format!("no {k}")))
                };
                Ok(Notification {
                    event_id: env.id,
                    out_trade_no: field("out_trade_no")?,
                    // A refund says nothing new about the payment.
                    state: TradeState::Unpaid,
                    refund: Some(crate::RefundNotice {
                        out_refund_no: field("out_refund_no")?,
                        state: refund_state_of(&field("refund_status")?),
                    }),
                    content: Some(String::from_utf8_lossy(&plain).into_owned()),
                })
            }
            other => Err(NotifyError::Malformed(format!(
                "unsupported event_type {other}"
            ))),
        }
    }

    fn notify_ack(&self) -> NotifyReply {
        NotifyReply {
            status: 204,
            content_type: "application/json",
            body: String::new(),
        }
    }

    fn notify_nack(&self, reason: &str) -> NotifyReply {
        NotifyReply {
            status: 400,
            content_type: "application/json",
            body: serde_json::json!({"code": "FAIL", "message": reason}).to_string(),
        }
    }
}
