//! `channels.toml`: which channels this deployment talks to, their gateways and key files.
//! `payonce sim` writes one for its own endpoints; production writes it by hand. Each channel is
//! one account (`[wechatpay]`, named `default`) or several (`[[wechatpay]] name = "shop-a"`).

use crate::crypto::{Certificate, RsaSigner, RsaVerifier};
use crate::{AccountRole, ChannelAccount, ChannelRegistry, sandbox};
use payonce_core::ChannelName;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ChannelsConfig {
    #[serde(default)]
    pub sandbox: Accounts<SandboxConfig>,
    #[serde(default)]
    pub wechatpay: Accounts<WechatpayConfig>,
    #[serde(default)]
    pub alipay: Accounts<AlipayConfig>,
    #[serde(default)]
    pub unionpay: Accounts<UnionpayConfig>,
}

/// The account name of a channel table without `name`: the one-account deployment of old.
pub const DEFAULT_ACCOUNT: &str = "default";

/// Is `name` usable as an account name (it appears in notify URLs and metric labels)?
pub fn valid_account_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// One channel's accounts: a TOML table (`[wechatpay]`, one account) or an array of tables
/// (`[[wechatpay]]`, several).
#[derive(Debug, Clone)]
pub struct Accounts<T>(pub Vec<T>);

impl<T> Default for Accounts<T> {
    fn default() -> Self {
        Accounts(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Accounts<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = Accounts<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table (one account) or an array of tables (several)")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                m: A,
            ) -> Result<Self::Value, A::Error> {
                Ok(Accounts(vec![T::deserialize(MapAccessDeserializer::new(
                    m,
                ))?]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                s: A,
            ) -> Result<Self::Value, A::Error> {
                Ok(Accounts(Vec::deserialize(SeqAccessDeserializer::new(s))?))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnionpayConfig {
    /// Unique per channel: `[a-z0-9_-]`, at most 32 characters. Absent: `default`.
    pub name: Option<String>,
    /// The account an app without a binding uses when the channel has several.
    #[serde(default)]
    pub default: bool,
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
        Self::transfer_host(&self.gateway, self.file_transfer_url.as_deref())
    }

    /// The reconciliation files' host: the one given, else UnionPay's for its own gateways,
    /// else the gateway itself (the simulator).
    pub fn transfer_host(gateway: &str, given: Option<&str>) -> String {
        if let Some(u) = given {
            return u.to_owned();
        }
        match gateway.trim_end_matches('/') {
            "https://gateway.95516.com" => "https://filedownload.95516.com".into(),
            "https://gateway.test.95516.com" => "https://filedownload.test.95516.com".into(),
            other => other.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WechatpayConfig {
    /// Unique per channel: `[a-z0-9_-]`, at most 32 characters. Absent: `default`.
    pub name: Option<String>,
    /// The account an app without a binding uses when the channel has several.
    #[serde(default)]
    pub default: bool,
    /// A service provider (服务商): its keys sign its sub-merchants' calls; it takes no
    /// payment itself.
    #[serde(default)]
    pub service_provider: bool,
    /// A sub-merchant (特约商户): the name of its provider's account. A sub-merchant names only
    /// `sub_mchid` (and `sub_appid`): gateway and keys are its provider's.
    pub provider: Option<String>,
    pub sub_mchid: Option<String>,
    pub sub_appid: Option<String>,
    /// `https://api.mch.weixin.qq.com` in production. The fields below are required of a
    /// merchant or provider and refused of a sub-merchant.
    pub gateway: Option<String>,
    pub mchid: Option<String>,
    pub appid: Option<String>,
    pub merchant_serial_no: Option<String>,
    pub merchant_key_file: Option<PathBuf>,
    pub apiv3_key_file: Option<PathBuf>,
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
    /// Unique per channel: `[a-z0-9_-]`, at most 32 characters. Absent: `default`.
    pub name: Option<String>,
    /// The account an app without a binding uses when the channel has several.
    #[serde(default)]
    pub default: bool,
    /// An ISV's third-party app (第三方应用): its key signs its sub-merchants' calls; it
    /// takes no payment itself.
    #[serde(default)]
    pub service_provider: bool,
    /// A merchant that authorised an ISV: the ISV app's account name, the merchant's own
    /// app id (`auth_app_id` in its notifications) and the file holding its `app_auth_token`.
    /// Gateway and keys are the ISV's.
    pub provider: Option<String>,
    pub auth_app_id: Option<String>,
    pub app_auth_token_file: Option<PathBuf>,
    /// `https://openapi.alipay.com/gateway.do` in production. The fields below are required of
    /// a merchant or ISV and refused of a sub-merchant.
    pub gateway: Option<String>,
    pub app_id: Option<String>,
    pub app_private_key_file: Option<PathBuf>,
    pub alipay_public_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// Unique per channel: `[a-z0-9_-]`, at most 32 characters. Absent: `default`.
    pub name: Option<String>,
    /// The account an app without a binding uses when the channel has several.
    #[serde(default)]
    pub default: bool,
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
        for s in &mut cfg.sandbox.0 {
            s.key_file = base.join(&s.key_file);
        }
        for w in &mut cfg.wechatpay.0 {
            w.merchant_key_file = w.merchant_key_file.as_ref().map(|p| base.join(p));
            w.apiv3_key_file = w.apiv3_key_file.as_ref().map(|p| base.join(p));
            w.platform_public_key_file = w.platform_public_key_file.as_ref().map(|p| base.join(p));
            w.platform_cert_files = w.platform_cert_files.iter().map(|p| base.join(p)).collect();
        }
        for u in &mut cfg.unionpay.0 {
            u.sign_key_file = base.join(&u.sign_key_file);
            u.sign_cert_file = u.sign_cert_file.as_ref().map(|p| base.join(p));
            u.sign_key_password_file = u.sign_key_password_file.as_ref().map(|p| base.join(p));
            u.root_cert_file = base.join(&u.root_cert_file);
            u.middle_cert_file = u.middle_cert_file.as_ref().map(|p| base.join(p));
        }
        for a in &mut cfg.alipay.0 {
            a.app_private_key_file = a.app_private_key_file.as_ref().map(|p| base.join(p));
            a.alipay_public_key_file = a.alipay_public_key_file.as_ref().map(|p| base.join(p));
            a.app_auth_token_file = a.app_auth_token_file.as_ref().map(|p| base.join(p));
        }
        cfg.check_names(path)?;
        cfg.check_roles().map_err(|message| ConfigError::Invalid {
            path: path.into(),
            message,
        })?;
        Ok(cfg)
    }

    /// WeChat's and Alipay's accounts are merchants (keys of their own), providers (keys of
    /// their own, no payments, never the default) or sub-merchants (a provider's name and
    /// their own numbers, no keys).
    fn check_roles(&self) -> Result<(), String> {
        let name = |n: &Option<String>| n.clone().unwrap_or_else(|| DEFAULT_ACCOUNT.to_owned());
        let wechat: Vec<RoleCheck> = self
            .wechatpay
            .0
            .iter()
            .map(|w| RoleCheck {
                channel: "wechatpay",
                name: name(&w.name),
                default: w.default,
                service_provider: w.service_provider,
                provider: w.provider.clone(),
                own: vec![
                    ("gateway", w.gateway.is_some(), true),
                    ("mchid", w.mchid.is_some(), true),
                    ("appid", w.appid.is_some(), true),
                    ("merchant_serial_no", w.merchant_serial_no.is_some(), true),
                    ("merchant_key_file", w.merchant_key_file.is_some(), true),
                    ("apiv3_key_file", w.apiv3_key_file.is_some(), true),
                    (
                        "platform_public_key_file",
                        w.platform_public_key_file.is_some(),
                        false,
                    ),
                    (
                        "platform_public_key_id",
                        w.platform_public_key_id.is_some(),
                        false,
                    ),
                    (
                        "platform_cert_files",
                        !w.platform_cert_files.is_empty(),
                        false,
                    ),
                    (
                        "download_certificates",
                        w.download_certificates.is_some(),
                        false,
                    ),
                ],
                sub: vec![
                    (
                        "sub_mchid",
                        w.sub_mchid.as_deref().is_some_and(|m| !m.is_empty()),
                        true,
                    ),
                    ("sub_appid", w.sub_appid.is_some(), false),
                ],
            })
            .collect();
        let alipay: Vec<RoleCheck> = self
            .alipay
            .0
            .iter()
            .map(|a| RoleCheck {
                channel: "alipay",
                name: name(&a.name),
                default: a.default,
                service_provider: a.service_provider,
                provider: a.provider.clone(),
                own: vec![
                    ("gateway", a.gateway.is_some(), true),
                    ("app_id", a.app_id.is_some(), true),
                    (
                        "app_private_key_file",
                        a.app_private_key_file.is_some(),
                        true,
                    ),
                    (
                        "alipay_public_key_file",
                        a.alipay_public_key_file.is_some(),
                        true,
                    ),
                ],
                sub: vec![
                    (
                        "auth_app_id",
                        a.auth_app_id.as_deref().is_some_and(|m| !m.is_empty()),
                        true,
                    ),
                    ("app_auth_token_file", a.app_auth_token_file.is_some(), true),
                ],
            })
            .collect();
        check_roles(&wechat)?;
        check_roles(&alipay)
    }

    /// Every account's (channel, name, marked default), in file order.
    pub fn account_names(&self) -> Vec<(ChannelName, String, bool)> {
        let mut out = Vec::new();
        let mut add = |c, name: &Option<String>, default| {
            out.push((
                c,
                name.clone().unwrap_or_else(|| DEFAULT_ACCOUNT.to_owned()),
                default,
            ))
        };
        self.sandbox
            .0
            .iter()
            .for_each(|a| add(ChannelName::Sandbox, &a.name, a.default));
        self.wechatpay
            .0
            .iter()
            .for_each(|a| add(ChannelName::Wechatpay, &a.name, a.default));
        self.alipay
            .0
            .iter()
            .for_each(|a| add(ChannelName::Alipay, &a.name, a.default));
        self.unionpay
            .0
            .iter()
            .for_each(|a| add(ChannelName::Unionpay, &a.name, a.default));
        out
    }

    /// Names are unique per channel and URL-safe; at most one default per channel.
    fn check_names(&self, path: &Path) -> Result<(), ConfigError> {
        let names = self.account_names();
        let bad = |message: String| ConfigError::Invalid {
            path: path.into(),
            message,
        };
        for (i, (channel, name, default)) in names.iter().enumerate() {
            if !valid_account_name(name) {
                return Err(bad(format!(
                    "[[{channel}]] name {name:?}: use 1-32 of a-z, 0-9, '-' and '_'"
                )));
            }
            for (c2, n2, d2) in &names[..i] {
                if c2 == channel && n2 == name {
                    return Err(bad(format!(
                        "two [[{channel}]] accounts are named {name:?}"
                    )));
                }
                if c2 == channel && *d2 && *default {
                    return Err(bad(format!(
                        "[[{channel}]]: more than one account is marked default"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Builds the connectors, one per account. `timeout` bounds every channel call; past it the
    /// outcome is unknown.
    pub fn build(
        &self,
        timeout: Duration,
        clock: crate::SharedClock,
    ) -> Result<ChannelRegistry, ConfigError> {
        let http = http_client(timeout).map_err(|e| ConfigError::Invalid {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        let mut reg = ChannelRegistry::default();
        let label =
            |name: &Option<String>| name.clone().unwrap_or_else(|| DEFAULT_ACCOUNT.to_owned());
        for s in &self.sandbox.0 {
            let key = crate::config::read_hex_key(&s.key_file)?;
            reg.insert_account(ChannelAccount {
                name: label(&s.name),
                is_default: s.default,
                // What the sandbox's bills name as their merchant account.
                merchant_id: "sandbox".into(),
                fingerprints: Vec::new(),
                role: AccountRole::Merchant,
                provider_keys: None,
                connector: Arc::new(sandbox::SandboxClient::new(
                    s.gateway.clone(),
                    key,
                    http.clone(),
                    clock.clone(),
                )),
            });
        }
        for w in &self.wechatpay.0 {
            // A sub-merchant's calls are signed with its provider's keys.
            let (own, role, merchant_id) = signing_table(
                &self.wechatpay.0,
                w,
                (w.provider.as_deref(), w.service_provider),
                |p| label(&p.name),
                (w.mchid.as_ref(), w.sub_mchid.as_ref()),
            );
            let mut keys = own.keys()?;
            keys.partner = w
                .sub_mchid
                .as_ref()
                .map(|sub_mchid| crate::wechatpay::SubMerchant {
                    sub_mchid: sub_mchid.clone(),
                    sub_appid: w.sub_appid.clone(),
                });
            let fingerprints = keys.fingerprints();
            let gateway = own.gateway.clone().unwrap_or_default();
            let provider_keys =
                (role == AccountRole::Provider).then(|| crate::ProviderKeys::Wechatpay {
                    gateway: gateway.clone(),
                    keys: keys.clone(),
                });
            reg.insert_account(ChannelAccount {
                name: label(&w.name),
                is_default: w.default,
                merchant_id,
                fingerprints,
                role,
                provider_keys,
                connector: Arc::new(crate::wechatpay::WechatpayClient::new(
                    gateway,
                    keys,
                    http.clone(),
                    clock.clone(),
                )),
            });
        }
        for a in &self.alipay.0 {
            // A sub-merchant's calls are the ISV app's, with the merchant's token.
            let (own, role, merchant_id) = signing_table(
                &self.alipay.0,
                a,
                (a.provider.as_deref(), a.service_provider),
                |p| label(&p.name),
                (a.app_id.as_ref(), a.auth_app_id.as_ref()),
            );
            let need = |field: &str| ConfigError::Invalid {
                path: PathBuf::from("[alipay]"),
                message: format!("missing `{field}`"),
            };
            let key_file = own
                .app_private_key_file
                .as_ref()
                .ok_or_else(|| need("app_private_key_file"))?;
            let public_file = own
                .alipay_public_key_file
                .as_ref()
                .ok_or_else(|| need("alipay_public_key_file"))?;
            let isv = match (&a.auth_app_id, &a.app_auth_token_file) {
                (Some(auth_app_id), Some(token_file)) => Some(crate::alipay::IsvGrant {
                    auth_app_id: auth_app_id.clone(),
                    app_auth_token: crate::secret::SecretBytes::new(
                        read(token_file)?.trim().as_bytes().to_vec(),
                    ),
                }),
                _ => None,
            };
            let keys = crate::alipay::AlipayKeys {
                app_id: own.app_id.clone().ok_or_else(|| need("app_id"))?,
                app_private_key: Arc::new(
                    RsaSigner::from_pem(&read(key_file)?).map_err(|e| invalid(key_file, e))?,
                ),
                alipay_public_key: RsaVerifier::from_pem(&read(public_file)?)
                    .map_err(|e| invalid(public_file, e))?,
                isv,
            };
            let fingerprints = keys.fingerprints();
            let gateway = own.gateway.clone().unwrap_or_default();
            let provider_keys =
                (role == AccountRole::Provider).then(|| crate::ProviderKeys::Alipay {
                    gateway: gateway.clone(),
                    keys: keys.clone(),
                });
            reg.insert_account(ChannelAccount {
                name: label(&a.name),
                is_default: a.default,
                merchant_id,
                fingerprints,
                role,
                provider_keys,
                connector: Arc::new(crate::alipay::AlipayClient::new(
                    gateway,
                    keys,
                    http.clone(),
                    clock.clone(),
                )),
            });
        }
        for u in &self.unionpay.0 {
            let (keys, fingerprints) = u.keys()?;
            reg.insert_account(ChannelAccount {
                name: label(&u.name),
                is_default: u.default,
                merchant_id: u.mer_id.clone(),
                fingerprints,
                role: AccountRole::Merchant,
                provider_keys: None,
                connector: Arc::new(crate::unionpay::UnionpayClient::new(
                    u.gateway.clone(),
                    u.file_transfer_url(),
                    keys,
                    http.clone(),
                    clock.clone(),
                )),
            });
        }
        Ok(reg)
    }
}

impl UnionpayConfig {
    /// The account's keys, and the fingerprints of its certificates.
    fn keys(&self) -> Result<(crate::unionpay::UnionpayKeys, Vec<(String, String)>), ConfigError> {
        let u = self;
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
            crate::crypto::load_pkcs12(&der, &password).map_err(|e| invalid(&u.sign_key_file, e))?
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
        let root = Certificate::from_pem(&read(&u.root_cert_file)?)
            .map_err(|e| invalid(&u.root_cert_file, e))?;
        let middle = match &u.middle_cert_file {
            Some(f) => Some(Certificate::from_pem(&read(f)?).map_err(|e| invalid(f, e))?),
            None => None,
        };
        let fingerprints = unionpay_fingerprints(&cert, &root, middle.as_ref());
        let keys = crate::unionpay::UnionpayKeys {
            mer_id: u.mer_id.clone(),
            sign_key,
            cert_id: cert.serial_decimal.clone(),
            root,
            middle,
            accept_test_owner: u.accept_test_owner,
        };
        Ok((keys, fingerprints))
    }
}

impl WechatpayConfig {
    /// The keys of a merchant or provider table (`load` checked the fields are there).
    pub fn keys(&self) -> Result<crate::wechatpay::WechatpayKeys, ConfigError> {
        let need = |field: &str| ConfigError::Invalid {
            path: PathBuf::from("[wechatpay]"),
            message: format!("missing `{field}`"),
        };
        let apiv3_key_file = self
            .apiv3_key_file
            .as_ref()
            .ok_or_else(|| need("apiv3_key_file"))?;
        let merchant_key_file = self
            .merchant_key_file
            .as_ref()
            .ok_or_else(|| need("merchant_key_file"))?;
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
        let apiv3 = read(apiv3_key_file)?.trim().as_bytes().to_vec();
        if apiv3.len() != 32 {
            return Err(invalid(
                apiv3_key_file,
                "the APIv3 key must be 32 characters",
            ));
        }
        Ok(crate::wechatpay::WechatpayKeys {
            mchid: self.mchid.clone().ok_or_else(|| need("mchid"))?,
            appid: self.appid.clone().ok_or_else(|| need("appid"))?,
            merchant_serial_no: self
                .merchant_serial_no
                .clone()
                .ok_or_else(|| need("merchant_serial_no"))?,
            merchant_key: std::sync::Arc::new(
                RsaSigner::from_pem(&read(merchant_key_file)?)
                    .map_err(|e| invalid(merchant_key_file, e))?,
            ),
            apiv3_key: crate::secret::SecretBytes::new(apiv3),
            platform,
            download_certificates: self
                .download_certificates
                .unwrap_or(!self.platform_cert_files.is_empty()),
            partner: None,
        })
    }
}

/// The table whose keys sign `this` account's calls — its provider's for a sub-merchant (`load`
/// checked the provider exists and is one) — with the account's role and merchant number (its
/// own, or the sub-merchant's).
fn signing_table<'a, T>(
    tables: &'a [T],
    this: &'a T,
    (provider, service_provider): (Option<&str>, bool),
    name_of: impl Fn(&T) -> String,
    (own_number, sub_number): (Option<&String>, Option<&String>),
) -> (&'a T, AccountRole, String) {
    match provider {
        Some(provider) => (
            tables
                .iter()
                .find(|p| name_of(p) == provider)
                .expect("checked by load"),
            AccountRole::SubMerchant {
                provider: provider.to_owned(),
            },
            sub_number.cloned().unwrap_or_default(),
        ),
        None if service_provider => (
            this,
            AccountRole::Provider,
            own_number.cloned().unwrap_or_default(),
        ),
        None => (
            this,
            AccountRole::Merchant,
            own_number.cloned().unwrap_or_default(),
        ),
    }
}

/// One account's role fields, for `check_roles`.
struct RoleCheck {
    channel: &'static str,
    name: String,
    default: bool,
    service_provider: bool,
    provider: Option<String>,
    /// The fields of an account with keys of its own: (field, given, required).
    own: Vec<(&'static str, bool, bool)>,
    /// The fields only a sub-merchant has: (field, given, required of a sub-merchant).
    sub: Vec<(&'static str, bool, bool)>,
}

fn check_roles(accounts: &[RoleCheck]) -> Result<(), String> {
    for a in accounts {
        let (channel, name) = (a.channel, &a.name);
        match &a.provider {
            Some(provider) => {
                if let Some((field, ..)) = a.own.iter().find(|(_, given, _)| *given) {
                    return Err(format!(
                        "[[{channel}]] {name:?} is a sub-merchant of {provider:?}: it signs with its provider's keys, so `{field}` belongs in the provider's table"
                    ));
                }
                if a.service_provider {
                    return Err(format!(
                        "[[{channel}]] {name:?}: a sub-merchant cannot be a service provider"
                    ));
                }
                if let Some((field, ..)) = a.sub.iter().find(|(_, given, req)| *req && !*given) {
                    return Err(format!(
                        "[[{channel}]] {name:?}: a sub-merchant needs {field}"
                    ));
                }
                match accounts.iter().find(|p| p.name == *provider) {
                    Some(p) if p.service_provider => {}
                    Some(_) => {
                        return Err(format!(
                            "[[{channel}]] {name:?}: its provider {provider:?} is not marked service_provider = true"
                        ));
                    }
                    None => {
                        return Err(format!(
                            "[[{channel}]] {name:?}: no [[{channel}]] account is named {provider:?}"
                        ));
                    }
                }
            }
            None => {
                if let Some((field, ..)) = a.own.iter().find(|(_, given, req)| *req && !*given) {
                    return Err(format!("[[{channel}]] {name:?}: missing `{field}`"));
                }
                if a.sub.iter().any(|(_, given, _)| *given) {
                    let fields: Vec<&str> = a.sub.iter().map(|(f, ..)| *f).collect();
                    return Err(format!(
                        "[[{channel}]] {name:?}: {} need provider = \"<its provider's account>\"",
                        fields.join(" / ")
                    ));
                }
                if a.service_provider && a.default {
                    return Err(format!(
                        "[[{channel}]] {name:?}: a service provider takes no payments, so it cannot be the default account"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// What an operator compares of a UnionPay account: its signing certificate (named by its
/// `certId`), UnionPay's root and middle certificates.
pub(crate) fn unionpay_fingerprints(
    sign: &Certificate,
    root: &Certificate,
    middle: Option<&Certificate>,
) -> Vec<(String, String)> {
    let fp = |c: &Certificate| crate::crypto::sha256_hex(c.der());
    let mut out = vec![
        (
            format!("signing certificate {}", sign.serial_decimal),
            fp(sign),
        ),
        ("root certificate".to_owned(), fp(root)),
    ];
    if let Some(m) = middle {
        out.push(("middle certificate".to_owned(), fp(m)));
    }
    out
}

/// The HTTP client every connector calls its channel with: `timeout` bounds a call (past it the
/// outcome is unknown), connecting at most 3 s of it.
pub fn http_client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(3)))
        .build()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ChannelsConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("channels.toml");
        std::fs::write(&path, text).unwrap();
        ChannelsConfig::load(&path)
    }

    const SANDBOX: &str = "gateway = \"http://127.0.0.1:1\"\nkey_file = \"k\"\n";

    #[test]
    fn one_table_is_the_default_account_and_an_array_names_several() {
        let one = parse(&format!("[sandbox]\n{SANDBOX}")).unwrap();
        assert_eq!(
            one.account_names(),
            [(ChannelName::Sandbox, "default".to_owned(), false)]
        );
        let two = parse(&format!(
            "[[sandbox]]\nname = \"a\"\n{SANDBOX}\n[[sandbox]]\nname = \"b\"\ndefault = true\n{SANDBOX}"
        ))
        .unwrap();
        assert_eq!(
            two.account_names(),
            [
                (ChannelName::Sandbox, "a".to_owned(), false),
                (ChannelName::Sandbox, "b".to_owned(), true)
            ]
        );
    }

    #[test]
    fn names_are_unique_url_safe_and_one_default_at_most() {
        for (bad, says) in [
            (
                format!(
                    "[[sandbox]]\nname = \"a\"\n{SANDBOX}\n[[sandbox]]\nname = \"a\"\n{SANDBOX}"
                ),
                "two [[sandbox]] accounts are named \"a\"",
            ),
            (
                format!("[[sandbox]]\n{SANDBOX}\n[[sandbox]]\n{SANDBOX}"),
                "named \"default\"",
            ),
            (
                format!("[[sandbox]]\nname = \"Shop A\"\n{SANDBOX}"),
                "name \"Shop A\"",
            ),
            (
                format!(
                    "[[sandbox]]\nname = \"a\"\ndefault = true\n{SANDBOX}\n[[sandbox]]\nname = \"b\"\ndefault = true\n{SANDBOX}"
                ),
                "more than one account is marked default",
            ),
            (
                format!("[sandbox]\n{SANDBOX}unknown_field = 1\n"),
                "unknown field",
            ),
        ] {
            let e = parse(&bad).expect_err(says).to_string();
            assert!(e.contains(says), "{e} should say {says}");
        }
    }

    const WECHAT_KEYS: &str = "gateway = \"http://127.0.0.1:1\"\nmchid = \"1230000109\"\nappid = \"wx8\"\nmerchant_serial_no = \"AB\"\nmerchant_key_file = \"k.pem\"\napiv3_key_file = \"v3\"\n";

    #[test]
    fn a_sub_merchant_names_its_provider_and_only_its_own_numbers() {
        let ok = parse(&format!(
            "[[wechatpay]]\nname = \"sp\"\nservice_provider = true\n{WECHAT_KEYS}\n\
             [[wechatpay]]\nname = \"sub1\"\nprovider = \"sp\"\nsub_mchid = \"1900000109\"\nsub_appid = \"wx9\"\n"
        ))
        .unwrap();
        assert_eq!(ok.wechatpay.0.len(), 2);
        for (bad, says) in [
            (
                format!(
                    "[[wechatpay]]\nname = \"sp\"\nservice_provider = true\n{WECHAT_KEYS}\n\
                     [[wechatpay]]\nname = \"sub1\"\nprovider = \"sp\"\nsub_mchid = \"1\"\nmerchant_key_file = \"x\"\n"
                ),
                "`merchant_key_file` belongs in the provider's table",
            ),
            (
                format!(
                    "[[wechatpay]]\nname = \"sp\"\nservice_provider = true\n{WECHAT_KEYS}\n\
                     [[wechatpay]]\nname = \"sub1\"\nprovider = \"sp\"\n"
                ),
                "needs sub_mchid",
            ),
            (
                format!(
                    "[[wechatpay]]\nname = \"sp\"\n{WECHAT_KEYS}\n\
                     [[wechatpay]]\nname = \"sub1\"\nprovider = \"sp\"\nsub_mchid = \"1\"\n"
                ),
                "not marked service_provider = true",
            ),
            (
                "[[wechatpay]]\nname = \"sub1\"\nprovider = \"nobody\"\nsub_mchid = \"1\"\n"
                    .to_owned(),
                "no [[wechatpay]] account is named \"nobody\"",
            ),
            (
                format!(
                    "[[wechatpay]]\nname = \"sp\"\nservice_provider = true\ndefault = true\n{WECHAT_KEYS}"
                ),
                "cannot be the default account",
            ),
            (
                "[[wechatpay]]\nname = \"a\"\ngateway = \"http://x\"\n".to_owned(),
                "missing `mchid`",
            ),
            (
                format!("[[wechatpay]]\nname = \"a\"\n{WECHAT_KEYS}sub_mchid = \"1\"\n"),
                "sub_mchid / sub_appid need provider",
            ),
        ] {
            let e = parse(&bad).expect_err(says).to_string();
            assert!(e.contains(says), "{e} should say {says}");
        }
    }
}
