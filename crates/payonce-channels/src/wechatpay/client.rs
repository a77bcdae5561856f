//! The WeChat Pay v3 connector.

use super::protocol::{
    self, Amount, ErrorBody, NotifyEnvelope, PlatformKeys, PrepayBody, Transaction,
};
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
use std::sync::{Arc, RwLock};

/// Everything a merchant holds for WeChat Pay.
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
}

pub struct WechatpayClient {
    gateway: String,
    keys: WechatpayKeys,
    http: reqwest::Client,
    clock: crate::SharedClock,
    trust: Arc<PlatformTrust>,
}

/// The platform keys this merchant trusts, refreshed from `/v3/certificates` at a bounded rate.
struct PlatformTrust {
    keys: RwLock<PlatformKeys>,
    /// When the next download may start (ms); `None`: at once. Held across a download, so
    /// concurrent callers wait for the one in flight (see `refresh`).
    last_download: tokio::sync::Mutex<Option<i64>>,
    downloader: Option<CertificateDownloader>,
}

/// What a certificate download needs, shareable with a background task.
struct CertificateDownloader {
    gateway: String,
    http: reqwest::Client,
    mchid: String,
    merchant_serial_no: String,
    merchant_key: Arc<RsaSigner>,
    apiv3_key: SecretBytes,
    clock: crate::SharedClock,
}

/// At most one certificate download per this interval: an attacker sending notifications
/// with made-up serials cannot make payonce hammer WeChat.
const CERTIFICATE_DOWNLOAD_INTERVAL_MS: i64 = 60_000;
/// After a failed download, the next may come this soon: a failure (WeChat busy, a timeout on a
/// loaded machine) must not leave every answer signed by a new certificate unverifiable for a
/// whole interval.
const CERTIFICATE_RETRY_AFTER_FAILURE_MS: i64 = 5_000;

impl PlatformTrust {
    /// The `Wechatpay-Serial` a request announces: the key WeChat should sign its answer with.
    /// The platform public key's id when one is trusted (answers signed by it verify whatever
    /// certificates WeChat still holds), else a trusted certificate's serial — what wechatpayv3
    /// and wechatpay-java send. Without it WeChat signs with its platform certificate, which a
    /// merchant holding only the public key cannot verify.
    fn serial_to_announce(&self) -> Option<String> {
        let keys = self.keys.read().expect("platform keys lock");
        let public_key = keys
            .0
            .keys()
            .find(|k| k.starts_with(protocol::PUBLIC_KEY_ID_PREFIX));
        public_key.or_else(|| keys.0.keys().next_back()).cloned()
    }

    fn verify(
        &self,
        serial: Option<&str>,
        ts: Option<&str>,
        nonce: Option<&str>,
        sig: Option<&str>,
        body: &[u8],
        now_secs: i64,
    ) -> Result<(), protocol::VerifyError> {
        self.keys
            .read()
            .expect("platform keys lock")
            .verify(serial, ts, nonce, sig, body, now_secs)
    }

    /// Downloads the platform certificates (unless one was downloaded within the interval) and
    /// trusts every unexpired one beside those already known. Returns whether anything new was
    /// learnt.
    ///
    /// One download at a time, and the lock is held across it on purpose: a caller that arrives
    /// while a download is in flight waits for it and then finds what it learnt (its caller
    /// checks again), instead of being told "already tried" and failing its own verification.
    /// Answers signed by a new certificate come in bunches — an active query, a prepay, a
    /// refund at once — and on a loaded machine the bunch outlasts the download; the losers of
    /// that race were answers payonce could not verify, hence `unknown` prepays.
    async fn refresh(&self) -> bool {
        let Some(d) = &self.downloader else {
            return false;
        };
        let mut next_allowed = self.last_download.lock().await;
        let now = d.clock.now().0;
        if next_allowed.is_some_and(|t| now < t) {
            return false;
        }
        let downloaded = d.download(now).await;
        *next_allowed = Some(
            now + if downloaded.is_ok() {
                CERTIFICATE_DOWNLOAD_INTERVAL_MS
            } else {
                CERTIFICATE_RETRY_AFTER_FAILURE_MS
            },
        );
        match downloaded {
            Ok(certs) => {
                let mut keys = self.keys.write().expect("platform keys lock");
                let mut learnt = false;
                for c in certs
                    .into_iter()
                    .filter(|c| c.expire_at.is_none_or(|t| t > now))
                {
                    learnt |= keys
                        .0
                        .insert(
                            c.certificate.serial_hex.clone(),
                            c.certificate.verifier.clone(),
                        )
                        .is_none();
                }
                tracing::info!(
                    learnt,
                    known = keys.0.len(),
                    "wechatpay platform certificates refreshed"
                );
                learnt
            }
            Err(e) => {
                tracing::warn!(error = %e, "downloading wechatpay platform certificates failed");
                false
            }
        }
    }
}

impl CertificateDownloader {
    /// `GET /v3/certificates`: decrypt each certificate with the APIv3 key, then check that the
    /// answer is signed by one of the certificates it carries (the first download has nothing
    /// else to check it with; the APIv3 key, which only WeChat and the merchant hold, vouches
    /// for the content).
    async fn download(&self, now_ms: i64) -> Result<Vec<protocol::DownloadedCertificate>, String> {
        let path = "/v3/certificates";
        let auth = protocol::authorization(
            &self.merchant_key,
            &self.mchid,
            &self.merchant_serial_no,
            "GET",
            path,
            "",
            now_ms.div_euclid(1000),
        );
        let resp = self
            .http
            .get(format!("{}{path}", self.gateway))
            .header("authorization", auth)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("certificates answered {status}"));
        }
        let certs = protocol::decrypt_certificates(self.apiv3_key.expose(), &bytes)?;
        let mut downloaded = PlatformKeys::default();
        for c in &certs {
            downloaded.0.insert(
                c.certificate.serial_hex.clone(),
                c.certificate.verifier.clone(),
            );
        }
        let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        downloaded
            .verify(
                h(protocol::H_SERIAL),
                h(protocol::H_TIMESTAMP),
                h(protocol::H_NONCE),
                h(protocol::H_SIGNATURE),
                &bytes,
                now_ms.div_euclid(1000),
            )
            .map_err(|e| format!("certificates answer not signed by its certificates: {e:?}"))?;
        Ok(certs)
    }
}

/// An answer of WeChat's: its status and body, and whether its platform signature verified
/// (always, for a 2xx; a 4xx may come unsigned).
struct Answer {
    status: u16,
    bytes: Vec<u8>,
    signed: bool,
}

impl Answer {
    /// The answer, when it is signed or a 2xx; an unsigned 4xx as what its code may say of a
    /// call where a refusal moves no money (`refusal`: refused when WeChat documents the code as
    /// "rejected, nothing done", else unknown) — never a state of an order or a refund (an
    /// unsigned 404 ORDER_NOT_EXIST is not "absent").
    fn vouched(self) -> Result<(u16, Vec<u8>), ChannelError> {
        if self.signed {
            return Ok((self.status, self.bytes));
        }
        Err(WechatpayClient::refusal(self.status, &self.bytes))
    }

    /// As `vouched`, for calls where even a refusal would move money (a refused refund is
    /// failed, its amount released): an unsigned 4xx is unknown.
    fn vouched_or_unknown(self) -> Result<(u16, Vec<u8>), ChannelError> {
        if self.signed {
            return Ok((self.status, self.bytes));
        }
        let e = WechatpayClient::error_of(self.status, &self.bytes);
        Err(ChannelError::Ambiguous(format!(
            "unsigned {} {}",
            self.status, e.code
        )))
    }
}

impl WechatpayClient {
    pub fn new(
        gateway: String,
        keys: WechatpayKeys,
        http: reqwest::Client,
        clock: crate::SharedClock,
    ) -> Self {
        let gateway = gateway.trim_end_matches('/').to_owned();
        let downloader = keys.download_certificates.then(|| CertificateDownloader {
            gateway: gateway.clone(),
            http: http.clone(),
            mchid: keys.mchid.clone(),
            merchant_serial_no: keys.merchant_serial_no.clone(),
            merchant_key: keys.merchant_key.clone(),
            apiv3_key: keys.apiv3_key.clone(),
            clock: clock.clone(),
        });
        let trust = Arc::new(PlatformTrust {
            keys: RwLock::new(keys.platform.clone()),
            last_download: tokio::sync::Mutex::new(None),
            downloader,
        });
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

    fn error_of(status: u16, body: &[u8]) -> ErrorBody {
        serde_json::from_slice(body).unwrap_or_else(|_| ErrorBody {
            code: format!("HTTP_{status}"),
            message: String::new(),
        })
    }

    /// A non-success answer: refused only when WeChat documents the code as a definitive
    /// rejection; "try again" codes and anything undocumented are unknown (WX-ALL-*).
    fn refusal(status: u16, body: &[u8]) -> ChannelError {
        let e = Self::error_of(status, body);
        if is_definitive(status, &e.code) {
            ChannelError::Refused {
                code: e.code,
                message: e.message,
            }
        } else {
            ChannelError::Ambiguous(format!("{status} {}", e.code))
        }
    }

    /// The JSAPI front-end package: `paySign` over `appId\ntimeStamp\nnonceStr\npackage\n`.
    fn jsapi_credential(&self, prepay_id: &str) -> serde_json::Value {
        let ts = self.now_secs().to_string();
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

/// How long WeChat honours a `code_url` or `prepay_id` (WeChat Pay: "prepay_id 有效期为2小时").
pub const CREDENTIAL_LIFE_MS: i64 = 2 * 3_600_000;

/// Errors WeChat documents as "try again with the same request": the outcome is unknown, never
/// a failure (WX-R-429, WX-*-SYSTEM_ERROR).
pub fn is_retryable(status: u16, code: &str) -> bool {
    // 202: "accepted, not yet processed — repeat with the same parameters" (WX-ALL-202).
    status == 202
        || status == 429
        || status >= 500
        || matches!(
            code,
            "FREQUENCY_LIMITED" | "RATELIMIT_EXCEEDED" | "SYSTEM_ERROR" | "BANKERROR"
        )
}

/// Codes WeChat documents as "rejected, nothing done" (docs/channels.md WX-*-400/401/403).
pub fn is_definitive(status: u16, code: &str) -> bool {
    matches!(status, 400 | 401 | 403)
        && matches!(
            code,
            "PARAM_ERROR"
                | "INVALID_REQUEST"
                | "APPID_MCHID_NOT_MATCH"
                | "MCH_NOT_EXISTS"
                | "SIGN_ERROR"
                | "NO_AUTH"
                | "RULE_LIMIT"
                | "TRADE_ERROR"
                | "NOT_ENOUGH"
                | "ACCOUNT_ERROR"
                | "USER_ACCOUNT_ABNORMAL"
        )
}

/// Maps `trade_state` (and the amount, for payments) to what payonce understands.
pub fn trade_state_of(t: &Transaction) -> TradeState {
    match t.trade_state.as_str() {
        // REFUND: paid, then (partly) refunded — it was paid.
        "SUCCESS" | "REFUND" => TradeState::Paid {
            amount: t.amount.total,
            channel_trade_no: t.transaction_id.clone(),
            paid_at: Timestamp(
                t.success_time
                    .as_deref()
                    .and_then(protocol::parse_rfc3339_ms)
                    .unwrap_or(0),
            ),
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
                (
                    "/v3/pay/transactions/jsapi",
                    Some(serde_json::json!({ "openid": openid })),
                )
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
            amount: Amount {
                total: req.amount.minor,
                currency: Some(req.amount.currency.to_string()),
                payer_total: None,
                payer_currency: None,
            },
            payer,
        };
        // A prepay's 4xx is read by its code signed or not: prepay_outcome makes of it at most
        // "refused, nothing created", which moves no money.
        let Answer { status, bytes, .. } = self
            .call(
                reqwest::Method::POST,
                path,
                Some(serde_json::to_string(&body).unwrap()),
            )
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
        let path = format!(
            "/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={}",
            self.keys.mchid
        );
        let (status, bytes) = self
            .call(reqwest::Method::GET, &path, None)
            .await?
            .vouched()?;
        query_outcome(status, &bytes, &self.keys.mchid, out_trade_no)
    }

    async fn close(&self, order: &ChannelOrderRef) -> Result<CloseAnswer, ChannelError> {
        let out_trade_no = order.out_trade_no.as_str();
        let path = format!("/v3/pay/transactions/out-trade-no/{out_trade_no}/close");
        let body = serde_json::json!({ "mchid": self.keys.mchid }).to_string();
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
                &format!("/v3/refund/domestic/refunds/{}", r.out_refund_no),
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
                &format!("/v3/bill/tradebill?bill_date={date}&bill_type=ALL&tar_type=GZIP"),
                None,
            )
            .await?
            .vouched()?;
        if status != 200 {
            let e = Self::error_of(status, &bytes);
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
            .map_err(ChannelError::Ambiguous)?;
        Ok(crate::bill::BillDownload::Bill(
            crate::bill::DownloadedBill {
                merchant_account: self.keys.mchid.clone(),
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
                    if self.trust.downloader.is_some()
                        && let Ok(rt) = tokio::runtime::Handle::try_current()
                    {
                        let trust = self.trust.clone();
                        rt.spawn(async move { trust.refresh().await });
                    }
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
                if t.mchid != self.keys.mchid || t.appid != self.keys.appid {
                    return Err(NotifyError::Malformed(
                        "notification for another merchant or app".into(),
                    ));
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
                if r["mchid"].as_str() != Some(self.keys.mchid.as_str()) {
                    return Err(NotifyError::Malformed(
                        "notification for another merchant".into(),
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

/// SUCCESS / PROCESSING / ABNORMAL / CLOSED (WX-RQ-*). A status WeChat does not document is
/// read as "still processing" (query again), never as failed.
pub fn refund_state_of(status: &str) -> RefundState {
    match status {
        "SUCCESS" => RefundState::Succeeded,
        "PROCESSING" => RefundState::Processing,
        "ABNORMAL" => RefundState::Abnormal,
        // Closed by WeChat: nothing was refunded.
        "CLOSED" => RefundState::Failed("CLOSED".to_owned()),
        other => {
            tracing::warn!(
                status = other,
                "undocumented wechatpay refund status: querying again"
            );
            RefundState::Processing
        }
    }
}

/// What a prepay answer carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrepayCode {
    CodeUrl(String),
    PrepayId(String),
}

/// A verified prepay answer (WX-P-*). "Already paid", "number used" and "closed" cannot happen
/// to a fresh out_trade_no; on a re-sent or refreshed one they mean the channel order moved:
/// a query tells how, so they are unknown, not refusals.
pub fn prepay_outcome(status: u16, body: &[u8]) -> Result<PrepayCode, ChannelError> {
    if status != 200 {
        let e = WechatpayClient::error_of(status, body);
        // INVALID_REQUEST includes "a repeat whose parameters differ from the first" (WX-P-400-
        // INVALID_REQUEST); a 404 is not a documented prepay answer (WX-P-404).
        if status == 404
            || matches!(
                e.code.as_str(),
                "ORDERPAID"
                    | "ORDER_PAID"
                    | "OUT_TRADE_NO_USED"
                    | "ORDER_CLOSED"
                    | "ORDERCLOSED"
                    | "INVALID_REQUEST"
            )
        {
            return Err(ChannelError::Ambiguous(format!(
                "{status} {}: query the order",
                e.code
            )));
        }
        return Err(WechatpayClient::refusal(status, body));
    }
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ChannelError::Ambiguous(e.to_string()))?;
    if let Some(code_url) = v["code_url"].as_str() {
        Ok(PrepayCode::CodeUrl(code_url.to_owned()))
    } else if let Some(prepay_id) = v["prepay_id"].as_str() {
        Ok(PrepayCode::PrepayId(prepay_id.to_owned()))
    } else {
        Err(ChannelError::Ambiguous(
            "prepay answer without code_url or prepay_id".into(),
        ))
    }
}

/// A verified query answer about `out_trade_no` of `mchid` (WX-Q-*).
pub fn query_outcome(
    status: u16,
    body: &[u8],
    mchid: &str,
    out_trade_no: &str,
) -> Result<TradeState, ChannelError> {
    if status == 404 {
        return Ok(TradeState::Absent);
    }
    if status != 200 {
        let e = WechatpayClient::error_of(status, body);
        if e.code == "ORDER_NOT_EXIST" || e.code == "ORDERNOTEXIST" {
            return Ok(TradeState::Absent);
        }
        return Err(WechatpayClient::refusal(status, body));
    }
    let t: Transaction = serde_json::from_slice(body)
        .map_err(|e| ChannelError::Ambiguous(format!("bad query answer: {e}")))?;
    if t.mchid != mchid || t.out_trade_no != out_trade_no {
        return Err(ChannelError::Ambiguous(
            "query answer about another merchant or order".into(),
        ));
    }
    trade_state_checked(&t)
}

/// `trade_state_of`, refusing states WeChat does not document (never guessed as unpaid).
pub fn trade_state_checked(t: &Transaction) -> Result<TradeState, ChannelError> {
    match t.trade_state.as_str() {
        "SUCCESS" | "REFUND" | "CLOSED" | "REVOKED" | "NOTPAY" | "USERPAYING" | "PAYERROR" => {
            Ok(trade_state_of(t))
        }
        other => Err(ChannelError::Ambiguous(format!(
            "undocumented trade_state {other}"
        ))),
    }
}

/// A verified close answer (WX-C-*).
pub fn close_outcome(status: u16, body: &[u8]) -> Result<CloseAnswer, ChannelError> {
    if status == 204 || status == 200 {
        return Ok(CloseAnswer::Closed);
    }
    let e = WechatpayClient::error_of(status, body);
    match e.code.as_str() {
        "ORDER_PAID" | "ORDERPAID" | "TRADE_PAID" => Ok(CloseAnswer::AlreadyPaid),
        "ORDER_NOT_EXIST" | "ORDERNOTEXIST" => Ok(CloseAnswer::Absent),
        "ORDER_CLOSED" | "ORDERCLOSED" => Ok(CloseAnswer::Closed),
        _ if status == 404 => Ok(CloseAnswer::Absent),
        _ => Err(WechatpayClient::refusal(status, body)),
    }
}

/// A verified refund answer (WX-R-*): 429 / SYSTEM_ERROR / 5xx are unknown (retried under the
/// same out_refund_no, which WeChat refunds at most once), other 4xx are definitive refusals.
pub fn refund_outcome(status: u16, body: &[u8]) -> Result<RefundState, ChannelError> {
    if status != 200 {
        let e = WechatpayClient::error_of(status, body);
        // 404 RESOURCE_NOT_EXISTS contradicts our paid record (seen transiently): query, retry
        // the same out_refund_no, and past a bounded run a person looks (WX-R-404).
        if is_definitive(status, &e.code) {
            return Ok(RefundState::Failed(format!("{}: {}", e.code, e.message)));
        }
        return Err(ChannelError::Ambiguous(format!("{status} {}", e.code)));
    }
    let r: protocol::Refund =
        serde_json::from_slice(body).map_err(|e| ChannelError::Ambiguous(e.to_string()))?;
    refund_status_checked(&r.status)
}

/// `refund_state_of` for answers: a status WeChat does not document is unknown (WX-R-200-OTHER).
pub fn refund_status_checked(status: &str) -> Result<RefundState, ChannelError> {
    match status {
        "SUCCESS" | "PROCESSING" | "ABNORMAL" | "CLOSED" => Ok(refund_state_of(status)),
        other => Err(ChannelError::Ambiguous(format!(
            "undocumented refund status {other}"
        ))),
    }
}

/// A verified refund-query answer (WX-RQ-*).
pub fn refund_query_outcome(status: u16, body: &[u8]) -> Result<RefundState, ChannelError> {
    match status {
        200 => {
            let r: protocol::Refund =
                serde_json::from_slice(body).map_err(|e| ChannelError::Ambiguous(e.to_string()))?;
            refund_status_checked(&r.status)
        }
        404 => Ok(RefundState::Absent),
        _ => Err(WechatpayClient::refusal(status, body)),
    }
}

/// A downloaded bill, plain or gzip, checked against WeChat's `hash_value` (the SHA-1 of the
/// unpacked bill) and returned gzip-compressed for storage.
fn checked_bill(content: Vec<u8>, hash_value: &str) -> Result<Vec<u8>, String> {
    let gzipped = content.starts_with(&[0x1f, 0x8b]);
    let sha1 = if gzipped {
        sha1_of_gunzipped(&content)?
    } else {
        sha1_hex(&content)
    };
    if !hash_value.eq_ignore_ascii_case(&sha1) {
        return Err("bill hash mismatch".into());
    }
    Ok(if gzipped {
        content
    } else {
        crate::bill::gzip(&content)
    })
}

fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes).as_ref(),
    )
}

/// The SHA-1 of what a gzip stream unpacks to, read in blocks (a large bill is never unpacked
/// whole in memory).
fn sha1_of_gunzipped(packed: &[u8]) -> Result<String, String> {
    use std::io::Read;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    let mut decoder = flate2::read::GzDecoder::new(packed);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match decoder.read(&mut buf) {
            Ok(0) => return Ok(hex::encode(ctx.finish().as_ref())),
            Ok(n) => ctx.update(&buf[..n]),
            Err(e) => return Err(format!("the gzip bill does not unpack: {e}")),
        }
    }
}

#[cfg(test)]
mod bill_download_tests {
    use super::*;

    #[test]
    fn plain_and_gzip_downloads_are_checked_against_the_unpacked_bill() {
        let bill = b"\xef\xbb\xbf\xe4\xba\xa4\xe6\x98\x93\xe6\x97\xb6\xe9\x97\xb4\r\n".to_vec();
        let hash = sha1_hex(&bill);
        let plain = checked_bill(bill.clone(), &hash).unwrap();
        assert_eq!(
            crate::bill::gunzip(&plain, 1 << 20).unwrap(),
            bill,
            "a plain download is stored gzip-compressed"
        );
        let packed = crate::bill::gzip(&bill);
        assert_eq!(
            checked_bill(packed.clone(), &hash.to_uppercase()).unwrap(),
            packed,
            "a gzip download is kept as it came"
        );
        assert!(
            checked_bill(packed.clone(), &sha1_hex(&packed)).is_err(),
            "the hash is of the unpacked bill, not of the gzip"
        );
        assert!(
            checked_bill(packed[..packed.len() - 4].to_vec(), &hash).is_err(),
            "a truncated gzip"
        );
    }
}
