//! Hashing, secret generation and the at-rest encryption of webhook secrets.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use std::fmt;

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data).as_ref())
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    aws_lc_rs::rand::fill(&mut b).expect("system randomness");
    b
}

/// 256 random bits, URL-safe: console session ids and CSRF tokens.
pub fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// A new app API secret: 256 random bits. Only its SHA-256 is stored.
pub fn new_app_secret() -> String {
    format!("sk_{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()))
}

/// A new Standard Webhooks signing secret (`whsec_` + base64 of 32 random bytes).
pub fn new_webhook_secret() -> String {
    format!("whsec_{}", STANDARD.encode(random_bytes::<32>()))
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("master key must be 64 hex characters (32 bytes)")]
    Malformed,
    #[error("cannot read or create the master key file {0}: {1}")]
    Io(String, std::io::Error),
    #[error("ciphertext does not decrypt with this master key")]
    Decrypt,
}

/// The key that encrypts secrets payonce must be able to read back (webhook signing secrets,
/// channel accounts' data keys). Every instance of one deployment needs the same one.
pub struct MasterKey {
    key: LessSafeKey,
    /// Names the key without revealing it (what sealed rows record, so a rotation knows which
    /// rows it has re-wrapped): 16 hex of SHA-256 over a label and the key.
    id: String,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    pub fn from_hex(hexkey: &str) -> Result<Self, KeyError> {
        let bytes = hex::decode(hexkey.trim()).map_err(|_| KeyError::Malformed)?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| KeyError::Malformed)?;
        let mut labelled = b"payonce master key id\n".to_vec();
        labelled.extend_from_slice(&bytes);
        let id = sha256_hex(&labelled)[..16].to_owned();
        Ok(MasterKey {
            key: LessSafeKey::new(key),
            id,
        })
    }

    /// The key's id (not secret): sealed rows name the key that wraps them.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn random() -> (Self, String) {
        let hexkey = hex::encode(random_bytes::<32>());
        (Self::from_hex(&hexkey).expect("fresh key is valid"), hexkey)
    }

    /// Reads the key file, creating it (mode 0600) with a fresh key if it does not exist.
    pub fn load_or_create(path: &std::path::Path) -> Result<Self, KeyError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_hex(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (key, hexkey) = Self::random();
                use std::io::Write;
                #[cfg(unix)]
                use std::os::unix::fs::OpenOptionsExt;
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                opts.mode(0o600);
                match opts.open(path) {
                    Ok(mut f) => {
                        f.write_all(hexkey.as_bytes())
                            .map_err(|e| KeyError::Io(path.display().to_string(), e))?;
                        Ok(key)
                    }
                    // Another process created it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::load_or_create(path)
                    }
                    Err(e) => Err(KeyError::Io(path.display().to_string(), e)),
                }
            }
            Err(e) => Err(KeyError::Io(path.display().to_string(), e)),
        }
    }

    /// `v1:` + base64(nonce ‖ ciphertext ‖ tag). `context` (e.g. the app id) is bound as
    /// associated data, so a ciphertext copied to another row does not decrypt.
    pub fn encrypt(&self, plaintext: &str, context: &str) -> String {
        let nonce_bytes = random_bytes::<NONCE_LEN>();
        let mut buf = plaintext.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .expect("AES-GCM seal cannot fail for small inputs");
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&buf);
        format!("v1:{}", STANDARD.encode(out))
    }

    /// Like `encrypt`, as a URL-safe token (base64url, no padding, no prefix): a capability
    /// that names what it grants (a checkout link), unreadable and unforgeable without the key.
    pub fn seal_token(&self, plaintext: &str, context: &str) -> String {
        let sealed = self.encrypt(plaintext, context);
        let raw = STANDARD.decode(&sealed[3..]).expect("just encoded");
        URL_SAFE_NO_PAD.encode(raw)
    }

    pub fn open_token(&self, token: &str, context: &str) -> Result<String, KeyError> {
        let raw = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| KeyError::Decrypt)?;
        self.decrypt(&format!("v1:{}", STANDARD.encode(raw)), context)
    }

    pub fn decrypt(&self, sealed: &str, context: &str) -> Result<String, KeyError> {
        let raw = sealed.strip_prefix("v1:").ok_or(KeyError::Decrypt)?;
        let raw = STANDARD.decode(raw).map_err(|_| KeyError::Decrypt)?;
        if raw.len() < NONCE_LEN {
            return Err(KeyError::Decrypt);
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let mut buf = ct.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeyError::Decrypt)?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| KeyError::Decrypt)?;
        String::from_utf8(plain.to_vec()).map_err(|_| KeyError::Decrypt)
    }
}

/// A channel account's secrets as the database keeps them: the account sealed under its own
/// data key, the data key wrapped by the master key, and the master key's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedAccount {
    pub sealed: String,
    pub data_key_enc: String,
    pub master_key_id: String,
}

/// What binds a sealed account to its row: a ciphertext copied to another account's row does
/// not open.
fn account_context(channel: &str, name: &str) -> String {
    format!("channel_account:{channel}:{name}")
}

/// Seals an account's key material (its JSON) under a fresh data key of its own.
pub fn seal_account(master: &MasterKey, channel: &str, name: &str, plain: &str) -> SealedAccount {
    let context = account_context(channel, name);
    let (data_key, data_key_hex) = MasterKey::random();
    SealedAccount {
        sealed: data_key.encrypt(plain, &context),
        data_key_enc: master.encrypt(&data_key_hex, &context),
        master_key_id: master.id().to_owned(),
    }
}

/// Opens a sealed account with the master key that wrapped it (`previous` during a rotation).
pub fn open_account(
    keys: &[&MasterKey],
    channel: &str,
    name: &str,
    s: &SealedAccount,
) -> Result<String, KeyError> {
    let context = account_context(channel, name);
    let master = keys
        .iter()
        .find(|k| k.id() == s.master_key_id)
        .ok_or(KeyError::Decrypt)?;
    let data_key = MasterKey::from_hex(&master.decrypt(&s.data_key_enc, &context)?)?;
    data_key.decrypt(&s.sealed, &context)
}

/// The data key re-wrapped by `new` (the sealed account itself is untouched).
pub fn rewrap_account(
    old: &MasterKey,
    new: &MasterKey,
    channel: &str,
    name: &str,
    s: &SealedAccount,
) -> Result<SealedAccount, KeyError> {
    let context = account_context(channel, name);
    let data_key_hex = old.decrypt(&s.data_key_enc, &context)?;
    Ok(SealedAccount {
        sealed: s.sealed.clone(),
        data_key_enc: new.encrypt(&data_key_hex, &context),
        master_key_id: new.id().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_account_opens_with_its_master_key_only_and_survives_a_rotation() {
        let (old, _) = MasterKey::random();
        let (new, _) = MasterKey::random();
        let plain = r#"{"channel":"sandbox","gateway":"http://x","key_hex":"00"}"#;
        let s = seal_account(&old, "sandbox", "a", plain);
        assert!(!s.sealed.contains("key_hex") && !s.data_key_enc.contains("key_hex"));
        assert_eq!(s.master_key_id, old.id());
        assert_eq!(open_account(&[&old], "sandbox", "a", &s).unwrap(), plain);
        assert!(
            open_account(&[&new], "sandbox", "a", &s).is_err(),
            "another master key"
        );
        assert!(
            open_account(&[&old], "sandbox", "b", &s).is_err(),
            "another account's row"
        );
        let r = rewrap_account(&old, &new, "sandbox", "a", &s).unwrap();
        assert_eq!(r.sealed, s.sealed, "the account itself is not re-encrypted");
        assert_eq!(open_account(&[&new], "sandbox", "a", &r).unwrap(), plain);
        assert!(open_account(&[&old], "sandbox", "a", &r).is_err());
        assert_ne!(old.id(), new.id());
    }

    #[test]
    fn webhook_secrets_round_trip_and_bind_context() {
        let (k, _) = MasterKey::random();
        let sealed = k.encrypt("whsec_abc", "app_1");
        assert!(!sealed.contains("whsec_abc"));
        assert_eq!(k.decrypt(&sealed, "app_1").unwrap(), "whsec_abc");
        assert!(k.decrypt(&sealed, "app_2").is_err());
        let (other, _) = MasterKey::random();
        assert!(other.decrypt(&sealed, "app_1").is_err());
    }

    #[test]
    fn secrets_are_distinct_and_shaped() {
        let a = new_app_secret();
        assert!(a.starts_with("sk_") && a.len() > 40);
        assert_ne!(a, new_app_secret());
        assert!(new_webhook_secret().starts_with("whsec_"));
    }
}
