//! Yuan strings ↔ fen, exactly: Alipay and UnionPay speak decimal strings, payonce speaks
//! integer fen. No floating point anywhere on this path.

/// `1234` → `"12.34"`; `5` → `"0.05"`.
pub fn fen_to_yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let a = fen.unsigned_abs();
    format!("{sign}{}.{:02}", a / 100, a % 100)
}

/// `"12.34"` → `1234`; `"12.3"` → `1230`; `"12"` → `1200`. Refuses more than two decimals,
/// signs, exponents and anything else a float parser would forgive.
pub fn yuan_to_fen(s: &str) -> Option<i64> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if int.is_empty()
        || int.len() > 12
        || frac.len() > 2
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    if s.ends_with('.') {
        return None;
    }
    let int: i64 = int.parse().ok()?;
    let frac: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<2}").parse().ok()?
    };
    int.checked_mul(100)?.checked_add(frac)
}

/// A fee as bills write it, to five decimals of a yuan (WeChat: `0.00060`, `-0.01000` on a
/// refund; Alipay: `0.06`) → thousandths of a fen, exactly: `"0.00060"` → `60`, `"-0.06"` →
/// `-6000`. WeChat's fee column is finer than a fen, so fees are kept at the bill's precision.
pub fn yuan_to_millifen(s: &str) -> Option<i64> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty()
        || int.len() > 12
        || frac.len() > 5
        || s.ends_with('.')
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let v = int
        .parse::<i64>()
        .ok()?
        .checked_mul(100_000)?
        .checked_add(if frac.is_empty() {
            0
        } else {
            format!("{frac:0<5}").parse().ok()?
        })?;
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fees_keep_the_bills_precision() {
        assert_eq!(yuan_to_millifen("0.00060"), Some(60));
        assert_eq!(yuan_to_millifen("-0.01000"), Some(-1000));
        assert_eq!(yuan_to_millifen("0.06"), Some(6000));
        assert_eq!(yuan_to_millifen("12"), Some(1_200_000));
        for bad in ["", "-", ".5", "1.", "0.000001", "1e3", "+1", "--1", "0x1"] {
            assert_eq!(yuan_to_millifen(bad), None, "{bad}");
        }
    }

    #[test]
    fn known_values() {
        assert_eq!(fen_to_yuan(1234), "12.34");
        assert_eq!(fen_to_yuan(5), "0.05");
        assert_eq!(fen_to_yuan(100), "1.00");
        assert_eq!(yuan_to_fen("12.3"), Some(1230));
        assert_eq!(yuan_to_fen("0.01"), Some(1));
        assert_eq!(yuan_to_fen("88.88"), Some(8888));
        for bad in [
            "", ".5", "1.", "1.234", "-1", "1e2", "+1", " 1", "1,00", "0x10",
        ] {
            assert_eq!(yuan_to_fen(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn round_trips_exactly(fen in 0i64..=1_000_000_000_000) {
            prop_assert_eq!(yuan_to_fen(&fen_to_yuan(fen)), Some(fen));
        }

        #[test]
        fn unionpay_txn_amt_round_trips(fen in 1i64..=1_000_000_000) {
            // UnionPay's txnAmt is fen as a plain integer string.
            prop_assert_eq!(fen.to_string().parse::<i64>().ok(), Some(fen));
        }
    }
}
