//! The UPACP 5.1.0 wire format, shared by the connector and the simulator.

use crate::crypto::{Certificate, RsaSigner, RsaVerifier, sha256_hex};

pub const VERSION: &str = "5.1.0";
/// The organisation UnionPay's signing certificates are issued to; a certificate for anyone
/// else is not UnionPay's, however well it chains.
pub const UNIONPAY_CN: &str = "中国银联股份有限公司";

/// `k=v&…` over the fields sorted by name, without `signature`.
pub fn sign_content(params: &[(String, String)]) -> String {
    let mut kv: Vec<&(String, String)> = params.iter().filter(|(k, _)| k != "signature").collect();
    kv.sort_by(|a, b| a.0.cmp(&b.0));
    kv.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// `signMethod=01`: the lower-case hex SHA-256 of the content is what gets RSA-signed.
pub fn digest(params: &[(String, String)]) -> String {
    sha256_hex(sign_content(params).as_bytes())
}

pub fn sign(signer: &RsaSigner, params: &[(String, String)]) -> String {
    signer.sign_b64(digest(params).as_bytes())
}

pub fn verify(verifier: &RsaVerifier, params: &[(String, String)]) -> bool {
    let Some(sig) = get(params, "signature") else { return false };
    verifier.verify_b64(digest(params).as_bytes(), sig)
}

pub fn get<'a>(params: &'a [(String, String)], k: &str) -> Option<&'a str> {
    params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

#[derive(Debug, PartialEq, Eq)]
pub enum CertError {
    Missing,
    Unparseable,
    /// Does not chain to the configured root (through the intermediate), or is expired.
    Untrusted,
    /// Chains, but is not issued to UnionPay.
    NotUnionpay,
}

/// Checks that a message's `signPubKeyCert` is a UnionPay signing certificate: it chains to
/// `root` (through `middle` when given), is in its validity period, and names UnionPay.
pub fn trusted_signer(params: &[(String, String)], root: &Certificate, middle: Option<&Certificate>, now_secs: i64) -> Result<Certificate, CertError> {
    let pem = get(params, "signPubKeyCert").ok_or(CertError::Missing)?;
    let cert = Certificate::from_pem(pem).map_err(|_| CertError::Unparseable)?;
    let chained = match middle {
        Some(m) => cert.issued_by(m, now_secs) && m.issued_by(root, now_secs),
        None => cert.issued_by(root, now_secs),
    };
    if !chained {
        return Err(CertError::Untrusted);
    }
    if !cert.subject.contains(UNIONPAY_CN) {
        return Err(CertError::NotUnionpay);
    }
    Ok(cert)
}

/// `yyyyMMddHHmmss` in Beijing time (txnTime, payTimeout).
pub fn txn_time(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(time::macros::offset!(+8));
    t.format(&time::macros::format_description!("[year][month][day][hour][minute][second]")).unwrap()
}

pub fn parse_txn_time(s: &str) -> Option<i64> {
    let fmt = time::macros::format_description!("[year][month][day][hour][minute][second]");
    let t = time::PrimitiveDateTime::parse(s, &fmt).ok()?.assume_offset(time::macros::offset!(+8));
    Some(t.unix_timestamp() * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txn_time_round_trips() {
        assert_eq!(txn_time(0), "19700101080000");
        assert_eq!(parse_txn_time("19700101080000"), Some(0));
    }

    #[test]
    fn sign_verify() {
        let k = RsaSigner::generate();
        let mut p: Vec<(String, String)> = vec![("txnAmt".into(), "100".into()), ("orderId".into(), "A1".into())];
        let s = sign(&k, &p);
        p.push(("signature".into(), s));
        assert!(verify(&k.verifier(), &p));
        p[0].1 = "101".into();
        assert!(!verify(&k.verifier(), &p));
    }
}
