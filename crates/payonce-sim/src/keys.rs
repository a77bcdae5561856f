//! Key material of one simulator state dir: generated on first start, reused afterwards so a
//! running payonce keeps trusting a restarted simulator. Files named `*_merchant_*` /
//! `*_app_*` are the merchant's side (payonce reads them); the rest are the channel's own.

use payonce_channels::crypto::{RsaSigner, RsaVerifier, nonce};
use payonce_channels::secret::SecretBytes;
use std::path::Path;

pub const WECHAT_MCHID: &str = "1900000001";
pub const WECHAT_APPID: &str = "wxd678efh567hg6787";
pub const ALIPAY_APP_ID: &str = "2021000000000001";

pub struct SimKeys {
    pub sandbox: SecretBytes,
    pub wechat_merchant: RsaVerifier,
    pub wechat_merchant_serial: String,
    pub wechat_platform: RsaSigner,
    pub wechat_platform_key_id: String,
    pub wechat_apiv3: SecretBytes,
    pub alipay_app: RsaVerifier,
    pub alipay_platform: RsaSigner,
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
        let sandbox = hex::decode(load_or(&dir.join("sandbox.key"), || hex::encode(SecretBytes::random32().expose()))?.trim())
            .map_err(std::io::Error::other)?;
        let wechat_merchant = rsa(&dir.join("wechatpay_merchant_key.pem"))?;
        let wechat_platform = rsa(&dir.join("wechatpay_platform_key.pem"))?;
        std::fs::write(dir.join("wechatpay_platform_public_key.pem"), wechat_platform.public_key_pem())?;
        let apiv3 = load_or(&dir.join("wechatpay_apiv3.key"), || nonce(32))?;
        let ids = load_or(&dir.join("wechatpay_ids"), || format!("{}\nPUB_KEY_ID_0119{}\n", nonce(40), nonce(20)))?;
        let mut ids = ids.lines();
        let alipay_app = rsa(&dir.join("alipay_app_private_key.pem"))?;
        let alipay_platform = rsa(&dir.join("alipay_private_key.pem"))?;
        std::fs::write(dir.join("alipay_public_key.pem"), alipay_platform.public_key_pem())?;
        Ok(SimKeys {
            sandbox: SecretBytes::new(sandbox),
            wechat_merchant: wechat_merchant.verifier(),
            wechat_merchant_serial: ids.next().unwrap_or_default().to_owned(),
            wechat_platform_key_id: ids.next().unwrap_or_default().to_owned(),
            wechat_platform: wechat_platform,
            wechat_apiv3: SecretBytes::new(apiv3.trim().as_bytes().to_vec()),
            alipay_app: alipay_app.verifier(),
            alipay_platform,
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
             app_private_key_file = \"alipay_app_private_key.pem\"\nalipay_public_key_file = \"alipay_public_key.pem\"\n",
            self.wechat_merchant_serial, self.wechat_platform_key_id
        )
    }
}
