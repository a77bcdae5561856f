//! The Alipay wire format, shared by the connector and the simulator.

use crate::crypto::{RsaSigner, RsaVerifier};

/// `k=v&…` over the parameters sorted by key, without `sign` (and without the names in
/// `also_skip`). Values are used raw (not URL-encoded), empty ones included — exactly what the
/// official SDKs sign and verify.
pub fn sign_content(params: &[(String, String)], also_skip: &[&str]) -> String {
    let mut kv: Vec<&(String, String)> = params.iter().filter(|(k, _)| k != "sign" && !also_skip.contains(&k.as_str())).collect();
    kv.sort_by(|a, b| a.0.cmp(&b.0));
    kv.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

pub fn sign_params(signer: &RsaSigner, params: &[(String, String)]) -> String {
    signer.sign_b64(sign_content(params, &[]).as_bytes())
}

/// Verifies an asynchronous notification the way Alipay's own SDKs do: first over every
/// parameter but `sign`, with `sign_type` present (set to `RSA2` when absent); then, failing
/// that, without `sign_type`. Real notifications need both: some were signed one way, some the
/// other.
pub fn verify_notification(verifier: &RsaVerifier, params: &[(String, String)]) -> bool {
    let Some(sign) = params.iter().find(|(k, _)| k == "sign").map(|(_, v)| v.clone()) else { return false };
    let mut with_type: Vec<(String, String)> = params.to_vec();
    if !with_type.iter().any(|(k, _)| k == "sign_type") {
        with_type.push(("sign_type".into(), "RSA2".into()));
    }
    verifier.verify_b64(sign_content(&with_type, &[]).as_bytes(), &sign)
        || verifier.verify_b64(sign_content(params, &["sign_type"]).as_bytes(), &sign)
}

/// Finds the raw text of `"<name>": { … }` in a gateway answer: the exact bytes Alipay signed.
/// Brace matching skips over strings, so a `}` inside a value cannot end it early.
pub fn raw_response<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("\"{name}\"");
    let at = body.find(&key)? + key.len();
    let start = at + body[at..].find('{')?;
    let bytes = body.as_bytes();
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for (i, &c) in bytes.iter().enumerate().skip(start) {
        if in_str {
            match c {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            b'"' => in_str = true,
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&body[start..=i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// `alipay.trade.precreate` → `alipay_trade_precreate_response`.
pub fn response_name(method: &str) -> String {
    format!("{}_response", method.replace('.', "_"))
}

/// `yyyy-MM-dd HH:mm:ss` in Beijing time, Alipay's timestamp format.
pub fn beijing_time(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(time::macros::offset!(+8));
    t.format(&time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]")).unwrap()
}

pub fn parse_beijing_time(s: &str) -> Option<i64> {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let t = time::PrimitiveDateTime::parse(s, &fmt).ok()?.assume_offset(time::macros::offset!(+8));
    Some(t.unix_timestamp() * 1000)
}

pub use crate::form::{encode as encode_form, parse as parse_form};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_response_is_exact_and_string_aware() {
        let body = r#"{"alipay_trade_query_response":{"code":"10000","msg":"a}b{","x":{"y":1}},"sign":"abc"}"#;
        assert_eq!(raw_response(body, "alipay_trade_query_response"), Some(r#"{"code":"10000","msg":"a}b{","x":{"y":1}}"#));
        assert_eq!(raw_response(body, "nope"), None);
    }

    #[test]
    fn sign_and_verify_both_ways() {
        let k = RsaSigner::generate();
        let v = k.verifier();
        let mut p: Vec<(String, String)> = vec![("b".into(), "2".into()), ("a".into(), "1".into()), ("sign_type".into(), "RSA2".into())];
        // Signed without sign_type (the documented rule for notifications).
        let sig = k.sign_b64(sign_content(&p, &["sign_type"]).as_bytes());
        p.push(("sign".into(), sig));
        assert!(verify_notification(&v, &p));
        p[0].1 = "3".into();
        assert!(!verify_notification(&v, &p));
    }

    #[test]
    fn beijing_times() {
        assert_eq!(beijing_time(0), "1970-01-01 08:00:00");
        assert_eq!(parse_beijing_time("1970-01-01 08:00:00"), Some(0));
    }
}
