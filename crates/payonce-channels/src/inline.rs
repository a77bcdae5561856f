//! A channel account given whole, key material inline (PEM text, the APIv3 key), as the admin
//! API receives it and as it is sealed in the database — the same fields as a `channels.toml`
//! table, with the key files' contents instead of their paths. Built into a connector exactly
//! like a file account, after the checks a self-check can make without the network: the
//! merchant key matches its certificate, UnionPay's certificate chain holds.

use crate::crypto::{Certificate, RsaSigner, RsaVerifier};
use crate::secret::SecretBytes;
use crate::{ChannelAccount, SharedClock};
use payonce_core::ChannelName;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One account's identifiers and keys. `Debug` shows the channel and merchant number only.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "channel", rename_all = "lowercase", deny_unknown_fields)]
pub enum InlineAccount {
    Wechatpay {
        gateway: String,
        mchid: String,
        appid: String,
        merchant_serial_no: String,
        /// The merchant's API private key (`apiclient_key.pem`).
        merchant_key_pem: String,
        /// The merchant's API certificate (`apiclient_cert.pem`): when given, the self-check
        /// proves the key is its key and the serial its serial.
        #[serde(default)]
        merchant_cert_pem: Option<String>,
        apiv3_key: String,
        #[serde(default)]
        platform_public_key_pem: Option<String>,
        #[serde(default)]
        platform_public_key_id: Option<String>,
        #[serde(default)]
        platform_cert_pems: Vec<String>,
        #[serde(default)]
        download_certificates: Option<bool>,
    },
    Alipay {
        gateway: String,
        app_id: String,
        app_private_key_pem: String,
        alipay_public_key_pem: String,
    },
    Unionpay {
        gateway: String,
        #[serde(default)]
        file_transfer_url: Option<String>,
        mer_id: String,
        sign_key_pem: String,
        sign_cert_pem: String,
        root_cert_pem: String,
        #[serde(default)]
        middle_cert_pem: Option<String>,
        #[serde(default)]
        accept_test_owner: bool,
    },
    Sandbox {
        gateway: String,
        key_hex: String,
    },
    /// A WeChat sub-merchant (特约商户) of a provider account (`service_provider = true` in
    /// `channels.toml`): its own numbers only; its calls are the provider's, signed with the
    /// provider's keys, through the partner APIs.
    #[serde(rename = "wechatpay_sub_merchant")]
    WechatpaySubMerchant {
        provider: String,
        sub_mchid: String,
        #[serde(default)]
        sub_appid: Option<String>,
    },
    /// A merchant that authorised an Alipay ISV's app (the provider account): its app id and
    /// the token every call on its behalf carries.
    #[serde(rename = "alipay_sub_merchant")]
    AlipaySubMerchant {
        provider: String,
        auth_app_id: String,
        app_auth_token: String,
    },
}

/// Finds a provider account's keys by (channel, name): how a sub-merchant's connector is made.
pub type ProviderLookup<'a> = &'a dyn Fn(ChannelName, &str) -> Option<crate::ProviderKeys>;

impl std::fmt::Debug for InlineAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "InlineAccount({} {})",
            self.channel(),
            self.merchant_id()
        )
    }
}

/// Why an account cannot be used, in words an operator acts on (never a key's content).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AccountProblem(pub String);

fn problem(s: impl Into<String>) -> AccountProblem {
    AccountProblem(s.into())
}

impl InlineAccount {
    pub fn channel(&self) -> ChannelName {
        match self {
            InlineAccount::Wechatpay { .. } | InlineAccount::WechatpaySubMerchant { .. } => {
                ChannelName::Wechatpay
            }
            InlineAccount::Alipay { .. } | InlineAccount::AlipaySubMerchant { .. } => {
                ChannelName::Alipay
            }
            InlineAccount::Unionpay { .. } => ChannelName::Unionpay,
            InlineAccount::Sandbox { .. } => ChannelName::Sandbox,
        }
    }

    /// The merchant number as the channel names it.
    pub fn merchant_id(&self) -> &str {
        match self {
            InlineAccount::Wechatpay { mchid, .. } => mchid,
            InlineAccount::Alipay { app_id, .. } => app_id,
            InlineAccount::Unionpay { mer_id, .. } => mer_id,
            InlineAccount::Sandbox { .. } => "sandbox",
            InlineAccount::WechatpaySubMerchant { sub_mchid, .. } => sub_mchid,
            InlineAccount::AlipaySubMerchant { auth_app_id, .. } => auth_app_id,
        }
    }

    /// The provider account a sub-merchant's calls go through.
    pub fn provider(&self) -> Option<&str> {
        match self {
            InlineAccount::WechatpaySubMerchant { provider, .. }
            | InlineAccount::AlipaySubMerchant { provider, .. } => Some(provider),
            _ => None,
        }
    }

    /// The connector, after every check that needs no network: keys parse, the merchant key
    /// matches its certificate, UnionPay's chain holds, a sub-merchant's provider is a provider
    /// this instance holds.
    pub fn build(
        &self,
        name: &str,
        is_default: bool,
        http: reqwest::Client,
        clock: SharedClock,
        providers: ProviderLookup<'_>,
    ) -> Result<ChannelAccount, AccountProblem> {
        let mut role = crate::AccountRole::Merchant;
        if let Some(provider) = self.provider() {
            role = crate::AccountRole::SubMerchant {
                provider: provider.to_owned(),
            };
        }
        let no_provider = |provider: &str| {
            problem(format!(
                "no {} service provider account named {provider:?} (a sub-merchant signs with its provider's keys: mark the provider service_provider = true in channels.toml)",
                self.channel()
            ))
        };
        let signer = |what: &str, pem: &str| {
            RsaSigner::from_pem(pem).map_err(|e| problem(format!("{what}: {e}")))
        };
        let cert = |what: &str, pem: &str| {
            Certificate::from_pem(pem).map_err(|e| problem(format!("{what}: {e}")))
        };
        let (connector, fingerprints): (Arc<dyn crate::Channel>, Vec<(String, String)>) = match self
        {
            InlineAccount::Wechatpay {
                gateway,
                mchid,
                appid,
                merchant_serial_no,
                merchant_key_pem,
                merchant_cert_pem,
                apiv3_key,
                platform_public_key_pem,
                platform_public_key_id,
                platform_cert_pems,
                download_certificates,
            } => {
                let key = signer("merchant_key_pem", merchant_key_pem)?;
                if let Some(pem) = merchant_cert_pem {
                    let c = cert("merchant_cert_pem", pem)?;
                    if !c.serial_hex.eq_ignore_ascii_case(merchant_serial_no) {
                        return Err(problem(format!(
                            "the merchant certificate's serial is {}, not merchant_serial_no {merchant_serial_no}",
                            c.serial_hex
                        )));
                    }
                    if !pair_matches(&key, &c.verifier) {
                        return Err(problem(format!(
                            "merchant key does not match serial {merchant_serial_no}: it is not the key of that certificate"
                        )));
                    }
                }
                let mut platform = crate::wechatpay::protocol::PlatformKeys::default();
                match (platform_public_key_pem, platform_public_key_id) {
                    (Some(pem), Some(id)) => {
                        let v = RsaVerifier::from_pem(pem)
                            .map_err(|e| problem(format!("platform_public_key_pem: {e}")))?;
                        platform.0.insert(id.clone(), v);
                    }
                    (None, None) => {}
                    _ => {
                        return Err(problem(
                            "platform_public_key_pem and platform_public_key_id go together",
                        ));
                    }
                }
                for pem in platform_cert_pems {
                    let c = cert("platform_cert_pems", pem)?;
                    platform.0.insert(c.serial_hex.clone(), c.verifier.clone());
                }
                if platform.0.is_empty() {
                    return Err(problem("no platform public key or certificate"));
                }
                if apiv3_key.len() != 32 {
                    return Err(problem("the APIv3 key must be 32 characters"));
                }
                let keys = crate::wechatpay::WechatpayKeys {
                    mchid: mchid.clone(),
                    appid: appid.clone(),
                    merchant_serial_no: merchant_serial_no.clone(),
                    merchant_key: Arc::new(key),
                    apiv3_key: SecretBytes::new(apiv3_key.as_bytes().to_vec()),
                    download_certificates: download_certificates
                        .unwrap_or(!platform_cert_pems.is_empty()),
                    platform,
                    partner: None,
                };
                let fingerprints = keys.fingerprints();
                (
                    Arc::new(crate::wechatpay::WechatpayClient::new(
                        gateway.clone(),
                        keys,
                        http,
                        clock,
                    )),
                    fingerprints,
                )
            }
            InlineAccount::Alipay {
                gateway,
                app_id,
                app_private_key_pem,
                alipay_public_key_pem,
            } => {
                let keys = crate::alipay::AlipayKeys {
                    isv: None,
                    app_id: app_id.clone(),
                    app_private_key: Arc::new(signer("app_private_key_pem", app_private_key_pem)?),
                    alipay_public_key: RsaVerifier::from_pem(alipay_public_key_pem)
                        .map_err(|e| problem(format!("alipay_public_key_pem: {e}")))?,
                };
                let fingerprints = keys.fingerprints();
                (
                    Arc::new(crate::alipay::AlipayClient::new(
                        gateway.clone(),
                        keys,
                        http,
                        clock,
                    )),
                    fingerprints,
                )
            }
            InlineAccount::Unionpay {
                gateway,
                file_transfer_url,
                mer_id,
                sign_key_pem,
                sign_cert_pem,
                root_cert_pem,
                middle_cert_pem,
                accept_test_owner,
            } => {
                let key = signer("sign_key_pem", sign_key_pem)?;
                let sign_cert = cert("sign_cert_pem", sign_cert_pem)?;
                if !pair_matches(&key, &sign_cert.verifier) {
                    return Err(problem(format!(
                        "merchant key does not match certId {}: it is not the key of sign_cert_pem",
                        sign_cert.serial_decimal
                    )));
                }
                let root = cert("root_cert_pem", root_cert_pem)?;
                let middle = match middle_cert_pem {
                    Some(pem) => Some(cert("middle_cert_pem", pem)?),
                    None => None,
                };
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                if let Some(m) = &middle
                    && !m.issued_by(&root, now)
                {
                    return Err(problem(
                        "middle_cert_pem is not issued by root_cert_pem (or is not valid now)",
                    ));
                }
                let fingerprints =
                    crate::config::unionpay_fingerprints(&sign_cert, &root, middle.as_ref());
                let file_transfer = crate::config::UnionpayConfig::transfer_host(
                    gateway,
                    file_transfer_url.as_deref(),
                );
                let keys = crate::unionpay::UnionpayKeys {
                    mer_id: mer_id.clone(),
                    sign_key: key,
                    cert_id: sign_cert.serial_decimal.clone(),
                    root,
                    middle,
                    accept_test_owner: *accept_test_owner,
                };
                (
                    Arc::new(crate::unionpay::UnionpayClient::new(
                        gateway.clone(),
                        file_transfer,
                        keys,
                        http,
                        clock,
                    )),
                    fingerprints,
                )
            }
            InlineAccount::WechatpaySubMerchant {
                provider,
                sub_mchid,
                sub_appid,
            } => {
                digits("sub_mchid", "the sub-merchant's number", sub_mchid)?;
                let Some(crate::ProviderKeys::Wechatpay { gateway, mut keys }) =
                    providers(ChannelName::Wechatpay, provider)
                else {
                    return Err(no_provider(provider));
                };
                keys.partner = Some(crate::wechatpay::SubMerchant {
                    sub_mchid: sub_mchid.clone(),
                    sub_appid: sub_appid.clone(),
                });
                // The provider's keys sign its calls: their fingerprints, named as the provider's.
                let fingerprints = with_provider(provider, keys.fingerprints());
                (
                    Arc::new(crate::wechatpay::WechatpayClient::new(
                        gateway, keys, http, clock,
                    )),
                    fingerprints,
                )
            }
            InlineAccount::AlipaySubMerchant {
                provider,
                auth_app_id,
                app_auth_token,
            } => {
                digits("auth_app_id", "the merchant's app id", auth_app_id)?;
                if app_auth_token.trim().is_empty() {
                    return Err(problem("app_auth_token is empty"));
                }
                let Some(crate::ProviderKeys::Alipay { gateway, mut keys }) =
                    providers(ChannelName::Alipay, provider)
                else {
                    return Err(no_provider(provider));
                };
                keys.isv = Some(crate::alipay::IsvGrant {
                    auth_app_id: auth_app_id.clone(),
                    app_auth_token: SecretBytes::new(app_auth_token.trim().as_bytes().to_vec()),
                });
                let fingerprints = with_provider(provider, keys.fingerprints());
                (
                    Arc::new(crate::alipay::AlipayClient::new(gateway, keys, http, clock)),
                    fingerprints,
                )
            }
            InlineAccount::Sandbox { gateway, key_hex } => {
                let key = hex::decode(key_hex.trim()).map_err(|_| problem("key_hex is not hex"))?;
                (
                    Arc::new(crate::sandbox::SandboxClient::new(
                        gateway.clone(),
                        SecretBytes::new(key),
                        http,
                        clock,
                    )),
                    Vec::new(),
                )
            }
        };
        Ok(ChannelAccount {
            role,
            provider_keys: None,
            name: name.to_owned(),
            connector,
            merchant_id: self.merchant_id().to_owned(),
            fingerprints,
            is_default,
        })
    }
}

/// A merchant number or app id: digits only.
fn digits(field: &str, what: &str, value: &str) -> Result<(), AccountProblem> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(problem(format!("{field} must be {what} (digits)")));
    }
    Ok(())
}

/// A provider's key fingerprints as its sub-merchant lists them: the provider's own key named
/// as the provider's (`provider sp merchant key …`), the channel's keys as they are.
fn with_provider(provider: &str, fingerprints: Vec<(String, String)>) -> Vec<(String, String)> {
    fingerprints
        .into_iter()
        .map(|(what, fp)| {
            if what.starts_with("platform") || what.starts_with("alipay") {
                (what, fp)
            } else {
                (format!("provider {provider} {what}"), fp)
            }
        })
        .collect()
}

/// Whether `key` is the private half of `public`: a signature by one verifies with the other.
fn pair_matches(key: &RsaSigner, public: &RsaVerifier) -> bool {
    let probe = b"payonce key pair check";
    public.verify(probe, &key.sign(probe))
}

/// The answer to "is this account usable?": one harmless signed call — a query of an order
/// number that cannot exist — must come back with a verified signature. `Ok` says what was
/// proven; `Err` says exactly what is wrong.
pub async fn signed_call_check(account: &ChannelAccount) -> Result<String, AccountProblem> {
    use crate::{ChannelError, ChannelOrderRef, TradeState};
    let mut order = ChannelOrderRef::new("payonceselfcheck00000000000000000");
    order.out_trade_no.truncate(32);
    // UnionPay names an order by its txnTime too: any time of today (Beijing) does.
    if account.channel() == ChannelName::Unionpay {
        let now = time::OffsetDateTime::now_utc() + time::Duration::hours(8);
        order.channel_data = Some(format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        ));
    }
    let who = format!(
        "{} {} ({})",
        account.channel(),
        account.name,
        account.merchant_id
    );
    match account.connector.query(&order).await {
        Ok(TradeState::Absent) | Ok(_) => Ok(format!(
            "{who}: a signed query was accepted and its answer's signature verified"
        )),
        Err(ChannelError::Refused { code, message }) => Err(problem(match account.channel() {
            ChannelName::Wechatpay if code == "NO_AUTH" => format!(
                "{who}: WeChat refused the request ({code}: {message}): the sub-merchant is not bound to this service provider (or a provider's own number was used to pay)"
            ),
            ChannelName::Alipay
                if code == "aop.invalid-app-auth-token"
                    || code == "isv.insufficient-isv-permissions" =>
            {
                format!(
                    "{who}: Alipay refused the request ({code}: {message}): the app_auth_token is not one this ISV holds for that merchant"
                )
            }
            ChannelName::Wechatpay => format!(
                "{who}: WeChat refused the request ({code}: {message}): the merchant key does not match its serial, or the serial / mchid is wrong"
            ),
            ChannelName::Alipay => format!(
                "{who}: Alipay refused the request ({code}: {message}): the app private key does not match the public key uploaded for this app_id, or the app_id is wrong"
            ),
            _ => format!("{who}: the channel refused the request ({code}: {message})"),
        })),
        Err(ChannelError::Unreachable(e)) => Err(problem(format!(
            "{who}: the gateway cannot be reached: {e}"
        ))),
        Err(ChannelError::Ambiguous(e)) => Err(problem(format!(
            "{who}: the answer could not be verified ({e}): it is signed by an unknown serial or key, or the gateway is wrong"
        ))),
    }
}
