//! The UPACP 5.1.0 wire format, shared by the connector and the simulator.

use crate::crypto::{Certificate, RsaSigner, RsaVerifier, sha256_hex};

pub const VERSION: &str = "5.1.0";
/// The organisation UnionPay's signing certificates are issued to: the third `@` field of the
/// certificate's CN (`041@8310000000083040@中国银联股份有限公司@00016495`). A certificate for
/// anyone else is not UnionPay's, however well it chains.
pub const UNIONPAY_OWNER: &str = "中国银联股份有限公司";
/// The owner older UnionPay TEST certificates carry; accepted only when an account opts in
/// (`accept_test_owner`), as the acp SDK does for the test environment.
pub const UNIONPAY_TEST_OWNER: &str = "00040000:SIGN";

/// Why a synchronous answer does not split into fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("answer is not UTF-8")]
    NotUtf8,
    /// The part (its first 40 characters).
    #[error("field without '=': {0:.40}")]
    NoEquals(String),
    #[error("bad field name {0:.40}")]
    BadName(String),
    #[error("empty answer")]
    Empty,
}

/// Splits a raw synchronous answer (`queryTrans.do`, `backTransReq.do`) into its fields.
///
/// These answers are NOT url-encoded: base64 values keep literal `+ / =`, `respMsg` is raw
/// UTF-8, `signPubKeyCert` is an inline PEM whose CRLFs are part of the signed string. Fields
/// are split as UnionPay's own acp SDK splits them (`SDKUtil.parseQString`): on the first `=`,
/// then on `&` unless inside a group a value opened with `{` (closed by the next `}`) or `[`
/// (closed by the next `]`) — a value such as `reserved={k=v&k2=v2}` or a `[…]` list may hold
/// `&` and `=`. Decoding them would change the bytes UnionPay signed.
pub fn parse_answer(body: &[u8]) -> Result<Vec<(String, String)>, AnswerError> {
    let text = std::str::from_utf8(body).map_err(|_| AnswerError::NotUtf8)?;
    let mut fields = Vec::new();
    let mut start = 0usize;
    let mut push = |part: &str| -> Result<(), AnswerError> {
        if part.is_empty() {
            return Ok(());
        }
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| AnswerError::NoEquals(part.chars().take(40).collect()))?;
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(AnswerError::BadName(k.chars().take(40).collect()));
        }
        fields.push((k.to_owned(), v.to_owned()));
        Ok(())
    };
    // As parseQString: grouping starts only in a value (after the field's first `=`), and a
    // group ends at the first closing character of its kind (groups do not nest).
    let (mut in_value, mut closer): (bool, Option<char>) = (false, None);
    for (i, c) in text.char_indices() {
        match (c, closer) {
            (_, Some(close)) if c == close => closer = None,
            (_, Some(_)) => {}
            ('=', None) if !in_value => in_value = true,
            ('{', None) if in_value => closer = Some('}'),
            ('[', None) if in_value => closer = Some(']'),
            ('&', None) => {
                push(&text[start..i])?;
                start = i + 1;
                in_value = false;
            }
            _ => {}
        }
    }
    push(&text[start..])?;
    if fields.is_empty() {
        return Err(AnswerError::Empty);
    }
    Ok(fields)
}

/// `k=v&…` over the fields sorted by name, without `signature`.
pub fn sign_content(params: &[(String, String)]) -> String {
    let mut kv: Vec<&(String, String)> = params.iter().filter(|(k, _)| k != "signature").collect();
    kv.sort_by(|a, b| a.0.cmp(&b.0));
    kv.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `signMethod=01`: the lower-case hex SHA-256 of the content is what gets RSA-signed.
pub fn digest(params: &[(String, String)]) -> String {
    sha256_hex(sign_content(params).as_bytes())
}

pub fn sign(signer: &RsaSigner, params: &[(String, String)]) -> String {
    signer.sign_b64(digest(params).as_bytes())
}

pub fn verify(verifier: &RsaVerifier, params: &[(String, String)]) -> bool {
    let Some(sig) = get(params, "signature") else {
        return false;
    };
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

/// Whether a certificate's CN names UnionPay as its owner: the third `@` field, exactly.
/// (`contains` would accept `假中国银联股份有限公司` or an owner field of someone else's
/// certificate that merely mentions UnionPay.)
pub fn owner_is_unionpay(cert: &Certificate, accept_test_owner: bool) -> bool {
    let Some(owner) = cert
        .common_name
        .as_deref()
        .and_then(|cn| cn.split('@').nth(2))
    else {
        return false;
    };
    owner == UNIONPAY_OWNER || (accept_test_owner && owner == UNIONPAY_TEST_OWNER)
}

/// Checks that a message's `signPubKeyCert` is a UnionPay signing certificate: it chains to
/// `root` (through `middle` when given), is in its validity period, and names UnionPay.
pub fn trusted_signer(
    params: &[(String, String)],
    root: &Certificate,
    middle: Option<&Certificate>,
    now_secs: i64,
    accept_test_owner: bool,
) -> Result<Certificate, CertError> {
    let pem = get(params, "signPubKeyCert").ok_or(CertError::Missing)?;
    let cert = Certificate::from_pem(pem).map_err(|_| CertError::Unparseable)?;
    let chained = match middle {
        Some(m) => cert.issued_by(m, now_secs) && m.issued_by(root, now_secs),
        None => cert.issued_by(root, now_secs),
    };
    if !chained {
        return Err(CertError::Untrusted);
    }
    if !owner_is_unionpay(&cert, accept_test_owner) {
        return Err(CertError::NotUnionpay);
    }
    Ok(cert)
}

/// `yyyyMMddHHmmss` in Beijing time (txnTime, payTimeout).
pub fn txn_time(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(time::macros::offset!(+8));
    t.format(&time::macros::format_description!(
        "[year][month][day][hour][minute][second]"
    ))
    .unwrap()
}

pub fn parse_txn_time(s: &str) -> Option<i64> {
    let fmt = time::macros::format_description!("[year][month][day][hour][minute][second]");
    let t = time::PrimitiveDateTime::parse(s, &fmt)
        .ok()?
        .assume_offset(time::macros::offset!(+8));
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
    fn raw_answers_keep_their_bytes() {
        let f = parse_answer(
            "a=x+y/z==&respMsg=成功[0000000]&reserved={k=v&k2=v2}&pem=-----BEGIN\r\nAB+/=\r\n"
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(get(&f, "a"), Some("x+y/z=="));
        assert_eq!(get(&f, "respMsg"), Some("成功[0000000]"));
        assert_eq!(get(&f, "reserved"), Some("{k=v&k2=v2}"));
        assert_eq!(get(&f, "pem"), Some("-----BEGIN\r\nAB+/=\r\n"));
        // A `[…]` value holds `&` and `=` too (acp SDK `parseQString` groups `{…}` and `[…]`).
        let f = parse_answer(
            "respCode=00&payCardList=[{a=1&b=2},{a=3}]&reserved=[x&y=z]&txnType=00".as_bytes(),
        )
        .unwrap();
        assert_eq!(get(&f, "payCardList"), Some("[{a=1&b=2},{a=3}]"));
        assert_eq!(get(&f, "reserved"), Some("[x&y=z]"));
        assert_eq!(get(&f, "txnType"), Some("00"));
        assert_eq!(f.len(), 4);
        assert!(parse_answer(b"").is_err());
        assert!(parse_answer(b"novalue").is_err());
        assert!(parse_answer(&[0xff, b'=', b'1']).is_err());
    }

    #[test]
    fn sign_verify() {
        let k = RsaSigner::generate();
        let mut p: Vec<(String, String)> = vec![
            ("txnAmt".into(), "100".into()),
            ("orderId".into(), "A1".into()),
        ];
        let s = sign(&k, &p);
        p.push(("signature".into(), s));
        assert!(verify(&k.verifier(), &p));
        p[0].1 = "101".into();
        assert!(!verify(&k.verifier(), &p));
    }
}
