//! Key material that never prints: `Debug` shows a placeholder, so a stray `{:?}` in a log
//! line cannot leak a channel key.

use std::fmt;

#[derive(Clone)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// 32 fresh random bytes from the system's CSPRNG.
    pub fn random32() -> Self {
        let mut b = vec![0u8; 32];
        aws_lc_rs::rand::fill(&mut b).expect("system randomness");
        SecretBytes(b)
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBytes(<redacted>)")
    }
}
