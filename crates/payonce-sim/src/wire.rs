//! The simulator's own wire codecs, written from the channels' documents and NOT shared with
//! the connectors (only RSA, SHA-256 and AES-GCM primitives are): if a connector misreads a
//! format, the simulator disagrees with it and a test fails, instead of both agreeing on the
//! same bug.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use payonce_channels::crypto::{RsaSigner, RsaVerifier, sha256_hex};

/// `application/x-www-form-urlencoded`: what merchants post to Alipay and UnionPay, and what
/// both channels post as notifications. (The ecosystem's parser, not the connectors'.)
pub fn form_parse(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

pub fn form_encode(params: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish()
}

pub fn field<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `k=v&k=v` over the parameters sorted by name (byte order), leaving out `skip`: the string
/// both Alipay (RSA2) and UnionPay (signMethod=01) sign.
pub fn sorted_pairs(params: &[(String, String)], skip: &[&str]) -> String {
    let mut kv: Vec<&(String, String)> = params
        .iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .collect();
    kv.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = String::new();
    for (i, (k, v)) in kv.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

// ---- UnionPay (UPACP 5.1.0, signMethod=01) ----

/// UnionPay's signature: RSA-SHA256 over the ASCII of the lower-case hex SHA-256 of the sorted
/// string (everything but `signature`).
pub fn unionpay_sign(key: &RsaSigner, params: &[(String, String)]) -> String {
    key.sign_b64(sha256_hex(sorted_pairs(params, &["signature"]).as_bytes()).as_bytes())
}

pub fn unionpay_verify(key: &RsaVerifier, params: &[(String, String)]) -> bool {
    let Some(sig) = field(params, "signature") else {
        return false;
    };
    key.verify_b64(
        sha256_hex(sorted_pairs(params, &["signature"]).as_bytes()).as_bytes(),
        sig,
    )
}

/// A synchronous UnionPay answer as the gateway writes it: `k=v&…`, NOT url-encoded — base64
/// keeps `+ / =`, `respMsg` is raw UTF-8, the certificate PEM keeps its CRLFs.
pub fn unionpay_raw_answer(params: &[(String, String)]) -> String {
    sorted_pairs(params, &[])
}

/// `yyyyMMddHHmmss`, Beijing time.
pub fn unionpay_time(ms: i64) -> String {
    beijing(ms, "[year][month][day][hour][minute][second]")
}

pub fn parse_unionpay_time(s: &str) -> Option<i64> {
    if s.len() != 14 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    parse_beijing(s, "[year][month][day][hour][minute][second]")
}

// ---- Alipay (OpenAPI, RSA2) ----

/// Signs an answer's inner JSON and wraps it as Alipay does: `{"<name>":<inner>,"sign":"…"}`,
/// with every `/` escaped as `\/` inside the signed text (Alipay's gateway escapes slashes, and
/// the signature covers the escaped bytes).
pub fn alipay_answer(key: &RsaSigner, response_name: &str, inner: &serde_json::Value) -> String {
    let inner = inner.to_string().replace('/', "\\/");
    let sign = key.sign_b64(inner.as_bytes());
    format!("{{\"{response_name}\":{inner},\"sign\":\"{sign}\"}}")
}

/// The unsigned gateway error (`error_response`), e.g. for a missing method.
pub fn alipay_error_response(code: &str, msg: &str, sub_code: &str, sub_msg: &str) -> String {
    serde_json::json!({"error_response": {"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg}}).to_string()
}

/// `alipay.trade.precreate` → `alipay_trade_precreate_response`.
pub fn alipay_response_name(method: &str) -> String {
    format!("{}_response", method.replace('.', "_"))
}

/// `yyyy-MM-dd HH:mm:ss`, Beijing time.
pub fn alipay_time(ms: i64) -> String {
    beijing(ms, "[year]-[month]-[day] [hour]:[minute]:[second]")
}

pub fn parse_alipay_time(s: &str) -> Option<i64> {
    if s.len() != 19 {
        return None;
    }
    parse_beijing(s, "[year]-[month]-[day] [hour]:[minute]:[second]")
}

/// Alipay amounts: yuan with at most two decimals, `0.01` … `100000000.00`.
pub fn parse_yuan(s: &str) -> Option<i64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty()
        || int.len() > 9
        || !int.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 2
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    if int.len() > 1 && int.starts_with('0') {
        return None;
    }
    let fen = int.parse::<i64>().ok()? * 100 + format!("{frac:0<2}").parse::<i64>().ok()?;
    (1..=10_000_000_000).contains(&fen).then_some(fen)
}

pub fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", fen.abs() / 100, fen.abs() % 100)
}

/// `30m`, `2h`, `1d`, `1c` (`c`: until midnight, counted as a day here).
pub fn parse_alipay_timeout(s: &str) -> Option<i64> {
    let unit = s.chars().last()?;
    let n: i64 = s[..s.len() - 1].parse().ok().filter(|n| *n > 0)?;
    Some(
        n * match unit {
            'm' => 60_000,
            'h' => 3_600_000,
            'd' | 'c' => 86_400_000,
            _ => return None,
        },
    )
}

// ---- WeChat Pay v3 ----

/// What WeChat signs in an answer or notification: `timestamp\nnonce\nbody\n`.
pub fn wechat_answer_message(ts: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut m = format!("{ts}\n{nonce}\n").into_bytes();
    m.extend_from_slice(body);
    m.push(b'\n');
    m
}

/// What a merchant signs in a request: `METHOD\nPATH?QUERY\ntimestamp\nnonce\nbody\n`.
pub fn wechat_request_message(
    method: &str,
    path_and_query: &str,
    ts: &str,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut m = format!("{method}\n{path_and_query}\n{ts}\n{nonce}\n").into_bytes();
    m.extend_from_slice(body);
    m.push(b'\n');
    m
}

/// `WECHATPAY2-SHA256-RSA2048 mchid="…",nonce_str="…",signature="…",timestamp="…",serial_no="…"`.
pub fn parse_wechat_authorization(header: &str) -> Option<Vec<(String, String)>> {
    let rest = header.strip_prefix("WECHATPAY2-SHA256-RSA2048 ")?;
    let mut out = Vec::new();
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        let v = v.strip_prefix('"')?.strip_suffix('"')?;
        out.push((k.to_owned(), v.to_owned()));
    }
    Some(out)
}

/// AEAD_AES_256_GCM with the APIv3 key, as WeChat encrypts notification resources and platform
/// certificates: base64(ciphertext ‖ tag).
pub fn wechat_encrypt(
    apiv3_key: &[u8],
    nonce12: &str,
    associated_data: &str,
    plaintext: &[u8],
) -> String {
    let key =
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, apiv3_key).expect("a 32-byte APIv3 key"));
    let mut buf = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::try_assume_unique_for_key(nonce12.as_bytes()).expect("a 12-byte nonce"),
        Aad::from(associated_data.as_bytes()),
        &mut buf,
    )
    .expect("AES-GCM seal");
    STANDARD.encode(buf)
}

/// RFC 3339 with the +08:00 offset, WeChat's time format.
pub fn wechat_time(ms: i64) -> String {
    beijing(ms, "[year]-[month]-[day]T[hour]:[minute]:[second]+08:00")
}

pub fn parse_wechat_time(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp() * 1000)
}

// ---- time in Beijing ----

pub(crate) fn beijing(ms: i64, fmt: &str) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(time::UtcOffset::from_hms(8, 0, 0).expect("valid offset"));
    let fmt = time::format_description::parse_borrowed::<2>(fmt).expect("valid format");
    t.format(&fmt).expect("formattable")
}

fn parse_beijing(s: &str, fmt: &str) -> Option<i64> {
    let fmt = time::format_description::parse_borrowed::<2>(fmt).ok()?;
    let t = time::PrimitiveDateTime::parse(s, &fmt)
        .ok()?
        .assume_offset(time::UtcOffset::from_hms(8, 0, 0).ok()?);
    Some(t.unix_timestamp() * 1000)
}

/// The Beijing calendar date of an instant, `YYYY-MM-DD`.
pub fn beijing_date(ms: i64) -> String {
    beijing(ms, "[year]-[month]-[day]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_strict() {
        assert_eq!(parse_yuan("0.01"), Some(1));
        assert_eq!(parse_yuan("12.3"), Some(1230));
        assert_eq!(parse_yuan("100"), Some(10000));
        for bad in ["", ".5", "01.00", "1.234", "-1", "1e3", "0", "0.00", "1,00"] {
            assert_eq!(parse_yuan(bad), None, "{bad}");
        }
        assert_eq!(yuan(1), "0.01");
        assert_eq!(yuan(-1230), "-12.30");
    }

    #[test]
    fn times_round_trip() {
        assert_eq!(unionpay_time(0), "19700101080000");
        assert_eq!(parse_unionpay_time("19700101080000"), Some(0));
        assert_eq!(alipay_time(0), "1970-01-01 08:00:00");
        assert_eq!(parse_alipay_time("1970-01-01 08:00:00"), Some(0));
        assert_eq!(wechat_time(0), "1970-01-01T08:00:00+08:00");
        assert_eq!(parse_wechat_time("1970-01-01T08:00:00+08:00"), Some(0));
        assert_eq!(parse_alipay_timeout("90m"), Some(5_400_000));
        assert_eq!(parse_alipay_timeout("0m"), None);
    }

    #[test]
    fn alipay_answers_escape_slashes_inside_the_signed_text() {
        let k = RsaSigner::generate();
        let body = alipay_answer(
            &k,
            "x_response",
            &serde_json::json!({"qr_code": "https://qr.alipay.com/a"}),
        );
        assert!(body.contains("https:\\/\\/qr.alipay.com\\/a"));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["x_response"]["qr_code"], "https://qr.alipay.com/a");
    }
}
