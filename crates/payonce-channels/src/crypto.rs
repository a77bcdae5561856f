//! RSA and PEM helpers the channel protocols share: SHA256withRSA (PKCS#1 v1.5) signing and
//! verification, PEM (PKCS#8, PKCS#1, SPKI, X.509) decoding, and key generation for the
//! simulator. All on aws-lc-rs (the `rsa` crate has an unfixed timing attack, RUSTSEC-2023-0071).

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{self, KeyPair as _, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM block")]
    NotPem,
    #[error("unsupported PEM label {0}")]
    Label(String),
    #[error("key rejected: {0}")]
    Rejected(String),
    #[error("certificate: {0}")]
    Certificate(String),
}

/// Decodes the first PEM block: (label, DER). Also accepts a bare base64 body (Alipay's
/// console hands keys out that way).
pub fn pem_decode(text: &str) -> Result<(String, Vec<u8>), KeyError> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix("-----BEGIN ") {
        let (label, rest) = rest.split_once("-----").ok_or(KeyError::NotPem)?;
        let end = format!("-----END {label}-----");
        let body = rest.split(&end).next().ok_or(KeyError::NotPem)?;
        let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let der = STANDARD.decode(b64).map_err(|_| KeyError::NotPem)?;
        Ok((label.to_owned(), der))
    } else {
        let b64: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let der = STANDARD.decode(b64).map_err(|_| KeyError::NotPem)?;
        Ok((String::new(), der))
    }
}

pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// An RSA private key that signs SHA256withRSA. Never printed.
pub struct RsaSigner(KeyPair);

impl fmt::Debug for RsaSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RsaSigner(<redacted>)")
    }
}

impl RsaSigner {
    /// PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or a bare base64 body of either.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let (label, der) = pem_decode(text)?;
        let key = match label.as_str() {
            "PRIVATE KEY" => KeyPair::from_pkcs8(&der),
            "RSA PRIVATE KEY" => KeyPair::from_der(&der),
            "" => KeyPair::from_pkcs8(&der).or_else(|_| KeyPair::from_der(&der)),
            other => return Err(KeyError::Label(other.into())),
        };
        key.map(RsaSigner)
            .map_err(|e| KeyError::Rejected(e.to_string()))
    }

    pub fn generate() -> Self {
        RsaSigner(KeyPair::generate(KeySize::Rsa2048).expect("RSA key generation"))
    }

    pub fn to_pkcs8_pem(&self) -> String {
        let der: Pkcs8V1Der = self.0.as_der().expect("PKCS#8 export");
        pem_encode("PRIVATE KEY", der.as_ref())
    }

    pub fn pkcs8_der(&self) -> Vec<u8> {
        let der: Pkcs8V1Der = self.0.as_der().expect("PKCS#8 export");
        der.as_ref().to_vec()
    }

    pub fn public_key_pem(&self) -> String {
        let der: PublicKeyX509Der = self.0.public_key().as_der().expect("SPKI export");
        pem_encode("PUBLIC KEY", der.as_ref())
    }

    pub fn verifier(&self) -> RsaVerifier {
        RsaVerifier(self.0.public_key().as_ref().to_vec())
    }

    /// SHA256withRSA, PKCS#1 v1.5. A private-key operation takes about a millisecond of CPU
    /// (0.8 ms for RSA-2048 on the 2-core machine): on a multi-threaded runtime the worker hands
    /// its other tasks to another thread first (`block_in_place`), so a burst of signed channel
    /// calls does not stall requests queued behind it on the same worker. (Verifying is a
    /// public-key operation, ~20 µs: cheaper than any hand-off, done in place.)
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let sign = || {
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let mut sig = vec![0u8; self.0.public_modulus_len()];
            self.0
                .sign(&signature::RSA_PKCS1_SHA256, &rng, msg, &mut sig)
                .expect("RSA signing");
            sig
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) if rt.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(sign)
            }
            // A current-thread runtime (tests) has no other worker to hand off to.
            _ => sign(),
        }
    }

    pub fn sign_b64(&self, msg: &[u8]) -> String {
        STANDARD.encode(self.sign(msg))
    }
}

/// An RSA public key that verifies SHA256withRSA.
#[derive(Clone)]
pub struct RsaVerifier(Vec<u8>);

impl fmt::Debug for RsaVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RsaVerifier")
    }
}

impl RsaVerifier {
    /// SPKI (`PUBLIC KEY`), PKCS#1 (`RSA PUBLIC KEY`), a certificate, or a bare base64 SPKI.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let (label, der) = pem_decode(text)?;
        match label.as_str() {
            "PUBLIC KEY" | "RSA PUBLIC KEY" | "" => Self::from_der(&der),
            "CERTIFICATE" => Ok(Certificate::from_der(&der)?.verifier),
            other => Err(KeyError::Label(other.into())),
        }
    }

    pub fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        aws_lc_rs::rsa::PublicKey::from_der(der).map_err(|e| KeyError::Rejected(e.to_string()))?;
        Ok(RsaVerifier(der.to_vec()))
    }

    /// SHA-256 of the key as it was given (hex): what an operator compares with the channel's
    /// console. A public key's fingerprint reveals nothing secret.
    pub fn fingerprint(&self) -> String {
        sha256_hex(&self.0)
    }

    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &self.0)
            .verify(msg, sig)
            .is_ok()
    }

    /// Verifies a base64 signature; malformed base64 is simply a failed verification.
    pub fn verify_b64(&self, msg: &[u8], sig_b64: &str) -> bool {
        let cleaned: String = sig_b64.chars().filter(|c| !c.is_whitespace()).collect();
        STANDARD
            .decode(cleaned)
            .is_ok_and(|sig| self.verify(msg, &sig))
    }
}

/// The parts of an X.509 certificate the protocols use.
#[derive(Debug, Clone)]
pub struct Certificate {
    /// Serial number, upper-case hex without leading zeros (WeChat's `Wechatpay-Serial`).
    pub serial_hex: String,
    /// Serial number in decimal (UnionPay's `certId`).
    pub serial_decimal: String,
    pub subject: String,
    /// The subject's first CN, decoded (UnionPay's owner is its third `@` field).
    pub common_name: Option<String>,
    pub issuer: String,
    pub not_before: i64,
    pub not_after: i64,
    pub verifier: RsaVerifier,
    tbs: Vec<u8>,
    signature: Vec<u8>,
    /// How the issuer signed it: UnionPay's CFCA chain still uses SHA1withRSA.
    signature_algorithm: CertSignature,
    der: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CertSignature {
    RsaSha256,
    RsaSha1,
    Other,
}

impl Certificate {
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let (label, der) = pem_decode(text)?;
        if label != "CERTIFICATE" {
            return Err(KeyError::Label(label));
        }
        Self::from_der(&der)
    }

    pub fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| KeyError::Certificate(e.to_string()))?;
        let spki = cert.public_key().raw;
        Ok(Certificate {
            serial_hex: format!("{:X}", cert.serial),
            serial_decimal: cert.serial.to_string(),
            subject: cert.subject().to_string(),
            // Some CAs encode the CN as a T61String, which `as_str` declines: read its bytes.
            common_name: cert.subject().iter_common_name().next().map(|cn| {
                cn.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|_| String::from_utf8_lossy(cn.attr_value().data).into_owned())
            }),
            issuer: cert.issuer().to_string(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            verifier: RsaVerifier::from_der(spki)?,
            tbs: cert.tbs_certificate.as_ref().to_vec(),
            signature_algorithm: match cert.signature_algorithm.algorithm.to_id_string().as_str() {
                "1.2.840.113549.1.1.11" => CertSignature::RsaSha256,
                // sha1WithRSAEncryption: only for checking certificate chains (CFCA's test and
                // production UnionPay chains are SHA-1 signed); never for messages.
                "1.2.840.113549.1.1.5" => CertSignature::RsaSha1,
                _ => CertSignature::Other,
            },
            signature: cert.signature_value.data.to_vec(),
            der: der.to_vec(),
        })
    }

    /// Whether `issuer` signed this certificate (SHA256withRSA) and it is valid at `now_secs`.
    pub fn issued_by(&self, issuer: &Certificate, now_secs: i64) -> bool {
        let algorithm: &dyn signature::VerificationAlgorithm = match self.signature_algorithm {
            CertSignature::RsaSha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            CertSignature::RsaSha1 => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            CertSignature::Other => return false,
        };
        self.issuer == issuer.subject
            && UnparsedPublicKey::new(algorithm, &issuer.verifier.0)
                .verify(&self.tbs, &self.signature)
                .is_ok()
            && self.not_before <= now_secs
            && now_secs <= self.not_after
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }
}

/// Loads the signing key and its certificate from a PKCS#12 file (UnionPay's `.pfx`).
pub fn load_pkcs12(der: &[u8], password: &str) -> Result<(RsaSigner, Certificate), KeyError> {
    let store = p12_keystore::KeyStore::from_pkcs12(
        der,
        password,
        p12_keystore::Pkcs12ImportPolicy::Relaxed,
    )
    .map_err(|e| KeyError::Rejected(format!("PKCS#12: {e}")))?;
    let (_, chain) = store
        .private_key_chain()
        .ok_or_else(|| KeyError::Rejected("PKCS#12 holds no private key".into()))?;
    let key = aws_lc_rs::rsa::KeyPair::from_pkcs8(chain.key().as_der())
        .map_err(|e| KeyError::Rejected(e.to_string()))?;
    let cert = chain
        .certs()
        .first()
        .ok_or_else(|| KeyError::Rejected("PKCS#12 holds no certificate".into()))?;
    Ok((RsaSigner(key), Certificate::from_der(cert.as_der())?))
}

pub fn b64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    STANDARD.decode(s.trim()).ok()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref())
}

/// Random alphanumeric string (nonces).
pub fn nonce(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut b = vec![0u8; len];
    aws_lc_rs::rand::fill(&mut b).expect("system randomness");
    b.iter()
        .map(|x| ALPHABET[*x as usize % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_pem_round_trip() {
        let k = RsaSigner::generate();
        let sig = k.sign_b64(b"hello");
        let v = RsaVerifier::from_pem(&k.public_key_pem()).unwrap();
        assert!(v.verify_b64(b"hello", &sig));
        assert!(!v.verify_b64(b"hellO", &sig));
        assert!(!v.verify_b64(b"hello", "not base64!"));
        let k2 = RsaSigner::from_pem(&k.to_pkcs8_pem()).unwrap();
        assert!(v.verify_b64(b"x", &k2.sign_b64(b"x")));
        assert!(format!("{k:?}").contains("redacted"));
    }
}
