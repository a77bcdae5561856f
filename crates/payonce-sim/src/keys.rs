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

pub struct SimKeys {
    pub sandbox: SecretBytes,
    pub wechat_merchant: RsaVerifier,
    pub wechat_merchant_serial: String,
    pub wechat_platform_key_id: String,
    /// The key WeChat signs answers and notifications with now, and the serial it announces
    /// (`PUB_KEY_ID_…` in public-key mode, a certificate serial in certificate mode).
    pub wechat_signing: Mutex<WechatSigning>,
    /// The platform certificates `GET /v3/certificates` lists (old and new overlap on rotation).
    pub wechat_certificates: Mutex<Vec<PlatformCertificate>>,
    pub wechat_apiv3: SecretBytes,
    pub alipay_app: RsaVerifier,
    pub alipay_platform: RsaSigner,
    pub unionpay_merchant: RsaVerifier,
    pub unionpay_merchant_cert_id: String,
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

impl SimKeys {
    pub fn load_or_generate(dir: &Path) -> std::io::Result<Self> {
        let sandbox = hex::decode(
            load_or(&dir.join("sandbox.key"), || {
                hex::encode(SecretBytes::random32().expose())
            })?
            .trim(),
        )
        .map_err(std::io::Error::other)?;
        let wechat_merchant = rsa(&dir.join("wechatpay_merchant_key.pem"))?;
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
        let apiv3 = load_or(&dir.join("wechatpay_apiv3.key"), || nonce(32))?;
        let ids = load_or(&dir.join("wechatpay_ids"), || {
            format!("{}\nPUB_KEY_ID_0119{}\n", nonce(40), nonce(20))
        })?;
        let mut ids = ids.lines();
        let merchant_serial = ids.next().unwrap_or_default().to_owned();
        let platform_key_id = ids.next().unwrap_or_default().to_owned();
        let alipay_app = rsa(&dir.join("alipay_app_private_key.pem"))?;
        let alipay_platform = rsa(&dir.join("alipay_private_key.pem"))?;
        std::fs::write(
            dir.join("alipay_public_key.pem"),
            alipay_platform.public_key_pem(),
        )?;
        let unionpay = unionpay_pki(dir)?;
        Ok(SimKeys {
            sandbox: SecretBytes::new(sandbox),
            wechat_merchant: wechat_merchant.verifier(),
            wechat_merchant_serial: merchant_serial,
            wechat_platform_key_id: platform_key_id.clone(),
            wechat_signing: Mutex::new(WechatSigning {
                key: wechat_platform,
                serial: platform_key_id,
            }),
            wechat_certificates: Mutex::new(vec![first_cert]),
            wechat_apiv3: SecretBytes::new(apiv3.trim().as_bytes().to_vec()),
            alipay_app: alipay_app.verifier(),
            alipay_platform,
            unionpay_merchant: unionpay.0,
            unionpay_merchant_cert_id: unionpay.1,
            unionpay_sign: unionpay.2,
            unionpay_sign_cert: unionpay.3,
        })
    }

    /// The `channels.toml` a payonce server reads to talk to this simulator at `base`.
    pub fn channels_toml(&self, base: &str) -> String {
        format!(
            "# Written by `payonce sim`: the simulated channels and the merchant's keys for them.\n\
             [sandbox]\ngateway = \"{base}\"\nkey_file = \"sandbox.key\"\n\n\
             [wechatpay]\ngateway = \"{base}\"\nmchid = \"{WECHAT_MCHID}\"\nappid = \"{WECHAT_APPID}\"\n\
             merchant_serial_no = \"{}\"\nmerchant_key_file = \"wechatpay_merchant_key.pem\"\n\
             apiv3_key_file = \"wechatpay_apiv3.key\"\nplatform_public_key_file = \"wechatpay_platform_public_key.pem\"\n\
             platform_public_key_id = \"{}\"\n\n\
             [alipay]\ngateway = \"{base}/gateway.do\"\napp_id = \"{ALIPAY_APP_ID}\"\n\
             app_private_key_file = \"alipay_app_private_key.pem\"\nalipay_public_key_file = \"alipay_public_key.pem\"\n\n\
             [unionpay]\ngateway = \"{base}\"\nmer_id = \"{UNIONPAY_MER_ID}\"\nsign_key_file = \"unionpay_merchant_key.pem\"\n\
             sign_cert_file = \"unionpay_merchant_cert.pem\"\nroot_cert_file = \"unionpay_root.pem\"\n\
             middle_cert_file = \"unionpay_middle.pem\"\n",
            self.wechat_merchant_serial, self.wechat_platform_key_id
        )
    }
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
