//! The WeChat Pay trade bill (`GET /v3/bill/tradebill`, `bill_type=ALL`), as WeChat serves it
//! (layout: tests/vectors/wechatpay/BILL_LAYOUT.md): a header line, rows whose every cell starts
//! with a backtick, then a totals block checked against the rows. Real downloads may start with
//! a UTF-8 BOM and use CRLF; both are accepted. A row with a trade state WeChat does not
//! document is reported, not a reason to throw the whole day away.

use crate::money::yuan_to_fen;
use crate::{Statement, StatementKind, StatementLine};

pub const HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
pub const TOTALS_HEADER: &str = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额";

/// Parses a trade bill, checking its totals block against its rows.
pub fn parse(text: &str) -> Result<Statement, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
    if lines.next().map(str::trim) != Some(HEADER) {
        return Err("not a WeChat Pay trade bill (header)".into());
    }
    let cell = |s: &str| s.trim().strip_prefix('`').unwrap_or(s.trim()).to_owned();
    let mut out = Statement::default();
    let (mut rows, mut paid, mut refunded) = (0usize, 0i64, 0i64);
    while let Some(line) = lines.next() {
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with("总交易单数") {
            let totals: Vec<String> = lines.next().ok_or("missing totals")?.split(',').map(cell).collect();
            let count: usize = totals.first().and_then(|c| c.parse().ok()).ok_or("bad total count")?;
            let sum_paid = totals.get(1).and_then(|v| yuan_to_fen(v)).ok_or("bad paid total")?;
            let sum_refund = totals.get(2).and_then(|v| yuan_to_fen(v)).ok_or("bad refund total")?;
            if count != rows || sum_paid != paid || sum_refund != refunded {
                return Err(format!("totals block ({count} rows, {sum_paid}, {sum_refund}) disagrees with the rows ({rows}, {paid}, {refunded})"));
            }
            return Ok(out);
        }
        let f: Vec<String> = line.split(',').map(cell).collect();
        if f.len() < 27 {
            return Err(format!("short row: {line}"));
        }
        rows += 1;
        let amount_of = |i: usize| yuan_to_fen(&f[i]).ok_or_else(|| format!("bad amount {}", f[i]));
        match f[9].as_str() {
            "SUCCESS" => {
                let a = amount_of(12)?;
                paid += a;
                out.lines.push(StatementLine { kind: StatementKind::Payment, out_trade_no: f[6].clone(), channel_trade_no: Some(f[5].clone()), out_refund_no: None, amount: a, at: None });
            }
            "REFUND" => {
                let a = amount_of(16)?;
                refunded += a;
                out.lines.push(StatementLine { kind: StatementKind::Refund, out_trade_no: f[6].clone(), channel_trade_no: Some(f[5].clone()), out_refund_no: Some(f[15].clone()), amount: a, at: None });
            }
            other => {
                // Still counted in the totals as WeChat counts it; its money is not guessed.
                paid += yuan_to_fen(&f[12]).unwrap_or(0);
                refunded += yuan_to_fen(&f[16]).unwrap_or(0);
                out.unrecognised.push(format!("trade state {other}: out_trade_no {} (row {rows})", f[6]));
            }
        }
    }
    Err("missing totals block".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows in the layout of BILL_LAYOUT.md (written by hand here, not by any renderer).
    fn bill(rows: &[&str], totals: &str) -> String {
        let mut s = format!("{HEADER}\n");
        for r in rows {
            s.push_str(r);
            s.push('\n');
        }
        s.push_str(&format!("{TOTALS_HEADER}\n{totals}\n"));
        s
    }

    const PAY: &str = "`2021-01-28 17:07:11,`wx81be3101902f7cb2,`1601959334,`0,`,`4200000925202101284997714292,`S20210128170702357723,`ofyak5qR_1wYsC99CsWA6R9MJazA,`NATIVE,`SUCCESS,`OTHERS,`CNY,`0.01,`0.00,`0,`0,`0.00,`0.00,`,`,`for testing,`cipher code,`0.00000,`1.00%,`0.01,`0.00,`";

    #[test]
    fn the_documented_layout_parses() {
        let b = bill(&[PAY], "`1,`0.01,`0.00,`0.00,`0.00000,`0.01,`0.00");
        let s = parse(&b).unwrap();
        assert_eq!(s.lines.len(), 1);
        assert_eq!((s.lines[0].kind, s.lines[0].amount, s.lines[0].out_trade_no.as_str()), (StatementKind::Payment, 1, "S20210128170702357723"));
        // A BOM and CRLF line ends, as real downloads have them.
        let crlf = format!("\u{feff}{}", b.replace('\n', "\r\n"));
        assert_eq!(parse(&crlf).unwrap(), s);
        // Totals that disagree with the rows: refused.
        assert!(parse(&bill(&[PAY], "`1,`0.02,`0.00,`0.00,`0.00000,`0.02,`0.00")).is_err());
    }

    #[test]
    fn an_undocumented_trade_state_is_reported_not_fatal() {
        let odd = PAY.replace("`SUCCESS", "`SOMETHING_NEW");
        let s = parse(&bill(&[PAY, &odd], "`2,`0.02,`0.00,`0.00,`0.00000,`0.02,`0.00")).unwrap();
        assert_eq!(s.lines.len(), 1);
        assert_eq!(s.unrecognised.len(), 1);
        assert!(s.unrecognised[0].contains("SOMETHING_NEW"));
    }
}
