//! The WeChat Pay trade bill (`GET /v3/bill/tradebill`, `bill_type=ALL`): CSV whose every field
//! is prefixed with a backtick, followed by a totals trailer.

use crate::money::{fen_to_yuan, yuan_to_fen};
use crate::{StatementKind, StatementLine};

pub const HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
pub const TOTALS_HEADER: &str = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额";

/// One bill row, as the simulator writes it.
pub struct Row<'a> {
    pub time: &'a str,
    pub appid: &'a str,
    pub mchid: &'a str,
    pub transaction_id: &'a str,
    pub out_trade_no: &'a str,
    pub refund: Option<(&'a str, &'a str, i64)>,
    pub amount: i64,
    pub subject: &'a str,
}

pub fn render(rows: &[Row]) -> String {
    let mut out = String::from(HEADER);
    out.push('\n');
    let (mut paid, mut refunded) = (0i64, 0i64);
    for r in rows {
        // Fields are not quoted in WeChat bills: a comma in a subject would split it.
        let subject = r.subject.replace(',', "，");
        let (state, refund_id, out_refund_no, refund_amt, refund_status) = match r.refund {
            Some((id, no, amt)) => ("REFUND", id, no, fen_to_yuan(amt), "SUCCESS"),
            None => ("SUCCESS", "0", "0", "0.00".to_owned(), ""),
        };
        if r.refund.is_some() {
            refunded += r.refund.map(|x| x.2).unwrap_or(0);
        } else {
            paid += r.amount;
        }
        let fields = [
            r.time, r.appid, r.mchid, "0", "", r.transaction_id, r.out_trade_no, "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", "NATIVE", state, "OTHERS",
            "CNY", &fen_to_yuan(if r.refund.is_some() { 0 } else { r.amount }), "0.00", refund_id, out_refund_no, &refund_amt, "0.00",
            "ORIGINAL", refund_status, &subject, "", "0.00", "0.60%", &fen_to_yuan(r.amount), &refund_amt, "",
        ];
        out.push_str(&fields.iter().map(|f| format!("`{f}")).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out.push_str(TOTALS_HEADER);
    out.push('\n');
    let totals = [rows.len().to_string(), fen_to_yuan(paid), fen_to_yuan(refunded), "0.00".into(), "0.00".into(), fen_to_yuan(paid), fen_to_yuan(refunded)];
    out.push_str(&totals.iter().map(|f| format!("`{f}")).collect::<Vec<_>>().join(","));
    out.push('\n');
    out
}

/// Parses a trade bill, checking its totals trailer against its rows.
pub fn parse(csv: &str) -> Result<Vec<StatementLine>, String> {
    let mut lines = csv.lines();
    if lines.next().map(str::trim) != Some(HEADER) {
        return Err("not a WeChat Pay trade bill (header)".into());
    }
    let field = |s: &str| s.trim().trim_start_matches('`').to_owned();
    let mut out = Vec::new();
    let (mut paid, mut refunded) = (0i64, 0i64);
    while let Some(line) = lines.next() {
        if line.starts_with("总交易单数") {
            let totals: Vec<String> = lines.next().ok_or("missing totals")?.split(',').map(field).collect();
            let count: usize = totals.first().and_then(|c| c.parse().ok()).ok_or("bad total count")?;
            let sum_paid = totals.get(1).and_then(|v| yuan_to_fen(v)).ok_or("bad paid total")?;
            let sum_refund = totals.get(2).and_then(|v| yuan_to_fen(v)).ok_or("bad refund total")?;
            if count != out.len() || sum_paid != paid || sum_refund != refunded {
                return Err("totals trailer disagrees with the rows".into());
            }
            return Ok(out);
        }
        let f: Vec<String> = line.split(',').map(field).collect();
        if f.len() < 27 {
            return Err(format!("short row: {line}"));
        }
        let amount_of = |i: usize| yuan_to_fen(&f[i]).ok_or_else(|| format!("bad amount {}", f[i]));
        match f[9].as_str() {
            "SUCCESS" => {
                let a = amount_of(12)?;
                paid += a;
                out.push(StatementLine { kind: StatementKind::Payment, out_trade_no: f[6].clone(), channel_trade_no: Some(f[5].clone()), out_refund_no: None, amount: a });
            }
            "REFUND" => {
                let a = amount_of(16)?;
                refunded += a;
                out.push(StatementLine { kind: StatementKind::Refund, out_trade_no: f[6].clone(), channel_trade_no: Some(f[5].clone()), out_refund_no: Some(f[15].clone()), amount: a });
            }
            other => return Err(format!("unknown trade state {other}")),
        }
    }
    Err("missing totals trailer".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_trailer_check() {
        let rows = [
            Row { time: "2026-11-23 10:00:00", appid: "wx1", mchid: "19", transaction_id: "42001", out_trade_no: "A", refund: None, amount: 123, subject: "tea, green" },
            Row { time: "2026-11-23 11:00:00", appid: "wx1", mchid: "19", transaction_id: "42001", out_trade_no: "A", refund: Some(("503", "R1", 23)), amount: 123, subject: "tea" },
        ];
        let csv = render(&rows);
        assert!(csv.lines().nth(1).unwrap().starts_with("`2026-11-23 10:00:00,`wx1"));
        let lines = parse(&csv).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[0].kind, lines[0].amount), (StatementKind::Payment, 123));
        assert_eq!((lines[1].kind, lines[1].amount, lines[1].out_refund_no.as_deref()), (StatementKind::Refund, 23, Some("R1")));
        let tampered = csv.replace("`1.23,`0.00,`0,`0", "`1.24,`0.00,`0,`0");
        assert!(parse(&tampered).is_err(), "a row that disagrees with the trailer is refused");
    }
}
