//! Key material of one simulator state dir: generated on first start, reused afterwards so a
//! running payonce keeps trusting a restarted simulator. Files named `*_merchant_*` /
//! `*_app_*` are the merchant's side (payonce reads them); the rest are the channel's own.

use payonce_channels::crypto::{RsaSigner, RsaVerifier, nonce};
use payonce_channels::secret::SecretBytes;
use std::path::Path;
use std::sync::{Arc, Mutex};

pub const WECHAT_MCHID: &str = "1900000001";
pub const WECHAT_APPID: &str = "wxd678efh567hg6787";
pub const ALIPAY_APP_ID: &str = "2021000000000001";
pub const UNIONPAY_MER_ID: &str = "777290058110048";

/// One WeChat merchant the simulator serves: its identifiers, the public half of its API key
/// (requests are checked with it) and its APIv3 key (its notifications are encrypted with it).
/// A sub-merchant has no key of its own: `serial`, `key` and `apiv3` are its provider's.
pub struct WechatMerchant {
    /// Its account name in the `channels.toml` the simulator writes (`/sim/ledger` names it).
    pub name: String,
    pub mchid: String,
    pub appid: String,
    pub serial: String,
    pub key: RsaVerifier,
    pub apiv3: SecretBytes,
    pub role: MerchantRole,
}

/// A merchant's kind: a direct merchant, a service provider (WeChat 服务商, an Alipay ISV's
/// third-party app: signs for its sub-merchants, makes no order of its own) and a sub-merchant
/// (特约商户; an Alipay merchant that authorised the ISV) of a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MerchantRole {
    Merchant,
    Provider,
    /// The index of its provider in the channel's merchants.
    SubMerchant {
        provider: usize,
    },
}

/// The service provider a multi-merchant simulator plays, and its two sub-merchants: WeChat's
/// documented example numbers. `sub1` has an appid of its own (payers by `sub_openid`),
/// `sub2` has none (payers by `sp_openid`).
pub const WECHAT_SP_MCHID: &str = "1230000109";
pub const WECHAT_SP_APPID: &str = "wx8888888888888888";
pub const WECHAT_SUB_MCHIDS: [&str; 2] = ["1900000109", "1900000110"];
pub const WECHAT_SUB1_APPID: &str = "wxd678efh567hg6999";

/// One Alipay app (merchant) the simulator serves. A sub-merchant (a merchant that authorised
/// the ISV's third-party app) signs nothing: its ISV signs, with its `app_auth_token`.
pub struct AlipayMerchant {
    /// Its account name in the `channels.toml` the simulator writes.
    pub name: String,
    pub app_id: String,
    pub app_key: RsaVerifier,
    pub role: MerchantRole,
    /// A sub-merchant's authorisation token (`app_auth_token`), which its ISV sends.
    pub app_auth_token: String,
}

/// The Alipay ISV app of a multi-merchant simulator and its two authorising merchants.
pub const ALIPAY_SP_APP_ID: &str = "2021000000000900";
pub const ALIPAY_SUB_APP_IDS: [&str; 2] = ["2021000000000901", "2021000000000902"];

/// One UnionPay merchant the simulator serves.
pub struct UnionpayMerchant {
    pub mer_id: String,
    pub cert_id: String,
    pub key: RsaVerifier,
}

pub struct SimKeys {
    pub sandbox: SecretBytes,
    /// Merchant 0 is the one of a single-merchant simulator (today's file names).
    pub wechat: Vec<WechatMerchant>,
    pub alipay: Vec<AlipayMerchant>,
    pub unionpay: Vec<UnionpayMerchant>,
    pub wechat_platform_key_id: String,
    /// The key WeChat signs answers and notifications with now, and the serial it announces
    /// (`PUB_KEY_ID_…` in public-key mode, a certificate serial in certificate mode).
    pub wechat_signing: Mutex<WechatSigning>,
    /// The platform certificates `GET /v3/certificates` lists (old and new overlap on rotation).
    pub wechat_certificates: Mutex<Vec<PlatformCertificate>>,
    pub alipay_platform: RsaSigner,
    pub unionpay_sign: RsaSigner,
    /// PEM of UnionPay's signing certificate, sent as `signPubKeyCert`.
    pub unionpay_sign_cert: String,
}

pub struct WechatSigning {
    pub key: Arc<RsaSigner>,
    pub serial: String,
}

#[derive(Clone)]
pub struct PlatformCertificate {
    pub serial: String,
    pub pem: String,
    pub key: Arc<RsaSigner>,
    pub effective_at: i64,
    pub expire_at: i64,
}

/// A self-signed platform certificate for `key` (WeChat's are issued by Tenpay's CA; payonce
/// trusts the certificate itself, found by serial).
pub fn platform_certificate(key: &Arc<RsaSigner>, serial: u64, now_ms: i64) -> PlatformCertificate {
    use rcgen::{CertificateParams, DnType, KeyPair, PKCS_RSA_SHA256, SerialNumber};
    let kp = KeyPair::from_pkcs8_der_and_sign_algo(&key.pkcs8_der().into(), &PKCS_RSA_SHA256)
        .expect("RSA key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name
        .push(DnType::CommonName, "Tenpay.com Root CA (simulated)");
    p.serial_number = Some(SerialNumber::from(serial));
    let start = time::OffsetDateTime::from_unix_timestamp(now_ms / 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    p.not_before = start - time::Duration::days(1);
    p.not_after = start + time::Duration::days(5 * 365);
    let cert = p.self_signed(&kp).expect("self-signed certificate");
    PlatformCertificate {
        serial: format!("{serial:X}"),
        pem: cert.pem(),
        key: key.clone(),
        effective_at: now_ms - 86_400_000,
        expire_at: now_ms + 5 * 365 * 86_400_000,
    }
}

fn load_or(path: &Path, make: impl FnOnce() -> String) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let s = make();
            crate::write_private(path, &s)?;
            Ok(s)
        }
        Err(e) => Err(e),
    }
}

fn rsa(path: &Path) -> std::io::Result<RsaSigner> {
    let pem = load_or(path, || RsaSigner::generate().to_pkcs8_pem())?;
    RsaSigner::from_pem(&pem).map_err(std::io::Error::other)
}

/// Account name of merchant `i` (0-based) of `n`: `default` alone, else `m1` … `mN`.
pub fn account_name(i: usize, n: usize) -> String {
    if n <= 1 {
        "default".to_owned()
    } else {
        format!("m{}", i + 1)
    }
}

/// File name of a merchant's key file: merchant 0 keeps today's names, merchant `i` adds
/// `_m{i+1}` after the channel's prefix.
fn merchant_file(i: usize, channel: &str, rest: &str) -> String {
    if i == 0 {
        format!("{channel}_{rest}")
    } else {
        format!("{channel}_m{}_{rest}", i + 1)
    }
}

/// Identifiers of merchant `i`: merchant 0 keeps today's constants.
fn wechat_ids(i: usize) -> (String, String) {
    if i == 0 {
        (WECHAT_MCHID.to_owned(), WECHAT_APPID.to_owned())
    } else {
        (
            (1_900_000_001 + i as u64).to_string(),
            format!("wxd678efh567hg{:04}", i + 1),
        )
    }
}

fn alipay_app_id(i: usize) -> String {
    if i == 0 {
        ALIPAY_APP_ID.to_owned()
    } else {
        (2_021_000_000_000_001u64 + i as u64).to_string()
    }
}

fn unionpay_mer_id(i: usize) -> String {
    if i == 0 {
        UNIONPAY_MER_ID.to_owned()
    } else {
        (777_290_058_110_048u64 + i as u64).to_string()
    }
}

impl SimKeys {
    /// The keys of a simulator playing `merchants` merchants per channel (at least one).
    pub fn load_or_generate_for(dir: &Path, merchants: usize) -> std::io::Result<Self> {
        let merchants = merchants.max(1);
        let sandbox = hex::decode(
            load_or(&dir.join("sandbox.key"), || {
                hex::encode(SecretBytes::random32().expose())
            })?
            .trim(),
        )
        .map_err(std::io::Error::other)?;
        let wechat_platform = Arc::new(rsa(&dir.join("wechatpay_platform_key.pem"))?);
        std::fs::write(
            dir.join("wechatpay_platform_public_key.pem"),
            wechat_platform.public_key_pem(),
        )?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let first_cert = platform_certificate(&wechat_platform, 0x5157_F09D_0E74_B8A2, now);
        // For certificate-mode configurations (`platform_cert_files`).
        std::fs::write(dir.join("wechatpay_platform_cert.pem"), &first_cert.pem)?;
        let ids = load_or(&dir.join("wechatpay_ids"), || {
            format!("{}\nPUB_KEY_ID_0119{}\n", nonce(40), nonce(20))
        })?;
        let mut ids = ids.lines();
        let first_serial = ids.next().unwrap_or_default().to_owned();
        let platform_key_id = ids.next().unwrap_or_default().to_owned();
        let mut wechat = Vec::new();
        let mut alipay = Vec::new();
        for i in 0..merchants {
            let (mchid, appid) = wechat_ids(i);
            let serial = if i == 0 {
                first_serial.clone()
            } else {
                load_or(&dir.join(merchant_file(i, "wechatpay", "serial")), || {
                    nonce(40)
                })?
                .trim()
                .to_owned()
            };
            let apiv3 = load_or(
                &dir.join(merchant_file(i, "wechatpay", "apiv3.key")),
                || nonce(32),
            )?;
            wechat.push(WechatMerchant {
                name: account_name(i, merchants),
                mchid,
                appid,
                serial,
                key: rsa(&dir.join(merchant_file(i, "wechatpay", "merchant_key.pem")))?.verifier(),
                apiv3: SecretBytes::new(apiv3.trim().as_bytes().to_vec()),
                role: MerchantRole::Merchant,
            });
            alipay.push(AlipayMerchant {
                name: account_name(i, merchants),
                app_id: alipay_app_id(i),
                app_key: rsa(&dir.join(merchant_file(i, "alipay", "app_private_key.pem")))?
                    .verifier(),
                role: MerchantRole::Merchant,
                app_auth_token: String::new(),
            });
        }
        if merchants > 1 {
            // The provider `sp` and its sub-merchants `sub1`, `sub2` (after the merchants, so
            // merchant 0 keeps today's place).
            let provider = wechat.len();
            let serial = load_or(&dir.join("wechatpay_sp_serial"), || nonce(40))?
                .trim()
                .to_owned();
            let apiv3 = load_or(&dir.join("wechatpay_sp_apiv3.key"), || nonce(32))?;
            let apiv3 = SecretBytes::new(apiv3.trim().as_bytes().to_vec());
            let key = rsa(&dir.join("wechatpay_sp_merchant_key.pem"))?.verifier();
            wechat.push(WechatMerchant {
                name: "sp".into(),
                mchid: WECHAT_SP_MCHID.into(),
                appid: WECHAT_SP_APPID.into(),
                serial: serial.clone(),
                key: key.clone(),
                apiv3: apiv3.clone(),
                role: MerchantRole::Provider,
            });
            for (k, sub_mchid) in WECHAT_SUB_MCHIDS.iter().enumerate() {
                wechat.push(WechatMerchant {
                    name: format!("sub{}", k + 1),
                    mchid: (*sub_mchid).into(),
                    // sub2 has no appid of its own: its payers are the provider's.
                    appid: if k == 0 {
                        WECHAT_SUB1_APPID.into()
                    } else {
                        String::new()
                    },
                    serial: serial.clone(),
                    key: key.clone(),
                    apiv3: apiv3.clone(),
                    role: MerchantRole::SubMerchant { provider },
                });
            }
        }
        if merchants > 1 {
            // The ISV's third-party app `sp` and the merchants that authorised it.
            let provider = alipay.len();
            let key = rsa(&dir.join("alipay_sp_app_private_key.pem"))?.verifier();
            alipay.push(AlipayMerchant {
                name: "sp".into(),
                app_id: ALIPAY_SP_APP_ID.into(),
                app_key: key.clone(),
                role: MerchantRole::Provider,
                app_auth_token: String::new(),
            });
            for (k, app_id) in ALIPAY_SUB_APP_IDS.iter().enumerate() {
                let token = load_or(
                    &dir.join(format!("alipay_sub{}_app_auth_token", k + 1)),
                    || format!("202612BB{}", nonce(32)),
                )?;
                alipay.push(AlipayMerchant {
                    name: format!("sub{}", k + 1),
                    app_id: (*app_id).into(),
                    app_key: key.clone(),
                    role: MerchantRole::SubMerchant { provider },
                    app_auth_token: token.trim().to_owned(),
                });
            }
        }
        let alipay_platform = rsa(&dir.join("alipay_private_key.pem"))?;
        std::fs::write(
            dir.join("alipay_public_key.pem"),
            alipay_platform.public_key_pem(),
        )?;
        let unionpay_first = unionpay_pki(dir)?;
        let mut unionpay = vec![UnionpayMerchant {
            mer_id: UNIONPAY_MER_ID.to_owned(),
            cert_id: unionpay_first.1,
            key: unionpay_first.0,
        }];
        for i in 1..merchants {
            let (key, cert_id) = unionpay_merchant(dir, i)?;
            unionpay.push(UnionpayMerchant {
                mer_id: unionpay_mer_id(i),
                cert_id,
                key,
            });
        }
        Ok(SimKeys {
            sandbox: SecretBytes::new(sandbox),
            wechat,
            alipay,
            unionpay,
            wechat_platform_key_id: platform_key_id.clone(),
            wechat_signing: Mutex::new(WechatSigning {
                key: wechat_platform,
                serial: platform_key_id,
            }),
            wechat_certificates: Mutex::new(vec![first_cert]),
            alipay_platform,
            unionpay_sign: unionpay_first.2,
            unionpay_sign_cert: unionpay_first.3,
        })
    }

    /// The `channels.toml` a payonce server reads to talk to this simulator at `base`: one
    /// table per channel with one merchant (today's file), else `[[channel]]` accounts `m1` …
    /// `mN`, the first marked default. The platform keys (WeChat's, Alipay's, UnionPay's
    /// signing certificate) are the simulated channel's own, shared by its merchants.
    pub fn channels_toml(&self, base: &str, listed: Option<usize>) -> String {
        let n = self.unionpay.len();
        let listed = listed.unwrap_or(n).clamp(1, n);
        let (open, close) = if n == 1 { ("[", "]") } else { ("[[", "]]") };
        let label = |i: usize| {
            if n == 1 {
                String::new()
            } else {
                format!(
                    "name = \"{}\"\n{}",
                    account_name(i, n),
                    if i == 0 { "default = true\n" } else { "" }
                )
            }
        };
        let mut out = format!(
            "# Written by `payonce sim`: the simulated channels and the merchant's keys for them.\n\
             [sandbox]\ngateway = \"{base}\"\nkey_file = \"sandbox.key\"\n"
        );
        let direct = self
            .wechat
            .iter()
            .filter(|m| m.role == MerchantRole::Merchant);
        for (i, m) in direct.enumerate().take(listed) {
            out.push_str(&format!(
                "\n{open}wechatpay{close}\n{}gateway = \"{base}\"\nmchid = \"{}\"\nappid = \"{}\"\n\
                 merchant_serial_no = \"{}\"\nmerchant_key_file = \"{}\"\n\
                 apiv3_key_file = \"{}\"\nplatform_public_key_file = \"wechatpay_platform_public_key.pem\"\n\
                 platform_public_key_id = \"{}\"\n",
                label(i),
                m.mchid,
                m.appid,
                m.serial,
                merchant_file(i, "wechatpay", "merchant_key.pem"),
                merchant_file(i, "wechatpay", "apiv3.key"),
                self.wechat_platform_key_id
            ));
        }
        // A partial listing (`listed` < all) leaves `sub2` to be added at runtime too.
        let partial = listed < n;
        for (k, m) in self.wechat.iter().enumerate() {
            match m.role {
                MerchantRole::Merchant => {}
                MerchantRole::SubMerchant { provider } if partial && k - provider > 1 => {}
                MerchantRole::Provider => out.push_str(&format!(
                    "\n[[wechatpay]]\nname = \"{}\"\nservice_provider = true\ngateway = \"{base}\"\n\
                     mchid = \"{}\"\nappid = \"{}\"\nmerchant_serial_no = \"{}\"\n\
                     merchant_key_file = \"wechatpay_sp_merchant_key.pem\"\n\
                     apiv3_key_file = \"wechatpay_sp_apiv3.key\"\n\
                     platform_public_key_file = \"wechatpay_platform_public_key.pem\"\n\
                     platform_public_key_id = \"{}\"\n",
                    m.name, m.mchid, m.appid, m.serial, self.wechat_platform_key_id
                )),
                MerchantRole::SubMerchant { provider } => {
                    out.push_str(&format!(
                        "\n[[wechatpay]]\nname = \"{}\"\nprovider = \"{}\"\nsub_mchid = \"{}\"\n",
                        m.name, self.wechat[provider].name, m.mchid
                    ));
                    if !m.appid.is_empty() {
                        out.push_str(&format!("sub_appid = \"{}\"\n", m.appid));
                    }
                }
            }
        }
        let direct = self
            .alipay
            .iter()
            .filter(|m| m.role == MerchantRole::Merchant);
        for (i, m) in direct.enumerate().take(listed) {
            out.push_str(&format!(
                "\n{open}alipay{close}\n{}gateway = \"{base}/gateway.do\"\napp_id = \"{}\"\n\
                 app_private_key_file = \"{}\"\nalipay_public_key_file = \"alipay_public_key.pem\"\n",
                label(i),
                m.app_id,
                merchant_file(i, "alipay", "app_private_key.pem"),
            ));
        }
        for (k, m) in self.alipay.iter().enumerate() {
            match m.role {
                MerchantRole::Merchant => {}
                MerchantRole::SubMerchant { provider } if partial && k - provider > 1 => {}
                MerchantRole::Provider => out.push_str(&format!(
                    "\n[[alipay]]\nname = \"{}\"\nservice_provider = true\ngateway = \"{base}/gateway.do\"\n\
                     app_id = \"{}\"\napp_private_key_file = \"alipay_sp_app_private_key.pem\"\n\
                     alipay_public_key_file = \"alipay_public_key.pem\"\n",
                    m.name, m.app_id
                )),
                MerchantRole::SubMerchant { provider } => out.push_str(&format!(
                    "\n[[alipay]]\nname = \"{}\"\nprovider = \"{}\"\nauth_app_id = \"{}\"\n\
                     app_auth_token_file = \"alipay_sub{}_app_auth_token\"\n",
                    m.name,
                    self.alipay[provider].name,
                    m.app_id,
                    k - provider
                )),
            }
        }
        for (i, m) in self.unionpay.iter().enumerate().take(listed) {
            out.push_str(&format!(
                "\n{open}unionpay{close}\n{}gateway = \"{base}\"\nmer_id = \"{}\"\nsign_key_file = \"{}\"\n\
                 sign_cert_file = \"{}\"\nroot_cert_file = \"unionpay_root.pem\"\n\
                 middle_cert_file = \"unionpay_middle.pem\"\n",
                label(i),
                m.mer_id,
                merchant_file(i, "unionpay", "merchant_key.pem"),
                merchant_file(i, "unionpay", "merchant_cert.pem"),
            ));
        }
        out
    }

    /// The WeChat merchant or provider that signs as `mchid` (a sub-merchant signs nothing:
    /// its provider does).
    pub fn wechat_by_mchid(&self, mchid: &str) -> Option<(usize, &WechatMerchant)> {
        self.wechat
            .iter()
            .enumerate()
            .find(|(_, m)| m.mchid == mchid && !matches!(m.role, MerchantRole::SubMerchant { .. }))
    }

    /// The sub-merchant `sub_mchid` under `provider`; `Err(true)` when it exists under another
    /// provider (or is no sub-merchant), `Err(false)` when WeChat knows no such merchant.
    pub fn wechat_sub_merchant(&self, provider: usize, sub_mchid: &str) -> Result<usize, bool> {
        match self.wechat.iter().position(|m| m.mchid == sub_mchid) {
            Some(i) if self.wechat[i].role == (MerchantRole::SubMerchant { provider }) => Ok(i),
            Some(_) => Err(true),
            None => Err(false),
        }
    }

    /// The Alipay app that signs as `app_id` (a sub-merchant signs nothing: its ISV does).
    pub fn alipay_by_app_id(&self, app_id: &str) -> Option<(usize, &AlipayMerchant)> {
        self.alipay.iter().enumerate().find(|(_, m)| {
            m.app_id == app_id && !matches!(m.role, MerchantRole::SubMerchant { .. })
        })
    }

    pub fn unionpay_by_mer_id(&self, mer_id: &str) -> Option<(usize, &UnionpayMerchant)> {
        self.unionpay
            .iter()
            .enumerate()
            .find(|(_, m)| m.mer_id == mer_id)
    }
}

/// Merchant `i` (> 0) of UnionPay: its signing key and a certificate whose decimal serial is its
/// `certId` (the simulator checks the signature with it; no chain is asked of a merchant's).
fn unionpay_merchant(dir: &Path, i: usize) -> std::io::Result<(RsaVerifier, String)> {
    use payonce_channels::crypto::Certificate;
    let key_file = dir.join(merchant_file(i, "unionpay", "merchant_key.pem"));
    let cert_file = dir.join(merchant_file(i, "unionpay", "merchant_cert.pem"));
    let signer = rsa(&key_file)?;
    let pem = load_or(&cert_file, || {
        use rcgen::{CertificateParams, DnType, KeyPair, PKCS_RSA_SHA256, SerialNumber};
        let kp =
            KeyPair::from_pkcs8_der_and_sign_algo(&signer.pkcs8_der().into(), &PKCS_RSA_SHA256)
                .expect("RSA key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name.push(
            DnType::CommonName,
            format!("merchant {}", unionpay_mer_id(i)),
        );
        p.serial_number = Some(SerialNumber::from(68_759_663_125u64 + i as u64));
        p.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        p.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(3650);
        p.self_signed(&kp).expect("self-signed certificate").pem()
    })?;
    let cert = Certificate::from_pem(&pem).map_err(std::io::Error::other)?;
    Ok((cert.verifier.clone(), cert.serial_decimal.clone()))
}

/// UnionPay's certificate hierarchy, as the simulator plays it: a root, an intermediate, the
/// signing certificate issued to 中国银联股份有限公司 (sent as `signPubKeyCert`), and the
/// merchant's signing certificate (its decimal serial is the `certId`). Generated once per
/// state dir. Returns (merchant verifier, merchant certId, UnionPay signer, signing cert PEM).
fn unionpay_pki(dir: &Path) -> std::io::Result<(RsaVerifier, String, RsaSigner, String)> {
    use payonce_channels::crypto::Certificate;
    let files = [
        "unionpay_root.pem",
        "unionpay_middle.pem",
        "unionpay_sign_cert.pem",
        "unionpay_sign_key.pem",
        "unionpay_merchant_key.pem",
        "unionpay_merchant_cert.pem",
    ];
    if !files.iter().all(|f| dir.join(f).exists()) {
        generate_unionpay_pki(dir).map_err(std::io::Error::other)?;
    }
    let read = |f: &str| std::fs::read_to_string(dir.join(f));
    let merchant_cert = Certificate::from_pem(&read("unionpay_merchant_cert.pem")?)
        .map_err(std::io::Error::other)?;
    let sign =
        RsaSigner::from_pem(&read("unionpay_sign_key.pem")?).map_err(std::io::Error::other)?;
    Ok((
        merchant_cert.verifier.clone(),
        merchant_cert.serial_decimal.clone(),
        sign,
        read("unionpay_sign_cert.pem")?,
    ))
}

fn generate_unionpay_pki(dir: &Path) -> Result<(), rcgen::Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, PKCS_RSA_SHA256,
        SerialNumber,
    };
    let key = |signer: &RsaSigner| {
        KeyPair::from_pkcs8_der_and_sign_algo(&signer.pkcs8_der().into(), &PKCS_RSA_SHA256)
    };
    let params = |cn: &str, serial: u64, ca: bool| -> Result<CertificateParams, rcgen::Error> {
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(DnType::CountryName, "CN");
        p.distinguished_name
            .push(DnType::OrganizationName, "China UnionPay (simulated)");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.serial_number = Some(SerialNumber::from(serial));
        p.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        p.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(3650);
        if ca {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        Ok(p)
    };
    let (root_rsa, middle_rsa, sign_rsa, merchant_rsa) = (
        RsaSigner::generate(),
        RsaSigner::generate(),
        RsaSigner::generate(),
        RsaSigner::generate(),
    );
    let root_params = params("CFCA TEST OCA1 ROOT (simulated)", 1, true)?;
    let root_key = key(&root_rsa)?;
    let root_cert = root_params.self_signed(&root_key)?;
    let root = Issuer::new(root_params, root_key);
    let middle_params = params("CFCA TEST OCA1 (simulated)", 2, true)?;
    let middle_key = key(&middle_rsa)?;
    let middle_cert = middle_params.signed_by(&middle_key, &root)?;
    let middle = Issuer::new(middle_params, middle_key);
    let sign_cert = params(
        "041@8310000000083040@中国银联股份有限公司@00000001",
        69_042_905_377,
        false,
    )?
    .signed_by(&key(&sign_rsa)?, &middle)?;
    let merchant_cert = params(
        &format!("merchant {UNIONPAY_MER_ID}"),
        68_759_663_125,
        false,
    )?
    .signed_by(&key(&merchant_rsa)?, &root)?;
    let w = |f: &str, s: &str| {
        std::fs::write(dir.join(f), s).map_err(|e| rcgen::Error::PemError(e.to_string()))
    };
    w("unionpay_root.pem", &root_cert.pem())?;
    w("unionpay_middle.pem", &middle_cert.pem())?;
    w("unionpay_sign_cert.pem", &sign_cert.pem())?;
    crate::write_private(&dir.join("unionpay_sign_key.pem"), &sign_rsa.to_pkcs8_pem())
        .map_err(|e| rcgen::Error::PemError(e.to_string()))?;
    crate::write_private(
        &dir.join("unionpay_merchant_key.pem"),
        &merchant_rsa.to_pkcs8_pem(),
    )
    .map_err(|e| rcgen::Error::PemError(e.to_string()))?;
    w("unionpay_merchant_cert.pem", &merchant_cert.pem())?;
    Ok(())
}
