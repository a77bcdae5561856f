//! `channels.toml`: which channels this deployment talks to, their gateways and key files.
//! `payonce sim` writes one for its own endpoints; production writes it by hand.

use crate::crypto::{Certificate, RsaSigner, RsaVerifier};
use crate::{ChannelRegistry, sandbox};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ChannelsConfig {
    pub sandbox: Option<SandboxConfig>,
    pub wechatpay: Option<WechatpayConfig>,
    pub alipay: Option<AlipayConfig>,
    pub unionpay: Option<UnionpayConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnionpayConfig {
    /// `https://gateway.95516.com` in production.
    pub gateway: String,
    /// The reconciliation files' host (`fileTransfer`): `https://filedownload.95516.com` in
    /// production, `https://filedownload.test.95516.com` in UnionPay's test environment. When
    /// absent: those for UnionPay's own gateways, else the gateway itself (the simulator).
    pub file_transfer_url: Option<String>,
    pub mer_id: String,
    /// The merchant signing key: PEM (PKCS#8 or PKCS#1) with `sign_cert_file`, or a PKCS#12
    /// file (`.pfx`/`.p12`, as UnionPay issues it) holding key and certificate.
    pub sign_key_file: PathBuf,
    /// The merchant signing certificate (its serial is the `certId`); not needed with PKCS#12.
    pub sign_cert_file: Option<PathBuf>,
    /// Password of a PKCS#12 `sign_key_file`: a file holding it, so it stays out of the config.
    pub sign_key_password_file: Option<PathBuf>,
    /// UnionPay's root and intermediate certificates: a notification's `signPubKeyCert` must
    /// chain to them.
    pub root_cert_file: PathBuf,
    pub middle_cert_file: Option<PathBuf>,
    /// Accept UnionPay's older TEST owner `00040000:SIGN` in `signPubKeyCert` as well as
    /// `中国银联股份有限公司` (the acp SDK's test-environment switch). Off by default.
    #[serde(default)]
    pub accept_test_owner: bool,
}

impl UnionpayConfig {
    pub fn file_transfer_url(&self) -> String {
        if let Some(u) = &self.file_transfer_url {
            return u.clone();
        }
        match self.gateway.trim_end_matches('/') {
            "https://gateway.95516.com" => "https://filedownload.95516.com".into(),
            "https://gateway.test.95516.com" => "https://filedownload.test.95516.com".into(),
            other => other.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WechatpayConfig {
    /// `https://api.mch.weixin.qq.com` in production.
    pub gateway: String,
    pub mchid: String,
    pub appid: String,
    pub merchant_serial_no: String,
    pub merchant_key_file: PathBuf,
    pub apiv3_key_file: PathBuf,
    /// The platform public key (`PUB_KEY_ID_…` mode) …
    pub platform_public_key_file: Option<PathBuf>,
    pub platform_public_key_id: Option<String>,
    /// … and/or platform certificates (their serials are announced in `Wechatpay-Serial`).
    #[serde(default)]
    pub platform_cert_files: Vec<PathBuf>,
    /// Learn rotated platform certificates from `GET /v3/certificates` (rate-bounded) when an
    /// unknown `Wechatpay-Serial` arrives. Default: on in certificate mode, off with a public key.
    pub download_certificates: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlipayConfig {
    /// `https://openapi.alipay.com/gateway.do` in production.
    pub gateway: String,
    pub app_id: String,
    pub app_private_key_file: PathBuf,
    pub alipay_public_key_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// Base URL of the sandbox gateway, e.g. `http://127.0.0.1:7070`.
    pub gateway: String,
    /// File holding the hex-encoded HMAC key shared with the gateway.
    pub key_file: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid channels file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl ChannelsConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let mut cfg: ChannelsConfig = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.into(),
            message: e.to_string(),
        })?;
        // Key files are named relative to the channels file, so a state dir can move.
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(s) = cfg.sandbox.as_mut() {
            s.key_file = base.join(&s.key_file);
        }
        if let Some(w) = cfg.wechatpay.as_mut() {
            w.merchant_key_file = base.join(&w.merchant_key_file);
            w.apiv3_key_file = base.join(&w.apiv3_key_file);
            w.platform_public_key_file = w.platform_public_key_file.as_ref().map(|p| base.join(p));
            w.platform_cert_files = w.platform_cert_files.iter().map(|p| base.join(p)).collect();
        }
        if let Some(u) = cfg.unionpay.as_mut() {
            u.sign_key_file = base.join(&u.sign_key_file);
            u.sign_cert_file = u.sign_cert_file.as_ref().map(|p| base.join(p));
            u.sign_key_password_file = u.sign_key_password_file.as_ref().map(|p| base.join(p));
            u.root_cert_file = base.join(&u.root_cert_file);
            u.middle_cert_file = u.middle_cert_file.as_ref().map(|p| base.join(p));
        }
        if let Some(a) = cfg.alipay.as_mut() {
            a.app_private_key_file = base.join(&a.app_private_key_file);
            a.alipay_public_key_file = base.join(&a.alipay_public_key_file);
        }
        Ok(cfg)
    }

    /// Builds the connectors. `timeout` bounds every channel call; past it the outcome is unknown.
    pub fn build(
        &self,
        timeout: Duration,
        clock: crate::SharedClock,
    ) -> Result<ChannelRegistry, ConfigError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .build()
            .map_err(|e| ConfigError::Invalid {
                path: PathBuf::new(),
                message: e.to_string(),
            })?;
        let mut reg = ChannelRegistry::default();
        if let Some(s) = &self.sandbox {
            let key = crate::config::read_hex_key(&s.key_file)?;
            reg.insert(Arc::new(sandbox::SandboxClient::new(
                s.gateway.clone(),
                key,
                http.clone(),
                clock.clone(),
            )));
        }
        if let Some(w) = &self.wechatpay {
            reg.insert(Arc::new(crate::wechatpay::WechatpayClient::new(
                w.gateway.clone(),
                w.keys()?,
                http.clone(),
                clock.clone(),
            )));
        }
        if let Some(a) = &self.alipay {
            let keys = crate::alipay::AlipayKeys {
                app_id: a.app_id.clone(),
                app_private_key: RsaSigner::from_pem(&read(&a.app_private_key_file)?)
                    .map_err(|e| invalid(&a.app_private_key_file, e))?,
                alipay_public_key: RsaVerifier::from_pem(&read(&a.alipay_public_key_file)?)
                    .map_err(|e| invalid(&a.alipay_public_key_file, e))?,
            };
            reg.insert(Arc::new(crate::alipay::AlipayClient::new(
                a.gateway.clone(),
                keys,
                http.clone(),
                clock.clone(),
            )));
        }
        if let Some(u) = &self.unionpay {
            let is_p12 = u
                .sign_key_file
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("pfx") || e.eq_ignore_ascii_case("p12"));
            let (sign_key, cert) = if is_p12 {
                let der = std::fs::read(&u.sign_key_file).map_err(|source| ConfigError::Read {
                    path: u.sign_key_file.clone(),
                    source,
                })?;
                let password = match &u.sign_key_password_file {
                    Some(f) => read(f)?.trim_end_matches(['\r', '\n']).to_owned(),
                    None => String::new(),
                };
                crate::crypto::load_pkcs12(&der, &password)
                    .map_err(|e| invalid(&u.sign_key_file, e))?
            } else {
                let cert_file = u
                    .sign_cert_file
                    .as_ref()
                    .ok_or_else(|| invalid(&u.sign_key_file, "a PEM key needs sign_cert_file"))?;
                (
                    RsaSigner::from_pem(&read(&u.sign_key_file)?)
                        .map_err(|e| invalid(&u.sign_key_file, e))?,
                    Certificate::from_pem(&read(cert_file)?).map_err(|e| invalid(cert_file, e))?,
                )
            };
            let keys = crate::unionpay::UnionpayKeys {
                mer_id: u.mer_id.clone(),
                sign_key,
                cert_id: cert.serial_decimal.clone(),
                root: Certificate::from_pem(&read(&u.root_cert_file)?)
                    .map_err(|e| invalid(&u.root_cert_file, e))?,
                middle: match &u.middle_cert_file {
                    Some(f) => Some(Certificate::from_pem(&read(f)?).map_err(|e| invalid(f, e))?),
                    None => None,
                },
                accept_test_owner: u.accept_test_owner,
            };
            reg.insert(Arc::new(crate::unionpay::UnionpayClient::new(
                u.gateway.clone(),
                u.file_transfer_url(),
                keys,
                http.clone(),
                clock.clone(),
            )));
        }
        Ok(reg)
    }
}

impl WechatpayConfig {
    pub fn keys(&self) -> Result<crate::wechatpay::WechatpayKeys, ConfigError> {
        let mut platform = crate::wechatpay::protocol::PlatformKeys::default();
        if let (Some(file), Some(id)) =
            (&self.platform_public_key_file, &self.platform_public_key_id)
        {
            platform.0.insert(
                id.clone(),
                RsaVerifier::from_pem(&read(file)?).map_err(|e| invalid(file, e))?,
            );
        }
        for file in &self.platform_cert_files {
            let cert = Certificate::from_pem(&read(file)?).map_err(|e| invalid(file, e))?;
            platform
                .0
                .insert(cert.serial_hex.clone(), cert.verifier.clone());
        }
        if platform.0.is_empty() {
            return Err(ConfigError::Invalid {
                path: PathBuf::from("[wechatpay]"),
                message: "no platform public key or certificate".into(),
            });
        }
        let apiv3 = read(&self.apiv3_key_file)?.trim().as_bytes().to_vec();
        if apiv3.len() != 32 {
            return Err(invalid(
                &self.apiv3_key_file,
                "the APIv3 key must be 32 characters",
            ));
        }
        Ok(crate::wechatpay::WechatpayKeys {
            mchid: self.mchid.clone(),
            appid: self.appid.clone(),
            merchant_serial_no: self.merchant_serial_no.clone(),
            merchant_key: std::sync::Arc::new(
                RsaSigner::from_pem(&read(&self.merchant_key_file)?)
                    .map_err(|e| invalid(&self.merchant_key_file, e))?,
            ),
            apiv3_key: crate::secret::SecretBytes::new(apiv3),
            platform,
            download_certificates: self
                .download_certificates
                .unwrap_or(!self.platform_cert_files.is_empty()),
        })
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })
}

/// A key file that does not parse. The message names the file, never its content.
fn invalid(path: &Path, e: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        path: path.into(),
        message: e.to_string(),
    }
}

pub fn read_hex_key(path: &Path) -> Result<crate::secret::SecretBytes, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    let bytes = hex::decode(text.trim()).map_err(|_| ConfigError::Invalid {
        path: path.into(),
        message: "key file is not hex".into(),
    })?;
    Ok(crate::secret::SecretBytes::new(bytes))
}
