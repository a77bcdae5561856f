//! The Alipay connector (precreate QR codes): signed gateway calls, the `Channel` calls, and
//! how long a precreate QR lives. What an answer or a notification means is `answers`'.

use super::answers::{
    close_outcome, precreate_outcome, query_outcome, read_code, read_notification, refund_outcome,
    refund_query_outcome, verify_signed,
};
use super::protocol::{self, beijing_time};
use crate::crypto::{RsaSigner, RsaVerifier};
use crate::money::fen_to_yuan;
use crate::{
    Channel, ChannelError, ChannelOrderRef, CloseAnswer, Notification, NotifyError, NotifyReply,
    Prepaid, PrepayRequest, TradeState, classify_transport,
};
use crate::{RefundRef, RefundRequest, RefundState};
use async_trait::async_trait;
use payonce_core::{ChannelName, Timestamp};
use reqwest::header::HeaderMap;
use serde_json::Value;

#[derive(Clone)]
pub struct AlipayKeys {
    /// The app that signs: the merchant's own, or an ISV's third-party app (`isv` set).
    pub app_id: String,
    pub app_private_key: std::sync::Arc<RsaSigner>,
    pub alipay_public_key: RsaVerifier,
    /// ISV mode (第三方应用代调用): the merchant this connector acts for.
    pub isv: Option<IsvGrant>,
}

impl AlipayKeys {
    /// `(what, SHA-256)` of the app key's public half and of Alipay's public key.
    pub fn fingerprints(&self) -> Vec<(String, String)> {
        vec![
            (
                "app key".to_owned(),
                self.app_private_key.verifier().fingerprint(),
            ),
            (
                "alipay public key".to_owned(),
                self.alipay_public_key.fingerprint(),
            ),
        ]
    }
}

/// What a merchant granted an ISV's third-party app: its own app id (`auth_app_id` in its
/// notifications) and the token every call on its behalf carries (`app_auth_token`).
#[derive(Clone)]
pub struct IsvGrant {
    pub auth_app_id: String,
    pub app_auth_token: crate::secret::SecretBytes,
}

pub struct AlipayClient {
    gateway: String,
    keys: AlipayKeys,
    http: reqwest::Client,
    clock: crate::SharedClock,
}

impl AlipayClient {
    pub fn new(
        gateway: String,
        keys: AlipayKeys,
        http: reqwest::Client,
        clock: crate::SharedClock,
    ) -> Self {
        AlipayClient {
            gateway,
            keys,
            http,
            clock,
        }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().0
    }

    /// Calls `method` with `biz_content`; returns the verified `*_response` object. A business
    /// error (code ≠ 10000) is returned as `Err(Refused{sub_code})`.
    async fn call(
        &self,
        method: &str,
        biz_content: Value,
        notify_url: Option<&str>,
    ) -> Result<Value, ChannelError> {
        read_code(self.call_signed(method, biz_content, notify_url).await?)
    }

    /// `call`, returning the verified `*_response` object whatever its code.
    async fn call_signed(
        &self,
        method: &str,
        biz_content: Value,
        notify_url: Option<&str>,
    ) -> Result<Value, ChannelError> {
        let mut params: Vec<(String, String)> = vec![
            ("app_id".into(), self.keys.app_id.clone()),
            ("method".into(), method.into()),
            ("format".into(), "JSON".into()),
            ("charset".into(), "utf-8".into()),
            ("sign_type".into(), "RSA2".into()),
            ("timestamp".into(), beijing_time(self.now_ms())),
            ("version".into(), "1.0".into()),
            ("biz_content".into(), biz_content.to_string()),
        ];
        if let Some(u) = notify_url {
            params.push(("notify_url".into(), u.into()));
        }
        // ISV mode: the merchant's token is a common parameter, signed with the rest.
        if let Some(isv) = &self.keys.isv {
            params.push((
                "app_auth_token".into(),
                String::from_utf8_lossy(isv.app_auth_token.expose()).into_owned(),
            ));
        }
        let sign = protocol::sign_params(&self.keys.app_private_key, &params);
        params.push(("sign".into(), sign));
        let resp = self
            .http
            .post(&self.gateway)
            .header(
                "content-type",
                "application/x-www-form-urlencoded;charset=utf-8",
            )
            .body(protocol::encode_form(&params))
            .send()
            .await
            .map_err(classify_transport)?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| ChannelError::Ambiguous(e.to_string()))?;
        if status != 200 {
            return Err(ChannelError::Ambiguous(format!(
                "gateway answered {status}"
            )));
        }
        verify_signed(&text, method, &self.keys.alipay_public_key)
    }
}

/// Text payonce sends to Alipay that comes back inside a signed notification (`subject`): the
/// signing string's separators `&` and `=`, and `/` (which Alipay forbids in `subject`), become
/// their full-width forms (＆ ＝ ／). A product called "Tom & Jerry" stays readable, and no
/// value can be re-cut into other fields of a genuine signed notification.
pub fn alipay_text(s: &str) -> String {
    s.replace('&', "＆").replace('=', "＝").replace('/', "／")
}

/// The longest an Alipay QR code is ever valid, whatever was asked (Alipay: 2 hours).
pub const QR_MAX_LIFE_MS: i64 = 2 * 3_600_000;

/// How long an Alipay precreate QR lives, every documented reading taken into account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QrLifetimes {
    /// `qr_code_timeout_express`: whole minutes, rounded UP (a shorter QR would die before the
    /// order; `time_expire` still ends the trade on time), at least 1.
    pub qr_minutes: i64,
    /// Hand the QR out until the earliest of `time_expire`, creation + qr minutes, creation + 2 h.
    pub valid_until: i64,
    /// The latest moment any reading lets the payer still pay: the QR timer counted from the
    /// request or from the scan (Alipay's documents say both), or the code's own 2 hours.
    pub payable_until: i64,
}

/// Lifetimes of a QR first requested at `requested_at` (which fixes `qr_code_timeout_express`,
/// so every refresh sends identical parameters) for an order that expires at `expires_at`, and
/// (re)issued at `sent_at`.
pub fn precreate_lifetimes(requested_at: i64, expires_at: i64, sent_at: i64) -> QrLifetimes {
    let left = (expires_at - requested_at).max(0);
    let qr_minutes = ((left + 59_999) / 60_000).clamp(1, QR_MAX_LIFE_MS / 60_000);
    let qr_ms = qr_minutes * 60_000;
    let valid_until = expires_at
        .min(sent_at + qr_ms)
        .min(sent_at + QR_MAX_LIFE_MS);
    // Scanned at the last valid moment, with the QR timer counted from the scan; or time_expire
    // ignored and the code's 2-hour life honoured.
    let payable_until = expires_at
        .max(sent_at + QR_MAX_LIFE_MS)
        .max(valid_until + qr_ms);
    QrLifetimes {
        qr_minutes,
        valid_until,
        payable_until,
    }
}

#[async_trait]
impl Channel for AlipayClient {
    fn name(&self) -> ChannelName {
        ChannelName::Alipay
    }

    #[tracing::instrument(skip_all, fields(channel = "alipay", out_trade_no = %req.out_trade_no))]
    async fn prepay(&self, req: &PrepayRequest) -> Result<Prepaid, ChannelError> {
        let now = self.now_ms();
        // The parameters come from the first request's time, so a refresh re-sends them
        // identically; the new QR's validity counts from now.
        let plan = precreate_lifetimes(req.requested_at.0, req.expires_at.0, now);
        let biz = serde_json::json!({
            "out_trade_no": req.out_trade_no,
            "total_amount": fen_to_yuan(req.amount.minor),
            "subject": alipay_text(&req.subject),
            // Absolute: no doubt about where a relative timeout starts counting.
            "time_expire": beijing_time(req.expires_at.0),
            "qr_code_timeout_express": format!("{}m", plan.qr_minutes),
        });
        let qr = precreate_outcome(
            self.call("alipay.trade.precreate", biz, Some(&req.notify_url))
                .await,
        )?;
        Ok(Prepaid {
            credential: serde_json::json!({ "qr_code": qr }),
            // Handed out until the earliest end; refreshed past it while the order is open.
            credential_expires_at: Timestamp(plan.valid_until),
            payable_until: Timestamp(plan.payable_until),
            channel_data: None,
        })
    }

    async fn query(&self, order: &ChannelOrderRef) -> Result<TradeState, ChannelError> {
        query_outcome(
            self.call(
                "alipay.trade.query",
                serde_json::json!({ "out_trade_no": order.out_trade_no }),
                None,
            )
            .await,
        )
    }

    async fn close(&self, order: &ChannelOrderRef) -> Result<CloseAnswer, ChannelError> {
        close_outcome(
            self.call(
                "alipay.trade.close",
                serde_json::json!({ "out_trade_no": order.out_trade_no }),
                None,
            )
            .await,
        )
    }

    async fn refund(
        &self,
        req: &RefundRequest,
    ) -> Result<(RefundState, Option<String>), ChannelError> {
        // out_request_no is always sent: without it Alipay treats every call as "the" refund of
        // the trade, and partial refunds cannot be told apart or retried safely.
        let biz = serde_json::json!({
            "out_trade_no": req.order.out_trade_no,
            "refund_amount": fen_to_yuan(req.amount.minor),
            "out_request_no": req.out_refund_no,
            "refund_reason": req.reason.clone().unwrap_or_default(),
        });
        Ok((
            refund_outcome(self.call("alipay.trade.refund", biz, None).await)?,
            None,
        ))
    }

    async fn refund_query(&self, r: &RefundRef) -> Result<RefundState, ChannelError> {
        let biz = serde_json::json!({ "out_trade_no": r.order.out_trade_no, "out_request_no": r.out_refund_no });
        refund_query_outcome(
            self.call("alipay.trade.fastpay.refund.query", biz, None)
                .await,
        )
    }

    /// `alipay.data.dataservice.bill.downloadurl.query` (`bill_type=trade`), then the download:
    /// a zip whose integrity is its own (CRCs, and the summary file's totals checked on reading).
    async fn download_bill(&self, date: &str) -> Result<crate::bill::BillDownload, ChannelError> {
        let method = "alipay.data.dataservice.bill.downloadurl.query";
        let answer = self
            .call_signed(
                method,
                serde_json::json!({"bill_type": "trade", "bill_date": date}),
                None,
            )
            .await?;
        // 账单不存在 (40004 isp.bill_not_exist): no trade that day. Read before `read_code`,
        // which takes every `isp.*` for a system error to retry.
        if answer["sub_code"].as_str() == Some("isp.bill_not_exist") {
            return Ok(crate::bill::BillDownload::NoBill {
                code: "isp.bill_not_exist".into(),
            });
        }
        let b = read_code(answer)?;
        let url = b["bill_download_url"]
            .as_str()
            .ok_or_else(|| ChannelError::Ambiguous("no bill_download_url".into()))?;
        let bytes = self
            .http
            .get(url)
            .send()
            .await
            .map_err(classify_transport)?
            .bytes()
            .await
            .map_err(|e| ChannelError::Ambiguous(e.to_string()))?;
        Ok(crate::bill::BillDownload::Bill(
            crate::bill::DownloadedBill {
                merchant_account: self
                    .keys
                    .isv
                    .as_ref()
                    .map_or(&self.keys.app_id, |i| &i.auth_app_id)
                    .clone(),
                bill_type: "trade".into(),
                format: crate::bill::BillFormat::AlipayZip,
                content: bytes.to_vec(),
            },
        ))
    }

    fn verify_notification(
        &self,
        _headers: &HeaderMap,
        body: &[u8],
        _now: Timestamp,
    ) -> Result<Notification, NotifyError> {
        let params = protocol::parse_form(body);
        if params.is_empty() {
            return Err(NotifyError::Malformed("empty form".into()));
        }
        if !protocol::verify_notification(&self.keys.alipay_public_key, &params) {
            return Err(NotifyError::BadSignature);
        }
        // The merchant a notification is of: `auth_app_id` (Alipay sends it always; a
        // merchant's own names its app_id twice). An ISV's merchants share its app and its
        // keys: only this tells a sibling's genuine message apart (isolation, I9).
        let n = read_notification(&params, &self.keys.app_id)?;
        let isv = self.keys.isv.as_ref().map(|i| i.auth_app_id.as_str());
        if !protocol::names_merchant(&params, &self.keys.app_id, isv) {
            return Err(NotifyError::OtherMerchant(
                "auth_app_id is not this account's merchant".into(),
            ));
        }
        Ok(n)
    }

    fn notify_ack(&self) -> NotifyReply {
        NotifyReply {
            status: 200,
            content_type: "text/plain",
            body: "success".into(),
        }
    }

    fn notify_nack(&self, _reason: &str) -> NotifyReply {
        // Anything but the literal `success` makes Alipay retry.
        NotifyReply {
            status: 400,
            content_type: "text/plain",
            body: "fail".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn qr_lifetimes_round_up_and_cover_every_reading() {
        // An order 90 s from expiry: 2 whole minutes (rounded up; time_expire still ends it on
        // time), handed out until the order expires, watched for the QR's 2 hours at least.
        let t = 1_000_000_000_000;
        let l = precreate_lifetimes(t, t + 90_000, t);
        assert_eq!(l.qr_minutes, 2);
        assert_eq!(l.valid_until, t + 90_000);
        assert!(l.payable_until >= t + QR_MAX_LIFE_MS);
        // A 3-hour order: the QR is capped at 2 hours and must be refreshed after that.
        let l = precreate_lifetimes(t, t + 180 * MIN, t);
        assert_eq!((l.qr_minutes, l.valid_until), (120, t + QR_MAX_LIFE_MS));
        // Re-issued 2 h later with the SAME parameters (qr minutes fixed by the first request).
        let again = precreate_lifetimes(t, t + 180 * MIN, t + 121 * MIN);
        assert_eq!(again.qr_minutes, 120);
        assert_eq!(again.valid_until, t + 180 * MIN);
        assert!(again.payable_until >= t + 121 * MIN + QR_MAX_LIFE_MS);
        // Never less than a minute.
        assert_eq!(precreate_lifetimes(t, t, t).qr_minutes, 1);
    }
}
