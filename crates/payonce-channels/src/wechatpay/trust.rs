//! Which WeChat platform keys a merchant trusts: the configured platform public key
//! (`PUB_KEY_ID_…`) or certificates, plus certificates learnt from `GET /v3/certificates` by a
//! single-flight, rate-bounded refresh; and the serial a request announces.

use super::client::WechatpayKeys;
use super::protocol::{self, PlatformKeys};
use crate::crypto::RsaSigner;
use crate::secret::SecretBytes;
use std::sync::{Arc, RwLock};

/// The platform keys this merchant trusts, refreshed from `/v3/certificates` at a bounded rate.
pub(super) struct PlatformTrust {
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
    /// The keys configured for the merchant, and a downloader when it runs in certificate mode.
    pub(super) fn new(
        keys: &WechatpayKeys,
        gateway: &str,
        http: &reqwest::Client,
        clock: &crate::SharedClock,
    ) -> Self {
        let downloader = keys.download_certificates.then(|| CertificateDownloader {
            gateway: gateway.to_owned(),
            http: http.clone(),
            mchid: keys.mchid.clone(),
            merchant_serial_no: keys.merchant_serial_no.clone(),
            merchant_key: keys.merchant_key.clone(),
            apiv3_key: keys.apiv3_key.clone(),
            clock: clock.clone(),
        });
        PlatformTrust {
            keys: RwLock::new(keys.platform.clone()),
            last_download: tokio::sync::Mutex::new(None),
            downloader,
        }
    }

    /// The `Wechatpay-Serial` a request announces: the key WeChat should sign its answer with.
    /// The platform public key's id when one is trusted (answers signed by it verify whatever
    /// certificates WeChat still holds), else a trusted certificate's serial — what wechatpayv3
    /// and wechatpay-java send. Without it WeChat signs with its platform certificate, which a
    /// merchant holding only the public key cannot verify.
    pub(super) fn serial_to_announce(&self) -> Option<String> {
        let keys = self.keys.read().expect("platform keys lock");
        let public_key = keys
            .0
            .keys()
            .find(|k| k.starts_with(protocol::PUBLIC_KEY_ID_PREFIX));
        public_key.or_else(|| keys.0.keys().next_back()).cloned()
    }

    pub(super) fn verify(
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
    pub(super) async fn refresh(&self) -> bool {
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

    /// Starts a `refresh` in the background, when certificates may be downloaded and a runtime
    /// is at hand (notification verification is synchronous).
    pub(super) fn refresh_in_background(self: &Arc<Self>) {
        if self.downloader.is_some()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let trust = self.clone();
            rt.spawn(async move { trust.refresh().await });
        }
    }
}

/// Why a download of the platform certificates failed (the last ones known stay trusted).
#[derive(Debug, thiserror::Error)]
pub(super) enum DownloadError {
    #[error("{0}")]
    Http(reqwest::Error),
    #[error("certificates answered {0}")]
    Status(u16),
    #[error(transparent)]
    Certificate(#[from] protocol::CertificateError),
    #[error("certificates answer not signed by its certificates: {0}")]
    Unsigned(String),
}

impl CertificateDownloader {
    /// `GET /v3/certificates`: decrypt each certificate with the APIv3 key, then check that the
    /// answer is signed by one of the certificates it carries (the first download has nothing
    /// else to check it with; the APIv3 key, which only WeChat and the merchant hold, vouches
    /// for the content).
    async fn download(
        &self,
        now_ms: i64,
    ) -> Result<Vec<protocol::DownloadedCertificate>, DownloadError> {
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
            .map_err(DownloadError::Http)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.map_err(DownloadError::Http)?;
        if status != 200 {
            return Err(DownloadError::Status(status));
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
            .map_err(|e| DownloadError::Unsigned(format!("{e:?}")))?;
        Ok(certs)
    }
}
