//! Payer identifiers in stored channel messages: what the console shows of them. A message is
//! JSON (WeChat's decrypted resource, the sandbox) or a form (Alipay, UnionPay); every value
//! under a payer-identifying key is masked, wherever it sits, and a message that is neither
//! is not shown at all (it could hold anything).

/// Keys whose values identify a payer: WeChat `openid` / `sp_openid` / `sub_openid`, Alipay
/// `buyer_id` / `buyer_logon_id` / `buyer_user_id` / `buyer_open_id`, UnionPay `accNo` (card
/// number), `customerInfo`, `payCardNo`, `phoneNo`.
const PAYER_KEYS: &[&str] = &[
    "openid",
    "sp_openid",
    "sub_openid",
    "buyer_id",
    "buyer_logon_id",
    "buyer_user_id",
    "buyer_open_id",
    "accno",
    "customerinfo",
    "paycardno",
    "phoneno",
];

fn is_payer_key(k: &str) -> bool {
    PAYER_KEYS.contains(&k.to_ascii_lowercase().as_str())
}

/// `o4GgauInH_RCEdvrrNGrntXDuXXX` → `o4G****XX`; short values lose everything.
pub fn mask_value(v: &str) -> String {
    let chars: Vec<char> = v.chars().collect();
    if chars.len() < 8 {
        return "****".into();
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}****{tail}")
}

fn mask_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if is_payer_key(k) {
                    *v = match v {
                        serde_json::Value::String(s) => serde_json::Value::String(mask_value(s)),
                        serde_json::Value::Null => serde_json::Value::Null,
                        _ => serde_json::Value::String("****".into()),
                    };
                } else {
                    mask_json(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(mask_json),
        _ => {}
    }
}

/// The message with every payer identifier masked, pretty-printed when JSON; `None` when the
/// message is neither JSON nor a form.
pub fn masked(content: &str) -> Option<String> {
    let trimmed = content.trim();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let mut v: serde_json::Value = serde_json::from_str(trimmed).ok()?;
        mask_json(&mut v);
        return serde_json::to_string_pretty(&v).ok();
    }
    if trimmed.is_empty() || trimmed.contains(char::is_whitespace) || !trimmed.contains('=') {
        return None;
    }
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(trimmed.as_bytes()) {
        let v = if is_payer_key(&k) {
            mask_value(&v)
        } else {
            v.into_owned()
        };
        out.append_pair(&k, &v);
    }
    // One field a line: a form of forty fields is unreadable on one.
    Some(out.finish().replace('&', "\n&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_payer_ids_are_masked_at_any_depth() {
        let m = masked(r#"{"payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},"out_trade_no":"abc","amount":{"total":100}}"#).unwrap();
        assert!(m.contains("oUp****6o"), "{m}");
        assert!(!m.contains("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"));
        assert!(m.contains("\"out_trade_no\": \"abc\""));
    }

    #[test]
    fn form_payer_ids_are_masked_and_the_rest_kept() {
        let m = masked("buyer_logon_id=159****5620&buyer_id=2088102122524333&total_amount=88.88&accNo=6216261000000000018").unwrap();
        assert!(m.contains("buyer_id=208****33"), "{m}");
        assert!(m.contains("total_amount=88.88"));
        assert!(m.contains("accNo=621****18"));
        assert!(!m.contains("2088102122524333") && !m.contains("6216261000000000018"));
    }

    /// The fields of a masked form, read back as a form (it is shown one field a line).
    fn fields(masked_form: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(masked_form.replace("\n&", "&").as_bytes())
            .into_owned()
            .collect()
    }

    /// Every payer identifier in the channels' real messages (the vectors payonce-channels
    /// verifies byte for byte) is masked, and every other field kept as it came.
    #[test]
    fn the_channels_real_messages_are_masked() {
        let vectors = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../payonce-channels/tests/vectors");
        let read = |p: &str| {
            std::fs::read_to_string(vectors.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
        };
        let mut forms: Vec<(String, String)> = Vec::new();
        // Alipay's notifications, posted as forms.
        let alipay: serde_json::Value =
            serde_json::from_str(&read("alipay/notify_vectors.json")).unwrap();
        for v in alipay.as_array().unwrap() {
            let params = v["params"].as_object().unwrap();
            let form = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(
                    params
                        .iter()
                        .map(|(k, v)| (k, v.as_str().unwrap_or_default())),
                )
                .finish();
            forms.push((format!("alipay {}", v["name"]), form));
        }
        // UnionPay's notification, an ordinary form. (Its answers, whose values come unencoded
        // — a PEM certificate with its line breaks — are never kept with their content.)
        let notify: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&read(
            "unionpay/yansongda_pay/notify_fields_20220908132206.json",
        ))
        .unwrap();
        let form = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(
                notify
                    .iter()
                    .map(|(k, v)| (k, v.as_str().unwrap_or_default())),
            )
            .finish();
        forms.push(("unionpay notification".into(), form));

        let mut payer_fields = 0;
        for (name, form) in &forms {
            let original: Vec<(String, String)> = form_urlencoded::parse(form.as_bytes())
                .into_owned()
                .collect();
            let shown = fields(&masked(form).unwrap_or_else(|| panic!("{name} reads as a form")));
            assert_eq!(shown.len(), original.len(), "{name}: every field shown");
            for ((key, value), (shown_key, shown_value)) in original.iter().zip(&shown) {
                assert_eq!(key, shown_key, "{name}");
                if is_payer_key(key) {
                    payer_fields += 1;
                    assert_ne!(shown_value, value, "{name}: {key} is masked");
                    assert!(
                        shown_value.contains("****"),
                        "{name}: {key} = {shown_value}"
                    );
                } else {
                    assert_eq!(shown_value, value, "{name}: {key} kept");
                }
            }
        }
        // buyer_id and buyer_logon_id in Alipay's five payment notifications, accNo in UnionPay's.
        assert!(payer_fields >= 11, "{payer_fields} payer fields");
    }

    #[test]
    fn short_values_and_unreadable_messages_show_nothing() {
        assert_eq!(mask_value("abc"), "****");
        assert_eq!(masked("<xml>openid</xml>"), None);
        assert_eq!(masked("{not json"), None);
    }
}
